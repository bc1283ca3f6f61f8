"""Coverage and Dice of each preset against the reference masks of the shared data.

    NIMASK_SHARED_DATA=/path/to/shared/data python benchmarks/presets_table.py

For each real volume with a reference mask (ITK T1 with skull and its brain
mask; MNI152 template, already skull-stripped, and its brain mask; the
InVesalius head CT and its tissue threshold mask, which is NOT a brain mask)
and each configuration (the documented default and every preset), prints the
mask volume in mL, the coverage (mask voxels / all voxels), the reference's
coverage, Dice against the reference and any HU warning.  For the CT it also
prints the skull check of ``ct-brain``: bone-mask voxels inside the brain mask
after a 1-voxel erosion, split into voxels of bone components that reach
outside the brain mask (skull) and of components enclosed by it
(intracranial calcifications).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nimask.core.pipeline import compute_mask
from nimask.io.nifti import read_volume

CASES = [
    ("itk_t1_2x2x3mm.nii.gz", "itk_brainmask_2x2x3mm.nii.gz", "T1 with skull / brain mask"),
    ("mni152_t1_brain_1mm.nii.gz", "mni152_brainmask_1mm.nii.gz",
     "MNI152 (skull-stripped) / brain mask"),
    ("invesalius_ct_head_hu.nii.gz", "invesalius_ct_tissuethresh_mask.nii.gz",
     "head CT / tissue threshold -142..2986 HU (not a brain mask)"),
]
CONFIGS: list[tuple[str, str | None]] = [
    ("default (Otsu, r=3)", None), ("mri-head", "mri-head"), ("ct-head", "ct-head"),
    ("ct-brain", "ct-brain"), ("nidataset", "nidataset"),
]


def shared_data() -> Path:
    env = os.environ.get("NIMASK_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).astype(bool)


def skull_check(mask: sitk.Image, bone: sitk.Image) -> tuple[int, int]:
    """(skull voxels, enclosed-bone voxels) of the bone mask inside the eroded mask."""
    eroded = array(sitk.BinaryErode(mask, [1] * 3, sitk.sitkBall, 0, 1, False))
    inside_mask = array(mask)
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(bone, True))
    hit = labels[eroded & (labels > 0)]
    skull = enclosed = 0
    for label in np.unique(hit):
        component = labels == label
        count = int(np.count_nonzero(component & eroded))
        if np.all(inside_mask[component]):
            enclosed += count
        else:
            skull += count
    return skull, enclosed


def main() -> None:
    data = shared_data()
    print("| volume / reference | configuration | mask mL | coverage % | reference % "
          "| Dice | note |")
    print("|---|---|---|---|---|---|---|")
    for image_name, ref_name, label in CASES:
        image = read_volume(data / image_name).image
        ref = array(sitk.ReadImage(str(data / ref_name)))
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        for config, preset in CONFIGS:
            outcome = compute_mask(image, preset=preset)
            ours = array(outcome.mask)
            both = np.count_nonzero(ours) + np.count_nonzero(ref)
            dice = 2 * np.count_nonzero(ours & ref) / both
            note = "HU warning" if outcome.hu_warning else ""
            if preset == "ct-brain" and "ct" in image_name:
                bone = sitk.ReadImage(str(data / "invesalius_ct_bonethresh_mask.nii.gz"))
                skull, enclosed = skull_check(outcome.mask, bone)
                note = (f"bone in eroded mask: {skull} skull voxels, {enclosed} voxels of "
                        f"enclosed calcification")
            print(f"| {label} | {config} | {ours.sum() * voxel_ml:.0f} "
                  f"| {100 * ours.mean():.1f} | {100 * ref.mean():.1f} | {dice:.3f} | {note} |",
                  flush=True)


if __name__ == "__main__":
    main()

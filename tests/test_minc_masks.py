"""MINC masks from run to run: the same voxels, geometry and sidecar; bytes differ only
where libminc/HDF5 record when and by whom the file was made (docs/cohorts.md)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from conftest import box_volume

from nimask import mask_dataset
from nimask.io.formats import sidecar_path

WINDOW = (50.0, 150.0)
#: libminc's ``ident`` attribute: user:host:YYYY.MM.DD.HH.MM.SS:pid:counter.
_IDENT = re.compile(rb"[^\x00:]*:[^\x00:]*:\d{4}(?:\.\d\d){5}:\d+:\d+")


def _volatile(data: bytes) -> set[int]:
    """Offsets of the bytes that record the time and the writer, with their checksums.

    * every version-2 HDF5 object header (``OHDR``) with times (flag bit 5): its access,
      modification, change and birth times and the header's checksum;
    * libminc's ``ident`` text, and the header of the fractal-heap block (``FHDB``) that
      holds it (its checksum covers the text).
    """
    out: set[int] = set()
    for m in re.finditer(rb"OHDR\x02", data):
        start = m.start()
        flags = data[start + 5]
        pos = start + 6
        if flags & 0x20:
            out.update(range(pos, pos + 16))
            pos += 16
        if flags & 0x10:
            pos += 4
        width = 1 << (flags & 3)
        size = int.from_bytes(data[pos:pos + width], "little")
        end = pos + width + size
        out.update(range(end, end + 4))
    for m in _IDENT.finditer(data):
        out.update(range(m.start(), m.end()))
    for m in re.finditer(rb"FHDB", data):
        out.update(range(m.start(), m.start() + 24))
    return out


def test_minc_masks_differ_only_in_time_and_writer_stamps(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    image = sitk.GetImageFromArray(box_volume())
    image.SetSpacing((0.9, 1.1, 2.5))
    sitk.WriteImage(image, str(folder / "a.mnc"))
    (first,) = mask_dataset(folder, tmp_path / "one", WINDOW, 1, pattern="*.mnc",
                            output_format="same", workers=1)
    time.sleep(1.1)  # HDF5 stores times in whole seconds
    (second,) = mask_dataset(folder, tmp_path / "two", WINDOW, 1, pattern="*.mnc",
                             output_format="same", workers=1)
    assert first.status == second.status == "written"
    one, two = Path(first.output), Path(second.output)
    a, b = one.read_bytes(), two.read_bytes()
    assert len(a) == len(b)
    differing = {i for i in range(len(a)) if a[i] != b[i]}
    assert differing  # different seconds: the stamps differ
    assert differing <= _volatile(a) | _volatile(b)
    # what a user compares is identical: voxels, geometry, provenance sidecar
    x, y = sitk.ReadImage(str(one)), sitk.ReadImage(str(two))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(x), sitk.GetArrayViewFromImage(y))
    assert int(sitk.GetArrayViewFromImage(x).sum()) == first.mask_voxels == 840
    assert (x.GetOrigin(), x.GetSpacing(), x.GetDirection()) == (
        y.GetOrigin(), y.GetSpacing(), y.GetDirection())
    assert sidecar_path(one).read_bytes() == sidecar_path(two).read_bytes()

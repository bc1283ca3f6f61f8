"""Small synthetic head volumes for examples, notebooks and tests.

The phantoms are deterministic (seeded) ellipsoid models of a head: they are
not anatomy, but they have the intensity structure that the masking pipeline
sees in real scans (air, scalp, skull, CSF, brain) and real-world geometry
(anisotropic spacing, an origin and optionally an oblique direction).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

__all__ = ["ct_head_phantom", "mri_head_phantom"]

# Hounsfield units of the phantom's tissues.
HU_AIR = -1000.0
HU_SCALP = 30.0
HU_BONE = 1200.0
HU_CSF = 8.0
HU_BRAIN = 35.0


def _shells(shape: Sequence[int]) -> np.ndarray:
    """Normalised ellipsoidal radius of each voxel, array in (z, y, x) order."""
    nx, ny, nz = shape
    z, y, x = np.meshgrid(
        (np.arange(nz) + 0.5) / nz * 2 - 1,
        (np.arange(ny) + 0.5) / ny * 2 - 1,
        (np.arange(nx) + 0.5) / nx * 2 - 1,
        indexing="ij",
    )
    return np.asarray(np.sqrt((x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 0.85) ** 2))


def _layers(
    shape: Sequence[int], background: float, tissues: tuple[float, float, float, float]
) -> np.ndarray:
    """Nested ellipsoids: background, then scalp, skull, CSF and brain values inwards."""
    r = _shells(shape)
    values = np.full(r.shape, background)
    for radius, value in zip((1.0, 0.93, 0.85, 0.81), tissues, strict=True):
        values[r < radius] = value
    return values


def _to_image(
    array: np.ndarray,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float] | None,
) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    if direction is not None:
        image.SetDirection([float(d) for d in direction])
    return image


def ct_head_phantom(
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (0.9, 0.9, 1.5),
    origin: Sequence[float] = (-43.2, -43.2, -48.0),
    direction: Sequence[float] | None = None,
    *,
    noise_hu: float = 10.0,
    seed: int = 0,
) -> sitk.Image:
    """A CT-like head in Hounsfield units (``sitkInt16``).

    Air -1000 HU, scalp 30 HU, skull 1200 HU, a CSF rim 8 HU and brain 35 HU,
    with Gaussian noise of ``noise_hu``.  The brain lies inside a closed skull,
    so a brain window such as (0, 100) HU plus the largest component finds it.

    Parameters
    ----------
    shape : (nx, ny, nz)
        Size in voxels, SimpleITK (x, y, z) order.
    spacing, origin : sequences of 3 floats
        Geometry in mm.
    direction : sequence of 9 floats, optional
        Direction cosines (row-major), identity when omitted.
    noise_hu : float
        Standard deviation of the added noise.
    seed : int
        Seed of the noise generator.

    Returns
    -------
    SimpleITK.Image
    """
    hu = _layers(shape, HU_AIR, (HU_SCALP, HU_BONE, HU_CSF, HU_BRAIN))
    rng = np.random.default_rng(seed)
    hu += rng.normal(0.0, noise_hu, hu.shape)
    return _to_image(np.clip(np.rint(hu), -1024, 3071).astype(np.int16), spacing, origin, direction)


def mri_head_phantom(
    shape: Sequence[int] = (64, 64, 48),
    spacing: Sequence[float] = (2.0, 2.0, 3.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] | None = None,
    *,
    noise: float = 4.0,
    seed: int = 0,
) -> sitk.Image:
    """A T1-like head with skull (``sitkFloat32``, arbitrary units 0..~120).

    Background 0, scalp 90, skull 15 (dark in T1), CSF 25, brain 70.

    Parameters
    ----------
    shape, spacing, origin, direction
        As in :func:`ct_head_phantom`.
    noise : float
        Standard deviation of the Rician-like magnitude noise.
    seed : int
        Seed of the noise generator.

    Returns
    -------
    SimpleITK.Image
    """
    t1 = _layers(shape, 0.0, (90.0, 15.0, 25.0, 70.0))
    rng = np.random.default_rng(seed)
    t1 = np.hypot(t1 + rng.normal(0.0, noise, t1.shape), rng.normal(0.0, noise, t1.shape))
    return _to_image(t1.astype(np.float32), spacing, origin, direction)

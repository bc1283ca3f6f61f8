"""Deterministic synthetic volumes for the nimask benchmarks."""

from __future__ import annotations

import numpy as np


def _ellipsoid_field(shape: tuple[int, int, int], centre: tuple[float, float, float],
                     semi: tuple[float, float, float]) -> np.ndarray:
    """``sum(((i - c) / a)**2)`` over a (z, y, x) grid, float32."""
    axes = [((np.arange(n, dtype=np.float32) - c) / a) ** 2
            for n, c, a in zip(shape, centre, semi, strict=True)]
    return axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]


def synthetic_head(n: int = 256, seed: int = 0) -> np.ndarray:
    """A T1-like float32 head of ``n**3`` voxels, array order (z, y, x).

    Scalp, skull, CSF, brain and ventricles as nested ellipsoids, a smooth bias
    field and Gaussian noise from a fixed seed: the same array on every run.
    """
    shape = (n, n, n)
    c = (n / 2, n / 2 + 0.03 * n, n / 2)
    rng = np.random.default_rng(seed)
    f = _ellipsoid_field(shape, c, (0.40 * n, 0.44 * n, 0.36 * n))
    vol = np.zeros(shape, dtype=np.float32)
    vol[f <= 1.0] = 300.0                      # scalp
    vol[f <= 0.90] = 60.0                      # skull (dark on T1)
    vol[f <= 0.80] = 120.0                     # CSF
    vol[f <= 0.74] = 650.0                     # brain
    del f
    v = _ellipsoid_field(shape, (n / 2, n / 2, n / 2 - 0.06 * n), (0.10 * n, 0.05 * n, 0.03 * n))
    vol[v <= 1.0] = 120.0                      # ventricles
    v = _ellipsoid_field(shape, (n / 2, n / 2, n / 2 + 0.06 * n), (0.10 * n, 0.05 * n, 0.03 * n))
    vol[v <= 1.0] = 120.0
    del v
    z = np.linspace(0.9, 1.1, n, dtype=np.float32)
    vol *= z[:, None, None]
    vol += rng.normal(0.0, 25.0, size=shape).astype(np.float32)
    np.maximum(vol, 0.0, out=vol)
    return vol


def ct_like(shape: tuple[int, int, int] = (300, 512, 512), seed: int = 1) -> np.ndarray:
    """A head-CT-like int16 volume in HU, array order (z, y, x) (default 512x512x300)."""
    nz, ny, nx = shape
    rng = np.random.default_rng(seed)
    c = (nz / 2, ny / 2, nx / 2)
    f = _ellipsoid_field(shape, c, (0.45 * nz, 0.38 * ny, 0.32 * nx))
    vol = np.full(shape, -1024, dtype=np.int16)
    vol[f <= 1.0] = 40                         # soft tissue
    vol[f <= 0.88] = 1200                      # skull
    vol[f <= 0.80] = 35                        # brain
    del f
    # head holder: an arc below the head
    yy = (np.arange(ny) - 0.85 * ny)[:, None] ** 2
    xx = (np.arange(nx) - nx / 2)[None, :] ** 2
    ring = np.abs(np.sqrt(yy + xx) - 0.2 * nx) < 3
    vol[:, ring] = 300
    noise = rng.normal(0.0, 12.0, size=shape).astype(np.float32)
    out = vol.astype(np.float32) + noise
    return np.clip(out, -1024, 3071).astype(np.int16)

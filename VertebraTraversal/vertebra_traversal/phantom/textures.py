"""Smooth random fields (cubic B-spline noise) on grid blocks: tissue texture, bias fields.

A coarse lattice of standard normal values (``cell_mm`` apart, anchored at the block's first voxel)
is interpolated separably with cubic B-spline weights (four taps per axis, no BLAS), so a
25-million-voxel field costs about a second.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .sdf import Block

#: Standard deviation of cubic B-spline interpolated unit white noise, per axis (sqrt(151/315)).
_BSPLINE_SD = float(np.sqrt(151.0 / 315.0))


def _taps(coords: np.ndarray, cell: float) -> Tuple[np.ndarray, np.ndarray, int]:
    """Cubic B-spline taps: lattice indices (4, n), weights (4, n) and the lattice size."""
    t = (coords - coords.min()) / cell + 1.0
    base = np.floor(t).astype(np.int64) - 1
    frac = (t - np.floor(t)).astype(np.float32)
    w = np.stack([(1 - frac) ** 3 / 6, (4 - 6 * frac ** 2 + 3 * frac ** 3) / 6,
                  (1 + 3 * frac + 3 * frac ** 2 - 3 * frac ** 3) / 6, frac ** 3 / 6])
    idx = base[None, :] + np.arange(4)[:, None]
    return idx, w, int(idx.max()) + 1


def _interp(a: np.ndarray, axis: int, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    shape = [1] * a.ndim
    shape[axis] = -1
    out = np.take(a, idx[0], axis=axis) * w[0].reshape(shape)
    for q in range(1, 4):
        out += np.take(a, idx[q], axis=axis) * w[q].reshape(shape)
    return out


def smooth_noise(block: Block, cell_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance smooth noise of the block's shape (nz, ny, nx), correlation length ~``cell_mm``."""
    taps = [_taps(c.ravel().astype(np.float64), cell_mm) for c in (block.z, block.y, block.x)]
    a = rng.standard_normal(tuple(m for _, _, m in taps)).astype(np.float32)
    for axis in (2, 1, 0):  # smallest arrays first
        a = _interp(a, axis, taps[axis][0], taps[axis][1])
    return a * np.float32(1.0 / _BSPLINE_SD ** 3)

"""Painting shapes onto the image grid with partial-volume edges, and vertebra labels.

Each shape is painted inside its own bounding block (painter's algorithm, later shapes on top). The
fraction of a voxel inside a shape comes from the signed distance ``d`` as a linear ramp
``clip(0.5 - d / h, 0, 1)``, where ``h`` is the voxel's footprint along the surface normal
(``h = |diag(spacing) . grad d|``), so edges crossing thick slices get the right partial volume
instead of a staircase. Bone is painted as cortex + marrow: the marrow is the shape shrunk by the
cortical thickness, each with its own fraction.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Union as TUnion

import numpy as np

from .sdf import MARGIN, Block, Grid, smooth_min

logger = logging.getLogger(__name__)

Value = TUnion[float, Callable[[Block], np.ndarray]]


def footprint(d: np.ndarray, spacing_zyx: Tuple[float, float, float],
              idx: Optional[np.ndarray] = None) -> np.ndarray:
    """Voxel extent (mm) along the gradient of ``d`` (shape (nz, ny, nx)), at the flat indices ``idx``
    (all voxels when None); a scalar on (nearly) isotropic grids."""
    if max(spacing_zyx) / min(spacing_zyx) < 1.25 or min(d.shape) < 3:
        return np.float32(np.mean(spacing_zyx))
    flat = d.ravel()
    idx = np.arange(flat.size) if idx is None else idx
    strides = (d.shape[1] * d.shape[2], d.shape[2], 1)
    num, norm = np.zeros(idx.shape, np.float32), np.zeros(idx.shape, np.float32)
    for axis, (st, n, sp) in enumerate(zip(strides, d.shape, spacing_zyx)):
        c = (idx // st) % n
        plus, minus = np.where(c < n - 1, idx + st, idx), np.where(c > 0, idx - st, idx)
        g = (flat[plus] - flat[minus]) / (((plus - minus) // st) * sp + 1e-6)
        num += (g * sp) ** 2
        norm += g * g
    h = np.sqrt(num / np.maximum(norm, 1e-6))
    return np.where(norm > 1e-6, h, min(spacing_zyx)).astype(np.float32)


def occupancy(d: np.ndarray, h) -> np.ndarray:
    """Fraction (0..1) of a voxel inside the shape, from its signed distance (mm) and footprint."""
    return np.clip(0.5 - d / h, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Item:
    """One thing to paint: ``shape`` filled with tissue ``material`` (a name of the materials table);
    for bone also a ``cortex`` material and its ``thickness`` (mm). ``texture`` (HU/a.u. per unit
    noise) and ``cell`` (mm) add smooth noise to the material; ``inset`` (a function of z, mm) shrinks
    the shape (consecutive items sharing one shape evaluate it once)."""

    shape: object
    material: str
    cortex: Optional[str] = None
    thickness: float = 0.0
    texture: float = 0.0
    cell: float = 4.0
    inset: Optional[Callable[[np.ndarray], np.ndarray]] = None


@dataclass
class Canvas:
    """The image being rendered on ``grid`` (float32 (nz, ny, nx)) and its vertebra labels (uint8).

    Painting touches only the voxels of a shape's block that lie inside or within half a voxel of
    the surface (a sparse index list when that is a minority of the block).
    """

    grid: Grid
    image: np.ndarray
    labels: np.ndarray
    best: Optional[np.ndarray] = None
    _cache: Optional[tuple] = None

    @classmethod
    def empty(cls, grid: Grid, background: float) -> "Canvas":
        return cls(grid, np.full(grid.shape, background, np.float32), np.zeros(grid.shape, np.uint8))

    @property
    def spacing_zyx(self) -> Tuple[float, float, float]:
        sx, sy, sz = self.grid.spacing
        return sz, sy, sx

    def evaluate(self, shape) -> Tuple[Optional[Block], Optional[np.ndarray]]:
        """The clipped block of ``shape`` and its signed distance there (None when nothing is inside)."""
        block = self.grid.block_for(shape.bounds())
        if block is None:
            return None, None
        d = shape.sdf(block)
        if float(d.min()) >= max(self.spacing_zyx) / 2:
            return None, None
        return block, d

    def paint(self, shape, value: Value, cortex: Optional[float] = None, thickness: float = 0.0,
              inset: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> None:
        """Fill ``shape`` with ``value`` (a number or a function of the block returning an array); with
        ``cortex``, a shell of ``thickness`` mm of that value around the fill (bone). ``inset``
        (a function of z, mm) shrinks the shape; painting the same shape again reuses its distances."""
        if self._cache is not None and self._cache[0] is shape:
            block, d = self._cache[1], self._cache[2]
        else:
            block, d = self.evaluate(shape)
            self._cache = (shape, block, d)
        if block is None:
            return
        if inset is not None:
            d = d + inset(block.z).astype(np.float32)
        self.blend(block, d, value, cortex, thickness)

    def blend(self, block: Block, d: np.ndarray, value: Value, cortex: Optional[float] = None,
              thickness: float = 0.0, inner: Optional[np.ndarray] = None) -> None:
        """Blend into the image where ``d`` (block distances) says; ``inner`` overrides the distance
        of the marrow surface (default ``d + thickness``). Fractions are computed only in the band
        within half a voxel of a surface; deeper voxels are fully inside."""
        half = np.float32(max(self.spacing_zyx) / 2)
        touched = d < half
        count = int(np.count_nonzero(touched))
        if count == 0:
            return
        f_out = self._fraction(d, half)
        if cortex is None:
            parts = [(f_out, value)]
        else:
            din = (d + np.float32(thickness)) if inner is None else inner
            f_in = np.minimum(self._fraction(din, half), f_out)
            parts = [(f_out - f_in, np.float32(cortex)), (f_in, value)]
        if count > 0.35 * d.size:
            pos = tuple(slice(l, h) for l, h in zip(block.lo, block.hi))
            pick = lambda a: a
        else:
            idx = np.flatnonzero(touched)
            pos = tuple(c + l for c, l in zip(np.unravel_index(idx, d.shape), block.lo))
            pick = lambda a: a.ravel()[idx]
        region = self.image[pos]  # a view on the dense path, a copy on the sparse one
        delta = np.zeros(region.shape, np.float32)
        for f, v in parts:  # region <- region + sum f * (v - region)
            val = pick(v(block)) if callable(v) else v
            delta += pick(f) * (val - region)
        region += delta
        if not isinstance(pos[0], slice):
            self.image[pos] = region

    def _fraction(self, d: np.ndarray, half: np.float32) -> np.ndarray:
        """Inside fraction per voxel: 1 deep inside, 0 outside, a ramp over the footprint in the band."""
        f = (d <= -half).astype(np.float32)
        band = np.flatnonzero(np.abs(d.ravel()) < half)
        if band.size:
            f.ravel()[band] = occupancy(d.ravel()[band], footprint(d, self.spacing_zyx, band))
        return f

    def claim(self, block: Block, d: np.ndarray, label: int) -> None:
        """Label voxels of ``block`` (inside the grid) where ``d < 0`` and deeper than any earlier claim."""
        if self.best is None:
            self.best = np.full(self.grid.shape, MARGIN, np.float32)
        s = tuple(slice(l, h) for l, h in zip(block.lo, block.hi))
        best, labels = self.best[s], self.labels[s]
        take = (d < 0) & (d < best)
        best[take] = d[take]
        labels[take] = label


def paint_vertebra(canvas: Canvas, body, posterior, label: int, materials: Dict[str, float],
                   marrow_texture: Callable[[Block], np.ndarray], body_only: bool,
                   label_margin: float = 0.0) -> Tuple[int, int]:
    """Paint one vertebra (cortex over cancellous bone, thinner cortex on the body) and claim its
    labels: the whole vertebra, or the body only when ``body_only`` (MR). The label covers the bone
    grown by ``label_margin`` mm (the partial-volume rim that manual masks include).

    Returns:
        (voxels of the labelled structure in its whole unclipped bounding block, voxels inside the
        grid): their ratio is the visible fraction for the 2 % completeness rule (paper §3.5).
    """
    lo = np.minimum(body.bounds()[0], posterior.bounds()[0])
    hi = np.maximum(body.bounds()[1], posterior.bounds()[1])
    full = canvas.grid.block_for((lo, hi), clip=False)
    inner = full.sub((0, 0, 0), canvas.grid.shape) if full is not None else None
    if inner is None:
        return 0, 0
    db, dp = body.sdf(full), posterior.sdf(full)
    whole = smooth_min(db, dp, 1.0)
    target = (db if body_only else whole) - np.float32(label_margin)
    n_total = int(np.count_nonzero(target < 0))
    rel = full.rel(inner)
    db, dp, whole, target = db[rel], dp[rel], whole[rel], target[rel]
    n_inside = int(np.count_nonzero(target < 0))
    if n_inside:
        din = np.minimum(db + np.float32(materials["cortex_t_body"]), dp + np.float32(materials["cortex_t_post"]))
        cb, cp = materials["cancellous"], materials["cancellous_post"]

        def marrow(block: Block) -> np.ndarray:
            return np.where(db < dp, np.float32(cb), np.float32(cp)) + marrow_texture(block)

        canvas.blend(inner, whole, marrow, materials["cortex"], inner=din)
        canvas.claim(inner, target, label)
    return n_total, n_inside

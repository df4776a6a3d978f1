"""Signed distance primitives evaluated on blocks of an axis-aligned grid (vectorised numpy).

Every shape is built in LPS millimetres (x = left, y = posterior, z = superior) and exposes
``bounds() -> (lo, hi)`` (each ``(3,)`` x, y, z in mm) and ``sdf(block) -> float32 array`` of the
block's shape ``(nz, ny, nx)``: negative inside, positive outside, approximately the Euclidean
distance in mm near the surface. Unions evaluate each child only inside the child's own bounds and
clamp the distance far from a surface to :data:`MARGIN` mm (only values near zero are ever used), so a
vertebra made of twenty primitives costs little more than its own volume.

Local frames are ``(origin (3,), rot (3, 3))``; the columns of ``rot`` are the local axes
``(w, v, u)`` in world coordinates (for a vertebra: left, posterior, cranial).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

#: Distances beyond this (mm) are clamped; must exceed the widest transition ever evaluated.
MARGIN = 6.0
Bounds = Tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Block:
    """A box of voxel indices ``[lo, hi)`` (k, j, i order) of a grid, possibly beyond the grid.

    Attributes:
        lo, hi: (k, j, i) index ranges, ``hi`` exclusive.
        x, y, z: voxel-centre coordinates (mm), shapes (1, 1, ni), (1, nj, 1), (nk, 1, 1), float32.
    """

    lo: Tuple[int, int, int]
    hi: Tuple[int, int, int]
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(h - l for l, h in zip(self.lo, self.hi))

    def rel(self, inner: "Block") -> Tuple[slice, slice, slice]:
        """Slices of ``inner`` (a sub-block) within this block's arrays."""
        return tuple(slice(a - b, c - b) for a, c, b in zip(inner.lo, inner.hi, self.lo))

    def sub(self, lo: Sequence[int], hi: Sequence[int]) -> Optional["Block"]:
        """The part of this block inside index box ``[lo, hi)``, or None when empty."""
        nlo = tuple(max(a, b) for a, b in zip(self.lo, lo))
        nhi = tuple(min(a, b) for a, b in zip(self.hi, hi))
        if any(h <= l for l, h in zip(nlo, nhi)):
            return None
        s = tuple(slice(a - b, c - b) for a, c, b in zip(nlo, nhi, self.lo))
        return Block(nlo, nhi, self.x[:, :, s[2]], self.y[:, s[1], :], self.z[s[0], :, :])


@dataclass(frozen=True)
class Grid:
    """Axis-aligned voxel grid in LPS mm (identity direction); arrays are (z, y, x).

    Attributes:
        origin: (3,) x, y, z of voxel (0, 0, 0) centre, mm.
        spacing: (3,) x, y, z voxel size, mm.
        shape: (nz, ny, nx).
    """

    origin: Tuple[float, float, float]
    spacing: Tuple[float, float, float]
    shape: Tuple[int, int, int]

    def index_box(self, lo: np.ndarray, hi: np.ndarray, clip: bool = True) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        """(k, j, i) index range covering world box ``[lo, hi]`` (x, y, z mm)."""
        o, s = np.asarray(self.origin), np.asarray(self.spacing)
        ilo = np.floor((np.asarray(lo) - o) / s).astype(int)[::-1]
        ihi = np.ceil((np.asarray(hi) - o) / s).astype(int)[::-1] + 1
        if clip:
            ilo = np.maximum(ilo, 0)
            ihi = np.minimum(ihi, self.shape)
        return tuple(int(v) for v in ilo), tuple(int(v) for v in ihi)

    def block(self, lo: Sequence[int], hi: Sequence[int]) -> Optional[Block]:
        """Block of index range ``[lo, hi)`` (k, j, i); None when empty."""
        if any(h <= l for l, h in zip(lo, hi)):
            return None
        o, s = self.origin, self.spacing
        x = (o[0] + s[0] * np.arange(lo[2], hi[2], dtype=np.float64)).astype(np.float32)
        y = (o[1] + s[1] * np.arange(lo[1], hi[1], dtype=np.float64)).astype(np.float32)
        z = (o[2] + s[2] * np.arange(lo[0], hi[0], dtype=np.float64)).astype(np.float32)
        return Block(tuple(lo), tuple(hi), x[None, None, :], y[None, :, None], z[:, None, None])

    def block_for(self, bounds: Bounds, pad: float = MARGIN, clip: bool = True) -> Optional[Block]:
        """Block covering ``bounds`` padded by ``pad`` mm (clipped to the grid unless ``clip`` is False)."""
        lo, hi = self.index_box(bounds[0] - pad, bounds[1] + pad, clip)
        return self.block(lo, hi)


def frame_from(origin: Sequence[float], u: Sequence[float], v_hint: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Right-handed frame with local axis u along ``u`` and v as close as possible to ``v_hint``."""
    u = np.asarray(u, float) / np.linalg.norm(u)
    v = np.asarray(v_hint, float) - np.dot(v_hint, u) * u
    v /= np.linalg.norm(v)
    w = np.cross(v, u)
    return np.asarray(origin, float), np.stack([w, v, u], axis=1)


def local_coords(block: Block, origin: np.ndarray, rot: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block coordinates in a local frame: three float32 arrays of the block's shape (w, v, u)."""
    dx, dy, dz = block.x - np.float32(origin[0]), block.y - np.float32(origin[1]), block.z - np.float32(origin[2])
    r = rot.astype(np.float32)
    return tuple(dx * r[0, k] + dy * r[1, k] + dz * r[2, k] for k in range(3))


def _box_bounds(origin: np.ndarray, rot: np.ndarray, half: Sequence[float]) -> Bounds:
    ext = np.abs(rot) @ np.asarray(half, float)
    return origin - ext, origin + ext


def ellipse_sdf(p: np.ndarray, q: np.ndarray, a, b) -> np.ndarray:
    """Approximate signed distance to an ellipse of semi-axes (a, b) (Quilez's first-order bound)."""
    pa, qb = p / a, q / b  # often broadcast (small) arrays: the full-size work is below
    k0 = np.sqrt(pa * pa + qb * qb)
    pa, qb = pa / a, qb / b
    k1 = np.sqrt(pa * pa + qb * qb)
    np.maximum(k1, np.float32(1e-6), out=k1)
    out = k0 - np.float32(1.0)
    out *= k0
    out /= k1
    centre = k0 < 1e-4  # the bound degenerates at the centre
    if np.any(centre):
        out[centre] = -np.minimum(a, b) if np.ndim(a) == 0 and np.ndim(b) == 0 else \
            -np.broadcast_to(np.minimum(a, b), out.shape)[centre]
    return out


@dataclass(frozen=True)
class Ellipsoid:
    origin: np.ndarray
    rot: np.ndarray
    radii: Tuple[float, float, float]

    def bounds(self) -> Bounds:
        return _box_bounds(self.origin, self.rot, self.radii)

    def sdf(self, block: Block) -> np.ndarray:
        w, v, u = local_coords(block, self.origin, self.rot)
        r = np.asarray(self.radii, np.float32)
        k0 = np.sqrt((w / r[0]) ** 2 + (v / r[1]) ** 2 + (u / r[2]) ** 2)
        k1 = np.sqrt((w / r[0] ** 2) ** 2 + (v / r[1] ** 2) ** 2 + (u / r[2] ** 2) ** 2)
        d = k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)
        return np.where(k0 < 1e-4, -np.float32(r.min()), d)  # the bound degenerates at the centre


def sphere(center: Sequence[float], radius: float) -> Ellipsoid:
    return Ellipsoid(np.asarray(center, float), np.eye(3), (radius, radius, radius))


@dataclass(frozen=True)
class Capsule:
    """Segment a-b (world mm) with radius varying linearly from r0 (at a) to r1 (at b)."""

    a: np.ndarray
    b: np.ndarray
    r0: float
    r1: float

    def bounds(self) -> Bounds:
        r = max(self.r0, self.r1)
        return np.minimum(self.a, self.b) - r, np.maximum(self.a, self.b) + r

    def sdf(self, block: Block) -> np.ndarray:
        ab = (self.b - self.a).astype(np.float32)
        px, py, pz = block.x - np.float32(self.a[0]), block.y - np.float32(self.a[1]), block.z - np.float32(self.a[2])
        t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
        d = np.sqrt((px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2)
        return d - (self.r0 + t * (self.r1 - self.r0))


def capsule(a: Sequence[float], b: Sequence[float], r0: float, r1: Optional[float] = None) -> Capsule:
    return Capsule(np.asarray(a, float), np.asarray(b, float), float(r0), float(r0 if r1 is None else r1))


@dataclass(frozen=True)
class RoundBox:
    """Box of half sizes (w, v, u) in a local frame with edges rounded by ``rounding`` mm."""

    origin: np.ndarray
    rot: np.ndarray
    half: Tuple[float, float, float]
    rounding: float = 1.0

    def bounds(self) -> Bounds:
        return _box_bounds(self.origin, self.rot, self.half)

    def sdf(self, block: Block) -> np.ndarray:
        w, v, u = local_coords(block, self.origin, self.rot)
        r = self.rounding
        qw, qv, qu = (np.abs(c) - np.float32(h - r) for c, h in zip((w, v, u), self.half))
        outside = np.sqrt(np.maximum(qw, 0) ** 2 + np.maximum(qv, 0) ** 2 + np.maximum(qu, 0) ** 2)
        return outside + np.minimum(np.maximum(np.maximum(qw, qv), qu), 0) - r


@dataclass(frozen=True)
class Torus:
    """Elliptic ring in the local (w, v) plane: ring semi-axes (rw, rv), tube radius r."""

    origin: np.ndarray
    rot: np.ndarray
    rw: float
    rv: float
    r: float

    def bounds(self) -> Bounds:
        return _box_bounds(self.origin, self.rot, (self.rw + self.r, self.rv + self.r, self.r))

    def sdf(self, block: Block) -> np.ndarray:
        w, v, u = local_coords(block, self.origin, self.rot)
        ring = ellipse_sdf(w, v, self.rw, self.rv)
        return np.sqrt(ring * ring + u * u) - self.r


@dataclass(frozen=True)
class HalfSpace:
    """Points with ``normal . (p - point) > 0`` are outside; bounds are infinite (use in Intersection)."""

    point: np.ndarray
    normal: np.ndarray

    def bounds(self) -> Bounds:
        return np.full(3, -np.inf), np.full(3, np.inf)

    def sdf(self, block: Block) -> np.ndarray:
        n = self.normal / np.linalg.norm(self.normal)
        return ((block.x - self.point[0]) * n[0] + (block.y - self.point[1]) * n[1]
                + (block.z - self.point[2]) * n[2]).astype(np.float32)


@dataclass(frozen=True)
class Union:
    """Union of children (``smooth`` > 0: polynomial smooth minimum over that many mm)."""

    children: Tuple
    smooth: float = 0.0

    def bounds(self) -> Bounds:
        los, his = zip(*(c.bounds() for c in self.children))
        return np.min(los, axis=0), np.max(his, axis=0)

    def sdf(self, block: Block) -> np.ndarray:
        out = np.full(block.shape, MARGIN, np.float32)
        for child in self.children:
            lo, hi = child.bounds()
            sub = _sub_for(block, lo, hi)
            if sub is None:
                continue
            s = block.rel(sub)
            out[s] = smooth_min(out[s], child.sdf(sub), self.smooth)
        return out


def _sub_for(block: Block, lo: np.ndarray, hi: np.ndarray) -> Optional[Block]:
    """Sub-block of ``block`` whose voxel centres lie within [lo - MARGIN, hi + MARGIN]."""
    mask = [((c >= l - MARGIN) & (c <= h + MARGIN)).ravel() for c, l, h in
            ((block.z, lo[2], hi[2]), (block.y, lo[1], hi[1]), (block.x, lo[0], hi[0]))]
    if not all(m.any() for m in mask):
        return None
    first = [int(np.argmax(m)) for m in mask]
    last = [len(m) - int(np.argmax(m[::-1])) for m in mask]
    return block.sub([b + f for b, f in zip(block.lo, first)], [b + l for b, l in zip(block.lo, last)])


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Minimum of a and b, blended over ``k`` mm (polynomial smooth minimum) when k > 0."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return (b + (a - b) * h - k * h * (1.0 - h)).astype(np.float32)


@dataclass(frozen=True)
class Intersection:
    """Intersection of children; bounds are those of the first child clipped by the others."""

    children: Tuple

    def bounds(self) -> Bounds:
        lo, hi = self.children[0].bounds()
        for c in self.children[1:]:
            clo, chi = c.bounds()
            lo, hi = np.maximum(lo, clo), np.minimum(hi, chi)
        return lo, hi

    def sdf(self, block: Block) -> np.ndarray:
        out = self.children[0].sdf(block)
        for c in self.children[1:]:
            out = np.maximum(out, c.sdf(block))
        return np.minimum(out, MARGIN)


@dataclass(frozen=True)
class Subtraction:
    """``base`` minus ``cut``."""

    base: object
    cut: object

    def bounds(self) -> Bounds:
        return self.base.bounds()

    def sdf(self, block: Block) -> np.ndarray:
        out = self.base.sdf(block)
        lo, hi = self.cut.bounds()
        sub = _sub_for(block, lo, hi)
        if sub is not None:
            s = block.rel(sub)
            out[s] = np.maximum(out[s], -self.cut.sdf(sub))
        return out


@dataclass(frozen=True)
class Shell:
    """Hollow shell of ``thickness`` mm centred on the child's surface."""

    child: object
    thickness: float

    def bounds(self) -> Bounds:
        lo, hi = self.child.bounds()
        return lo - self.thickness, hi + self.thickness

    def sdf(self, block: Block) -> np.ndarray:
        return np.abs(self.child.sdf(block)) - np.float32(self.thickness / 2)


def tube(points: Sequence[Sequence[float]], radii: Sequence[float]) -> Union:
    """Union of capsules along a polyline (world mm) with per-point radii."""
    pts = [np.asarray(p, float) for p in points]
    return Union(tuple(Capsule(pts[i], pts[i + 1], float(radii[i]), float(radii[i + 1]))
                       for i in range(len(pts) - 1)))

"""The torso around the spine: per-height profiles of the body outline, fat layer and rib cage,
and the profile-following primitives (extruded ellipses, lungs, diaphragm dome).

All profiles are functions of world z (mm, superior +) sampled on ``Torso.zs`` and interpolated
linearly; they follow the spine's body-centre line ``x_s(z), y_s(z)`` (LPS mm).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from .sdf import Block, Bounds, ellipse_sdf
from .spine import Spine

#: Body outline per landmark: (half width, anterior reach, posterior reach) from the vertebral body
#: centre, mm, for an average adult with arms raised (typical CT positioning).
_OUTLINE = (("C1", 62, 80, 78), ("C4", 58, 58, 72), ("C7", 72, 62, 78), ("T1", 135, 80, 88),
            ("T3", 158, 112, 92), ("T7", 150, 132, 88), ("T10", 150, 150, 88), ("L1", 145, 150, 92),
            ("L3", 145, 140, 98), ("L5", 165, 140, 92), ("S2", 178, 150, 72), ("S5", 182, 140, 60))
#: Rib-cage half width (inner surface of the ribs) per thoracic level, mm.
_RIBCAGE = (("T1", 62), ("T2", 85), ("T3", 100), ("T4", 112), ("T6", 124), ("T8", 132), ("T10", 134),
            ("T12", 128))


@dataclass(frozen=True)
class Torso:
    """Per-height profiles (columns sampled at ``zs``, ascending) and case parameters.

    Columns: ``xs``/``ys`` spine body centre; ``half_depth`` vertebral body half depth; ``A`` outline
    half width; ``front``/``back`` outline y; ``fat`` subcutaneous fat thickness; ``rib_A`` rib cage
    half width; ``rib_front``/``rib_back``.
    """

    zs: np.ndarray
    cols: Dict[str, np.ndarray]
    fat: float
    landmarks: Dict[str, float]
    table_y: float = 0.0

    def at(self, name: str, z) -> np.ndarray:
        return np.interp(z, self.zs, self.cols[name]).astype(np.float32)

    def z(self, level: str) -> float:
        return self.landmarks[level]


def _spine_points(spine: Spine) -> Tuple[np.ndarray, ...]:
    pts = [(l.origin, l.size.depth / 2) for l in spine.levels] + [(s.origin, s.dims[1] / 2) for s in spine.sacrum]
    pts.sort(key=lambda p: p[0][2])
    return (np.array([p[0][2] for p in pts]), np.array([p[0][0] for p in pts]),
            np.array([p[0][1] for p in pts]), np.array([p[1] for p in pts]))


def build_torso(spine: Spine, rng: np.random.Generator) -> Torso:
    """Sample body habitus (width, depth, fat) and build the profiles around ``spine``."""
    marks = {l.name: float(l.origin[2]) for l in spine.levels}
    marks.update({f"S{k + 1}": float(s.origin[2]) for k, s in enumerate(spine.sacrum)})
    marks.setdefault("L5", marks.get("L6", marks.get("L4")))
    z_sp, x_sp, y_sp, b_sp = _spine_points(spine)
    zs = np.arange(z_sp.min() - 260.0, z_sp.max() + 200.0, 4.0)
    xs, ys, hd = (np.interp(zs, z_sp, c) for c in (x_sp, y_sp, b_sp))
    width, depth = rng.uniform(0.85, 1.15), rng.uniform(0.82, 1.3)
    fat = float(rng.uniform(15.0, 65.0)) * (0.6 + 0.4 * depth)
    zl = np.array([marks[n] for n, *_ in _OUTLINE])
    order = np.argsort(zl)
    prof = np.array([row[1:] for row in _OUTLINE], float)[order]
    A = np.interp(zs, zl[order], prof[:, 0]) * width
    front = ys - np.interp(zs, zl[order], prof[:, 1]) * depth
    back = ys + np.interp(zs, zl[order], prof[:, 2]) * (0.85 + 0.15 * depth)
    zr = np.array([marks[n] for n, _ in _RIBCAGE])
    o2 = np.argsort(zr)
    rib_A = np.interp(zs, zr[o2], np.array([r for _, r in _RIBCAGE], float)[o2]) * width
    fat_z = fat * np.interp(zs, [marks["S3"], marks["L3"], marks["T10"], marks["T4"], marks["C7"], marks["C1"]],
                            [0.9, 1.0, 0.8, 0.55, 0.45, 0.3])
    in_chest = (zs <= marks["T1"] + 20.0) & (zs >= marks["T12"])
    A = np.where(in_chest, np.maximum(A, rib_A + fat_z + 16.0), A)  # chest wall around the ribs
    front = np.where(in_chest, np.minimum(front, ys - hd - 70.0 * depth - fat_z - 16.0), front)
    table = float(np.quantile(back, 0.85))
    back = np.minimum(back, table)  # lying supine: the back flattens on the table
    rib_front = front + fat_z + 14.0
    rib_back = ys + hd + 38.0
    cols = {"xs": xs, "ys": ys, "half_depth": hd, "A": A, "front": front, "back": back, "fat": fat_z,
            "rib_A": rib_A, "rib_front": rib_front, "rib_back": rib_back}
    return Torso(zs, cols, fat, marks, table)


@dataclass(frozen=True)
class Extrusion:
    """Ellipse cross-sections along z between ``z0`` and ``z1``: centre (cx, cy) and half axes (a, b)
    given as numbers or functions of z; ``grow`` (number or function of z, mm) is added to both."""

    torso: Torso
    center: Tuple[object, object]
    axes: Tuple[object, object]
    z0: float
    z1: float
    grow: object = 0.0  # mm added to both half axes: a number or a function of z

    def _col(self, spec, z: np.ndarray) -> np.ndarray:
        return spec(z).astype(np.float32) if callable(spec) else np.full(z.shape, spec, np.float32)

    def params(self, z: np.ndarray) -> Tuple[np.ndarray, ...]:
        cx, cy = (self._col(c, z) for c in self.center)
        grow = self._col(self.grow, z)
        a, b = (np.maximum(self._col(c, z) + grow, 1.0) for c in self.axes)
        return cx, cy, a, b

    def bounds(self) -> Bounds:
        z = np.linspace(self.z0, self.z1, 64)
        cx, cy, a, b = self.params(z)
        return (np.array([(cx - a).min(), (cy - b).min(), self.z0]),
                np.array([(cx + a).max(), (cy + b).max(), self.z1]))

    def sdf(self, block: Block) -> np.ndarray:
        cx, cy, a, b = self.params(block.z)
        d = ellipse_sdf(block.x - cx, block.y - cy, a, b)
        cap = np.maximum(self.z0 - block.z, block.z - self.z1)
        return np.maximum(d, cap, dtype=np.float32)


def outline(torso: Torso, shrink: float = 0.0) -> Extrusion:
    """The body surface (``shrink`` mm inside it for the fat/muscle boundary)."""
    t = torso
    return Extrusion(t, (lambda z: t.at("xs", z) * 0.3, lambda z: (t.at("front", z) + t.at("back", z)) / 2),
                     (lambda z: t.at("A", z), lambda z: (t.at("back", z) - t.at("front", z)) / 2),
                     float(t.zs[0]), float(t.zs[-1]), -shrink)


def ribcage(torso: Torso, inset: float, z0: float, z1: float) -> Extrusion:
    """Inner rib-cage ellipse (``inset`` mm inside the ribs' centre line) between two heights."""
    t = torso
    return Extrusion(t, (lambda z: t.at("xs", z), lambda z: (t.at("rib_front", z) + t.at("rib_back", z)) / 2),
                     (lambda z: t.at("rib_A", z), lambda z: (t.at("rib_back", z) - t.at("rib_front", z)) / 2),
                     z0, z1, -inset)


@dataclass(frozen=True)
class Dome:
    """The diaphragm surface: ``z_top`` at (x0, y0) falling off quadratically; sdf < 0 *below* it."""

    x0: float
    y0: float
    z_top: float
    rx: float
    ry: float
    drop: float

    def surface(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        q = ((x - self.x0) / self.rx) ** 2 + (np.maximum(y - self.y0, 0) / self.ry) ** 2 * 1.6 \
            + (np.minimum(y - self.y0, 0) / self.ry) ** 2 * 0.6
        return self.z_top - self.drop * q

    def bounds(self) -> Bounds:
        return np.full(3, -np.inf), np.full(3, np.inf)

    def sdf(self, block: Block) -> np.ndarray:
        return (block.z - self.surface(block.x, block.y)) * np.float32(0.8)


@dataclass(frozen=True)
class Lung:
    """One lung (``side`` +1 left): inside the rib cage, above the diaphragm dome, below the apex,
    outside the mediastinum and the paravertebral spine region."""

    torso: Torso
    side: float
    cage: Extrusion
    mediastinum: Extrusion
    spine_zone: Extrusion
    dome: Dome
    apex: float

    def bounds(self) -> Bounds:
        lo, hi = self.cage.bounds()
        xs = float(np.mean(self.torso.cols["xs"]))
        if self.side > 0:
            lo = lo.copy(); lo[0] = max(lo[0], xs - 10)
        else:
            hi = hi.copy(); hi[0] = min(hi[0], xs + 10)
        lo[2] = self.dome.z_top - 2 * self.dome.drop - 20
        return lo, np.minimum(hi, [np.inf, np.inf, self.apex])

    def sdf(self, block: Block) -> np.ndarray:
        d = np.maximum(self.cage.sdf(block), -self.mediastinum.sdf(block))
        d = np.maximum(d, -self.spine_zone.sdf(block))
        d = np.maximum(d, -self.dome.sdf(block))
        xs = self.torso.at("xs", block.z)
        d = np.maximum(d, -self.side * (block.x - xs))
        apex_d = ellipse_sdf(block.x - xs - self.side * 40.0, block.z - (self.apex - 60.0), 45.0, 60.0)
        top = np.where(block.z > self.apex - 60.0, apex_d, -MARGIN_INSIDE)
        return np.maximum(d, top).astype(np.float32)


MARGIN_INSIDE = 100.0

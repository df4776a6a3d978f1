"""Vertebra shapes from analytic primitives in each vertebra's local frame.

A vertebra is the union of its body (cortical shell + cancellous core; the MR target) and its
posterior elements: pedicles, laminae, spinous and transverse processes, and the articular processes
of the facet joints above and below. Facet processes are placed in the *joint* frame shared by the two
neighbours, on either side of a thin joint gap along the region's joint normal, so neighbours touch
but stay separable. C1 is a ring with lateral masses; C2 carries the dens. Sizes come from
:mod:`.sizes` (Panjabi et al. 1991/1992).

Local coordinates (w, v, u) mm: w left, v posterior, u cranial; the body centre is the origin.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .sdf import Block, Capsule, Ellipsoid, RoundBox, Torus, Union, ellipse_sdf, frame_from, local_coords
from .sizes import FACET_GAP, FACET_NORMAL, FACET_RADII, FACET_THICKNESS, LevelSize
from .spine import Fracture, Level, Spine, fractured_heights

SIDES = (1.0, -1.0)


@dataclass(frozen=True)
class VertebralBody:
    """Kidney-shaped body with waist, concave end plates and optional compression fracture.

    ``a``/``b``: half width / half depth (mm); ``hp``/``ha``: intact posterior / anterior heights (mm),
    the height varying linearly from front to back; ``concavity``: central end-plate depression (mm,
    each side). A fracture lowers both heights by ``height_loss`` (crush), the anterior one (wedge), or
    the centre, falling off as ``1 - r^2`` towards the rim (biconcave).
    """

    origin: np.ndarray
    rot: np.ndarray
    a: float
    b: float
    hp: float
    ha: float
    concavity: float = 0.8
    waist: float = 1.0
    fracture: Optional[Fracture] = None
    rounding: float = 1.5
    posterior_concavity: float = 0.0

    def bounds(self):
        half = np.array([self.a, self.b, max(self.hp, self.ha) / 2 + 1.0 + max(-self.concavity, 0.0)])
        ext = np.abs(self.rot) @ half
        return self.origin - ext, self.origin + ext

    def half_height(self, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Half height (mm) at in-plane position (w, v): posterior-anterior slope minus end-plate dip."""
        hp, ha = fractured_heights(self.hp, self.ha, self.fracture)
        t = np.clip(v / self.b, -1.0, 1.0)
        hh = (hp + ha) / 4 + (hp - ha) / 4 * t
        r2 = np.clip((w / self.a) ** 2 + (v / self.b) ** 2, 0.0, 1.0)
        dip = self.concavity
        if self.fracture is not None and self.fracture.type == "biconcave":
            dip = dip + self.fracture.height_loss * (self.hp + self.ha) / 4
        return hh - dip * (1.0 - r2)

    def sdf(self, block: Block) -> np.ndarray:
        w, v, u = local_coords(block, self.origin, self.rot)
        e = 0.5 * self.b  # posterior wall: an ellipse reaching beyond b, cut flat at v = b
        wall = v - self.b + self.posterior_concavity * np.clip(1.0 - (w / (0.75 * self.a)) ** 2, 0.0, 1.0)
        d2 = np.maximum(ellipse_sdf(w, v - e / 2, self.a, self.b + e / 2), wall)
        hh = self.half_height(w, v)
        d2 = d2 + self.waist * np.clip(1.0 - (u / np.maximum(hh, 1.0)) ** 2, 0.0, 1.0)
        du = np.abs(u) - hh
        r = np.float32(self.rounding)
        qa, qb = d2 + r, du + r
        return np.sqrt(np.maximum(qa, 0) ** 2 + np.maximum(qb, 0) ** 2) + np.minimum(np.maximum(qa, qb), 0) - r


@dataclass(frozen=True)
class VertebraShape:
    """The primitives of one vertebra: ``body`` (MR target, thin cortex) and ``posterior`` elements."""

    level: Level
    body: Union
    posterior: Union
    rib_heads: Tuple[np.ndarray, ...] = ()       # world points (left, right) of the costal facets
    rib_tubercles: Tuple[np.ndarray, ...] = ()   # world points of the transverse costal facets
    process_tips: Tuple[np.ndarray, ...] = ()    # world tips of the transverse processes (C7, T, L)


def to_world(origin: np.ndarray, rot: np.ndarray, p: Sequence[float]) -> np.ndarray:
    return origin + rot @ np.asarray(p, float)


def junction(size: LevelSize) -> Tuple[float, float]:
    """(w, v) of the pedicle-lamina junction (articular pillar) in the local frame, mm (left side)."""
    return size.canal_w / 2 + size.ped_w / 2, size.depth / 2 + 0.5 * size.canal_d + 2.0


def joint_region(spine: Spine, index: int) -> str:
    """Facet type of ``spine.joints[index]`` (between levels[index] and the next level or S1)."""
    if spine.levels[index].name == "C1":
        return "atlas"
    nxt = spine.levels[index + 1] if index + 1 < len(spine.levels) else None
    return "lumbar" if nxt is None else nxt.region


def facet_centers(spine: Spine, index: int, side: float, lower_junction: Tuple[float, float]
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Centres (world) of the upper vertebra's inferior and the lower one's superior articular process of
    joint ``index`` on ``side`` (+1 left), and the world joint normal (lower -> upper process)."""
    region = joint_region(spine, index)
    origin, rot = spine.joints[index]
    upper = spine.levels[index]
    wa, va = junction(upper.size)
    wb, vb = lower_junction
    if region == "atlas":
        wf, vf = 15.0 * upper.size.width / 46.0, 1.0
    else:
        wf, vf = (wa + wb) / 2, (va + vb) / 2 + {"cervical": 0.0, "thoracic": 2.0, "lumbar": 5.0}[region]
    n_local = np.array(FACET_NORMAL[region]) * np.array([side, 1.0, 1.0])
    n = rot @ (n_local / np.linalg.norm(n_local))
    joint = to_world(origin, rot, (side * wf, vf, 0.0))
    off = FACET_GAP / 2 + FACET_THICKNESS[region]
    return joint + n * off, joint - n * off, n, region


def facet_process(center: np.ndarray, normal: np.ndarray, region: str, up: np.ndarray) -> Ellipsoid:
    """An articular process: an ellipsoid thin along the joint normal, long cranio-caudally."""
    r1, r2 = FACET_RADII[region]
    if region == "atlas":
        o, rot = frame_from(center, normal, [1.0, 0.0, 0.0])
        return Ellipsoid(o, rot, (r1, r2, FACET_THICKNESS[region]))
    along = up - np.dot(up, normal) * normal
    if np.linalg.norm(along) < 1e-3:
        along = np.array([0.0, 1.0, 0.0])
    o, rot = frame_from(center, normal, along)  # columns: (w' = in-plane, v' = cranial-ish, u' = normal)
    return Ellipsoid(o, rot, (r2, r1, FACET_THICKNESS[region]))


def _plate(start: np.ndarray, end: np.ndarray, up: np.ndarray, height: float, thickness: float,
           rounding: float = 1.5) -> RoundBox:
    """A flat plate from ``start`` to ``end`` (world), ``height`` along ``up``, ``thickness`` across."""
    axis = end - start
    length = float(np.linalg.norm(axis))
    o, rot = frame_from((start + end) / 2, up, axis)
    rounding = min(rounding, thickness / 2 - 0.1, height / 2 - 0.1)
    return RoundBox(o, rot, (thickness / 2, length / 2 + rounding, height / 2), max(rounding, 0.2))


def body_of(level: Level, concavity: float = 0.8) -> VertebralBody:
    """The vertebral body primitive of a level (heights after fracture)."""
    hp, ha = level.size.height, level.size.height * level.size.wedge
    waist = 1.2 if level.region == "lumbar" else 0.6
    kidney = {"cervical": 0.02, "thoracic": 0.06, "lumbar": 0.08}[level.region] * level.size.depth
    return VertebralBody(level.origin, level.rot, level.size.width / 2, level.size.depth / 2, hp, ha,
                         concavity, waist, level.fracture, posterior_concavity=kidney)


def _pedicles_laminae(level: Level) -> List:
    s, o, r = level.size, level.origin, level.rot
    wj, vj = junction(s)
    b, hh = s.depth / 2, s.height / 2
    up_p = 0.25 * hh
    lam_t = {"cervical": 4.0, "thoracic": 5.0, "lumbar": 6.0}[level.region]
    vm = b + s.canal_d + lam_t / 2
    tilt = np.radians(25.0)
    up_lam = r @ np.array([0.0, -np.sin(tilt), np.cos(tilt)])
    prims = []
    for side in SIDES:
        w0 = max(wj - (vj - b + 3.0) * np.tan(np.radians(s.ped_angle)), 0.3 * s.width / 2)
        p0, pj = to_world(o, r, (side * w0, b - 3.0, up_p)), to_world(o, r, (side * wj, vj, up_p))
        eo, er = frame_from((p0 + pj) / 2, r[:, 2], pj - p0)
        prims.append(Ellipsoid(eo, er, (s.ped_w / 2, np.linalg.norm(pj - p0) / 2 + 2.0, s.ped_h / 2)))
        start = to_world(o, r, (side * (wj - 1.0), vj + 1.0, up_p - 0.2 * s.lam_h))
        mid = to_world(o, r, (0.0, vm, up_p - 0.25 * s.lam_h))
        prims.append(_plate(start, mid, up_lam, s.lam_h, lam_t))
        prims.append(Capsule(pj, start, s.ped_w / 2 * 0.9, lam_t / 2 + 0.5))
    return prims


def _spinous(level: Level) -> List:
    s, o, r = level.size, level.origin, level.rot
    lam_t = {"cervical": 4.0, "thoracic": 5.0, "lumbar": 6.0}[level.region]
    height = {"cervical": 0.75, "thoracic": 0.55, "lumbar": 0.8}[level.region] * s.lam_h
    thick = {"cervical": 4.5, "thoracic": 5.5, "lumbar": 6.5}[level.region]
    vm = s.depth / 2 + s.canal_d + lam_t / 2
    um = 0.25 * s.height / 2 - 0.25 * s.lam_h
    alpha = np.radians(s.sp_angle)
    start = to_world(o, r, (0.0, vm - 2.0, um))
    tip_local = np.array([0.0, vm - 2.0 + s.sp_len * np.cos(alpha), um - s.sp_len * np.sin(alpha)])
    tip = to_world(o, r, tip_local)
    up = r @ np.array([0.0, np.sin(alpha), np.cos(alpha)])
    prims = [_plate(start, tip, up, height, thick, 2.0)]
    bifid = level.region == "cervical" and level.name not in ("C7",)
    for dw in ((-3.5, 3.5) if bifid else (0.0,)):
        ko, kr = frame_from(to_world(o, r, tip_local + [dw, 0, 0]), up, tip - start)
        prims.append(Ellipsoid(ko, kr, (thick / 2 + 1.0, 4.0, height / 2 + 1.0)))
    return prims


def _transverse(level: Level) -> Tuple[List, Tuple[np.ndarray, ...]]:
    """Transverse processes; also returns their (world) tips, left then right: where thoracic ribs
    articulate, and where a cervical rib (C7) or a lumbar rib leaves (see :mod:`.ribvariants`)."""
    s, o, r = level.size, level.origin, level.rot
    wj, vj = junction(s)
    prims, tips = [], []
    for side in SIDES:
        if level.region == "lumbar":
            tip = to_world(o, r, (side * (s.tp_span / 2 - 3.0), vj - 1.0, 1.0))
            base = to_world(o, r, (side * (wj - 2.0), vj - 3.0, 0.0))
            prims.append(_plate(base, tip, r[:, 2], 0.42 * s.lam_h, 5.5, 2.5))
            tips.append(tip)
        elif level.region == "thoracic":
            d = np.array([0.72, 0.69, 0.1])
            length = max((s.tp_span / 2 - 6.0 - wj) / d[0], 6.0)
            base = np.array([side * wj, vj, 1.0])
            tip_l = base + length * d * [side, 1, 1]
            prims.append(Capsule(to_world(o, r, base), to_world(o, r, tip_l), 5.0, 5.5))
            tips.append(to_world(o, r, tip_l))
            prims.append(Ellipsoid(*frame_from(tips[-1], r[:, 2], r[:, 1]), (6.0, 6.0, 6.5)))
        elif level.name == "C7":
            tips.append(to_world(o, r, (side * (s.tp_span / 2 - 4.0), vj - 2.0, 0.0)))
            prims.append(Capsule(to_world(o, r, (side * wj, vj - 3.0, 0.0)), tips[-1], 4.0, 4.0))
        else:  # C2-C6: a ring around the foramen transversarium plus the lateral tubercle
            ring_w = s.width / 2 + 5.5
            prims.append(Torus(to_world(o, r, (side * ring_w, 2.5, 0.0)), r, 4.5, 4.0, 2.2))
            prims.append(Capsule(to_world(o, r, (side * (ring_w + 3.5), 2.0, 0.0)),
                                 to_world(o, r, (side * (s.tp_span / 2 - 3.0), 0.0, -1.0)), 2.8, 3.0))
    return prims, tuple(tips)


def _atlas(level: Level) -> Tuple[List, List]:
    """C1: anterior arch and lateral masses (its 'body' for MR) and the posterior arch, processes."""
    s, o, r = level.size, level.origin, level.rot
    k = s.width / 46.0
    wm = 15.0 * k
    body = [Torus(to_world(o, r, (0.0, 8.5 * k, 0.0)), r, 21.0 * k, 19.5 * k, 3.5 * k)]
    post = []
    for side in SIDES:
        body.append(Ellipsoid(*frame_from(to_world(o, r, (side * wm, 1.0, 1.0)), r[:, 2], r[:, 1]),
                              (7.0 * k, 9.5 * k, 7.5 * k)))
        post.append(Capsule(to_world(o, r, (side * (wm + 4.0), 2.0, 1.0)),
                            to_world(o, r, (side * (s.tp_span / 2 - 5.0), 3.0, 0.0)), 4.5 * k, 5.5 * k))
    post.append(Ellipsoid(*frame_from(to_world(o, r, (0.0, 28.0 * k, -1.0)), r[:, 2], r[:, 1]), (5.0, 4.0, 5.5)))
    return body, post


def build_vertebra(spine: Spine, index: int) -> VertebraShape:
    """All primitives of ``spine.levels[index]``, including its halves of the facet joints."""
    level = spine.levels[index]
    o, r = level.origin, level.rot
    up = r[:, 2]
    if level.name == "C1":
        body_parts, post = _atlas(level)
        tubercles: Tuple[np.ndarray, ...] = ()
    else:
        body_parts = [body_of(level)]
        if level.name == "C2":
            hh = level.size.height / 2
            body_parts.append(Capsule(to_world(o, r, (0.0, -1.0, hh - 3.0)), to_world(o, r, (0.0, -0.5, hh + 19.0)),
                                      5.2, 4.0))
        post = _pedicles_laminae(level) + _spinous(level)
        tp, tubercles = _transverse(level)
        post += tp
    own = junction(level.size)
    for side in SIDES:
        if index > 0:  # superior articular process: this vertebra is the lower partner of the joint above
            _, sup, n, region = facet_centers(spine, index - 1, side, own)
            post.append(facet_process(sup, n, region, up))
            anchor = (side * level.size.width * 0.35, 1.0, level.size.height / 2 - 3.0) if region == "atlas" \
                else (side * own[0], own[1], 0.25 * level.size.height / 2)
            post.append(Capsule(to_world(o, r, anchor), sup, 4.0, FACET_THICKNESS[region]))
        lower = junction(spine.levels[index + 1].size) if index + 1 < len(spine.levels) else sacral_junction(spine)
        inf, _, n, region = facet_centers(spine, index, side, lower)
        post.append(facet_process(inf, n, region, up))
        anchor = (side * 15.0 * level.size.width / 46.0, 1.0, 0.0) if region == "atlas" \
            else (side * (own[0] - 1.0), own[1] + 2.0, -0.1 * level.size.lam_h)
        post.append(Capsule(to_world(o, r, anchor), inf, 4.5, FACET_THICKNESS[region] * 0.9))
    heads = ()
    if level.has_ribs:
        hh = level.size.height / 2
        heads = tuple(to_world(o, r, (side * level.size.width * 0.42, level.size.depth * 0.36, hh * 0.55))
                      for side in SIDES)
    return VertebraShape(level, Union(tuple(body_parts), 1.0), Union(tuple(post), 1.5), heads,
                         tubercles if level.has_ribs else (), tubercles)


def sacral_junction(spine: Spine) -> Tuple[float, float]:
    """(w, v) of the sacrum's superior articular processes' pillar, local to S1."""
    w, d, _ = spine.sacrum[0].dims
    return 12.0 + 0.18 * w, d / 2 + 10.5

"""Sacrum, coccyx, hip bones and proximal femora (distractors below the lumbar spine).

The sacrum follows the spine curve (fused segments S1-S5 with alae, dorsal wall and the superior
articular processes that form the L5/S1 facet joints); it is bone but not a labelled vertebra
(VerSe's sacrum id 26 is not a vertebra instance here, see :mod:`vertebra_traversal.anatomy`).
"""
from __future__ import annotations

from typing import List

import numpy as np

from .body import Torso
from .compose import Item
from .sdf import (Capsule, Ellipsoid, HalfSpace, Intersection, RoundBox, Subtraction, Union, capsule,
                  frame_from, sphere)
from .spine import Spine
from .vertebra import SIDES, VertebralBody, facet_centers, facet_process, sacral_junction, to_world


def sacrum_items(spine: Spine) -> List[Item]:
    """Sacrum (S1-S5 with alae and L5/S1 superior articular processes) and coccyx."""
    parts = []
    for k, seg in enumerate(spine.sacrum):
        w, d, h = seg.dims
        o, r = seg.origin, seg.rot
        parts.append(VertebralBody(o, r, w / 2, d / 2, h, h * 0.95, 0.5, 0.0))
        lateral = seg.half_span - w / 2
        for side in SIDES:
            if lateral > 2:
                c = to_world(o, r, (side * (w / 2 + lateral / 2 - 2.0), 4.0 + 2.0 * k, 0.0))
                parts.append(Ellipsoid(*frame_from(c, r[:, 2], r[:, 1]), (lateral / 2 + 4.0, d * 0.42, h / 2 + 2.5)))
        dorsal = to_world(o, r, (0.0, d / 2 + 12.0 - k, 0.0))
        half = (max(seg.half_span * 0.55, 8.0), 3.5, h / 2 + 1.5)
        parts.append(RoundBox(*frame_from(dorsal, r[:, 2], r[:, 1]), half, 2.0))
        parts.append(Ellipsoid(*frame_from(to_world(o, r, (0.0, d / 2 + 17.0 - k, 0.0)), r[:, 2], r[:, 1]),
                               (4.0, 5.0, h / 2)))
    s1 = spine.sacrum[0]
    wj, vj = sacral_junction(spine)
    last = len(spine.levels) - 1
    for side in SIDES:
        _, sup, n, region = facet_centers(spine, last, side, (wj, vj))
        parts.append(facet_process(sup, n, region, s1.rot[:, 2]))
        parts.append(Capsule(to_world(s1.origin, s1.rot, (side * wj, vj, 0.0)), sup, 5.0, 4.0))
    coccyx = [Ellipsoid(*frame_from(c.origin, c.rot[:, 2], c.rot[:, 1]), (c.dims[0] / 2, c.dims[1] / 2, c.dims[2] / 2))
              for c in spine.coccyx]
    return [Item(Union(tuple(parts), 2.0), "marrow", "bone_cortex", 1.0),
            Item(Union(tuple(coccyx)), "marrow", "bone_cortex", 0.8)]


def _triangle(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, thickness: float) -> Intersection:
    """A flat triangular plate (world corners) of the given thickness with rounded faces."""
    normal = np.cross(p1 - p0, p2 - p0)
    normal /= np.linalg.norm(normal)
    center = (p0 + p1 + p2) / 3
    o, rot = frame_from(center, normal, p1 - p0)
    ext = max(np.linalg.norm(p - center) for p in (p0, p1, p2))
    slab = RoundBox(o, rot, (ext, ext, thickness / 2), thickness / 2 - 0.2)
    cuts = []
    for a, b, c in ((p0, p1, p2), (p1, p2, p0), (p2, p0, p1)):
        n_edge = np.cross(b - a, normal)
        n_edge = n_edge if np.dot(n_edge, c - a) < 0 else -n_edge
        cuts.append(HalfSpace(a, n_edge))
    return Intersection((slab, *cuts))


def pelvis_items(spine: Spine, torso: Torso, rng: np.random.Generator) -> List[Item]:
    """Iliac wings, acetabula, pubic and ischial rami, femoral heads, necks and shafts."""
    s1 = spine.sacrum[0]
    k = float(np.clip(torso.cols["A"].max() / 180.0, 0.85, 1.15))
    hip_z = s1.origin[2] - rng.uniform(85, 105)
    items: List[Item] = []
    for side in SIDES:
        si = to_world(s1.origin, s1.rot, (side * (s1.half_span + 4.0), 10.0, -8.0))
        psis = si + np.array([side * 8.0, 18.0, 28.0])
        z_crest = spine.levels[-1].origin[2] + rng.uniform(-5, 15)
        asis = np.array([s1.origin[0] + side * 120.0 * k, s1.origin[1] - 55.0, z_crest - 35.0])
        crest = np.array([s1.origin[0] + side * 110.0 * k, s1.origin[1] - 5.0, z_crest])
        hip = np.array([s1.origin[0] + side * 90.0 * k, s1.origin[1] - 35.0, hip_z])
        roof = hip + np.array([-side * 2.0, 5.0, 28.0])
        wing = Union((_triangle(psis, crest, roof, 6.0), _triangle(crest, asis, roof, 6.0),
                      capsule(psis, crest, 6.0), capsule(crest, asis, 5.5), capsule(si, roof, 12.0, 14.0),
                      capsule(asis, roof, 6.0, 10.0),
                      Ellipsoid(*frame_from(si, [0, 0, 1], [0, 1, 0]), (8.0, 14.0, 22.0))), 3.0)
        head_r = 23.0 * k
        socket = Subtraction(sphere(hip, head_r + 9.0), sphere(hip, head_r + 2.0))
        socket = Intersection((socket, HalfSpace(hip, np.array([side * 0.5, 0.0, -0.8]))))
        tuber = hip + np.array([-side * 12.0, 38.0, -62.0])
        symph = np.array([s1.origin[0] + side * 4.0, hip[1] - 50.0, hip_z - 28.0])
        rami = Union((capsule(hip + [0.0, 12.0, -18.0], tuber, 11.0, 12.0),
                      capsule(hip + [-side * 14.0, -24.0, -6.0], symph, 9.0, 8.0),
                      capsule(symph, tuber, 6.5, 8.0)), 3.0)
        items.append(Item(Union((wing, socket, rami), 2.0), "marrow", "bone_cortex", 1.5))
        troch = hip + np.array([side * 55.0 * k, 12.0, -32.0])
        femur = Union((sphere(hip, head_r), capsule(hip, troch, 15.0, 16.0), sphere(troch, 19.0),
                       capsule(troch, troch + np.array([-side * 18.0, -8.0, -260.0]), 15.0, 13.5)), 4.0)
        items.append(Item(femur, "marrow", "bone_cortex", 2.5))
    return items

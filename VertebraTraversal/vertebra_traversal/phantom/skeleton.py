"""Bones of the thorax that are not vertebrae (distractors): ribs with their costovertebral and
costotransverse articulations, costal cartilages, sternum, clavicles and scapulae.

Each rib starts at the costal facet of its vertebral body (head), passes in front of the tip of the
transverse process (tubercle), turns at the rib angle and follows the rib-cage ellipse of
:class:`.body.Torso` forward and downward; ribs 1-10 continue as cartilage towards the sternum.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from .body import Torso
from .compose import Item
from .ribvariants import RibVariants, extra_rib_items, shorten
from .sdf import Capsule, Ellipsoid, HalfSpace, Intersection, RoundBox, Union, frame_from, tube
from .vertebra import SIDES, VertebraShape

#: Bony end of each rib on the rib-cage ellipse (angle from posterior, fraction of pi) and its drop
#: (mm) from the tubercle to that end, for ribs 1..13.
_RIB_END = (0.80, 0.82, 0.83, 0.83, 0.82, 0.80, 0.78, 0.74, 0.70, 0.66, 0.55, 0.45, 0.38)
_RIB_DROP = (18, 35, 48, 56, 62, 66, 68, 66, 62, 56, 45, 35, 28)


def _sternum_z(torso: Torso, k: int) -> float:
    """Height (mm) where the cartilage of rib ``k`` (1-7) meets the sternum."""
    top, bottom = torso.z("T2") - 12.0, torso.z("T9")
    return top - (k - 1) / 6.0 * (top - bottom)


def rib_items(shapes: Sequence[VertebraShape], torso: Torso, rng: np.random.Generator,
              variants: RibVariants = RibVariants()) -> List[Item]:
    """Ribs (bone) and costal cartilages of every rib-bearing vertebra; the last rib on a side in
    ``variants.short_last`` is cut to that length (mm, from its head), and the cervical and lumbar ribs
    of ``variants`` are added."""
    items: List[Item] = []
    last = max((i for i, s in enumerate(shapes) if s.level.has_ribs), default=-1)
    k = 0
    drop_scale = rng.uniform(0.8, 1.3)
    calcified = rng.random() < 0.3
    for index, shape in enumerate(shapes):
        if not shape.level.has_ribs:
            continue
        k += 1
        r = shape.level.rot
        for side, head, tub in zip(SIDES, shape.rib_heads, shape.rib_tubercles):
            neck = tub - r[:, 1] * 11.0 + r[:, 0] * side * 2.0
            z0 = float(neck[2])
            xc, ax = float(torso.at("xs", z0)), float(torso.at("rib_A", z0))
            yf, yb = float(torso.at("rib_front", z0)), float(torso.at("rib_back", z0))
            yc, by = (yf + yb) / 2, (yb - yf) / 2
            psi0 = np.arcsin(np.clip((abs(neck[0] - xc) + 22.0) / ax, 0.1, 0.95))
            psi1 = np.pi * _RIB_END[min(k, 13) - 1]
            psis = np.linspace(psi0, psi1, 9)
            drop = _RIB_DROP[min(k, 13) - 1] * drop_scale
            frac = (psis - psi0) / (psi1 - psi0)
            ring = [np.array([xc + side * ax * np.sin(p), yc + by * np.cos(p), z0 - drop * f ** 1.3])
                    for p, f in zip(psis, frac)]
            radius = 5.5 if k == 1 else (3.8 if k >= 11 else 4.6)
            pts = [head, neck] + ring
            if index == last and side in variants.short_last:
                pts = shorten(pts, variants.short_last[side])
            items.append(Item(tube(pts, [radius + 0.8] + [radius] * (len(pts) - 1)), "marrow", "bone_cortex", 1.0))
            if k <= 10:
                items.append(Item(_cartilage(ring[-1], side, k, torso, radius), "calcification" if calcified
                                  else "cartilage"))
    return items + extra_rib_items(shapes, variants)


def _cartilage(end: np.ndarray, side: float, k: int, torso: Torso, radius: float) -> Union:
    if k <= 7:
        z = _sternum_z(torso, k)
        target = np.array([float(torso.at("xs", z)) + side * 16.0, float(torso.at("rib_front", z)) + 2.0, z])
    else:
        z = torso.z("T9") - 8.0 * (k - 7)
        target = np.array([float(torso.at("xs", z)) + side * (30.0 + 14.0 * (k - 7)),
                           float(torso.at("rib_front", z)) + 10.0, z + 10.0])
    mid = (end + target) / 2 + np.array([0.0, -8.0, 0.0])
    return tube([end, mid, target], [radius * 0.9] * 3)


def sternum_items(torso: Torso) -> List[Item]:
    """Manubrium, sternal body and xiphoid along the anterior rib cage."""
    top, bottom = torso.z("T2") - 8.0, torso.z("T9") - 10.0
    zs = np.linspace(top, bottom, 5)
    pts = [np.array([float(torso.at("xs", z)), float(torso.at("rib_front", z)) - 1.0, z]) for z in zs]
    parts = []
    for i in range(len(pts) - 1):
        a, b = pts[i], pts[i + 1]
        half_w = 26.0 if i == 0 else 15.0
        o, rot = frame_from((a + b) / 2, b - a, [0.0, 1.0, 0.0])
        parts.append(RoundBox(o, rot, (half_w, 6.0, np.linalg.norm(b - a) / 2 + 2.0), 3.0))
    xi = pts[-1] + np.array([0.0, -4.0, -20.0])
    parts.append(Capsule(pts[-1], xi, 5.0, 3.0))
    return [Item(Union(tuple(parts)), "marrow", "bone_cortex", 1.2)]


def shoulder_items(torso: Torso, rng: np.random.Generator) -> List[Item]:
    """Clavicles (manubrium to acromion, S-shaped) and scapulae (triangular plates on the back)."""
    items: List[Item] = []
    z1 = torso.z("T1")
    for side in SIDES:
        xs = float(torso.at("xs", z1))
        front, back = float(torso.at("rib_front", z1)), float(torso.at("back", z1))
        med = np.array([xs + side * 24.0, front - 4.0, torso.z("T2") + 2.0])
        acr = np.array([xs + side * rng.uniform(140, 165), back - 55.0, z1 + 12.0])
        c1 = med + (acr - med) * 0.35 + np.array([side * 0.0, -14.0, 6.0])
        c2 = med + (acr - med) * 0.72 + np.array([0.0, 8.0, 4.0])
        items.append(Item(tube([med, c1, c2, acr], [8.0, 6.5, 6.0, 7.5]), "marrow", "bone_cortex", 1.8))
        items.extend(_scapula(torso, side, acr, rng))
    return items


def _scapula(torso: Torso, side: float, acromion: np.ndarray, rng: np.random.Generator) -> List[Item]:
    """A triangular plate lying on the posterolateral rib cage (outside the ribs), its spine running
    up to the acromion, and the glenoid at the lateral angle."""
    z_top, z_bot = torso.z("T2") + 5.0, torso.z("T7") - rng.uniform(0, 15)
    zc = (z_top + z_bot) / 2
    xs, ax = float(torso.at("xs", zc)), float(torso.at("rib_A", zc))
    yf, yb = float(torso.at("rib_front", zc)), float(torso.at("rib_back", zc))
    yc, by = (yf + yb) / 2, (yb - yf) / 2
    psi = np.arcsin(0.58)
    surface = np.array([xs + side * ax * np.sin(psi), yc + by * np.cos(psi), zc])
    normal = np.array([side * np.sin(psi) / ax, np.cos(psi) / by, 0.0])
    normal /= np.linalg.norm(normal)
    tangent = np.array([side * ax * np.cos(psi), -by * np.sin(psi), 0.0])
    tangent /= np.linalg.norm(tangent) * side  # points laterally
    center = surface + normal * 14.0
    up = np.array([0.0, 0.0, 1.0])
    o, rot = frame_from(center, up, tangent)
    plate = RoundBox(o, rot, (3.5, 48.0, (z_top - z_bot) / 2), 2.5)
    medial_top = center - tangent * 40.0 + up * (z_top - zc)
    lateral = center + tangent * 46.0 + up * (z_top - zc)
    inferior = center - tangent * 12.0 + up * (z_bot - zc)
    edge = lateral - inferior  # keep the triangle: cut along the lateral border
    n_cut = np.cross(edge, normal)
    n_cut = n_cut if np.dot(n_cut, medial_top - inferior) < 0 else -n_cut
    tri = Intersection((plate, HalfSpace(inferior, n_cut)))
    spine_of_scapula = Capsule(medial_top - up * 12.0 + normal * 5.0, acromion, 5.0, 7.0)
    glenoid = Ellipsoid(*frame_from(lateral - normal * 8.0 - up * 10.0, up, tangent), (9.0, 12.0, 16.0))
    return [Item(Union((tri, spine_of_scapula, glenoid), 3.0), "marrow", "bone_cortex", 1.5)]

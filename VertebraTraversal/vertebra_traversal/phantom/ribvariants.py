"""Rib anomalies at the ends of the rib cage: a cervical rib on C7, a lumbar rib on L1, and a short
(hypoplastic) last rib.

They matter for identification because a reader, and any method that counts, takes the vertebra with
the lowest rib for T12 and the one with the highest for T1. None of them changes a vertebra's label: the
phantom's ground truth counts the vertebrae (VerSe), so a lumbar rib sits on L1, a cervical rib on C7,
and a short last rib stays on T12 (T13 in a spine with thirteen thoracic vertebrae).

Prevalence in patients, for choosing the rates (all per case; unilateral about half the time):
cervical ribs 0.5-1 % (0.94 % of 1165 cervical CTs, 54 % unilateral), lumbar ribs about 1.3 % (7 of
530 chest CTs with the region in view), and a transitional vertebra at the thoracolumbar junction (a
short rib, a rudimentary one or none where the twelfth rib should be) in 11 % of 1340 patients of a
spine-pain CT series, 7 % with eleven full rib pairs. A rib shorter than 38 mm counts as short
(hypoplastic) in the radiological literature; the short last rib here is 12-38 mm long.

Drawn from the generator's own ``ribs`` stream with a fixed number of draws, so a case with the rates
at zero is exactly the case generated before this module existed, and switching a rate on changes
only that case's ribs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np

from .compose import Item
from .sdf import tube
from .vertebra import SIDES, VertebraShape

#: Length ranges (mm) of each anomaly, measured along the rib from where it leaves the vertebra.
LENGTH_MM = {"cervical": (20.0, 60.0), "lumbar": (20.0, 50.0), "short_last": (12.0, 38.0)}
KINDS = tuple(LENGTH_MM)
SIDE_NAMES = {1.0: "left", -1.0: "right"}


@dataclass(frozen=True)
class RibVariants:
    """Which anomalies a case has: for each kind, the rib length (mm) per side (``1.0`` the patient's left,
    ``-1.0`` the right, as ``SIDES``); an empty mapping when absent. As drawn: the case sidecar lists an
    anomaly whether or not the scan's field of view shows it."""

    cervical: Dict[float, float] = field(default_factory=dict)
    lumbar: Dict[float, float] = field(default_factory=dict)
    short_last: Dict[float, float] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Dict[str, float]]:
        """``{kind: {"left"|"right": length_mm}}`` for the kinds present."""
        return {kind: {SIDE_NAMES[s]: round(v, 1) for s, v in getattr(self, kind).items()}
                for kind in KINDS if getattr(self, kind)}


def draw(rates: Dict[str, float], rng: np.random.Generator) -> RibVariants:
    """The anomalies of one case; ``rates`` maps each of :data:`KINDS` to a probability per case.

    Five draws per kind whatever the rates: presence, bilateral or not, which side, two lengths.

    Raises:
        ValueError: a key of ``rates`` that is not one of :data:`KINDS`.
    """
    unknown = sorted(set(rates) - set(KINDS))
    if unknown:
        raise ValueError(f"rib anomaly rates for unknown kinds {unknown}; known: {KINDS}")
    chosen = {}
    for kind in KINDS:
        present, both, which, *lengths = rng.random(5)
        lo, hi = LENGTH_MM[kind]
        sides = SIDES if both < 0.5 else (SIDES[int(which < 0.5)],)
        chosen[kind] = ({s: float(lo + (hi - lo) * u) for s, u in zip(sides, lengths)}
                        if present < rates.get(kind, 0.0) else {})
    return RibVariants(**chosen)


def shorten(points: Sequence[np.ndarray], length: float) -> List[np.ndarray]:
    """The polyline ``points`` (world mm) cut to ``length`` mm (>= 0) along it from its first point; the
    whole line where it is shorter."""
    if length < 0:
        raise ValueError(f"a rib cannot be cut to a negative length, got {length} mm")
    out = [np.asarray(points[0], float)]
    left = float(length)
    for a, b in zip(points, points[1:]):
        step = float(np.linalg.norm(np.asarray(b) - np.asarray(a)))
        if step >= left:
            out.append(np.asarray(a, float) + (np.asarray(b, float) - np.asarray(a, float)) * (left / max(step, 1e-6)))
            return out
        out.append(np.asarray(b, float))
        left -= step
    return out


def _rib_from_tip(shape: VertebraShape, side: float, length: float, course: Sequence[Sequence[float]],
                  radius: float) -> Item:
    """A rib leaving the tip of ``shape``'s transverse process on ``side`` (``SIDES``), ``length`` mm long and
    ``radius`` mm thick: ``course`` lists unit-free directions in the vertebra's frame (x lateral, y
    posterior, z superior; x is multiplied by ``side``), one per equal piece of ``length``."""
    r = shape.level.rot
    tip = shape.process_tips[SIDES.index(side)]  # left then right, as built
    pts = [tip]
    for d in course:
        d = r @ (np.asarray(d, float) * [side, 1.0, 1.0])
        pts.append(pts[-1] + d / np.linalg.norm(d) * length / len(course))
    return Item(tube(pts, [radius + 0.5] + [radius] * len(course)), "marrow", "bone_cortex", 1.0)


def extra_rib_items(shapes: Sequence[VertebraShape], variants: RibVariants) -> List[Item]:
    """Cervical ribs on C7 (out, forward and down towards the first rib) and lumbar ribs on L1 (out
    and down along the flank), as bone items that belong to no vertebra's label."""
    items: List[Item] = []
    by_name = {s.level.name: s for s in shapes}
    if variants.cervical and "C7" in by_name:
        for side, length in variants.cervical.items():
            items.append(_rib_from_tip(by_name["C7"], side, length, ((0.9, -0.2, -0.4), (0.5, -0.8, -0.5)), 3.2))
    if variants.lumbar and "L1" in by_name:
        for side, length in variants.lumbar.items():
            items.append(_rib_from_tip(by_name["L1"], side, length, ((0.9, 0.1, -0.35), (0.8, -0.1, -0.6)), 3.5))
    return items

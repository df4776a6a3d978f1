"""Posterior instrumentation: pedicle screws through 2-4 adjacent thoracolumbar vertebrae and the
two rods connecting their heads. In MR the metal is a signal void somewhat larger than the metal."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .compose import Item
from .sdf import Union, capsule, sphere
from .spine import Spine
from .vertebra import SIDES, junction, to_world

Screw = Tuple[np.ndarray, np.ndarray]


def implant_items(spine: Spine, rng: np.random.Generator, mr: bool) -> Tuple[List[Item], List[Screw]]:
    """Screws and rods as paint items (material ``metal``) and the screw axes (entry, tip) in world mm."""
    names = [l.name for l in spine.levels]
    allowed = ("T10", "T11", "T12", "T13", "L1", "L2", "L3", "L4", "L5", "L6")
    candidates = [i for i, n in enumerate(names) if n in allowed]
    n = int(rng.integers(2, 5))
    start = int(rng.choice(candidates[: max(len(candidates) - n + 1, 1)]))
    levels = spine.levels[start:start + n]
    grow = 2.5 if mr else 0.0
    parts, screws, heads = [], [], {side: [] for side in SIDES}
    for level in levels:
        wj, vj = junction(level.size)
        b = level.size.depth / 2
        up = 0.25 * level.size.height / 2
        for side in SIDES:
            entry = to_world(level.origin, level.rot, (side * (wj + 2.0), vj + 9.0, up))
            tip = to_world(level.origin, level.rot, (side * wj * 0.3, -b * 0.55, up))
            parts.append(capsule(entry, tip, 3.2 + grow, 2.6 + grow))
            parts.append(sphere(entry + level.rot[:, 1] * 4.0, 6.0 + grow))
            heads[side].append(entry + level.rot[:, 1] * 6.0)
            screws.append((entry, tip))
    for side in SIDES:
        pts = heads[side]
        ext = (pts[0] - pts[-1]) / max(np.linalg.norm(pts[0] - pts[-1]), 1e-6) * 8.0
        parts.append(capsule(pts[0] + ext, pts[-1] - ext, 3.0 + grow))
    return [Item(Union(tuple(parts)), "metal")], screws

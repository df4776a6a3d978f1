"""Intervertebral discs (annulus + nucleus) and the spinal canal contents (epidural fat, dural sac
with CSF, spinal cord down to the conus at L1/L2).

A disc is a body-shaped slab in its joint frame reaching a little into both neighbouring bodies (the
bone painted afterwards keeps the end plates; the overlap fills their concavities). The canal tube
follows the centre of the vertebral foramen of every level.
"""
from __future__ import annotations

from typing import List

import numpy as np

from .compose import Item
from .sdf import Ellipsoid, frame_from, tube
from .spine import Spine
from .vertebra import VertebralBody, to_world

#: Disc overlap into each neighbouring body (mm) and its outward bulge at mid height (mm).
OVERLAP, BULGE = 2.5, 1.0


def disc_items(spine: Spine) -> List[Item]:
    """Annulus and nucleus of every disc from C2/C3 down to L5/S1."""
    items: List[Item] = []
    for i, (origin, rot) in enumerate(spine.joints):
        upper = spine.levels[i]
        if upper.name == "C1":
            continue
        if i + 1 < len(spine.levels):
            width, depth = spine.levels[i + 1].size.width, spine.levels[i + 1].size.depth
        else:
            width, depth = spine.sacrum[0].dims[0], spine.sacrum[0].dims[1]
        a = (upper.size.width + width) / 4
        b = (upper.size.depth + depth) / 4
        h = upper.size.disc + 2 * OVERLAP
        items.append(Item(VertebralBody(origin, rot, a, b, h, h, -OVERLAP * 0.6, -BULGE), "disc"))
        nucleus = Ellipsoid(*frame_from(to_world(origin, rot, (0.0, 0.12 * b, 0.0)), rot[:, 2], rot[:, 1]),
                            (0.5 * a, 0.42 * b, max(upper.size.disc * 0.38, 1.0)))
        items.append(Item(nucleus, "nucleus"))
    return items


def canal_items(spine: Spine) -> List[Item]:
    """Epidural fat, dural sac (CSF) and cord along the vertebral foramina (and into the sacrum)."""
    centres, depths = [], []
    c1 = spine.levels[0]
    k = c1.size.width / 46.0
    centres.append(to_world(c1.origin, c1.rot, (0.0, 14.0 * k, 40.0)))
    depths.append(22.0)
    for i, level in enumerate(spine.levels):
        s = level.size
        v = 14.0 * k if level.name == "C1" else s.depth / 2 + s.canal_d / 2
        centres.append(to_world(level.origin, level.rot, (0.0, v, 0.0)))
        depths.append(s.canal_d if level.name != "C1" else 18.0)
        if i + 1 < len(spine.levels) and level.name != "C1":
            nxt = spine.levels[i + 1].size
            o, r = spine.joints[i]
            centres.append(to_world(o, r, (0.0, (s.depth + nxt.depth) / 4 + (s.canal_d + nxt.canal_d) / 4, 0.0)))
            depths.append((s.canal_d + nxt.canal_d) / 2)
    for seg in spine.sacrum[:3]:
        centres.append(to_world(seg.origin, seg.rot, (0.0, seg.dims[1] / 2 + 6.0, 0.0)))
        depths.append(8.0)
    depths = np.asarray(depths)
    items = [Item(tube(centres, depths / 2 + 1.0), "epidural_fat"),
             Item(tube(centres, np.maximum(depths / 2 - 1.5, 2.0)), "csf")]
    conus = next((j for j, l in enumerate(spine.levels) if l.name == "L2"), len(spine.levels) - 1)
    n_cord = 1 + 2 * conus
    radii = [5.5 if j < 14 else 4.5 for j in range(n_cord)]
    radii[-1] = 1.5
    items.append(Item(tube(centres[:n_cord], radii), "cord"))
    return items

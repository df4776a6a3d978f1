"""Head and skull base near C1 (distractors for cervical fields of view): scalp, brain, skull shell
with foramen magnum, occipital condyles on the atlas, petrous ridges, mastoids, mandible and teeth,
and the pharyngeal airway.
"""
from __future__ import annotations

from typing import List

import numpy as np

from .compose import Item
from .sdf import Capsule, Ellipsoid, Shell, Subtraction, Union, capsule, frame_from, tube
from .spine import Spine
from .vertebra import SIDES, to_world


def head_items(spine: Spine, rng: np.random.Generator) -> List[Item]:
    """Soft tissue and bones of the head, placed on the atlas frame."""
    c1 = spine.levels[0]
    o, r = c1.origin, c1.rot
    k = c1.size.width / 46.0
    fm = to_world(o, r, (0.0, 14.0 * k, 13.0))
    size = rng.uniform(0.92, 1.08)
    radii = np.array([72.0, 95.0, 80.0]) * size
    center = fm + np.array([0.0, -15.0, radii[2] * 0.98])
    up, post = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    scalp = Ellipsoid(*frame_from(center + [0.0, -8.0, -4.0], up, post), tuple(radii + [8.0, 14.0, 10.0]))
    items = [Item(scalp, "soft"),
             Item(Ellipsoid(*frame_from(center, up, post), tuple(radii - 7.0)), "brain")]
    skull = Subtraction(Shell(Ellipsoid(*frame_from(center, up, post), tuple(radii - 3.5)), 7.0),
                        Capsule(fm - [0.0, 0.0, 30.0], fm + [0.0, 0.0, 30.0], 17.0 * k, 17.0 * k))
    parts = [skull]
    for side in SIDES:
        condyle = to_world(o, r, (side * 15.0 * k, 2.0, 1.0 + 7.5 * k + 1.4 + 5.0))
        parts.append(Ellipsoid(*frame_from(condyle, r[:, 2], r[:, 1]), (6.0, 9.0, 5.0)))
        parts.append(capsule(condyle, fm + [side * 22.0, -4.0, 8.0], 6.0))
        parts.append(capsule(fm + [side * 16.0, -22.0, 18.0], fm + [side * 58.0, 2.0, 22.0], 8.0, 9.0))
        parts.append(Ellipsoid(*frame_from(fm + [side * 56.0, 6.0, -4.0], up, post), (10.0, 12.0, 15.0)))
    items.append(Item(Union(tuple(parts), 3.0), "marrow", "bone_cortex", 2.5))
    items.extend(_face(fm, rng))
    return items


def _face(fm: np.ndarray, rng: np.random.Generator) -> List[Item]:
    """Mandible with teeth in front of C2-C3 and the airway behind the tongue."""
    drop = rng.uniform(45, 60)
    chin = fm + np.array([0.0, -110.0, -drop - 15.0])
    items = []
    for side in SIDES:
        condyle = fm + np.array([side * 50.0, -38.0, 2.0])
        angle = fm + np.array([side * 46.0, -48.0, -drop])
        body = fm + np.array([side * 30.0, -95.0, -drop - 10.0])
        items.append(Item(tube([condyle, angle, body, chin], [6.0, 8.0, 8.0, 9.0]), "marrow", "bone_cortex", 2.0))
        for t in np.linspace(0.1, 0.9, 5):
            p = body * (1 - t) + chin * t + np.array([0.0, 0.0, 12.0])
            items.append(Item(Ellipsoid(*frame_from(p, [0, 0, 1], [0, 1, 0]), (4.0, 4.5, 7.0)), "teeth"))
            items.append(Item(Ellipsoid(*frame_from(p + [0.0, -2.0, 22.0], [0, 0, 1], [0, 1, 0]), (4.0, 4.5, 7.0)),
                              "teeth"))
    airway = [fm + np.array([0.0, -45.0, 10.0]), fm + np.array([0.0, -42.0, -30.0]),
              fm + np.array([0.0, -40.0, -75.0])]
    items.append(Item(tube(airway, [9.0, 8.0, 7.0]), "gas"))
    return items

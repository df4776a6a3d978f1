"""Soft tissues around the spine: body outline with subcutaneous fat, muscle, thoracic and abdominal
cavities, lungs under the diaphragm dome, heart, liver, spleen, stomach, kidneys, bladder, psoas and
paraspinal muscles, contrast-filled aorta with calcifications, vena cava, neck vessels, airway and
bowel gas, and the CT table. Returned as :class:`.compose.Item` lists in painting order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from .body import Dome, Extrusion, Lung, Torso, outline, ribcage
from .compose import Item
from .sdf import Block, Bounds, Ellipsoid, HalfSpace, Intersection, frame_from, sphere, tube
from .spine import Spine


def _spine_col(torso: Torso, name: str):
    return lambda z: torso.at(name, z)


@dataclass(frozen=True)
class Domes:
    right: Dome
    left: Dome


def domes(torso: Torso, rng: np.random.Generator) -> Domes:
    """Right and left hemidiaphragm (right higher over the liver)."""
    z = torso.z("T10") + rng.uniform(-15, 20)
    zc = z
    xs, yc = float(torso.at("xs", zc)), float((torso.at("rib_front", zc) + torso.at("rib_back", zc)) / 2)
    ax = float(torso.at("rib_A", zc))
    drop = rng.uniform(55, 85)
    return Domes(Dome(xs - 0.45 * ax, yc, z, 0.75 * ax, 95.0, drop),
                 Dome(xs + 0.45 * ax, yc, z - rng.uniform(8, 25), 0.75 * ax, 95.0, drop))


def layer_items(torso: Torso, head_top: float) -> List[Item]:
    """Body outline filled with fat; a muscle wall inside the subcutaneous fat layer; visceral and
    retroperitoneal fat inside the wall."""
    t = torso
    z0, z1 = float(t.zs[0]), head_top
    body = outline(t)
    body = Extrusion(t, body.center, body.axes, z0, z1)
    c7 = t.z("C7")
    return [Item(body, "fat"), Item(body, "muscle", inset=lambda z: t.at("fat", z)),
            Item(body, "fat", inset=lambda z: t.at("fat", z) + 14.0 + np.where(z > c7, 1000.0, 0.0))]


def cavity_items(spine: Spine, torso: Torso, dm: Domes) -> Tuple[List[Item], Extrusion]:
    """Abdominal cavity (bowel texture), mediastinum and the paraspinal muscles; also returns the
    abdominal cavity shape (to confine organs)."""
    t = torso
    z_top = max(dm.right.z_top, dm.left.z_top) + 5.0
    z_bot = t.z("S4") - 10.0
    front = lambda z: t.at("front", z) + t.at("fat", z) + 14.0
    back = lambda z: t.at("ys", z) + t.at("half_depth", z) + 20.0
    abd = Extrusion(t, (lambda z: t.at("xs", z) * 0.5, lambda z: (front(z) + back(z)) / 2),
                    (lambda z: t.at("A", z) - t.at("fat", z) - 16.0, lambda z: (back(z) - front(z)) / 2),
                    z_bot, z_top)
    med = mediastinum(t)
    cage = ribcage(t, 6.0, t.z("L1"), t.z("T1") + 45.0)
    para = Extrusion(t, (_spine_col(t, "xs"), lambda z: t.at("ys", z) + t.at("half_depth", z) + 45.0),
                     (lambda z: t.at("half_depth", z) * 1.1 + 38.0, lambda z: np.full(z.shape, 34.0, np.float32)),
                     float(t.zs[0]), t.z("C2"))
    items = [Item(abd, "bowel"), Item(Intersection((cage, med)), "soft", texture=25.0, cell=10.0),
             Item(para, "fatty_muscle")]
    return items, abd


def mediastinum(t: Torso) -> Extrusion:
    """The space between the lungs: narrow above the heart, wide and left-shifted around it."""
    zh0, zh1 = t.z("T10"), t.z("T5")

    def heart_zone(z):
        return np.clip(1.0 - np.abs(z - (zh0 + zh1) / 2) / ((zh1 - zh0) / 2 + 20.0), 0.0, 1.0).astype(np.float32)

    front = lambda z: t.at("rib_front", z) - 10.0
    back = lambda z: t.at("ys", z) - t.at("half_depth", z) + 6.0
    return Extrusion(t, (lambda z: t.at("xs", z) + 18.0 * heart_zone(z), lambda z: (front(z) + back(z)) / 2),
                     (lambda z: 24.0 + 42.0 * heart_zone(z), lambda z: (back(z) - front(z)) / 2),
                     t.z("L2"), t.z("T1") + 60.0)


def lung_items(torso: Torso, dm: Domes, rng: np.random.Generator) -> List[Item]:
    """Both lungs."""
    t = torso
    cage = ribcage(t, 8.0, t.z("L2"), t.z("T1") + 60.0)
    zone = Extrusion(t, (_spine_col(t, "xs"), lambda z: t.at("ys", z) + 8.0),
                     (lambda z: t.at("half_depth", z) * 1.15 + 10.0, lambda z: t.at("half_depth", z) + 26.0),
                     t.z("L3"), t.z("T1") + 80.0)
    apex = t.z("T1") + rng.uniform(25, 40)
    return [Item(Lung(t, side, cage, mediastinum(t), zone, dome, apex), "lung")
            for side, dome in ((1.0, dm.left), (-1.0, dm.right))]


def organ_items(spine: Spine, torso: Torso, dm: Domes, abd: Extrusion, rng: np.random.Generator) -> List[Item]:
    """Heart, liver, spleen, stomach (with gas cap), kidneys, bladder, psoas."""
    t = torso
    k = rng.uniform(0.85, 1.15, size=6)  # per-case organ sizes: heart, liver, spleen, stomach, kidneys, bladder
    zh = t.z("T8") - 5.0
    xs, front = float(t.at("xs", zh)), float(t.at("rib_front", zh))
    heart = Ellipsoid(*frame_from([xs + 20.0, front + 52.0, zh], [0.4, 0.35, 1.0], [0.0, 1.0, 0.0]),
                      tuple(np.array([50.0, 42.0, 56.0]) * k[0]))
    zr, zl = dm.right.z_top, dm.left.z_top
    ya = float((t.at("front", zr - 70) + t.fat + t.at("ys", zr - 70)) / 2)
    below_r, below_l = dm.right, dm.left
    up, post = [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]
    liver_c = [float(t.at("xs", zr)) - 60.0, ya + 10.0, zr - 75.0]
    liver = Intersection((Ellipsoid(*frame_from(liver_c, up, post), tuple(np.array([110.0, 90.0, 88.0]) * k[1])),
                          abd, below_r))
    spleen_c = [float(t.at("xs", zl)) + 95.0, float(t.at("ys", zl)) + 10.0, zl - 60.0]
    spleen_r = tuple(np.array([32.0, 48.0, 55.0]) * k[2])
    spleen = Intersection((Ellipsoid(*frame_from(spleen_c, [0, 0.3, 1], post), spleen_r), abd, below_l))
    st_c = np.array([float(t.at("xs", zl)) + 55.0, float(t.at("front", zl - 60)) + t.fat + 55.0, zl - 55.0])
    stomach = Intersection((Ellipsoid(*frame_from(st_c, up, post), tuple(np.array([55.0, 42.0, 55.0]) * k[3])),
                            abd, below_l))
    gas_cap = Intersection((stomach, HalfSpace(st_c + [0.0, -rng.uniform(5, 30), 0.0], np.array([0.0, 1.0, 0.0]))))
    items = [Item(Ellipsoid(heart.origin, heart.rot, tuple(np.array(heart.radii) + 5.0)), "fat"),
             Item(heart, "heart"),
             Item(liver, "liver", texture=6.0, cell=10.0), Item(spleen, "spleen"), Item(stomach, "viscera"),
             Item(gas_cap, "gas")]
    for side, dz in ((1.0, 0.0), (-1.0, -15.0)):
        z = t.z("L1") + dz
        c = [float(t.at("xs", z)) + side * 68.0, float(t.at("ys", z)) + 15.0, z]
        items.append(Item(Ellipsoid(*frame_from(c, [-side * 0.2, 0.25, 1.0], [0, 1, 0]),
                                    tuple(np.array([26.0, 24.0, 55.0]) * k[4])), "kidney"))
    zb = t.z("S4") - 25.0
    bladder = [float(t.at("xs", zb)), float(t.at("front", zb)) + t.fat + 50.0, zb]
    items.append(Item(sphere(bladder, 38.0 * k[5]), "fluid"))
    items.extend(_psoas(spine, t))
    return items


def _psoas(spine: Spine, t: Torso) -> List[Item]:
    lumbar = [l for l in spine.levels if l.region == "lumbar"] or [spine.levels[-1]]
    out = []
    for side in (1.0, -1.0):
        pts, radii = [], []
        start = [l for l in spine.levels if l.name in ("T12", "T13")] or lumbar[:1]
        for i, lv in enumerate(start[:1] + lumbar):
            pts.append(lv.origin + lv.rot[:, 0] * side * (lv.size.width / 2 + 4.0 + 3.0 * i) + lv.rot[:, 1] * 2.0)
            radii.append(8.0 + 3.5 * i)
        s2 = spine.sacrum[1]
        pts.append(s2.origin + np.array([side * 55.0, -40.0, 0.0]))
        radii.append(radii[-1] + 2.0)
        pts.append(pts[-1] + np.array([side * 20.0, -25.0, -70.0]))
        radii.append(radii[-1])
        out.append(Item(tube(pts, radii), "muscle"))
    return out


def vessel_items(spine: Spine, t: Torso, rng: np.random.Generator) -> Tuple[List[Item], List[np.ndarray]]:
    """Aorta (arch, descending, bifurcation, iliacs), vena cava, carotids; calcifications. Also returns the
    aortic centre line (for metal/implant-free checks and calcifications)."""
    def at(level: str, dx: float, dy: float, dz: float = 0.0) -> np.ndarray:
        z = t.z(level) + dz
        return np.array([float(t.at("xs", z)) + dx, float(t.at("ys", z)) + dy, z])

    hd = lambda level: float(t.at("half_depth", t.z(level)))
    last = spine.levels[-1].name
    path = [at("T7", -5.0, float(t.at("rib_front", t.z("T7")) - t.at("ys", t.z("T7"))) + 70.0),
            at("T3", 0.0, -hd("T3") - 45.0, -5.0), at("T2", 10.0, -hd("T2") - 18.0, -12.0),
            at("T4", 20.0, -hd("T4") * 0.5),
            at("T8", hd("T8") * 0.9 + 8.0, -hd("T8") * 0.45), at("T12", hd("T12") * 0.6 + 8.0, -hd("T12") - 6.0),
            at("L2", hd("L2") * 0.5, -hd("L2") - 12.0), at(last, 4.0, -hd(last) - 14.0, 20.0)]
    radii = [15.0, 14.0, 13.0, 12.5, 12.0, 11.0, 10.0, 9.0]
    items = [Item(tube(path, radii), "aorta")]
    for side in (1.0, -1.0):
        ili = [path[-1], path[-1] + [side * 40.0, -15.0, -60.0], path[-1] + [side * 75.0, -40.0, -120.0]]
        items.append(Item(tube(ili, [6.5, 6.0, 5.5]), "aorta"))
        neck = [path[2] + [side * 12.0, 0.0, 0.0], at("C6", side * 28.0, -hd("C6") - 10.0),
                at("C2", side * 30.0, -hd("C2") - 8.0)]
        items.append(Item(tube(neck, [4.0, 3.8, 3.5]), "aorta"))
        items.append(Item(tube([p + [side * 12.0, -4.0, 0.0] for p in neck[1:]], [6.0, 5.5]), "blood"))
    cava = [at("T11", -hd("T11") - 10.0, -hd("T11") + 5.0), at(last, -hd(last) * 0.6 - 8.0, -hd(last) - 10.0)]
    items.append(Item(tube(cava, [12.0, 11.0]), "blood"))
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 16))):
            i = int(rng.integers(3, len(path) - 1))
            f = rng.random()
            c = path[i] * (1 - f) + path[i + 1] * f
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            r = radii[i] * (1 - f) + radii[i + 1] * f
            items.append(Item(sphere(c + d * (r - 0.5), rng.uniform(0.8, 2.5)), "calcification"))
    return items, path


def airway_items(t: Torso) -> List[Item]:
    """Trachea from C6 to the carina at T5 and the main bronchi."""
    def at(level: str, dx: float, dy: float, dz: float = 0.0) -> np.ndarray:
        z = t.z(level) + dz
        return np.array([float(t.at("xs", z)) + dx, float(t.at("ys", z)) - float(t.at("half_depth", z)) + dy, z])

    path = [at("C5", 0.0, -22.0), at("T1", 0.0, -20.0), at("T4", 0.0, -22.0, -10.0)]
    items = [Item(tube(path, [8.5, 9.0, 9.0]), "gas")]
    for side in (1.0, -1.0):
        items.append(Item(tube([path[-1], path[-1] + [side * 38.0, 8.0, -25.0]], [7.0, 5.5]), "gas"))
    return items


def bowel_gas_items(abd: Extrusion, rng: np.random.Generator) -> List[Item]:
    """A few gas pockets inside the abdominal cavity."""
    lo, hi = abd.bounds()
    items = []
    for _ in range(int(rng.integers(0, 25))):
        c = lo + rng.random(3) * (hi - lo)
        c[1] = lo[1] + rng.random() * (hi[1] - lo[1]) * 0.6  # anterior part (supine: gas rises)
        r = rng.uniform(4, 22, size=3)
        items.append(Item(Intersection((Ellipsoid(c, np.eye(3), tuple(r)), abd)), "gas"))
    return items


@dataclass(frozen=True)
class Table:
    """CT table under the patient: a slab of ``thickness`` mm, top at ``y_top`` (curving up by
    ``curve`` mm at the sides), ``half_width`` mm, along the whole z range."""

    x0: float
    y_top: float
    thickness: float
    half_width: float
    curve: float
    z0: float
    z1: float

    def bounds(self) -> Bounds:
        return (np.array([self.x0 - self.half_width, self.y_top - self.curve, self.z0]),
                np.array([self.x0 + self.half_width, self.y_top + self.thickness, self.z1]))

    def sdf(self, block: Block) -> np.ndarray:
        dx = block.x - self.x0
        top = self.y_top - self.curve * (dx / self.half_width) ** 2
        d = np.abs(block.y - top - self.thickness / 2) - self.thickness / 2
        d = np.maximum(d, np.abs(dx) - self.half_width)
        return np.broadcast_to(np.maximum(d, np.maximum(self.z0 - block.z, block.z - self.z1)),
                               np.broadcast_shapes(d.shape, block.z.shape)).astype(np.float32)


def table_items(t: Torso, rng: np.random.Generator) -> List[Item]:
    """Table (shell over foam) with a pad between it and the patient's back."""
    y_back = t.table_y
    x0 = float(np.mean(t.cols["xs"])) + rng.normal(0, 10)
    z0, z1 = float(t.zs[0]) - 200.0, float(t.zs[-1]) + 200.0
    pad = rng.uniform(0.0, 30.0) if rng.random() < 0.5 else 0.0
    table = Table(x0, y_back + pad + 2.0, rng.uniform(25, 50), 225.0, rng.uniform(10, 35), z0, z1)
    items = [Item(table, "table_foam", "table_shell", 2.5)]
    if pad > 8:
        items.append(Item(Table(x0, y_back - 5.0, pad + 5.0, 240.0, table.curve, z0, z1), "table_foam"))
    return items

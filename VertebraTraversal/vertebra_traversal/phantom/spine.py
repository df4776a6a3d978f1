"""The spine as a curve: level sequence (with transitional variants), sizes, sagittal curvature,
optional scoliosis, and one local frame per vertebra, disc/facet joint and sacral segment.

World coordinates are LPS mm of the patient (x left, y posterior, z superior); C1 sits near the
origin and the spine runs down to negative z. Arc length ``s`` (mm) grows caudally. A local frame
has columns (w, v, u) = (left, posterior, cranial tangent) in world coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.interpolate import PchipInterpolator

from .. import anatomy
from .sizes import SACRAL_HALF_SPAN, SACRUM, SIZES, LevelSize, _mix

#: Genant semi-quantitative grades: height-loss range per grade (Genant et al., JBMR 8:1137, 1993).
GENANT_LOSS = {1: (0.20, 0.25), 2: (0.25, 0.40), 3: (0.40, 0.60)}
FRACTURE_TYPES = ("wedge", "biconcave", "crush")


@dataclass(frozen=True)
class Fracture:
    """A compression fracture: ``height_loss`` is the fraction of the body height lost (anterior for
    wedge, central for biconcave, everywhere for crush), within the range of its Genant ``grade``."""

    type: str
    grade: int
    height_loss: float

    def to_json(self) -> Dict[str, object]:
        return {"type": self.type, "grade": int(self.grade), "height_loss": round(float(self.height_loss), 4)}


@dataclass(frozen=True)
class Level:
    """One vertebra: VerSe ``label``, anatomy ``name``/``region``, sizes (mm), body-centre frame."""

    name: str
    label: int
    region: str
    size: LevelSize
    origin: np.ndarray
    rot: np.ndarray
    s: float
    fracture: Optional[Fracture] = None

    @property
    def has_ribs(self) -> bool:
        return self.region == "thoracic"


@dataclass(frozen=True)
class Segment:
    """A sacral or coccygeal segment: frame and (width, depth, height) mm, alar half span."""

    origin: np.ndarray
    rot: np.ndarray
    dims: Tuple[float, float, float]
    half_span: float


@dataclass(frozen=True)
class Spine:
    """Levels cranio-caudally; ``joints[i]`` is the frame between ``levels[i]`` and the next level (the
    last one between the last vertebra and S1); curve samples for tubes that follow the spine."""

    levels: Tuple[Level, ...]
    joints: Tuple[Tuple[np.ndarray, np.ndarray], ...]
    sacrum: Tuple[Segment, ...]
    coccyx: Tuple[Segment, ...]
    curve_s: np.ndarray
    curve_p: np.ndarray
    curve_rot: np.ndarray

    def frame_at(self, s: float) -> Tuple[np.ndarray, np.ndarray]:
        """Curve point (3,) and frame (3, 3) at arc length ``s`` (nearest sample, 1 mm apart)."""
        i = int(np.clip(np.searchsorted(self.curve_s, s), 0, len(self.curve_s) - 1))
        return self.curve_p[i].copy(), self.curve_rot[i].copy()

    def level(self, name: str) -> Level:
        return next(l for l in self.levels if l.name == name)

    def z_of(self, name: str) -> float:
        """World z (mm) of a level's body centre; accepts S1..S5 too."""
        if name.startswith("S"):
            return float(self.sacrum[int(name[1]) - 1].origin[2])
        return float(self.level(name).origin[2])


@dataclass(frozen=True)
class SpineChoices:
    """Case-level variant decisions (drawn in the generator from the variant stream)."""

    variant: str = "standard"  # standard | t13 | l6 | four_lumbar
    scoliosis: bool = False
    fractures: Tuple[Tuple[str, Fracture], ...] = ()


def level_names(variant: str) -> List[str]:
    """Vertebra names cranio-caudally for a variant (standard C1..L5, t13, l6, four_lumbar)."""
    names = [v.name for v in anatomy.STANDARD]
    if variant == "t13":
        names.insert(names.index("L1"), "T13")
    elif variant == "l6":
        names.append("L6")
    elif variant == "four_lumbar":
        names.remove("L5")
    return names


def _sizes(names: Sequence[str], variant: str, rng: np.random.Generator) -> List[LevelSize]:
    """Per-case sizes: a global scale, posterior-element scale, per-level jitter, per-disc variation."""
    body = float(np.clip(rng.normal(1.0, 0.055), 0.86, 1.15))
    post = body * float(np.clip(rng.normal(1.0, 0.04), 0.9, 1.1))
    out = []
    for name in names:
        base = SIZES[name]
        if variant == "four_lumbar" and name == "L4":
            base = _mix(SIZES["L4"], SIZES["L5"], 0.6)
        disc = float(np.clip(rng.normal(1.0, 0.1), 0.7, 1.3))
        if base.disc > 8 and rng.random() < 0.15:
            disc *= 0.55  # degenerated disc
        jitter = rng.normal(1.0, 0.03, size=2)
        out.append(base.scaled(body * jitter[0], post * jitter[1], disc))
    return out


#: Sagittal tangent angle (deg, + = cranial tangent tilted posteriorly) at control levels, by region.
_THETA = (("C1", 22, "cervical"), ("C4", 2, "cervical"), ("C7", -14, "cervical"), ("T1", -18, "thoracic"),
          ("T7", 0, "thoracic"), ("T12", 14, "thoracic"), ("L1", 14, "lumbar"), ("L3", 0, "lumbar"),
          ("L5", -22, "lumbar"), ("S1", -42, "sacrum"), ("S3", -62, "sacrum"), ("S5", -85, "sacrum"))


def fractured_heights(hp: float, ha: float, fracture: Optional[Fracture]) -> Tuple[float, float]:
    """Posterior and anterior body heights (mm) after an optional fracture: crush lowers both, wedge
    the anterior one; biconcave keeps the rim (its central dip is shaped by the body itself)."""
    if fracture is not None and fracture.type == "crush":
        return hp * (1 - fracture.height_loss), ha * (1 - fracture.height_loss)
    if fracture is not None and fracture.type == "wedge":
        return hp, ha * (1 - fracture.height_loss)
    return hp, ha


def _heights(size: LevelSize, fracture: Optional[Fracture]) -> Tuple[float, float]:
    return fractured_heights(size.height, size.height * size.wedge, fracture)


def _layout(names: Sequence[str], sizes: Sequence[LevelSize], fractures: Dict[str, Fracture]
            ) -> Tuple[List[float], List[float], List[float]]:
    """Arc lengths of the body centres, of the joints below each level, and of S1..S5 centres."""
    s, joints = [0.0], []
    for i in range(1, len(names)):
        prev = sizes[i - 1]
        hp, ha = _heights(prev, fractures.get(names[i - 1]))
        half_prev = (hp + ha) / 4
        nhp, nha = _heights(sizes[i], fractures.get(names[i]))
        if names[i - 1] == "C1":  # the atlas rests on the C2 superior facets around the dens
            joints.append(9.0 * sizes[0].height / 11.0)
            s.append(joints[-1] + 2.5 + (nhp + nha) / 4)
            continue
        joints.append(s[-1] + half_prev + prev.disc / 2)
        s.append(s[-1] + half_prev + prev.disc + (nhp + nha) / 4)
    last = sizes[-1]
    hp, ha = _heights(last, fractures.get(names[-1]))
    joints.append(s[-1] + (hp + ha) / 4 + last.disc / 2)
    sac = [s[-1] + (hp + ha) / 4 + last.disc + SACRUM[0][2] / 2]
    for k in range(1, len(SACRUM)):
        sac.append(sac[-1] + SACRUM[k - 1][2] / 2 + 1.5 + SACRUM[k][2] / 2)
    return s, joints, sac


def _theta(names: Sequence[str], s_levels: Sequence[float], s_sacrum: Sequence[float],
           rng: np.random.Generator) -> PchipInterpolator:
    """Sagittal angle theta(s) (radians) through randomly scaled lordosis/kyphosis control points."""
    scale = {"cervical": rng.uniform(0.3, 1.3), "thoracic": rng.uniform(0.6, 1.5),
             "lumbar": rng.uniform(0.55, 1.3), "sacrum": rng.uniform(0.8, 1.2)}
    pos = dict(zip(names, s_levels))
    pos.update({f"S{k + 1}": v for k, v in enumerate(s_sacrum)})
    pts = [(pos[n], a, r) for n, a, r in _THETA if n in pos]
    if "L5" not in pos:  # four lumbar vertebrae: the last one takes L5's angle
        pts.insert(-3, (pos[names[-1]], -22, "lumbar"))
    steps = [(pts[k + 1][1] - pts[k][1]) * scale[pts[k][2]] for k in range(len(pts) - 1)]
    theta = np.concatenate([[0.0], np.cumsum(steps)])
    anchor = [k for k, p in enumerate(pts) if p[2] == "sacrum"][0]  # S1: the sacral slope
    theta += -42.0 + rng.normal(0, 6) - theta[anchor]
    xs = np.array([p[0] for p in pts])
    return PchipInterpolator(xs, np.radians(theta), extrapolate=True)


def _scoliosis(s: np.ndarray, s_levels: Dict[str, float], rng: np.random.Generator) -> Tuple[np.ndarray, float]:
    """Lateral tangent angle phi(s) (radians) of a C- or S-shaped curve, and its Cobb angle (deg)."""
    cobb = rng.uniform(10, 45)
    apex = s_levels[rng.choice(["T7", "T9", "T11", "L1", "L2"])]
    span = rng.uniform(160, 260)
    sign = rng.choice([-1.0, 1.0])
    phi = np.zeros_like(s)
    inside = np.abs(s - apex) < span / 2
    phi[inside] = sign * np.radians(cobb / 2) * np.sin(2 * np.pi * (s[inside] - apex + span / 2) / span)
    if rng.random() < 0.4:  # S-curve: a compensating curve below or above
        shift = span * 0.75 * rng.choice([-1.0, 1.0])
        inner = np.abs(s - apex - shift) < span / 2 * 0.8
        phi[inner] -= sign * np.radians(cobb / 3) * np.sin(2 * np.pi * (s[inner] - apex - shift + span * 0.4)
                                                           / (span * 0.8))
    return phi, float(cobb)


def build_spine(choices: SpineChoices, rng: np.random.Generator) -> Tuple[Spine, Dict[str, object]]:
    """Sample sizes and curvature for a case and build all frames.

    Returns:
        The spine and a JSON-ready description (variant, curvature angles, Cobb angle).
    """
    names = level_names(choices.variant)
    fractures = dict(choices.fractures)
    sizes = _sizes(names, choices.variant, rng)
    s_lv, s_jt, s_sac = _layout(names, sizes, fractures)
    theta_fn = _theta(names, s_lv, s_sac, rng)
    s = np.arange(-40.0, s_sac[-1] + 60.0, 1.0)
    theta = theta_fn(s)
    for name, fx in fractures.items():  # a wedge fracture adds its wedge angle to the local kyphosis
        if fx.type == "wedge":
            i = names.index(name)
            angle = np.arctan(sizes[i].height * sizes[i].wedge * fx.height_loss / sizes[i].depth)
            theta -= angle / (1 + np.exp((s - s_lv[i]) / 3.0))
    phi, cobb = (np.zeros_like(s), 0.0)
    if choices.scoliosis:
        phi, cobb = _scoliosis(s, dict(zip(names, s_lv)), rng)
    tangent = np.stack([np.sin(phi), np.sin(theta) * np.cos(phi), np.cos(theta) * np.cos(phi)], axis=1)
    steps = np.concatenate([np.zeros((1, 3)),
                            np.cumsum((tangent[1:] + tangent[:-1]) / 2 * np.diff(s)[:, None], axis=0)])
    pos = steps[np.searchsorted(s, 0.0)] - steps  # C1 at the origin, moving caudally against the tangent
    axial = np.full(s.shape, np.radians(rng.normal(0, 2.0)))
    if choices.scoliosis:  # vertebral rotation towards the convexity, largest at the apex
        lateral = pos[:, 0] - np.interp(s, [s[0], s[-1]], [pos[0, 0], pos[-1, 0]])
        axial = axial + np.radians(0.45 * cobb) * lateral / max(np.abs(lateral).max(), 1e-6)
    rots = _frames(tangent, axial)
    pos, rots = _balance(s, pos, rots, s_lv[names.index("C7")], s_sac[0], rng)
    spine = _assemble(names, sizes, fractures, s_lv, s_jt, s_sac, s, pos, rots)
    info = {"variant": choices.variant, "scoliosis_cobb_deg": round(cobb, 1),
            "kyphosis_deg": round(float(np.degrees(theta_fn(s_lv[names.index("T12")])
                                                   - theta_fn(s_lv[names.index("T1")]))), 1),
            "lordosis_deg": round(float(np.degrees(theta_fn(s_lv[names.index("L1")]) - theta_fn(s_sac[0]))), 1)}
    return spine, info


def _balance(s: np.ndarray, pos: np.ndarray, rots: np.ndarray, s_c7: float, s_s1: float,
             rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Rotate the whole spine about the left-right axis through C1 so that C7 lies above S1 (sagittal
    balance; the C7 plumb line falls near the sacrum), with a few degrees of random tilt."""
    c7, s1 = pos[np.searchsorted(s, s_c7)], pos[np.searchsorted(s, s_s1)]
    axis = c7 - s1
    current = np.arctan2(axis[1], axis[2])
    angle = current + np.radians(rng.normal(0.0, 3.0))
    c, sn = np.cos(angle), np.sin(angle)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, c, -sn], [0.0, sn, c]])
    return pos @ rx.T, np.einsum("ij,njk->nik", rx, rots)


def _frames(tangent: np.ndarray, axial: np.ndarray) -> np.ndarray:
    """Frames (N, 3, 3) with columns (w, v, u): u along the tangent, v towards posterior, rotated by
    ``axial`` (radians) about u."""
    u = tangent / np.linalg.norm(tangent, axis=1, keepdims=True)
    v = np.array([0.0, 1.0, 0.0]) - u[:, 1:2] * u
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    w = np.cross(v, u)
    c, sn = np.cos(axial)[:, None], np.sin(axial)[:, None]
    return np.stack([c * w + sn * v, -sn * w + c * v, u], axis=2)


def _assemble(names, sizes, fractures, s_lv, s_jt, s_sac, s, pos, rots) -> Spine:
    def at(value: float) -> Tuple[np.ndarray, np.ndarray]:
        i = int(np.clip(np.searchsorted(s, value), 1, len(s) - 1))
        t = (value - s[i - 1]) / (s[i] - s[i - 1])
        return pos[i - 1] * (1 - t) + pos[i] * t, rots[i]

    levels = []
    for name, size, sl in zip(names, sizes, s_lv):
        o, r = at(sl)
        row = anatomy.vertebra(name)
        levels.append(Level(name, row.label, row.region, size, o, r, float(sl), fractures.get(name)))
    joints = tuple(at(sj) for sj in s_jt)
    sacrum = tuple(Segment(*at(ss), SACRUM[k], SACRAL_HALF_SPAN[k]) for k, ss in enumerate(s_sac))
    coccyx = tuple(Segment(*at(s_sac[-1] + 10.0 * (k + 1)), (12.0 - 3 * k, 9.0 - 2 * k, 8.0 - k), 0.0)
                   for k in range(3))
    return Spine(tuple(levels), joints, sacrum, coccyx, s, pos, rots)

"""Synthetic spine CT/MR cases: anatomy + scanner -> image, label map and case sidecar.

Every random choice is drawn from its own stream seeded by ``(seed, stream)``, so switching one option
(orientation, fractures, field of view) leaves the rest of a case unchanged, and case ``i`` of a
dataset with seed ``S`` is case 0 of seed ``S + i``.

Ground truth follows the paper's conventions (§4.1, §3.5): VerSe label ids on the image grid, whole
vertebrae for CT and vertebral bodies for MR, and a vertebra is *complete* when at most 2 % of its
volume lies outside the field of view (computed from the full analytic vertebra rendered on the
same voxel lattice beyond the image border).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import special

from .. import dataset
from ..imageio import InputError, PathLike
from . import head, organs, pelvis, ribvariants, scanner, skeleton, spinal
from .body import Torso, build_torso
from .compose import Canvas, Item, paint_vertebra
from .config import PhantomConfig
from .implant import implant_items
from .materials import sample_materials
from .sdf import Block
from .spine import FRACTURE_TYPES, GENANT_LOSS, Fracture, Spine, SpineChoices, build_spine, level_names
from .textures import smooth_noise
from .vertebra import VertebraShape, build_vertebra

logger = logging.getLogger(__name__)

_STREAMS = ("variants", "fracture", "anatomy", "torso", "organs", "materials", "scanner", "texture", "noise",
            "orientation", "implant", "ribs")
#: Completeness rule of paper §3.5: at most this fraction of a vertebra may lie outside the image.
MAX_OUTSIDE = 0.02
#: Labels cover the bone surface grown by this much (mm): manual masks include the partial-volume
#: rim; calibrated so that L1-L5 masks at 1.5-3 mm hold 58-66 mL like real lumbar CT masks.
LABEL_MARGIN_MM = 1.1


@dataclass(frozen=True)
class Phantom:
    """One generated case: ``image`` (float32, HU for CT / arbitrary units for MR), ``labels`` (uint8
    VerSe ids on the same grid) and its sidecar ``info``."""

    image: sitk.Image
    labels: sitk.Image
    info: dataset.CaseInfo


def _streams(seed: int) -> Dict[str, np.random.Generator]:
    return {name: np.random.default_rng([int(seed), k]) for k, name in enumerate(_STREAMS)}


def _choices(config: PhantomConfig, rng: Dict[str, np.random.Generator]) -> Tuple[SpineChoices, Dict[str, bool]]:
    """Case-level variants; always the same number of draws whatever the rates."""
    v = rng["variants"]
    u_variant, u_scol, u_fx, u_low, u_impl = v.random(5)
    c = config
    variant = "standard"
    if u_variant < c.t13_rate:
        variant = "t13"
    elif u_variant < c.t13_rate + c.l6_rate:
        variant = "l6"
    elif u_variant < c.t13_rate + c.l6_rate + c.four_lumbar_rate:
        variant = "four_lumbar"
    fractures = _fractures(level_names(variant), rng["fracture"]) if u_fx < c.fracture_rate else ()
    flags = {"low_density": bool(u_low < c.low_density_rate), "implant": bool(u_impl < c.implant_rate)}
    return SpineChoices(variant, bool(u_scol < c.scoliosis_rate), fractures), flags


def _fractures(names: List[str], rng: np.random.Generator) -> Tuple[Tuple[str, Fracture], ...]:
    """1-3 fractured levels between T4 and L6, most often at the thoracolumbar junction."""
    candidates = [n for n in names if n.startswith(("T", "L")) and n not in ("T1", "T2", "T3")]
    weights = np.array([3.0 if n in ("T11", "T12", "T13", "L1", "L2") else 1.0 for n in candidates])
    count = int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))
    chosen = rng.choice(candidates, size=count, replace=False, p=weights / weights.sum())
    out = []
    for name in chosen:
        kind = str(rng.choice(FRACTURE_TYPES, p=[0.5, 0.3, 0.2]))
        grade = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
        lo, hi = GENANT_LOSS[grade]
        out.append((str(name), Fracture(kind, grade, float(rng.uniform(lo + 0.005, hi - 0.005)))))
    return tuple(out)


def _bowel(mats: Dict[str, float], tex: np.random.Generator) -> Callable[[Block], np.ndarray]:
    """Bowel loops and mesenteric fat: soft tissue mixed with about 60 % fat in smooth patches."""
    def bowel(block: Block) -> np.ndarray:
        base = mats["viscera"] + 18.0 * smooth_noise(block, 9.0, tex)
        fat = np.clip((smooth_noise(block, 14.0, tex) + 0.4) * 1.5, 0.0, 1.0)
        return base * (1.0 - fat) + mats["fat"] * fat
    return bowel


def _lung(mats: Dict[str, float], tex: np.random.Generator) -> Callable[[Block], np.ndarray]:
    """Lung parenchyma with sparse bright vessels."""
    def lung(block: Block) -> np.ndarray:
        vessels = np.clip((smooth_noise(block, 5.0, tex) - 1.7) * 2.5, 0.0, 1.0)
        return mats["lung"] + 15.0 * smooth_noise(block, 8.0, tex) + (mats["blood"] - mats["lung"]) * vessels
    return lung


def _fatty_muscle(mats: Dict[str, float], tex: np.random.Generator) -> Callable[[Block], np.ndarray]:
    """Muscle with intermuscular fat (a per-case fraction, more with age)."""
    cut = float(np.sqrt(2.0) * special.erfinv(1.0 - 2.0 * mats["muscle_fat_fraction"]))

    def fatty(block: Block) -> np.ndarray:
        fat = np.clip((smooth_noise(block, 4.0, tex) - cut) * 2.0 + 0.5, 0.0, 1.0)
        return mats["muscle"] * (1.0 - fat) + mats["fat"] * fat
    return fatty


_TEXTURED = {"bowel": _bowel, "lung": _lung, "fatty_muscle": _fatty_muscle}


def _value(item: Item, mats: Dict[str, float], tex: np.random.Generator):
    """The fill value of an item: a number, or a function of the block adding texture."""
    if item.material in _TEXTURED:
        return _TEXTURED[item.material](mats, tex)
    base = mats[item.material]
    if item.texture <= 0:
        return base
    amp = item.texture * (1.0 if mats["air"] < -500 else 2.0)
    return lambda block: base + amp * smooth_noise(block, item.cell, tex)


def _paint(canvas: Canvas, items: List[Item], mats: Dict[str, float], tex: np.random.Generator) -> None:
    for item in items:
        cortex = None if item.cortex is None else mats[item.cortex]
        canvas.paint(item.shape, _value(item, mats, tex), cortex, item.thickness, item.inset)


@dataclass(frozen=True)
class _Anatomy:
    """Everything drawn before the scanner: variants, spine, vertebra shapes, torso, materials."""

    flags: Dict[str, bool]
    spine: Spine
    spine_info: Dict[str, object]
    shapes: List[VertebraShape]
    ribs: ribvariants.RibVariants
    torso: Torso
    mats: Dict[str, float]


def _anatomy(config: PhantomConfig, rng: Dict[str, np.random.Generator]) -> _Anatomy:
    choices, flags = _choices(config, rng)
    spine, spine_info = build_spine(choices, rng["anatomy"])
    shapes = [build_vertebra(spine, i) for i in range(len(spine.levels))]
    ribs = ribvariants.draw({"cervical": config.cervical_rib_rate, "lumbar": config.lumbar_rib_rate,
                             "short_last": config.short_rib_rate}, rng["ribs"])
    torso = build_torso(spine, rng["torso"])
    mats = sample_materials(config.modality, rng["materials"], flags["low_density"])
    return _Anatomy(flags, spine, spine_info, shapes, ribs, torso, mats)


def generate_case(seed: int, config: PhantomConfig = PhantomConfig(), case_id: Optional[str] = None) -> Phantom:
    """Generate one case, deterministic for ``(seed, config)``.

    Args:
        seed: any non-negative integer.
        config: what to generate (see :class:`PhantomConfig`).
        case_id: defaults to ``f"phantom{seed:05d}"``.
    """
    rng = _streams(seed)
    a = _anatomy(config, rng)
    mr = config.modality == "mr"
    field = scanner.choose_field(config.fov, config.modality, a.spine, a.torso, rng["scanner"])
    grid = scanner.choose_grid(field, config.inplane_spacing_mm, config.slice_spacing_mm, config.max_voxels,
                               rng["scanner"])
    offset = rng["scanner"].uniform([-40.0, -100.0, -1200.0], [40.0, 100.0, 200.0])  # scanner coordinates
    logger.debug("case %s: %s field, grid %s, spacing %s", seed, field.mode, grid.shape, grid.spacing)
    canvas, visible, screws = _render(grid, a, rng, mr)
    image, extra = _scanner_effects(canvas, field, config, rng, screws)
    code = scanner.random_orientation(rng["orientation"]) if config.random_orientation else "LPS"
    origin = np.asarray(grid.origin) + offset
    img, lab = scanner.orient(image, canvas.labels, origin, grid.spacing, code)
    source = {"generator": "phantom", "seed": int(seed), "config": asdict(config), "fov": field.mode,
              "orientation": code, "spacing_mm": [round(s, 4) for s in img.GetSpacing()], **a.spine_info, **a.flags,
              "contrast": bool(a.mats["contrast"]), "rib_variants": a.ribs.to_json(), **extra,
              "visible_fraction": {n: round(f, 4) for n, f in visible.items()}}
    info = dataset.CaseInfo(case_id or f"phantom{seed:05d}", config.modality, "body" if mr else "vertebra",
                            _records(lab, a.spine, visible), source)
    return Phantom(img, lab, info)


def _render(grid, a: _Anatomy, rng: Dict[str, np.random.Generator], mr: bool) -> Tuple[Canvas, Dict[str, float], List]:
    """Paint soft tissue, other bones, vertebrae (with labels) and implants onto a new canvas."""
    canvas = Canvas.empty(grid, a.mats["air"])
    _paint(canvas, _soft_items(a.spine, a.torso, rng["organs"], mr), a.mats, rng["texture"])
    _paint(canvas, _bone_items(a, rng["organs"]), a.mats, rng["texture"])
    visible = _paint_vertebrae(canvas, a.shapes, a.mats, rng["texture"], mr)
    screws: List = []
    if a.flags["implant"]:
        items, screws = implant_items(a.spine, rng["implant"], mr)
        _paint(canvas, items, a.mats, rng["texture"])
    return canvas, visible, screws


def _soft_items(spine, torso, rng: np.random.Generator, mr: bool) -> List[Item]:
    dm = organs.domes(torso, rng)
    head_top = torso.z("C1") + 40.0
    items = [] if mr else organs.table_items(torso, rng)
    items += organs.layer_items(torso, head_top)
    cav, abd = organs.cavity_items(spine, torso, dm)
    items += cav + organs.lung_items(torso, dm, rng) + organs.organ_items(spine, torso, dm, abd, rng)
    vessels, _ = organs.vessel_items(spine, torso, rng)
    items += vessels + organs.airway_items(torso) + organs.bowel_gas_items(abd, rng)
    items += spinal.canal_items(spine) + spinal.disc_items(spine)
    return items + head.head_items(spine, rng)


def _bone_items(a: _Anatomy, rng: np.random.Generator) -> List[Item]:
    spine, torso = a.spine, a.torso
    return (skeleton.rib_items(a.shapes, torso, rng, a.ribs) + skeleton.sternum_items(torso)
            + skeleton.shoulder_items(torso, rng) + pelvis.sacrum_items(spine) + pelvis.pelvis_items(spine, torso, rng))


def _paint_vertebrae(canvas: Canvas, shapes, mats: Dict[str, float], tex: np.random.Generator,
                     mr: bool) -> Dict[str, float]:
    """Paint all vertebrae; returns the visible fraction of each vertebra that touches the image."""
    amp = 40.0 if not mr else 40.0
    visible = {}
    for shape in shapes:
        total, inside = paint_vertebra(canvas, shape.body, shape.posterior, shape.level.label, mats,
                                       lambda block: amp * smooth_noise(block, 2.5, tex), body_only=mr,
                                       label_margin=LABEL_MARGIN_MM)
        if inside:
            visible[shape.level.name] = inside / max(total, 1)
    return visible


def _scanner_effects(canvas: Canvas, field, config: PhantomConfig, rng, screws) -> Tuple[np.ndarray, Dict]:
    image, extra = scanner.blur(canvas.image, canvas.grid, rng["noise"])
    sd = float(rng["noise"].uniform(*config.noise))
    if config.modality == "ct":
        scanner.metal_streaks(image, canvas.grid, screws, rng["noise"])
        scanner.add_ct_noise(image, sd, rng["noise"])
        scanner.finish_ct(image, canvas.grid, field, rng["noise"])
        extra["noise_sd_hu"] = round(sd, 2)
    else:
        bias = _bias(canvas, field, rng["noise"])
        extra.update(scanner.finish_mr(image, canvas.grid, rng["noise"], (bias, sd / 1000.0)))
    return image, extra


def _bias(canvas: Canvas, field, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative MR bias field, brighter posteriorly (spine coil under the back)."""
    grid = canvas.grid
    block = grid.block((0, 0, 0), grid.shape)
    strength, coil = rng.uniform(0.1, 0.35), rng.uniform(0.1, 0.6)
    y_rel = (block.y - field.lo[1]) / max(field.hi[1] - field.lo[1], 1.0)
    return np.exp(strength * smooth_noise(block, 120.0, rng) + coil * (y_rel - 0.5)).astype(np.float32)


def _records(labels: sitk.Image, spine, visible: Dict[str, float]) -> List[dataset.VertebraRecord]:
    centroids = dataset.centroids_of(labels)
    out = []
    for level in spine.levels:
        if level.label not in centroids:
            continue
        complete = visible.get(level.name, 0.0) >= 1.0 - MAX_OUTSIDE
        fx = None if level.fracture is None else level.fracture.to_json()
        out.append(dataset.VertebraRecord(level.label, level.name, bool(complete),
                                          [round(float(c), 3) for c in centroids[level.label]], fx))
    return out


def generate_dataset(out_dir: PathLike, count: int, seed: int, config: PhantomConfig = PhantomConfig(),
                     progress: Optional[Callable[[int, int], None]] = None) -> List[dataset.CaseFiles]:
    """Generate ``count`` cases (ids ``phantom{seed + i:05d}``) into a dataset root, with previews.

    Raises:
        InputError: ``count`` < 1, or a case folder already exists (checked before generating).
    """
    from ..render import preview_png

    if count < 1:
        raise InputError(f"{out_dir}: case count must be at least 1, got {count}")
    root = Path(out_dir)
    ids = [f"phantom{seed + i:05d}" for i in range(count)]
    for case_id in ids:
        files = dataset.CaseFiles(root, case_id, config.modality)
        if files.image.parent.exists() or files.labels.parent.exists():
            raise InputError(f"{files.image.parent}: case {case_id!r} already exists; not overwriting")
    written = []
    for i, case_id in enumerate(ids):
        case = generate_case(seed + i, config, case_id)
        names = {r.label: r.name if r.complete else f"{r.name}*" for r in case.info.vertebrae}
        png = preview_png(case.image, case.labels, names, title=f"{case_id} ({config.modality.upper()}, "
                                                               f"{case.info.source['fov']})")
        written.append(dataset.write_case(root, case.info, case.image, case.labels, preview_png=png))
        if progress is not None:
            progress(i + 1, count)
    return written

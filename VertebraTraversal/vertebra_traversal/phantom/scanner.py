"""The scanner: field of view, voxel spacing, point spread, noise, metal streaks, MR bias field,
and the storage orientation of the written image.

Fields of view mimic the paper's data (§4.1): dedicated spine CT with a small reconstruction field
around a random section of the spine (``neck``: only its cervical sections), chest CT (lung apex to
below the diaphragm, whole body width), lumbar spine CT and whole-spine scans; MR is a sagittal slab.
CT images are rounded to integer HU and clipped to [-1024, 3071] like stored CT.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .body import Torso
from .sdf import Grid
from .spine import Spine

CT_RANGE = (-1024.0, 3071.0)
#: Storage orientations seen in practice (each letter: where the i, j, k index axes point).
COMMON_ORIENTATIONS = ("LPS", "RAS", "LPI", "RAI", "LAS", "RPI", "PIR", "ASL", "AIL", "PSR", "LIP", "RSP")
_MODES_CT = (("spine", 0.35), ("chest", 0.25), ("lumbar", 0.3), ("full", 0.1))
_MODES_MR = (("lumbar", 0.7), ("spine", 0.3))
#: Sections (top, bottom) of a dedicated spine scan; the first two are cervical spine CT (mode "neck").
_NECK_SECTIONS = (("C1", "T1"), ("C2", "T2"))
_SPINE_SECTIONS = _NECK_SECTIONS + (("T1", "L1"), ("T3", "T12"), ("T11", "S1"), ("T4", "L5"), ("C1", "S2"))


@dataclass(frozen=True)
class Field:
    """A field of view: world box ``lo``..``hi`` (x, y, z mm), the mode that produced it and the
    physical axis (0 x, 1 y, 2 z) along which slices are stacked."""

    mode: str
    lo: np.ndarray
    hi: np.ndarray
    slice_axis: int
    body_wide: bool


def _between(spine: Spine, name: str, rng: np.random.Generator, upper: bool) -> float:
    """A height near level ``name``: anywhere from inside that vertebra to the middle of the next gap."""
    names = [l.name for l in spine.levels] + ["S1", "S2", "S3", "S4", "S5"]
    z = [float(l.origin[2]) for l in spine.levels] + [float(s.origin[2]) for s in spine.sacrum]
    i = names.index(name)
    j = max(i - 1, 0) if upper else min(i + 1, len(z) - 1)
    neighbour = z[j] if j != i else z[i] + (30.0 if upper else -30.0)
    return z[i] + rng.uniform(-0.35, 0.75) * (neighbour - z[i])


def _present(spine: Spine, names: Sequence[str]) -> List[str]:
    have = {l.name for l in spine.levels} | {"S1", "S2", "S3", "S4", "S5"}
    return [n for n in names if n in have]


def choose_field(mode: str, modality: str, spine: Spine, torso: Torso, rng: np.random.Generator) -> Field:
    """Draw a field of view of the given mode (``random`` draws the mode first)."""
    if mode == "random":
        modes = _MODES_MR if modality == "mr" else _MODES_CT
        mode = str(rng.choice([m for m, _ in modes], p=[p for _, p in modes]))
    top, bottom = _z_range(mode, spine, torso, rng)
    zc = (top + bottom) / 2
    xs, ys = float(torso.at("xs", zc)), float(torso.at("ys", zc))
    if modality == "mr":
        half_x = rng.uniform(35, 65)
        lo = np.array([xs - half_x, ys - rng.uniform(90, 130), bottom])
        hi = np.array([xs + half_x, ys + rng.uniform(110, 150), top])
        return Field(mode, lo, hi, 0, False)
    body_wide = mode in ("chest", "full") or (mode == "lumbar" and rng.random() < 0.4)
    if body_wide:
        zz = np.linspace(bottom, top, 32)
        half = float(max(np.max(torso.at("A", zz)), np.max(torso.at("back", zz) - torso.at("front", zz)) / 2))
        half += rng.uniform(5, 40)
        yc = float(np.mean((torso.at("back", zz) + torso.at("front", zz)) / 2)) + rng.uniform(0, 25)
        center = np.array([float(np.mean(torso.at("xs", zz))) * 0.3, yc])
    else:
        half = rng.uniform(65, 110)  # dedicated spine reconstruction field, centred behind the bodies
        center = np.array([xs + rng.normal(0, 5), ys + rng.uniform(18, 38)])
    lo = np.array([center[0] - half, center[1] - half, bottom])
    hi = np.array([center[0] + half, center[1] + half, top])
    return Field(mode, lo, hi, 2, body_wide)


def _z_range(mode: str, spine: Spine, torso: Torso, rng: np.random.Generator) -> Tuple[float, float]:
    if mode == "full":
        return torso.z("C1") + rng.uniform(20, 50), torso.z("S5") - rng.uniform(60, 110)
    if mode == "chest":
        top = torso.z("T1") + rng.uniform(30, 75)
        return top, _between(spine, str(rng.choice(_present(spine, ["T12", "L1", "L2", "L3"]))), rng, False)
    if mode == "lumbar":
        start = str(rng.choice(_present(spine, ["T10", "T11", "T12", "L1"])))
        end = str(rng.choice(["L5", "S1", "S2", "S3"] if "L5" in {l.name for l in spine.levels} else ["S1", "S2"]))
        return _between(spine, start, rng, True), _between(spine, end, rng, False)
    if mode == "neck":
        start, end = _NECK_SECTIONS[int(rng.choice(len(_NECK_SECTIONS), p=[0.6, 0.4]))]
    else:
        start, end = _SPINE_SECTIONS[int(rng.choice(len(_SPINE_SECTIONS), p=[0.12, 0.08, 0.2, 0.1, 0.3, 0.15, 0.05]))]
    if end not in {l.name for l in spine.levels} and not end.startswith("S"):
        end = spine.levels[-1].name
    top = _between(spine, start, rng, True) + (rng.uniform(10, 40) if start == "C1" else 0.0)
    return top, _between(spine, end, rng, False)


def choose_grid(field: Field, inplane: Tuple[float, float], slice_: Tuple[float, float], max_voxels: int,
                rng: np.random.Generator) -> Grid:
    """Voxel grid over the field: spacing drawn from the ranges, coarsened to stay under ``max_voxels``."""
    spacing = np.full(3, rng.uniform(*inplane))
    spacing[field.slice_axis] = rng.uniform(*slice_)
    extent = field.hi - field.lo
    n = np.maximum(np.ceil(extent / spacing), 2)
    if np.prod(n) > max_voxels:
        spacing *= (np.prod(n) / max_voxels) ** (1 / 3) * 1.001
        n = np.maximum(np.ceil(extent / spacing), 2)
    origin = field.lo + spacing / 2
    return Grid(tuple(float(v) for v in origin), tuple(float(v) for v in spacing), (int(n[2]), int(n[1]), int(n[0])))


def blur(image: np.ndarray, grid: Grid, rng: np.random.Generator) -> Tuple[np.ndarray, Dict[str, float]]:
    """Scanner point spread: Gaussian, ``sigma_mm`` in plane (kernel) and along the slices."""
    inplane = rng.uniform(0.45, 0.95)
    sigma_mm = np.array([inplane, inplane, rng.uniform(0.3, 0.6)])
    sx, sy, sz = grid.spacing
    sigma_vox = sigma_mm / np.array([sx, sy, sz])
    out = ndimage.gaussian_filter(image, sigma=(sigma_vox[2], sigma_vox[1], sigma_vox[0]), truncate=3.0)
    return out.astype(np.float32), {"psf_sigma_mm": round(float(inplane), 3)}


def add_ct_noise(image: np.ndarray, sd: float, rng: np.random.Generator) -> None:
    """Add in-plane correlated Gaussian noise of standard deviation ``sd`` HU (in place)."""
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= np.float32(sd / 2.0)  # two-tap sums along x and y double the standard deviation
    noise[:, :, :-1] += noise[:, :, 1:]
    noise[:, :-1, :] += noise[:, 1:, :]
    image += noise


def metal_streaks(image: np.ndarray, grid: Grid, screws: Sequence[Tuple[np.ndarray, np.ndarray]],
                  rng: np.random.Generator) -> None:
    """Streak artefacts in the axial slices through metal (in place): bright/dark rays from each
    screw and a dark band between screws in the same slice."""
    if not screws:
        return
    ox, oy, oz = grid.origin
    sx, sy, sz = grid.spacing
    x = ox + sx * np.arange(grid.shape[2], dtype=np.float32)[None, :]
    y = oy + sy * np.arange(grid.shape[1], dtype=np.float32)[:, None]
    amp = rng.uniform(250, 700)
    freqs, phases = rng.integers(6, 40, size=6), rng.uniform(0, 2 * np.pi, size=6)
    for k in range(grid.shape[0]):
        z = oz + sz * k
        pts = [a + (b - a) * np.clip((z - a[2]) / (b[2] - a[2] + 1e-6), 0, 1) for a, b in screws
               if min(a[2], b[2]) - 4 <= z <= max(a[2], b[2]) + 4]
        if not pts:
            continue
        field = np.zeros((grid.shape[1], grid.shape[2]), np.float32)
        for p in pts:
            dx, dy = x - p[0], y - p[1]
            r = np.sqrt(dx * dx + dy * dy) + 1e-3
            theta = np.arctan2(dy, dx)
            rays = sum(np.cos(f * theta + ph) for f, ph in zip(freqs, phases)) / 6.0
            field += amp * np.sign(rays) * np.abs(rays) ** 1.5 * np.exp(-r / 70.0) * (1 - np.exp(-r / 6.0))
        for i in range(len(pts)):
            for j in range(i + 1, len(pts)):
                field -= amp * 0.8 * _band(x, y, pts[i], pts[j])
        image[k] += field


def _band(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b[:2] - a[:2]
    t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1]) / max(float(ab @ ab), 1e-6), 0, 1)
    d2 = (x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2
    return np.exp(-d2 / 30.0).astype(np.float32)


def finish_ct(image: np.ndarray, grid: Grid, field: Field, rng: np.random.Generator) -> None:
    """Round to integer HU, clip to the stored CT range, and (sometimes) pad outside the circular
    reconstruction field of body-wide scans with -1024, -2048 or -3024 (in place)."""
    np.round(image, out=image)
    np.clip(image, CT_RANGE[0], CT_RANGE[1], out=image)
    pad = rng.random() < 0.35
    pad_value = float(rng.choice([-1024.0, -2048.0, -3024.0]))
    if not (field.body_wide and pad):
        return
    ox, oy, _ = grid.origin
    sx, sy, _ = grid.spacing
    x = ox + sx * np.arange(grid.shape[2])[None, :]
    y = oy + sy * np.arange(grid.shape[1])[:, None]
    cx, cy = (field.lo[0] + field.hi[0]) / 2, (field.lo[1] + field.hi[1]) / 2
    rad = min(field.hi[0] - field.lo[0], field.hi[1] - field.lo[1]) / 2
    image[:, (x - cx) ** 2 + (y - cy) ** 2 > rad ** 2] = pad_value


def finish_mr(image: np.ndarray, grid: Grid, rng: np.random.Generator, noise_bias) -> Dict[str, float]:
    """Multiplicative smooth bias field (posterior coil brighter) and Rician noise (in place)."""
    bias_field, sigma_rel = noise_bias
    image *= bias_field
    sigma = float(sigma_rel) * 600.0
    n1 = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    n2 = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    image += n1
    np.sqrt(image * image + n2 * n2, out=image)
    return {"rician_sigma": round(sigma, 2)}


_AXIS_OF = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}


def orient(image: np.ndarray, labels: np.ndarray, origin: Sequence[float], spacing: Sequence[float],
           code: str) -> Tuple[sitk.Image, sitk.Image]:
    """Images stored in orientation ``code`` from arrays (z, y, x) on an LPS grid (identity direction).

    Index axis ``a`` (i, j, k) of the result points to ``code[a]``; the direction matrix is the
    corresponding signed permutation and the origin the LPS position of the new first voxel, so every
    voxel keeps its physical position (no resampling).
    """
    axes = [_AXIS_OF[c] for c in code]
    if sorted(a for a, _ in axes) != [0, 1, 2]:
        raise ValueError(f"orientation {code!r} does not name three different axes")
    shape_xyz = image.shape[::-1]
    first = np.array(origin, float)
    direction = np.zeros((3, 3))
    arrays = []
    for arr in (image, labels):
        for axis, sign in axes:
            if sign < 0:
                arr = np.flip(arr, axis=2 - axis)  # numpy axis of physical axis x, y, z is 2, 1, 0
        # numpy order of the result is (k, j, i): physical axes of code[2], code[1], code[0]
        arrays.append(np.ascontiguousarray(np.transpose(arr, [2 - axes[2][0], 2 - axes[1][0], 2 - axes[0][0]])))
    for col, (axis, sign) in enumerate(axes):
        direction[axis, col] = sign
        if sign < 0:
            first[axis] += (shape_xyz[axis] - 1) * spacing[axis]
    out = []
    for arr in arrays:
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing([float(spacing[a]) for a, _ in axes])
        img.SetOrigin([float(v) for v in first])
        img.SetDirection([float(v) for v in direction.ravel()])
        out.append(img)
    return out[0], out[1]


def random_orientation(rng: np.random.Generator) -> str:
    """A storage orientation: a common one half of the time, otherwise any of the 48."""
    if rng.random() < 0.5:
        return str(rng.choice(COMMON_ORIENTATIONS))
    axes = rng.permutation(3)
    letters = [("L", "R"), ("P", "A"), ("S", "I")]
    return "".join(letters[a][int(rng.integers(2))] for a in axes)

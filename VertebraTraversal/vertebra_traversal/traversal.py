"""The iterative patch traversal: one vertebra after the other (paper §3.3, Fig. 2).

Everything here works on the *model grid* (docs/ARCHITECTURE.md): a numpy array ``(z, y, x)`` whose
axis 0 runs inferior -> superior, and all positions, sizes and counts are in voxels of that grid.

The loop (paper §3.3): (1) **sliding search**: windows spaced by half a patch on every axis (a 3D
grid covering the whole image) are visited slab by slab along z in the traversal direction ("up":
bottom first), ``search_batch`` per predictor call; the first window in search order whose
*fragment* has >= ``v_min`` voxels wins. (2) **convergence**: the patch moves to the centre of the
fragment's bounding box ``b_t`` until ``b_t`` is within ``delta_max`` voxels of the current position
on every axis; the mask obtained there is the vertebra. After ``max_iterations_per_vertebra``
evaluations the patch moves to the midpoint of the last two positions, "[(x_t + x_{t-1}) / 2]", and
takes the mask found there. (3) **store and look again**: the vertebra gets the next instance index
and the label value / completeness predicted at its final position, enters the memory (§3.2), and
the same patch is evaluated again; a fragment there starts (2) for the next vertebra, otherwise the
search resumes with the windows whose centre lies beyond the current position along z.

Decisions:

* A *fragment* is the whole thresholded output (``p > threshold``) minus the memory, inside the
  image -- as in the paper (``fragment_pieces="all"``). With ``"largest"`` (beyond the paper) its
  largest 26-connected piece is the fragment: it alone counts for ``v_min``, gives the next patch
  centre and becomes the vertebra, while the other pieces (``Fragment.spill``) still enter the memory
  when it is stored, so that they never start a vertebra of their own.
* Incompletely visible vertebrae are stored and kept (flagged by their completeness value).
* Guards against cascading failures: a cap on evaluated positions (``max_steps``); memory voxels
  are never reassigned; a fragment below ``v_min`` is never stored; a convergence run whose next
  position comes back (within ``delta_max``) to where an earlier vertebra converged ends there and
  stores nothing (leftovers of a stored vertebra do not become new ones); the sliding search
  resumes beyond the current position and its cursor only moves forward, so nothing repeats
  (windows behind the current position, also lateral ones, count as covered).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .anatomy import DIRECTIONS
from .postprocess import keep_largest_component
from .predictor import Predictor

logger = logging.getLogger(__name__)

Index3 = Tuple[int, int, int]
Region = Tuple[slice, slice, slice]
#: What of the thresholded output is a fragment: every piece (the paper) or the largest (TraversalConfig).
FRAGMENT_PIECES = ("all", "largest")


@dataclass(frozen=True)
class TraversalConfig:
    """Settings of one traversal; all sizes in model-grid voxels.

    Attributes:
        patch_size: patch shape (z, y, x), voxels.
        direction: ``"up"`` (start at the bottom, increasing z; the paper's choice) or ``"down"``.
        min_fragment_voxels: ``v_min``; the caller converts the checkpoint's mm^3 with the spacing.
        threshold: a voxel belongs to the fragment when its probability is above this.
        convergence_voxels: ``delta_max``, the largest move per axis that counts as converged.
        max_iterations_per_vertebra: evaluations per vertebra before taking the midpoint.
        max_steps: cap on the total number of evaluated patch positions.
        search_batch: sliding-search windows evaluated per predictor call.
        pad_value: normalised intensity given to patch voxels outside the image.
        fragment_pieces: ``"all"`` (the paper) or ``"largest"``: the fragment is the thresholded output's
            largest 26-connected piece, the rest enters the memory with it (module docstring).
    """

    patch_size: Tuple[int, int, int]
    direction: str = "up"
    min_fragment_voxels: int = 1000
    threshold: float = 0.5
    convergence_voxels: int = 2
    max_iterations_per_vertebra: int = 10
    max_steps: int = 2000
    search_batch: int = 8
    pad_value: float = -1.0
    fragment_pieces: str = "all"

    def __post_init__(self) -> None:
        size = tuple(self.patch_size)
        if len(size) != 3 or any(int(p) != p or p < 1 for p in size):
            raise ValueError(f"patch_size must be three positive integers (z, y, x), got {self.patch_size!r}")
        object.__setattr__(self, "patch_size", tuple(int(p) for p in size))
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold!r}")
        if self.fragment_pieces not in FRAGMENT_PIECES:
            raise ValueError(f"fragment_pieces must be one of {FRAGMENT_PIECES}, got {self.fragment_pieces!r}")
        if not np.isfinite(self.pad_value):
            raise ValueError(f"pad_value must be finite, got {self.pad_value!r}")
        for name, low in (("min_fragment_voxels", 1), ("convergence_voxels", 0),
                          ("max_iterations_per_vertebra", 1), ("max_steps", 1), ("search_batch", 1)):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class PatchEvent:
    """A patch position was evaluated. ``center_zyx`` in model-grid voxels; ``phase`` "search" or "converge"."""

    step: int
    center_zyx: Tuple[float, float, float]
    phase: str


@dataclass(frozen=True)
class VertebraEvent:
    """A vertebra was stored. ``center_zyx`` is its centroid, model-grid voxels."""

    index: int
    label_value: float
    completeness: float
    voxels: int
    center_zyx: Tuple[float, float, float]


@dataclass(frozen=True)
class Instance:
    """One stored vertebra: ``index`` (1-based, order found), predicted ``label_value`` (§3.4),
    ``completeness`` (§3.5), size in ``voxels``, centroid ``center_zyx`` (voxels) and ``bbox``
    (slices of the model-grid array)."""

    index: int
    label_value: float
    completeness: float
    voxels: int
    center_zyx: Tuple[float, float, float]
    bbox: Region


@dataclass(frozen=True)
class TraversalResult:
    """Outcome of :func:`traverse`: ``instances`` int16 (z, y, x) model grid, 0 background, k = k-th
    instance found; ``vertebrae`` in the order found; ``steps`` evaluated positions; ``network_passes``
    predictor calls; ``stopped_by``: "complete" (search covered the image), "cancelled", "max_steps"
    or "max_instances" (int16 map full)."""

    instances: np.ndarray
    vertebrae: Tuple[Instance, ...]
    steps: int
    network_passes: int
    cancelled: bool
    stopped_by: str


Event = Union[PatchEvent, VertebraEvent]


@dataclass(frozen=True)
class Fragment:
    """Thresholded prediction minus memory: ``mask`` (bool) over the image ``region`` the patch covers."""

    region: Region
    mask: np.ndarray
    spill: Optional[np.ndarray] = None  # the output's other pieces, memory once the fragment is stored

    @property
    def voxels(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True)
class Evaluation:
    """The network's answer at one patch centre (model-grid voxels)."""

    center: Index3
    fragment: Fragment
    label_value: float
    completeness: float


# ---------------------------------------------------------------- pure helpers

def patch_slices(shape: Sequence[int], center: Sequence[int],
                 patch: Sequence[int]) -> Tuple[Region, Region]:
    """Overlap of a patch spanning ``[c - p // 2, c - p // 2 + p)`` per axis (voxels) with an array of
    ``shape``: ``(image_region, patch_region)``, matching slices; empty on an axis without overlap."""
    image_sl, patch_sl = [], []
    for n, c, p in zip(shape, center, patch):
        start = int(c) - int(p) // 2
        lo, hi = max(start, 0), min(start + int(p), int(n))
        if hi <= lo:
            lo = hi = start = 0
        image_sl.append(slice(lo, hi))
        patch_sl.append(slice(lo - start, hi - start))
    return tuple(image_sl), tuple(patch_sl)  # type: ignore[return-value]


def crop_patch(volume: np.ndarray, center: Sequence[int], patch: Sequence[int],
               pad_value: float) -> np.ndarray:
    """Float32 patch of shape ``patch`` centred at ``center``; outside the volume = ``pad_value``."""
    out = np.full(tuple(int(p) for p in patch), pad_value, dtype=np.float32)
    image_region, patch_region = patch_slices(volume.shape, center, patch)
    out[patch_region] = volume[image_region]
    return out


def axis_centers(length: int, patch: int) -> List[int]:
    """Window centres along one axis: step ``patch // 2`` from the first window at index 0 to the
    last one ending at ``length`` (clamped); a single centred window when ``length <= patch``."""
    half = patch // 2
    if length <= patch:
        return [(length - patch) // 2 + half]
    step = max(patch // 2, 1)
    starts = list(range(0, length - patch, step)) + [length - patch]
    return [s + half for s in starts]


def window_centers(shape: Sequence[int], patch: Sequence[int], direction: str) -> List[Index3]:
    """All sliding-search centres in search order: z slabs in the traversal direction (``"up"``:
    increasing z), then y, then x ascending within a slab."""
    zs, ys, xs = (axis_centers(int(n), int(p)) for n, p in zip(shape, patch))
    if direction == "down":
        zs = zs[::-1]
    return [(z, y, x) for z in zs for y in ys for x in xs]


def resume_index(windows: Sequence[Index3], z: int, direction: str) -> int:
    """Index of the first window lying beyond ``z`` (voxels) in the traversal direction."""
    for i, center in enumerate(windows):
        if (center[0] > z) if direction == "up" else (center[0] < z):
            return i
    return len(windows)


def extract_fragment(probabilities: np.ndarray, memory: np.ndarray, center: Sequence[int],
                     threshold: float, pieces: str = "all") -> Fragment:
    """Voxels of a probability patch (D, H, W) above ``threshold`` that lie inside the image and
    are not in ``memory`` (bool, image shape); predictions outside the image are dropped. ``pieces``
    ``"largest"``: only the largest 26-connected piece of them, the others as ``spill``."""
    image_region, patch_region = patch_slices(memory.shape, center, probabilities.shape)
    mask = (probabilities[patch_region] > threshold) & ~memory[image_region]
    if pieces == "largest":
        piece = keep_largest_component(mask, connectivity=3)
        return Fragment(image_region, piece, mask & ~piece)
    return Fragment(image_region, mask)


def fragment_center(fragment: Fragment) -> Optional[Index3]:
    """Centre of the fragment's bounding box in image voxels, rounded half up (``b_t``, §3.3);
    None for an empty fragment."""
    coords = np.nonzero(fragment.mask)
    if coords[0].size == 0:
        return None
    center = [np.floor((c.min() + c.max()) / 2.0 + 0.5) + r.start for c, r in zip(coords, fragment.region)]
    return tuple(int(c) for c in center)  # type: ignore[return-value]


def has_converged(a: Sequence[int], b: Sequence[int], delta: int) -> bool:
    """True when positions differ by at most ``delta`` voxels on every axis."""
    return all(abs(int(p) - int(q)) <= delta for p, q in zip(a, b))


def midpoint(a: Sequence[int], b: Sequence[int]) -> Index3:
    """Voxel midpoint of two positions, rounded half up."""
    return tuple(int(np.floor((int(p) + int(q)) / 2.0 + 0.5)) for p, q in zip(a, b))  # type: ignore


# ---------------------------------------------------------------- the loop

class _Run:
    """Mutable state of one traversal: memory, instance map, counters, event sink."""

    def __init__(self, image: np.ndarray, predictor: Predictor, config: TraversalConfig,
                 on_event: Optional[Callable[[Event], None]], should_cancel: Optional[Callable[[], bool]]):
        self.image, self.predictor, self.config = image, predictor, config
        self.on_event, self.should_cancel = on_event, should_cancel
        self.memory = np.zeros(image.shape, dtype=bool)
        self.instances = np.zeros(image.shape, dtype=np.int16)
        self.vertebrae: List[Instance] = []
        self.converged_at: List[Index3] = []
        self.steps = self.passes = 0
        self.stop: Optional[str] = None

    def interrupted(self) -> Optional[str]:
        """Why the run must stop now, or None; once set, the reason sticks."""
        if self.stop is None:
            if self.should_cancel is not None and self.should_cancel():
                self.stop = "cancelled"
            elif self.steps >= self.config.max_steps:
                self.stop = "max_steps"
            elif len(self.vertebrae) >= np.iinfo(np.int16).max:
                self.stop = "max_instances"
        return self.stop

    def evaluate(self, centers: Sequence[Index3], phase: str) -> List[Evaluation]:
        """One predictor call on the patches at ``centers``; one PatchEvent per position."""
        cfg, n = self.config, len(centers)
        images = np.stack([crop_patch(self.image, c, cfg.patch_size, cfg.pad_value) for c in centers])
        memories = np.stack([crop_patch(self.memory, c, cfg.patch_size, 0.0) for c in centers])
        pred = self.predictor(images, memories)
        self.passes += 1
        probs = np.asarray(pred.probabilities)
        labels, complete = np.ravel(pred.label_values), np.ravel(pred.completeness)
        if probs.shape != images.shape or labels.shape != (n,) or complete.shape != (n,):
            raise ValueError(f"predictor returned probabilities {probs.shape}, label_values {labels.shape}, "
                             f"completeness {complete.shape} for input {images.shape}")
        out = []
        for i, center in enumerate(centers):
            self.steps += 1
            self._emit(PatchEvent(self.steps, tuple(float(c) for c in center), phase))
            out.append(Evaluation(center, extract_fragment(probs[i], self.memory, center, cfg.threshold,
                                                           cfg.fragment_pieces),
                                  float(labels[i]), float(complete[i])))
        return out

    def search(self, windows: Sequence[Index3], cursor: int) -> Tuple[Optional[Evaluation], int]:
        """Evaluate the next batch of windows; return (first hit or None, new cursor)."""
        count = min(self.config.search_batch, self.config.max_steps - self.steps, len(windows) - cursor)
        for i, ev in enumerate(self.evaluate(windows[cursor:cursor + count], "search")):
            if ev.fragment.voxels >= self.config.min_fragment_voxels:
                return ev, cursor + i + 1
        return None, cursor + count

    def converge(self, current: Evaluation) -> Optional[Tuple[Evaluation, bool]]:
        """Follow the fragment from ``current`` (iteration 1) to its final position (§3.3).

        Returns (evaluation at the final position, whether to store it), or None when interrupted.
        A lost fragment, or a jump back to where an earlier vertebra converged, stores nothing.
        """
        cfg, previous = self.config, None
        for iteration in range(1, cfg.max_iterations_per_vertebra + 1):
            target = fragment_center(current.fragment)
            if target is None or current.fragment.voxels < cfg.min_fragment_voxels:
                return current, False
            if has_converged(target, current.center, cfg.convergence_voxels):
                return current, True
            last = iteration == cfg.max_iterations_per_vertebra
            if last:
                target = midpoint(current.center, previous.center if previous else target)
            elif any(has_converged(target, p, cfg.convergence_voxels) for p in self.converged_at):
                logger.debug("patch returns from %s to converged position %s: run ends", current.center, target)
                return current, False
            if self.interrupted() is not None:
                return None
            previous, current = current, self.evaluate([target], "converge")[0]
        return current, current.fragment.voxels >= cfg.min_fragment_voxels

    def store(self, ev: Evaluation) -> None:
        """Add the fragment at ``ev`` as the next instance and to the memory."""
        region, mask = ev.fragment.region, ev.fragment.mask
        index = len(self.vertebrae) + 1
        self.instances[region][mask] = index
        self.memory[region] |= mask if ev.fragment.spill is None else mask | ev.fragment.spill
        coords = np.nonzero(mask)
        starts = [r.start for r in region]
        centroid = tuple(float(c.mean() + s) for c, s in zip(coords, starts))
        bbox = tuple(slice(int(c.min() + s), int(c.max() + s + 1)) for c, s in zip(coords, starts))
        inst = Instance(index, ev.label_value, ev.completeness, int(coords[0].size), centroid, bbox)
        self.vertebrae.append(inst)
        self.converged_at.append(ev.center)
        logger.debug("vertebra %d: %d voxels at %s, label %.2f, completeness %.2f",
                     index, inst.voxels, ev.center, ev.label_value, ev.completeness)
        self._emit(VertebraEvent(index, ev.label_value, ev.completeness, inst.voxels, centroid))

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)


def _check_image(image: np.ndarray) -> np.ndarray:
    """The image as an array; ValueError unless it is a non-empty real 3D array."""
    array = np.asarray(image)
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"traversal needs a non-empty 3D (z, y, x) array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"traversal needs a real-valued image, got dtype {array.dtype}")
    return array


def traverse(image: np.ndarray, predictor: Predictor, config: TraversalConfig,
             on_event: Optional[Callable[[Event], None]] = None,
             should_cancel: Optional[Callable[[], bool]] = None) -> TraversalResult:
    """Segment vertebra instances one by one (paper §3.3).

    Args:
        image: normalised model-grid image (z, y, x), axis 0 inferior -> superior.
        predictor: batched network callable (:class:`vertebra_traversal.predictor.Predictor`).
        config: traversal settings (voxels).
        on_event: receives a :class:`PatchEvent` per evaluated position and a
            :class:`VertebraEvent` per stored vertebra.
        should_cancel: polled between steps; True stops the run cleanly (``cancelled=True``).

    Raises:
        ValueError: the image is not a non-empty real 3D array, or the predictor's outputs have
            the wrong shape.
    """
    run = _Run(_check_image(image), predictor, config, on_event, should_cancel)
    windows = window_centers(run.image.shape, config.patch_size, config.direction)
    cursor, pending, look_at, vmin = 0, None, None, config.min_fragment_voxels
    while True:
        stopped_by = run.interrupted()
        if stopped_by is not None:
            break
        if look_at is not None:  # same patch again, with the updated memory
            pending, look_at = run.evaluate([look_at], "converge")[0], None
            if pending.fragment.voxels < vmin:
                cursor = max(cursor, resume_index(windows, pending.center[0], config.direction))
                pending = None
        elif pending is None:
            if cursor >= len(windows):
                stopped_by = "complete"
                break
            pending, cursor = run.search(windows, cursor)
        else:
            outcome = run.converge(pending)
            if outcome is None:
                continue
            (final, keep), pending = outcome, None
            if keep:
                run.store(final)
                look_at = final.center
            else:
                cursor = max(cursor, resume_index(windows, final.center[0], config.direction))
    logger.info("traversal: %d vertebrae, %d positions, %d network passes (%s)",
                len(run.vertebrae), run.steps, run.passes, stopped_by)
    return TraversalResult(run.instances, tuple(run.vertebrae), run.steps, run.passes,
                           stopped_by == "cancelled", stopped_by)

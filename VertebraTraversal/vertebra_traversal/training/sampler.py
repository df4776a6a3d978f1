"""Training patch sampling and target derivation (paper §3.6), as pure functions on arrays.

All arrays are on the model grid (identity direction, isotropic spacing): numpy order ``(z, y, x)``
with axis 0 running inferior -> superior. Voxel positions are integer indices ``(z, y, x)``.

Rules (paper §3.6, §3.3, §3.5):

* The instance memory is derived from the reference: the vertebrae *before* the target in traversal
  order. Traversal order sorts vertebrae by anatomical rank (:mod:`vertebra_traversal.anatomy`):
  ``"up"`` starts at the most caudal vertebra (L5 before L4 ...), ``"down"`` at the most cranial.
* A fraction (75 %) of the patches is centred uniformly inside the bounding box of a random vertebra;
  the memory then holds every vertebra before that one. Optionally a share of these is centred on the
  middle of the vertebra's visible bounding box (within a small jitter) instead: that is where the
  traversal converges and reads the completeness flag (§3.3, §3.5), and a uniform draw rarely holds a
  large vertebra whole (an extension of §3.6; 0 by default, as in the paper, and then the random
  stream is the paper sampling's). Optionally a share of the vertebra patches gets an *empty* memory
  instead, so the target is the lowest (``"up"``) vertebra the patch holds: what the traversal sees when
  it starts (§3.3), searching a scan with nothing segmented yet. The paper's sampling gives that view
  only for the scan's first vertebra and for a few background patches; compact models trained that way
  never started on a dedicated neck scan (an extension of §3.6; 0 by default).
* Optionally a share of all patches (drawn first) lies beyond the last vertebra in traversal order that
  the scan shows, from its middle to half a patch past it, with every vertebra in memory, so the target
  is none: where the traversal must stop (§3.3). The paper's sampling shows that view only when a patch
  drawn anywhere happens to get the whole spine as memory (one patch in ``n + 1`` of those). An MR
  network that climbs the neck went on into the skull base with or without it (an extension of §3.6;
  0 by default; the MR model's history, *A network taught where the spine ends*).
* The other patches are centred anywhere in the scan with a random "progress": the memory holds the
  first ``k`` vertebrae in traversal order, ``k`` uniform in ``0..n``, so the network also learns to
  answer "nothing left".
* Optionally each memory vertebra of a training patch is shown only in part (a *partial memory*): with
  probability ``partial_memory`` a cap of it, beyond a plane of random orientation, a random share below
  ``PARTIAL_MEMORY_MAX_CUT`` of its voxels in the patch, is left out of the memory. The paper's memory
  is the reference (§3.6), but at inference it holds the network's own masks (§3.2), and a compact
  model's masks miss part of each vertebra; the leftover bone is then neither memory nor target, so the
  network learns to pass over it to the next vertebra (an extension of §3.6; 0 by default).
* Optionally the memory *overreaches* into the target (:func:`overreaching_memory`): with probability
  ``overreach_memory`` a patch with a non-empty memory also holds in its memory a cap of the target
  vertebra on the memory's side (a plane across the traversal axis, tilted at random, a random share
  below ``OVERREACH_MAX_SHARE`` of its voxels in the patch), and the segmentation target is the rest of
  it. At inference a compact model's mask may take in part of the next vertebra; the bundled CT model,
  trained on the reference memory, then segments the rest of that vertebra *and* the one after it as
  one instance, and the shift runs on up the spine. Here the network learns to finish the vertebra the
  memory has eaten into and stop there (an extension of §3.6; 0 by default; measured in the CT model's
  history, *An overreaching memory*).
* The target is the first not-yet-segmented vertebra (traversal order) present in the patch, or
  none. Its regression value comes from the anatomy table (0 when there is no target, §3.4).
* Completeness target (§3.5): 1 when the vertebra is marked complete in the scan and at most 2 % of
  its volume lies outside the visible part of the patch; 0 otherwise and when there is no target.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import anatomy

Index3 = Tuple[int, int, int]
#: Half-open voxel box ``((z0, y0, x0), (z1, y1, x1))``.
Box = Tuple[Index3, Index3]

DIRECTIONS = anatomy.DIRECTIONS
#: Largest share of a memory vertebra's voxels in the patch that a partial memory leaves out.
PARTIAL_MEMORY_MAX_CUT = 0.5
#: Largest share of the target vertebra's voxels in the patch that an overreaching memory holds.
OVERREACH_MAX_SHARE = 0.5
#: Standard deviation of the in-plane components of the overreaching cap's plane normal (axis component 1).
OVERREACH_TILT = 0.3


@dataclass(frozen=True)
class SamplingConfig:
    """Patch sampling settings.

    Attributes:
        patch_size: edge length of the cubic patch in voxels (model grid).
        foreground_fraction: share of patches centred inside a random vertebra's bounding box.
        direction: traversal direction, ``"up"`` (caudal first) or ``"down"`` (cranial first).
        completeness_tolerance: largest fraction of a vertebra's volume that may lie outside the
            patch for it to count as complete (paper §3.6: 2 %).
        centred_fraction: share of the foreground patches centred on the middle of the vertebra's
            visible bounding box instead of uniformly inside it (0 = the paper's sampling).
        centre_jitter: largest offset in voxels, per axis, of a centred patch from the box middle.
        start_fraction: share of the foreground patches drawn with an empty memory, as the traversal's
            search sees the scan before the first vertebra is found (0 = the paper's sampling).
        partial_memory: chance of each memory vertebra of a training patch being shown only in part
            (:func:`partial_memory_mask`; 0 = the paper's memory).
        overreach_memory: chance of a patch's memory also holding a cap of its target vertebra
            (:func:`overreaching_memory`; 0 = the paper's memory).
        end_fraction: share of all patches drawn beyond the last vertebra in traversal order with every
            vertebra in memory (:func:`plan_patch`; 0 = the paper's sampling).
    """

    patch_size: int
    foreground_fraction: float = 0.75
    direction: str = "up"
    completeness_tolerance: float = 0.02
    centred_fraction: float = 0.0
    centre_jitter: int = 0
    start_fraction: float = 0.0
    partial_memory: float = 0.0
    overreach_memory: float = 0.0
    end_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.patch_size < 4:
            raise ValueError(f"patch_size must be at least 4 voxels, got {self.patch_size}")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {self.foreground_fraction}")
        if not 0.0 <= self.centred_fraction <= 1.0:
            raise ValueError(f"centred_fraction must be in [0, 1], got {self.centred_fraction}")
        if not 0.0 <= self.start_fraction <= 1.0:
            raise ValueError(f"start_fraction must be in [0, 1], got {self.start_fraction}")
        if not 0.0 <= self.partial_memory <= 1.0:
            raise ValueError(f"partial_memory must be in [0, 1], got {self.partial_memory}")
        if not 0.0 <= self.overreach_memory <= 1.0:
            raise ValueError(f"overreach_memory must be in [0, 1], got {self.overreach_memory}")
        if not 0.0 <= self.end_fraction <= 1.0:
            raise ValueError(f"end_fraction must be in [0, 1], got {self.end_fraction}")
        if self.centre_jitter < 0:
            raise ValueError(f"centre_jitter must not be negative, got {self.centre_jitter}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")


@dataclass(frozen=True)
class ScanIndex:
    """What the sampler needs to know about one scan (model grid, voxel units).

    Attributes:
        shape: array shape ``(D, H, W)`` = ``(z, y, x)``.
        boxes: per vertebra label, its tight half-open bounding box.
        volumes: per vertebra label, its voxel count in the whole scan.
        complete: per vertebra label, whether it is marked completely visible in the scan (sidecar).
    """

    shape: Index3
    boxes: Mapping[int, Box]
    volumes: Mapping[int, int]
    complete: Mapping[int, bool]

    @property
    def labels(self) -> Tuple[int, ...]:
        return tuple(sorted(self.boxes))


@dataclass(frozen=True)
class PatchPlan:
    """Where to cut a patch and what the memory holds.

    Attributes:
        centre: patch centre voxel ``(z, y, x)``; the patch covers ``centre - size//2`` onwards.
        memory_labels: vertebra labels already "segmented" (in the instance memory).
        foreground: True when the centre was drawn inside a vertebra's bounding box.
        z_window: visible half-open z range ``(z_lo, z_hi)`` of the (possibly cropped) scan.
    """

    centre: Index3
    memory_labels: FrozenSet[int]
    foreground: bool
    z_window: Tuple[int, int]


@dataclass(frozen=True)
class TargetInfo:
    """Scalar targets of a patch: target label id (0 = none), regression value, completeness."""

    label: int
    label_value: float
    complete: float


def traversal_order(labels: Iterable[int], direction: str = "up") -> Tuple[int, ...]:
    """Vertebra labels in the order the traversal visits them.

    ``"up"`` sorts by decreasing anatomical rank (most caudal first), ``"down"`` by increasing rank.
    Unknown ids raise ``KeyError`` (from :func:`anatomy.vertebra`).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    ranked = sorted(set(int(l) for l in labels), key=lambda l: anatomy.vertebra(l).rank)
    return tuple(reversed(ranked)) if direction == "up" else tuple(ranked)


def memory_before(label: int, scan_labels: Iterable[int], direction: str = "up") -> FrozenSet[int]:
    """All labels of the scan that come before ``label`` in traversal order (its instance memory)."""
    order = traversal_order(set(scan_labels) | {label}, direction)
    return frozenset(order[: order.index(label)])


def first_unsegmented(present: Iterable[int], memory: Iterable[int], direction: str = "up") -> int:
    """The first label in traversal order among ``present`` that is not in ``memory``; 0 if none."""
    remaining = set(int(l) for l in present) - set(int(l) for l in memory) - {0}
    order = traversal_order(remaining, direction)
    return order[0] if order else 0


def completeness_target(total_voxels: int, visible_voxels: int, complete_in_scan: bool,
                        tolerance: float = 0.02) -> float:
    """1.0 when the vertebra is complete in the scan and at most ``tolerance`` of its volume
    (``total_voxels``, whole scan) lies outside the patch (``visible_voxels`` inside); else 0.0."""
    if total_voxels <= 0 or not complete_in_scan:
        return 0.0
    outside = (total_voxels - visible_voxels) / float(total_voxels)
    return 1.0 if outside <= tolerance + 1e-12 else 0.0


def patch_start(centre: Sequence[int], size: int) -> Index3:
    """First voxel ``(z, y, x)`` of the cubic patch of edge ``size`` centred at ``centre``."""
    return tuple(int(c) - size // 2 for c in centre)  # type: ignore[return-value]


def extract_patch(array: np.ndarray, centre: Sequence[int], size: int, fill: float = 0,
                  z_window: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Cut a cube of edge ``size`` voxels around ``centre`` from a (D, H, W) array.

    Voxels outside the array, or outside the visible ``z_window`` (half-open, axis 0), get ``fill``.
    Returns a new array of shape ``(size, size, size)`` and the dtype of ``array``.
    """
    out = np.full((size, size, size), fill, dtype=array.dtype)
    start = patch_start(centre, size)
    limits = [(0, n) for n in array.shape]
    if z_window is not None:
        limits[0] = (max(0, z_window[0]), min(array.shape[0], z_window[1]))
    src, dst = [], []
    for axis in range(3):
        lo = max(start[axis], limits[axis][0])
        hi = min(start[axis] + size, limits[axis][1])
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start[axis], hi - start[axis]))
    out[tuple(dst)] = array[tuple(src)]
    return out


def scan_index(labels: np.ndarray, complete: Mapping[int, bool]) -> ScanIndex:
    """Bounding boxes and voxel counts of every vertebra in a (D, H, W) label map."""
    from scipy import ndimage

    boxes: Dict[int, Box] = {}
    volumes: Dict[int, int] = {}
    counts = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)
    for position, sl in enumerate(ndimage.find_objects(labels)):
        label = position + 1
        if sl is None or not anatomy.is_valid_label(label):
            continue
        boxes[label] = (tuple(s.start for s in sl), tuple(s.stop for s in sl))  # type: ignore[assignment]
        volumes[label] = int(counts[label])
    flags = {l: bool(complete.get(l, False)) for l in boxes}
    return ScanIndex(tuple(int(n) for n in labels.shape), boxes, volumes, flags)  # type: ignore[arg-type]


def visible_labels(index: ScanIndex, z_window: Tuple[int, int]) -> Tuple[int, ...]:
    """Labels whose bounding box reaches into the visible z range."""
    return tuple(l for l, (lo, hi) in sorted(index.boxes.items()) if lo[0] < z_window[1] and hi[0] > z_window[0])


def _uniform_in(lo: Sequence[int], hi: Sequence[int], rng: np.random.Generator) -> Index3:
    return tuple(int(rng.integers(a, max(a + 1, b))) for a, b in zip(lo, hi))  # type: ignore[return-value]


def _near_middle(lo: Sequence[int], hi: Sequence[int], jitter: int, rng: np.random.Generator) -> Index3:
    """The middle voxel of the half-open box ``[lo, hi)`` moved by up to ``jitter`` voxels per axis."""
    middle = [(a + b - 1) // 2 for a, b in zip(lo, hi)]
    return tuple(int(m + rng.integers(-jitter, jitter + 1)) for m in middle)  # type: ignore[return-value]


def plan_patch(index: ScanIndex, rng: np.random.Generator, config: SamplingConfig,
               z_window: Optional[Tuple[int, int]] = None) -> PatchPlan:
    """Draw one patch position and its memory (paper §3.6); see the module docstring for the rules."""
    window = z_window if z_window is not None else (0, index.shape[0])
    candidates = visible_labels(index, window)
    order = traversal_order(index.labels, config.direction)
    if candidates and config.end_fraction > 0 and rng.random() < config.end_fraction:
        return _end_plan(index, order, candidates, window, config, rng)
    if candidates and rng.random() < config.foreground_fraction:
        label = candidates[int(rng.integers(len(candidates)))]
        lo, hi = index.boxes[label]
        lo = (max(lo[0], window[0]),) + tuple(lo[1:])
        hi = (min(hi[0], window[1]),) + tuple(hi[1:])
        if config.centred_fraction > 0 and rng.random() < config.centred_fraction:
            centre = _near_middle(lo, hi, config.centre_jitter, rng)
        else:
            centre = _uniform_in(lo, hi, rng)
        if config.start_fraction > 0 and rng.random() < config.start_fraction:
            return PatchPlan(centre, frozenset(), True, window)
        return PatchPlan(centre, memory_before(label, index.labels, config.direction), True, window)
    centre = _uniform_in((window[0], 0, 0), (window[1], index.shape[1], index.shape[2]), rng)
    progress = int(rng.integers(len(order) + 1))
    return PatchPlan(centre, frozenset(order[:progress]), False, window)


def _end_plan(index: ScanIndex, order: Sequence[int], visible: Sequence[int], window: Tuple[int, int],
              config: SamplingConfig, rng: np.random.Generator) -> PatchPlan:
    """A patch centred beyond the last of the ``visible`` vertebrae in traversal ``order``: along z from its
    middle to half a patch past its far face (clipped to ``window``), in-plane inside its box; every vertebra
    of the scan in memory, so the target is none."""
    lo, hi = index.boxes[traversal_order(visible, config.direction)[-1]]
    middle, half = (lo[0] + hi[0] - 1) // 2, config.patch_size // 2
    z_lo, z_hi = (middle, hi[0] + half) if config.direction == "up" else (lo[0] - half, middle + 1)
    z_lo, z_hi = max(z_lo, window[0]), min(z_hi, window[1])
    centre = _uniform_in((z_lo,) + tuple(lo[1:]), (z_hi,) + tuple(hi[1:]), rng)  # an empty range: z_lo
    return PatchPlan(centre, frozenset(order), False, window)


def patch_targets(label_patch: np.ndarray, plan: PatchPlan, index: ScanIndex,
                  config: SamplingConfig) -> TargetInfo:
    """Scalar targets of a (size, size, size) label patch cut with ``plan`` (outside = 0)."""
    present = np.unique(label_patch)
    target = first_unsegmented((int(l) for l in present if anatomy.is_valid_label(int(l))),
                               plan.memory_labels, config.direction)
    if target == 0:
        return TargetInfo(0, 0.0, 0.0)
    visible = int(np.count_nonzero(label_patch == target))
    complete = completeness_target(index.volumes.get(target, visible), visible,
                                   index.complete.get(target, False), config.completeness_tolerance)
    return TargetInfo(target, float(anatomy.vertebra(target).regression_value), complete)


def memory_mask(label_patch: np.ndarray, memory_labels: Iterable[int]) -> np.ndarray:
    """float32 mask, 1 where the label patch holds a vertebra of the memory."""
    labels = sorted(memory_labels)
    if not labels:
        return np.zeros(label_patch.shape, np.float32)
    return np.isin(label_patch, labels).astype(np.float32)


def partial_memory_mask(label_patch: np.ndarray, memory_labels: Iterable[int], probability: float,
                        rng: np.random.Generator, max_cut: float = PARTIAL_MEMORY_MAX_CUT) -> np.ndarray:
    """float32 memory mask (D, H, W) in which each memory vertebra, with ``probability``, misses a cap.

    For a chosen vertebra a unit direction is drawn uniformly and a share ``u ~ U(0, max_cut)``: its
    voxels in the patch whose projection on the direction lies above the ``1 - u`` quantile leave the
    memory (a slab of the vertebra on a random side: a process, an endplate, part of the body). Labels
    are visited in ascending order, so the result is a pure function of the inputs and the generator's
    state; with ``probability`` 0 the generator is not touched and the mask is :func:`memory_mask`'s.
    """
    labels = sorted(memory_labels)
    memory = memory_mask(label_patch, labels)
    if probability <= 0.0:
        return memory
    for label in labels:
        if rng.random() >= probability:
            continue
        direction, share = rng.normal(size=3), rng.uniform(0.0, max_cut)
        coords = np.argwhere(label_patch == label)
        if len(coords) == 0:
            continue
        projection = coords @ (direction / np.linalg.norm(direction))
        cut = coords[projection > np.quantile(projection, 1.0 - share)]
        memory[tuple(cut.T)] = 0.0
    return memory


def target_mask(label_patch: np.ndarray, target_label: int) -> np.ndarray:
    """bool (D, H, W) segmentation target of a label patch: the voxels of ``target_label`` (none for 0)."""
    return label_patch == target_label if target_label else np.zeros(label_patch.shape, bool)


def overreaching_memory(label_patch: np.ndarray, memory: np.ndarray, target_label: int, probability: float,
                        rng: np.random.Generator, direction: str = "up",
                        max_share: float = OVERREACH_MAX_SHARE) -> Tuple[np.ndarray, np.ndarray]:
    """``(memory, target)``: the memory (float32 (D, H, W)) and the segmentation target (bool (D, H, W)),
    with, at chance ``probability``, a cap of the target vertebra moved from the target into the memory.

    Only a patch with a target (``target_label`` != 0) and a non-empty ``memory`` can overreach. The cap
    lies on the memory's side of the target: axis 0 is the traversal axis (model grid, inferior ->
    superior), so for ``"up"`` the memory lies below and the cap is the target's voxels whose projection
    on ``(-1, t_y, t_x)`` (``t ~ N(0, OVERREACH_TILT)``) lies above the ``1 - u`` quantile,
    ``u ~ U(0, max_share)``; for ``"down"`` the axis component is +1. With ``probability`` 0 the generator
    is not touched; otherwise it draws the chance for every patch, then the tilt and the share for a patch
    that overreaches. Inputs are not changed.
    """
    target = target_mask(label_patch, target_label)
    if probability <= 0.0 or rng.random() >= probability or not target.any() or not memory.any():
        return memory, target
    tilt, share = rng.normal(0.0, OVERREACH_TILT, size=2), rng.uniform(0.0, max_share)
    normal = np.array([-1.0 if direction == "up" else 1.0, tilt[0], tilt[1]])
    coords = np.argwhere(target)
    projection = coords @ normal
    cap = coords[projection > np.quantile(projection, 1.0 - share)]
    memory, target = memory.copy(), target.copy()
    memory[tuple(cap.T)] = 1.0
    target[tuple(cap.T)] = False
    return memory, target

"""Evaluation metrics of paper §4.2 (array layer).

Paper §4.2: segmentation by the Dice coefficient and the average absolute symmetric surface distance
(ASSD), "calculated for individual vertebrae and then averaged across all scans. Each vertebra in the
reference segmentation was compared with the vertebra in the automatic segmentation mask with which
it had the largest overlap." Identification by the accuracy and the linearly weighted Cohen kappa;
completeness classification by the accuracy and false positives / negatives per scan, "False
positives were in this case vertebrae that were incompletely visible, but were classified as
completely visible."

Conventions used here:

* Label maps are integer arrays in SimpleITK order (z, y, x) holding VerSe ids (see
  :mod:`vertebra_traversal.anatomy`); a predicted *instance* is one label id of the prediction.
  Spacing is given in the same (z, y, x) order, in millimetres (``image.GetSpacing()[::-1]``).
* A reference vertebra that overlaps no predicted instance is *missed*: Dice 0, ASSD NaN,
  ``pred_label`` None. Missed vertebrae count in the mean Dice (as 0) but not in the mean ASSD, the
  identification or the completeness statistics.
* A predicted instance that is the largest-overlap match of no reference vertebra is a *false
  detection* (this includes fragments and vertebrae the reference does not label).
* Like the paper's Fig. 5 ("Only completely visible vertebrae are included"), the Dice / ASSD /
  identification summaries default to completely visible reference vertebrae (``ref_complete`` not
  False); the ``*_all`` variants include every reference vertebra.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from . import anatomy

logger = logging.getLogger(__name__)

_SIX_CONNECTED = ndimage.generate_binary_structure(3, 1)
_CHUNK_VOXELS = 1 << 22


def _check_spacing(spacing_zyx: Sequence[float]) -> Tuple[float, float, float]:
    values = tuple(float(s) for s in spacing_zyx)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three positive numbers (z, y, x) in mm, got {tuple(spacing_zyx)}")
    return values  # type: ignore[return-value]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A| + |B|) of two masks of equal shape (nonzero = inside).

    Returns 1.0 when both masks are empty.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"dice: masks differ in shape, {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a 3D mask: inside voxels with at least one 6-neighbour outside (voxels
    beyond the array count as outside). Same shape, bool."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, structure=_SIX_CONNECTED, border_value=0)


def _bounding_box(mask: np.ndarray, margin: int = 1) -> Optional[Tuple[slice, ...]]:
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    if not boxes or boxes[0] is None:
        return None
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(boxes[0], mask.shape))


def assd(a: np.ndarray, b: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """Average symmetric surface distance in mm between two 3D masks of equal shape (z, y, x).

    The mean, over the boundary voxels of both masks (:func:`surface`), of the Euclidean distance to
    the nearest boundary voxel of the other mask, with voxel spacing ``spacing_zyx`` (z, y, x) in mm.
    The masks are cropped to their joint bounding box first (distances stay exact).

    Returns 0.0 when both masks are empty and ``inf`` when exactly one is.
    """
    spacing = _check_spacing(spacing_zyx)
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"assd: need two 3D masks of equal shape, got {a.shape} and {b.shape}")
    box = _bounding_box(a | b)
    if box is None:
        return 0.0
    surface_a, surface_b = surface(a[box]), surface(b[box])
    count_a, count_b = int(surface_a.sum()), int(surface_b.sum())
    if count_a == 0 or count_b == 0:
        return math.inf
    to_b = ndimage.distance_transform_edt(~surface_b, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~surface_a, sampling=spacing)
    return float((to_b[surface_a].sum() + to_a[surface_b].sum()) / (count_a + count_b))


def weighted_kappa(ref_values: Sequence[float], pred_values: Sequence[float],
                   categories: Optional[Sequence[float]] = None) -> float:
    """Linearly weighted Cohen kappa (Cohen 1968) of two ratings of the same items.

    ``categories`` lists the ordered categories (default: the sorted union of the values); the
    disagreement weight of categories i and j is |i - j| in that list. Equal to
    ``sklearn.metrics.cohen_kappa_score(ref, pred, labels=categories, weights="linear")``, except that
    perfect agreement within a single category gives 1.0 (sklearn: NaN). No items give NaN.

    Raises:
        ValueError: ratings of different lengths, or a value not in ``categories``.
    """
    ref, pred = list(ref_values), list(pred_values)
    if len(ref) != len(pred):
        raise ValueError(f"kappa: {len(ref)} reference ratings but {len(pred)} predicted ones")
    if not ref:
        return math.nan
    cats = sorted(set(ref) | set(pred)) if categories is None else list(categories)
    position = {c: i for i, c in enumerate(cats)}
    missing = sorted((set(ref) | set(pred)) - set(position))
    if missing:
        raise ValueError(f"kappa: values {missing} are not among the categories")
    observed = np.zeros((len(cats), len(cats)))
    np.add.at(observed, ([position[v] for v in ref], [position[v] for v in pred]), 1.0)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / len(ref)
    weights = np.abs(np.arange(len(cats))[:, None] - np.arange(len(cats))[None, :])
    disagreement, chance = float((weights * observed).sum()), float((weights * expected).sum())
    if chance == 0.0:
        return 1.0 if disagreement == 0.0 else math.nan
    return 1.0 - disagreement / chance


def kappa_categories(labels: Sequence[int]) -> List[float]:
    """Anatomical ranks used as κ categories: the 24 standard vertebrae C1..L5, plus T13 / L6 only
    when they occur in ``labels`` (so that T12 -> L1 is an off-by-one mistake unless T13 is present)."""
    ranks = {v.rank for v in anatomy.STANDARD} | {anatomy.vertebra(l).rank for l in labels}
    return sorted(ranks)


def linear_kappa(ref: Sequence[int], pred: Sequence[int]) -> float:
    """Linearly weighted Cohen κ of reference and predicted VerSe label ids (paper §4.2).

    Categories are ordered by anatomical rank (:func:`kappa_categories`), not by raw id, so that
    T13 (id 28) sits between T12 and L1 and L6 (id 25) after L5.
    """
    ref_ranks = [anatomy.vertebra(l).rank for l in ref]
    pred_ranks = [anatomy.vertebra(l).rank for l in pred]
    return weighted_kappa(ref_ranks, pred_ranks, kappa_categories(list(ref) + list(pred)))


@dataclass(frozen=True)
class VertebraScore:
    """Scores of one reference vertebra.

    Attributes:
        label: VerSe id in the reference.
        pred_label: id of the largest-overlap predicted instance, None when missed.
        dice: Dice coefficient (0.0 when missed).
        assd_mm: average symmetric surface distance in mm (NaN when missed).
        ref_complete: reference completeness (None when unknown).
        pred_complete: predicted completeness of the matched instance (None when unknown or missed).
    """

    label: int
    pred_label: Optional[int]
    dice: float
    assd_mm: float
    ref_complete: Optional[bool]
    pred_complete: Optional[bool]

    @property
    def matched(self) -> bool:
        return self.pred_label is not None

    @property
    def identified(self) -> bool:
        """True when the matched instance carries the reference label."""
        return self.pred_label == self.label


def select(vertebrae: Sequence[VertebraScore], complete_only: bool = True) -> List[VertebraScore]:
    """The vertebrae entering the Dice / ASSD / identification summaries: all, or (default, paper
    Fig. 5) those whose reference is not marked incomplete."""
    return [v for v in vertebrae if not complete_only or v.ref_complete is not False]


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def mean_dice(vertebrae: Sequence[VertebraScore]) -> float:
    """Mean Dice (0..1) over the given vertebrae, missed ones counting 0; NaN when empty."""
    return _mean([v.dice for v in vertebrae])


def mean_assd(vertebrae: Sequence[VertebraScore]) -> float:
    """Mean ASSD (mm) over the matched vertebrae among those given; NaN when none."""
    return _mean([v.assd_mm for v in vertebrae if v.matched])


def identification_accuracy(vertebrae: Sequence[VertebraScore]) -> float:
    """Fraction (0..1) of matched vertebrae whose instance has the reference label; NaN when none."""
    matched = [v for v in vertebrae if v.matched]
    return sum(v.identified for v in matched) / len(matched) if matched else math.nan


def completeness_pairs(vertebrae: Sequence[VertebraScore]) -> List[Tuple[bool, bool]]:
    """(reference, predicted) completeness of the matched vertebrae where both are known."""
    return [(bool(v.ref_complete), bool(v.pred_complete)) for v in vertebrae
            if v.matched and v.ref_complete is not None and v.pred_complete is not None]


@dataclass(frozen=True)
class CaseScore:
    """Scores of one scan: one :class:`VertebraScore` per reference vertebra (cranio-caudal order)
    and the number of predicted instances that match no reference vertebra."""

    case_id: str
    vertebrae: List[VertebraScore]
    false_detections: int

    @property
    def missed(self) -> int:
        return sum(not v.matched for v in self.vertebrae)

    @property
    def mean_dice(self) -> float:
        """Mean Dice (0..1) over completely visible reference vertebrae (paper Fig. 5)."""
        return mean_dice(select(self.vertebrae))

    @property
    def mean_dice_all(self) -> float:
        return mean_dice(self.vertebrae)

    @property
    def mean_assd(self) -> float:
        """Mean ASSD (mm) over matched, completely visible reference vertebrae."""
        return mean_assd(select(self.vertebrae))

    @property
    def mean_assd_all(self) -> float:
        return mean_assd(self.vertebrae)

    @property
    def identification_accuracy(self) -> float:
        """Identification accuracy (0..1) over matched, completely visible reference vertebrae."""
        return identification_accuracy(select(self.vertebrae))

    @property
    def completeness_accuracy(self) -> float:
        """Fraction (0..1) of matched vertebrae, with both completeness values known, classified right."""
        pairs = completeness_pairs(self.vertebrae)
        return sum(r == p for r, p in pairs) / len(pairs) if pairs else math.nan

    @property
    def completeness_fp(self) -> int:
        """Incompletely visible vertebrae classified as complete."""
        return sum(not r and p for r, p in completeness_pairs(self.vertebrae))

    @property
    def completeness_fn(self) -> int:
        """Completely visible vertebrae classified as incomplete."""
        return sum(r and not p for r, p in completeness_pairs(self.vertebrae))


def _overlap_counts(ref: np.ndarray, pred: np.ndarray, size: int) -> np.ndarray:
    """counts[r, p] = number of voxels with reference id r and predicted id p (slab by slab)."""
    counts = np.zeros(size * size, dtype=np.int64)
    step = max(1, _CHUNK_VOXELS // max(1, ref[0].size))
    for z in range(0, ref.shape[0], step):
        joint = ref[z:z + step].astype(np.intp) * size + pred[z:z + step]
        counts += np.bincount(joint.ravel(), minlength=size * size)
    return counts.reshape(size, size)


def largest_overlap_matches(ref_labels: np.ndarray, pred_labels: np.ndarray) -> Dict[int, Tuple[int, int]]:
    """Reference id -> (id of the predicted instance it overlaps most, voxels in common), for every reference
    vertebra that overlaps one (paper §4.2's matching). Both maps (z, y, x) integer ids 0..255 of one shape."""
    ref, pred = np.asarray(ref_labels), np.asarray(pred_labels)
    _check_labels(ref, pred, "largest_overlap_matches")
    size = int(max(ref.max(initial=0), pred.max(initial=0))) + 1
    counts = _overlap_counts(ref, pred, size)[:, 1:]
    return {int(r): (int(np.argmax(counts[r])) + 1, int(counts[r].max()))
            for r in range(1, size) if counts[r].max() > 0}


def _check_labels(ref: np.ndarray, pred: np.ndarray, caller: str = "score_case") -> None:
    if ref.shape != pred.shape or ref.ndim != 3:
        raise ValueError(f"{caller}: need two 3D label maps of equal shape, got {ref.shape} and {pred.shape}")
    for name, array in (("reference", ref), ("prediction", pred)):
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{caller}: {name} label map must be integer, got {array.dtype}")
        if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
            raise ValueError(f"{caller}: {name} label ids must lie in 0..255")


def _union_box(a: Tuple[slice, ...], b: Tuple[slice, ...], shape: Tuple[int, ...]) -> Tuple[slice, ...]:
    return tuple(slice(max(min(x.start, y.start) - 1, 0), min(max(x.stop, y.stop) + 1, n))
                 for x, y, n in zip(a, b, shape))


def score_case(ref_labels: np.ndarray, pred_labels: np.ndarray, spacing_zyx: Sequence[float],
               ref_complete: Optional[Dict[int, bool]] = None, pred_complete: Optional[Dict[int, bool]] = None,
               case_id: str = "") -> CaseScore:
    """Score one scan (paper §4.2).

    Args:
        ref_labels, pred_labels: (z, y, x) integer label maps of equal shape, VerSe ids (0 = background).
        spacing_zyx: voxel spacing (z, y, x) in mm.
        ref_complete: reference completeness per reference id (None: unknown).
        pred_complete: predicted completeness per predicted instance id (None: unknown).
        case_id: carried into the result.

    Each reference vertebra is matched to the predicted instance with which it overlaps most; Dice
    and ASSD are computed within the pair's joint bounding box.

    Raises:
        ValueError: shapes differ, non-integer maps, bad spacing, or ids that are not vertebrae.
    """
    spacing = _check_spacing(spacing_zyx)
    ref, pred = np.asarray(ref_labels), np.asarray(pred_labels)
    _check_labels(ref, pred)
    size = int(max(ref.max(initial=0), pred.max(initial=0))) + 1
    counts = _overlap_counts(ref, pred, size)
    ref_ids = [int(i) for i in np.flatnonzero(counts.sum(axis=1)) if i > 0]
    pred_ids = [int(i) for i in np.flatnonzero(counts.sum(axis=0)) if i > 0]
    unknown = sorted(i for i in set(ref_ids) | set(pred_ids) if not anatomy.is_valid_label(i))
    if unknown:
        raise ValueError(f"score_case {case_id}: label ids {unknown} are not vertebrae (VerSe ids expected)")
    ref_boxes, pred_boxes = ndimage.find_objects(ref), ndimage.find_objects(pred)
    scores, matched = [], set()
    for label in sorted(ref_ids, key=lambda l: anatomy.vertebra(l).rank):
        row = counts[label, 1:]
        known = None if ref_complete is None else ref_complete.get(label)
        if row.max() == 0:
            scores.append(VertebraScore(label, None, 0.0, math.nan, known, None))
            continue
        best = int(np.argmax(row)) + 1
        matched.add(best)
        box = _union_box(ref_boxes[label - 1], pred_boxes[best - 1], ref.shape)
        value = 2.0 * row[best - 1] / (counts[label].sum() + counts[:, best].sum())
        distance = assd(ref[box] == label, pred[box] == best, spacing)
        predicted = None if pred_complete is None else pred_complete.get(best)
        scores.append(VertebraScore(label, best, float(value), distance, known, predicted))
    false_detections = len(set(pred_ids) - matched)
    logger.debug("case %s: %d reference vertebrae, %d instances, %d false detections",
                 case_id, len(ref_ids), len(pred_ids), false_detections)
    return CaseScore(case_id, scores, false_detections)

"""Tests for vertebra_traversal.metrics (paper §4.2), against hand-computed values and independent oracles."""
import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.metrics import cohen_kappa_score

from vertebra_traversal import anatomy, metrics

L = anatomy.label_of


def _brute_surface(mask):
    """Inside voxels with a 6-neighbour outside (outside the array counts as outside)."""
    padded = np.pad(mask.astype(bool), 1)
    core = padded[1:-1, 1:-1, 1:-1]
    all_inside = np.ones_like(core)
    for axis in range(3):
        for shift in (-1, 1):
            all_inside &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return core & ~all_inside


def _brute_assd(a, b, spacing):
    pa = np.argwhere(_brute_surface(a)) * np.asarray(spacing)
    pb = np.argwhere(_brute_surface(b)) * np.asarray(spacing)
    d = cdist(pa, pb)
    return (d.min(axis=1).sum() + d.min(axis=0).sum()) / (len(pa) + len(pb))


def _blob(shape, center, radii, rng):
    grid = np.indices(shape).astype(float)
    r = sum(((g - c) / rr) ** 2 for g, c, rr in zip(grid, center, radii))
    return (r + rng.uniform(-0.3, 0.3, size=shape)) < 1.0


def test_dice_hand_computed():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[0:2, 0:2, 0:2] = True
    b[0:2, 0:2, 1:3] = True  # 4 of 8 voxels shared
    assert metrics.dice(a, b) == pytest.approx(0.5)
    assert metrics.dice(a, a) == 1.0
    assert metrics.dice(a, np.zeros_like(a)) == 0.0
    assert metrics.dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    with pytest.raises(ValueError, match="shape"):
        metrics.dice(a, a[:3])


def test_assd_single_voxels_use_spacing_in_zyx_order():
    a = np.zeros((3, 3, 6), bool)
    b = np.zeros((3, 3, 6), bool)
    a[1, 1, 1] = True
    b[1, 1, 4] = True  # 3 voxels apart along x
    assert metrics.assd(a, b, (1.0, 1.0, 0.5)) == pytest.approx(1.5)
    assert metrics.assd(a, b, (0.5, 0.5, 2.0)) == pytest.approx(6.0)


def test_assd_parallel_planes():
    a = np.zeros((4, 5, 6), bool)
    b = np.zeros((4, 5, 6), bool)
    a[0] = True
    b[2] = True
    assert metrics.assd(a, b, (2.5, 1.0, 1.0)) == pytest.approx(5.0)


@pytest.mark.parametrize("seed, spacing", [(0, (1.0, 1.0, 1.0)), (1, (2.0, 0.7, 0.9)), (2, (0.5, 1.5, 1.0))])
def test_assd_matches_brute_force(seed, spacing):
    rng = np.random.default_rng(seed)
    shape = (30, 26, 28)
    a = _blob(shape, (15, 14, 12), (6, 5, 7), rng)
    b = _blob(shape, (16, 12, 13), (5, 6, 6), rng)
    b[0:3, 0:4, 20:28] = True  # a second component touching the array border
    expected = _brute_assd(a, b, spacing)
    assert metrics.assd(a, b, spacing) == pytest.approx(expected, rel=1e-9)
    assert metrics.assd(b, a, spacing) == pytest.approx(expected, rel=1e-9)


def test_assd_edge_cases():
    a = np.zeros((5, 5, 5), bool)
    a[1:4, 1:4, 1:4] = True
    empty = np.zeros_like(a)
    assert metrics.assd(a, a, (1, 1, 1)) == 0.0
    assert metrics.assd(a, empty, (1, 1, 1)) == math.inf
    assert metrics.assd(empty, empty, (1, 1, 1)) == 0.0
    with pytest.raises(ValueError, match="spacing"):
        metrics.assd(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        metrics.assd(a, a, (1.0, 1.0))


def test_surface_of_a_cube_is_its_shell():
    mask = np.zeros((6, 6, 6), bool)
    mask[1:5, 1:5, 1:5] = True
    assert metrics.surface(mask).sum() == 4 ** 3 - 2 ** 3
    np.testing.assert_array_equal(metrics.surface(mask), _brute_surface(mask))


@pytest.mark.parametrize("seed", range(5))
def test_weighted_kappa_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    ref = rng.integers(1, 8, size=40)
    pred = np.clip(ref + rng.integers(-2, 3, size=40), 1, 9)
    expected = cohen_kappa_score(ref, pred, weights="linear")
    assert metrics.weighted_kappa(ref.tolist(), pred.tolist()) == pytest.approx(expected, abs=1e-12)
    categories = list(range(0, 12))
    expected = cohen_kappa_score(ref, pred, labels=categories, weights="linear")
    assert metrics.weighted_kappa(ref.tolist(), pred.tolist(), categories) == pytest.approx(expected, abs=1e-12)


def test_weighted_kappa_special_cases():
    assert metrics.weighted_kappa([3, 3, 3], [3, 3, 3]) == 1.0  # sklearn: NaN (no chance disagreement)
    assert math.isnan(metrics.weighted_kappa([], []))
    assert metrics.weighted_kappa([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="ratings"):
        metrics.weighted_kappa([1, 2], [1])
    with pytest.raises(ValueError, match="categories"):
        metrics.weighted_kappa([1, 2], [1, 5], categories=[1, 2, 3])


def test_linear_kappa_orders_by_anatomical_rank():
    ref = [L("T10"), L("T11"), L("T12"), L("L1"), L("L2"), L("L3")]
    pred = [L("T11"), L("T12"), L("T13"), L("L1"), L("L2"), L("L4")]  # one T13, one off by one
    # sklearn refuses non-integer classes: use twice the rank (T13 = 39, between T12 = 38 and L1 = 40)
    ranks = lambda ids: [int(2 * anatomy.vertebra(i).rank) for i in ids]  # noqa: E731
    categories = sorted({int(2 * v.rank) for v in anatomy.STANDARD} | {39})
    expected = cohen_kappa_score(ranks(ref), ranks(pred), labels=categories, weights="linear")
    assert metrics.linear_kappa(ref, pred) == pytest.approx(expected, abs=1e-12)
    raw_ids = cohen_kappa_score(ref, pred, labels=sorted(set(range(1, 25)) | {28}), weights="linear")
    assert abs(metrics.linear_kappa(ref, pred) - raw_ids) > 0.05  # T13 (id 28) is not far from T12
    assert metrics.kappa_categories([L("L1")]) == [float(r) for r in range(1, 25)]
    assert 25.0 in metrics.kappa_categories([L("L6")]) and 19.5 not in metrics.kappa_categories([L("L6")])


def _scenario():
    """Reference L3, L2, L1, T12 (complete) and T11 (incomplete) as 8x8 boxes stacked along z;
    prediction: L3 exact, L2 shifted one slice, L1 covered 4/6 by an instance labelled T12 and 2/6
    by a T13 fragment, T12 missed, T11 exact, plus an L4 instance that overlaps nothing."""
    ref = np.zeros((40, 12, 12), np.uint8)
    pred = np.zeros_like(ref)
    for name, z0 in (("L3", 2), ("L2", 10), ("L1", 18), ("T12", 26), ("T11", 34)):
        ref[z0:z0 + 6, 2:10, 2:10] = L(name)
    pred[2:8, 2:10, 2:10] = L("L3")
    pred[11:17, 2:10, 2:10] = L("L2")
    pred[18:22, 2:10, 2:10] = L("T12")
    pred[22:24, 2:10, 2:10] = L("T13")
    pred[34:40, 2:10, 2:10] = L("T11")
    pred[2:8, 10:12, 10:12] = L("L4")
    ref_complete = {L("L3"): True, L("L2"): True, L("L1"): True, L("T12"): True, L("T11"): False}
    pred_complete = {L("L3"): True, L("L2"): False, L("T12"): True, L("T13"): False, L("T11"): True,
                     L("L4"): True}
    return ref, pred, ref_complete, pred_complete


def test_score_case_matches_by_largest_overlap():
    ref, pred, ref_complete, pred_complete = _scenario()
    spacing = (2.0, 1.0, 0.5)
    case = metrics.score_case(ref, pred, spacing, ref_complete, pred_complete, case_id="c1")
    by_label = {v.label: v for v in case.vertebrae}
    assert [v.label for v in case.vertebrae] == [L(n) for n in ("T11", "T12", "L1", "L2", "L3")]
    assert by_label[L("L3")].dice == 1.0 and by_label[L("L3")].assd_mm == 0.0
    assert by_label[L("L2")].pred_label == L("L2") and by_label[L("L2")].dice == pytest.approx(10 / 12)
    assert by_label[L("L2")].assd_mm == pytest.approx(_brute_assd(ref == L("L2"), pred == L("L2"), spacing))
    l1 = by_label[L("L1")]
    assert l1.pred_label == L("T12") and not l1.identified and l1.dice == pytest.approx(0.8)
    assert l1.assd_mm == pytest.approx(_brute_assd(ref == L("L1"), pred == L("T12"), spacing))
    t12 = by_label[L("T12")]
    assert t12.pred_label is None and t12.dice == 0.0 and math.isnan(t12.assd_mm) and t12.pred_complete is None
    assert case.false_detections == 2  # the T13 fragment and the L4 instance
    assert case.missed == 1 and case.case_id == "c1"


def test_case_summaries_follow_the_paper():
    ref, pred, ref_complete, pred_complete = _scenario()
    case = metrics.score_case(ref, pred, (2.0, 1.0, 0.5), ref_complete, pred_complete)
    assert case.mean_dice == pytest.approx((1 + 10 / 12 + 0.8 + 0) / 4)  # complete vertebrae only
    assert case.mean_dice_all == pytest.approx((1 + 10 / 12 + 0.8 + 0 + 1) / 5)
    matched = [v.assd_mm for v in case.vertebrae if v.label in (L("L3"), L("L2"), L("L1"))]
    assert case.mean_assd == pytest.approx(np.mean(matched))
    assert case.mean_assd_all == pytest.approx(np.mean(matched + [0.0]))
    assert case.identification_accuracy == pytest.approx(2 / 3)
    # matched with known completeness: L3 (T,T) ok, L2 (T,F) FN, L1 (T,T) ok, T11 (F,T) FP
    assert case.completeness_accuracy == pytest.approx(0.5)
    assert case.completeness_fp == 1 and case.completeness_fn == 1


def test_unknown_completeness_and_merged_instances():
    ref = np.zeros((12, 4, 4), np.uint8)
    ref[0:6] = L("L2")
    ref[6:12] = L("L1")
    pred = np.where(ref > 0, L("L1"), 0).astype(np.uint8)  # both vertebrae merged into one instance
    case = metrics.score_case(ref, pred, (1, 1, 1))
    assert [v.pred_label for v in case.vertebrae] == [L("L1"), L("L1")]
    assert all(v.dice == pytest.approx(2 * 96 / (96 + 192)) for v in case.vertebrae)
    assert case.false_detections == 0 and case.identification_accuracy == pytest.approx(0.5)
    assert all(v.ref_complete is None for v in case.vertebrae)
    assert math.isnan(case.completeness_accuracy) and case.completeness_fp == 0
    assert len(metrics.select(case.vertebrae)) == 2  # unknown completeness counts as complete


def test_empty_prediction_misses_everything():
    ref, _, ref_complete, _ = _scenario()
    case = metrics.score_case(ref, np.zeros_like(ref), (1, 1, 1), ref_complete)
    assert case.missed == 5 and case.mean_dice == 0.0 and math.isnan(case.mean_assd)
    assert math.isnan(case.identification_accuracy) and case.false_detections == 0


def test_score_case_rejects_bad_input():
    ref = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="equal shape"):
        metrics.score_case(ref, ref[:3], (1, 1, 1))
    with pytest.raises(ValueError, match="integer"):
        metrics.score_case(ref.astype(float), ref, (1, 1, 1))
    sacrum = ref.copy()
    sacrum[0, 0, 0] = 26
    with pytest.raises(ValueError, match=r"\[26\]"):
        metrics.score_case(sacrum, ref, (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        metrics.score_case(ref, ref, (1, -1, 1))

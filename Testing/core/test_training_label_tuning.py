"""The label path trained on the traversal's own patches (``training/label_tuning.py``)."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from model_factory import TINY
from oracle import box_spine, oracle_for
from test_start_network_fallback import NECK_SEED
from vertebra_traversal import anatomy
from vertebra_traversal.checkpoint import ModelMetadata
from vertebra_traversal.label_calibration import TABLE_VALUES, LabelCalibration, gaussian_reading
from vertebra_traversal.labeling import LabelingConfig
from vertebra_traversal.metrics import largest_overlap_matches
from vertebra_traversal.network import IterativeFCN
from vertebra_traversal.checkpoint import load_model
from vertebra_traversal.models import resolve_model
from vertebra_traversal.phantom import generate_case
from vertebra_traversal.dataset import write_case
from vertebra_traversal.phantom.sample import SAMPLE_CONFIG, SAMPLE_SEED
from vertebra_traversal.pipeline import segment_image, segment_with_predictor
from vertebra_traversal.training.data import find_cases
from vertebra_traversal.training.label_tuning import (CapturedScan, LabelTuning, RecordingPredictor, _complete_in_crop,
                                                      capture_case, capture_scan,
                                                      identified, label_patches, main_network, tune_label_path,
                                                      tuned_metadata, vertebra_targets)

SPACING = 4.0
IDS_BOTTOM_UP = [anatomy.label_of(n) for n in ("L3", "L2", "L1", "T12", "T11", "T10")]


def _line(*runs):
    """A (1, 1, N) label map from (id, length) runs."""
    return np.concatenate([np.full(n, i, np.uint8) for i, n in runs]).reshape(1, 1, -1)


def test_each_reference_vertebra_is_matched_to_the_instance_it_overlaps_most():
    ref = _line((20, 4), (21, 6))
    assert largest_overlap_matches(ref, _line((1, 5), (2, 2), (0, 3))) == {20: (1, 4), 21: (2, 2)}
    assert largest_overlap_matches(ref, _line((1, 5), (0, 5))) == {20: (1, 4), 21: (1, 1)}
    assert largest_overlap_matches(ref, np.zeros_like(ref)) == {}
    with pytest.raises(ValueError, match="largest_overlap_matches: need two 3D label maps of equal shape"):
        largest_overlap_matches(ref, ref[:, :, :5])


def test_an_output_vertebra_is_paired_with_the_reference_it_matches_else_the_one_it_overlaps_most():
    t11, t12, l1 = (anatomy.label_of(n) for n in ("T11", "T12", "L1"))
    reference = _line((t11, 4), (t12, 6), (l1, 4), (0, 4))
    # 5: all of T11 and five voxels of T12 (the match of both, more of T12); 6: one voxel of T12 (matches
    # nothing); 7: L1; 8: only background
    output = _line((5, 9), (6, 1), (7, 4), (0, 1), (8, 2), (0, 1))
    assert vertebra_targets(reference, output) == {5: (t12, True), 6: (t12, False), 7: (l1, True)}


def _oracle_run(approach):
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP, height=12, gap=4, z0=-4)  # L3 cut at the bottom
    image = sitk.GetImageFromArray(spine.labels.astype(np.float32))
    image.SetSpacing((SPACING,) * 3)
    meta = ModelMetadata(modality="MR", target="vertebra", spacing_mm=(SPACING,) * 3, patch_size=(32, 32, 32),
                         normalization={"kind": "ct", "clip": [-1000, 2000], "scale": 1.0, "offset": 0.0},
                         direction="up", min_fragment_mm3=20 * SPACING ** 3)
    oracle = oracle_for(spine, "up")
    recorder = RecordingPredictor(oracle)
    result = segment_with_predictor(image, recorder, meta)
    return result, label_patches(result, [recorder], spine.labels, oracle.complete_in_scan, approach)


def test_the_patch_a_label_was_read_from_shows_the_vertebra_with_those_below_it_in_memory():
    result, patches = _oracle_run(approach=2)
    finals = [p for p in patches if p.final]
    assert [p.reference for p in finals] == [v.label for v in result.vertebrae] == IDS_BOTTOM_UP[::-1]
    assert [p.order for p in finals] == [1, 2, 3, 4, 5, 6]
    assert [p.counted for p in finals] == [True] * 5 + [False]  # L3 is cut by the scan
    for p in patches:
        rank = IDS_BOTTOM_UP.index(p.reference)
        own, below = p.image == p.reference, np.isin(p.image, IDS_BOTTOM_UP[:rank])
        above = np.isin(p.image, IDS_BOTTOM_UP[rank + 1:])
        assert own.any() and not p.memory[own].any() and not p.memory[above].any()
        assert np.all(p.memory[below] == 1)
    per_vertebra = [sum(q.reference == p.reference for q in patches) for p in finals]
    assert all(1 <= n <= 3 for n in per_vertebra)
    assert [p.reference for p in _oracle_run(approach=0)[1]] == IDS_BOTTOM_UP[::-1]


def _chains(net, starts, length=5, seed=0):
    """Scans whose bottleneck features carry each vertebra's level (channel 0 = level / 24), top first."""
    rng = np.random.default_rng(seed)
    shape = net.encode(torch.zeros(1, 2, *TINY.patch_size))[-1].shape[1:]
    scans = []
    for n, start in enumerate(starts):
        chain = [v for v in anatomy.STANDARD if v.rank >= start][:length]
        values, ranked = [v.regression_value for v in chain], [v.label for v in chain]
        features = torch.zeros(len(ranked), *shape)
        features[:, 0] = torch.tensor(values)[:, None, None, None] / 24 + float(rng.normal(0, 0.002))
        scans.append(CapturedScan(f"s{n}", features, torch.tensor(values, dtype=torch.float32),
                                  np.ones(len(ranked), bool), np.arange(1, len(ranked) + 1), np.array(ranked),
                                  np.ones(len(ranked), bool)))
    return scans


def test_tuning_trains_the_label_path_alone_and_keeps_the_epoch_that_identifies_most():
    torch.manual_seed(0)
    net = IterativeFCN(TINY).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train, select = _chains(net, range(1, 20)), _chains(net, [2, 9, 17], seed=1)
    labeling = LabelingConfig()
    start = identified(net.label_path, select, labeling)
    best, history = tune_label_path(net, train, select, labeling,
                                    LabelTuning(epochs=60, learning_rate=3e-2, batch_size=8))
    assert start[1] == 15 and start[0] < 15
    assert best is not None and history[best]["identified"] == max(h["identified"] for h in history) == 15
    assert identified(net.label_path, select, labeling) == (15, 15)  # the best epoch's weights are in place
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("label_path.") for k in changed)


def test_no_better_epoch_leaves_the_label_path_as_it_was():
    torch.manual_seed(0)
    net = IterativeFCN(TINY).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train, select = _chains(net, range(1, 10)), _chains(net, [3], seed=1)
    select[0].counted[:] = False  # nothing to identify: no epoch can do better
    best, history = tune_label_path(net, train, select, LabelingConfig(), LabelTuning(epochs=3))
    assert best is None and len(history) == 4 and [h["counted"] for h in history] == [0] * 4
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_a_cosine_schedule_lowers_the_rate_batch_by_batch_to_nearly_zero_and_a_constant_one_keeps_it():
    net = IterativeFCN(TINY).eval()
    train, select = _chains(net, range(1, 10)), _chains(net, [3], seed=1)  # 45 patches: 6 batches of 8
    rates = {}
    for schedule in ("constant", "cosine"):
        tuning = LabelTuning(epochs=4, learning_rate=1e-2, batch_size=8, learning_rate_schedule=schedule)
        history = tune_label_path(net, train, select, LabelingConfig(), tuning)[1]
        rates[schedule] = [h["learning_rate"] for h in history[1:]]
    assert rates["constant"] == [1e-2] * 4
    steps = 4 * 6  # the rate of each epoch's last batch, steps 5, 11, 17 and 23 of 24
    expected = [1e-2 * 0.5 * (1 + math.cos(math.pi * s / steps)) for s in (5, 11, 17, 23)]
    assert rates["cosine"] == pytest.approx(expected)
    assert rates["cosine"][-1] == pytest.approx(1e-2 * (1 - math.cos(math.pi / steps)) / 2)


def test_tuning_refuses_bad_settings_and_scans_without_patches():
    for bad in ({"epochs": 0}, {"batch_size": 0}, {"approach": -1}, {"learning_rate": 0.0},
                {"learning_rate_schedule": "step"}):
        with pytest.raises(ValueError):
            LabelTuning(**bad)
    net = IterativeFCN(TINY).eval()
    empty = CapturedScan("none", None, torch.zeros(0), np.zeros(0, bool), np.zeros(0, int), np.zeros(0, int),
                         np.zeros(0, bool))
    with pytest.raises(ValueError, match="nothing to train on"):
        tune_label_path(net, [empty], [], LabelingConfig())


def test_the_tuned_model_keeps_a_gaussian_reading_and_drops_a_fitted_table_and_confidence(tmp_path):
    confidence = {"intercept": 0.0, "likelihood_weight": 1.0, "steps_weight": -1.0, "steps_cap": 15,
                  "vertebrae": 10, "cases": 2, "right": 0.5}
    gaussian = ModelMetadata.reading_record(gaussian_reading(1.25), {"max_gaps": 2, "gap_penalty": 0.1})
    fitted = ModelMetadata.reading_record(
        LabelCalibration(tuple(v + 1.0 for v in TABLE_VALUES), (2.0,) * len(TABLE_VALUES), vertebrae=9, cases=3))
    base = ModelMetadata(modality="CT", target="vertebra", spacing_mm=(2.5,) * 3, patch_size=(48,) * 3,
                         normalization={"kind": "ct", "clip": [-1000, 2000], "scale": 0.001, "offset": 0.0},
                         label_confidence=confidence)
    kept, note = tuned_metadata(tmp_path / "init.pt", replace(base, label_calibration=gaussian))
    assert note == "kept" and kept.label_calibration == gaussian and kept.label_confidence == {}
    assert kept.calibration() == gaussian_reading(1.25) and kept.label_sequence()["max_gaps"] == 2
    dropped, note = tuned_metadata(tmp_path / "init.pt", replace(base, label_calibration=fitted))
    assert note == "dropped" and dropped.label_calibration == {} and dropped.calibration() is None
    assert tuned_metadata(tmp_path / "init.pt", base)[1] == "none"


def test_the_bundled_model_gives_back_each_label_value_from_the_patch_recorded_for_it():
    """In this neck scan the bundled CT model's second traversal (its fallback) gives the result: the patches
    recorded for each vertebra come from that run, and the label path reads the run's values from them."""
    case = generate_case(NECK_SEED, replace(SAMPLE_CONFIG, fov="neck"))
    model = load_model(resolve_model("ct"), device="cpu")
    net = main_network(model)
    scan = capture_scan(case.image, case.labels, model, net, approach=2, case_id="neck")
    result = segment_image(case.image, model)
    assert result.start_network_used and len(result.vertebrae) >= 6
    targets = vertebra_targets(sitk.GetArrayFromImage(case.labels), sitk.GetArrayFromImage(result.labels))
    paired = [v for v in result.vertebrae if v.label in targets]
    final = scan.final
    assert list(scan.order[final]) == [v.order for v in paired]
    assert list(scan.reference[final]) == [targets[v.label][0] for v in paired]
    with torch.no_grad():
        values = torch.relu(net.label_path(scan.features[final])).numpy()
    np.testing.assert_allclose(values, [v.label_value for v in paired], atol=1e-3)
    expected = [anatomy.vertebra(r).regression_value for r in scan.reference]
    np.testing.assert_array_equal(scan.targets.numpy(), np.array(expected, np.float32))
    assert final.sum() < len(final) <= 3 * final.sum()  # steps before the final patch: at most two each


def test_a_vertebra_is_complete_in_a_crop_only_where_the_crop_keeps_all_of_it():
    reference = _line((20, 4), (21, 6), (22, 4))
    crop = reference[:, :, 2:12]  # half of L1 cut off, L2 whole, two voxels of L3 cut off
    assert _complete_in_crop(reference, crop, {20: True, 21: True, 22: True}) == {20: False, 21: True, 22: False}
    assert _complete_in_crop(reference, reference, {20: True, 21: False}) == {20: True, 21: False, 22: False}


def test_a_case_is_recorded_whole_and_in_its_crops(tmp_path):
    """The bundled CT model on the demo's sample scan (about 250 mm): the whole scan first, then the crop, with
    fewer vertebrae and those it cuts not counted."""
    sample = generate_case(SAMPLE_SEED, SAMPLE_CONFIG)
    write_case(tmp_path, sample.info, sample.image, sample.labels)
    case = find_cases([tmp_path], "ct")[0]
    whole, crop = capture_case(case, resolve_model("ct"), LabelTuning(crops=1))
    assert (whole.case_id, crop.case_id) == (case.case_id, f"{case.case_id}-crop1")
    assert crop.features is not None and 0 < int(crop.final.sum()) < int(whole.final.sum())
    assert not crop.counted[crop.final].all()  # an end vertebra of the crop is cut
    assert set(crop.reference) <= set(whole.reference)
    with pytest.raises(ValueError, match="crops must be 0 or more"):
        LabelTuning(crops=-1)

"""The fitted label confidence (vertebra_traversal.confidence): its formula, its fit, its record in the model's
metadata, and where a run reports it instead of the share of the plausible label sequences."""
import math
from dataclasses import replace

import numpy as np
import pytest

from oracle import box_spine, oracle_for
from test_pipeline import IDS_BOTTOM_UP, _meta, _stored
from vertebra_traversal.checkpoint import CheckpointError
from vertebra_traversal.confidence import (STEPS_CAP, ConfidenceCalibration, auroc, brier, fit_confidence,
                                           ribs_disagree, steps_from_start)
from vertebra_traversal.labeling import refine_labels
from vertebra_traversal.pipeline import SegmentConfig, segment_with_predictor


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def test_the_probability_is_the_logistic_of_likelihood_and_capped_steps():
    c = ConfidenceCalibration(intercept=-1.0, likelihood_weight=2.0, steps_weight=-3.0)
    assert c.probability(0.5, 0) == pytest.approx(0.5)
    assert c.probability(1.0, 4) == pytest.approx(_sigmoid(-1.0 + 2.0 - 1.2))
    assert c.probability(1.0, STEPS_CAP + 7) == pytest.approx(c.probability(1.0, STEPS_CAP))
    assert c.probability(0.9, 3) > c.probability(0.2, 3) and c.probability(0.9, 1) > c.probability(0.9, 8)
    assert ConfidenceCalibration(-2000.0, 0.0, 0.0).probability(0.5, 0) == pytest.approx(0.0)  # no overflow
    assert ConfidenceCalibration(2000.0, 0.0, 0.0).probability(0.5, 0) == pytest.approx(1.0)


def test_a_run_whose_ribs_end_off_t12_lowers_the_probability_by_the_ribs_weight():
    c = ConfidenceCalibration(intercept=0.5, likelihood_weight=1.0, steps_weight=0.0, ribs_weight=-2.0)
    assert c.probability(0.5, 3) == pytest.approx(_sigmoid(1.0))
    assert c.probability(0.5, 3, ribs_disagree=True) == pytest.approx(_sigmoid(-1.0))
    assert ConfidenceCalibration(0.5, 1.0, 0.0).probability(0.5, 3, True) == pytest.approx(_sigmoid(1.0))  # weight 0
    assert [ribs_disagree(x) for x in (None, 19, 28, 18, 20)] == [False, False, False, True, True]  # T12, T13, T11, L1


def test_steps_count_from_the_end_where_the_traversal_started():
    assert steps_from_start(4, "up") == [3, 2, 1, 0]  # top first; an upward traversal starts at the bottom
    assert steps_from_start(4, "down") == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="direction"):
        steps_from_start(3, "sideways")


def test_the_fit_recovers_the_numbers_that_made_the_outcomes():
    rng = np.random.default_rng(7)
    truth = ConfidenceCalibration(intercept=-0.5, likelihood_weight=2.5, steps_weight=-2.0)
    samples = []
    for _ in range(6000):
        likelihood, steps = float(rng.uniform()), int(rng.integers(0, 20))
        off = bool(rng.uniform() < 0.3)
        samples.append((likelihood, steps, off, bool(rng.uniform() < truth.probability(likelihood, steps, off))))
    fitted = fit_confidence(samples, cases=40)
    assert (fitted.intercept, fitted.likelihood_weight, fitted.steps_weight) == pytest.approx((-0.5, 2.5, -2.0),
                                                                                              abs=0.25)
    assert fitted.ribs_weight == 0.0 and fitted.vertebrae == 6000 and fitted.cases == 40
    assert fitted.right == pytest.approx(np.mean([r for *_, r in samples]))
    truth = replace(truth, ribs_weight=-1.5)  # the same vertebrae, with runs whose ribs end off T12 less often right
    samples = [(lk, steps, off, bool(rng.uniform() < truth.probability(lk, steps, off)))
               for lk, steps, off, _ in samples]
    fitted = fit_confidence(samples, cases=40, ribs=True)
    assert (fitted.intercept, fitted.likelihood_weight, fitted.steps_weight, fitted.ribs_weight) == pytest.approx(
        (-0.5, 2.5, -2.0, -1.5), abs=0.3)


@pytest.mark.parametrize("samples, message", [([(0.5, 1, False, True)] * 9, "at least 10"),
                                              ([(0.5, 1, False, True)] * 12, "all 12 labels were right")])
def test_the_fit_refuses_what_it_cannot_learn_from(samples, message):
    with pytest.raises(ValueError, match=message):
        fit_confidence(samples, cases=1)


def test_the_record_round_trips_and_a_bad_one_names_its_field():
    c = ConfidenceCalibration(-0.1, 1.5, -1.9, ribs_weight=-0.9, vertebrae=643, cases=60, right=0.48)
    assert ConfidenceCalibration.from_json(c.to_json()) == c
    older = {k: v for k, v in c.to_json().items() if k != "ribs_weight"}  # a record written before the ribs
    assert ConfidenceCalibration.from_json(older) == replace(c, ribs_weight=0.0)
    for bad, field in (({"intercept": 0.0, "likelihood_weight": 1.0}, "steps_weight"),
                       ({**c.to_json(), "ribs_weight": float("inf")}, "ribs_weight"),
                       ({**c.to_json(), "steps_weight": float("nan")}, "steps_weight"),
                       ({**c.to_json(), "right": 1.5}, "right"), ({**c.to_json(), "steps_cap": 0}, "steps_cap")):
        with pytest.raises(ValueError, match=field):
            ConfidenceCalibration.from_json(bad)
    with pytest.raises(CheckpointError, match="label_confidence.*steps_weight"):
        replace(_meta(), label_confidence={"intercept": 0.0, "likelihood_weight": 1.0})


def test_brier_and_auroc_on_known_cases():
    assert brier([1.0, 0.0], [True, False]) == 0.0 and brier([0.5, 0.5], [True, False]) == 0.25
    assert auroc([0.9, 0.1], [True, False]) == 1.0 and auroc([0.1, 0.9], [True, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5 and math.isnan(auroc([0.5], [True]))


@pytest.mark.parametrize("direction", ["up", "down"])
def test_a_run_reports_the_fitted_probability_counted_from_the_traversals_start(direction):
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP, height=12, gap=4, z0=4)
    fitted = ConfidenceCalibration(intercept=0.0, likelihood_weight=0.0, steps_weight=1.0)
    meta = replace(_meta(direction), label_confidence=fitted.to_json())
    result = segment_with_predictor(_stored(spine.labels), oracle_for(spine, direction), meta)
    assert [v.name for v in result.vertebrae] == ["T10", "T11", "T12", "L1", "L2", "L3"]
    steps = range(5, -1, -1) if direction == "up" else range(6)
    assert [v.label_confidence for v in result.vertebrae] == pytest.approx([_sigmoid(s / 10) for s in steps])


@pytest.mark.parametrize("ribs_end, off", [(None, False), (19, False), (18, True)])
def test_a_ct_run_reports_where_the_ribs_end_and_its_confidence_counts_it(monkeypatch, ribs_end, off):
    """The rib reading (tested in test_ribs) is the run's input here: it says the ribs end at ``ribs_end``. The
    scan counts as too short for the ribs' reading (``OFFER_MIN_SCAN_MM``), so the run keeps its own labels."""
    import vertebra_traversal.pipeline as pipeline
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP, height=12, gap=4, z0=4)
    fitted = ConfidenceCalibration(intercept=0.0, likelihood_weight=0.0, steps_weight=0.0, ribs_weight=-2.0)
    seen = []
    monkeypatch.setattr(pipeline, "ribs_end_label", lambda image, labels: seen.append(labels) or ribs_end)
    monkeypatch.setattr(pipeline, "OFFER_MIN_SCAN_MM", math.inf)
    meta = replace(_meta(modality="CT"), label_confidence=fitted.to_json())
    result = segment_with_predictor(_stored(spine.labels), oracle_for(spine, "up"), meta)
    assert len(seen) == 1 and seen[0].GetSize() == result.labels.GetSize() and result.ribs_end == ribs_end
    assert [v.label_confidence for v in result.vertebrae] == pytest.approx([_sigmoid(-2.0 if off else 0.0)] * 6)
    mr = segment_with_predictor(_stored(spine.labels), oracle_for(spine, "up"), replace(meta, modality="MR"))
    assert mr.ribs_end is None and len(seen) == 1  # MR: the ribs are not read


@pytest.mark.parametrize("ribs_end, from_ribs", [(20, ["T10", "T11", "T12", "T13", "L1", "L2"]), (19, [None] * 6),
                                                 (None, [None] * 6)])
def test_a_ct_run_that_keeps_its_labels_offers_them_counted_from_the_ribs(monkeypatch, ribs_end, from_ribs):
    """T10-L3 read right by the oracle; ribs said to end at the one named L1 (20): counted from there it is the
    last thoracic vertebra, T13 where the values below still fit (test_ribs). With ``count_from_ribs`` off the
    labels stay and the ribs' reading is offered beside them."""
    import vertebra_traversal.pipeline as pipeline
    from vertebra_traversal import anatomy
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP, height=12, gap=4, z0=4)
    monkeypatch.setattr(pipeline, "ribs_end_label", lambda image, labels: ribs_end)
    keep = SegmentConfig(count_from_ribs=False)
    result = segment_with_predictor(_stored(spine.labels), oracle_for(spine, "up"), _meta(modality="CT"), keep)
    assert [v.name for v in result.vertebrae] == ["T10", "T11", "T12", "L1", "L2", "L3"]
    assert [v.rib_label and anatomy.name_of(v.rib_label) for v in result.vertebrae] == from_ribs
    assert [v.to_json()["rib_label"] for v in result.vertebrae] == [v.rib_label for v in result.vertebrae]
    assert not result.counted_from_ribs and [v.own_label for v in result.vertebrae] == [None] * 6
    if ribs_end == 20:  # what segment logs for such a run
        from vertebra_traversal.cli.segment import rib_offer
        assert rib_offer(result) == ("the ribs end at the vertebra named L1; counted from there the labels would read "
                                     "L1 -> T13, L2 -> L1, L3 -> L2 (rib_label)")


def test_a_ct_run_takes_the_ribs_reading_as_its_labels_and_keeps_its_own_beside(monkeypatch):
    """As above (ribs said to end at the one named L1), as a CT run reads by default: the label map, the rows
    and where the ribs end follow the ribs' reading; each row keeps the run's own label; nothing is offered;
    the model's fitted confidence describes these labels. A scan shorter than ``OFFER_MIN_SCAN_MM`` keeps its
    own labels and gets no offer."""
    import SimpleITK as sitk

    import vertebra_traversal.pipeline as pipeline
    from vertebra_traversal import anatomy
    from vertebra_traversal.fallback import height_mm
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP, height=12, gap=4, z0=4)
    monkeypatch.setattr(pipeline, "ribs_end_label", lambda image, labels: 20)
    fitted = ConfidenceCalibration(0.0, 0.0, 1.0, ribs_weight=-2.0)
    meta = replace(_meta(modality="CT"), label_confidence=fitted.to_json())
    plain = segment_with_predictor(_stored(spine.labels), oracle_for(spine, "up"), meta,
                                   SegmentConfig(count_from_ribs=False))
    taken = segment_with_predictor(_stored(spine.labels), oracle_for(spine, "up"), meta)
    assert [v.name for v in taken.vertebrae] == ["T10", "T11", "T12", "T13", "L1", "L2"]
    assert [v.own_label for v in taken.vertebrae] == [v.label for v in plain.vertebrae]
    assert [v.rib_label for v in taken.vertebrae] == [None] * 6 and taken.counted_from_ribs
    assert taken.ribs_end == anatomy.label_of("T13")
    before, after = sitk.GetArrayFromImage(plain.labels), sitk.GetArrayFromImage(taken.labels)
    for row, own in zip(taken.vertebrae, plain.vertebrae):  # the same voxels, renamed
        np.testing.assert_array_equal(after == row.label, before == own.label)
    steps = range(5, -1, -1)  # the ribs now end at the one named T13: no ribs term
    assert [v.label_confidence for v in taken.vertebrae] == pytest.approx([_sigmoid(s / 10) for s in steps])
    assert SegmentConfig().selection_record(meta)["label_count_from_ribs"] is True
    assert "label_count_from_ribs" not in SegmentConfig(count_from_ribs=False).selection_record(meta)
    assert "label_count_from_ribs" not in SegmentConfig().selection_record(replace(meta, modality="MR"))
    assert height_mm(_stored(spine.labels)) >= pipeline.OFFER_MIN_SCAN_MM  # tall enough for the ribs' reading
    monkeypatch.setattr(pipeline, "OFFER_MIN_SCAN_MM", height_mm(_stored(spine.labels)) + 1.0)
    short = segment_with_predictor(_stored(spine.labels), oracle_for(spine, "up"), meta)
    assert [v.label for v in short.vertebrae] == [v.label for v in plain.vertebrae] and not short.counted_from_ribs
    assert short.ribs_end == 20 and [v.rib_label for v in short.vertebrae] == [None] * 6
    with pytest.raises(ValueError, match="CT models only"):
        SegmentConfig(count_from_ribs=True).labeling_for(replace(meta, modality="MR"))


def test_a_run_that_reads_the_labels_otherwise_reports_the_share_of_the_sequences_instead():
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP, height=12, gap=4, z0=4)
    meta = replace(_meta(), label_confidence=ConfidenceCalibration(0.0, 0.0, 1.0).to_json())
    config = SegmentConfig(max_gaps=1)  # not the model's reading: the fit never saw such labels
    assert config.confidence_for(meta) is None and SegmentConfig().confidence_for(meta) is not None
    result = segment_with_predictor(_stored(spine.labels), oracle_for(spine, "up"), meta, config)
    shares = refine_labels([v.label_value for v in result.vertebrae], config.labeling_for(meta)).confidences
    assert [v.label_confidence for v in result.vertebrae] == pytest.approx(shares)


@pytest.mark.parametrize("config", [SegmentConfig(max_gaps=1), SegmentConfig(label_calibration=False, max_trimmed=1),
                                    SegmentConfig(max_spine_offset_mm=20.0), SegmentConfig(min_volume_ratio=0.5)])
def test_only_runs_that_pick_and_name_instances_as_the_model_does_use_the_fit(config):
    meta = replace(_meta(), label_confidence=ConfidenceCalibration(0.0, 0.0, 1.0).to_json())
    assert config.confidence_for(meta) is None
    same = SegmentConfig(max_gaps=0, max_trimmed=0, max_spine_offset_mm=0.0, min_volume_ratio=0.0, batch_size=1)
    assert same.confidence_for(meta) == meta.confidence()  # the model's own values, given explicitly


def test_segment_reports_the_fitted_probability_and_says_so(tmp_path):
    import json

    from model_factory import tiny_model
    from test_cli_segment import _ct, _run
    from vertebra_traversal.checkpoint import load_model, save_torchscript
    loaded = load_model(tiny_model(tmp_path / "tiny.pt"), device="cpu")
    fitted = ConfidenceCalibration(0.3, 1.0, -2.0, ribs_weight=-1.0)
    model = save_torchscript(loaded.module, replace(loaded.metadata, label_confidence=fitted.to_json()),
                             tmp_path / "fitted.pt")
    image = _ct(tmp_path / "scan_ct.nii.gz")
    for extra, expected in (([], True), (["--gaps", "1"], False)):
        out_dir = tmp_path / f"out{len(extra)}"
        run = _run(["segment", image, "-o", out_dir, "--model", model, "--device", "cpu"] + extra)
        assert run.returncode == 0, run.stderr
        report = json.loads((out_dir / "scan_ct_report.json").read_text())
        assert report["model"]["label_confidence_fitted"] is expected
    report = json.loads((tmp_path / "out0" / "scan_ct_report.json").read_text())
    rows = sorted(report["vertebrae"], key=lambda v: v["order"])
    assert rows, "the tiny model finds the bony column"
    assert "ribs_end" in report  # a CT run says where the ribs end (None: not in view)
    off = ribs_disagree(report["ribs_end"])
    expected = [fitted.probability(v["label_likelihood"], s, off)
                for v, s in zip(rows, steps_from_start(len(rows), "up"))]
    assert [v["label_confidence"] for v in rows] == pytest.approx(expected, abs=1e-3)

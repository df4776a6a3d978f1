"""`vertebra-traversal calibrate`: matching segment's outputs to a reference and writing a calibrated model."""
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from model_factory import tiny_model
from vertebra_traversal import anatomy, dataset
from vertebra_traversal.calibrate import calibrate_model
from vertebra_traversal.checkpoint import CheckpointError, read_metadata
from vertebra_traversal.imageio import InputError
from vertebra_traversal.segment_config import SegmentConfig

L = anatomy.label_of
CLI = [sys.executable, "-m", "vertebra_traversal.cli.main"]
# per case: reference vertebrae bottom-up as boxes along z, and the label value the "network" gave each
CASES = {"a": [("L3", 12.0), ("L2", 11.0), ("L1", 10.0)], "b": [("L2", 11.0), ("L1", 10.0), ("T12", 9.0)]}


def _image(array):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 2.0))
    return image


def _labels(names):
    array = np.zeros((26, 8, 8), np.uint8)
    for i, name in enumerate(names):  # axis 0 runs inferior -> superior: the first name is the lowest
        array[2 + 8 * i:8 + 8 * i, 1:7, 1:7] = L(name)
    return array


@pytest.fixture
def folders(tmp_path):
    model = tiny_model(tmp_path / "model.pt")
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    pred.mkdir()
    for case_id, rows in CASES.items():
        names = [n for n, _ in rows]
        records = [dataset.VertebraRecord(L(n), n, True, [0.0, 0.0, 0.0]) for n in names]
        info = dataset.CaseInfo(case_id, "ct", "vertebra", records)
        dataset.write_case(ref, info, _image(np.zeros((26, 8, 8), np.float32)), _image(_labels(names)))
        # the prediction: the same boxes, labelled wrongly by the paper's reading of the values
        wrong = ["C3", "C2", "C1"]
        sitk.WriteImage(_image(_labels(wrong)), str(pred / f"{case_id}_ct_seg-vert_msk.nii.gz"))
        vertebrae = [{"order": 3 - i, "label": L(w), "label_value": value, "complete": True}
                     for i, (w, (_, value)) in enumerate(zip(wrong, rows))]
        report = {"format": "vertebra-traversal-report", "version": 1, "model": {"path": str(model)},
                  "vertebrae": vertebrae}
        (pred / f"{case_id}_ct_report.json").write_text(json.dumps(report))
    return model, ref, pred


def test_calibration_is_fitted_on_matched_levels_and_written_as_a_new_model(folders, tmp_path):
    model, ref, pred = folders
    before = model.read_bytes()
    result = calibrate_model(model, pred, ref, tmp_path / "cal.pt", smoothing=0.3, sd_floor=0.3)
    table = read_metadata(tmp_path / "cal.pt").calibration()
    # T12 (19) -> 9, L1 (20) -> 10, L2 (21) -> 11, L3 (22) -> 12: the network answers y - 10
    assert [table.mean(y) for y in (19.0, 20.0, 21.0, 22.0)] == pytest.approx([9.0, 10.0, 11.0, 12.0], abs=0.01)
    assert (table.vertebrae, table.cases) == (6, 2)
    assert result.matched == 6 and result.identified_before == 0.0 and result.identified_after == 1.0
    assert model.read_bytes() == before  # the input model is untouched


def test_cli_prints_a_summary_and_never_overwrites(folders, tmp_path):
    model, ref, pred = folders
    args = CLI + ["calibrate", "--model", str(model), "--pred", str(pred), "--ref", str(ref),
                  "--smoothing", "0.3", "--sd-floor", "0.3", "--out"]
    out = subprocess.run(args + [str(tmp_path / "cal.pt")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["vertebrae"] == 6 and summary["identification_in_sample_after"] == 1.0
    (tmp_path / "mine.pt").write_bytes(b"user file")
    again = subprocess.run(args + [str(tmp_path / "mine.pt")], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert (tmp_path / "mine.pt").read_bytes() == b"user file"


def test_predictions_of_another_model_or_without_report_are_refused(folders, tmp_path):
    model, ref, pred = folders
    other = tiny_model(tmp_path / "other.pt", seed=1)
    with pytest.raises(InputError, match="a_ct_report.json: segmented with .*model.pt, not with .*other.pt"):
        calibrate_model(other, pred, ref, tmp_path / "cal.pt")
    (pred / "b_ct_report.json").unlink()
    with pytest.raises(InputError, match="no segment report for case b"):
        calibrate_model(model, pred, ref, tmp_path / "cal.pt")
    assert not (tmp_path / "cal.pt").exists()


def test_an_existing_output_is_refused_before_any_work(folders, tmp_path):
    model, ref, pred = folders
    (tmp_path / "cal.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="already exists"):
        calibrate_model(model, pred, ref, tmp_path / "cal.pt")


def test_gaussian_reading_needs_no_cases_and_the_options_are_exclusive(folders, tmp_path):
    model, ref, pred = folders
    base = CLI + ["calibrate", "--model", str(model)]
    out = subprocess.run(base + ["--gaussian", "1.5", "--out", str(tmp_path / "g.pt")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    table = read_metadata(tmp_path / "g.pt").calibration()
    assert table.mean(12.0) == 12.0 and set(table.sds) == {1.5}
    assert read_metadata(tmp_path / "g.pt").label_gaps() == {}
    out = subprocess.run(base + ["--gaussian", "1.5", "--gaps", "1", "--gap-penalty", "0.2", "--out",
                                 str(tmp_path / "gaps.pt")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert read_metadata(tmp_path / "gaps.pt").label_gaps() == {"max_gaps": 1, "gap_penalty": 0.2}
    for extra in (["--gaussian", "1.5", "--pred", str(pred), "--ref", str(ref)], ["--pred", str(pred)], [],
                  ["--gaussian", "0"], ["--gaussian", "1.5", "--sd-floor", "1"],
                  ["--gaussian", "1.5", "--smoothing", "2"], ["--gaussian", "1.5", "--gaps", "5"],
                  ["--gaussian", "1.5", "--gaps", "1", "--gap-penalty", "2"]):
        bad = subprocess.run(base + extra + ["--out", str(tmp_path / "h.pt")], capture_output=True, text=True,
                             timeout=120)
        assert bad.returncode == 2 and bad.stderr.count("error:") == 1, extra
    assert not (tmp_path / "h.pt").exists()


def test_keep_reading_writes_the_bottom_and_rib_anchors_and_keeps_them_until_told(folders, tmp_path):
    model = folders[0]
    base = CLI + ["calibrate", "--model"]
    made = subprocess.run(base + [str(model), "--gaussian", "1.5", "--bottom-anchor-mm", "10",
                                  "--out", str(tmp_path / "a.pt")], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert read_metadata(tmp_path / "a.pt").label_anchor() == {"bottom_anchor_mm": 10.0, "bottom_anchor_penalty": 1.0}
    assert json.loads(made.stdout)["anchor"] == {"bottom_anchor_mm": 10.0, "bottom_anchor_penalty": 1.0}
    kept = subprocess.run(base + [str(tmp_path / "a.pt"), "--keep-reading", "--gaps", "1", "--out",
                                  str(tmp_path / "b.pt")], capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0, kept.stderr  # the gaps added, the anchor kept
    assert read_metadata(tmp_path / "b.pt").label_sequence() == {
        "max_gaps": 1, "gap_penalty": 0.1, "bottom_anchor_mm": 10.0, "bottom_anchor_penalty": 1.0}
    removed = subprocess.run(base + [str(tmp_path / "b.pt"), "--keep-reading", "--bottom-anchor-mm", "0", "--out",
                                     str(tmp_path / "c.pt")], capture_output=True, text=True, timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert read_metadata(tmp_path / "c.pt").label_sequence() == {"max_gaps": 1, "gap_penalty": 0.1}
    alone = subprocess.run(base + [str(tmp_path / "a.pt"), "--keep-reading", "--bottom-anchor-penalty", "0.5",
                                   "--out", str(tmp_path / "d.pt")], capture_output=True, text=True, timeout=120)
    assert alone.returncode == 2 and "--bottom-anchor-penalty needs --bottom-anchor-mm" in alone.stderr
    assert not (tmp_path / "d.pt").exists()
    ribs = subprocess.run(base + [str(tmp_path / "c.pt"), "--keep-reading", "--rib-anchor", "on", "--out",
                                  str(tmp_path / "e.pt")], capture_output=True, text=True, timeout=120)
    assert ribs.returncode == 0, ribs.stderr  # the rib anchor added, the gaps kept
    assert read_metadata(tmp_path / "e.pt").label_sequence() == {
        "max_gaps": 1, "gap_penalty": 0.1, "rib_anchor": True, "rib_anchor_penalty": 1.0}
    assert json.loads(ribs.stdout)["ribs"] == {"rib_anchor": True, "rib_anchor_penalty": 1.0}
    off = subprocess.run(base + [str(tmp_path / "e.pt"), "--keep-reading", "--rib-anchor", "off", "--out",
                                 str(tmp_path / "f.pt")], capture_output=True, text=True, timeout=120)
    assert off.returncode == 0, off.stderr
    assert read_metadata(tmp_path / "f.pt").label_sequence() == {"max_gaps": 1, "gap_penalty": 0.1}


def test_keep_reading_writes_the_spacing_of_skipped_levels_and_keeps_it_until_told(folders, tmp_path):
    model = folders[0]
    base = CLI + ["calibrate", "--model"]
    made = subprocess.run(base + [str(model), "--gaussian", "1.5", "--gaps", "2", "--wide-ratio", "1.05",
                                  "--wide-penalties", "0.075", "0.05", "--out", str(tmp_path / "a.pt")],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    spacing = {"wide_ratio": 1.05, "wide_penalties": [0.075, 0.05]}
    assert read_metadata(tmp_path / "a.pt").label_calibration["spacing"] == spacing
    assert json.loads(made.stdout)["spacing"] == spacing
    kept = subprocess.run(base + [str(tmp_path / "a.pt"), "--keep-reading", "--trim-ends", "1", "--out",
                                  str(tmp_path / "b.pt")], capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0, kept.stderr  # the ends added, the spacing kept, read back as a pair
    assert read_metadata(tmp_path / "b.pt").label_sequence() == {
        "max_gaps": 2, "gap_penalty": 0.1, "max_trimmed": 1, "trim_penalty": 0.15, **spacing}
    assert SegmentConfig().labeling_for(read_metadata(tmp_path / "b.pt")).wide_penalties == (0.075, 0.05)
    removed = subprocess.run(base + [str(tmp_path / "b.pt"), "--keep-reading", "--wide-ratio", "0", "--out",
                                     str(tmp_path / "c.pt")], capture_output=True, text=True, timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert "spacing" not in read_metadata(tmp_path / "c.pt").label_calibration
    refused = (["--wide-penalties", "0.1", "0"], ["--wide-ratio", "0.5"],
               ["--wide-ratio", "2", "--wide-penalties", "0.1", "3"])
    for extra in refused:  # a price without its ratio, a ratio below 1, a price above 1
        bad = subprocess.run(base + [str(tmp_path / "a.pt"), "--keep-reading", *extra, "--out", str(tmp_path / "d.pt")],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and bad.stderr.count("error:") == 1 and "wide" in bad.stderr, extra
    assert not (tmp_path / "d.pt").exists()


def test_keep_reading_writes_only_the_skipped_levels_and_needs_a_reading(folders, tmp_path):
    model, ref, pred = folders
    base = CLI + ["calibrate", "--model"]
    made = subprocess.run(base + [str(model), "--gaussian", "1.5", "--out", str(tmp_path / "g.pt")],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    kept = subprocess.run(base + [str(tmp_path / "g.pt"), "--keep-reading", "--gaps", "1", "--gap-penalty", "0.15",
                                  "--out", str(tmp_path / "kept.pt")], capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0, kept.stderr
    before, after = read_metadata(tmp_path / "g.pt"), read_metadata(tmp_path / "kept.pt")
    assert after.calibration() == before.calibration()  # the reading itself is untouched
    assert after.label_gaps() == {"max_gaps": 1, "gap_penalty": 0.15}
    assert {k: v for k, v in after.label_calibration.items() if k != "gaps"} == before.label_calibration
    again = subprocess.run(base + [str(tmp_path / "kept.pt"), "--keep-reading", "--out", str(tmp_path / "again.pt")],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr  # without --gaps the model's own allowance stays
    assert read_metadata(tmp_path / "again.pt").label_gaps() == {"max_gaps": 1, "gap_penalty": 0.15}
    assert json.loads(again.stdout)["gaps"] == {"max_gaps": 1, "gap_penalty": 0.15}
    trimmed = subprocess.run(base + [str(tmp_path / "kept.pt"), "--keep-reading", "--trim-ends", "3",
                                     "--out", str(tmp_path / "trim.pt")], capture_output=True, text=True, timeout=120)
    assert trimmed.returncode == 0, trimmed.stderr  # the ends allowance added, the gaps kept
    assert read_metadata(tmp_path / "trim.pt").label_trim() == {"max_trimmed": 3, "trim_penalty": 0.15}
    assert read_metadata(tmp_path / "trim.pt").label_gaps() == {"max_gaps": 1, "gap_penalty": 0.15}
    assert json.loads(trimmed.stdout)["trim"] == {"max_trimmed": 3, "trim_penalty": 0.15}
    untrimmed = subprocess.run(base + [str(tmp_path / "trim.pt"), "--keep-reading", "--trim-ends", "0",
                                       "--out", str(tmp_path / "untrim.pt")], capture_output=True, text=True,
                               timeout=120)
    assert untrimmed.returncode == 0, untrimmed.stderr
    assert read_metadata(tmp_path / "untrim.pt").label_trim() == {}
    assert read_metadata(tmp_path / "untrim.pt").label_gaps() == {"max_gaps": 1, "gap_penalty": 0.15}
    removed = subprocess.run(base + [str(tmp_path / "kept.pt"), "--keep-reading", "--gaps", "0",
                                     "--out", str(tmp_path / "none.pt")], capture_output=True, text=True, timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert read_metadata(tmp_path / "none.pt").label_gaps() == {}
    assert read_metadata(tmp_path / "none.pt").surface_threshold_hu is None
    peel = subprocess.run(base + [str(tmp_path / "kept.pt"), "--keep-reading", "--gaps", "1", "--gap-penalty", "0.15",
                                  "--surface-threshold-hu", "100", "--out", str(tmp_path / "peel.pt")],
                          capture_output=True, text=True, timeout=120)
    assert peel.returncode == 0, peel.stderr
    assert read_metadata(tmp_path / "peel.pt").surface_threshold_hu == 100.0
    assert read_metadata(tmp_path / "peel.pt").edge_margin_mm == 0.0  # not given: the model's own kept
    assert read_metadata(tmp_path / "peel.pt").max_spine_offset_mm == 0.0
    assert read_metadata(tmp_path / "peel.pt").min_volume_ratio == 0.0
    margin = subprocess.run(base + [str(tmp_path / "peel.pt"), "--keep-reading", "--gaps", "1", "--gap-penalty",
                                    "0.15", "--edge-margin-mm", "2", "--edge-min-contact-mm2", "50",
                                    "--edge-margin-faces", "cranio-caudal", "--max-spine-offset-mm", "30",
                                    "--min-volume-ratio", "0.35", "--fragment-pieces", "largest",
                                    "--out", str(tmp_path / "margin.pt")],
                            capture_output=True, text=True, timeout=120)
    assert margin.returncode == 0, margin.stderr
    assert json.loads(margin.stdout)["edge_margin_mm"] == 2.0
    written = read_metadata(tmp_path / "margin.pt")
    assert (written.edge_margin_mm, written.edge_min_contact_mm2, written.surface_threshold_hu) == (2.0, 50.0, 100.0)
    assert written.edge_margin_faces == "cranio-caudal" and written.max_spine_offset_mm == 30.0
    assert written.min_volume_ratio == 0.35 and json.loads(margin.stdout)["min_volume_ratio"] == 0.35
    assert written.fragment_pieces == "largest" and json.loads(margin.stdout)["fragment_pieces"] == "largest"
    assert read_metadata(tmp_path / "peel.pt").label_calibration == after.label_calibration
    for extra, message in (([str(model), "--keep-reading"], "carries no label reading to keep"),
                           ([str(tmp_path / "g.pt"), "--keep-reading", "--gaussian", "1.5"], "give one of"),
                           ([str(tmp_path / "g.pt"), "--keep-reading", "--sd-floor", "1"], "fit none"),
                           ([str(tmp_path / "g.pt"), "--keep-reading", "--surface-threshold-hu", "5000"], "from -1024"),
                           ([str(tmp_path / "g.pt"), "--keep-reading", "--edge-margin-mm", "-1"], "--edge-margin-mm -1"),
                           ([str(tmp_path / "g.pt"), "--keep-reading", "--max-spine-offset-mm", "nan"],
                            "--max-spine-offset-mm nan"),
                           ([str(tmp_path / "g.pt"), "--keep-reading", "--min-volume-ratio", "1"],
                            "--min-volume-ratio 1.0"),
                           ([str(tmp_path / "g.pt"), "--keep-reading", "--gap-penalty", "0.2"], "needs --gaps"),
                           ([str(tmp_path / "g.pt"), "--keep-reading", "--trim-penalty", "0.2"], "needs --trim-ends"),
                           ([str(tmp_path / "g.pt"), "--keep-reading", "--trim-ends", "4"], "max_trimmed")):
        bad = subprocess.run(base + extra + ["--out", str(tmp_path / "h.pt")], capture_output=True, text=True,
                             timeout=120)
        assert bad.returncode == 2 and message in bad.stderr, (extra, bad.stderr)
    assert not (tmp_path / "h.pt").exists()


OWN_RUN = {"label_calibration": False, "label_gaps": 0, "label_trimmed": 0, "max_spine_offset_mm": 0.0,
           "min_volume_ratio": 0.0, "start_network_use": "off",
           "label_count_from_ribs": True}  # what a default segment run of tiny_model (CT) reports


def _confidence_folders(tmp_path, run=None, named_bottom_up=None, likelihoods=None, ribs=None):
    """Four cases of three boxes (L3, L2, L1 from the bottom). By default ``segment`` named every box right
    (likelihood 0.9) in cases a and c and one level too low (0.3) in b and d; ``named_bottom_up`` and
    ``likelihoods`` (bottom first) set the same for every case instead. Report rows are written top last, as
    a reader must not rely on their order. ``run``: the report's model settings (default :data:`OWN_RUN`);
    ``ribs``: where each case's report says the ribs end (by case id; None: reports from before the ribs)."""
    model = tiny_model(tmp_path / "model.pt")
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    pred.mkdir()
    truth = ["L3", "L2", "L1"]
    for case_id, right in (("a", True), ("b", False), ("c", True), ("d", False)):
        named = named_bottom_up or (truth if right else ["L4", "L3", "L2"])
        ps = likelihoods or [0.9 if right else 0.3] * 3
        records = [dataset.VertebraRecord(L(n), n, True, [0.0, 0.0, 0.0]) for n in truth]
        dataset.write_case(ref, dataset.CaseInfo(case_id, "ct", "vertebra", records),
                           _image(np.zeros((26, 8, 8), np.float32)), _image(_labels(truth)))
        sitk.WriteImage(_image(_labels(named)), str(pred / f"{case_id}_ct_seg-vert_msk.nii.gz"))
        vertebrae = [{"order": 3 - i, "label": L(n), "label_value": 20.0, "complete": True, "label_likelihood": p}
                     for i, (n, p) in enumerate(zip(named, ps))]  # i = 0 is the bottom box: order 3
        report = {"format": "vertebra-traversal-report", "version": 1,
                  "model": {"path": str(model), **(run or OWN_RUN)}, "vertebrae": vertebrae}
        if ribs is not None:
            report["ribs_end"] = ribs[case_id]
        (pred / f"{case_id}_ct_report.json").write_text(json.dumps(report))
    return model, ref, pred


def test_confidence_is_fitted_on_whether_each_label_was_right_and_nothing_else_changes(tmp_path):
    from vertebra_traversal.calibrate import confidence_model
    model, ref, pred = _confidence_folders(tmp_path)
    before = model.read_bytes()
    result = confidence_model(model, pred, ref, tmp_path / "conf.pt")
    fitted = read_metadata(tmp_path / "conf.pt")
    assert fitted.confidence() == result.confidence
    assert (result.confidence.vertebrae, result.confidence.cases, result.confidence.right) == (12, 4, 0.5)
    assert result.confidence.probability(0.9, 1) > 0.8 > 0.2 > result.confidence.probability(0.3, 1)
    assert result.auroc == 1.0 and result.brier < result.brier_constant == 0.25
    assert fitted.to_json() == {**read_metadata(model).to_json(), "label_confidence": fitted.label_confidence}
    assert model.read_bytes() == before


def test_a_ct_confidence_learns_the_ribs_where_the_reports_say_where_they_end(tmp_path, caplog):
    """Every label has the same likelihood; the two cases named one level too low end their ribs on L1 (20)."""
    from vertebra_traversal.calibrate import confidence_model
    ribs = {"a": 19, "b": 20, "c": None, "d": 20}
    model, ref, pred = _confidence_folders(tmp_path, likelihoods=[0.6] * 3, ribs=ribs)
    result = confidence_model(model, pred, ref, tmp_path / "ribs.pt")
    c = result.confidence
    assert c.ribs_weight < -2.0 and read_metadata(tmp_path / "ribs.pt").confidence() == c
    assert c.probability(0.6, 1, ribs_disagree=True) < 0.2 < 0.8 < c.probability(0.6, 1)
    assert result.auroc == 1.0
    older = tmp_path / "older"  # the same runs, reported before segment read the ribs
    model, ref, pred = _confidence_folders(older.mkdir() or older, likelihoods=[0.6] * 3)
    with caplog.at_level(logging.WARNING):
        result = confidence_model(model, pred, ref, older / "plain.pt")
    assert result.confidence.ribs_weight == 0.0 and result.auroc == 0.5 and "without ribs_end" in caplog.text


@pytest.mark.parametrize("bad", [99, "T12", True])
def test_a_report_whose_ribs_end_is_not_a_vertebra_is_refused_by_name(tmp_path, bad):
    from vertebra_traversal.calibrate import confidence_model
    model, ref, pred = _confidence_folders(tmp_path, ribs={"a": 19, "b": bad, "c": None, "d": 20})
    with pytest.raises(InputError, match=r"b_ct_report.json: ribs_end must be a vertebra's label id or null"):
        confidence_model(model, pred, ref, tmp_path / "ribs.pt")
    assert not (tmp_path / "ribs.pt").exists()


@pytest.mark.parametrize("direction", ["up", "down"])
def test_confidence_counts_steps_from_where_the_models_traversal_starts(tmp_path, direction):
    from dataclasses import replace

    from vertebra_traversal.calibrate import confidence_model
    from vertebra_traversal.checkpoint import load_model, save_torchscript
    # the two bottom boxes named right, the top one wrong, every likelihood alike: only the position tells
    model, ref, pred = _confidence_folders(tmp_path, named_bottom_up=["L3", "L2", "T12"], likelihoods=[0.6] * 3)
    loaded = load_model(model, device="cpu")
    turned = save_torchscript(loaded.module, replace(loaded.metadata, direction=direction), tmp_path / "turned.pt")
    for report in pred.glob("*_report.json"):  # made by the turned model
        report.write_text(report.read_text().replace(json.dumps(str(model)), json.dumps(str(turned))))
    weight = confidence_model(turned, pred, ref, tmp_path / "conf.pt").confidence.steps_weight
    assert weight < -1.0 if direction == "up" else weight > 1.0  # up: wrong far from the bottom; down: near the top


@pytest.mark.parametrize("run", [{**OWN_RUN, "label_gaps": 2}, {**OWN_RUN, "max_spine_offset_mm": 20.0},
                                 {**OWN_RUN, "min_volume_ratio": 0.5}, {"label_calibration": False},
                                 {**OWN_RUN, "label_penalties": {"gap_penalty": 0.3, "trim_penalty": 0.15}},
                                 {**OWN_RUN, "label_rib_anchor": True}, {**OWN_RUN, "label_count_from_ribs": None},
                                 {**OWN_RUN, "fragment_pieces": "largest"}])
def test_confidence_refuses_runs_that_picked_or_named_instances_otherwise(tmp_path, run):
    model, ref, pred = _confidence_folders(tmp_path, run)
    args = CLI + ["calibrate", "--model", str(model), "--pred", str(pred), "--ref", str(ref), "--confidence"]
    out = subprocess.run(args + ["--out", str(tmp_path / "c.pt")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "a_ct_report.json: instances picked and named with" in out.stderr
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.parametrize("extra", [["--gaps", "1"], ["--gap-penalty", "0.3"], ["--trim-penalty", "0.5"],
                                   ["--edge-margin-mm", "2"], ["--keep-reading"]])
def test_confidence_takes_no_other_setting(tmp_path, extra):
    model, ref, pred = _confidence_folders(tmp_path)
    out = subprocess.run(CLI + ["calibrate", "--model", str(model), "--pred", str(pred), "--ref", str(ref),
                                "--confidence", "--out", str(tmp_path / "c.pt")] + extra,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and f"takes no other setting ({extra[0]} given)" in out.stderr
    assert not (tmp_path / "c.pt").exists()


def test_confidence_refuses_reports_without_likelihoods_and_too_little_to_learn(tmp_path):
    from vertebra_traversal.calibrate import confidence_model
    model, ref, pred = _confidence_folders(tmp_path)
    report = pred / "b_ct_report.json"
    report.write_text(report.read_text().replace('"label_likelihood"', '"likelihood"'))
    with pytest.raises(InputError, match="b_ct_report.json: a vertebra without a finite label_likelihood"):
        confidence_model(model, pred, ref, tmp_path / "c.pt")
    right = tmp_path / "right"
    right.mkdir()
    model, ref, pred = _confidence_folders(right, named_bottom_up=["L3", "L2", "L1"])
    with pytest.raises(InputError, match="all 12 labels were right"):
        confidence_model(model, pred, ref, right / "c.pt")
    assert not (tmp_path / "c.pt").exists() and not (right / "c.pt").exists()


def test_confidence_from_the_command_line_and_a_new_reading_drops_it(tmp_path):
    from vertebra_traversal.calibrate import gaussian_model, regapped_model
    model, ref, pred = _confidence_folders(tmp_path)
    out = subprocess.run(CLI + ["calibrate", "--model", str(model), "--pred", str(pred), "--ref", str(ref),
                                "--confidence", "--out", str(tmp_path / "c.pt")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["vertebrae"] == 12 and summary["right"] == 0.5 and summary["auroc_in_sample"] == 1.0
    assert read_metadata(tmp_path / "c.pt").confidence() is not None
    gaussian_model(tmp_path / "c.pt", 1.25, tmp_path / "g.pt")  # labels read anew: the old fit no longer holds
    assert read_metadata(tmp_path / "g.pt").confidence() is None
    from dataclasses import replace

    from vertebra_traversal.checkpoint import load_model, save_torchscript
    fitted = load_model(tmp_path / "c.pt", device="cpu")  # a reading and a confidence: --keep-reading drops it too
    both = save_torchscript(fitted.module, replace(fitted.metadata, label_calibration=read_metadata(
        tmp_path / "g.pt").label_calibration), tmp_path / "both.pt")
    regapped_model(both, tmp_path / "k.pt", {"max_gaps": 1, "gap_penalty": 0.1})
    assert read_metadata(both).confidence() is not None and read_metadata(tmp_path / "k.pt").confidence() is None


def test_keep_reading_writes_the_reversal_and_keeps_it_until_told(folders, tmp_path):
    model = folders[0]
    base = CLI + ["calibrate", "--model"]
    made = subprocess.run(base + [str(model), "--gaussian", "1.5", "--reversal-levels", "6", "--out",
                                  str(tmp_path / "a.pt")], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    reversal = {"reversal_levels": 6.0, "reversal_penalty": 0.05}  # the price's default
    assert read_metadata(tmp_path / "a.pt").label_calibration["reversal"] == reversal
    assert json.loads(made.stdout)["reversal"] == reversal
    assert SegmentConfig().labeling_for(read_metadata(tmp_path / "a.pt")).reversal_levels == 6.0
    removed = subprocess.run(base + [str(tmp_path / "a.pt"), "--keep-reading", "--reversal-levels", "0", "--out",
                                     str(tmp_path / "b.pt")], capture_output=True, text=True, timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert "reversal" not in read_metadata(tmp_path / "b.pt").label_calibration
    for extra in (["--reversal-penalty", "0.1"], ["--reversal-levels", "-2"]):  # a price alone, a negative fall
        bad = subprocess.run(base + [str(tmp_path / "a.pt"), "--keep-reading", *extra, "--out", str(tmp_path / "c.pt")],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and bad.stderr.count("error:") == 1 and "reversal" in bad.stderr, extra
    assert not (tmp_path / "c.pt").exists()

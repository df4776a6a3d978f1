"""Tests for vertebra_traversal.evaluate and the `evaluate` command (paper §4.2, Table 1)."""
import argparse
import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from sklearn.metrics import cohen_kappa_score

from vertebra_traversal import anatomy, dataset, evaluate, metrics
from vertebra_traversal.cli import evaluate as cli_evaluate
from vertebra_traversal.imageio import InputError

L = anatomy.label_of
SPACING_XYZ = (1.0, 1.0, 2.0)  # anisotropic, so that a (z, y, x) / (x, y, z) mix-up changes ASSD


def _image(array):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin((5.0, -3.0, 10.0))
    return image


def _boxes(shape, boxes):
    array = np.zeros(shape, np.uint8)
    for label, z0, z1 in boxes:
        array[z0:z1, 1:7, 1:7] = label
    return array


REF = {"c1": ("A", [(L("L1"), 2, 8, False), (L("L2"), 10, 16, True), (L("L3"), 18, 24, True)]),
       "c2": ("B", [(L("T12"), 2, 8, True), (L("L1"), 10, 16, True)])}


@pytest.fixture
def reference(tmp_path):
    root = tmp_path / "ref"
    for case_id, (group, boxes) in REF.items():
        labels = _image(_boxes((26, 8, 8), [(l, a, b) for l, a, b, _ in boxes]))
        records = [dataset.VertebraRecord(l, anatomy.name_of(l), c, [0.0, 0.0, 0.0]) for l, _, _, c in boxes]
        info = dataset.CaseInfo(case_id, "ct", "vertebra", records, {"group": group})
        image = _image(np.random.default_rng(0).normal(size=(26, 8, 8)).astype(np.float32))
        dataset.write_case(root, info, image, labels)
    return root


def _write_segment_outputs(folder, c2_name="c2_ct"):
    """c1: identification offset by one below L1, report with completeness; c2 (named like `segment` run on
    rawdata/c2/c2_ct.nii.gz): T12 exact, L1 shifted one slice, an extra L5 instance, no report."""
    folder.mkdir(parents=True, exist_ok=True)
    c1 = _boxes((26, 8, 8), [(L("L1"), 2, 8), (L("L3"), 10, 16), (L("L4"), 18, 24)])
    sitk.WriteImage(_image(c1), str(folder / "c1_seg-vert_msk.nii.gz"))
    report = {"format": "vertebra-traversal-report", "version": 1, "vertebrae": [
        {"label": L("L1"), "complete": True}, {"label": L("L3"), "complete": True},
        {"label": L("L4"), "complete": False}]}
    (folder / "c1_report.json").write_text(json.dumps(report))
    c2 = _boxes((26, 8, 8), [(L("T12"), 2, 8), (L("L1"), 11, 17)])
    c2[20:22, 0, 0] = L("L5")
    sitk.WriteImage(_image(c2), str(folder / f"{c2_name}_seg-vert_msk.nii.gz"))
    return c2


def test_reference_against_itself_is_perfect(reference):
    result = evaluate.evaluate_folders(reference, reference)
    assert [c.score.case_id for c in result.cases] == ["c1", "c2"]
    rows = {s.group: s for s in result.summaries()}
    assert set(rows) == {"A", "B", "overall"}
    overall = rows["overall"]
    assert overall.scans == 2 and overall.vertebrae == 4  # c1's L1 is incomplete
    assert overall.dice_mean == 1.0 and overall.assd_mean == 0.0 and overall.kappa == pytest.approx(1.0)
    assert overall.identification_accuracy == 1.0 and overall.completeness_accuracy == 1.0
    assert overall.fp_per_scan == 0.0 and overall.missed == 0 and overall.false_detections == 0


def test_segment_outputs_scored_per_group(reference, tmp_path):
    c2_pred = _write_segment_outputs(tmp_path / "pred")
    result = evaluate.evaluate_folders(tmp_path / "pred", reference)
    rows = {s.group: s for s in result.summaries(complete_only=True)}
    a, b = rows["A"], rows["B"]
    assert a.vertebrae == 2 and a.dice_mean == 1.0 and a.identification_accuracy == 0.0
    doubled = lambda ids: [int(2 * anatomy.vertebra(i).rank) for i in ids]  # noqa: E731
    categories = sorted(int(2 * v.rank) for v in anatomy.STANDARD)
    expected_kappa = cohen_kappa_score(doubled([L("L2"), L("L3")]), doubled([L("L3"), L("L4")]),
                                       labels=categories, weights="linear")
    assert a.kappa == pytest.approx(expected_kappa)
    # L1 (incomplete -> complete) FP, L2 right, L3 (complete -> incomplete) FN
    assert a.completeness_accuracy == pytest.approx(1 / 3) and a.fp_per_scan == 1.0 and a.fn_per_scan == 1.0
    assert b.dice_mean == pytest.approx(np.mean([1.0, 10 / 12]))
    assert b.dice_sd == pytest.approx(np.std([1.0, 10 / 12], ddof=1))
    ref_c2 = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset.CaseFiles(reference, "c2", "ct").labels)))
    assd_l1 = metrics.assd(ref_c2 == L("L1"), c2_pred == L("L1"), (2.0, 1.0, 1.0))
    assert assd_l1 != pytest.approx(metrics.assd(ref_c2 == L("L1"), c2_pred == L("L1"), (1.0, 1.0, 2.0)))
    assert b.assd_mean == pytest.approx(assd_l1 / 2)  # T12 is exact
    assert b.identification_accuracy == 1.0 and b.false_detections == 1
    assert math.isnan(b.completeness_accuracy) and math.isnan(b.fp_per_scan)  # no report for c2
    assert rows["overall"].fp_per_scan == 1.0  # only c1 has completeness
    all_rows = {s.group: s for s in result.summaries(complete_only=False)}
    assert all_rows["A"].vertebrae == 3 and all_rows["A"].identification_accuracy == pytest.approx(1 / 3)


def test_region_rows_pool_the_vertebrae_of_each_spine_region(reference, tmp_path):
    _write_segment_outputs(tmp_path / "pred")
    result = evaluate.evaluate_folders(tmp_path / "pred", reference)
    rows = {s.group: s for s in result.region_summaries(complete_only=True)}
    assert list(rows) == ["thoracic", "lumbar"]  # no cervical vertebra in the reference
    thoracic, lumbar = rows["thoracic"], rows["lumbar"]  # T12 of c2; L2, L3 of c1 and L1 of c2
    assert (thoracic.scans, thoracic.vertebrae, thoracic.dice_mean) == (1, 1, 1.0)
    assert thoracic.identification_accuracy == 1.0
    assert (lumbar.scans, lumbar.vertebrae) == (2, 3)
    assert lumbar.dice_mean == pytest.approx(np.mean([1.0, 1.0, 10 / 12]))
    assert lumbar.identification_accuracy == pytest.approx(1 / 3) and lumbar.false_detections == 0
    assert {s.group: s.vertebrae for s in result.region_summaries(complete_only=False)}["lumbar"] == 4
    table = evaluate.format_region_table(result).splitlines()
    assert table[1].split() == ["Region", "Scans", "Vertebrae", "Dice", "(%)", "ASSD", "(mm)", "Id.", "acc.", "(%)",
                                "κ", "Compl.", "acc.", "(%)", "Missed"]
    assert table[3].split()[:5] == ["thoracic", "1", "1", "100.0", "±"] and table[4].startswith("lumbar")


def test_region_rows_keep_scans_whose_region_vertebrae_are_all_cut_off():
    """Completeness counts every matched vertebra: scan A shows only a cut-off C7 (called complete, a
    completeness FP) in the cervical region; it must stay in the cervical row."""
    def score(label, ref_complete, pred_complete=True, dice=0.8):
        return metrics.VertebraScore(label, label, dice, 1.0, ref_complete, pred_complete)

    a = metrics.CaseScore("A", [score(L("C7"), False), score(L("T1"), True)], 0)
    b = metrics.CaseScore("B", [score(L("C6"), True), score(L("C7"), True)], 0)
    result = evaluate.EvaluationResult([evaluate.EvaluatedCase(c, "all", None) for c in (a, b)])
    cervical = result.region_summaries(complete_only=True)[0]
    assert cervical.group == "cervical" and (cervical.scans, cervical.vertebrae) == (2, 2)
    assert cervical.completeness_accuracy == pytest.approx(2 / 3) and cervical.fp_per_scan == 0.5


def test_missing_prediction_is_refused_or_counted(reference, tmp_path):
    pred = tmp_path / "pred"
    _write_segment_outputs(pred)
    (pred / "c2_ct_seg-vert_msk.nii.gz").unlink()
    with pytest.raises(InputError, match="c2"):
        evaluate.evaluate_folders(pred, reference)
    result = evaluate.evaluate_folders(pred, reference, evaluate.EvaluationOptions(allow_missing=True))
    missed = [c for c in result.cases if c.score.case_id == "c2"][0]
    assert missed.prediction is None and missed.score.missed == 2 and missed.score.mean_dice == 0.0


def test_prediction_on_another_grid_is_refused(reference, tmp_path):
    pred = tmp_path / "pred"
    _write_segment_outputs(pred)
    shifted = sitk.ReadImage(str(pred / "c1_seg-vert_msk.nii.gz"))
    shifted.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(shifted, str(pred / "c1_seg-vert_msk.nii.gz"))
    with pytest.raises(InputError, match=r"c1_seg-vert_msk\.nii\.gz.*differs from the reference"):
        evaluate.evaluate_folders(pred, reference)


def test_bad_report_is_named(reference, tmp_path):
    pred = tmp_path / "pred"
    _write_segment_outputs(pred)
    (pred / "c1_report.json").write_text('{"vertebrae": [{"label": 20, "complete": true}]}')
    with pytest.raises(InputError, match="c1_report.json: not a vertebra-traversal-report report"):
        evaluate.evaluate_folders(pred, reference)
    (pred / "c1_report.json").write_text('{"format": "vertebra-traversal-report", "vertebrae": [{"label": 20}]}')
    with pytest.raises(InputError, match="c1_report.json: cannot read completeness from report"):
        evaluate.evaluate_folders(pred, reference)


def test_results_written_atomically_and_not_overwritten(reference, tmp_path):
    _write_segment_outputs(tmp_path / "pred")
    result = evaluate.evaluate_folders(tmp_path / "pred", reference)
    out = tmp_path / "out"
    paths = evaluate.write_results(result, out)
    assert sorted(p.name for p in out.iterdir()) == ["per_vertebra.csv", "summary.json"]  # no temp files
    rows = list(csv.DictReader(paths[0].open()))
    assert len(rows) == 5 and {r["case"] for r in rows} == {"c1", "c2"}
    l2 = [r for r in rows if r["case"] == "c1" and r["name"] == "L2"][0]
    assert l2["pred_name"] == "L3" and l2["identified"] == "False" and float(l2["dice"]) == 1.0
    summary = json.loads(paths[1].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    groups = {g["group"]: g for g in summary["groups_complete_vertebrae"]}
    assert groups["B"]["completeness_accuracy"] is None and groups["A"]["fp_per_scan"] == 1.0
    before = paths[1].read_bytes()
    with pytest.raises(InputError, match="overwrit"):
        evaluate.write_results(result, out)
    assert paths[1].read_bytes() == before
    evaluate.write_results(result, out, overwrite=True)


def test_format_table_has_table1_columns(reference):
    table = evaluate.format_table(evaluate.evaluate_folders(reference, reference))
    for heading in ("Dice (%)", "ASSD (mm)", "κ", "FP / scan", "FN / scan"):
        assert heading in table
    lines = table.splitlines()
    assert any(line.startswith("A ") and "100.0 ± 0.0" in line for line in lines)
    assert any(line.startswith("overall") for line in lines)


def _run_cli(argv):
    """Parse and run through the subcommand module alone (cli.main adds only the InputError -> exit 2 rule)."""
    parser = argparse.ArgumentParser()
    cli_evaluate.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_command_line(reference, tmp_path, capsys):
    _write_segment_outputs(tmp_path / "pred")
    out = tmp_path / "out"
    argv = ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(reference), "--out", str(out)]
    assert _run_cli(argv) == 0
    captured = capsys.readouterr()
    assert "Dice (%)" in captured.out and "all reference vertebrae" in captured.out
    assert any(line.startswith("lumbar ") for line in captured.out.splitlines())
    assert (out / "summary.json").exists() and "summary.json" in captured.err
    regions = json.loads((out / "summary.json").read_text())["regions_complete_vertebrae"]
    assert [(r["group"], r["vertebrae"]) for r in regions] == [("thoracic", 1), ("lumbar", 3)]
    with pytest.raises(InputError, match="--overwrite"):
        _run_cli(argv)
    assert _run_cli(argv + ["--overwrite"]) == 0
    (tmp_path / "pred" / "c1_seg-vert_msk.nii.gz").unlink()
    with pytest.raises(InputError, match="c1"):
        _run_cli(argv + ["--overwrite"])
    assert _run_cli(argv + ["--overwrite", "--allow-missing"]) == 0

"""The demo's per-vertebra table on a result with exactly known scores."""
import SimpleITK as sitk

from test_outputs import _result
from vertebra_traversal.cli.demo import table
from vertebra_traversal.metrics import score_case


def test_table_lists_flags_edge_and_agreement_with_the_truth():
    result = _result()  # T12 complete, inside; L1 flagged incomplete, at the scan edge
    labels = sitk.GetArrayFromImage(result.labels)
    score = score_case(labels, labels, result.labels.GetSpacing()[::-1], {19: True, 20: False},
                       {19: True, 20: False})
    lines = table(result, score, ["T12", "L1*"]).splitlines()
    assert lines[0].split() == ["vertebra", "complete", "p(compl.)", "at", "edge", "label", "p", "conf.", "volume",
                                "mL", "truth", "Dice", "%", "ASSD", "mm"]
    assert lines[1].split()[:4] + lines[1].split()[7:] == ["T12", "yes", "0.93", "no", "T12", "100.0", "0.00"]
    assert lines[2].split()[:4] + lines[2].split()[7:] == ["L1", "NO", "0.12", "yes", "L1", "100.0", "0.00"]
    assert [line.split()[5] for line in lines[1:3]] == [f"{v.label_confidence:.2f}" for v in result.vertebrae]
    assert lines[3] == "ground truth: T12, L1*"
    assert lines[4] == "mean Dice 100.0 %, mean ASSD 0.00 mm, identification 100 %, completeness 100 %"


def test_an_instance_matched_by_two_reference_vertebrae_shows_the_one_it_agrees_with_best():
    result = _result()
    pred = sitk.GetArrayFromImage(result.labels)
    ref = pred.copy()
    ref[8:10, 4:10, 3:9] = 21  # a reference L2 that only the predicted L1 touches (72 voxels)
    pred[8:10, 4:10, 3:9] = 20  # the predicted L1 (216 + 72 voxels) covers the true L1 and that L2
    score = score_case(ref, pred, result.labels.GetSpacing()[::-1])
    assert sorted((v.label, v.pred_label) for v in score.vertebrae) == [(19, 19), (20, 20), (21, 20)]
    lines = table(result, score, ["T12", "L1", "L2"]).splitlines()
    row = lines[2].split()
    assert row[0] == "L1" and row[7:9] == ["L1", f"{100 * 2 * 216 / (216 + 288):.1f}"]
    assert lines[4] == f"without an instance of their own: L2 (in the instance named L1, Dice {100 * 2 * 72 / (72 + 288):.1f} %)"


def test_a_true_vertebra_nobody_segmented_is_listed_as_not_found():
    result = _result()
    pred = sitk.GetArrayFromImage(result.labels)
    ref = pred.copy()
    ref[17:19, 4:10, 3:9] = 18  # a true T11 where the prediction has nothing
    lines = table(result, score_case(ref, pred, result.labels.GetSpacing()[::-1]), ["T11", "T12", "L1"]).splitlines()
    assert lines[4] == "without an instance of their own: T11 (not found)"

"""Engine report -> a table node a reader checks first: one row per vertebra, top first."""
import json

import pytest
import slicer
from slicer_testing import add_volume, ct_array, label_array, write_engine_outputs
from VertebraTraversalLib import results

from vertebra_traversal.imageio import InputError


def _cells(table):
    data = table.GetTable()
    return [[data.GetValue(r, c).ToString() for c in range(data.GetNumberOfColumns())]
            for r in range(data.GetNumberOfRows())]


def test_one_row_per_vertebra_top_first_with_flags_confidence_volume_and_ras_centroid(mrml, tmp_path):
    volume = add_volume(mrml.scene, ct_array())
    out = write_engine_outputs(tmp_path / "out")
    report = json.loads(out["report"].read_text())
    report["vertebrae"][1].update(volume_mm3=48250.0, centroid_lps_mm=[12.5, -30.0, 101.25], label_confidence=0.875)
    out["report"].write_text(json.dumps(report))
    table = results.build_results_table(mrml.scene, volume, out["report"])
    titles = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert titles == [title for title, _, _ in results.COLUMNS]
    assert [table.GetColumnTitle(t) for t in titles] == titles and table.GetUseColumnTitleAsColumnHeader()
    rows = _cells(table)
    assert [r[0] for r in rows] == ["T12", "L1", "L2"]
    assert rows[1] == ["L1", "yes", "no", "0.88", "", "", "0.75", "0.90", "48.2", "-12.5", "30.0", "101.2"]
    assert rows[2][:3] == ["L2", "no", "yes"]  # cut by the scan's border, flagged incomplete
    assert table.GetName() == "ct vertebrae table" and table.GetLocked()


def test_rows_follow_the_reports_order_and_a_bad_report_adds_no_node(mrml, tmp_path):
    volume = add_volume(mrml.scene, ct_array())
    out = write_engine_outputs(tmp_path / "out")
    report = json.loads(out["report"].read_text())
    for entry, order in zip(report["vertebrae"], (3, 1, 2)):
        entry["order"] = order
    out["report"].write_text(json.dumps(report))
    assert [r[0] for r in results.result_rows({e["label"]: e for e in report["vertebrae"]})] == ["L1", "L2", "T12"]
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    before = mrml.node_ids()
    with pytest.raises(InputError, match="bad.json"):
        results.build_results_table(mrml.scene, volume, tmp_path / "bad.json")
    assert mrml.node_ids() == before


def test_the_table_goes_beside_the_volume_in_its_study(mrml, tmp_path):
    volume = add_volume(mrml.scene, ct_array())
    shnode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    study = shnode.CreateStudyItem(shnode.CreateSubjectItem(shnode.GetSceneItemID(), "Patient"), "Study")
    shnode.CreateItem(study, volume)
    table = results.build_results_table(mrml.scene, volume, write_engine_outputs(tmp_path / "out")["report"])
    assert shnode.GetItemParent(shnode.GetItemByDataNode(table)) == study


@pytest.mark.parametrize("flag, fitted", [(True, True), (False, False), (None, False)])
def test_the_confidence_column_says_whether_it_is_a_fitted_probability(mrml, tmp_path, flag, fitted):
    volume = add_volume(mrml.scene, ct_array())
    out = write_engine_outputs(tmp_path / "out")
    report = json.loads(out["report"].read_text())
    report.setdefault("model", {}).pop("label_confidence_fitted", None)
    if flag is not None:  # None: a report from before the fitted confidence existed
        report["model"]["label_confidence_fitted"] = flag
    out["report"].write_text(json.dumps(report))
    table = results.build_results_table(mrml.scene, volume, out["report"])
    description = table.GetColumnDescription(results.CONFIDENCE_TITLE)
    assert description == results.CONFIDENCE_MEANINGS[fitted]
    assert description.startswith("The probability" if fitted else "The share of the plausible")


@pytest.mark.parametrize("ribs_end, marked", [(20, ["", "yes", ""]), (19, ["yes", "", ""]), (None, ["", "", ""])])
def test_the_vertebra_where_the_ribs_end_is_marked_and_the_column_says_what_that_means(mrml, tmp_path, ribs_end,
                                                                                        marked):
    volume = add_volume(mrml.scene, ct_array())
    out = write_engine_outputs(tmp_path / "out")
    report = json.loads(out["report"].read_text())
    report["ribs_end"] = ribs_end  # 20: the ribs end at the vertebra named L1, the labels are likely one level off
    out["report"].write_text(json.dumps(report))
    table = results.build_results_table(mrml.scene, volume, out["report"])
    column = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())].index(results.RIBS_TITLE)
    rows = _cells(table)
    assert [r[0] for r in rows] == ["T12", "L1", "L2"] and [r[column] for r in rows] == marked
    assert table.GetColumnDescription(results.RIBS_TITLE) == results.RIBS_MEANING


def test_a_ribs_end_that_is_no_vertebra_id_marks_no_row(mrml, tmp_path):
    """A hand-edited ``true`` equals 1 in Python, C1's id: it must not mark the C1 row."""
    volume = add_volume(mrml.scene, ct_array())
    labels = label_array()
    labels[labels == labels.max()] = 1  # the lowest vertebra becomes C1, so a C1 row exists
    out = write_engine_outputs(tmp_path / "out", labels)
    report = json.loads(out["report"].read_text())
    report["ribs_end"] = True
    out["report"].write_text(json.dumps(report))
    table = results.build_results_table(mrml.scene, volume, out["report"])
    column = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())].index(results.RIBS_TITLE)
    rows = _cells(table)
    assert "C1" in [r[0] for r in rows] and [r[column] for r in rows] == ["", "", ""]


@pytest.mark.parametrize("readings, shown", [(dict(rib_labels=(18, 19, 20)), ["T11", "T12", "L1"]),
                                             (dict(own_labels=(18, 19, 20)), ["T11", "T12", "L1"]),
                                             (dict(rib_labels=(None,) * 3, own_labels=(None,) * 3), ["", "", ""]),
                                             (dict(rib_labels=("T11", True, 99)), ["", "", ""])])
def test_the_other_reading_stands_beside_the_labels_and_the_column_says_what_it_is(mrml, tmp_path, readings, shown):
    """Offered counted from the ribs (rib_label) or set aside by a run that counted from them (own_label); a
    hand-edited report's strings, booleans and unknown ids show nothing."""
    volume = add_volume(mrml.scene, ct_array())
    out = write_engine_outputs(tmp_path / "out", **readings)
    table = results.build_results_table(mrml.scene, volume, out["report"])
    column = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())].index(results.OTHER_TITLE)
    assert [r[column] for r in _cells(table)] == shown
    assert table.GetColumnDescription(results.OTHER_TITLE) == results.OTHER_MEANING

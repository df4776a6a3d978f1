"""The engine's report as a table node: one row per vertebra, top first, with what a reader checks first.

The segmentation node carries the same values as segment tags (:mod:`.segmentation`), which the Segment
Editor does not show; the table puts the label confidence (for the bundled CT model the probability that
the label is right, fitted on phantoms; docs/ARCHITECTURE.md), the vertebra where the ribs end (CT), the
completeness flag (§3.5) and its reason side by side, so that a low confidence, ribs that end off T12 or a
vertebra at the scan's edge is seen before the labels are trusted; where a run read its labels two ways
(counted from the ribs, or by its own values), the other reading stands beside them
(:func:`.segmentation.switch_reading` switches the segments to it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import slicer
import vtk

from vertebra_traversal import anatomy
from vertebra_traversal.formats import REPORT_FORMAT
from vertebra_traversal.imageio import PathLike, read_json_document

from .events import lps_to_ras
from .segmentation import place_in_subject_hierarchy, report_entries


CONFIDENCE_TITLE = "Label confidence"
RIBS_TITLE = "Ribs end here"
OTHER_TITLE = "Other reading"
#: (column title, report field, kind): kind ``"text"``, ``"flag"`` (yes / no), ``"mark"`` (yes / blank) or a
#: number format.
COLUMNS: Tuple[Tuple[str, str, str], ...] = (
    ("Vertebra", "name", "text"),
    ("Complete", "complete", "flag"),
    ("At scan edge", "at_scan_edge", "flag"),
    (CONFIDENCE_TITLE, "label_confidence", "{:.2f}"),
    (RIBS_TITLE, "ribs_end_here", "mark"),
    (OTHER_TITLE, "other_label", "name"),
    ("Label likelihood", "label_likelihood", "{:.2f}"),
    ("Completeness probability", "completeness_probability", "{:.2f}"),
    ("Volume (mL)", "volume_mm3", "mL"),
    ("Centroid R (mm)", "centroid_lps_mm", "R"),
    ("Centroid A (mm)", "centroid_lps_mm", "A"),
    ("Centroid S (mm)", "centroid_lps_mm", "S"),
)


#: What the ``Label confidence`` column holds (its description, which Slicer's table view shows as the
#: tooltip of the column's cells): the report's
#: ``model.label_confidence_fitted`` says which (absent in reports from before the fitted one existed).
CONFIDENCE_MEANINGS = {
    True: "The probability that this label is right, fitted on scans the model segmented whose labels were "
          "known (for a CT model, lower in a scan whose ribs end at a vertebra not named T12 or T13); its model "
          "card says how well it held on new scans. Check every label.",
    False: "The share of the plausible label sequences that agree with this label (the model carries no "
           "fitted confidence); its model card says how often such labels were right. Check every label.",
}


#: The ``Ribs end here`` column's description: the report's ``ribs_end`` (CT), the vertebra that the ribs
#: show to be the last thoracic one.
RIBS_MEANING = ("The vertebra the ribs show to be the last thoracic one (CT; blank everywhere where the end of "
                "the ribs is not in view). Where it is not the one named T12 (or T13), the labels of the whole "
                "run are likely shifted.")

#: The ``Other reading`` column's description: the report's ``own_label`` or ``rib_label`` (CT).
OTHER_MEANING = ("In a CT scan at least 350 mm tall whose ribs end at a vertebra the network's values do not name "
                 "T12 or T13, the labels are counted from the ribs (that vertebra is the last thoracic one) and "
                 "this column holds each vertebra's label by the network's own values (a run with "
                 "--count-from-ribs off: the other way round); blank elsewhere. On new phantoms counting from the "
                 "ribs named 60-81 % of such scans' vertebrae right, the network's values 49-50 %; a rib on L1, a "
                 "short twelfth rib or a scapula hiding ribs mislead the count. Use the other reading switches "
                 "the segments' names.")


def _cell(entry: Mapping[str, Any], field: str, kind: str) -> str:
    value = entry.get(field)
    if value is None:
        return ""
    if kind == "text":
        return str(value)
    if kind == "flag":
        return "yes" if value else "no"
    if kind == "mark":
        return "yes" if value else ""
    if kind == "name":
        label = anatomy.as_label(value)
        return "" if label is None else anatomy.name_of(label)
    if kind == "mL":
        return f"{float(value) / 1000.0:.1f}"
    if kind in ("R", "A", "S"):
        return f"{lps_to_ras(value)['RAS'.index(kind)]:.1f}"
    return kind.format(float(value))


def result_rows(report: Mapping[int, Mapping[str, Any]], ribs_end: Optional[int] = None) -> List[List[str]]:
    """The table's rows (strings, in :data:`COLUMNS` order) for report entries by label id, top first
    (the report's ``order``, else the anatomical rank); ``ribs_end``: the report's label id of the vertebra
    where the ribs end, marked in its row."""
    def position(label: int) -> Tuple[float, float]:
        return (float(report[label].get("order", 0)), float(anatomy.vertebra(label).rank))
    rows = []
    for label in sorted(report, key=position):
        entry = dict(report[label], name=report[label].get("name") or anatomy.name_of(label),
                     ribs_end_here=label == ribs_end,
                     other_label=report[label].get("rib_label") or report[label].get("own_label"))
        rows.append([_cell(entry, field, kind) for _, field, kind in COLUMNS])
    return rows


def build_results_table(scene: "slicer.vtkMRMLScene", volume_node: "slicer.vtkMRMLVolumeNode",
                        report_path: PathLike, name: Optional[str] = None) -> "slicer.vtkMRMLTableNode":
    """A table node of the engine's report ``<stem>_report.json`` for the vertebrae of ``volume_node``.

    Args:
        scene: the MRML scene.
        volume_node: the segmented volume; the table goes beside it in the subject hierarchy.
        report_path: the engine's report.
        name: node name (default ``"<volume> vertebrae table"``, made unique).

    Returns:
        The table node: the columns of :data:`COLUMNS` (centroids in RAS mm), one row per vertebra; the
        confidence column's description (:data:`CONFIDENCE_MEANINGS`) says what its numbers are, the ribs
        column's (:data:`RIBS_MEANING`) what its mark means.

    Raises:
        InputError: the report cannot be read (no node is added then).
    """
    report = read_json_document(Path(report_path), REPORT_FORMAT, "file")
    rows = result_rows(report_entries(report, report_path), anatomy.as_label(report.get("ribs_end")))
    model = report.get("model")
    fitted = bool(model.get("label_confidence_fitted")) if isinstance(model, Mapping) else False
    table = scene.AddNewNodeByClass("vtkMRMLTableNode",
                                    scene.GenerateUniqueName(name or f"{volume_node.GetName()} vertebrae table"))
    try:
        _fill(table, [title for title, _, _ in COLUMNS], rows)
        table.SetColumnDescription(CONFIDENCE_TITLE, CONFIDENCE_MEANINGS[fitted])
        table.SetColumnDescription(RIBS_TITLE, RIBS_MEANING)
        table.SetColumnDescription(OTHER_TITLE, OTHER_MEANING)
        place_in_subject_hierarchy(scene, volume_node, table)
    except Exception:
        scene.RemoveNode(table)
        raise
    return table


def _fill(table: Any, titles: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    columns: Dict[str, Any] = {}
    for title in titles:
        column = vtk.vtkStringArray()
        column.SetName(title)
        columns[title] = column
    for row in rows:
        for title, value in zip(titles, row):
            columns[title].InsertNextValue(value)
    for title in titles:
        table.AddColumn(columns[title])
        table.SetColumnTitle(title, title)
    table.SetUseColumnTitleAsColumnHeader(True)
    table.SetUseFirstColumnAsRowHeader(True)
    table.SetLocked(True)  # a record of the run: corrections go into the segmentation

"""Engine outputs -> one Slicer segmentation node (Qt-free).

:func:`build_segmentation_node` imports the label map (VerSe ids, exactly the input grid) into one
shared layer and turns every label into a segment named after anatomy.py (C1...L5, T13/L6 where
found), coloured from anatomy.py, with SNOMED CT terminology and the tags of the report
(docs/ARCHITECTURE.md). Vertebrae flagged incomplete (paper §3.5) are kept - the paper notes they
"could also be added to the segmentation mask, merely flagging them as incomplete" - named
``"T1 (incomplete)"`` and drawn differently (outline only in slices, faint in 3D).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import slicer
import vtk

from vertebra_traversal import anatomy
from vertebra_traversal.formats import (INCOMPLETE_SUFFIX, REPORT_FORMAT, TAG_AT_EDGE, TAG_COMPLETE,
                                        TAG_COMPLETENESS, TAG_CONFIDENCE, TAG_LABEL_ID, TAG_LIKELIHOOD,
                                        TAG_OWN_LABEL, TAG_RIB_LABEL, TERMINOLOGY_CONTEXT)
from vertebra_traversal.imageio import InputError, read_json_document

from .events import ROLE_ATTRIBUTE
from .volumes import PathLike, read_volume_into, same_geometry

logger = logging.getLogger(__name__)

#: The segmentation's conversion parameter that holds its reference image geometry.
_GEOMETRY = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()

#: The tags of the two readings a run may carry: the one it offers (``TAG_RIB_LABEL``: its labels counted
#: from the ribs, where it kept its own) and the one it set aside (``TAG_OWN_LABEL``: its own, where it
#: counted from the ribs). A segment carries one or neither.
READING_TAGS = (TAG_RIB_LABEL, TAG_OWN_LABEL)


@dataclass(frozen=True)
class IncompleteStyle:
    """How incomplete vertebrae are drawn (per-segment display settings, 0..1)."""

    fill_2d: float = 0.0
    outline_2d: float = 1.0
    opacity_3d: float = 0.3


def segment_name(label: int, complete: bool) -> str:
    """``"L1"`` or ``"L1 (incomplete)"`` (the names the export maps back)."""
    name = anatomy.name_of(label)
    return name if complete else f"{name} {INCOMPLETE_SUFFIX}"


def terminology_entry(label: int) -> str:
    """Serialized Slicer terminology: category Anatomical Structure (SCT 123037004), type from anatomy.py."""
    row = anatomy.vertebra(label)
    code, scheme, meaning = anatomy.ANATOMICAL_STRUCTURE
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        TERMINOLOGY_CONTEXT, code, scheme, meaning, row.snomed_code, "SCT", row.snomed_meaning,
        "", "", "", "", "", "", "", "", "", "")


def read_report(path: PathLike) -> Dict[int, Mapping[str, Any]]:
    """Report entries by label id.

    Raises:
        InputError: unreadable file, wrong format, or an unknown label id.
    """
    return report_entries(read_json_document(Path(path), REPORT_FORMAT, "file"), path)


def report_entries(data: Mapping[str, Any], path: PathLike) -> Dict[int, Mapping[str, Any]]:
    """The entries of a report document ``data`` (read from ``path``) by label id.

    Raises:
        InputError: an unknown label id.
    """
    entries = {}
    for entry in data.get("vertebrae", []):
        if not anatomy.is_valid_label(entry.get("label", 0)):
            raise InputError(f"{path}: unknown vertebra label {entry.get('label')!r}")
        entries[int(entry["label"])] = entry
    return entries


def read_label_map_node(path: PathLike, volume_node: "slicer.vtkMRMLVolumeNode") -> "slicer.vtkMRMLLabelMapVolumeNode":
    """Read the engine's label map into a label map node outside the scene; check ids and grid.

    Raises:
        InputError: unreadable, unknown ids, or a grid other than ``volume_node``'s.
    """
    node = read_volume_into(slicer.vtkMRMLLabelMapVolumeNode(), path)
    values = set(int(v) for v in np.unique(slicer.util.arrayFromVolume(node))) - {0}
    unknown = sorted(values - set(anatomy.BY_LABEL))
    if unknown:
        raise InputError(f"{path}: unknown label ids {unknown}")
    if not same_geometry(node, volume_node):
        raise InputError(f"{path}: label map grid differs from volume {volume_node.GetName()!r}")
    return node


def _tags(label: int, entry: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    complete = bool(entry.get("complete", True)) if entry else True
    tags = {TAG_LABEL_ID: str(label), TAG_COMPLETE: "true" if complete else "false"}
    for key, field in ((TAG_COMPLETENESS, "completeness_probability"), (TAG_LIKELIHOOD, "label_likelihood"),
                       (TAG_CONFIDENCE, "label_confidence")):
        if entry and entry.get(field) is not None:
            tags[key] = f"{float(entry[field]):.4f}"
    if entry and entry.get("at_scan_edge") is not None:
        tags[TAG_AT_EDGE] = "true" if entry["at_scan_edge"] else "false"
    for key, field in zip(READING_TAGS, ("rib_label", "own_label")):  # a hand-edited value: no other reading
        if entry and anatomy.as_label(entry.get(field)) is not None:
            tags[key] = str(entry[field])
    return tags


def configure_segment(seg_node: "slicer.vtkMRMLSegmentationNode", segment_id: str, label: int,
                      entry: Optional[Mapping[str, Any]], style: IncompleteStyle) -> None:
    """Name, colour, terminology, tags and (for incomplete vertebrae) display of one segment."""
    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    tags = _tags(label, entry)
    complete = tags[TAG_COMPLETE] == "true"
    segment.SetName(segment_name(label, complete))
    segment.SetNameAutoGenerated(False)
    segment.SetColor(*anatomy.vertebra(label).color)
    segment.SetColorAutoGenerated(False)
    # vtkSegment.SetTerminology() is a 5.10 convenience for exactly this tag; the tag works on every Slicer 5.
    segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology_entry(label))
    for key, value in tags.items():
        segment.SetTag(key, value)
    if not complete:
        display = seg_node.GetDisplayNode()
        display.SetSegmentOpacity2DFill(segment_id, style.fill_2d)
        display.SetSegmentOpacity2DOutline(segment_id, style.outline_2d)
        display.SetSegmentOpacity3D(segment_id, style.opacity_3d)


def place_in_subject_hierarchy(scene: "slicer.vtkMRMLScene", volume_node: "slicer.vtkMRMLNode",
                               seg_node: "slicer.vtkMRMLNode") -> None:
    """Put ``seg_node`` beside ``volume_node`` (under its study) when the volume has a hierarchy item."""
    shnode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if shnode is None:
        return
    volume_item = shnode.GetItemByDataNode(volume_node)
    if not volume_item:
        return
    parent = shnode.GetItemParent(volume_item)
    seg_item = shnode.GetItemByDataNode(seg_node) or shnode.CreateItem(parent, seg_node)
    shnode.SetItemParent(seg_item, parent)


def _target_node(scene: "slicer.vtkMRMLScene", volume_node: "slicer.vtkMRMLNode", name: Optional[str],
                 target: Optional["slicer.vtkMRMLSegmentationNode"]) -> "slicer.vtkMRMLSegmentationNode":
    if target is not None and target.GetSegmentation().GetNumberOfSegments() == 0:
        return target
    if target is not None:
        logger.info("segmentation %r already holds segments; writing a new one instead", target.GetName())
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                   scene.GenerateUniqueName(name or f"{volume_node.GetName()} vertebrae"))
    node.SetAttribute(ROLE_ATTRIBUTE, "result")
    return node


def _order_by_rank(seg_node: "slicer.vtkMRMLSegmentationNode", labels: Dict[str, int]) -> None:
    segmentation = seg_node.GetSegmentation()
    ranked = sorted(labels, key=lambda segment_id: anatomy.vertebra(labels[segment_id]).rank)
    for index, segment_id in enumerate(ranked):
        segmentation.SetSegmentIndex(segment_id, index)


def build_segmentation_node(scene: "slicer.vtkMRMLScene", volume_node: "slicer.vtkMRMLScalarVolumeNode",
                            labels_path: PathLike, report_path: PathLike, seg_logic: Any,
                            name: Optional[str] = None, target: Optional["slicer.vtkMRMLSegmentationNode"] = None,
                            style: IncompleteStyle = IncompleteStyle()) -> "slicer.vtkMRMLSegmentationNode":
    """One segmentation node from the engine's label map + report.

    Args:
        scene: the MRML scene.
        volume_node: the segmented volume (reference geometry; its parent transform is reused).
        labels_path: ``<stem>_seg-vert_msk.nii.gz`` (VerSe ids on exactly the volume's grid).
        report_path: ``<stem>_report.json`` (completeness, likelihoods per label).
        seg_logic: a ``vtkSlicerSegmentationsModuleLogic`` with the scene set.
        name: node name (default ``"<volume> vertebrae"``, made unique).
        target: an existing node to fill when it is empty (it moves under the volume's transform); a
            non-empty one is never overwritten (a new node is created instead).
        style: display of incomplete vertebrae.

    Returns:
        The segmentation node; segments in cranio-caudal order, placed under the volume's study.

    Raises:
        InputError: unreadable/invalid files; no segmentation node is left behind.
    """
    labelmap = read_label_map_node(labels_path, volume_node)
    report = read_report(report_path)
    seg_node = _target_node(scene, volume_node, name, target)
    created = seg_node is not target
    before = _Settings.of(seg_node)
    try:
        _fill(seg_node, volume_node, labelmap, report, seg_logic, style, labels_path)
    except Exception:
        if created:
            _remove_with_display(scene, seg_node)
        else:  # the target was empty: leave it as it was
            before.restore(scene, seg_node)
        raise
    place_in_subject_hierarchy(scene, volume_node, seg_node)
    return seg_node


@dataclass(frozen=True)
class _Settings:
    """What filling an empty target changes besides its segments: transform, reference geometry (parameter
    and node reference), display nodes."""

    transform: Optional[str]
    geometry: str
    geometry_node: Optional[str]
    displays: Tuple[str, ...]

    @classmethod
    def of(cls, node: Any) -> "_Settings":
        return cls(node.GetTransformNodeID(), node.GetSegmentation().GetConversionParameter(_GEOMETRY),
                   node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()),
                   tuple(node.GetNthDisplayNodeID(i) for i in range(node.GetNumberOfDisplayNodes())))

    def restore(self, scene: "slicer.vtkMRMLScene", node: Any) -> None:
        node.GetSegmentation().RemoveAllSegments()
        node.SetAndObserveTransformNodeID(self.transform)
        node.GetSegmentation().SetConversionParameter(_GEOMETRY, self.geometry)
        node.SetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole(), self.geometry_node)
        for index in reversed(range(node.GetNumberOfDisplayNodes())):
            display = node.GetNthDisplayNode(index)
            if display is not None and display.GetID() not in self.displays:
                scene.RemoveNode(display)


def _fill(seg_node: Any, volume_node: Any, labelmap: Any, report: Dict[int, Mapping[str, Any]], seg_logic: Any,
          style: IncompleteStyle, labels_path: PathLike) -> None:
    seg_node.CreateDefaultDisplayNodes()
    # The label map lies on the volume's grid in the volume's own frame, and the import places it in world
    # coordinates through the segmentation's transform: import untransformed, then move the segmentation
    # under the volume's transform, so that both show the vertebrae in the same place. The reference
    # geometry is taken last, in that frame (taken before, it would be shifted by the transform).
    seg_node.SetAndObserveTransformNodeID(None)
    if not seg_logic.ImportLabelmapToSegmentationNode(labelmap, seg_node):
        raise InputError(f"{labels_path}: could not import the label map into a segmentation")
    seg_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    seg_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segmentation = seg_node.GetSegmentation()
    labels = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        labels[segment_id] = int(segmentation.GetSegment(segment_id).GetLabelValue())
    missing = sorted(anatomy.name_of(label) for label in labels.values() if label not in report)
    if missing:
        logger.warning("%s: %s not in the report; marked complete", labels_path, ", ".join(missing))
    for segment_id, label in labels.items():
        configure_segment(seg_node, segment_id, label, report.get(label), style)
    _order_by_rank(seg_node, labels)


def _remove_with_display(scene: "slicer.vtkMRMLScene", node: Any) -> None:
    for index in reversed(range(node.GetNumberOfDisplayNodes())):
        display = node.GetNthDisplayNode(index)
        if display is not None:
            scene.RemoveNode(display)
    scene.RemoveNode(node)


def segment_tag(segment: Any, key: str) -> Optional[str]:
    """Value of a segment tag, or None."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else None


def _other_label(segment: Any) -> Optional[Tuple[str, int]]:
    for key in READING_TAGS:
        value = segment_tag(segment, key)
        if value is not None and value.isdigit() and anatomy.is_valid_label(int(value)):
            return key, int(value)
    return None


def other_reading_offered(seg_node: Optional["slicer.vtkMRMLSegmentationNode"]) -> bool:
    """Whether a segment of ``seg_node`` carries the other reading of its run (:data:`READING_TAGS`)."""
    if seg_node is None:
        return False
    segmentation = seg_node.GetSegmentation()
    return any(_other_label(segmentation.GetSegment(segmentation.GetNthSegmentID(i))) is not None
               for i in range(segmentation.GetNumberOfSegments()))


def switch_reading(seg_node: "slicer.vtkMRMLSegmentationNode", style: IncompleteStyle = IncompleteStyle()) -> int:
    """Rename the vertebrae of an engine run by the other reading they carry (:data:`READING_TAGS`: the
    labels counted from the ribs, or the run's own where it counted from the ribs): name, colour, terminology
    and label tag follow it, and the label each had becomes the other reading, so a second switch goes
    back. The run's label likelihood and confidence, which describe the labels it gave, are dropped. Returns
    how many segments changed their label.

    Raises:
        InputError: no segment carries another reading, or one that does was renamed since the run (its name
            is not the one its label tag gives): nothing is changed then.
    """
    segmentation, changes = seg_node.GetSegmentation(), []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        other, label = _other_label(segment), segment_tag(segment, TAG_LABEL_ID)
        if other is None or label is None:
            continue
        complete = segment_tag(segment, TAG_COMPLETE) != "false"
        if segment.GetName() != segment_name(int(label), complete):
            raise InputError(f"segmentation {seg_node.GetName()!r}: segment {segment.GetName()!r} was renamed after "
                             f"the run (it was {segment_name(int(label), complete)!r}); rename the others by hand")
        changes.append((segment_id, int(label), other, complete))
    if not changes:
        raise InputError(f"segmentation {seg_node.GetName()!r}: its run offers no other reading of its labels")
    labels = {}
    for segment_id, label, (key, other), complete in changes:
        segment = segmentation.GetSegment(segment_id)
        for gone in (TAG_LIKELIHOOD, TAG_CONFIDENCE) + READING_TAGS:
            segment.RemoveTag(gone)
        configure_segment(seg_node, segment_id, other, {"complete": complete}, style)
        segment.SetTag(READING_TAGS[1 - READING_TAGS.index(key)], str(label))  # the way back
        labels[segment_id] = other
    _order_by_rank(seg_node, labels)
    return sum(label != other for _, label, (_, other), _ in changes)

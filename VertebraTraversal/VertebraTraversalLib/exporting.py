"""A (corrected) segmentation node -> a new dataset case for fine-tuning (Qt-free).

Segments map to vertebra ids and completeness by the core rules
(:func:`vertebra_traversal.export.resolve_segment`: ``"L1"``, ``"L1 (incomplete)"``; a name that is not
a vertebra's is refused). The segments are exported layer by layer to a label map on the volume's own
geometry (``EXTENT_REFERENCE_GEOMETRY``), remapped to VerSe ids, checked for overlaps and for voxels
lost to another grid, written with the image to temporary files and handed to the core
:func:`vertebra_traversal.export.export_case`, which writes the case atomically and never
overwrites one. Every node this adds to the scene on the way is removed again.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import slicer
import slicer.util
import vtk

from vertebra_traversal import dataset
from vertebra_traversal.export import (ExportConfig, SegmentAssignment, check_unique, export_case, new_case_files,
                                       resolve_segment)
from vertebra_traversal.formats import TAG_COMPLETE, TAG_LABEL_ID
from vertebra_traversal.imageio import InputError

from .segmentation import segment_tag
from .volumes import PathLike, ijk_to_ras, write_volume

logger = logging.getLogger(__name__)


class _Collector(logging.Handler):
    def __init__(self, messages: List[str]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def warnings_collected() -> Iterator[List[str]]:
    """The warnings the export logs while the block runs (empty segments, levels with no segment), in order,
    for the module to show beside its result instead of only in the Python console."""
    messages: List[str] = []
    handler = _Collector(messages)
    loggers = [logging.getLogger("vertebra_traversal"), logging.getLogger(__name__.rsplit(".", 1)[0])]
    for item in loggers:
        item.addHandler(handler)
    try:
        yield messages
    finally:
        for item in loggers:
            item.removeHandler(handler)


def segment_assignments(seg_node: "slicer.vtkMRMLSegmentationNode") -> Dict[str, SegmentAssignment]:
    """Vertebra id + completeness of every segment, by segment id.

    Raises:
        InputError: naming the node, for an unknown or a duplicate vertebra.
    """
    source = f"segmentation {seg_node.GetName()!r}"
    segmentation = seg_node.GetSegmentation()
    out = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        tags = {key: value for key in (TAG_LABEL_ID, TAG_COMPLETE)
                if (value := segment_tag(segment, key)) is not None}
        out[segment_id] = resolve_segment(segment.GetName(), tags, source)
    check_unique(list(out.values()), source)
    if not out:
        raise InputError(f"{source}: holds no segments")
    return out


def check_same_transform(seg_node: "slicer.vtkMRMLSegmentationNode", volume_node: "slicer.vtkMRMLVolumeNode") -> None:
    """Refuse a segmentation that is not under the volume's parent transform: the label map is written on
    the volume's grid in the volume's own frame, which is the segmentation's only when both share it.

    Raises:
        InputError: naming both nodes.
    """
    if seg_node.GetTransformNodeID() != volume_node.GetTransformNodeID():
        raise InputError(f"segmentation {seg_node.GetName()!r}: it is under another transform than volume "
                         f"{volume_node.GetName()!r}; put both under the same transform (or harden both) "
                         f"before exporting")


def check_grid(seg_node: "slicer.vtkMRMLSegmentationNode", segment_id: str,
               volume_node: "slicer.vtkMRMLVolumeNode", tol_mm: float = 1e-3) -> None:
    """Refuse a segment whose binary labelmap is not on the volume's voxel grid (other spacing,
    axes, or a fractional voxel shift).

    Raises:
        InputError: naming the node, the segment and the volume.
    """
    image = seg_node.GetBinaryLabelmapInternalRepresentation(segment_id)
    if image is None:
        return
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    seg = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    vol = ijk_to_ras(volume_node)
    offset = np.linalg.solve(vol[:3, :3], seg[:3, 3] - vol[:3, 3])
    if not np.allclose(seg[:3, :3], vol[:3, :3], atol=tol_mm) or not np.allclose(offset, np.round(offset), atol=1e-2):
        name = seg_node.GetSegmentation().GetSegment(segment_id).GetName()
        raise InputError(f"segmentation {seg_node.GetName()!r}: segment {name!r} is on another grid than volume "
                         f"{volume_node.GetName()!r}; segment it with that volume as source geometry")


def _voxel_count(seg_node: Any, segment_id: str) -> int:
    image = seg_node.GetBinaryLabelmapInternalRepresentation(segment_id)
    if image is None or min(image.GetDimensions()) < 1 or image.GetPointData().GetScalars() is None:
        return 0
    value = seg_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    return int(np.count_nonzero(slicer.util.arrayFromSegmentInternalBinaryLabelmap(seg_node, segment_id) == value))


def _export_layer(seg_node: Any, segment_ids: List[str], volume_node: Any, seg_logic: Any,
                  labelmap: Any) -> np.ndarray:
    ids = vtk.vtkStringArray()
    for segment_id in segment_ids:
        ids.InsertNextValue(segment_id)
    if not seg_logic.ExportSegmentsToLabelmapNode(seg_node, ids, labelmap, volume_node,
                                                  slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
        raise InputError(f"segmentation {seg_node.GetName()!r}: export to a label map failed")
    return np.array(slicer.util.arrayFromVolume(labelmap))  # values 1..n in the order of segment_ids


def layered_labels(seg_node: Any, volume_node: Any, seg_logic: Any,
                   assignments: Dict[str, SegmentAssignment], labelmap: Any) -> np.ndarray:
    """VerSe-id array (z, y, x) on the volume grid, exported layer by layer into ``labelmap``.

    Raises:
        InputError: overlapping segments, or segments whose voxels do not all land on the volume grid.
    """
    segmentation = seg_node.GetSegmentation()
    out = None
    owner: Dict[int, str] = {}
    for layer in range(segmentation.GetNumberOfLayers()):
        segment_ids = [s for s in segmentation.GetSegmentIDsForLayer(layer) if s in assignments]
        if not segment_ids:
            continue
        exported = _export_layer(seg_node, segment_ids, volume_node, seg_logic, labelmap)
        lut = np.zeros(len(segment_ids) + 1, dtype=np.uint8)
        for index, segment_id in enumerate(segment_ids, start=1):
            lut[index] = assignments[segment_id].label
            owner[assignments[segment_id].label] = assignments[segment_id].segment
            count = np.count_nonzero(exported == index)
            if count != _voxel_count(seg_node, segment_id):
                raise InputError(f"segmentation {seg_node.GetName()!r}: segment {assignments[segment_id].segment!r} "
                                 f"has voxels outside volume {volume_node.GetName()!r} or on another grid")
            if count == 0:
                logger.warning("segmentation %r: segment %r is empty; left out", seg_node.GetName(),
                               assignments[segment_id].segment)
        mapped = lut[exported]
        out = mapped if out is None else _merge(out, mapped, owner, seg_node)
    if out is None or not np.any(out):
        raise InputError(f"segmentation {seg_node.GetName()!r}: holds no vertebra voxels")
    return out


def _merge(out: np.ndarray, mapped: np.ndarray, owner: Dict[int, str], seg_node: Any) -> np.ndarray:
    clash = (out != 0) & (mapped != 0)
    if np.any(clash):
        first = tuple(int(v) for v in np.argwhere(clash)[0])
        raise InputError(f"segmentation {seg_node.GetName()!r}: segments {owner[int(out[first])]!r} and "
                         f"{owner[int(mapped[first])]!r} overlap (e.g. at voxel k, j, i = {first}); a voxel can "
                         f"belong to one vertebra only")
    return np.where(mapped != 0, mapped, out)


class _TemporaryNodes:
    """Removes every node added to the scene inside the ``with`` block."""

    def __init__(self, scene: Any) -> None:
        self.scene = scene

    def __enter__(self) -> "_TemporaryNodes":
        self.before = {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}
        return self

    def __exit__(self, *exc: Any) -> None:
        added = [self.scene.GetNthNode(i) for i in range(self.scene.GetNumberOfNodes())]
        for node in reversed([n for n in added if n.GetID() not in self.before]):
            if self.scene.IsNodePresent(node):
                self.scene.RemoveNode(node)


def export_segmentation_case(scene: "slicer.vtkMRMLScene", seg_node: "slicer.vtkMRMLSegmentationNode",
                             volume_node: "slicer.vtkMRMLScalarVolumeNode", dataset_root: PathLike, case_id: str,
                             seg_logic: Any, modality: str = "ct") -> dataset.CaseFiles:
    """Write ``volume_node`` and ``seg_node`` as a new case of ``dataset_root``.

    Args:
        scene: the MRML scene (left as it was).
        seg_node: the (corrected) segmentation; segment names/tags give the vertebrae.
        volume_node: its image; the label map is exported on this volume's grid.
        dataset_root: dataset folder (created when missing).
        case_id: the new case's id; an existing case is never overwritten.
        seg_logic: a ``vtkSlicerSegmentationsModuleLogic`` with the scene set.
        modality: ``"ct"`` or ``"mr"``.

    Returns:
        The written case's paths.

    Raises:
        InputError: bad id, modality or dataset folder, existing case, no volume, unknown/duplicate/overlapping
            segments, another grid.
    """
    new_case_files(dataset_root, case_id, modality)
    if seg_node is None:
        raise InputError("no segmentation to export: choose the corrected segmentation")
    if volume_node is None or volume_node.GetImageData() is None:
        raise InputError(f"segmentation {seg_node.GetName()!r}: no volume with image data to export it with; "
                         f"choose the scan it was segmented from")
    assignments = segment_assignments(seg_node)
    check_same_transform(seg_node, volume_node)
    for segment_id in assignments:
        check_grid(seg_node, segment_id, volume_node)
    work = Path(tempfile.mkdtemp(prefix="VertebraTraversal-export-"))
    try:
        image_path, labels_path = _write_inputs(scene, seg_node, volume_node, seg_logic, assignments, work)
        config = ExportConfig(image_path, labels_path, Path(dataset_root), case_id, modality)
        completeness = {item.label: item.complete for item in assignments.values()}
        source = {"image": volume_node.GetName(), "segmentation": seg_node.GetName(), "tool": "3D Slicer"}
        return export_case(config, completeness=completeness, source=source)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_inputs(scene: Any, seg_node: Any, volume_node: Any, seg_logic: Any,
                  assignments: Dict[str, SegmentAssignment], work: Path) -> Tuple[Path, Path]:
    image_path = write_volume(volume_node, work / "image.nii.gz")
    with _TemporaryNodes(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "VertebraTraversal export")
        labels = layered_labels(seg_node, volume_node, seg_logic, assignments, labelmap)
        slicer.util.updateVolumeFromArray(labelmap, labels.astype(np.uint8))
        labels_path = write_volume(labelmap, work / "labels.nii.gz")
    return image_path, labels_path

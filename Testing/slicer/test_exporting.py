"""Segmentation node -> dataset case, read back with the core's dataset and imageio readers."""
import logging

import numpy as np
import pytest
import SimpleITK as sitk
import vtk
from slicer_testing import SHAPE_ZYX, add_volume, ct_array, label_array, write_engine_outputs
from VertebraTraversalLib import exporting
from VertebraTraversalLib import segmentation as libseg

from vertebra_traversal import dataset
from vertebra_traversal.imageio import InputError, read_label_map


@pytest.fixture
def corrected(mrml, tmp_path):
    """The engine's result for the synthetic spine, as a segmentation node beside its volume."""
    volume = add_volume(mrml.scene, ct_array())
    out = write_engine_outputs(tmp_path / "out")
    node = libseg.build_segmentation_node(mrml.scene, volume, out["labels"], out["report"], mrml.seg_logic)
    return volume, node


def _segment(node, name):
    seg = node.GetSegmentation()
    return seg.GetSegment(seg.GetSegmentIdBySegmentName(name))


def _add_segment(mrml, node, mask_zyx, name, spacing=None):
    """A segment from its own label map (a new layer, as an import or a second editor layer gives)."""
    kwargs = {"spacing": spacing} if spacing else {}
    labelmap = add_volume(mrml.scene, mask_zyx.astype(np.uint8), "extra", "vtkMRMLLabelMapVolumeNode", **kwargs)
    seg = node.GetSegmentation()
    before = {seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())}
    assert mrml.seg_logic.ImportLabelmapToSegmentationNode(labelmap, node)
    mrml.scene.RemoveNode(labelmap)
    new_id = ({seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())} - before).pop()
    seg.GetSegment(new_id).SetName(name)


def test_export_writes_a_case_the_core_reads_back(mrml, tmp_path, corrected):
    volume, node = corrected
    before = mrml.node_ids()
    files = exporting.export_segmentation_case(mrml.scene, node, volume, tmp_path / "data", "case1", mrml.seg_logic)
    assert mrml.node_ids() == before
    image = sitk.ReadImage(str(files.image))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), ct_array())
    labels = read_label_map(files.labels, reference=image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), label_array())
    info = dataset.read_case_info(files)
    assert [(r.name, r.complete) for r in info.vertebrae] == [("T12", True), ("L1", True), ("L2", False)]
    assert info.source["segmentation"] == "ct vertebrae" and info.source["image"] == "ct"


def test_user_corrections_are_exported(mrml, tmp_path, corrected):
    volume, node = corrected
    _segment(node, "L2 (incomplete)").SetName("L2")  # the user decides L2 is complete after all
    _segment(node, "T12").SetName("T11")  # ... and relabels the top vertebra
    extra = np.zeros(SHAPE_ZYX, bool)
    extra[9, 2:6, 1:5] = True  # a vertebra painted in a second layer, touching nothing else
    _add_segment(mrml, node, extra, "T10 (incomplete)")
    assert node.GetSegmentation().GetNumberOfLayers() == 2
    files = exporting.export_segmentation_case(mrml.scene, node, volume, tmp_path / "data", "c2", mrml.seg_logic)
    expected = label_array()
    expected[expected == 19] = 18
    expected[extra] = 17
    labels = read_label_map(files.labels, reference=sitk.ReadImage(str(files.image)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), expected)
    info = dataset.read_case_info(files)
    assert [(r.name, r.complete) for r in info.vertebrae] == [("T10", False), ("T11", True), ("L1", True), ("L2", True)]


@pytest.mark.parametrize("change, pattern", [
    ("unknown", "segment 'tumour' is not named as a vertebra"),
    ("renamed", r"segment 'fragment' \(it was L1\) is not named as a vertebra"),
    ("duplicate", r"segments 'L1' and 'L1 \(incomplete\)' are both L1"),
    ("overlap", "segments '(L1|T9)' and '(L1|T9)' overlap"),
    ("grid", "segment 'T9' is on another grid than volume 'ct'"),
    ("transform", "it is under another transform than volume 'ct'"),
])
def test_bad_exports_are_refused_and_leave_scene_and_dataset_alone(mrml, tmp_path, corrected, change, pattern):
    volume, node = corrected
    mask = np.zeros(SHAPE_ZYX, bool)
    if change == "unknown":  # a new segment, without tags
        mask[9, 2:6, 1:5] = True
        _add_segment(mrml, node, mask, "tumour")
    elif change == "renamed":  # an engine segment keeps its tags: they must not label it behind the user's back
        _segment(node, "L1").SetName("fragment")
    elif change == "duplicate":
        _segment(node, "L2 (incomplete)").SetName("L1 (incomplete)")
    elif change == "overlap":
        mask[4, 2:6, 1:5] = True  # inside L1
        _add_segment(mrml, node, mask, "T9")
    elif change == "grid":
        mask[1:3, 1:3, 1:3] = True
        _add_segment(mrml, node, mask, "T9", spacing=(3.0, 2.0, 4.0))
    else:  # the user moved the segmentation alone
        node.SetAndObserveTransformNodeID(mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "t").GetID())
    before = mrml.node_ids()
    with pytest.raises(InputError, match=f"segmentation 'ct vertebrae': .*{pattern}"):
        exporting.export_segmentation_case(mrml.scene, node, volume, tmp_path / "data", "bad", mrml.seg_logic)
    assert mrml.node_ids() == before
    assert not (tmp_path / "data" / "rawdata" / "bad").exists()


def test_existing_case_is_refused_and_kept(mrml, tmp_path, corrected):
    volume, node = corrected
    files = exporting.export_segmentation_case(mrml.scene, node, volume, tmp_path / "data", "c1", mrml.seg_logic)
    kept = {p: p.read_bytes() for p in (files.image, files.labels, files.sidecar)}
    _segment(node, "T12").SetName("T11")
    with pytest.raises(InputError, match="case 'c1' already exists; not overwriting"):
        exporting.export_segmentation_case(mrml.scene, node, volume, tmp_path / "data", "c1", mrml.seg_logic)
    assert {p: p.read_bytes() for p in kept} == kept


def test_a_transformed_volume_and_its_result_export_on_the_volume_grid(mrml, tmp_path):
    volume = add_volume(mrml.scene, ct_array())
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 100.0)
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    out = write_engine_outputs(tmp_path / "out")
    node = libseg.build_segmentation_node(mrml.scene, volume, out["labels"], out["report"], mrml.seg_logic)
    files = exporting.export_segmentation_case(mrml.scene, node, volume, tmp_path / "data", "moved", mrml.seg_logic)
    labels = read_label_map(files.labels, reference=sitk.ReadImage(str(files.image)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), label_array())


def test_an_empty_segment_is_left_out_with_a_warning(mrml, tmp_path, corrected, caplog):
    volume, node = corrected
    named = [r.name for r in dataset.read_case_info(
        exporting.export_segmentation_case(mrml.scene, node, volume, tmp_path / "data", "c1", mrml.seg_logic)).vertebrae]
    node.GetSegmentation().AddEmptySegment("added", "T13")  # added in the Segment Editor, never painted
    with exporting.warnings_collected() as warnings:  # what the module shows with its result
        files = exporting.export_segmentation_case(mrml.scene, node, volume, tmp_path / "data", "c2", mrml.seg_logic)
    assert [r.name for r in dataset.read_case_info(files).vertebrae] == named
    assert warnings == ["segmentation 'ct vertebrae': segment 'T13' is empty; left out"]
    assert "segment 'T13' is empty" in caplog.text
    with exporting.warnings_collected() as warnings:
        exporting.export_segmentation_case(mrml.scene, node, volume, tmp_path / "data", "c3", mrml.seg_logic)
        logging.getLogger("elsewhere").warning("not the export's")
    assert len(warnings) == 1


def test_no_volume_or_a_bad_modality_is_refused_before_any_work(mrml, tmp_path, corrected):
    volume, node = corrected
    before = mrml.node_ids()
    with pytest.raises(InputError, match="'ct vertebrae': no volume with image data to export it with"):
        exporting.export_segmentation_case(mrml.scene, node, None, tmp_path / "data", "c1", mrml.seg_logic)
    with pytest.raises(InputError, match=r"data: modality 'xr' is not one of") as refused:
        exporting.export_segmentation_case(mrml.scene, node, volume, tmp_path / "data", "c1", mrml.seg_logic, "xr")
    assert "VertebraTraversal-export" not in str(refused.value)  # no temporary file in the message
    assert mrml.node_ids() == before and not (tmp_path / "data").exists()

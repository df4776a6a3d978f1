"""Segment outputs: label map on the input grid, a .seg.nrrd that slicerio reads, centroids, report."""
import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from vertebra_traversal import anatomy
from vertebra_traversal.imageio import InputError
from vertebra_traversal.outputs import OutputPaths, input_stem, prepare_output_dir, write_outputs
from vertebra_traversal.pipeline import SegmentationResult, VertebraResult


def _result():
    array = np.zeros((20, 16, 12), np.uint8)
    array[2:8, 4:10, 3:9] = 20
    array[10:16, 4:10, 3:9] = 19
    labels = sitk.GetImageFromArray(array)
    labels.SetSpacing((0.8, 0.9, 2.5))
    labels.SetOrigin((5.0, -7.0, 100.0))
    labels.SetDirection((0, 0, 1, -1, 0, 0, 0, -1, 0))
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    rows = [VertebraResult(1, 19, "T12", True, 0.93, False, 0.8, 0.9, 19.2, stats.GetPhysicalSize(19),
                           stats.GetCentroid(19)),
            VertebraResult(2, 20, "L1", False, 0.12, True, 0.6, 0.7, 20.4, stats.GetPhysicalSize(20),
                           stats.GetCentroid(20))]
    return SegmentationResult(labels, tuple(rows), "standard", 17, 17, 1.5, False)


def test_outputs_open_in_slicerio_and_simpleitk_with_the_input_geometry(tmp_path):
    result = _result()
    paths = write_outputs(result, tmp_path / "in/case_ct.nii.gz", prepare_output_dir(tmp_path / "out"), {"path": "m"})
    assert paths == OutputPaths.for_stem(tmp_path / "out", "case_ct")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["case_ct_seg-vert_msk.nii.gz", "case_ct.seg.nrrd", "case_ct_seg-subreg_ctd.json", "case_ct_report.json"])
    labels = sitk.ReadImage(str(paths.labels))
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(labels, getter)(), getattr(result.labels, getter)(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(result.labels))

    seg = slicerio.read_segmentation(str(paths.segmentation))
    names = [s["name"] for s in seg["segments"]]
    assert names == ["T12", "L1 (incomplete)"]
    l1 = slicerio.segment_from_name(seg, "L1 (incomplete)")
    assert l1["tags"]["VertebraTraversal.complete"] == "false" and l1["tags"]["VertebraTraversal.labelId"] == "20"
    assert float(l1["tags"]["VertebraTraversal.completenessProbability"]) == pytest.approx(0.12)
    assert l1["tags"]["VertebraTraversal.atScanEdge"] == "true"
    assert l1["terminology"]["type"] == ["SCT", "66794005", "L1 vertebra"]
    assert l1["color"] == pytest.approx(list(anatomy.vertebra("L1").color))
    mask = slicerio.extract_segments(seg, [("L1 (incomplete)", 1)])["voxels"]
    assert np.count_nonzero(mask) == np.count_nonzero(sitk.GetArrayFromImage(result.labels) == 20)
    np.testing.assert_allclose(seg["ijkToLPS"][:3, 3], result.labels.GetOrigin())

    report = json.loads(paths.report.read_text())
    assert [v["name"] for v in report["vertebrae"]] == ["T12", "L1"] and report["chain"] == "standard"
    assert report["vertebrae"][1]["complete"] is False
    assert [v["at_scan_edge"] for v in report["vertebrae"]] == [False, True]
    centroids = json.loads(paths.centroids.read_text())
    assert {c["label"] for c in centroids[1:]} == {19, 20}


@pytest.mark.parametrize("field, tag", [("rib_label", "ribLabelId"), ("own_label", "ownLabelId")])
def test_the_other_reading_goes_into_the_report_and_the_segments_tags(tmp_path, field, tag):
    """The ribs end at the vertebra named L1: counted from there T12 and L1 read T11 and T12 (offered:
    rib_label; or taken, the run's own T11 and T12 kept as own_label)."""
    plain = _result()
    other = SegmentationResult(plain.labels, tuple(replace(v, **{field: v.label - 1}) for v in plain.vertebrae),
                               "standard", 17, 17, 1.5, False, ribs_end=20, counted_from_ribs=field == "own_label")
    for name, result, expected in (("plain", plain, [None, None]), ("other", other, [18, 19])):
        paths = write_outputs(result, tmp_path / f"{name}_ct.nii.gz", prepare_output_dir(tmp_path / name), {})
        report = json.loads(paths.report.read_text())
        assert [v[field] for v in report["vertebrae"]] == expected
        assert report["counted_from_ribs"] is (name == "other" and field == "own_label")
        tags = [s["tags"].get(f"VertebraTraversal.{tag}") for s in
                slicerio.read_segmentation(str(paths.segmentation), skip_voxels=True)["segments"]]
        assert tags == [None if e is None else str(e) for e in expected]


def test_existing_outputs_are_never_overwritten(tmp_path):
    out = prepare_output_dir(tmp_path / "out")
    first = write_outputs(_result(), "a/scan.nrrd", out, {})
    before = first.report.read_bytes()
    with pytest.raises(InputError, match="output exists already"):
        write_outputs(_result(), "b/scan.nrrd", out, {})
    assert first.report.read_bytes() == before and not list(out.glob(".partial-*"))
    with pytest.raises(InputError, match="not empty"):
        prepare_output_dir(out)


@pytest.mark.parametrize("name, stem", [("x/case_ct.nii.gz", "case_ct"), ("scan.nrrd", "scan"), ("dicom_dir", "dicom_dir")])
def test_input_stem(name, stem):
    assert input_stem(name) == stem

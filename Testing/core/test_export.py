"""Export of a (corrected) segmentation + image as a dataset case (correct-and-retrain loop).

Segmentations are written here with slicerio (the unit's input); every expected label map is built
independently from the same known boxes on the image grid.
"""
import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from vertebra_traversal import anatomy, dataset, export
from vertebra_traversal.cli.main import main
from vertebra_traversal.imageio import InputError, read_label_map

SHAPE_ZYX = (8, 10, 12)
SPACING = (1.5, 1.0, 2.0)
ORIGIN = (10.0, -20.0, 30.0)
DIRECTION = (0, 0, 1, -1, 0, 0, 0, -1, 0)  # i -> S, j -> R, k -> A: not the identity on purpose
BOXES = {20: (slice(1, 3), slice(2, 5), slice(3, 7)),  # L1, (z, y, x) slices
         19: (slice(4, 7), slice(2, 5), slice(3, 7))}  # T12


def _image() -> sitk.Image:
    array = np.random.default_rng(1).normal(100, 50, SHAPE_ZYX).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    return image


def _truth_zyx(boxes=BOXES) -> np.ndarray:
    out = np.zeros(SHAPE_ZYX, np.uint8)
    for label, box in boxes.items():
        out[box] = label
    return out


def _ijk_to_lps(image: sitk.Image, offset=(0, 0, 0)) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    matrix[:3, 3] = image.TransformContinuousIndexToPhysicalPoint([float(o) for o in offset])
    return matrix


def _segment(name, value, layer=0, tags=None):
    entry = {"id": f"seg{name}{value}{layer}", "name": name, "labelValue": value, "layer": layer,
             "color": [0.5, 0.5, 0.5]}
    if tags:
        entry["tags"] = tags
    return entry


def _write_seg(path, voxels_ijk, segments, matrix):
    slicerio.write_segmentation(str(path), {"voxels": voxels_ijk, "ijkToLPS": matrix, "segments": segments})
    return path


def _single_layer_seg(tmp_path, image, names=("L1 (incomplete)", "T12")):
    """Label values 1 and 2 (not VerSe ids) for L1 and T12, full image extent."""
    zyx = np.zeros(SHAPE_ZYX, np.uint8)
    zyx[BOXES[20]] = 1
    zyx[BOXES[19]] = 2
    segments = [_segment(names[0], 1), _segment(names[1], 2)]
    return _write_seg(tmp_path / "corrected.seg.nrrd", zyx.transpose(2, 1, 0).copy(), segments, _ijk_to_lps(image))


def _files(tmp_path, case_id="case7", modality="ct"):
    image_path = tmp_path / "img.nii.gz"
    sitk.WriteImage(_image(), str(image_path))
    return image_path, export.ExportConfig(image_path, tmp_path / "corrected.seg.nrrd", tmp_path / "data", case_id,
                                           modality)


def test_seg_nrrd_becomes_a_case_that_reads_back(tmp_path):
    image_path, config = _files(tmp_path)
    _single_layer_seg(tmp_path, _image())
    files = export.export_case(config)
    image = sitk.ReadImage(str(files.image))
    labels = read_label_map(files.labels, reference=image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), _truth_zyx())
    info = dataset.read_case_info(files)
    assert [(r.name, r.label, r.complete) for r in info.vertebrae] == [("T12", 19, True), ("L1", 20, False)]
    assert info.modality == "ct" and info.target == "vertebra"
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    np.testing.assert_allclose(info.vertebrae[1].centroid_lps_mm, stats.GetCentroid(20), atol=1e-3)
    assert [c.case_id for c in dataset.list_cases(config.dataset)] == ["case7"]


def test_two_layers_and_a_cropped_extent_are_placed_on_the_image_grid(tmp_path):
    image = _image()
    _, config = _files(tmp_path)
    offset_ijk = (3, 2, 1)  # voxel (0,0,0) of the segmentation = image voxel (i, j, k) = (3, 2, 1)
    crop = (slice(1, 7), slice(2, 5), slice(3, 7))  # (z, y, x) region holding both boxes
    assert (crop[2].start, crop[1].start, crop[0].start) == offset_ijk
    layers = np.zeros((2,) + SHAPE_ZYX, np.uint8)
    layers[0][BOXES[20]] = 5
    layers[1][BOXES[19]] = 5
    voxels = layers[(slice(None),) + crop].transpose(0, 3, 2, 1).copy()
    segments = [_segment("L1", 5, layer=0), _segment("T12", 5, layer=1)]
    _write_seg(config.segmentation, voxels, segments, _ijk_to_lps(image, offset_ijk))
    files = export.export_case(config)
    labels = read_label_map(files.labels, reference=sitk.ReadImage(str(files.image)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), _truth_zyx())
    assert all(r.complete for r in dataset.read_case_info(files).vertebrae)


def test_overlapping_segments_in_two_layers_are_refused(tmp_path):
    image = _image()
    _, config = _files(tmp_path)
    layers = np.zeros((2,) + SHAPE_ZYX, np.uint8)
    layers[0][BOXES[20]] = 1
    layers[1][1:5, 2:5, 3:7] = 1  # overlaps L1's slices 1..2
    _write_seg(config.segmentation, layers.transpose(0, 3, 2, 1).copy(),
               [_segment("L1", 1, 0), _segment("T12", 1, 1)], _ijk_to_lps(image))
    with pytest.raises(InputError, match=r"corrected\.seg\.nrrd.*'L1' and 'T12' overlap"):
        export.export_case(config)
    assert not (config.dataset / "rawdata" / "case7").exists()


@pytest.mark.parametrize("names, pattern", [
    (("L1", "Sacrum"), r"corrected\.seg\.nrrd: segment 'Sacrum' is not named as a vertebra"),
    (("L1", "l1 (incomplete)"), r"corrected\.seg\.nrrd: segments 'L1' and 'l1 \(incomplete\)' are both L1"),
])
def test_unknown_or_duplicate_names_are_refused(tmp_path, names, pattern):
    _, config = _files(tmp_path)
    _single_layer_seg(tmp_path, _image(), names)
    with pytest.raises(InputError, match=pattern):
        export.export_case(config)


def test_segmentation_on_another_grid_is_refused(tmp_path):
    image = _image()
    _, config = _files(tmp_path)
    zyx = _truth_zyx()
    other = _ijk_to_lps(image)
    other[:3, :3] *= 2.0  # twice the spacing
    _write_seg(config.segmentation, (zyx > 0).astype(np.uint8).transpose(2, 1, 0).copy(), [_segment("L1", 1)], other)
    with pytest.raises(InputError, match=r"corrected\.seg\.nrrd: segmentation grid .* differs"):
        export.export_case(config)
    shifted = _ijk_to_lps(image, (0.5, 0, 0))
    _write_seg(config.segmentation, (zyx > 0).astype(np.uint8).transpose(2, 1, 0).copy(), [_segment("L1", 1)], shifted)
    with pytest.raises(InputError, match=r"shifted by \[0\.5, 0\.0, 0\.0\] voxels"):
        export.export_case(config)


def test_voxels_outside_the_image_are_refused(tmp_path):
    image = _image()
    _, config = _files(tmp_path)
    voxels = np.zeros((4, 4, 4), np.uint8)
    voxels[3, 3, 3] = 1  # at image index (i, j, k) = (13, 11, 9): outside the 12 x 10 x 8 image
    _write_seg(config.segmentation, voxels, [_segment("L1", 1)], _ijk_to_lps(image, (10, 8, 6)))
    with pytest.raises(InputError, match="labelled voxels outside the image"):
        export.export_case(config)


def test_existing_case_is_never_overwritten(tmp_path):
    _, config = _files(tmp_path)
    _single_layer_seg(tmp_path, _image())
    files = export.export_case(config)
    before = {p: p.read_bytes() for p in (files.image, files.labels, files.sidecar)}
    _single_layer_seg(tmp_path, _image(), ("C1", "C2"))
    with pytest.raises(InputError, match="case 'case7' already exists; not overwriting"):
        export.export_case(config)
    assert {p: p.read_bytes() for p in before} == before


def test_the_name_decides_and_a_name_that_is_not_a_vertebra_is_refused_whatever_the_tags():
    tags = {export.TAG_LABEL_ID: "20", export.TAG_COMPLETE: "false"}
    assert export.resolve_segment("L1 (incomplete)", tags, "f") == export.SegmentAssignment("L1 (incomplete)", 20, False)
    assert export.resolve_segment("L2", tags, "f") == export.SegmentAssignment("L2", 21, True)  # renamed by the user
    assert export.resolve_segment("L1 incomplete", {}, "f").complete is False
    assert export.resolve_segment("T9 vertebra", {}, "f") == export.SegmentAssignment("T9 vertebra", 16, True)
    assert export.parse_segment_name(" t13 ( incomplete ) ") == (28, True)
    assert export.parse_segment_name("L6 Vertebra (incomplete)") == (25, True)
    for name in ("L7", "S1", "C8", "vertebra", "T 1", "L1 wedge fracture", "L1 (partial)", "L2 vertebrae"):
        assert export.parse_segment_name(name) is None, name
    for name in ("fragment", "L1 wedge fracture", "Segment_1", "S1"):  # the tag still says L1: not used
        with pytest.raises(InputError, match=f"f: segment '{name}' \\(it was L1\\) is not named as a vertebra"):
            export.resolve_segment(name, tags, "f")
    with pytest.raises(InputError, match="f: segment 'Segment_1' is not named as a vertebra; name it"):
        export.resolve_segment("Segment_1", {}, "f")


def test_label_map_input_with_completeness_override(tmp_path):
    image_path, config = _files(tmp_path, case_id="mr-1", modality="mr")
    labels = sitk.GetImageFromArray(_truth_zyx())
    labels.CopyInformation(_image())
    label_path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(labels, str(label_path))
    config = export.ExportConfig(image_path, label_path, config.dataset, "mr-1", "mr")
    files = export.export_case(config, completeness={19: False})
    assert files.image.name == "mr-1_mr.nii.gz"
    info = dataset.read_case_info(files)
    assert [(r.label, r.complete) for r in info.vertebrae] == [(19, False), (20, True)] and info.target == "body"


def test_label_map_on_another_grid_is_refused(tmp_path):
    image_path, config = _files(tmp_path)
    labels = sitk.GetImageFromArray(_truth_zyx()[:, :, :-1].copy())
    labels.SetSpacing(SPACING)
    labels.SetOrigin(ORIGIN)
    labels.SetDirection(DIRECTION)
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    config = export.ExportConfig(image_path, tmp_path / "labels.nii.gz", config.dataset, "c1")
    with pytest.raises(InputError, match=r"labels\.nii\.gz: label map grid differs from its image \(size"):
        export.export_case(config)


@pytest.mark.parametrize("case_id", ["", "../x", "a/b", ".hidden", "a b"])
def test_bad_case_ids_are_refused(tmp_path, case_id):
    _, config = _files(tmp_path, case_id=case_id)
    with pytest.raises(InputError, match="is not valid"):
        export.export_case(config)


def test_command_line(tmp_path, capsys):
    image_path, config = _files(tmp_path)
    _single_layer_seg(tmp_path, _image())
    argv = ["export", "--image", str(image_path), "--segmentation", str(config.segmentation),
            "--dataset", str(config.dataset), "--case-id", "case7"]
    assert main(argv) == 0
    assert str(dataset.CaseFiles(config.dataset, "case7", "ct").sidecar) in capsys.readouterr().out
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("name, expected", [
    ("3: CT Chest", "3_CT_Chest"), ("ct", "ct"), ("  ..Ünïcode//spine.. ", "n_code_spine"), (":::", "case"),
    ("a..b", "a_b"), ("x" * 200, "x" * 128),
])
def test_case_id_from_any_name_is_one_the_export_accepts(tmp_path, name, expected):
    case_id = export.case_id_from_name(name)
    assert case_id == expected
    assert export.validate_case_id(case_id, tmp_path) == case_id


def test_a_new_case_goes_only_into_a_dataset_folder(tmp_path):
    image_path, config = _files(tmp_path)
    _single_layer_seg(tmp_path, _image())
    files = export.export_case(config)
    for root, pattern in ((files.root / "rawdata", r"lies inside a dataset \(.*rawdata\); export into the dataset"),
                          (files.labels.parent, r"lies inside a dataset \(.*derivatives\)"),
                          (files.image, r"case7_ct\.nii\.gz: is a file, not a dataset folder")):
        with pytest.raises(InputError, match=pattern):
            export.export_case(export.ExportConfig(image_path, config.segmentation, root, "other"))
    assert [c.case_id for c in dataset.list_cases(files.root)] == ["case7"]
    assert sorted(p.name for p in (files.root / "rawdata").iterdir()) == ["case7"]
    with pytest.raises(InputError, match=r"data: modality 'xr' is not one of"):
        export.new_case_files(files.root, "other", "xr")


def test_levels_missing_between_the_labelled_ones_are_named_in_a_warning(tmp_path, caplog):
    named = [anatomy.label_of(n) for n in ("L4", "L6")]
    assert export.warn_missing_levels(named, "f") == ["L5"]
    assert "f: no vertebra labelled L5 between L4 and L6" in caplog.text
    for names in (("T12", "T13", "L1"), ("T12", "L1", "L2", "L3", "L4"), ("C1",), ()):
        assert export.warn_missing_levels([anatomy.label_of(n) for n in names], "f") == []
    image_path, config = _files(tmp_path)
    _single_layer_seg(tmp_path, _image(), ("L1", "T10"))  # T11 and T12 between them are not labelled
    caplog.clear()
    export.export_case(config)
    assert "corrected.seg.nrrd: no vertebra labelled T11, T12 between T10 and L1" in caplog.text

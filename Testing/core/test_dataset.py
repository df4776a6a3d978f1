"""Dataset layout: VerSe-compatible names, atomic case writing, sidecars and derived info."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from vertebra_traversal import dataset
from vertebra_traversal.imageio import InputError


def _case(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(10, 12, 14)).astype(np.float32))
    labels_array = np.zeros((10, 12, 14), np.uint8)
    labels_array[2:4, 3:7, 4:8] = 20  # L1: centroid index (i, j, k) = (5.5, 4.5, 2.5)
    labels_array[6:9, 3:7, 4:8] = 19
    for img in (image,):
        img.SetSpacing((1.0, 2.0, 3.0))
        img.SetOrigin((10.0, 20.0, 30.0))
        img.SetDirection(direction)
    labels = sitk.GetImageFromArray(labels_array)
    labels.CopyInformation(image)
    records = [dataset.VertebraRecord(20, "L1", False, [15.5, 29.0, 37.5]),
               dataset.VertebraRecord(19, "T12", True, [15.5, 29.0, 51.0], {"type": "wedge", "grade": 2, "height_loss": 0.3})]
    return image, labels, dataset.CaseInfo("case01", "ct", "vertebra", records, {"generator": "test"})


def test_write_and_read_back_a_case(tmp_path):
    image, labels, info = _case()
    files = dataset.write_case(tmp_path, info, image, labels)
    assert files.image == tmp_path / "rawdata/case01/case01_ct.nii.gz"
    assert files.labels == tmp_path / "derivatives/case01/case01_seg-vert_msk.nii.gz"
    assert [c.case_id for c in dataset.list_cases(tmp_path)] == ["case01"]
    back = dataset.read_case_info(files)
    assert back.vertebrae == info.vertebrae and back.target == "vertebra"
    centroids = json.loads(files.centroids.read_text())
    assert centroids[0] == {"direction": ["L", "P", "S"]}
    l1 = next(c for c in centroids[1:] if c["label"] == 20)
    assert (l1["X"], l1["Y"], l1["Z"]) == pytest.approx((5.5, 4.5, 2.5))
    assert not list(tmp_path.glob(".staging-*"))


def test_existing_case_is_never_overwritten(tmp_path):
    image, labels, info = _case()
    files = dataset.write_case(tmp_path, info, image, labels)
    before = files.labels.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        dataset.write_case(tmp_path, info, image, labels * 0)
    assert files.labels.read_bytes() == before


def test_verse_case_without_sidecar_is_derived_from_labels(tmp_path):
    image, labels, info = _case(direction=(0, 0, 1, 1, 0, 0, 0, 1, 0))
    files = dataset.write_case(tmp_path, info, image, labels)
    files.sidecar.unlink()
    derived = dataset.read_case_info(files, labels=labels)
    assert [v.label for v in derived.vertebrae] == [19, 20] and all(v.complete for v in derived.vertebrae)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    np.testing.assert_allclose(derived.vertebrae[1].centroid_lps_mm, stats.GetCentroid(20))


def test_empty_or_missing_dataset_folder(tmp_path):
    with pytest.raises(InputError, match="no cases found"):
        dataset.list_cases(tmp_path)
    with pytest.raises(InputError, match="dataset folder not found"):
        dataset.list_cases(tmp_path / "nope")

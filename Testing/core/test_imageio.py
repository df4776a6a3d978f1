"""Image reading refuses bad input with one message naming the file; writes are atomic."""
import os
import stat

import numpy as np
import pytest
import SimpleITK as sitk

from vertebra_traversal.imageio import (InputError, grid_difference, read_image, read_label_map, same_grid, write_bytes_atomic,
                                       write_image_atomic)


def _image(array, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def _with_nan():
    array = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    array[1, 1, 1] = np.inf
    return array


@pytest.fixture()
def ramp():
    return np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)


def test_reads_back_what_was_written(tmp_path, ramp):
    path = write_image_atomic(_image(ramp, (0.5, 0.7, 2.0)), tmp_path / "a.nii.gz")
    image = read_image(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), ramp)
    assert image.GetSpacing() == pytest.approx((0.5, 0.7, 2.0))
    assert [p.name for p in tmp_path.iterdir()] == ["a.nii.gz"]  # no temporary file left


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_writes_get_the_permissions_of_a_new_file_not_of_a_temporary_one(tmp_path):
    old = os.umask(0o027)
    try:
        written = write_bytes_atomic(b"{}", tmp_path / "report.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(written.stat().st_mode) == 0o640  # 0o666 less the umask; mkstemp alone gives 0o600


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.nii.gz", "file not found"),
    (lambda d: (d / "junk.nii.gz").write_bytes(b"not an image") and d / "junk.nii.gz", "cannot read image"),
    (lambda d: write_image_atomic(sitk.GetImageFromArray(np.ones((4, 5), np.float32) * [1, 2, 3, 4, 5]), d / "flat.nii.gz"), "expected a 3D image"),
    (lambda d: write_image_atomic(_image(np.zeros((3, 4, 5), np.float32)), d / "const.nii.gz"), "constant"),
    (lambda d: write_image_atomic(_image(_with_nan()), d / "nan.mha"), "NaN"),  # NIfTI readers zero NaNs
    (lambda d: write_image_atomic(_image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), (1, 1, 500)), d / "far.nii.gz"), "absurd voxel spacing"),
])
def test_bad_images_give_one_clear_message_naming_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_four_d_image_is_refused(tmp_path):
    image = sitk.JoinSeries([_image(np.arange(60, dtype=np.float32).reshape(3, 4, 5))] * 2)
    path = write_image_atomic(image, tmp_path / "4d.nii.gz")
    with pytest.raises(InputError, match="expected a 3D image, got 4D"):
        read_image(path)


def test_label_map_checks_ids_and_grid(tmp_path, ramp):
    reference = _image(ramp)
    labels = np.zeros(ramp.shape, np.uint8)
    labels[1, 1, 1], labels[2, 2, 2], labels[3, 3, 3] = 20, 26, 28
    path = write_image_atomic(_image(labels), tmp_path / "l.nii.gz")
    out = sitk.GetArrayFromImage(read_label_map(path, reference=reference))
    assert sorted(np.unique(out)) == [0, 20, 28]  # sacrum (26) dropped
    labels[0, 0, 0] = 99
    bad = write_image_atomic(_image(labels), tmp_path / "bad.nii.gz")
    with pytest.raises(InputError, match=r"unknown label ids \[99\]"):
        read_label_map(bad)
    other = write_image_atomic(_image(labels * 0, (2.0, 1.0, 1.0)), tmp_path / "other.nii.gz")
    with pytest.raises(InputError, match=r"differs from its image \(spacing \(2\.0, 1\.0, 1\.0\) against"):
        read_label_map(other, reference=reference)
    shifted = _image(labels * 0)
    shifted.SetOrigin((0.0, 0.0, 20.0))  # only the origin differs: the message must say so
    with pytest.raises(InputError, match=r"\(origin \(0\.0, 0\.0, 20\.0\) against \(0\.0, 0\.0, 0\.0\)\)$"):
        read_label_map(write_image_atomic(shifted, tmp_path / "shifted.nii.gz"), reference=reference)


def test_same_grid_compares_geometry(ramp):
    a, b = _image(ramp), _image(ramp)
    assert same_grid(a, b)
    b.SetOrigin((0.0, 0.0, 1.0))
    assert not same_grid(a, b)
    assert grid_difference(a, b) == "origin (0.0, 0.0, 0.0) against (0.0, 0.0, 1.0)"
    b.SetOrigin(a.GetOrigin())
    b.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    assert grid_difference(a, b).startswith("direction (1.0, 0.0, 0.0,") and not same_grid(a, b)


def test_json_documents_are_checked_for_their_format(tmp_path):
    from vertebra_traversal.imageio import read_json_document, write_json_atomic

    good = write_json_atomic({"format": "thing", "x": 1}, tmp_path / "good.json")
    assert read_json_document(good, "thing", "thing file")["x"] == 1
    other = write_json_atomic({"format": "other"}, tmp_path / "other.json")
    with pytest.raises(InputError, match=r"other.json: not a thing sidecar"):
        read_json_document(other, "thing", "sidecar")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match=r"broken.json: cannot read sidecar"):
        read_json_document(tmp_path / "broken.json", "thing", "sidecar")

"""Tests for vertebra_traversal.geometry: the model grid (paper §3.1) and its inverse."""
import numpy as np
import pytest
import SimpleITK as sitk

from vertebra_traversal import geometry

ORIENTATIONS = ["LPS", "RAS", "PIR", "ASL", "ILP", "RPI"]


def _lps_image(array_zyx, spacing=(1.0, 1.0, 1.0), origin=(-10.0, 20.0, -30.0)):
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _linear_field(shape_zyx, spacing, origin):
    """Image whose value is x + 10 y + 100 z of each voxel centre (LPS mm)."""
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape_zyx], indexing="ij")
    x, y, z = (origin[a] + idx * spacing[a] for a, idx in enumerate((i, j, k)))
    return _lps_image((x + 10 * y + 100 * z).astype(np.float32), spacing, origin)


@pytest.mark.parametrize("code", ORIENTATIONS)
def test_model_grid_axes_run_superior_posterior_left(code):
    origin = (-10.0, 20.0, -30.0)
    image = sitk.DICOMOrient(_linear_field((5, 6, 7), (2.0, 2.0, 2.0), origin), code)
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection()) == code
    model = geometry.to_model_grid(image, (1.0, 1.0, 1.0))
    assert model.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    array = sitk.GetArrayFromImage(model)
    assert array.shape == (9, 11, 13)  # (n - 1) * 2 + 1 voxels of 1 mm cover the same extent
    np.testing.assert_allclose(model.GetOrigin(), origin, atol=1e-9)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in array.shape], indexing="ij")
    expected = (origin[0] + i) + 10 * (origin[1] + j) + 100 * (origin[2] + k)
    np.testing.assert_allclose(array, expected, atol=1e-2)


@pytest.mark.parametrize("code", ORIENTATIONS[1:])
def test_same_content_in_any_storage_orientation_gives_same_model_array(code):
    rng = np.random.default_rng(1)
    base = _lps_image(rng.normal(size=(9, 10, 12)).astype(np.float32), spacing=(0.7, 1.3, 2.5))
    reoriented = sitk.DICOMOrient(base, code)
    expected = sitk.GetArrayFromImage(geometry.to_model_grid(base, (1.0, 1.0, 1.0)))
    actual = geometry.to_model_grid(reoriented, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(sitk.GetArrayFromImage(actual), expected, atol=1e-4)


@pytest.mark.parametrize("code", ["LPS", "RAS", "PIR", "ILP"])
def test_label_round_trip_is_exact_for_equal_spacing(code):
    rng = np.random.default_rng(2)
    labels = _lps_image(rng.integers(0, 26, size=(8, 9, 10)).astype(np.uint8), spacing=(0.8, 1.0, 2.0))
    reference = sitk.DICOMOrient(labels, code)
    model = geometry.to_model_grid(reference, (0.8, 1.0, 2.0), interpolator="nearest")
    assert model.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(model), sitk.GetArrayFromImage(labels))
    back = geometry.from_model_grid(model, reference)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(reference))
    assert back.GetSize() == reference.GetSize() and back.GetSpacing() == reference.GetSpacing()
    assert back.GetOrigin() == reference.GetOrigin() and back.GetDirection() == reference.GetDirection()
    assert back.GetPixelID() == sitk.sitkUInt8


def test_from_model_grid_takes_reference_grid_exactly_and_zero_outside():
    model = _lps_image(np.full((4, 4, 4), 7, dtype=np.uint8), origin=(0.0, 0.0, 0.0))
    reference = _lps_image(np.zeros((3, 3, 10), dtype=np.float32), spacing=(0.5, 0.5, 0.5), origin=(1.0, 1.0, 1.0))
    reference.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS: x and y run the other way
    back = geometry.from_model_grid(model, reference)
    assert back.GetDirection() == reference.GetDirection() and back.GetOrigin() == reference.GetOrigin()
    array = sitk.GetArrayFromImage(back)
    # x = 1 - 0.5 i: inside the model's nearest-neighbour reach [-0.5, 3.5] mm for i <= 2, outside for i >= 4
    assert np.all(array[:, :, :3] == 7) and np.all(array[:, :, 4:] == 0)


@pytest.mark.parametrize("code", ["LPS", "RAS", "PIR"])
def test_linear_label_interpolation_removes_the_coarse_staircase_of_two_balls(code):
    """Two balls (r 9 mm, ids 3 and 5) on a 1 mm grid, through a 2.5 mm model grid and back."""
    z, y, x = np.mgrid[:40, :40, :60].astype(np.float64) + 0.5
    truth = np.zeros((40, 40, 60), np.uint8)
    truth[(z - 20) ** 2 + (y - 20) ** 2 + (x - 15) ** 2 <= 81] = 3
    truth[(z - 20) ** 2 + (y - 20) ** 2 + (x - 40) ** 2 <= 81] = 5
    reference = sitk.DICOMOrient(_lps_image(truth, origin=(3.0, -2.0, 5.0)), code)
    truth = sitk.GetArrayFromImage(reference)
    model = geometry.to_model_grid(reference, (2.5, 2.5, 2.5), interpolator="nearest")
    dice = {}
    for interpolator in geometry.LABEL_INTERPOLATORS:
        back = geometry.from_model_grid(model, reference, interpolator)
        assert back.GetOrigin() == reference.GetOrigin() and back.GetDirection() == reference.GetDirection()
        array = sitk.GetArrayFromImage(back)
        assert set(np.unique(array)) == {0, 3, 5}
        dice[interpolator] = [2 * np.sum((array == k) & (truth == k)) / (np.sum(array == k) + np.sum(truth == k))
                              for k in (3, 5)]
    assert max(dice["nearest"]) < 0.90 and min(dice["linear"]) > 0.94
    with pytest.raises(ValueError, match="interpolator"):
        geometry.from_model_grid(model, reference, "gaussian")


def test_linear_label_interpolation_keeps_labels_whole_on_an_equal_grid_and_zero_outside():
    labels = np.zeros((6, 8, 10), np.uint8)
    labels[1:5, 2:6, 1:4] = 7
    labels[1:5, 2:6, 6:9] = 9
    reference = _lps_image(labels, spacing=(1.0, 1.0, 1.0))
    back = geometry.from_model_grid(geometry.to_model_grid(reference, (1.0, 1.0, 1.0), "nearest"), reference, "linear")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    far = _lps_image(np.full((3, 3, 3), 4, np.uint8), origin=(500.0, 0.0, 0.0))
    assert sitk.GetArrayFromImage(geometry.from_model_grid(far, reference, "linear")).max() == 0


def test_oblique_image_is_covered_and_outside_gets_image_minimum():
    rng = np.random.default_rng(3)
    image = _lps_image(rng.uniform(5.0, 10.0, size=(6, 12, 12)).astype(np.float32))
    angle = np.deg2rad(30.0)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    model = geometry.to_model_grid(image, (1.0, 1.0, 1.0))
    low, high = geometry.physical_bounds(image)
    model_low = np.asarray(model.GetOrigin())
    model_high = geometry.model_index_to_lps(model, np.asarray(model.GetSize()[::-1]) - 1.0)
    assert np.all(model_low <= low + 1e-6) and np.all(model_high >= high - 1e-6)
    assert np.all(model_high - high < 1.0 + 1e-6)  # no more than one extra voxel
    array = sitk.GetArrayFromImage(model)
    minimum = float(sitk.GetArrayViewFromImage(image).min())
    assert array[0, 0, 0] == pytest.approx(minimum)  # the corner of the bounding box is outside the image
    labels = geometry.to_model_grid(sitk.Cast(image > 0, sitk.sitkUInt8), (1.0, 1.0, 1.0), "nearest")
    assert sitk.GetArrayViewFromImage(labels)[0, 0, 0] == 0


def test_downsampling_is_anti_aliased():
    stripes = np.tile(np.array([1.0, -1.0], dtype=np.float32), 20)  # period 1 mm at 0.5 mm spacing
    image = _lps_image(np.broadcast_to(stripes, (6, 6, 40)).copy(), spacing=(0.5, 2.0, 2.0))
    model = sitk.GetArrayFromImage(geometry.to_model_grid(image, (2.0, 2.0, 2.0)))
    assert np.abs(model[:, :, 1:-1]).max() < 0.2  # without the filter every sample would be +-1
    constant = _lps_image(np.full((6, 6, 40), 3.0, dtype=np.float32), spacing=(0.5, 2.0, 2.0))
    np.testing.assert_allclose(sitk.GetArrayFromImage(geometry.to_model_grid(constant, (2.0, 2.0, 2.0))), 3.0,
                               atol=1e-5)


@pytest.mark.parametrize("shape, minimum, offset, padded", [
    ((3, 4, 5), (3, 4, 5), (0, 0, 0), (3, 4, 5)),
    ((3, 4, 5), (6, 7, 2), (1, 1, 0), (6, 7, 5)),
    ((2, 2, 2), (5, 2, 4), (1, 0, 1), (5, 2, 4)),
])
def test_pad_to_shape_and_back(shape, minimum, offset, padded):
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1
    out, got_offset = geometry.pad_to_shape(array, minimum, value=-1.0)
    assert out.shape == padded and got_offset == offset
    assert np.count_nonzero(out == -1.0) == out.size - array.size
    np.testing.assert_array_equal(geometry.crop_padding(out, got_offset, shape), array)


def test_crop_padding_refuses_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        geometry.crop_padding(np.zeros((3, 3, 3)), (1, 0, 0), (3, 3, 3))


@pytest.mark.parametrize("direction", [None, (0, 0, -1, 1, 0, 0, 0, -1, 0)])
def test_model_index_to_lps_matches_simpleitk(direction):
    image = _lps_image(np.zeros((5, 6, 7), dtype=np.float32), spacing=(0.5, 1.5, 2.0))
    if direction is not None:
        image.SetDirection(direction)
    rng = np.random.default_rng(4)
    indices = rng.uniform(-2, 8, size=(10, 3))
    points = geometry.model_index_to_lps(image, indices)
    assert points.shape == (10, 3)
    for index, point in zip(indices, points):
        expected = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index[::-1]])
        np.testing.assert_allclose(geometry.model_index_to_lps(image, index), expected, atol=1e-9)
        np.testing.assert_allclose(point, expected, atol=1e-9)


@pytest.mark.parametrize("code", ["LPS", "RAS", "PIR", "ILP"])
def test_crop_z_keeps_slices_within_range(code):
    base = _linear_field((10, 3, 4), (1.0, 1.0, 2.0), (0.0, 0.0, -10.0))  # z = -10, -8, ..., 8
    image = sitk.DICOMOrient(base, code)
    cropped = geometry.crop_z(image, -5.0, 3.0)
    axis = geometry.superior_axis(image)
    assert cropped.GetSize()[axis] == 4  # z = -4, -2, 0, 2
    model = sitk.GetArrayFromImage(geometry.to_model_grid(cropped, (1.0, 1.0, 2.0)))
    np.testing.assert_allclose(model, sitk.GetArrayFromImage(base)[3:7], atol=1e-3)


def test_crop_z_refuses_empty_ranges():
    image = _lps_image(np.zeros((4, 3, 3), dtype=np.float32), origin=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="holds no slice"):
        geometry.crop_z(image, 10.0, 20.0)
    with pytest.raises(ValueError, match="z_min_mm < z_max_mm"):
        geometry.crop_z(image, 2.0, 1.0)


def test_bad_arguments_raise():
    image = _lps_image(np.zeros((3, 3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="interpolator"):
        geometry.to_model_grid(image, (1, 1, 1), interpolator="cubic")
    with pytest.raises(ValueError, match="positive"):
        geometry.to_model_grid(image, (1, 0, 1))


@pytest.mark.parametrize("code", ORIENTATIONS)
def test_distance_below_is_measured_to_the_outer_face_in_any_storage_orientation(code):
    # 10 x 20 x 30 voxels of 1 x 2 x 3 mm; the point 4.5 voxels of 3 mm above the lowest voxel centre of the
    # superior axis (wherever that axis is stored) lies 4.5 * 3 + 1.5 = 15 mm above the inferior face
    image = sitk.DICOMOrient(_lps_image(np.zeros((30, 20, 10), np.uint8), spacing=(1.0, 2.0, 3.0)), code)
    low, high = geometry.physical_bounds(image)
    centre = (low + high) / 2
    assert geometry.distance_below_mm(image, (centre[0], centre[1], low[2] + 13.5)) == pytest.approx(15.0)
    assert geometry.distance_below_mm(image, (centre[0], centre[1], low[2] - 1.6)) == 0.0  # below the scan
    assert geometry.distance_below_mm(image, (high[0] + 1.0, centre[1], centre[2])) == 0.0  # beside it


def test_distance_below_follows_the_patients_axis_through_an_oblique_scan():
    image = _lps_image(np.zeros((10, 10, 10), np.uint8), spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0))
    tilt = np.deg2rad(30.0)  # the k axis tilted 30 degrees from z towards x
    image.SetDirection((np.cos(tilt), 0.0, np.sin(tilt), 0.0, 1.0, 0.0, -np.sin(tilt), 0.0, np.cos(tilt)))
    point = image.TransformContinuousIndexToPhysicalPoint((4.5, 4.5, 4.5))  # the middle of the scan
    # straight down: every index axis with a z component moves; the k face (5 voxels away along k, which
    # moves cos 30 per mm of z) is reached after 10 / cos 30 mm, before the i face (10 / sin 30 mm)
    assert geometry.distance_below_mm(image, point) == pytest.approx(10.0 / np.cos(tilt))


def test_box_voxels_gives_whole_array_indices_of_one_label_inside_the_box():
    labels = np.zeros((6, 5, 4), np.int16)
    labels[1, 2, 3] = labels[4, 0, 1] = 7
    labels[2, 2, 2] = 3  # another label inside the box
    labels[0, 0, 0] = 7  # the same label outside the box
    z, y, x = geometry.box_voxels(labels, 7, (slice(1, 6), slice(0, 5), slice(1, 4)))
    assert sorted(zip(z.tolist(), y.tolist(), x.tolist())) == [(1, 2, 3), (4, 0, 1)]
    z, _, _ = geometry.box_voxels(labels, 7, (slice(None),) * 3)  # an open box: the whole array
    assert sorted(z.tolist()) == [0, 1, 4]


def _image_of_length(length_mm):
    image = sitk.Image(4, 4, int(length_mm / 2) + 1, sitk.sitkFloat32)
    image.SetSpacing((1.0, 1.0, 2.0))
    image.SetOrigin((0.0, 0.0, -300.0))
    return image


def test_crops_are_20_to_40_percent_of_the_scan_at_least_150_mm_and_inside_it():
    rng = np.random.default_rng(0)
    for length, low, high in ((1000, 200, 400), (500, 150, 200), (100, 100, 100)):
        image = _image_of_length(length)
        for _ in range(20):
            z0, z1 = geometry.crop_range_mm(image, rng)
            assert low - 1e-6 <= z1 - z0 <= high + 1e-6 and -300 - 1e-6 <= z0 and z1 <= -300 + length + 1e-6

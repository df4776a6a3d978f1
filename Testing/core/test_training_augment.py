"""Augmentations keep shapes, dtypes and label ids; deformation and cropping behave as specified."""
from __future__ import annotations

import numpy as np

from vertebra_traversal.training import augment as A

ALL_ON = A.AugmentConfig(elastic_probability=1.0, noise_probability=1.0, smooth_probability=1.0,
                         intensity_probability=1.0, z_crop_probability=1.0)


def _patch(size: int = 16):
    image = np.full((size,) * 3, -1.0, np.float32)
    labels = np.zeros((size,) * 3, np.uint8)
    labels[3:7, 4:12, 4:12] = 23
    labels[9:13, 4:12, 4:12] = 22
    image[labels > 0] = 0.5
    return image, labels


def test_augment_preserves_shapes_dtypes_and_label_ids():
    image, labels = _patch()
    for seed in range(5):
        out, out_labels = A.augment_patch(image, labels, 2.0, np.random.default_rng(seed), ALL_ON, fill=-1.0)
        assert out.shape == image.shape and out.dtype == np.float32
        assert out_labels.shape == labels.shape and out_labels.dtype == np.uint8
        assert set(np.unique(out_labels)) <= {0, 22, 23}
        assert np.count_nonzero(out_labels) > 0.5 * np.count_nonzero(labels)
        assert not np.array_equal(out, image)


def test_disabled_augmentation_is_identity():
    image, labels = _patch()
    out, out_labels = A.augment_patch(image, labels, 2.0, np.random.default_rng(0),
                                      A.AugmentConfig(enabled=False), fill=-1.0)
    assert out is image and out_labels is labels
    assert A.random_z_window(50, np.random.default_rng(0), A.AugmentConfig(enabled=False)) == (0, 50)


def test_elastic_deform_with_a_constant_shift_moves_labels_by_one_voxel():
    image, labels = _patch()
    shift = np.zeros((3,) + image.shape, np.float32)
    shift[2] = 1.0                                   # sample at x + 1: content moves one voxel to -x
    out, out_labels = A.elastic_deform(image, labels, shift, fill=-1.0)
    assert np.array_equal(out_labels[:, :, :-1], labels[:, :, 1:]) and np.all(out_labels[:, :, -1] == 0)
    assert np.allclose(out[:, :, :-1], image[:, :, 1:]) and np.all(out[:, :, -1] == -1.0)
    same, same_labels = A.elastic_deform(image, labels, np.zeros_like(shift), fill=-1.0)
    assert np.array_equal(same_labels, labels) and np.allclose(same, image)


def test_displacement_field_is_smooth_and_scaled():
    rng = np.random.default_rng(0)
    field = A.displacement_field((32, 32, 32), 2.0, rng, std_mm=4.0, grid_mm=32.0)
    assert field.shape == (3, 32, 32, 32) and field.dtype == np.float32
    assert 0.5 < field.std() < 4.0                    # control points have std 2 voxels
    assert np.abs(np.diff(field, axis=1)).max() < 1.0  # neighbouring voxels move almost together
    zero = A.displacement_field((8, 8, 8), 1.0, rng, std_mm=0.0, grid_mm=16.0)
    assert np.all(zero == 0)


def test_linear_interpolation_matrix_rows_sum_to_one_and_hit_the_nodes():
    m = A._linear_matrix(9, 3)
    assert np.allclose(m.sum(1), 1.0)
    assert np.allclose(m[0], [1, 0, 0]) and np.allclose(m[4], [0, 1, 0]) and np.allclose(m[8], [0, 0, 1])


def test_random_z_window_bounds():
    rng = np.random.default_rng(0)
    lengths = set()
    for _ in range(200):
        lo, hi = A.random_z_window(100, rng, ALL_ON)
        assert 0 <= lo < hi <= 100 and hi - lo >= 40
        lengths.add(hi - lo)
    assert len(lengths) > 20
    never = A.AugmentConfig(z_crop_probability=0.0)
    assert A.random_z_window(100, rng, never) == (0, 100)

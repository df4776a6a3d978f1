"""Tests of CT surface refinement (paper §3.1) and the component helpers, on hand-built volumes."""
from __future__ import annotations

import numpy as np
import pytest

from vertebra_traversal.postprocess import (edge_contact_mm2, grow_into_bone, is_complete, keep_largest_component,
                                            labels_at_edge,
                                            largest_component_per_label, refine_surface_ct, surface_passes,
                                            surface_voxels)

CUBE = (slice(2, 7),) * 3  # a 5^3 cube in a 9^3 volume
INNER = (slice(3, 6),) * 3  # its 3^3 interior
CORE = (slice(4, 5),) * 3  # the single centre voxel


def cube_labels(value: int = 1, dtype=np.uint8) -> np.ndarray:
    labels = np.zeros((9, 9, 9), dtype=dtype)
    labels[CUBE] = value
    return labels


def expected(region, value: int = 1) -> np.ndarray:
    out = np.zeros((9, 9, 9), dtype=np.uint8)
    out[region] = value
    return out


@pytest.mark.parametrize("iterations, region", [(1, INNER), (2, CORE)])
def test_low_density_cube_is_peeled_one_layer_per_iteration(iterations, region):
    hu = np.full((9, 9, 9), 100.0)
    np.testing.assert_array_equal(refine_surface_ct(cube_labels(7), hu, 200.0, iterations), expected(region, 7))


def test_three_passes_remove_the_whole_low_density_cube():
    assert not refine_surface_ct(cube_labels(), np.full((9, 9, 9), 100.0), iterations=3).any()


def test_dense_shell_keeps_its_low_density_core():
    hu = np.full((9, 9, 9), 500.0)
    hu[INNER] = 0.0
    labels = cube_labels()
    np.testing.assert_array_equal(refine_surface_ct(labels, hu, iterations=5), labels)


def test_only_low_surface_voxels_go():
    hu = np.full((9, 9, 9), 500.0)
    hu[2, :, :] = 150.0  # the bottom face of the cube is soft
    hu[4, 4, 4] = 150.0  # so is an interior voxel, which must stay
    want = cube_labels()
    want[2, :, :] = 0
    np.testing.assert_array_equal(refine_surface_ct(cube_labels(), hu, 200.0, iterations=2), want)


def test_threshold_is_strict_below():
    hu = np.full((9, 9, 9), 200.0)
    np.testing.assert_array_equal(refine_surface_ct(cube_labels(), hu, 200.0), cube_labels())


def test_contact_with_another_instance_is_surface():
    labels = np.zeros((10, 7, 7), dtype=np.int16)
    labels[2:5, 1:6, 1:6] = 1
    labels[5:8, 1:6, 1:6] = 2  # touching label 1 at the z = 4 / z = 5 planes
    hu = np.full(labels.shape, 900.0)
    hu[4:6, 2:5, 2:5] = 100.0  # soft only where the two meet, away from the side faces
    want = labels.copy()
    want[4:6, 2:5, 2:5] = 0
    np.testing.assert_array_equal(refine_surface_ct(labels, hu), want)


def test_the_image_border_is_not_a_surface():
    labels = np.zeros((5, 5, 5), dtype=np.uint8)
    labels[:, :, 0:3] = 4  # cut by the field of view on five sides
    hu = np.zeros((5, 5, 5))
    want = labels.copy()
    want[:, :, 2] = 0  # only the face towards the background goes
    np.testing.assert_array_equal(refine_surface_ct(labels, hu), want)
    full = np.full((5, 5, 5), 4, dtype=np.uint8)
    np.testing.assert_array_equal(refine_surface_ct(full, hu), full)


def test_input_untouched_dtype_kept_and_zero_iterations_copy():
    labels = cube_labels(3, np.int16)
    before = labels.copy()
    hu = np.zeros((9, 9, 9), dtype=np.int16)
    out = refine_surface_ct(labels, hu)
    np.testing.assert_array_equal(labels, before)
    assert out.dtype == np.int16 and out.sum() == 3 * 27
    same = refine_surface_ct(labels, hu, iterations=0)
    np.testing.assert_array_equal(same, labels)
    assert same is not labels


@pytest.mark.parametrize("labels, hu, iterations", [
    (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5)), 1),
    (np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4)), 1),
    (np.zeros((4, 4), np.uint8), np.zeros((4, 4)), 1),
    (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4)), -1),
])
def test_bad_arguments_are_refused(labels, hu, iterations):
    with pytest.raises(ValueError):
        refine_surface_ct(labels, hu, iterations=iterations)


@pytest.mark.parametrize("model, image, passes", [
    ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 1),          # the paper: one layer
    ((1.0, 1.0, 1.0), (0.8, 0.8, 3.0), 1),          # 1.25 rounds down
    ((2.5, 2.5, 2.5), (1.45, 1.45, 1.83), 2),       # compact model on a held-out phantom
    ((2.5, 2.5, 2.5), (1.0, 1.0, 2.0), 3),          # 2.5 rounds half up
    ((2.5, 2.5, 2.5), (3.0, 3.0, 5.0), 1),          # image coarser than the model: still one
])
def test_surface_passes_make_one_model_voxel(model, image, passes):
    assert surface_passes(model, image) == passes


def test_surface_voxels_of_a_cube():
    mask = cube_labels().astype(bool)
    assert surface_voxels(mask).sum() == 5 ** 3 - 3 ** 3
    assert not surface_voxels(mask)[INNER].any()


def test_keep_largest_component():
    mask = np.zeros((10, 10, 10), bool)
    mask[0:2, 0:2, 0:2] = True  # 8 voxels
    mask[5:8, 5:8, 5:8] = True  # 27 voxels
    want = np.zeros_like(mask)
    want[5:8, 5:8, 5:8] = True
    np.testing.assert_array_equal(keep_largest_component(mask), want)
    assert not keep_largest_component(np.zeros((3, 3, 3))).any()


def test_connectivity_decides_whether_corner_contacts_join():
    mask = np.zeros((6, 6, 6), bool)
    mask[0:2, 0:2, 0:2] = True  # 8 voxels
    mask[2:5, 2:5, 2:5] = True  # 27 voxels, touching the first at one corner only
    assert keep_largest_component(mask, connectivity=1).sum() == 27
    assert keep_largest_component(mask, connectivity=3).sum() == 35
    with pytest.raises(ValueError):
        keep_largest_component(mask, connectivity=4)


def test_largest_component_per_label():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[0:3, 0:3, 0:3] = 20
    labels[8:10, 8:10, 8:10] = 20  # a stray piece of the same vertebra
    labels[5:7, 0:2, 0:2] = 21
    want = labels.copy()
    want[8:10, 8:10, 8:10] = 0
    np.testing.assert_array_equal(largest_component_per_label(labels), want)
    with pytest.raises(ValueError):
        largest_component_per_label(labels.astype(float))


def test_labels_at_edge_are_those_on_any_of_the_six_faces():
    labels = np.zeros((9, 8, 7), np.uint8)
    labels[4, 4, 3] = 1                                   # interior
    for value, index in zip(range(2, 8), [(0, 3, 3), (8, 3, 3), (4, 0, 3), (4, 7, 3), (4, 4, 0), (4, 4, 6)]):
        labels[index] = value                              # one label on each face
    labels[1:8, 1:7, 1] = np.where(labels[1:8, 1:7, 1] == 0, 9, labels[1:8, 1:7, 1])  # one voxel off the face
    assert labels_at_edge(labels) == {2, 3, 4, 5, 6, 7}
    assert labels_at_edge(np.zeros((3, 3, 3), np.int16)) == set()
    with pytest.raises(ValueError, match="3D"):
        labels_at_edge(np.zeros((3, 3), np.uint8))


def test_labels_at_edge_margin_counts_layers_by_each_axis_spacing():
    labels = np.zeros((12, 30, 14), np.uint8)     # every label >= 6 mm from the faces not named
    labels[2, 15, 7] = 1           # centre 2 layers x 2.0 mm = 4 mm from the z=0 layer
    labels[6, 28, 7] = 2           # 1 layer x 0.5 mm = 0.5 mm from the y=29 layer
    labels[6, 15, 4] = 3           # 4 layers x 1.0 mm = 4 mm from the x=0 layer
    spacing = (2.0, 0.5, 1.0)      # z, y, x (mm)
    assert labels_at_edge(labels, spacing) == set()
    assert labels_at_edge(labels, spacing, 0.5) == {2}
    assert labels_at_edge(labels, spacing, 3.99) == {2}
    assert labels_at_edge(labels, spacing, 4.0) == {1, 2, 3}
    assert labels_at_edge(labels, (1.0, 1.0, 1.0), 100.0) == {1, 2, 3}   # wider than the volume
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="margin_mm"):
            labels_at_edge(labels, spacing, bad)
    with pytest.raises(ValueError, match="spacing_zyx"):
        labels_at_edge(labels, (1.0, 0.0, 1.0), 1.0)


def test_edge_contact_is_the_area_a_label_covers_on_the_faces_and_decides_with_a_smallest_area():
    labels = np.zeros((10, 12, 14), np.uint8)
    labels[0, 4:7, 5:9] = 1        # 3 x 4 voxels on the z=0 face
    labels[1, 4:8, 5:9] = 1        # one layer in: counts only within a margin (4 x 4 projected)
    labels[4:6, 11, 5:8] = 2       # 2 x 3 voxels on the y=11 face
    labels[5, 5, 5] = 3            # inside, beyond 2 mm of every face
    spacing = (2.0, 1.0, 0.5)      # z, y, x (mm): a z face voxel is 0.5 mm², a y face voxel 1 mm²
    assert edge_contact_mm2(labels, spacing) == {1: 6.0, 2: 6.0}
    assert edge_contact_mm2(labels, spacing, margin_mm=2.0) == {1: 8.0, 2: 6.0}
    assert labels_at_edge(labels, spacing, min_contact_mm2=6.0) == {1, 2}
    assert labels_at_edge(labels, spacing, min_contact_mm2=6.1) == set()
    assert labels_at_edge(labels, spacing, 2.0, min_contact_mm2=8.0) == {1}
    assert edge_contact_mm2(labels, spacing, margin_mm=2.0, margin_axes=(1,)) == {1: 6.0, 2: 6.0}  # z: outer layer
    assert edge_contact_mm2(labels, spacing, margin_mm=2.0, margin_axes=(0,)) == {1: 8.0, 2: 6.0}
    with pytest.raises(ValueError, match="min_contact_mm2"):
        labels_at_edge(labels, spacing, min_contact_mm2=-1.0)


@pytest.mark.parametrize("probability, at_edge, network, edge, both", [
    (0.5, False, True, True, True), (0.49, False, False, True, False),
    (0.9, True, True, False, False), (0.1, True, False, False, False)])
def test_is_complete_under_each_rule(probability, at_edge, network, edge, both):
    assert [is_complete(probability, at_edge, 0.5, rule) for rule in ("network", "edge", "both")] == [
        network, edge, both]
    with pytest.raises(ValueError, match="completeness rule 'vote'"):
        is_complete(probability, at_edge, 0.5, "vote")


def _rod(shape=(6, 6, 30)):
    """Two vertebrae along x (1 at x < 10, 2 at x >= 20) with bone (400 HU) from x 10 to 19 between them,
    soft tissue (50 HU) everywhere else. The interior ``[1:-1, 1:-1]`` in z and y lies off the scan's faces."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[..., :10], labels[..., 20:] = 1, 2
    hu = np.full(shape, 50.0)
    hu[..., 10:20] = 400.0
    return labels, hu


def test_bone_within_the_distance_joins_the_nearest_vertebra():
    labels, hu = _rod()
    grown = grow_into_bone(labels, hu, (1.0, 1.0, 1.0), distance_mm=2.5)[1:-1, 1:-1]
    # centres 1 and 2 mm from vertebra 1 (x 10, 11) and from vertebra 2 (x 18, 19); 3 mm is too far
    np.testing.assert_array_equal(grown[0, 0, 8:22], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2])
    assert (grown[..., 10:12] == 1).all() and (grown[..., 18:20] == 2).all() and not grown[..., 12:18].any()
    assert labels[..., 10:20].max() == 0 and grown.dtype == labels.dtype  # the input is untouched


def test_growth_never_reaches_the_scans_faces():
    labels, hu = _rod()
    grown = grow_into_bone(labels, hu, (1.0, 1.0, 1.0), distance_mm=2.5)
    for face in (grown[0], grown[-1], grown[:, 0], grown[:, -1]):
        assert not face[..., 10:20].any()  # bone on the border stays out: no new contact with the border
    assert (grown[1:-1, 1:-1, 10:12] == 1).all()
    np.testing.assert_array_equal(labels_at_edge(grown), labels_at_edge(labels))


def test_soft_tissue_and_far_bone_stay_background_and_the_spacing_is_in_mm():
    labels, hu = _rod()
    hu[..., 10] = 199.0  # just below the threshold
    grown = grow_into_bone(labels, hu, (1.0, 1.0, 1.0), distance_mm=2.5)[1:-1, 1:-1]
    assert not grown[..., 10].any() and (grown[..., 11] == 1).all()  # x 11 is 2 mm away: bone, joins
    coarse = grow_into_bone(labels, _rod()[1], (3.0, 1.0, 1.0), distance_mm=2.5)  # 3 mm voxels along x
    np.testing.assert_array_equal(coarse, labels)
    assert (grow_into_bone(labels, _rod()[1], (3.0, 1.0, 1.0), distance_mm=3.0)[1:-1, 1:-1, 10] == 1).all()


def test_growth_of_an_empty_map_and_bad_distances():
    labels, hu = _rod()
    empty = np.zeros_like(labels)
    np.testing.assert_array_equal(grow_into_bone(empty, hu, (1.0,) * 3, 2.5), empty)
    with pytest.raises(ValueError, match="distance_mm"):
        grow_into_bone(labels, hu, (1.0,) * 3, 0.0)
    with pytest.raises(ValueError, match="same shape|one shape"):
        grow_into_bone(labels, hu[:-1], (1.0,) * 3, 2.5)

"""Distances from the spine line of the other instances (vertebra_traversal.spine_line)."""
import numpy as np
import pytest

from vertebra_traversal.spine_line import MIN_OTHERS, NEIGHBOURS, off_spine, spine_offsets_mm


def _line(count, step_mm=20.0):
    return np.array([[i * step_mm, 0.0, 0.0] for i in range(count)])


def test_a_centroid_beside_a_straight_spine_lies_its_distance_off_and_the_others_on_it():
    centers = _line(6)
    centers[3, 1:] = (30.0, 40.0)  # 50 mm across the superior axis
    offsets = spine_offsets_mm(centers)
    assert offsets[3] == pytest.approx(50.0)
    # the median of the nearest four others outvotes the one beside the line
    np.testing.assert_allclose(np.delete(offsets, 3), 0.0)


def test_only_the_distance_across_the_superior_axis_counts():
    centers = _line(5)
    centers[2, 0] += 15.0  # moved along the spine only
    np.testing.assert_allclose(spine_offsets_mm(centers), 0.0)


def test_the_spine_at_an_instance_is_the_median_of_its_nearest_neighbours_along_the_axis():
    centers = _line(NEIGHBOURS + 3)
    centers[:, 2] = [0.0, 0.0, 0.0, 8.0, 0.0, 100.0, 100.0]  # the far end bends away
    offsets = spine_offsets_mm(centers)
    # instance 3: others nearest along the axis are 2, 4 (20 mm) and 1, 5 (40 mm): median x of 0, 0, 0, 100
    assert offsets[3] == pytest.approx(8.0)
    # instance 6: nearest are 5, 4, 3, 2: x 100, 0, 8, 0 -> median 4
    assert offsets[6] == pytest.approx(96.0)


def test_too_few_instances_make_no_line_and_every_offset_is_zero():
    centers = _line(MIN_OTHERS)
    centers[0, 1] = 80.0
    np.testing.assert_array_equal(spine_offsets_mm(centers), np.zeros(MIN_OTHERS))
    assert spine_offsets_mm(np.zeros((0, 3))).shape == (0,)


def test_two_pieces_side_by_side_are_dropped_one_at_a_time_and_the_vertebrae_beside_them_kept():
    centers = _line(8)
    centers[6, 1:] = centers[7, 1:] = (0.0, 60.0)  # the top two: pieces of a rib, 60 mm to the side
    # measured all at once, the vertebra below them lies 30 mm off: two of its four nearest are the pieces
    assert spine_offsets_mm(centers)[5] == pytest.approx(30.0)
    np.testing.assert_array_equal(off_spine(centers, 25.0), [False] * 6 + [True] * 2)
    np.testing.assert_array_equal(off_spine(centers, 0.0), [False] * 8)  # 0: no limit
    np.testing.assert_array_equal(off_spine(centers, 61.0), [False] * 8)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_limit_that_is_not_a_distance_is_refused(bad):
    with pytest.raises(ValueError, match="max_offset_mm"):
        off_spine(_line(5), bad)

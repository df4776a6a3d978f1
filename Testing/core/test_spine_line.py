"""Distances from the spine line of the other instances (vertebra_traversal.spine_line)."""
import numpy as np
import pytest

from vertebra_traversal.spine_line import MIN_OTHERS, off_spine, spine_offsets_mm


def _line(count, step_mm=20.0):
    return np.array([[i * step_mm, 0.0, 0.0] for i in range(count)])


def test_a_centroid_beside_a_straight_spine_lies_its_distance_off_and_is_dropped_alone():
    centers = _line(6)
    centers[3, 1:] = (30.0, 40.0)  # 50 mm across the superior axis
    offsets = spine_offsets_mm(centers)
    # inside, the median of two neighbours above and two below outvotes the one beside the line; the top
    # end has only its two below, and their mean moves halfway towards it
    np.testing.assert_allclose(offsets, [0.0, 0.0, 0.0, 50.0, 0.0, 25.0])
    np.testing.assert_array_equal(off_spine(centers, 20.0), [False, False, False, True, False, False])


def test_only_the_distance_across_the_superior_axis_counts():
    centers = _line(5)
    centers[2, 0] += 15.0  # moved along the spine only
    np.testing.assert_allclose(spine_offsets_mm(centers), 0.0)


def test_a_slanted_spine_is_on_its_line_inside_and_up_to_one_and_a_half_levels_off_at_its_ends():
    centers = _line(7)
    centers[:, 1] = 8.0 * np.arange(7)  # 8 mm forward per level
    offsets = spine_offsets_mm(centers)
    np.testing.assert_allclose(offsets[2:5], 0.0)  # two neighbours on each side
    np.testing.assert_allclose(offsets[[1, 5]], 8.0)  # one below, two above: the median is the level beyond
    np.testing.assert_allclose(offsets[[0, 6]], 12.0)  # the ends: the mean of their two neighbours


def test_two_pieces_side_by_side_are_dropped_one_at_a_time_and_the_vertebrae_beside_them_kept():
    centers = _line(8)
    centers[6, 1:] = centers[7, 1:] = (0.0, 60.0)  # the top two: pieces of a rib, 60 mm to the side
    # measured all at once, the vertebra below them lies 30 mm off (the median of 60, 60, 0, 0), the top
    # piece too (the mean of the piece and the vertebra below it), the lower piece 60 mm: it goes first
    np.testing.assert_allclose(spine_offsets_mm(centers)[5:], [30.0, 60.0, 30.0])
    np.testing.assert_array_equal(off_spine(centers, 25.0), [False] * 6 + [True] * 2)
    np.testing.assert_array_equal(off_spine(centers, 0.0), [False] * 8)  # 0: no limit
    np.testing.assert_array_equal(off_spine(centers, 121.0), [False] * 8)


def test_too_few_instances_make_no_line_and_every_offset_is_zero():
    centers = _line(MIN_OTHERS)
    centers[0, 1] = 80.0
    np.testing.assert_array_equal(spine_offsets_mm(centers), np.zeros(MIN_OTHERS))
    assert spine_offsets_mm(np.zeros((0, 3))).shape == (0,)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_limit_that_is_not_a_distance_is_refused(bad):
    with pytest.raises(ValueError, match="max_offset_mm"):
        off_spine(_line(5), bad)

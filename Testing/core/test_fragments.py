"""Fragments: instances far smaller than the vertebrae around them, dropped one at a time."""
import numpy as np
import pytest

from vertebra_traversal.fragments import fragments, volume_ratios


def test_each_volume_is_measured_against_the_median_of_its_four_nearest_neighbours_in_order():
    ratios = volume_ratios(np.array([10.0, 10.0, 10.0, 2.0, 10.0, 20.0, 40.0]))
    # index 3: neighbours 2, 4, 1, 5 -> median(10, 10, 10, 20) = 10; index 6 (an end): 5, 4, 3, 2 -> 10
    assert ratios[3] == pytest.approx(0.2)
    assert ratios[6] == pytest.approx(40.0 / 10.0)
    assert ratios[0] == pytest.approx(10.0 / 10.0)  # 1, 2, 3, 4 -> median(10, 10, 2, 10)


def test_too_few_instances_make_no_neighbourhood_and_every_ratio_is_one():
    np.testing.assert_array_equal(volume_ratios(np.array([10.0, 1.0, 10.0])), np.ones(3))
    assert not fragments(np.array([10.0, 1.0, 10.0]), 0.5).any()
    assert fragments(np.array([10.0, 1.0, 10.0, 10.0]), 0.5)[1]  # three others are enough


def test_a_fragment_is_dropped_below_the_ratio_only():
    volumes = np.array([10.0, 10.0, 10.0, 2.0, 10.0, 10.0])
    np.testing.assert_array_equal(fragments(volumes, 0.35), [False, False, False, True, False, False])
    assert not fragments(volumes, 0.2).any()  # 0.2 is not below 0.2
    assert not fragments(volumes, 0.0).any()


def test_fragments_are_dropped_one_at_a_time_and_the_rest_measured_again():
    # the two fragments first halve the median around the 4.5 (its neighbours 1, 10, 1, 10 -> 5.5):
    # measured once it passes at 0.5 (0.82); measured again without them its neighbours are 10 (0.45)
    volumes = np.array([10.0, 10.0, 1.0, 1.0, 4.5, 10.0, 10.0])
    assert volume_ratios(volumes)[4] == pytest.approx(4.5 / 5.5)
    np.testing.assert_array_equal(fragments(volumes, 0.5), [False, False, True, True, True, False, False])
    np.testing.assert_array_equal(fragments(volumes, 0.4), [False, False, True, True, False, False, False])


def test_an_instance_not_judged_is_kept_but_counts_as_a_neighbour():
    volumes = np.array([10.0, 10.0, 2.0, 10.0, 10.0, 1.0, 10.0])
    judged = np.array([True, True, False, True, True, True, True])
    np.testing.assert_array_equal(fragments(volumes, 0.35, judged), [False] * 5 + [True, False])


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan")])
def test_a_ratio_that_is_not_a_share_is_refused(bad):
    with pytest.raises(ValueError, match="min_ratio"):
        fragments(np.ones(5), bad)


def test_a_judged_mask_of_another_length_is_refused():
    with pytest.raises(ValueError, match="judged"):
        fragments(np.ones(5), 0.3, np.ones(4, dtype=bool))

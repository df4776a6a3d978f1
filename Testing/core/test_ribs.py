"""The last rib (ribs.py) on a synthetic model grid with exactly known ribs."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import pytest
import SimpleITK as sitk

from vertebra_traversal.labeling import LabelingConfig, refine_labels
from vertebra_traversal.ribs import (RibConfig, _end_of_run, instance_extent, last_thoracic, rib_assignment, ribs_end_label,
                                  rib_stubs)

SPACING = (2.5, 2.5, 2.5)  # x, y, z mm
LINE_Y, LINE_X = 20, 40  # spine line (voxels); grid (z, y, x) = (60, 60, 80): 150 x 150 x 200 mm


def spine(ribbed: Sequence[int], lowest_at: int = 4):
    """Five instances 8 slices tall (j = 0 lowest, from slice ``lowest_at``), ribs on those in ``ribbed``:
    a bone rod 1 voxel thick from 45 to 100 mm to each side, 2 slices above the instance's middle."""
    image = np.zeros((60, 60, 80), np.float32)
    instances = np.zeros(image.shape, np.int32)
    for j in range(5):
        z0 = lowest_at + 10 * j
        instances[z0:z0 + 8, LINE_Y - 4:LINE_Y + 4, LINE_X - 4:LINE_X + 4] = j + 1
        image[z0:z0 + 8, LINE_Y - 4:LINE_Y + 4, LINE_X - 4:LINE_X + 4] = 400.0
        if j in ribbed:
            image[z0 + 6, LINE_Y + 2, LINE_X + 18:LINE_X + 40] = 1000.0
            image[z0 + 6, LINE_Y + 2, LINE_X - 40:LINE_X - 18] = 1000.0
    return image, instances


def extents(instances: np.ndarray) -> List:
    """Top first, as the pipeline lists its instances."""
    return [instance_extent(instances, j + 1, (slice(None),) * 3) for j in reversed(range(5))]


def test_the_lowest_rib_bearing_instance_is_the_last_thoracic():
    image, instances = spine(ribbed=(2, 3, 4))
    # distractors: a transverse process to 55 mm beside j = 1 (does not reach out), a plate 50 mm tall beside
    # j = 0 (the iliac wing), a large block far out (the scapula starts 70 mm out)
    image[20, LINE_Y, LINE_X + 18:LINE_X + 22] = 1000.0
    image[1:21, LINE_Y:LINE_Y + 4, LINE_X + 22:LINE_X + 36] = 1000.0
    image[46:52, LINE_Y:LINE_Y + 8, LINE_X - 36:LINE_X - 28] = 1000.0
    found = extents(instances)
    assert found[0].center == (47.5, 19.5, 39.5) and (found[0].low, found[0].high) == (44.0, 51.0)
    heights = sorted(rib_stubs(image, [i.center for i in found], SPACING))
    assert heights == [30.0, 30.0, 40.0, 40.0, 50.0, 50.0]  # two sides of j = 2, 3, 4 (slice 10 j + 10)
    assert last_thoracic(image, found, SPACING) == 2  # j = 2; j = 1 below it has no ribs


def test_the_end_of_the_ribs_must_be_in_view():
    image, instances = spine(ribbed=range(5))
    assert last_thoracic(image, extents(instances), SPACING) is None  # ribs down to the lowest instance
    # the vertebra below the last ribs is cut by the bottom of the grid: its ribs may lie below
    image, instances = spine(ribbed=(1, 2, 3, 4), lowest_at=0)
    assert last_thoracic(image, extents(instances), SPACING) is None
    assert last_thoracic(image, extents(instances), SPACING, RibConfig(min_below_mm=0.0)) == 3
    image, instances = spine(ribbed=())
    assert last_thoracic(image, extents(instances), SPACING) is None


def test_one_missed_rib_keeps_a_run_and_a_lone_stub_below_it_is_ignored():
    image, instances = spine(ribbed=(4, 3, 1))  # j = 2's rib missed: the run goes on to j = 1
    assert last_thoracic(image, extents(instances), SPACING) == 3
    image, instances = spine(ribbed=(4, 3, 0))  # j = 0's "rib" stands alone below two rib-free vertebrae
    assert last_thoracic(image, extents(instances), SPACING) == 1


def test_two_missed_ribs_split_a_run_unless_the_gap_allows_them():
    image, instances = spine(ribbed=(4, 1))  # j = 3 and 2 without stubs (the scapula joins their ribs)
    assert last_thoracic(image, extents(instances), SPACING) == 0  # two runs of one: the top one wins the tie
    assert last_thoracic(image, extents(instances), SPACING, RibConfig(run_gap=2)) == 3


def test_the_lowest_run_ends_the_ribs_where_the_scapula_splits_them():
    # T1-T5 and T8-T12 with stubs (indices top first), T6/T7 without: the longest run ties, the top one wins
    split = [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]
    assert _end_of_run(split, RibConfig()) == 4
    assert _end_of_run(split, RibConfig(run_choice="lowest")) == 11
    assert _end_of_run([0, 1, 2, 3, 4, 11], RibConfig(run_choice="lowest")) == 4  # a lone stub below is no run
    assert _end_of_run([0, 1, 2, 3, 4, 11], RibConfig(run_choice="lowest", min_run=1)) == 11
    assert _end_of_run([], RibConfig(run_choice="lowest")) is None
    image, instances = spine(ribbed=(4, 3, 1))  # through the image: with no missed rib allowed, two runs
    found = extents(instances)
    assert last_thoracic(image, found, SPACING, RibConfig(run_gap=0)) == 1
    assert last_thoracic(image, found, SPACING, RibConfig(run_gap=0, run_choice="lowest")) == 1
    assert last_thoracic(image, found, SPACING, RibConfig(run_gap=0, run_choice="lowest", min_run=1)) == 3
    with pytest.raises(ValueError, match="run_choice"):
        RibConfig(run_choice="first")
    with pytest.raises(ValueError, match="min_run"):
        RibConfig(min_run=0)


def _on_grid(array: np.ndarray, spacing=SPACING, origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


@pytest.mark.parametrize("ribbed, expected", [((2, 3, 4), 19), ((1, 2, 3, 4), 20), (range(5), None)])
def test_the_ribs_end_is_read_on_a_label_map_of_any_grid_and_named_by_its_label(ribbed, expected):
    """Instances named L2, L1, T12, T11, T10 from the bottom; the map is given on a grid twice as fine, as a
    run's output is, and read again on the model grid."""
    image, instances = spine(ribbed)
    names = np.array([0, 21, 20, 19, 18, 17], np.uint8)[instances]
    model_image = _on_grid(image)
    fine = sitk.Resample(_on_grid(names), [2 * n for n in model_image.GetSize()], sitk.Transform(),
                         sitk.sitkNearestNeighbor, (-0.625,) * 3, (1.25,) * 3, model_image.GetDirection(), 0,
                         sitk.sitkUInt8)
    assert ribs_end_label(model_image, fine) == expected  # 19 = T12 (ribs on the top three); 20 = L1


T8_TO_L2 = [15.0, 16.0, 17.0, 18.0, 19.0, 20.0, 21.0]  # the paper's label values of T8..L2, read as T8..L2


def rib_reading(values, labels, ribs_end, labeling=LabelingConfig(), max_levels=None):
    """{label: label counted from the ribs} of :func:`rib_assignment`, {} where it reads nothing."""
    read = rib_assignment(values, labels, ribs_end, labeling, max_levels=max_levels)
    return {} if read is None else dict(zip(labels, read.labels))


def test_counted_from_ribs_that_end_below_t12_the_labels_move_down_to_a_t13_where_the_values_fit_it():
    """The ribs end at the vertebra named L1 (value 20): named T12, every value lies a level off (likelihood 0);
    named T13 (19.5), T8-T12 keep theirs: (5 + 0.5 + 0) / 7 - 0.15 beats 0."""
    labels = [15, 16, 17, 18, 19, 20, 21]
    assert rib_reading(T8_TO_L2, labels, 20) == {15: 15, 16: 16, 17: 17, 18: 18, 19: 19, 20: 28, 21: 20}
    no_t13 = LabelingConfig(allow_t13=False, allow_l6=False, allow_four_lumbar=False)
    assert rib_reading(T8_TO_L2, labels, 20, no_t13) == {15: 14, 16: 15, 17: 16, 18: 17, 19: 18, 20: 19, 21: 20}
    assert rib_reading(T8_TO_L2, labels, 18, no_t13) == {label: label + 1 for label in labels}  # ends at "T11"


@pytest.mark.parametrize("ribs_end", [19, None, 22])
def test_no_reading_is_offered_where_the_ribs_end_at_t12_out_of_view_or_at_no_vertebra_of_the_run(ribs_end):
    assert rib_reading(T8_TO_L2, [15, 16, 17, 18, 19, 20, 21], ribs_end) == {}


def test_no_reading_is_offered_where_no_allowed_chain_can_end_its_thoracic_spine_at_the_ribs_end():
    """Ribs said to end at the top one of seven: six vertebrae below it fit no standard chain (five lumbar); with
    an L6 chain allowed they do."""
    standard = LabelingConfig(allow_t13=False, allow_l6=False, allow_four_lumbar=False)
    labels = [15, 16, 17, 18, 19, 20, 21]
    assert rib_reading(T8_TO_L2, labels, 15, standard) == {}
    assert rib_reading(T8_TO_L2, labels, 15, LabelingConfig(allow_t13=False, allow_four_lumbar=False))[15] == 19


def test_the_ribs_reading_leaves_no_end_out_where_the_runs_reading_may():
    """A run that may leave 3 ends out still gets a label for each of its vertebrae from the ribs."""
    trimming = LabelingConfig(max_trimmed=3, allow_t13=False, allow_l6=False, allow_four_lumbar=False)
    read = rib_reading(T8_TO_L2, [15, 16, 17, 18, 19, 20, 21], 20, trimming)
    assert sorted(read) == [15, 16, 17, 18, 19, 20, 21] and all(read.values()) and read[20] == 19


def test_an_offer_that_moves_the_vertebra_where_the_ribs_end_by_more_than_max_levels_is_withheld():
    """The ribs end at the one named T9 (as where a scapula splits the ribs): counted from there it is T12."""
    labels, standard = [15, 16, 17, 18, 19, 20, 21], LabelingConfig(allow_t13=False, allow_l6=False,
                                                                      allow_four_lumbar=False)
    assert rib_reading(T8_TO_L2, labels, 16, standard)[16] == 19  # unlimited: three levels
    assert rib_reading(T8_TO_L2, labels, 16, standard, max_levels=3)[16] == 19
    assert rib_reading(T8_TO_L2, labels, 16, standard, max_levels=1) == {}
    assert rib_reading(T8_TO_L2, labels, 20, standard, max_levels=1)[20] == 19  # one level: offered
    assert rib_reading(T8_TO_L2, labels, 20, max_levels=0.5)[20] == 28  # L1 -> T13: half a level


def test_the_ribs_reading_labels_every_vertebra_even_beyond_a_reversal_of_the_values():
    """T8..L2 and two pieces below with values far under L2's: the run's reading with a reversal setting may
    leave the pieces out; the ribs' reading, which names every vertebra it is given, does not."""
    values, labels = T8_TO_L2 + [5.0, 6.0], [15, 16, 17, 18, 19, 20, 21, 22, 23]
    reversal = LabelingConfig(reversal_levels=6.0)
    assert refine_labels(values, reversal).labels[-2:] == (0, 0)
    read = rib_assignment(values, labels, 20, reversal)  # ribs end at the one named L1: T12..L3 move up a level
    assert read is not None and 0 not in read.labels

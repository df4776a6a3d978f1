"""Maximum-likelihood label refinement (paper §3.4) and the T13 / L6 / four-lumbar extension.

Expected labels come from anatomy (names), and every expected score below is worked out by hand in
the comment next to it from p(y | v) = max(0, 1 - |v - y|)."""
import math
from dataclasses import replace

import pytest

from vertebra_traversal import anatomy
from vertebra_traversal.labeling import (LabelAssignment, LabelingConfig, provisional_label, refine_labels,
                                         spacing_ratios)

STANDARD_ONLY = LabelingConfig(allow_t13=False, allow_l6=False, allow_four_lumbar=False)


def names(assignment: LabelAssignment) -> list:
    """The chosen names, "-" for an instance left out."""
    return [anatomy.name_of(label) if label else "-" for label in assignment.labels]


def span(first: str, last: str) -> list:
    order = [v.name for v in anatomy.STANDARD]
    return order[order.index(first):order.index(last) + 1]


def test_paper_example_22_8_is_l4_with_80_percent():
    result = refine_labels([22.8])
    assert names(result) == ["L4"]
    assert result.likelihoods[0] == pytest.approx(0.8)
    assert result.confidences[0] == pytest.approx(0.8)  # only L4 (0.8) and L3 (0.2) have weight
    assert result.chain == "standard" and result.score == pytest.approx(0.8)
    # the same vertebra labelled L3 contributes 20 %: force it by a neighbour that must be L4
    below = refine_labels([22.8, 23.0], STANDARD_ONLY)  # L3,L4: (0.2 + 1) / 2 = 0.6 > L4,L5: (0.8 + 0) / 2
    assert names(below) == ["L3", "L4"] and below.likelihoods == pytest.approx((0.2, 1.0))


def test_full_spine_of_24_is_c1_to_l5():
    values = [i + (0.3 if i % 2 else -0.3) for i in range(1, 25)]
    result = refine_labels(values)
    assert names(result) == [v.name for v in anatomy.STANDARD]
    assert result.chain == "standard"
    assert result.score == pytest.approx(0.7)
    assert min(result.confidences) > 0.99  # every other window is off by at least one


def test_one_wrong_value_is_corrected_by_the_sequence():
    # T3..T7, the third regressed as 13 (T6) instead of 12 (T5): T3..T7 scores (1+1+0+1+1)/5 = 0.8,
    # T4..T8 scores (0+0+1+0+0)/5 = 0.2
    result = refine_labels([10, 11, 13, 13, 14])
    assert names(result) == span("T3", "T7")
    assert result.likelihoods == pytest.approx((1, 1, 0, 1, 1))
    assert result.score == pytest.approx(0.8)
    assert len(set(result.labels)) == 5


def test_t13_chosen_on_clear_evidence():
    # T9..T12, then a vertebra at 19.5, then L1..L5: the T13 chain explains all ten (average 1.0,
    # minus penalty 0.85); the best standard window T9..L5 scores (0+0+0+0+0.5+1*5)/10 = 0.55
    values = [16, 17, 18, 19, 19.5, 20, 21, 22, 23, 24]
    result = refine_labels(values)
    assert result.chain == "t13"
    assert names(result) == span("T9", "T12") + ["T13"] + span("L1", "L5")
    assert result.score == pytest.approx(1.0)
    assert refine_labels(values, LabelingConfig(allow_t13=False, allow_l6=False)).chain == "standard"


def test_t13_not_chosen_on_weak_evidence():
    # standard T11..L3: (1 + 1 + 0.6 + 0.5 + 0.5)/5 = 0.72; T13 chain T11, T12, T13, L1, L2:
    # (1 + 1 + 0.9 + 0.5 + 0.5)/5 = 0.78, better by less than the penalty 0.15
    values = [18, 19, 19.6, 20.5, 21.5]
    result = refine_labels(values)
    assert result.chain == "standard" and names(result) == span("T11", "L3")
    assert result.score == pytest.approx(0.72)
    without_prior = refine_labels(values, LabelingConfig(variant_penalty=0.0))
    assert without_prior.chain == "t13" and without_prior.score == pytest.approx(0.78)


def test_l6_chosen_on_clear_evidence_only():
    # T12, L1..L5 and a vertebra regressed 25: the L6 chain scores 1.0 - 0.15; standard T11..L5 scores 0
    result = refine_labels([19, 20, 21, 22, 23, 24, 25])
    assert result.chain == "l6" and names(result) == ["T12"] + span("L1", "L5") + ["L6"]
    # a normal lumbar spine: L6 (counted from the sacrum) can at best tie, and the penalty decides
    normal = refine_labels([19, 20, 21, 22, 23, 24])
    assert normal.chain == "standard" and names(normal) == span("T12", "L5")


def test_four_lumbar_spine_with_rib_and_sacrum_anchors():
    # T10..T12 (ribs) then four lumbar vertebrae, the lowest on the sacrum regressed like an L5.
    # four-lumbar chain: (1+1+1 + 0.9*4)/7 = 0.943 - 0.15 = 0.793; the standard chain must break an anchor:
    # T11..L5 (0+0+0 + 0.9*4)/7 = 0.514, or T10..L4 (1+1+1 + 0.1*4)/7 = 0.486
    values = [17, 18, 19, 20.9, 21.9, 22.9, 23.9]
    result = refine_labels(values)
    assert result.chain == "four_lumbar"
    assert names(result) == span("T10", "T12") + span("L1", "L4")
    assert result.likelihoods == pytest.approx((1, 1, 1, 0.9, 0.9, 0.9, 0.9))
    assert refine_labels(values, LabelingConfig(allow_four_lumbar=False)).labels[-1] == anatomy.label_of("L5")


def test_four_lumbar_needs_the_rib_anchor_and_loses_to_a_normal_spine():
    # without T12 in view the lumbar values are just L2..L5
    assert names(refine_labels([20.9, 21.9, 22.9, 23.9])) == span("L2", "L5")
    # a normal T10..L5 spine stays standard
    normal = refine_labels([17, 18, 19, 20, 21, 22, 23, 24])
    assert normal.chain == "standard" and names(normal) == span("T10", "L5")
    assert min(normal.confidences) > 0.95


def test_confidence_is_low_when_two_labellings_are_equally_likely():
    # every value halfway between two labels: L1..L3 and L2..L4 both score 0.5
    result = refine_labels([20.5, 21.5, 22.5])
    assert result.score == pytest.approx(0.5)
    assert all(0.3 < c < 0.7 for c in result.confidences)
    assert result.likelihoods == pytest.approx((0.5, 0.5, 0.5))


def test_empty_and_single_vertebra():
    empty = refine_labels([])
    assert empty.labels == () and empty.likelihoods == () and empty.confidences == ()
    single = refine_labels([7.0])
    assert names(single) == ["C7"] and single.likelihoods == (1.0,) and single.confidences[0] == pytest.approx(1.0)


def test_values_far_outside_the_range_get_the_nearest_labels_with_zero_likelihood():
    assert names(refine_labels([30.0, 31.0])) == ["L4", "L5"]
    assert names(refine_labels([0.0, 0.0])) == ["C1", "C2"]
    assert refine_labels([0.0, 0.0]).confidences == (0.0, 0.0)


def test_more_vertebrae_than_any_chain_is_an_error():
    refine_labels(list(range(1, 20)) + [19.5] + list(range(20, 25)))  # 25 fit the T13 chain
    with pytest.raises(ValueError, match="26 vertebrae"):
        refine_labels([float(i) for i in range(26)])
    with pytest.raises(ValueError, match="25 vertebrae"):
        refine_labels([float(i) for i in range(25)], STANDARD_ONLY)


def test_invalid_values_and_config():
    with pytest.raises(ValueError, match="finite"):
        refine_labels([1.0, math.nan])
    with pytest.raises(ValueError, match="number"):
        refine_labels(["L1"])
    with pytest.raises(ValueError, match="variant_penalty"):
        LabelingConfig(variant_penalty=-0.1)


def test_a_skipped_level_keeps_the_labels_beyond_it_when_gaps_are_allowed():
    values = [14.0, 15.0, 17.0, 18.0, 19.0]  # T7, T8, T10, T11, T12: the T9 was merged into a neighbour
    # gap-free (the paper): T8..T12 scores (0 + 0 + 1 + 1 + 1) / 5 = 0.6, every other window less
    assert names(refine_labels(values, STANDARD_ONLY)) == span("T8", "T12")
    one_gap = LabelingConfig(allow_t13=False, allow_l6=False, allow_four_lumbar=False, max_gaps=1, gap_penalty=0.3)
    result = refine_labels(values, one_gap)  # 1.0 - 0.3 > 0.6
    assert names(result) == ["T7", "T8", "T10", "T11", "T12"] and result.score == pytest.approx(1.0)
    dear = LabelingConfig(allow_t13=False, allow_l6=False, allow_four_lumbar=False, max_gaps=1, gap_penalty=0.5)
    assert names(refine_labels(values, dear)) == span("T8", "T12")  # 1.0 - 0.5 < 0.6


def test_each_skipped_level_costs_and_needs_an_allowed_gap():
    values = [14.0, 16.0, 18.0]  # T7, T9, T11: two gaps
    two = dict(allow_t13=False, allow_l6=False, allow_four_lumbar=False, gap_penalty=0.1)
    # one gap allowed: T7, T9, T10 or T8, T9, T11 score 2/3 - 0.1 = 0.567 > any window's 1/3
    assert refine_labels(values, LabelingConfig(max_gaps=1, **two)).score == pytest.approx(2 / 3)
    assert names(refine_labels(values, LabelingConfig(max_gaps=2, **two))) == ["T7", "T9", "T11"]  # 1 - 0.2
    # with no evidence of a gap the gap-free sequence wins: contiguous values never take a gap
    contiguous = [20.0, 21.0, 22.0]
    assert names(refine_labels(contiguous, LabelingConfig(max_gaps=2, gap_penalty=0.0))) == span("L1", "L3")


def test_gap_settings_are_checked():
    for bad in (dict(max_gaps=-1), dict(max_gaps=4), dict(max_gaps=1.0), dict(max_gaps=True), dict(gap_penalty=1.5)):
        with pytest.raises(ValueError, match="max_gaps|gap_penalty"):
            LabelingConfig(**bad)


def _values(first: str, last: str) -> list:
    return [float(anatomy.vertebra(name).regression_value) for name in span(first, last)]


def test_pieces_of_bone_at_an_end_of_the_chain_are_left_out_where_allowed():
    values = _values("C3", "L5") + [4.7, 9.8, 10.8]  # C3-L5 and three pieces of the pelvis below L5
    kept = refine_labels(values)  # 25 members: a T13 chain whose last three levels go to the pieces
    assert kept.chain == "t13" and names(kept)[:2] == ["C1", "C2"] and names(kept)[-5:] == span("L1", "L5")
    result = refine_labels(values, LabelingConfig(max_trimmed=3, trim_penalty=0.15))  # 1 - 3 x 0.15 > 0
    assert result.labels[-3:] == (0, 0, 0) and result.likelihoods[-3:] == (0.0, 0.0, 0.0)
    assert result.kept() == tuple(range(22)) and names(result.select(result.kept())) == span("C3", "L5")
    assert len(result.confidences) == 25 and min(result.confidences[:22]) > 0.5


def test_a_piece_that_can_take_a_free_level_is_kept_and_leaving_out_has_a_price():
    values = [4.5] + _values("T6", "L5")  # a level above T6 is free: the piece costs 1/13 there
    allowed = LabelingConfig(max_trimmed=1, trim_penalty=0.15)
    assert names(refine_labels(values, allowed)) == span("T5", "L5")  # 12/13 = 0.92 > 1 - 0.15
    assert refine_labels(values, LabelingConfig(max_trimmed=1, trim_penalty=0.05)).labels[0] == 0  # 0.95 > 0.92
    # a clean chain never leaves anything out, whatever the price
    assert 0 not in refine_labels(_values("T6", "L5"), LabelingConfig(max_trimmed=3, trim_penalty=0.0)).labels
    # only the ends may go: a piece between vertebrae keeps a level (leaving it out would take six)
    inner = _values("T6", "T10") + [4.5] + _values("T11", "L5")
    assert refine_labels(inner, LabelingConfig(max_trimmed=3, trim_penalty=0.15)).labels[5] != 0


def test_an_l6_read_exactly_ties_with_leaving_it_out_at_the_variants_price():
    # T6-L5 and an L6 read at L6's own value: the l6 chain explains all 13 at 1 - 0.15, the standard
    # chain the 12 it keeps at 1 - 0.15 (the average is over the kept); ties go to the standard chain
    values = _values("T6", "L5") + [float(anatomy.vertebra("L6").regression_value)]
    left_out = refine_labels(values, LabelingConfig(max_trimmed=1, trim_penalty=0.15))
    assert left_out.chain == "standard" and left_out.labels[-1] == 0 and left_out.score == pytest.approx(1.0)
    dearer = refine_labels(values, LabelingConfig(max_trimmed=1, trim_penalty=0.2))
    assert dearer.chain == "l6" and names(dearer) == span("T6", "L5") + ["L6"]


def test_with_skipped_levels_four_lumbar_values_counted_from_the_sacrum_read_as_a_skipped_l1():
    values = [15.0, 16.0, 17.0, 18.0, 19.0, 20.9, 21.9, 22.9, 23.9]  # the module docstring's example
    assert refine_labels(values).chain == "four_lumbar"
    skipped = refine_labels(values, LabelingConfig(max_gaps=1, gap_penalty=0.1))  # 0.1 < the variant's 0.15
    assert skipped.chain == "standard" and names(skipped)[4:] == ["T12", "L2", "L3", "L4", "L5"]


def test_leaving_out_makes_room_for_more_instances_than_a_chain_holds_and_is_checked():
    values = _values("C1", "L5") + [4.7, 9.8]  # 26: more than any chain holds unless two are left out
    assert refine_labels(values, LabelingConfig(max_trimmed=2)).labels[-2:] == (0, 0)
    with pytest.raises(ValueError, match="26 vertebrae"):
        refine_labels(values, LabelingConfig(max_trimmed=0))
    for bad in (dict(max_trimmed=4), dict(max_trimmed=-1), dict(max_trimmed=1.0), dict(trim_penalty=2.0)):
        with pytest.raises(ValueError, match="max_trimmed|trim_penalty"):
            LabelingConfig(**bad)


def test_provisional_label_is_nearest_standard_and_clamped():
    assert provisional_label(22.8) == anatomy.label_of("L4")
    assert provisional_label(19.4) == anatomy.label_of("T12")  # never T13: standard labels only
    assert provisional_label(-3.0) == anatomy.label_of("C1")
    assert provisional_label(40.0) == anatomy.label_of("L5")
    with pytest.raises(ValueError):
        provisional_label(math.inf)


def test_the_bottom_anchor_reads_the_lowest_instance_as_the_last_lumbar_where_the_sacrum_lies_below():
    values = [19.45, 20.45, 21.45, 22.45, 23.45]  # the module docstring's example: T12..L4 score 0.55 each
    anchor = LabelingConfig(bottom_anchor_mm=10.0)
    for gap in (None, 0.0, 9.9):  # unknown, or too little of the scan below: the paper's reading
        assert names(refine_labels(values, anchor, gap)) == span("T12", "L4")
    anchored = refine_labels(values, anchor, 10.0)  # L1..L5 at 0.45 beats T12..L4 at 0.55 - 1
    assert names(anchored) == span("L1", "L5") and anchored.score == pytest.approx(0.45)
    assert names(refine_labels(values, LabelingConfig(), 50.0)) == span("T12", "L4")  # off by default
    # a softer anchor loses to a clearer reading: 0.55 - 0.05 > 0.45
    assert names(refine_labels(values, LabelingConfig(bottom_anchor_mm=10.0, bottom_anchor_penalty=0.05), 50.0)) \
        == span("T12", "L4")
    # the chains' own last members satisfy it: an L6 chain ends on L6, a four-lumbar one on L4
    l6 = _values("T6", "L5") + [float(anatomy.vertebra("L6").regression_value)]
    assert names(refine_labels(l6, LabelingConfig(variant_penalty=0.0, bottom_anchor_mm=10.0), 50.0))[-1] == "L6"
    four = [15.0, 16.0, 17.0, 18.0, 19.0, 20.9, 21.9, 22.9, 23.9]  # four lumbar vertebrae counted from the sacrum
    assert refine_labels(four, anchor, 50.0).chain == "four_lumbar"


def test_the_bottom_anchor_prices_leaving_the_lowest_instance_out_and_is_checked():
    values = _values("T6", "L5") + [10.0]  # a piece below L5 that fits no level next to it
    trim = LabelingConfig(max_trimmed=1, trim_penalty=0.15)
    assert refine_labels(values, trim).labels[-1] == 0
    # anchored, the lowest instance must be a chain's last: leaving it out costs the anchor as well, and the
    # piece is read as an L6 (12 of 13 at 1, less the variant's 0.15) rather than T6..L5 left as they are
    anchored = refine_labels(values, LabelingConfig(max_trimmed=1, trim_penalty=0.15, bottom_anchor_mm=10.0), 30.0)
    assert anchored.chain == "l6" and names(anchored) == span("T6", "L5") + ["L6"]
    for bad in (dict(bottom_anchor_mm=-1.0), dict(bottom_anchor_mm=math.inf), dict(bottom_anchor_mm=True),
                dict(bottom_anchor_penalty=1.5)):
        with pytest.raises(ValueError, match="bottom_anchor"):
            LabelingConfig(**bad)


def test_the_rib_anchor_reads_the_last_rib_bearing_instance_as_the_last_thoracic():
    values = [18.4, 19.4, 20.4, 21.4]  # the module docstring's example: T11..L2 score 0.6, T12..L3 0.4
    ribs = LabelingConfig(rib_anchor=True)
    assert names(refine_labels(values, ribs)) == span("T11", "L2")  # the end of the ribs not in view
    assert names(refine_labels(values, ribs, last_thoracic=1)) == span("T11", "L2")  # agrees already
    anchored = refine_labels(values, ribs, last_thoracic=0)
    assert names(anchored) == span("T12", "L3") and anchored.score == pytest.approx(0.4)
    assert names(refine_labels(values, LabelingConfig(), last_thoracic=0)) == span("T11", "L2")  # off by default
    # a softer anchor loses to a clearer reading: 0.6 - 0.1 > 0.4
    assert names(refine_labels(values, LabelingConfig(rib_anchor=True, rib_anchor_penalty=0.1),
                               last_thoracic=0)) == span("T11", "L2")
    # read exactly, the run's own labels tie at 1 - 1 with a sequence a level off (0): above 1 the anchor holds
    exact = [17.0, 18.0, 19.0, 20.0]  # T10..L1
    standard = dict(allow_t13=False, allow_l6=False, allow_four_lumbar=False)
    assert names(refine_labels(exact, LabelingConfig(rib_anchor=True, **standard), last_thoracic=3)) == span("T10", "L1")
    strict = LabelingConfig(rib_anchor=True, rib_anchor_penalty=2.0, **standard)
    assert names(refine_labels(exact, strict, last_thoracic=3)) == span("T9", "T12")


def test_the_rib_anchor_takes_t13_as_that_chains_last_thoracic_and_prices_leaving_it_out():
    t13 = float(anatomy.vertebra("T13").regression_value)
    values = [17.0, 18.0, 19.0, t13, 20.0, 21.0]  # T10 T11 T12 T13 L1 L2 read exactly
    config = LabelingConfig(rib_anchor=True, variant_penalty=0.15)
    assert refine_labels(values, config, last_thoracic=3).chain == "t13"
    # anchored at T12 instead, the T13 chain breaks the anchor: the standard chain's best window wins
    assert refine_labels(values, config, last_thoracic=2).chain == "standard"
    # leaving the anchored instance out costs the anchor as well: kept and named T12 (objective 0 > 0.85 - 1)
    trim = LabelingConfig(rib_anchor=True, max_trimmed=1)
    assert refine_labels([17.0, 18.0, 19.0, 5.0], trim).labels[3] == 0
    assert refine_labels([17.0, 18.0, 19.0, 5.0], trim, last_thoracic=3).labels[3] == anatomy.label_of("T12")
    with pytest.raises(ValueError, match="last_thoracic"):
        refine_labels(values, config, last_thoracic=6)
    for bad in (dict(rib_anchor=1), dict(rib_anchor_penalty=-0.1), dict(rib_anchor_penalty=2.5)):
        with pytest.raises(ValueError, match="rib_anchor"):
            LabelingConfig(**bad)


# T7, T8, then two values a little over half a level above T9 and T10 (the docstring's example)
SPREAD = [14.0, 15.0, 16.6, 17.6]
# centroids (mm) 30, 45 and 30 apart: the middle pair lies 45 / 30 = 1.5 times as far apart as those around it
APART = [(0.0, 0.0, 0.0), (30.0, 0.0, 0.0), (75.0, 0.0, 0.0), (105.0, 0.0, 0.0)]
WIDE = LabelingConfig(max_gaps=1, wide_ratio=1.05, wide_penalties=(0.075, 0.05))


def test_spacing_ratios_compare_each_pair_with_the_median_of_those_around_it():
    # pair 1: 30 / median(45, 30) = 0.8; pair 2: 45 / median(30, 30) = 1.5; pair 3 like pair 1
    assert spacing_ratios(APART) == pytest.approx((0.8, 1.5, 0.8))
    assert spacing_ratios(APART[:2]) == (None,)  # one pair: nothing to compare with
    # up to three pairs on either side: the far ones of a longer run do not count
    line = [(z, 0.0, 0.0) for z in (0.0, 10.0, 20.0, 30.0, 40.0, 60.0, 80.0, 100.0, 120.0)]
    assert spacing_ratios(line)[0] == pytest.approx(10 / 10)  # median(10, 10, 10): the 20s lie beyond three
    assert spacing_ratios(line)[4] == pytest.approx(20 / 15)  # median(10, 10, 10, 20, 20, 20) = 15


def test_instances_wide_apart_make_a_skipped_level_the_better_reading():
    # without the spacing T7..T10 ties with T7 T8 [T9 skipped] T10 T11 at 0.8 - 0.1 = 0.7: no skip wins the tie
    assert names(refine_labels(SPREAD, LabelingConfig(max_gaps=1))) == span("T7", "T10")
    assert names(refine_labels(SPREAD, LabelingConfig(max_gaps=1), centroids_mm=APART)) == span("T7", "T10")
    # wide middle pair: 0.8 - 0.075 = 0.725 with the skip there against 0.7 - 0.05 = 0.65 without
    result = refine_labels(SPREAD, WIDE, centroids_mm=APART)
    assert names(result) == ["T7", "T8", "T10", "T11"] and result.score == pytest.approx(0.8)
    # unknown centroids, evenly spaced ones, or no skipped level allowed: the spacing is not read
    assert names(refine_labels(SPREAD, WIDE)) == span("T7", "T10")
    even = [(30.0 * i, 0.0, 0.0) for i in range(4)]
    assert names(refine_labels(SPREAD, WIDE, centroids_mm=even)) == span("T7", "T10")
    no_gaps = LabelingConfig(max_gaps=0, wide_ratio=1.05, wide_penalties=(0.0, 1.0))
    assert names(refine_labels(SPREAD, no_gaps, centroids_mm=APART)) == span("T7", "T10")
    # a skip costing as much there as elsewhere, and a free step: as without the spacing
    same = LabelingConfig(max_gaps=1, wide_ratio=1.05, wide_penalties=(0.1, 0.0))
    assert names(refine_labels(SPREAD, same, centroids_mm=APART)) == span("T7", "T10")


def test_spacing_settings_and_centroids_are_checked():
    assert LabelingConfig(wide_ratio=1.5, wide_penalties=[0.05, 0.1]).wide_penalties == (0.05, 0.1)  # JSON list
    for bad in (dict(wide_ratio=0.5), dict(wide_ratio=True), dict(wide_ratio=math.inf), dict(wide_penalties=(0.1,)),
                dict(wide_penalties=(0.1, 1.5)), dict(wide_penalties=(0.1, True)), dict(wide_penalties="ab")):
        with pytest.raises(ValueError, match="wide_"):
            LabelingConfig(**bad)
    with pytest.raises(ValueError, match="centroids_mm"):
        refine_labels(SPREAD, WIDE, centroids_mm=APART[:3])


# L1-L5 and four pieces of the pelvis traversed after them (the docstring's example)
PELVIS = [20.0, 21.0, 22.0, 23.0, 24.0, 5.5, 7.4, 9.2, 11.3]
REVERSAL = LabelingConfig(max_trimmed=3, reversal_levels=6.0, reversal_penalty=0.05)


def test_what_lies_beyond_a_reversal_of_the_values_may_be_left_out_however_many():
    # every instance labelled: C2..T3, every lumbar vertebra named cervical
    assert names(refine_labels(PELVIS, LabelingConfig())) == span("C2", "T3")
    # three ends left out: the first piece stays, named L6
    trimmed = refine_labels(PELVIS, LabelingConfig(max_trimmed=3))
    assert names(trimmed) == span("L1", "L5") + ["L6", "-", "-", "-"] and trimmed.chain == "l6"
    # beyond the reversal (24 -> 5.5): the four pieces left out at 0.05 each, L1..L5 read exactly
    read = refine_labels(PELVIS, REVERSAL)
    assert names(read) == span("L1", "L5") + ["-"] * 4
    assert read.score == pytest.approx(1.0)
    # skull pieces read before C1: everything above the reversal left out
    skull = refine_labels([15.0, 16.0, 1.0, 2.0, 3.0, 4.0, 5.0], REVERSAL)
    assert names(skull) == ["-", "-"] + span("C1", "C5")
    # a fall of no more than the setting is no reversal; at least two instances are kept
    assert refine_labels(PELVIS, replace(REVERSAL, reversal_levels=20.0)).labels == trimmed.labels
    # L5 alone above the fall would read exactly (1 - 5 x 0.05 = 0.75), the five values below it fit poorly
    # (C4..T1 at 0.4 - 0.05): still the five are kept, not one alone
    lone = refine_labels([24.0, 5.0, 7.6, 6.0, 9.6, 8.0], LabelingConfig(reversal_levels=6.0))
    assert names(lone) == ["-"] + span("C4", "T1")


def test_reversal_settings_are_checked():
    for bad in (dict(reversal_levels=-1.0), dict(reversal_levels=True), dict(reversal_levels=math.inf),
                dict(reversal_penalty=1.5), dict(reversal_penalty=False)):
        with pytest.raises(ValueError, match="reversal_"):
            LabelingConfig(**bad)

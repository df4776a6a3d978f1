"""The candidates of a decoder tuning and the rule that keeps one (``training/candidates.py``)."""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from vertebra_traversal.evaluate import GroupSummary
from vertebra_traversal.training.candidates import START, candidate_name, candidate_state, choose_checkpoint


def _row(dice, identification):
    return GroupSummary("aside", 3, 30, dice, 0.0, 1.0, 0.0, identification, 1.0, 1.0, 0.0, 0.0, 0, 0)


def test_the_candidate_kept_has_the_highest_dice_of_those_that_identify_no_fewer():
    start = _row(0.70, 0.60)
    c50, c75, c100, m50 = (50, 1.0), (75, 1.0), (100, 1.0), (50, 0.25)
    assert choose_checkpoint(start, {c50: _row(0.75, 0.60), c75: _row(0.80, 0.59), c100: _row(0.72, 0.90)}) == c50
    assert choose_checkpoint(start, {c50: _row(0.75, 0.70), c75: _row(0.75, 0.65)}) == c50  # a tie: the earlier
    assert choose_checkpoint(start, {c50: _row(0.75, 0.70), m50: _row(0.75, 0.65)}) == m50  # then the nearer
    assert choose_checkpoint(start, {c50: _row(0.80, 0.50), m50: _row(0.72, 0.60)}) == m50  # the mix qualifies
    assert choose_checkpoint(start, {c50: _row(0.70, 0.90), c75: _row(0.90, 0.50)}) is None
    assert choose_checkpoint(start, {c50: _row(math.nan, 0.9)}) is None
    nothing = _row(0.0, math.nan)  # no vertebra matched: identification counts as 0
    assert choose_checkpoint(nothing, {c50: _row(0.1, 0.0), c75: _row(0.2, math.nan)}) == c75


def _found(dice, identification, missed):
    return replace(_row(dice, identification), vertebrae=100, missed=missed)


def test_by_count_a_candidate_that_finds_more_must_name_as_many_right():
    start = _found(0.60, 0.75, missed=20)  # 60 of 80 matched named right
    more = {(50, 0.5): _found(0.65, 0.70, missed=10),   # 63 of 90: fewer by rate, more by count
            (50, 1.0): _found(0.70, 0.60, missed=0)}    # 60 of 100: as many
    assert choose_checkpoint(start, more) is None
    assert choose_checkpoint(start, more, "count") == (50, 1.0)
    assert choose_checkpoint(start, {(50, 1.0): _found(0.70, 0.58, missed=0)}, "count") is None  # 58 of 100
    assert choose_checkpoint(_found(0.1, math.nan, missed=100), {(50, 1.0): _found(0.2, 0.0, missed=99)},
                             "count") == (50, 1.0)  # none named: 0 each


def test_a_candidate_is_the_checkpoint_mixed_into_the_model_at_its_share():
    start = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    tuned = {"w": torch.tensor([4.0, 2.0 + 1e-7]), "n": torch.tensor(5)}
    mixed = candidate_state(start, tuned, 0.25)
    assert torch.equal(mixed["w"][:1], torch.tensor([1.0])) and mixed["n"] == 3  # counters stay the model's
    assert candidate_state(start, tuned, 1.0) is tuned  # the checkpoint itself, not a rounded mix
    assert [candidate_name(c) for c in (START, (50, 1.0), (50, 0.25), (75, 0.5))] == ["0", "50", "50@0.25", "75@0.5"]


def test_without_identification_the_candidate_of_highest_dice_is_kept_whatever_it_names():
    start = _found(0.60, 0.75, missed=20)
    fewer = {(50, 0.5): _found(0.65, 0.10, missed=10), (100, 0.5): _found(0.62, 0.90, missed=10)}
    assert choose_checkpoint(start, fewer) == (100, 0.5)
    assert choose_checkpoint(start, fewer, "none") == (50, 0.5)
    assert choose_checkpoint(start, {(50, 1.0): _found(0.60, 1.0, missed=0)}, "none") is None  # Dice must rise

"""The candidates of a decoder tuning (:mod:`.mask_tuning`, ``tune-masks``) and the rule that keeps one.

A candidate is a checkpoint of the tuning, by itself or mixed back into the model it started from, weight by
weight (weight-space ensembling, :mod:`vertebra_traversal.weight_blend`; Wortsman et al., *Robust fine-tuning
of zero-shot models*, CVPR 2022). Each candidate segments scans kept aside with the whole pipeline, scored as
``evaluate`` scores them (paper §4.2), and :func:`choose_checkpoint` keeps the one of highest Dice among those
that name vertebrae no worse than the model as it is.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch

from ..evaluate import GroupSummary
from ..weight_blend import mixed_state

IDENTIFICATION = ("rate", "count", "none")
Candidate = Tuple[int, float]
"""A candidate model: the checkpoint's iteration count and the share of its weights mixed into the model's."""
START: Candidate = (0, 1.0)
"""The model as it is."""


def choose_checkpoint(start: GroupSummary, candidates: Dict[Candidate, GroupSummary],
                      identification: str = "rate") -> Optional[Candidate]:
    """The candidate to keep: of those whose held-aside scans have a higher mean Dice than the model as it is
    (``start``; completely visible vertebrae, a missed one counting 0) and an identification rate not below
    it (of the matched ones; none matched counts as 0; ``identification`` = ``count``: as many vertebrae
    identified, the rate times the matched ones; ``none``: not compared, for a model whose label path is trained
    again on the new masks' runs afterwards, ``tune-labels``), the one of highest Dice; on a tie the earlier
    checkpoint, then the smaller share (the one nearer the model); None where no candidate qualifies."""
    def named(row: GroupSummary) -> float:
        if identification == "none":
            return 0.0
        rate = 0.0 if math.isnan(row.identification_accuracy) else row.identification_accuracy
        return rate if identification == "rate" else round(rate * (row.vertebrae - row.missed))

    better = [(-row.dice_mean, candidate) for candidate, row in candidates.items()
              if row.dice_mean > start.dice_mean and named(row) >= named(start)]
    return min(better)[1] if better else None


def candidate_state(start: Dict[str, torch.Tensor], tuned: Dict[str, torch.Tensor], share: float
                    ) -> Dict[str, torch.Tensor]:
    """The main network's weights of a candidate: ``tuned`` (a checkpoint's state dict) mixed into ``start``
    (the model's as it was), ``(1 - share) * start + share * tuned`` (:func:`~vertebra_traversal.weight_blend.
    mixed_state`); ``share`` 1 gives ``tuned`` itself, exactly."""
    return tuned if share == 1.0 else mixed_state(start, tuned, share)


def candidate_name(candidate: Candidate) -> str:
    """``"50"`` for checkpoint 50 itself (and ``"0"`` for the model as it is), ``"50@0.25"`` for its mix at 0.25."""
    iteration, share = candidate
    return str(iteration) if share == 1.0 else f"{iteration}@{share:g}"

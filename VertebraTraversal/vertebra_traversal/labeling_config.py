"""The settings of the label reading (:func:`.labeling.refine_labels`, paper §3.4 and beyond it): which chains
compete, what a skipped level, an instance left out, an anchor or a spacing costs. The reading itself and what
each setting means at length: :mod:`.labeling`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

from .checks import is_integer, is_number
from .label_calibration import LabelCalibration


@dataclass(frozen=True)
class LabelingConfig:
    """Which anatomical variants may be chosen, and their prior.

    Attributes:
        allow_t13, allow_l6, allow_four_lumbar: consider the variant chains.
        variant_penalty: subtracted from a variant sequence's average likelihood (0..1).
        calibration: read the values through this table of what the network answers per level
            (:mod:`.label_calibration`) instead of the paper's ``max(0, 1 - |v - y|)``; None = the paper's.
        max_gaps: how many single levels a sequence may skip (0 = the paper's gap-free sequences). A
            skipped level stands for a vertebra the traversal merged into its neighbour's instance or
            did not find, so that one such error does not shift every label beyond it.
        gap_penalty: subtracted from the sequence's average likelihood per skipped level (0..1).
        max_trimmed: how many instances at the two ends of the chain together a sequence may leave out
            (0 = none, the paper); a left-out instance gets no label (0).
        trim_penalty: subtracted from the sequence's average likelihood per instance left out (0..1).
        bottom_anchor_mm: the lowest instance sits on the sacrum when it ends at least this far (mm) above
            the scan's inferior border; 0 = never (the paper).
        bottom_anchor_penalty: subtracted from a sequence that then does not end on its chain's last
            member (0..1).
        rib_anchor: read the instance the ribs show to be the last thoracic one as its chain's last thoracic
            member (T12, T13); False = never (the paper).
        rib_anchor_penalty: subtracted from a sequence that does not (0..2; above 1 no such sequence can beat
            one that does: an average likelihood is at most 1).
        wide_ratio: two consecutive instances are wide apart when their centroids lie at least this many times
            as far apart as the pairs around them (:func:`.labeling.spacing_ratios`); 0 = never (the paper), else >= 1.
        wide_penalties: (a skipped level, consecutive levels) between two instances wide apart, each subtracted
            from the sequence's average likelihood (0..1) instead of ``gap_penalty`` and 0.
        reversal_levels: where a label value lies more than this many levels below the one above it, a sequence
            may leave out every instance below that place, or every one above it, however many (pieces of
            other bone traversed before or after the spine); 0 = never (the paper).
        reversal_penalty: subtracted from the sequence's average likelihood per instance so left out (0..1).
    """

    allow_t13: bool = True
    allow_l6: bool = True
    allow_four_lumbar: bool = True
    variant_penalty: float = 0.15
    calibration: Optional[LabelCalibration] = None
    max_gaps: int = 0
    gap_penalty: float = 0.1
    max_trimmed: int = 0
    trim_penalty: float = 0.15
    bottom_anchor_mm: float = 0.0
    bottom_anchor_penalty: float = 1.0
    rib_anchor: bool = False
    rib_anchor_penalty: float = 1.0
    wide_ratio: float = 0.0
    wide_penalties: Tuple[float, float] = (0.1, 0.0)
    reversal_levels: float = 0.0
    reversal_penalty: float = 0.05

    def __post_init__(self) -> None:
        for name in ("allow_t13", "allow_l6", "allow_four_lumbar", "rib_anchor"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"LabelingConfig.{name}: expected true/false, got {getattr(self, name)!r}")
        for name in ("variant_penalty", "gap_penalty", "trim_penalty", "bottom_anchor_penalty", "rib_anchor_penalty",
                     "reversal_penalty"):
            penalty, most = getattr(self, name), 2.0 if name == "rib_anchor_penalty" else 1.0
            if not is_number(penalty) or not 0.0 <= penalty <= most:
                raise ValueError(f"LabelingConfig.{name}: expected a number in [0, {most:g}], got {penalty!r}")
        if not is_integer(self.max_gaps) or not 0 <= self.max_gaps <= 3:
            raise ValueError(f"LabelingConfig.max_gaps: expected an integer from 0 to 3, got {self.max_gaps!r}")
        trimmed = self.max_trimmed
        if not is_integer(trimmed) or not 0 <= trimmed <= 3:
            raise ValueError(f"LabelingConfig.max_trimmed: expected an integer from 0 to 3, got {self.max_trimmed!r}")
        anchor = self.bottom_anchor_mm
        if not is_number(anchor) or not 0.0 <= anchor < math.inf:
            raise ValueError(f"LabelingConfig.bottom_anchor_mm: expected a number of mm >= 0, got {anchor!r}")
        drop = self.reversal_levels
        if not is_number(drop) or not 0.0 <= drop < math.inf:
            raise ValueError(f"LabelingConfig.reversal_levels: expected 0 (off) or a number of levels > 0, "
                             f"got {drop!r}")
        self._check_spacing()
        if self.calibration is not None and not isinstance(self.calibration, LabelCalibration):
            raise ValueError(f"LabelingConfig.calibration: expected a LabelCalibration, got {self.calibration!r}")

    @property
    def reads_spacing(self) -> bool:
        """Whether this reading prices skipped levels by the instances' spacing: a ratio set, and skipped levels
        allowed (without them there is nothing to price)."""
        return bool(self.wide_ratio) and bool(self.max_gaps)

    def _check_spacing(self) -> None:
        ratio, pair = self.wide_ratio, self.wide_penalties
        if not is_number(ratio) or not (ratio == 0 or 1 <= ratio < math.inf):
            raise ValueError(f"LabelingConfig.wide_ratio: expected 0 (off) or a number >= 1, got {ratio!r}")
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or any(
                not is_number(p) or not 0.0 <= p <= 1.0 for p in pair):
            raise ValueError(f"LabelingConfig.wide_penalties: expected two numbers in [0, 1] (a skipped level, "
                             f"consecutive levels), got {pair!r}")
        object.__setattr__(self, "wide_penalties", (float(pair[0]), float(pair[1])))  # a JSON list read as a pair


"""Maximum-likelihood label refinement (paper §3.4), extended to T13, L6 and four lumbar vertebrae.

Paper §3.4: each detected vertebra has a regressed label value ``v``; it is read as a probability over
labels, ``p(y | v) = max(0, 1 - |v - y|)`` with ``y`` the label's regression value (anatomy.py), so
22.8 is 80 % L4 and 20 % L3. Every sequence of labels without gaps or duplicates, in the detected
cranio-caudal order, is scored by its *average* likelihood; the best sequence wins. A model whose label
output is not on that scale carries a calibration table (:mod:`.label_calibration`), and ``p(y | v)`` is
then read from it; nothing else below changes.

Beyond the paper (its one labelling failure was a patient with four lumbar vertebrae), three variant
chains compete with the standard chain C1..L5, each with a prior ``variant_penalty`` subtracted from its
average likelihood so that it wins only on clear evidence:

- ``t13``: C1..T12, T13, L1..L5 (T13 regression value 19.5). A window must hold T12, T13 *and* L1:
  an extra thoracic vertebra is only evident as a "stall" between T12 and L1.
- ``l6``: C1..L5, L6 (value 25). A window must hold L6.
- ``four_lumbar``: C1..T12, L1..L4, then the sacrum. A window must hold T12 and L4.

Decision for the lumbar vertebrae of ``l6`` and ``four_lumbar`` chains: the network identifies lumbar
vertebrae by counting either down from the last rib (T12) or up from the sacrum, so the lowest lumbar
vertebra of a four-lumbar spine sits on the sacrum and is regressed like an L5 (~24), while the one
below the last rib is regressed like an L1 (~20). Each lumbar vertebra of these chains therefore has
two expected values -- its own (counted from the ribs) and that of the standard vertebra at the same
distance above the sacrum -- and ``p`` takes the better one. ``[.., 19, 20.9, 21.9, 22.9, 23.9]``: the
standard chain must either break the T12 anchor or the sacrum anchor (average well below 1), the
four-lumbar chain explains both (T12, L1..L4 with p = 0.9 each) and wins despite the penalty. When the
values are just a standard spine, the variant can at best tie before the penalty, so standard wins.
Where skipped levels are allowed (``max_gaps``, below) the standard chain has a third way: T12, then L1
skipped, L2..L5 explains the same values as well as the four-lumbar chain does, at the lower price of a
gap (``gap_penalty`` 0.1 against ``variant_penalty`` 0.15), and wins. A spine whose lumbar values are counted
from the ribs (the bundled CT model's, on its phantoms) reads L1..L4 either way.

Also beyond the paper, and off by default: ``LabelingConfig.max_gaps`` lets a sequence skip single
levels, each costing ``gap_penalty`` of its average likelihood. The paper's sequences are gap-free
because its traversal rarely merges or misses a vertebra; where one does, a gap-free sequence must put
every label on one side of that place a level off. ``[14, 15, 17, 18, 19]`` (T9 merged into T8's
instance): gap-free, T8..T12 scores 0.6; with one gap, T7 T8 T10 T11 T12 scores 1 minus the penalty.
A model carries its setting with its label reading (``ModelMetadata.label_gaps``).

Also beyond the paper, and off by default: ``LabelingConfig.max_trimmed`` lets a sequence leave out up to
K instances at the two ends of the chain, each costing ``trim_penalty`` of its average likelihood; they
get no label. The traversal stores now and then pieces of other bone at an end of the spine (the pelvis
below L5, the skull above C1) with label values that fit no level next to their neighbours. Where the scan
shows most of the spine no level is left for them, and keeping them moves every label: ``[3, 4, .., 24,
4.7, 9.8, 10.8]`` (C3-L5 and three pieces of the pelvis) is read by the paper's triangle as a T13 chain in
which C3-L5 are named C1-L2 (every sequence scores 0 there, so the tie-break decides), by a Gaussian of
1.25 levels as an L6 chain in which L5 is named L3; with the three left out (K = 3, T = 0.15), C3-L5 keep
their names. The average is taken over the instances kept, so leaving out one costs only T: an L6 read
exactly (L6's own value, 25) ties with the standard chain that leaves it out at 0.15, the price of the L6
chain, and the tie goes to the standard chain. Counting left-out instances as 0 instead was tried on
validation phantoms and named fewer L6 spines right, not more (CT model history).

Also beyond the paper, and off by default: ``LabelingConfig.bottom_anchor_mm`` counts from the sacrum,
as a reader of a lumbar MR does. When the lowest instance ends at least that far (mm) above the scan's
inferior border (``refine_labels(..., gap_below_mm=)``, measured by the pipeline), the scan shows what
lies below it and the traversal, which searches from the bottom up (§3.3), found no vertebra there: it
sits on the sacrum. A sequence whose lowest instance is then not its chain's last member (L5; L6 or L4 in
those chains), or leaves it out, costs ``bottom_anchor_penalty``. ``[19.45, 20.45, 21.45, 22.45, 23.45]``
(a run of values all a little under half a level high) is read T12..L4 (0.55 each); with the sacrum
below, L1..L5 (0.45 each). A four-lumbar chain (T12..L4 at 0.55 less its 0.15) would take such values a
little less high, and an L6 or four-lumbar spine read as standard still ends on the standard chain's
last member: the anchor does not decide between the chains.

Also beyond the paper, and off by default: ``LabelingConfig.rib_anchor`` counts from the last rib, as a
reader of a CT does. The ribs of the scan (:mod:`.ribs`) show which instance is the last thoracic one: the
lowest rib-bearing instance where a vertebra without ribs lies below it (``refine_labels(...,
last_thoracic=)``, found by the pipeline). A sequence that does not name that instance its chain's last
thoracic member (T12; T13 in that chain), or leaves it out, costs ``rib_anchor_penalty``. ``[18.4, 19.4,
20.4, 21.4]`` (T12..L3 each read a little over half a level high) is read T11..L2 (0.6 each); where the
ribs end at the first instance, T12..L3 (0.4 each). At a price above 1 the anchor is absolute: no sequence
that breaks it can beat one that keeps it (:func:`.ribs.rib_assignment` reads so at 2).

Also beyond the paper, and off by default: ``LabelingConfig.wide_ratio`` prices a skipped level by where the
instances lie (``refine_labels(..., centroids_mm=)``). Where the traversal merged or missed a vertebra, the two
instances on either side of the place usually lie further apart than the instances around them; where it
did not, they rarely do. Two consecutive instances are *wide apart* when the distance between their
centroids is at least ``wide_ratio`` times the median distance of up to three consecutive pairs on either
side (:func:`spacing_ratios`). There a skipped level costs ``wide_penalties[0]`` instead of ``gap_penalty``,
and keeping consecutive levels costs ``wide_penalties[1]`` instead of nothing. ``[14, 15, 16.6, 17.6]``
(T7, T8, then two values a little over half a level above T9 and T10) ties between T7..T10 and T7 T8, a
skipped T9, T10 T11 at one skipped level's 0.1, and the tie goes to the sequence without a skipped level;
with centroids 30, 45 and 30 mm apart, ``wide_ratio`` 1.05 and ``wide_penalties`` (0.075, 0.05), the wide
middle pair makes the skip the better reading (0.725 against 0.65). It applies only where levels may be
skipped (``max_gaps``).

Also beyond the paper, and off by default: ``LabelingConfig.reversal_levels`` leaves out what lies beyond a
reversal. Consecutive instances differ by about one level; where a value lies more than ``reversal_levels``
below the one above it, one side of that place is not the spine read in order: pieces of the pelvis or the
sacrum traversed after L5, of the skull before C1. A sequence may then leave out every instance below that
place, or every one above it (at least two kept), each at ``reversal_penalty`` and however many they are.
``[20, 21, 22, 23, 24, 5.5, 7.4, 9.2, 11.3]`` (L1-L5 and four pieces of the pelvis) is read C2-T3 when every
instance keeps a label (0.133), L1-L6 in an L6 chain with three ends left out (K = 3: the first piece named
L6); with ``reversal_levels`` 6 (``reversal_penalty`` 0.05), L1-L5 (1.0 less 0.2).

Confidence: ``likelihoods`` are the raw ``p(y | v)`` of the chosen labels; ``confidences`` are
per-vertebra marginals over all candidate sequences: the share of the candidates' weight that agrees
with the chosen label. A candidate of n vertebrae weighs ``s**n``, ``s`` its (penalised) average
likelihood: for one vertebra this is the paper's reading (22.8 -> 80 % L4), and like a joint probability
it separates long sequences sharply, yet unlike the plain product it survives one vertebra with p = 0.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from . import anatomy
from .label_calibration import LabelCalibration
from .labeling_config import LabelingConfig

logger = logging.getLogger(__name__)

CHAINS = ("standard", "t13", "l6", "four_lumbar")


@dataclass(frozen=True)
class LabelAssignment:
    """The chosen labels of the detected vertebrae, in input (cranio-caudal) order.

    Attributes:
        labels: VerSe ids; 0 for an instance left out at an end of the chain (``max_trimmed``).
        likelihoods: raw ``p(label | value)`` of each chosen label (0..1).
        confidences: per-vertebra marginal share of the chosen label over all candidates (0..1).
        chain: ``"standard"``, ``"t13"``, ``"l6"`` or ``"four_lumbar"``.
        score: the chosen sequence's average likelihood (paper §3.4) over the instances it keeps, before
            the variant, skipped-level and left-out penalties.
    """

    labels: Tuple[int, ...]
    likelihoods: Tuple[float, ...]
    confidences: Tuple[float, ...]
    chain: str
    score: float

    def kept(self) -> Tuple[int, ...]:
        """Indices of the instances that got a label (all but those left out at the chain's ends)."""
        return tuple(i for i, label in enumerate(self.labels) if label)

    def select(self, indices: Sequence[int]) -> "LabelAssignment":
        """This assignment for the instances at ``indices`` only, in that order."""
        return LabelAssignment(tuple(self.labels[i] for i in indices), tuple(self.likelihoods[i] for i in indices),
                               tuple(self.confidences[i] for i in indices), self.chain, self.score)


@dataclass(frozen=True)
class _Member:
    label: int
    expected: Tuple[float, ...]  # regression values this vertebra may plausibly get


@dataclass(frozen=True)
class _Chain:
    name: str
    members: Tuple[_Member, ...]
    required: Tuple[int, ...]  # member indices a window must contain
    penalty: float


@dataclass(frozen=True)
class _Candidate:
    chain: _Chain
    positions: Tuple[int, ...]  # member index of each vertebra, increasing by 1 (or 2 at a gap)
    likelihoods: Tuple[float, ...]
    distance: float  # sum of |v - nearest expected value|, tie-breaker
    gap_penalty: float = 0.0
    trimmed: Tuple[int, int] = (0, 0)  # instances left out at the top and at the bottom
    trim_penalty: float = 0.0
    anchor_penalty: float = 0.0  # the bottom anchor's, where this sequence does not end on the chain's last member
    rib_penalty: float = 0.0  # the rib anchor's, where this sequence does not end the thoracic spine at the last rib
    spacing_penalty: float = 0.0  # what its steps between instances wide apart change (LabelingConfig.wide_ratio)

    @property
    def labels(self) -> Tuple[int, ...]:
        """One per input instance: 0 for those left out, the member's VerSe id for the others."""
        top, bottom = self.trimmed
        return (0,) * top + tuple(self.chain.members[k].label for k in self.positions) + (0,) * bottom

    @property
    def likelihoods_all(self) -> Tuple[float, ...]:
        top, bottom = self.trimmed
        return (0.0,) * top + self.likelihoods + (0.0,) * bottom

    @property
    def gaps(self) -> int:
        return self.positions[-1] - self.positions[0] + 1 - len(self.positions)

    @property
    def score(self) -> float:
        return sum(self.likelihoods) / len(self.likelihoods)

    @property
    def objective(self) -> float:
        return (self.score - self.chain.penalty - self.gap_penalty * self.gaps
                - self.trim_penalty * sum(self.trimmed) - self.anchor_penalty - self.rib_penalty - self.spacing_penalty)


def likelihood(value: float, expected: Sequence[float]) -> float:
    """``max(0, 1 - |value - y|)`` for the nearest expected regression value ``y`` (paper §3.4)."""
    return max(0.0, 1.0 - min(abs(value - y) for y in expected))


def _own(name: str) -> _Member:
    v = anatomy.vertebra(name)
    return _Member(v.label, (v.regression_value,))


def _lumbar_counted_both_ways(lumbar: Sequence[str]) -> List[_Member]:
    """Lumbar members valued from the ribs (own value) and from the sacrum (L5's value minus the
    number of lumbar vertebrae below)."""
    l5 = anatomy.vertebra("L5").regression_value
    out = []
    for i, name in enumerate(lumbar):
        v = anatomy.vertebra(name)
        from_sacrum = l5 - (len(lumbar) - 1 - i)
        out.append(_Member(v.label, tuple(sorted({v.regression_value, from_sacrum}))))
    return out


def _chains(config: LabelingConfig) -> List[_Chain]:
    standard = [_own(v.name) for v in anatomy.STANDARD]
    names = [v.name for v in anatomy.STANDARD]
    t12 = names.index("T12")
    chains = [_Chain("standard", tuple(standard), (), 0.0)]
    penalty = float(config.variant_penalty)
    if config.allow_t13:
        members = standard[:t12 + 1] + [_own("T13")] + standard[t12 + 1:]
        chains.append(_Chain("t13", tuple(members), (t12, t12 + 1, t12 + 2), penalty))
    if config.allow_l6:
        members = standard[:t12 + 1] + _lumbar_counted_both_ways(names[t12 + 1:] + ["L6"])
        chains.append(_Chain("l6", tuple(members), (len(members) - 1,), penalty))
    if config.allow_four_lumbar:
        members = standard[:t12 + 1] + _lumbar_counted_both_ways(names[t12 + 1:-1])
        chains.append(_Chain("four_lumbar", tuple(members), (t12, len(members) - 1), penalty))
    return chains


def _last_thoracic(chain: _Chain) -> int:
    """Member index of the chain's last thoracic vertebra (T12; T13 in the ``t13`` chain)."""
    return max(i for i, m in enumerate(chain.members) if anatomy.vertebra(m.label).region == "thoracic")


def spacing_ratios(centroids_mm: Sequence[Sequence[float]]) -> Tuple[Optional[float], ...]:
    """For instances in cranio-caudal order (centroids in mm, any fixed axis order): per consecutive pair, the
    distance between their centroids over the median distance of up to three consecutive pairs on either side
    of it (the pair itself left out; fewer at the ends). None for every pair where fewer than three instances
    give no other pair to compare with."""
    points = [tuple(float(c) for c in p) for p in centroids_mm]
    d = [math.dist(a, b) for a, b in zip(points, points[1:])]
    out: List[Optional[float]] = []
    for i, own in enumerate(d):
        around = sorted(d[max(0, i - 3):i] + d[i + 1:i + 4])
        middle = len(around) // 2
        typical = (around[middle] if len(around) % 2 else (around[middle - 1] + around[middle]) / 2) if around else 0.0
        out.append(own / typical if typical > 0 else None)
    return tuple(out)


def _spacing_penalty(positions: Sequence[int], wide: Sequence[bool], config: LabelingConfig) -> float:
    """What the steps of ``positions`` between instances wide apart (``wide``, per pair from the first of them)
    add to a sequence's price, against the plain gap penalty (:attr:`LabelingConfig.wide_penalties`)."""
    skip, step = config.wide_penalties
    return sum((skip - config.gap_penalty) if b - a == 2 else step
               for a, b, apart in zip(positions, positions[1:], wide) if apart)


def _position_runs(n: int, members: int, max_gaps: int) -> List[Tuple[int, ...]]:
    """Member indices for ``n`` vertebrae: every window of a chain of ``members``, and with up to
    ``max_gaps`` single skipped members between two vertebrae."""
    out = []
    for gaps in range(max_gaps + 1):
        for after in itertools.combinations(range(n - 1), gaps):  # a gap after these vertebrae
            steps = [0] + [2 if i in after else 1 for i in range(n - 1)]
            offsets = tuple(itertools.accumulate(steps))
            out += [tuple(start + o for o in offsets) for start in range(members - offsets[-1])]
    return out


def _candidates(values: Sequence[float], chains: Sequence[_Chain],
                config: LabelingConfig = LabelingConfig(), anchored: bool = False,
                last_thoracic: Optional[int] = None, wide: Optional[Sequence[bool]] = None) -> List[_Candidate]:
    """Every window of each chain (with up to ``config.max_gaps`` skipped members) that fits the values, or
    the values without up to ``config.max_trimmed`` at their two ends, and holds the chain's required members.
    ``anchored``: the lowest value's vertebra sits on the sacrum (``config.bottom_anchor_penalty`` for a
    window that does not end on the chain's last member or leaves that vertebra out). ``last_thoracic``: the
    index of the value whose vertebra the ribs show to be the last thoracic one (``config.rib_anchor_penalty``
    for a window that does not put the chain's last thoracic member there or leaves that vertebra out).
    ``wide``: per consecutive pair of values, whether the two lie wide apart (``config.wide_penalties``)."""
    calibration = config.calibration
    score = likelihood if calibration is None else calibration.likelihood
    n, out = len(values), []
    for chain in chains:
        thoracic_end = _last_thoracic(chain)
        p = [[score(v, m.expected) for m in chain.members] for v in values]
        d = [[_distance(v, m.expected, calibration) for m in chain.members] for v in values]
        for top, bottom, trim_price in _trims(values, len(chain.members), config):
            for positions in _position_runs(n - top - bottom, len(chain.members), config.max_gaps):
                if any(r not in positions for r in chain.required):
                    continue
                rows = range(top, n - bottom)
                off_end = anchored and (bottom > 0 or positions[-1] != len(chain.members) - 1)
                off_rib = last_thoracic is not None and not (
                    top <= last_thoracic < n - bottom and positions[last_thoracic - top] == thoracic_end)
                out.append(_Candidate(chain, positions, tuple(p[i][k] for i, k in zip(rows, positions)),
                                      sum(d[i][k] for i, k in zip(rows, positions)), config.gap_penalty,
                                      (top, bottom), trim_price,
                                      config.bottom_anchor_penalty if off_end else 0.0,
                                      config.rib_anchor_penalty if off_rib else 0.0,
                                      _spacing_penalty(positions, wide[top:], config) if wide else 0.0))
    return out


def _trims(values: Sequence[float], members: int, config: LabelingConfig) -> List[Tuple[int, int, float]]:
    """(left out at the top, at the bottom, price per instance left out) for the ``values``: at most
    ``config.max_trimmed`` together at ``config.trim_penalty``; with ``config.reversal_levels``, where a value lies
    more than that many levels below the one above it, everything below that place or everything above it at
    ``config.reversal_penalty`` (two kept at least). Always at least one value kept, and no more than a chain of
    ``members`` holds."""
    n, most = len(values), config.max_trimmed
    out = [(top, bottom, config.trim_penalty) for top in range(most + 1) for bottom in range(most + 1 - top)]
    if config.reversal_levels:
        drops = [i for i in range(n - 1) if values[i + 1] < values[i] - config.reversal_levels]
        out += [(top, bottom, config.reversal_penalty) for i in drops for top, bottom in ((0, n - 1 - i), (i + 1, 0))
                if n - top - bottom >= 2]
    return [t for t in out if 0 < n - t[0] - t[1] <= members]


def _distance(value: float, expected: Sequence[float], calibration: Optional[LabelCalibration]) -> float:
    if calibration is not None:
        return calibration.distance(value, expected)
    return min(abs(value - y) for y in expected)


def _confidences(best: _Candidate, candidates: Sequence[_Candidate]) -> Tuple[float, ...]:
    n = len(best.labels)
    weights = [max(c.objective, 0.0) ** n for c in candidates]
    total = sum(weights)
    if total <= 0.0:
        return tuple(0.0 for _ in best.labels)
    agree: Dict[int, float] = {}
    chosen = best.labels
    for c, w in zip(candidates, weights):
        for i, label in enumerate(c.labels):
            if label == chosen[i]:
                agree[i] = agree.get(i, 0.0) + w
    return tuple(agree.get(i, 0.0) / total for i in range(len(chosen)))


def _check_values(values: Sequence[float]) -> List[float]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or (not isinstance(v, (int, float)) and not hasattr(v, "__float__")):
            raise ValueError(f"label value {i}: expected a number, got {v!r}")
        if not math.isfinite(float(v)):
            raise ValueError(f"label value {i}: expected a finite number, got {v!r}")
        out.append(float(v))
    return out


def capacity(config: LabelingConfig = LabelingConfig()) -> int:
    """The most instances :func:`refine_labels` can label under ``config``: its longest allowed chain, plus
    the instances it may leave out at the chain's ends."""
    return max(len(c.members) for c in _chains(config)) + int(config.max_trimmed)


def refine_labels(values: Sequence[float], config: LabelingConfig = LabelingConfig(),
                  gap_below_mm: Optional[float] = None, last_thoracic: Optional[int] = None,
                  centroids_mm: Optional[Sequence[Sequence[float]]] = None) -> LabelAssignment:
    """Maximum-likelihood labels of the detected vertebrae (paper §3.4 plus T13/L6/four lumbar).

    Args:
        values: regressed label values (network output, 0 = none, 1..24 = C1..L5), one per detected
            vertebra, in cranio-caudal order (top-most first).
        config: which variant chains compete and their penalty.
        gap_below_mm: how far (mm) the lowest vertebra ends above the scan's inferior border, or None
            (unknown); with ``config.bottom_anchor_mm`` > 0 and a gap at least that large, the lowest
            vertebra is read as its chain's last.
        last_thoracic: index (into ``values``) of the vertebra the ribs show to be the last thoracic one
            (:func:`.ribs.last_thoracic`), or None (not in view); read only with ``config.rib_anchor``.
        centroids_mm: the vertebrae's centroids (mm), one per value, or None (not known); read only with
            ``config.wide_ratio`` and ``config.max_gaps``.

    Returns:
        The best sequence; ties go to the standard chain, then to fewer skipped levels, fewer instances
        left out, and the smaller total distance.

    Raises:
        ValueError: a value is not a finite number, or more vertebrae than the longest allowed chain
            (24 for the standard chain, 25 with T13 or L6 allowed) holds once ``config.max_trimmed`` are
            left out -- no labelling without duplicates exists.
    """
    vals = _check_values(values)
    if not vals:
        return LabelAssignment((), (), (), "standard", 0.0)
    chains = _chains(config)
    most = capacity(config)
    if len(vals) > most:
        raise ValueError(f"{len(vals)} vertebrae detected but the allowed chains hold at most "
                         f"{most - config.max_trimmed} (and {config.max_trimmed} may be left out); "
                         f"no labelling without duplicates exists")
    anchored = bool(config.bottom_anchor_mm) and gap_below_mm is not None and \
        gap_below_mm >= config.bottom_anchor_mm
    if last_thoracic is not None and not 0 <= last_thoracic < len(vals):
        raise ValueError(f"last_thoracic: expected an index into the {len(vals)} values, got {last_thoracic!r}")
    candidates = _candidates(vals, chains, config, anchored, last_thoracic if config.rib_anchor else None,
                             _wide_pairs(centroids_mm, len(vals), config))
    rank = {name: i for i, name in enumerate(CHAINS)}
    best = min(candidates, key=lambda c: (-round(c.objective, 9), rank[c.chain.name], c.gaps, sum(c.trimmed),
                                          c.distance, c.trimmed, c.positions))
    logger.debug("label refinement: %s chain from %s, score %.3f, %d left out", best.chain.name,
                 anatomy.name_of(best.labels[best.trimmed[0]]), best.score, sum(best.trimmed))
    return LabelAssignment(labels=best.labels, likelihoods=best.likelihoods_all,
                           confidences=_confidences(best, candidates), chain=best.chain.name, score=best.score)


def _wide_pairs(centroids_mm: Optional[Sequence[Sequence[float]]], count: int,
                config: LabelingConfig) -> Optional[Tuple[bool, ...]]:
    """Per consecutive pair of ``count`` vertebrae, whether they lie wide apart (``config.wide_ratio``); None
    where the reading does not look (no ratio, no skipped level allowed, no centroids)."""
    if not config.reads_spacing or centroids_mm is None:
        return None
    if len(centroids_mm) != count:
        raise ValueError(f"centroids_mm: expected one per label value ({count}), got {len(centroids_mm)}")
    return tuple(r is not None and r >= config.wide_ratio for r in spacing_ratios(centroids_mm))


def provisional_label(value: float, calibration: Optional[LabelCalibration] = None) -> int:
    """The most likely standard label id (C1..L5) of one regressed value (live events): the nearest one,
    or with a ``calibration`` the one whose table reads the value most likely; ties go to the upper one.

    Raises:
        ValueError: ``value`` is not finite.
    """
    v = _check_values([value])[0]
    if calibration is None:
        return min(anatomy.STANDARD, key=lambda row: (abs(row.regression_value - v), row.rank)).label
    return min(anatomy.STANDARD, key=lambda row: (-calibration.likelihood(v, (row.regression_value,)),
                                                  row.rank)).label

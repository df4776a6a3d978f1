"""Label confidence fitted on segmented cases: the probability that a vertebra's label is right.

The maximum-likelihood step (paper §3.4, :mod:`.labeling`) scores whole label sequences; its per-vertebra
marginal (the share of the candidate sequences' weight that agrees with a label,
``LabelAssignment.confidences``) treats the label values as independent errors. They are not: where a
traversal shifts one instance by part of a level, every label beyond it tends to move together, and the
marginal is then high exactly where the labels are wrong. On 60 training phantoms segmented by the bundled
CT model it was no guide at all (the area under the ROC curve for "label right" was 0.42, below chance;
labels with a marginal of 0.9 or more were right 38 % of the time, those below 0.5 49 %).

What did tell right from wrong there: the label likelihood ``p(label | value)`` (0.64 alone) and how many
labelled vertebrae lie between this one and the end of the chain where the traversal started (0.71 alone:
errors pile up along the way). This module fits a logistic model over the two::

    P(right) = 1 / (1 + exp(-(a + b * likelihood + c * min(steps, cap) / 10)))

on the vertebrae of cases a model has segmented whose reference is known (``vertebra-traversal calibrate
--confidence``). A CT fit may add a third term, ``d * ribs_disagree``: 1 where the vertebra the ribs show
to be the last thoracic one (:func:`~vertebra_traversal.ribs.ribs_end_label`) is not named T12 (or T13),
a sign that the whole run of labels is shifted; on 60 validation phantoms it raised AUROC from 0.758 to
0.800 and lowered the Brier score from 0.169 to 0.160 (the CT model's history). The model carries the
fitted numbers in its metadata (``ModelMetadata.label_confidence``) and ``segment`` reports the
probability as ``label_confidence`` wherever it reads the labels the way the fit saw them. The CT model
card gives how well the probability matched on scans it was not fitted on.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .checks import is_integer, is_number
from .anatomy import DIRECTIONS, name_of

#: Steps from the traversal's start beyond this count as this many (the fit saw few longer chains).
STEPS_CAP = 15
#: The fitted numbers' names in the metadata record, in feature order.
WEIGHTS = ("intercept", "likelihood_weight", "steps_weight")
#: The optional fourth number (0 in records written before it, and in fits without the ribs).
RIBS_WEIGHT = "ribs_weight"
#: Where the ribs end, in a chain whose labels are right.
LAST_RIBBED = ("T12", "T13")


@dataclass(frozen=True)
class ConfidenceCalibration:
    """A fitted ``P(label right | likelihood, steps, ribs disagree)``.

    Attributes:
        intercept, likelihood_weight, steps_weight: the logistic model's numbers (steps enter as
            ``min(steps, steps_cap) / 10``).
        ribs_weight: the number of :func:`ribs_disagree` (0: not used).
        steps_cap: see :data:`STEPS_CAP`.
        vertebrae, cases: what it was fitted on.
        right: the share of those vertebrae whose label was right.
    """

    intercept: float
    likelihood_weight: float
    steps_weight: float
    ribs_weight: float = 0.0
    steps_cap: int = STEPS_CAP
    vertebrae: int = 0
    cases: int = 0
    right: float = 0.0

    def __post_init__(self) -> None:
        for name in WEIGHTS + (RIBS_WEIGHT, "right"):
            value = getattr(self, name)
            if not is_number(value) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
        if not 0.0 <= self.right <= 1.0:
            raise ValueError(f"right: expected a share from 0 to 1, got {self.right!r}")
        for name in ("steps_cap", "vertebrae", "cases"):
            value = getattr(self, name)
            if not is_integer(value) or value < (1 if name == "steps_cap" else 0):
                raise ValueError(f"{name}: expected a whole number{' >= 1' if name == 'steps_cap' else ''}, "
                                 f"got {value!r}")

    def probability(self, likelihood: float, steps: int, ribs_disagree: bool = False) -> float:
        """``P(right)`` of a label with likelihood ``p(label | value)`` (0..1), ``steps`` labelled vertebrae
        away from the end of the chain where the traversal started (0 = the first one it labelled), in a
        scan whose ribs end at a vertebra not named T12 / T13 (``ribs_disagree``, :func:`ribs_disagree`)."""
        z = (self.intercept + self.likelihood_weight * float(likelihood)
             + self.steps_weight * _steps(steps, self.steps_cap) + self.ribs_weight * float(bool(ribs_disagree)))
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        return math.exp(z) / (1.0 + math.exp(z))  # the same, without overflow for a large negative z

    def to_json(self) -> Dict[str, Any]:
        """The ``label_confidence`` record of a model's metadata."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> "ConfidenceCalibration":
        """Parse a ``label_confidence`` record.

        Raises:
            ValueError: not an object, missing or invalid fields (the message names the field).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        missing = [name for name in WEIGHTS if name not in data]
        if missing:
            raise ValueError(f"missing fields {missing}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _steps(steps: int, cap: int) -> float:
    return min(max(int(steps), 0), cap) / 10.0


def ribs_disagree(ribs_end: Optional[int]) -> bool:
    """Whether the vertebra the ribs show to be the last thoracic one (its VerSe id, ``ribs_end``; None: the
    end of the ribs is not in view) is named anything but T12 or T13."""
    return ribs_end is not None and name_of(int(ribs_end)) not in LAST_RIBBED


def steps_from_start(count: int, direction: str) -> List[int]:
    """For ``count`` labelled vertebrae in cranio-caudal order (top first): how many lie between each one and
    the end where a traversal of ``direction`` started (``"up"``: the bottom, ``"down"``: the top)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return [count - 1 - i if direction == "up" else i for i in range(count)]


def fit_confidence(samples: Sequence[Tuple[float, int, bool, bool]], cases: int, l2: float = 0.01,
                   steps_cap: int = STEPS_CAP, ribs: bool = False) -> ConfidenceCalibration:
    """Fit :class:`ConfidenceCalibration` by Newton's method on (likelihood, steps, ribs disagree, right) per
    vertebra, with an L2 penalty ``l2`` on the numbers (it keeps them finite where the samples separate
    perfectly); ``ribs``: fit ``ribs_weight`` too (else it stays 0 and the third item is not read).

    Raises:
        ValueError: fewer than 10 samples, or labels that are all right or all wrong (nothing to tell apart).
    """
    if len(samples) < 10:
        raise ValueError(f"{len(samples)} labelled vertebrae matched a reference; at least 10 are needed")
    y = np.array([bool(right) for *_, right in samples], float)
    if y.min() == y.max():
        raise ValueError(f"all {len(y)} labels were {'right' if y[0] else 'wrong'}: nothing to tell apart")
    x = np.array([[1.0, float(lk), _steps(steps, steps_cap)] + ([float(bool(d))] if ribs else [])
                  for lk, steps, d, _ in samples])
    w = np.zeros(x.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        gradient = x.T @ (p - y) + l2 * w
        hessian = x.T @ (x * (p * (1.0 - p))[:, None]) + l2 * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    numbers = [float(v) for v in w] + ([] if ribs else [0.0])
    return ConfidenceCalibration(*numbers, steps_cap=steps_cap, vertebrae=len(y), cases=int(cases),
                                 right=float(y.mean()))


def brier(probabilities: Sequence[float], right: Sequence[bool]) -> float:
    """Mean squared difference between stated probabilities and outcomes (0 is perfect; a constant at the
    share right scores that share times its complement)."""
    p, y = np.asarray(probabilities, float), np.asarray(right, float)
    return float(((p - y) ** 2).mean())


def auroc(scores: Sequence[float], right: Sequence[bool]) -> float:
    """The chance that a right label scores higher than a wrong one (ties count half); 0.5 = no guide."""
    s, y = np.asarray(scores, float), np.asarray(right, bool)
    pos, neg = s[y], s[~y]
    if not pos.size or not neg.size:
        return float("nan")
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())

"""What a network's label output means, measured on its own training cases (beyond the paper, §3.4).

The paper reads a regressed label value ``v`` as ``p(y | v) = max(0, 1 - |v - y|)``: it takes for granted
that the network answers close to the true regression value ``y``. A network trained briefly may not. On
30 of their training phantoms the bundled compact CT model answers about 10 for C1-C7, rises to 22 at T10
and falls back to 15 at L5; the MR model answers about 15 from T1 to T8 (it found no cervical body), rises
to 22 at L2 and falls to 19 at L5. Their output carries information about the level, but not on the scale
the paper assumes, and not even monotonically, so no linear rescaling can repair it.

A :class:`LabelCalibration` is a table over the regression values ``y = 1 .. 25`` (C1 .. L6): the mean
``m_y`` and the spread ``s_y`` of the value the network gives a vertebra of level ``y``, fitted on the
traversal's own outputs for training cases matched to their reference (``vertebra-traversal calibrate``).
The maximum-likelihood step then reads ``p(y | v) = exp(-(v - m_y)^2 / (2 s_y^2))``; the gap-free chains,
variants and average-likelihood scoring of :mod:`.labeling` are unchanged. The fit smooths over
neighbouring levels with a Gaussian kernel (``smoothing`` levels) and floors the spread (``sd_floor``), so
that levels seen rarely borrow from their neighbours. Values between table points (T13 at 19.5) are
interpolated linearly.

A network that answers on the paper's scale but is often a level or more off needs no fitted table:
:func:`gaussian_reading` keeps ``m_y = y`` and only widens the paper's triangle, which gives a vertebra
nothing for its true level once the answer is a whole level away, into a Gaussian (``calibrate
--gaussian SD``; the bundled CT model: SD 1.25).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import numpy as np

#: Regression values the table is given at: C1 (1) .. L5 (24) and L6 (25).
TABLE_VALUES: Tuple[float, ...] = tuple(float(y) for y in range(1, 26))


@dataclass(frozen=True)
class LabelCalibration:
    """Mean and spread of the regressed label value per level.

    Attributes:
        means: ``m_y`` for ``y`` in :data:`TABLE_VALUES` (label-value units).
        sds: ``s_y`` (> 0), same order.
        vertebrae: matched vertebrae the table was fitted on.
        cases: cases they came from.

    Raises:
        ValueError: wrong lengths, non-finite values, or a spread that is not positive.
    """

    means: Tuple[float, ...]
    sds: Tuple[float, ...]
    vertebrae: int = 0
    cases: int = 0

    def __post_init__(self) -> None:
        for name in ("means", "sds"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != len(TABLE_VALUES) or not all(math.isfinite(v) for v in values):
                raise ValueError(f"label calibration {name}: expected {len(TABLE_VALUES)} finite numbers")
            object.__setattr__(self, name, values)
        if min(self.sds) <= 0.0:
            raise ValueError("label calibration sds: every spread must be positive")

    @property
    def fitted(self) -> bool:
        """True for a table fitted to a network's answers (it describes those weights only); False for a
        reading of the paper's expected values (:func:`gaussian_reading`), which any weights may keep."""
        return self.vertebrae > 0 or self.means != tuple(float(v) for v in TABLE_VALUES)

    def mean(self, y: float) -> float:
        """``m_y``, interpolated between table points."""
        return float(np.interp(y, TABLE_VALUES, self.means))

    def likelihood(self, value: float, expected: Sequence[float]) -> float:
        """``exp(-(v - m_y)^2 / (2 s_y^2))`` for the best of the ``expected`` regression values ``y``."""
        best = 0.0
        for y in expected:
            spread = float(np.interp(y, TABLE_VALUES, self.sds))
            best = max(best, math.exp(-0.5 * ((value - self.mean(y)) / spread) ** 2))
        return best

    def distance(self, value: float, expected: Sequence[float]) -> float:
        """``min |v - m_y|`` over the ``expected`` values (tie-breaker of the maximum-likelihood step)."""
        return min(abs(value - self.mean(y)) for y in expected)

    def to_json(self) -> Dict[str, Any]:
        return {"values": list(TABLE_VALUES), "means": [round(v, 4) for v in self.means],
                "sds": [round(v, 4) for v in self.sds], "vertebrae": self.vertebrae, "cases": self.cases}

    @classmethod
    def from_json(cls, data: Any) -> "LabelCalibration":
        """Inverse of :meth:`to_json`. Raises ValueError on anything malformed."""
        if not isinstance(data, dict):
            raise ValueError(f"label calibration: expected a JSON object, got {type(data).__name__}")
        if [float(v) for v in data.get("values", [])] != list(TABLE_VALUES):
            raise ValueError(f"label calibration values: expected {list(TABLE_VALUES)}")
        try:
            return cls(tuple(data["means"]), tuple(data["sds"]), int(data.get("vertebrae", 0)),
                       int(data.get("cases", 0)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"label calibration: {exc!r}") from exc


def gaussian_reading(sd: float) -> LabelCalibration:
    """The paper's expected values (``m_y = y``) read through a Gaussian of ``sd`` levels instead of the
    paper's triangle ``max(0, 1 - |v - y|)``, which gives a vertebra nothing for its level as soon as the
    network is one level off. For a network that answers on the right scale but with errors of a level or more.

    Raises:
        ValueError: ``sd`` is not a positive finite number.
    """
    if not (math.isfinite(sd) and sd > 0.0):
        raise ValueError(f"the spread must be a positive number of levels, got {sd}")
    return LabelCalibration(TABLE_VALUES, (float(sd),) * len(TABLE_VALUES))


def fit_calibration(pairs: Sequence[Tuple[float, float]], cases: int = 0, smoothing: float = 1.0,
                    sd_floor: float = 2.0) -> LabelCalibration:
    """Fit the table from ``(true regression value y, regressed value v)`` pairs of matched vertebrae.

    At each table point the mean and standard deviation of ``v`` are weighted by
    ``exp(-(y_i - y)^2 / (2 smoothing^2))``; spreads below ``sd_floor`` are raised to it.

    Raises:
        ValueError: fewer than 2 pairs, non-finite numbers, or non-positive ``smoothing`` / ``sd_floor``.
    """
    data = np.asarray(pairs, dtype=float).reshape(-1, 2) if len(pairs) else np.zeros((0, 2))
    if len(data) < 2:
        raise ValueError(f"label calibration needs at least 2 matched vertebrae, got {len(data)}")
    if not np.all(np.isfinite(data)):
        raise ValueError("label calibration: pairs must be finite numbers")
    if smoothing <= 0.0 or sd_floor <= 0.0:
        raise ValueError(f"smoothing ({smoothing}) and sd_floor ({sd_floor}) must be positive")
    means, sds = [], []
    for y in TABLE_VALUES:
        weights = np.exp(-0.5 * ((data[:, 0] - y) / smoothing) ** 2)
        if weights.sum() < 1e-12:  # no vertebra anywhere near this level: fall back to the nearest ones
            weights = (np.abs(data[:, 0] - y) == np.abs(data[:, 0] - y).min()).astype(float)
        mean = float(np.sum(weights * data[:, 1]) / weights.sum())
        spread = float(np.sqrt(np.sum(weights * (data[:, 1] - mean) ** 2) / weights.sum()))
        means.append(mean)
        sds.append(max(spread, sd_floor))
    return LabelCalibration(tuple(means), tuple(sds), vertebrae=len(data), cases=cases)

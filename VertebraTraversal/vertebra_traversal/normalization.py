"""Intensity normalisation of network inputs: CT (fixed Hounsfield window) and MR (percentiles).

CT (``kind="ct"``): clip to a Hounsfield window, then ``hu * scale + offset``; with the defaults
(-1000..2000 HU, scale 1/1000) air becomes -1 and dense bone +2.

MR (``kind="percentile"``, paper §5): "The MR images were normalized by clipping off values below the
5th and above the 95th percentile and transforming the values into the range [-1, 1]."

The spec is stored in the checkpoint metadata (docs/ARCHITECTURE.md, "Checkpoint metadata") as
``{"kind": "ct", "clip": [-1000, 2000], "scale": 0.001, "offset": 0.0}`` or
``{"kind": "percentile", "low": 5, "high": 95}``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple

import numpy as np

logger = logging.getLogger(__name__)

KINDS = ("ct", "percentile")
_KEYS = {"ct": {"kind", "clip", "scale", "offset"}, "percentile": {"kind", "low", "high"}}
#: Hounsfield value of air, the background of CT.
AIR_HU = -1000.0


@dataclass(frozen=True)
class NormalizationSpec:
    """How to map raw intensities to network inputs.

    Attributes:
        kind: ``"ct"`` (Hounsfield window) or ``"percentile"`` (MR, paper §5).
        clip: CT only, (low, high) window in HU.
        scale, offset: CT only, ``normalised = clipped_hu * scale + offset``.
        low, high: percentile only, percentiles (0..100) clipped to and mapped onto -1 and +1.
    """

    kind: str
    clip: Tuple[float, float] = (-1000.0, 2000.0)
    scale: float = 1.0 / 1000.0
    offset: float = 0.0
    low: float = 5.0
    high: float = 95.0

    def __post_init__(self) -> None:
        _validate(self)

    def to_json(self) -> Dict[str, Any]:
        """The metadata dictionary (only the fields of this ``kind``)."""
        if self.kind == "ct":
            return {"kind": "ct", "clip": [float(self.clip[0]), float(self.clip[1])],
                    "scale": float(self.scale), "offset": float(self.offset)}
        return {"kind": "percentile", "low": float(self.low), "high": float(self.high)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "NormalizationSpec":
        """Parse and validate a metadata dictionary.

        Raises:
            ValueError: not a mapping, unknown kind, unknown keys, or invalid values (the message says which).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"normalization: expected a JSON object, got {type(data).__name__}")
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValueError(f"normalization: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
        unknown = sorted(set(data) - _KEYS[kind])
        if unknown:
            raise ValueError(f"normalization: unknown keys {unknown} for kind {kind!r} "
                             f"(allowed: {sorted(_KEYS[kind])})")
        if kind == "ct":
            clip = data.get("clip", (-1000.0, 2000.0))
            if isinstance(clip, (str, bytes)) or not hasattr(clip, "__len__") or len(clip) != 2:
                raise ValueError(f"normalization: clip must be [low, high], got {clip!r}")
            return cls("ct", clip=(_number(clip[0], "clip"), _number(clip[1], "clip")),
                       scale=_number(data.get("scale", 1.0 / 1000.0), "scale"),
                       offset=_number(data.get("offset", 0.0), "offset"))
        return cls("percentile", low=_number(data.get("low", 5.0), "low"),
                   high=_number(data.get("high", 95.0), "high"))


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"normalization: {name} must be a number, got {value!r}")
    return float(value)


def _validate(spec: NormalizationSpec) -> None:
    if spec.kind not in KINDS:
        raise ValueError(f"normalization: unknown kind {spec.kind!r} (expected one of {', '.join(KINDS)})")
    numbers = (*spec.clip, spec.scale, spec.offset, spec.low, spec.high)
    if len(spec.clip) != 2 or not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                      and math.isfinite(float(v)) for v in numbers):
        raise ValueError(f"normalization: values must be finite numbers, got {spec!r}")
    if spec.kind == "ct":
        if not spec.clip[0] < spec.clip[1]:
            raise ValueError(f"normalization: clip low must be below high, got {tuple(spec.clip)}")
        if spec.scale <= 0:
            raise ValueError(f"normalization: scale must be positive, got {spec.scale}")
    elif not 0.0 <= spec.low < spec.high <= 100.0:
        raise ValueError(f"normalization: need 0 <= low < high <= 100, got low={spec.low}, high={spec.high}")


def normalize(array: np.ndarray, spec: NormalizationSpec) -> np.ndarray:
    """Normalise intensities; returns float32 of the same shape (any axis order, typically (z, y, x)).

    CT: ``clip(array, *spec.clip) * spec.scale + spec.offset`` (array in HU).
    Percentile: the ``low``/``high`` percentiles of the whole array, p_lo and p_hi, are mapped to -1
    and +1 and values outside are clipped. If p_hi == p_lo (an image that is mostly one value) the
    minimum and maximum are used instead; a constant array maps to -1 everywhere.
    """
    values = np.asarray(array, dtype=np.float32)
    if spec.kind == "ct":
        lo, hi = spec.clip
        return (np.clip(values, lo, hi) * np.float32(spec.scale) + np.float32(spec.offset)).astype(np.float32)
    p_lo, p_hi = (float(v) for v in np.percentile(values, [spec.low, spec.high]))
    if p_hi <= p_lo:
        p_lo, p_hi = float(values.min()), float(values.max())
        logger.warning("percentile normalisation: %g-th and %g-th percentiles are equal; using min/max",
                       spec.low, spec.high)
    if p_hi <= p_lo:
        return np.full(values.shape, -1.0, dtype=np.float32)
    out = (np.clip(values, p_lo, p_hi) - np.float32(p_lo)) * np.float32(2.0 / (p_hi - p_lo)) - np.float32(1.0)
    return out.astype(np.float32)


def pad_value(spec: NormalizationSpec) -> float:
    """Normalised value of background, used to pad patches beyond the image.

    CT: the normalised value of air (-1000 HU, clipped to the window): -1.0 with the defaults.
    Percentile (MR): -1.0, the value of the darkest voxels.
    """
    if spec.kind == "ct":
        lo, hi = spec.clip
        return float(min(max(AIR_HU, lo), hi) * spec.scale + spec.offset)
    return -1.0

"""The network as the traversal sees it: a plain batched callable (paper §3.3).

Any object with ``__call__(images, memories) -> PatchPrediction`` drives the traversal: the trained
TorchScript model (:class:`vertebra_traversal.torch_predictor.TorchPredictor`) or an oracle built
from a ground-truth label map in tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class PatchPrediction:
    """Network outputs for a batch of B patches of shape (D, H, W) = model-grid (z, y, x).

    Attributes:
        probabilities: float32 (B, D, H, W), segmentation probability of the next vertebra.
        label_values: float (B,), regressed anatomical label (0 = no vertebra, 1..24 = C1..L5, §3.4).
        completeness: float (B,), probability that the vertebra is completely visible (§3.5).
    """

    probabilities: np.ndarray
    label_values: np.ndarray
    completeness: np.ndarray


class Predictor(Protocol):
    """A batched patch predictor.

    Args (of ``__call__``):
        images: float32 (B, D, H, W) normalised image patches.
        memories: float32 (B, D, H, W) instance-memory patches, 1 where a voxel is already segmented.
    """

    def __call__(self, images: np.ndarray, memories: np.ndarray) -> PatchPrediction: ...

"""The :class:`~vertebra_traversal.predictor.Predictor` around a loaded checkpoint (paper §3.3).

The traversal hands over numpy patches; this class stacks image and instance memory into the network's
two input channels (paper §3.2), runs the model in chunks of ``batch_size`` under
``torch.inference_mode`` on the model's device and returns numpy outputs.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from .checks import is_integer
from .checkpoint import LoadedModel
from .predictor import PatchPrediction

logger = logging.getLogger(__name__)


class TorchPredictor:
    """Batched patch predictor for a :class:`~vertebra_traversal.checkpoint.LoadedModel`.

    Call with ``images`` and ``memories``, float32 (B, D, H, W) in model-grid (z, y, x) order, where
    (D, H, W) is the model's ``patch_size``; returns a :class:`PatchPrediction` with probabilities
    float32 (B, D, H, W), label values float32 (B,) and completeness float32 (B,).

    Attributes:
        passes: number of patches evaluated so far (network passes; B per call).
    """

    def __init__(self, model: LoadedModel, batch_size: int = 4) -> None:
        if not is_integer(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        self.passes = 0

    def _check(self, images: np.ndarray, memories: np.ndarray) -> None:
        patch = tuple(self.model.metadata.patch_size)
        for name, array in (("images", images), ("memories", memories)):
            if not isinstance(array, np.ndarray) or array.ndim != 4 or tuple(array.shape[1:]) != patch:
                shape = getattr(array, "shape", type(array).__name__)
                raise ValueError(f"{name}: expected an array (B, {', '.join(map(str, patch))}), got {shape}")
        if images.shape[0] != memories.shape[0]:
            raise ValueError(f"images and memories differ in batch size: {images.shape[0]} vs {memories.shape[0]}")

    def _run_chunk(self, images: np.ndarray, memories: np.ndarray) -> tuple:
        x = np.stack([images, memories], axis=1).astype(np.float32, copy=False)  # (b, 2, D, H, W)
        tensor = torch.from_numpy(np.ascontiguousarray(x)).to(self.model.device)
        if tensor.device.type == "cpu":  # oneDNN's channels-last conv3d: 1.8x faster (benchmarks/network_speed.py)
            tensor = tensor.contiguous(memory_format=torch.channels_last_3d)
        seg, label, complete = self.model.module(tensor)
        return (seg[:, 0].float().cpu().numpy(), label.reshape(-1).float().cpu().numpy(),
                complete.reshape(-1).float().cpu().numpy())

    def __call__(self, images: np.ndarray, memories: np.ndarray) -> PatchPrediction:
        """Evaluate B patches; see the class docstring for shapes."""
        self._check(images, memories)
        count = images.shape[0]
        if count == 0:
            empty = np.zeros((0,), np.float32)
            return PatchPrediction(np.zeros((0,) + images.shape[1:], np.float32), empty, empty.copy())
        parts = []
        with torch.inference_mode():
            for start in range(0, count, self.batch_size):
                stop = start + self.batch_size
                parts.append(self._run_chunk(images[start:stop], memories[start:stop]))
        self.passes += count
        probabilities, labels, completeness = (np.concatenate(p) for p in zip(*parts))
        return PatchPrediction(probabilities=probabilities, label_values=labels, completeness=completeness)

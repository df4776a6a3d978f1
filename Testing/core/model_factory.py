"""Test helper: small random-weight checkpoints saved through the real checkpoint code."""
from pathlib import Path
from typing import Optional

import torch

from vertebra_traversal.checkpoint import ModelMetadata, save_torchscript
from vertebra_traversal.network import IterativeFCN, NetworkConfig

TINY = NetworkConfig(filters=4, depth=2, head_features=4, head_depth=1, patch_size=(16, 16, 16))


def tiny_model(path: Path, modality: str = "CT", spacing_mm: float = 8.0, seed: int = 0,
               label_calibration: Optional[dict] = None) -> Path:
    """A 16^3-patch network at ``spacing_mm`` (128 mm field of view) with random weights."""
    torch.manual_seed(seed)
    network = IterativeFCN(TINY)
    metadata = ModelMetadata(
        modality=modality, target="vertebra" if modality == "CT" else "body", spacing_mm=(spacing_mm,) * 3,
        patch_size=TINY.patch_size, network=TINY.to_json(),
        normalization={"kind": "ct", "clip": [-1000, 2000], "scale": 0.001, "offset": 0.0} if modality == "CT"
        else {"kind": "percentile", "low": 5, "high": 95},
        min_fragment_mm3=4 * spacing_mm ** 3, label_calibration=label_calibration or {})
    return save_torchscript(network, metadata, path)

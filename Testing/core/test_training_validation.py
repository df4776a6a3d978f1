"""Validation metrics: patch level with hand-made patches and a fake network; whole scans via the pipeline."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from test_training_fixtures import tiny_config, write_spine_case
from vertebra_traversal.network import NetworkConfig
from vertebra_traversal.training.trainer import train
from vertebra_traversal.training.validation import dice_score, json_ready, patch_metrics


class ThresholdNet(nn.Module):
    """Segments the bright voxels of the image channel; label 22; always 'complete' (logit +5)."""

    def forward_logits(self, x):
        seg = torch.where(x[:, :1] > 0.5, 10.0, -10.0)
        return seg, torch.full((x.shape[0],), 22.0), torch.full((x.shape[0],), 5.0)


def _sample(image: np.ndarray, target: np.ndarray, label: float, complete: float) -> dict:
    return {"input": np.stack([image, np.zeros_like(image)]).astype(np.float32),
            "target": target[None].astype(np.float32), "weights": np.ones((1,) + image.shape, np.float32),
            "label": np.float32(label), "complete": np.float32(complete)}


def test_patch_metrics_by_hand():
    cube = np.zeros((4, 4, 4), np.float32)
    cube[1:3, 1:3, 1:3] = 1                        # 8 voxels
    half = cube.copy()
    half[1] = 0                                    # 4 of them
    three = np.zeros_like(cube)
    three[0, 0, :3] = 1
    samples = [_sample(cube, cube, 22, 1), _sample(cube, half, 20, 0), _sample(three, np.zeros_like(cube), 0, 0)]
    model = ThresholdNet()
    model.train()
    m = patch_metrics(model, samples, torch.device("cpu"), fp_lambda=1.0, seg_divisor=1.0)
    assert model.training                          # mode restored
    assert m["patches"] == 3
    assert m["dice"] == pytest.approx((1.0 + 2 * 4 / 12) / 2)
    assert m["empty_fp_voxels"] == 3.0
    assert m["label_mae"] == pytest.approx((0 + 2 + 22) / 3)
    assert m["completeness_accuracy"] == pytest.approx(1 / 3)
    assert m["label"] == pytest.approx(m["label_mae"])


def test_dice_and_json_ready():
    a = np.array([1, 1, 0, 0], bool)
    assert dice_score(a, np.array([1, 0, 1, 0], bool)) == 0.5 and dice_score(~a & a, ~a & a) == 1.0
    assert json_ready({"x": math.nan, "y": 1.5, "z": "s"}) == {"x": None, "y": 1.5, "z": "s"}


def test_held_out_cases_are_segmented_with_the_pipeline(tmp_path):
    write_spine_case(tmp_path / "train", "case001", [24, 23, 22])
    write_spine_case(tmp_path / "held", "case009", [23, 22], seed=5)
    net = NetworkConfig(filters=4, depth=1, head_features=4, head_depth=2, patch_size=(16, 16, 16))
    train([tmp_path / "train"], tmp_path / "run", tiny_config(iterations=1, network=net, validate_every=1),
          device="cpu", validation_dirs=[tmp_path / "held"])
    record = json.loads((tmp_path / "run" / "validation.jsonl").read_text().splitlines()[-1])
    assert record["source"] == "held-out" and record["scans"] == 1.0
    assert 0.0 <= record["scan_dice"] <= 1.0 and record["scan_seconds"] > 0
    assert {"scan_identification_accuracy", "scan_missed", "scan_false_detections", "dice"} <= set(record)

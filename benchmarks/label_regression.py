"""How much of the anatomical label does a model regress on held-out patches (paper §3.4)?

    python benchmarks/label_regression.py --data DATASET --model ct|mr|PATH [--patches 300] [--cache DIR] [--centred]

Draws un-augmented training-style patches (§3.6: memory = the vertebrae before the target, 75 % around
a vertebra, 25 % anywhere) from the cases in DATASET, runs the model once per patch and compares the
regressed label value with the target (0 = nothing left, 1..24 = C1..L5). Prints the mean absolute
error of the model, of always answering the best constant (the median target: the "predict the mean"
plateau) and of guessing the target's region only, the Pearson correlation, and the error per region.
A model that has learned identification is far below the constant's error; one on the plateau is not.

With ``--centred`` every patch is centred on a vertebra (within the 5 mm jitter of ``train
--centred-fraction``) with the memory of §3.6: where the traversal reads the label once it has converged
(§3.3), rather than anywhere in a vertebra's box or anywhere in the scan.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from vertebra_traversal.checkpoint import load_model
from vertebra_traversal.models import resolve_model
from vertebra_traversal.torch_predictor import TorchPredictor
from vertebra_traversal.training.config import preset
from vertebra_traversal.training.data import find_cases, prepare_cases
from vertebra_traversal.training.patches import PatchSettings, fixed_samples
from vertebra_traversal.training.trainer import adopt_init

REGIONS = {"none": (0, 0), "cervical": (1, 7), "thoracic": (8, 19), "lumbar": (20, 25)}


def region_of(value: float) -> str:
    return next(name for name, (low, high) in REGIONS.items() if low <= round(value) <= high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="ct")
    parser.add_argument("--patches", type=int, default=300)
    parser.add_argument("--cache", type=Path, help="folder for the resampled arrays (default: temporary)")
    parser.add_argument("--centred", action="store_true",
                        help="every patch centred on a vertebra, as the traversal reads the label")
    args = parser.parse_args()
    loaded = load_model(resolve_model(args.model), device="cpu")
    config = adopt_init(preset("compact", loaded.metadata.modality.lower()), loaded.metadata)
    if args.centred:
        config = config.replace(foreground_fraction=1.0, centred_fraction=1.0)
    cases = find_cases([args.data], config.modality)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_cases(cases, args.cache or Path(tmp), config.spacing_mm, config.normalization,
                                 config.verse_margin_mm)
        settings = PatchSettings.of(config, seed=12345)
        samples = fixed_samples(prepared, settings, args.patches)
    inputs = np.stack([sample["input"] for sample in samples])  # (N, 2, D, H, W): image, memory
    p = TorchPredictor(loaded)(inputs[:, 0], inputs[:, 1]).label_values
    t = np.array([float(sample["label"]) for sample in samples])
    regions = np.array([region_of(v) for v in t])
    region_guess = np.array([np.median(t[regions == r]) for r in regions])
    summary = {"patches": len(t), "mae": round(float(np.mean(np.abs(p - t))), 2),
               "mae_constant": round(float(np.mean(np.abs(np.median(t) - t))), 2),
               "mae_region_only": round(float(np.mean(np.abs(region_guess - t))), 2),
               "pearson_r": round(float(np.corrcoef(p, t)[0, 1]), 3) if np.std(p) > 0 else None,
               "per_region_mae": {r: round(float(np.mean(np.abs(p - t)[regions == r])), 2)
                                  for r in REGIONS if np.any(regions == r)},
               "per_region_patches": {r: int(np.sum(regions == r)) for r in REGIONS if np.any(regions == r)}}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""Can a model start a traversal anywhere on the spine (paper §3.3)?

    python benchmarks/start_patches.py --data DATASET --model ct|mr|PATH [--cache DIR]

For every vertebra of every case in DATASET, one un-augmented patch centred on the middle of the
vertebra's box is run twice:

* *with memory*: every vertebra before it in traversal order is in the instance memory, as when the
  traversal arrives from below (§3.6's sampling);
* *empty memory*: nothing is segmented yet, as the search sees the scan before it has found its first
  vertebra. The target is then the first vertebra in traversal order that the patch holds.

Per region of the vertebra the patch is centred on, it prints the mean in-patch Dice of the thresholded
output (> 0.5) with the target, and for the empty memory the share of patches where the output holds at
least the model's ``v_min`` voxels: where the search could start. A model that segments a region with
memory but never starts there finds nothing in a scan of that region alone (a dedicated neck scan).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy as np

from vertebra_traversal import anatomy
from vertebra_traversal.checkpoint import load_model
from vertebra_traversal.models import resolve_model
from vertebra_traversal.torch_predictor import TorchPredictor
from vertebra_traversal.training.config import preset
from vertebra_traversal.training.data import find_cases, prepare_cases
from vertebra_traversal.training.patches import PatchSettings, annotate
from vertebra_traversal.training.sampler import PatchPlan, memory_before
from vertebra_traversal.training.trainer import adopt_init

REGIONS = {"C": "cervical", "T": "thoracic", "L": "lumbar"}


def _dice(output: np.ndarray, target: np.ndarray) -> float:
    total = int(output.sum() + target.sum())
    return 2.0 * float((output & target).sum()) / total if total else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="ct")
    parser.add_argument("--cache", type=Path, help="folder for the resampled arrays (default: temporary)")
    args = parser.parse_args()
    loaded = load_model(resolve_model(args.model), device="cpu")
    config = adopt_init(preset("compact", loaded.metadata.modality.lower()), loaded.metadata)
    settings = PatchSettings.of(config)
    v_min = loaded.metadata.min_fragment_mm3 / float(np.prod(loaded.metadata.spacing_mm))
    predictor = TorchPredictor(loaded)
    rows: Dict[str, List[tuple]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_cases(find_cases([args.data], config.modality), args.cache or Path(tmp),
                                 config.spacing_mm, config.normalization, config.verse_margin_mm)
        for case in prepared:
            image, labels = case.load(mmap=False)
            image = image.astype(np.float32)
            for label in case.index.labels:
                lo, hi = case.index.boxes[label]
                centre = tuple((a + b - 1) // 2 for a, b in zip(lo, hi))
                result = []
                for memory in (memory_before(label, case.index.labels, config.direction), frozenset()):
                    plan = PatchPlan(centre, memory, True, (0, case.index.shape[0]))
                    sample = annotate(image, labels, case, settings, plan, None)
                    output = predictor(sample["input"][None, 0], sample["input"][None, 1]).probabilities[0] > 0.5
                    result.append((_dice(output, sample["target"][0] > 0), int(output.sum()) >= v_min))
                rows[REGIONS[anatomy.vertebra(label).name[0]]].append(result)
    summary = {region: {"patches": len(r), "dice_with_memory": round(float(np.mean([x[0][0] for x in r])), 3),
                        "dice_empty_memory": round(float(np.mean([x[1][0] for x in r])), 3),
                        "starts_empty_memory": round(float(np.mean([x[1][1] for x in r])), 3)}
               for region, r in sorted(rows.items())}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""How far apart are consecutive instances where the run is missing a vertebra between them?

    python benchmarks/spacing_ratios.py --model ct --pred SEGMENT_OUT --ref DATASET

SEGMENT_OUT holds ``segment``'s outputs of the cases of DATASET (with references) made by ``--model``. For
every pair of consecutive reported instances (top first) whose instances both matched a reference vertebra
(``calibrate``'s matching: the instance with the largest overlap, paper §4.2), the ratio of
:func:`vertebra_traversal.labeling.spacing_ratios` (the distance between their centroids over the median
distance of up to three consecutive pairs on either side) is binned by how many levels apart their
references lie (anatomical rank: 1 = neighbours, 2 = one vertebra between them without an instance of its
own; T13 and L6 count half steps). The centroids are the reports' (of the final masks), not the model
grid's that ``segment`` compares, so a ratio here may differ a little from the run's. Prints, per step, the
number of pairs, the ratio's 5th, 25th, 50th, 75th and 95th percentiles, and the share at or above
``--ratio`` (a model's ``wide_ratio``; default: the model's, else 1.05).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List

import numpy as np

from vertebra_traversal import anatomy, dataset
from vertebra_traversal.calibrate import collect_cases
from vertebra_traversal.checkpoint import read_metadata
from vertebra_traversal.evaluate import find_prediction
from vertebra_traversal.labeling import spacing_ratios
from vertebra_traversal.models import resolve_model
from vertebra_traversal.segment_config import SegmentConfig


def ratios_by_step(model: Path, pred: Path, ref: Path) -> Dict[float, List[float]]:
    """The spacing ratio of every consecutive pair of matched instances, by the rank step of their
    references (levels; see the module docstring)."""
    cases = {c.case_id: c for c in dataset.list_cases(ref)}
    out: Dict[float, List[float]] = {}
    for case in collect_cases(model, pred, ref):
        report = json.loads(find_prediction(pred, cases[case.case_id]).report.read_text())
        rows = sorted(report["vertebrae"], key=lambda v: int(v["order"]))
        ratios = spacing_ratios([v["centroid_lps_mm"] for v in rows])
        for ratio, upper, lower in zip(ratios, case.reference_labels, case.reference_labels[1:]):
            if ratio is not None and upper is not None and lower is not None:
                step = anatomy.vertebra(lower).rank - anatomy.vertebra(upper).rank
                out.setdefault(float(step), []).append(ratio)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ct", help="the model that made the outputs ('ct', 'mr' or a path)")
    parser.add_argument("--pred", type=Path, required=True, help="segment's outputs")
    parser.add_argument("--ref", type=Path, required=True, help="the dataset with references")
    parser.add_argument("--ratio", type=float, help="count the pairs at or above it (default: the model's)")
    args = parser.parse_args()
    model = resolve_model(args.model)
    ratio = args.ratio or SegmentConfig().labeling_for(read_metadata(model)).wide_ratio or 1.05
    for step, values in sorted(ratios_by_step(model, args.pred, args.ref).items()):
        q = np.percentile(values, [5, 25, 50, 75, 95])
        print(json.dumps({"levels_apart": step, "pairs": len(values),
                          "percentiles_5_25_50_75_95": [round(v, 2) for v in q],
                          f"share_at_or_above_{ratio:g}": round(float(np.mean(np.asarray(values) >= ratio)), 3)}))


if __name__ == "__main__":
    main()

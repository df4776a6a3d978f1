"""Does a vertebra's label depend on how well it and its neighbour were segmented (paper §3.2–3.4)?

    python benchmarks/label_error_by_dice.py --pred SEGMENT_OUT --eval EVALUATE_OUT [--direction up|down]

SEGMENT_OUT holds ``segment`` outputs (``<case>[_<modality>]_report.json`` with each vertebra's regressed
``label_value``), EVALUATE_OUT the ``evaluate --out`` folder for the same predictions (``per_vertebra.csv``:
the matched instance and Dice of every reference vertebra). For every completely visible reference
vertebra that was found, the label error is ``|v - y|`` in levels: ``v`` the value the network regressed
for the matched instance where the traversal converged, ``y`` the vertebra's own regression value (C1 = 1
.. L5 = 24, anatomy table). The errors are binned by the Dice of the vertebra itself and by the Dice of the
vertebra traversed just before it (the one below when the traversal runs up, the paper's choice), whose
mask is in the instance memory when the label is read. The network was trained with the reference masks
in its memory (§3.6); at inference the memory holds its own masks. If the error grows as that
neighbour's Dice falls, the labels are held back by the segmentation, not by the label path alone.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from vertebra_traversal import anatomy
from vertebra_traversal.formats import REPORT_FORMAT, REPORT_SUFFIX
from vertebra_traversal.imageio import read_json_document
from vertebra_traversal.training.sampler import traversal_order

BINS: Tuple[Tuple[float, float], ...] = ((0.0, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.01))


def label_values(pred: Path, case: str) -> Dict[str, float]:
    """Predicted vertebra name -> regressed label value, from the case's ``segment`` report."""
    for stem in (case, *(f"{case}_{m}" for m in ("ct", "mr"))):
        path = pred / f"{stem}{REPORT_SUFFIX}"
        if path.exists():
            report = read_json_document(path, REPORT_FORMAT, "report")
            return {v["name"]: float(v["label_value"]) for v in report["vertebrae"]}
    raise SystemExit(f"{pred}: no report for case {case}")


def neighbours_before(labels: List[int], direction: str) -> Dict[str, Optional[str]]:
    """Each reference vertebra of one scan -> the vertebra of the same scan the traversal stores before it.

    ``labels`` are the scan's reference ids (all of them, complete or not). The order is the scan's own
    (``sampler.traversal_order``), so in a spine with T13 the vertebra before T12 is T13, and with L6 the
    vertebra before L5 is L6. The first vertebra of the scan has none.
    """
    order = [anatomy.name_of(label) for label in traversal_order(labels, direction)]
    return {name: (order[i - 1] if i else None) for i, name in enumerate(order)}


def errors(pred: Path, per_vertebra: Path, direction: str) -> List[Tuple[float, float, Optional[float]]]:
    """(label error, own Dice, Dice of the neighbour before or None) per found complete vertebra."""
    with open(per_vertebra, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    dice = {(r["case"], r["name"]): float(r["dice"] or 0.0) for r in rows}
    scans: Dict[str, List[int]] = {}
    for r in rows:
        scans.setdefault(r["case"], []).append(int(r["label"]))
    before_of = {case: neighbours_before(labels, direction) for case, labels in scans.items()}
    out, values = [], {}
    for r in rows:
        if r["ref_complete"] == "False" or not r["pred_name"]:
            continue
        case = r["case"]
        if case not in values:                    # one report read per case, not per row
            values[case] = label_values(pred, case)
        if r["pred_name"] not in values[case]:
            continue
        error = abs(values[case][r["pred_name"]] - anatomy.vertebra(r["name"]).regression_value)
        before = before_of[case][r["name"]]
        out.append((error, float(r["dice"]), dice.get((case, before)) if before else None))
    return out


def binned(pairs: np.ndarray) -> List[dict]:
    """Mean label error of the rows whose Dice (column 1) falls in each bin."""
    rows = []
    for low, high in BINS:
        inside = (pairs[:, 1] >= low) & (pairs[:, 1] < high)
        mae = round(float(pairs[inside, 0].mean()), 2) if inside.any() else None
        rows.append({"dice": f"{low:.1f}-{min(high, 1.0):.1f}", "vertebrae": int(inside.sum()), "mae": mae})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", type=Path, required=True, help="segment output folder")
    parser.add_argument("--eval", type=Path, required=True, help="evaluate --out folder of those predictions")
    parser.add_argument("--direction", choices=("up", "down"), default="up")
    args = parser.parse_args()
    found = errors(args.pred, args.eval / "per_vertebra.csv", args.direction)
    if not found:
        raise SystemExit(f"{args.eval}: no found complete vertebra")
    own = np.array([(e, d) for e, d, _ in found])
    before = np.array([(e, b) for e, _, b in found if b is not None])
    summary = {"vertebrae": len(found), "mae": round(float(own[:, 0].mean()), 2),
               "by_own_dice": binned(own), "by_dice_of_vertebra_before": binned(before)}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

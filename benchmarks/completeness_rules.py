"""Completeness accuracy of each completeness rule on saved ``segment`` outputs (see
``ModelMetadata.completeness_rule``): the network's output at 0.5 (paper §3.5), the scan-edge check,
both, and the base rate of calling every vertebra complete.

    python benchmarks/completeness_rules.py --pred ct-pred --ref ct-test [--threshold 0.5] [--margins 0 2 4]

``--pred`` holds ``segment`` outputs (label map + report per case), ``--ref`` a dataset folder. Each
reference vertebra is matched to the predicted instance it overlaps most (as ``evaluate`` does); the
rules are applied to the matched instances' completeness probability (report) and to whether their
mask reaches a face of the scan (label map), so the numbers do not depend on the rule the outputs
were written with. Prints one row per rule: accuracy over all matched vertebrae, complete vertebrae
called incomplete, and cut-off vertebrae called complete. With ``--margins``, the rules that look at
the scan's border (``edge``, ``both``) get one row per margin in mm (``labels_at_edge``'s
``margin_mm``; 0 = the mask touches a face). With ``--contacts``, the same rules get one row per
smallest contact area in mm² instead: a mask counts as cut only where its voxels on the scan's faces
cover at least that area (each face voxel counts the area of its face).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from vertebra_traversal import dataset, imageio, metrics
from vertebra_traversal.evaluate import find_prediction
from vertebra_traversal.postprocess import edge_contact_mm2, is_complete, labels_at_edge

RULES = ("all complete", "network", "edge", "both")


Row = Tuple[bool, float, Dict[float, bool]]


def at_edge_by_contact(labels: np.ndarray, spacing_zyx: Sequence[float], contacts: Sequence[float]
                       ) -> Dict[float, set]:
    """{smallest area A (mm²): labels whose face contact is at least A (any voxel where A = 0)}."""
    area = edge_contact_mm2(labels, spacing_zyx)
    return {a: {v for v, c in area.items() if c >= a} for a in contacts}


def matched_vertebrae(pred_dir: Path, ref_dir: Path, margins: Sequence[float] = (0.0,),
                      contacts: Sequence[float] = ()) -> List[Row]:
    """(reference complete, predicted probability, {margin mm or contact mm²: at scan edge}) of every
    matched reference vertebra; by contact area when ``contacts`` is given, else by margin."""
    rows = []
    for case in dataset.list_cases(ref_dir):
        pred = find_prediction(pred_dir, case)
        if pred is None or pred.report is None:
            continue
        reference = imageio.read_label_map(case.labels)
        ref_complete = {r.label: r.complete for r in dataset.read_case_info(case, labels=reference).vertebrae}
        pred_image = imageio.read_label_map(pred.labels)
        pred_array = sitk.GetArrayFromImage(pred_image)
        report = json.loads(pred.report.read_text())
        probability = {int(v["label"]): float(v["completeness_probability"]) for v in report["vertebrae"]}
        spacing = pred_image.GetSpacing()[::-1]
        at_edge = (at_edge_by_contact(pred_array, spacing, contacts) if contacts else
                   {m: labels_at_edge(pred_array, spacing, m) for m in margins})
        score = metrics.score_case(sitk.GetArrayFromImage(reference), pred_array, reference.GetSpacing()[::-1],
                                   ref_complete, None, case.case_id)
        rows += [(bool(v.ref_complete), probability.get(v.pred_label, 0.0),
                  {m: v.pred_label in edge for m, edge in at_edge.items()})
                 for v in score.vertebrae if v.matched and v.ref_complete is not None]
    return rows


def decide(rule: str, probability: float, at_edge: bool, threshold: float) -> bool:
    return True if rule == "all complete" else is_complete(probability, at_edge, threshold, rule)


def table(rows: List[Row], threshold: float, margins: Sequence[float] = (0.0,), unit: str = "mm") -> str:
    complete = sum(r[0] for r in rows)
    lines = [f"{len(rows)} matched vertebrae, {complete} complete, {len(rows) - complete} cut off by the scan",
             f"{'rule':<20}{'accuracy %':>11}{'complete called incomplete':>28}{'cut-off called complete':>25}"]
    for rule in RULES:
        for margin in (margins if rule in ("edge", "both") else margins[:1]):
            name = f"{rule} ({margin:g} {unit})" if rule in ("edge", "both") and len(margins) > 1 else rule
            calls: Dict[bool, List[bool]] = {True: [], False: []}
            for ref, probability, at_edge in rows:
                calls[ref].append(decide(rule, probability, at_edge[margin], threshold))
            correct = sum(calls[True]) + sum(not c for c in calls[False])
            lines.append(f"{name:<20}{100 * correct / max(len(rows), 1):>11.1f}"
                         f"{sum(not c for c in calls[True]):>28d}{sum(calls[False]):>25d}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", type=Path, required=True, help="folder of segment outputs")
    parser.add_argument("--ref", type=Path, required=True, help="reference dataset folder")
    parser.add_argument("--threshold", type=float, default=0.5, help="network completeness threshold")
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0],
                        help="distances to the scan's border (mm) for the edge rules; 0 = touching a face")
    parser.add_argument("--contacts", type=float, nargs="+", default=[],
                        help="smallest areas on the scan's faces (mm²) for the edge rules; 0 = any voxel")
    args = parser.parse_args()
    rows = matched_vertebrae(args.pred, args.ref, args.margins, args.contacts)
    print(table(rows, args.threshold, args.contacts or args.margins, "mm²" if args.contacts else "mm"))


if __name__ == "__main__":
    main()

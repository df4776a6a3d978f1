"""Completeness accuracy of each completeness rule on saved ``segment`` outputs (see
``ModelMetadata.completeness_rule``): the network's output at 0.5 (paper §3.5), the scan-edge check,
both, and the base rate of calling every vertebra complete.

    python benchmarks/completeness_rules.py --pred ct-pred --ref ct-test [--threshold 0.5] [--margins 0 2 4]
        [--contacts 0 50] [--margin-faces all|cranio-caudal]

``--pred`` holds ``segment`` outputs (label map + report per case), ``--ref`` a dataset folder. Each
reference vertebra is matched to the predicted instance it overlaps most (as ``evaluate`` does); the
rules are applied to the matched instances' completeness probability (report) and to whether their
mask reaches a face of the scan (label map), so the numbers do not depend on the rule the outputs
were written with. Prints one row per rule: accuracy over all matched vertebrae, complete vertebrae
called incomplete, and cut-off vertebrae called complete. The rules that look at the scan's border
(``edge``, ``both``) get one row per pair of ``--margins`` (mm; 0 = the mask touches a face) and
``--contacts`` (the smallest area in mm² the mask must cover there; 0 = any voxel), with the margin on
``--margin-faces``, as ``segment`` applies them (``pipeline.scan_edge_labels``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import SimpleITK as sitk

from vertebra_traversal import dataset, imageio, metrics
from vertebra_traversal.evaluate import find_prediction
from vertebra_traversal.pipeline import scan_edge_labels
from vertebra_traversal.postprocess import EDGE_MARGIN_FACES, is_complete

RULES = ("all complete", "network", "edge", "both")


Setting = Tuple[float, float]  # (margin mm, smallest contact mm²)
Row = Tuple[bool, float, Dict[Setting, bool]]


def matched_vertebrae(pred_dir: Path, ref_dir: Path, settings: Sequence[Setting] = ((0.0, 0.0),),
                      margin_faces: str = "all") -> List[Row]:
    """(reference complete, predicted probability, {(margin mm, contact mm²): at scan edge}) of every
    matched reference vertebra, the margin applied to ``margin_faces``."""
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
        at_edge = {(m, a): scan_edge_labels(pred_image, m, a, margin_faces) for m, a in settings}
        score = metrics.score_case(sitk.GetArrayFromImage(reference), pred_array, reference.GetSpacing()[::-1],
                                   ref_complete, None, case.case_id)
        rows += [(bool(v.ref_complete), probability.get(v.pred_label, 0.0),
                  {key: v.pred_label in edge for key, edge in at_edge.items()})
                 for v in score.vertebrae if v.matched and v.ref_complete is not None]
    return rows


def decide(rule: str, probability: float, at_edge: bool, threshold: float) -> bool:
    return True if rule == "all complete" else is_complete(probability, at_edge, threshold, rule)


def table(rows: List[Row], threshold: float, settings: Sequence[Setting] = ((0.0, 0.0),)) -> str:
    complete = sum(r[0] for r in rows)
    lines = [f"{len(rows)} matched vertebrae, {complete} complete, {len(rows) - complete} cut off by the scan",
             f"{'rule':<26}{'accuracy %':>11}{'complete called incomplete':>28}{'cut-off called complete':>25}"]
    for rule in RULES:
        for margin, contact in (settings if rule in ("edge", "both") else settings[:1]):
            name = (f"{rule} ({margin:g} mm, {contact:g} mm²)" if rule in ("edge", "both") and len(settings) > 1
                    else rule)
            calls: Dict[bool, List[bool]] = {True: [], False: []}
            for ref, probability, at_edge in rows:
                calls[ref].append(decide(rule, probability, at_edge[margin, contact], threshold))
            correct = sum(calls[True]) + sum(not c for c in calls[False])
            lines.append(f"{name:<26}{100 * correct / max(len(rows), 1):>11.1f}"
                         f"{sum(not c for c in calls[True]):>28d}{sum(calls[False]):>25d}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", type=Path, required=True, help="folder of segment outputs")
    parser.add_argument("--ref", type=Path, required=True, help="reference dataset folder")
    parser.add_argument("--threshold", type=float, default=0.5, help="network completeness threshold")
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0],
                        help="distances to the scan's border (mm) for the edge rules; 0 = touching a face")
    parser.add_argument("--contacts", type=float, nargs="+", default=[0.0],
                        help="smallest areas on the scan's faces (mm²) for the edge rules; 0 = any voxel")
    parser.add_argument("--margin-faces", choices=EDGE_MARGIN_FACES, default="all",
                        help="the faces the margins apply to (default all)")
    args = parser.parse_args()
    settings = [(m, a) for m in args.margins for a in args.contacts]
    print(table(matched_vertebrae(args.pred, args.ref, settings, args.margin_faces), args.threshold, settings))


if __name__ == "__main__":
    main()

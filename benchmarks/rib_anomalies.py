"""What rib anomalies do to a CT model's labels: the same phantoms with and without them.

    python benchmarks/rib_anomalies.py --seed 1138210 --count 30 [--model ct] [--rib-anchor off|on|both]

Every case is generated like the CT model card's held-out set (`phantom --inplane-spacing 1.0 1.5
--slice-spacing 1.5 2.5 --fracture-rate 0.3 --t13-rate 0.1 --l6-rate 0.1 --four-lumbar-rate 0.1`) in four
versions that differ only in the ribs (:mod:`vertebra_traversal.phantom.ribvariants`): none, a short last
rib, a rib on L1, a rib on C7 (each at rate 1). Each version is segmented with the model's reading
with the rib anchor switched off, on (``segment --rib-anchor off|on``) or both ways (the default), and
scored over the completely visible reference vertebrae (paper Fig. 5):
one JSON line per case, version and reading (matched, identified), then per version and reading the
identified vertebrae of those matched and the scans read right (every matched complete vertebra
identified). Nothing is written to disk. The CT history (*Rib anomalies in the phantoms*) has a run.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import replace
from typing import Dict, List, Tuple

import SimpleITK as sitk

from vertebra_traversal.checkpoint import load_model
from vertebra_traversal.metrics import score_case
from vertebra_traversal.models import resolve_model
from vertebra_traversal.phantom import PhantomConfig, generate_case
from vertebra_traversal.pipeline import SegmentConfig, segment_image

HELD_OUT_LIKE = PhantomConfig(inplane_spacing_mm=(1.0, 1.5), slice_spacing_mm=(1.5, 2.5), fracture_rate=0.3,
                              t13_rate=0.1, l6_rate=0.1, four_lumbar_rate=0.1)
VERSIONS = {"none": {}, "short_last_rib": {"short_rib_rate": 1.0}, "rib_on_L1": {"lumbar_rib_rate": 1.0},
            "rib_on_C7": {"cervical_rib_rate": 1.0}}


def score(case, model, config: SegmentConfig) -> Tuple[int, int]:
    """(matched, identified) complete reference vertebrae of one generated case."""
    result = segment_image(case.image, model, config)
    complete = {r.label: r.complete for r in case.info.vertebrae}
    scored = score_case(sitk.GetArrayFromImage(case.labels), sitk.GetArrayFromImage(result.labels),
                        tuple(reversed(case.image.GetSpacing())), case_id=case.info.case_id)
    matched = [v for v in scored.vertebrae if complete.get(v.label) and v.pred_label is not None]
    return len(matched), sum(v.label == v.pred_label for v in matched)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, required=True, help="seed of the first case")
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--model", default="ct")
    parser.add_argument("--rib-anchor", choices=("off", "on", "both"), default="both")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    model = load_model(resolve_model(args.model), device=args.device)
    readings = {"off": [False], "on": [True], "both": [False, True]}[args.rib_anchor]
    totals: Dict[Tuple[str, bool], List[int]] = defaultdict(lambda: [0, 0, 0])  # matched, identified, scans right
    for seed in range(args.seed, args.seed + args.count):
        for version, rates in VERSIONS.items():
            case = generate_case(seed, replace(HELD_OUT_LIKE, **rates))
            for anchor in readings:
                matched, identified = score(case, model, SegmentConfig(rib_anchor=anchor))
                total = totals[(version, anchor)]
                total[0] += matched
                total[1] += identified
                total[2] += bool(matched) and identified == matched
                print(json.dumps({"case": case.info.case_id, "version": version, "rib_anchor": anchor,
                                  "ribs": case.info.source["rib_variants"], "matched": matched,
                                  "identified": identified}), flush=True)
    for (version, anchor), (matched, identified, right) in totals.items():
        print(json.dumps({"version": version, "rib_anchor": anchor, "matched": matched, "identified": identified,
                          "accuracy": round(identified / max(1, matched), 3), "scans_read_right": right}))


if __name__ == "__main__":
    main()

"""Are the label values of the vertebrae at a scan's borders biased, in whole scans and in z-crops (§3.4, §5.2)?

    python benchmarks/label_bias_by_position.py --data DATASET --model ct|mr|PATH [--seed 0]

Segments every case of DATASET whole and in the two crops of ``zcrop_identification.py`` (the same crops
for the same seed and case order), matches each reference vertebra to the output vertebra of largest
overlap (paper §4.2, as ``evaluate``) and takes the error of that vertebra's regressed label value against
the reference's own regression value (C1 = 1 .. L5 = 24, anatomy table; levels, positive = read too far
down). Prints, for whole scans and for crops, per place in the output (top-most, second, inner, second
from the bottom, bottom-most), the number of matched vertebrae, the mean error, its standard deviation
and the mean absolute error. A top-most mean well below zero names a crop's labels a level too high from
its top (CT card: *The label path trained in z-crops too*).
"""
from __future__ import annotations

import argparse
from typing import Dict, List

import numpy as np
import SimpleITK as sitk

from vertebra_traversal import anatomy, dataset
from vertebra_traversal.checkpoint import load_model
from vertebra_traversal.geometry import crop_z
from vertebra_traversal.imageio import read_image, read_label_map
from vertebra_traversal.metrics import score_case
from vertebra_traversal.models import resolve_model
from vertebra_traversal.pipeline import SegmentationResult, segment_image
from zcrop_identification import crops

PLACES = ("top-most", "second", "inner", "second from bottom", "bottom-most")


def place(order: int, count: int) -> str:
    """The place of the ``order``-th of ``count`` output vertebrae (1 = top-most)."""
    if order == 1:
        return PLACES[0]
    if order == count:
        return PLACES[4]
    return PLACES[1] if order == 2 else PLACES[3] if order == count - 1 else PLACES[2]


def errors(reference: sitk.Image, result: SegmentationResult) -> List[tuple]:
    """(place, value - expected) of every matched reference vertebra of one run."""
    by_label = {v.label: v for v in result.vertebrae}
    score = score_case(sitk.GetArrayFromImage(reference), sitk.GetArrayFromImage(result.labels),
                       tuple(reversed(reference.GetSpacing())))
    return [(place(by_label[v.pred_label].order, len(by_label)),
             by_label[v.pred_label].label_value - anatomy.vertebra(v.label).regression_value)
            for v in score.vertebrae if v.pred_label in by_label]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="ct")
    parser.add_argument("--seed", type=int, default=0, help="the crops' seed, as zcrop_identification.py's")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    model = load_model(resolve_model(args.model), device=args.device)
    rng = np.random.default_rng(args.seed)
    found: Dict[str, Dict[str, List[float]]] = {"whole scans": {}, "crops": {}}
    for case in dataset.list_cases(args.data):
        image = read_image(case.image)
        labels = read_label_map(case.labels, reference=image)
        runs = [("whole scans", image, labels)] + [("crops", crop_z(image, z0, z1), crop_z(labels, z0, z1))
                                                     for _, z0, z1 in crops(image, rng)]
        for kind, scan, reference in runs:
            for where, error in errors(reference, segment_image(scan, model)):
                found[kind].setdefault(where, []).append(error)
    for kind, by_place in found.items():
        print(f"{kind}: place, vertebrae, mean error, sd, mean |error| (levels)")
        for where in PLACES:
            e = np.array(by_place.get(where, []))
            if e.size:
                print(f"  {where:20s} {e.size:5d} {e.mean():+7.2f} {e.std():6.2f} {np.abs(e).mean():6.2f}")


if __name__ == "__main__":
    main()

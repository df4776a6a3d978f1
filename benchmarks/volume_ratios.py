"""How small vertebrae are beside their neighbours (``vertebra_traversal.fragments``), and what a ratio
(``segment --min-volume-ratio``) would drop: of a dataset's reference vertebrae, or of a ``segment`` run's
instances.

    python benchmarks/volume_ratios.py --ref ct-train [--pred ct-pred] [--ratios 0.25 0.35 0.45]

Without ``--pred`` it measures the reference vertebrae: each one's volume over the median of the 4
nearest to it in cranio-caudal order, the smallest such ratio of a complete vertebra, and per ratio the
complete and incomplete ones that would be dropped (the complete ones by case and name). With ``--pred``
it measures the predicted instances and counts them as ``benchmarks/spine_offsets.py`` does (complete,
incomplete, false). Volumes are mm³ on the input grid. Like ``segment`` it never drops the two ends of
the chain; unlike it, it does not spare the instances the scan's border cuts (``segment`` measures on the
model grid, before the masks are mapped back, and keeps those that cover 400 mm² of its cranio-caudal faces).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from vertebra_traversal import anatomy
from vertebra_traversal.dataset import centroids_of
from vertebra_traversal.fragments import fragments, volume_ratios

from spine_offsets import measured_cases  # beside this script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", type=Path, required=True)
    parser.add_argument("--pred", type=Path)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.35, 0.45])
    args = parser.parse_args()
    dropped = {ratio: {"complete": 0, "incomplete": 0, "false": 0, "complete_cases": []} for ratio in args.ratios}
    counted = {"complete": 0, "incomplete": 0, "false": 0}
    smallest = (np.inf, "")
    for case, image, kind in measured_cases(args.ref, args.pred):
        centroids = centroids_of(image)
        labels = sorted((label for label in centroids if label in kind), key=lambda label: -centroids[label][2])
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(sitk.Cast(image, sitk.sitkUInt8))
        volumes = np.array([stats.GetPhysicalSize(label) for label in labels])
        inner = np.array([0 < i < len(labels) - 1 for i in range(len(labels))], dtype=bool)  # not the two ends
        for label, ratio in zip(labels, volume_ratios(volumes)):
            counted[kind[label]] += 1
            if kind[label] == "complete" and ratio < smallest[0]:
                smallest = (float(ratio), f"{case.case_id} {anatomy.name_of(label)}")
        for ratio in args.ratios:
            for label, gone in zip(labels, fragments(volumes, ratio, inner)):
                if gone:
                    dropped[ratio][kind[label]] += 1
                    if kind[label] == "complete":
                        dropped[ratio]["complete_cases"].append(f"{case.case_id} {anatomy.name_of(label)}")
    print(json.dumps({"counted": counted, "smallest_complete_ratio": [round(smallest[0], 3), smallest[1]],
                      "dropped": {f"{ratio:g}": d for ratio, d in dropped.items()}}, indent=1))


if __name__ == "__main__":
    main()

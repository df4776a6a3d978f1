"""How far vertebrae lie off the spine line of the others (``vertebra_traversal.spine_line``), and what a
limit (``segment --max-spine-offset-mm``) would drop: of a dataset's reference vertebrae, or of a
``segment`` run's instances.

    python benchmarks/spine_offsets.py --ref ct-train [--pred ct-pred] [--limits 20 30 40 50]

Without ``--pred`` it measures the reference vertebrae and counts, per limit, the complete and the
incomplete ones that would be dropped (the complete ones by case and name). With ``--pred`` it measures
the predicted instances; an instance with at least half its voxels on reference vertebrae counts as a
vertebra (``complete`` as its reference vertebra), one with less as a false detection. Centroids are
LPS mm on the input grid, superior axis first. ``segment`` takes them on the model grid before the masks
are mapped back and leaves the instances at the scan's border out, so its offsets differ a little.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from vertebra_traversal import anatomy
from vertebra_traversal.dataset import CaseFiles, centroids_of, list_cases, read_case_info
from vertebra_traversal.spine_line import off_spine


def kinds(pred: np.ndarray, ref: np.ndarray, complete: dict) -> dict:
    """Per label of ``pred`` ((z, y, x) label map on the grid of ``ref``): "complete", "incomplete" (as its
    reference vertebra) or "false" (less than half of it on reference vertebrae)."""
    out = {}
    for label in np.unique(pred)[1:]:
        on = ref[pred == label]
        if np.mean(on > 0) < 0.5:
            out[int(label)] = "false"
            continue
        ids, counts = np.unique(on[on > 0], return_counts=True)
        out[int(label)] = "complete" if complete.get(int(ids[np.argmax(counts)]), False) else "incomplete"
    return out


def measured_cases(ref: Path, pred: Optional[Path]) -> Iterator[Tuple[CaseFiles, sitk.Image, dict]]:
    """Per case of the dataset ``ref``: (case, the label map to measure, the kind of each of its labels):
    the case's reference with its vertebrae "complete" or "incomplete", or with ``pred`` the run's label
    map with :func:`kinds` (cases the run has no output for are left out)."""
    for case in list_cases(ref):
        ref_image = sitk.ReadImage(str(case.labels))
        complete = {v.label: v.complete for v in read_case_info(case, ref_image).vertebrae}
        if pred is None:
            yield case, ref_image, {label: "complete" if c else "incomplete" for label, c in complete.items()}
            continue
        found = sorted(pred.glob(f"{case.case_id}_*seg-vert_msk.nii.gz"))
        if found:
            image = sitk.ReadImage(str(found[0]))
            yield case, image, kinds(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(ref_image), complete)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", type=Path, required=True)
    parser.add_argument("--pred", type=Path)
    parser.add_argument("--limits", type=float, nargs="+", default=[20.0, 30.0, 40.0, 50.0])
    args = parser.parse_args()
    dropped = {limit: {"complete": 0, "incomplete": 0, "false": 0, "complete_cases": []} for limit in args.limits}
    counted = {"complete": 0, "incomplete": 0, "false": 0}
    for case, image, kind in measured_cases(args.ref, args.pred):
        centroids = centroids_of(image)
        labels = [label for label in sorted(centroids) if label in kind]
        centers = np.array([centroids[label][::-1] for label in labels]).reshape(-1, 3)  # S, P, L
        for label in labels:
            counted[kind[label]] += 1
        for limit in args.limits:
            for label, off in zip(labels, off_spine(centers, limit)):
                if off:
                    dropped[limit][kind[label]] += 1
                    if kind[label] == "complete":
                        dropped[limit]["complete_cases"].append(f"{case.case_id} {anatomy.name_of(label)}")
    print(json.dumps({"counted": counted, "dropped": {f"{limit:g}": d for limit, d in dropped.items()}}, indent=1))


if __name__ == "__main__":
    main()

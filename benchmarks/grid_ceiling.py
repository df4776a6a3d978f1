"""What a perfect network could score on a model grid: the reference through the pipeline's resampling.

    python benchmarks/grid_ceiling.py --ref ct-test [--spacing 2.5] [--interpolator linear|nearest] [--passes N]
        [--threshold-hu HU]

Every reference label map is resampled to the model grid the way the training cache does it
(nearest neighbour, :func:`geometry.to_model_grid`), mapped back the way ``segment`` maps its result
(:func:`geometry.from_model_grid`, linear unless ``--interpolator nearest``) and, for CT,
surface-refined as ``segment`` does (paper §3.1,
:func:`postprocess.refine_surface_ct` with :func:`postprocess.surface_passes`). The result is scored
against the reference with the metrics of ``evaluate``. Identification and completeness are perfect by
construction, so only Dice and ASSD are printed: the ceiling of a model with that grid spacing, whatever
it learns. Prints one line per case and the mean over completely visible vertebrae.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import SimpleITK as sitk

from vertebra_traversal import dataset, imageio, metrics
from vertebra_traversal.geometry import LABEL_INTERPOLATORS, from_model_grid, to_model_grid
from vertebra_traversal.postprocess import refine_surface_ct, surface_passes


def through_grid(case: dataset.CaseFiles, reference: sitk.Image, spacing_mm: float, passes: Optional[int],
                 interpolator: str, threshold_hu: float = 200.0) -> np.ndarray:
    """The case's reference label map after the model grid, as a (z, y, x) array on the reference grid.

    ``passes``: CT surface-refinement passes; None = as ``segment`` (:func:`surface_passes`), 0 = none;
    ``threshold_hu``: the refinement's threshold (the paper's 200; the bundled CT model's 100).
    """
    coarse = to_model_grid(reference, (spacing_mm,) * 3, "nearest")
    back = sitk.GetArrayFromImage(from_model_grid(coarse, reference, interpolator))
    if passes is None:
        passes = surface_passes((spacing_mm,) * 3, reference.GetSpacing())
    if passes > 0 and case.modality.lower() == "ct":
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(case.image), sitk.sitkFloat32))
        back = refine_surface_ct(back, image, threshold_hu=threshold_hu, iterations=passes)
    return back


def complete_scorer(case: dataset.CaseFiles,
                    reference: sitk.Image) -> Callable[[np.ndarray], List[metrics.VertebraScore]]:
    """A function giving the scores of a label array ((z, y, x), on the reference grid) over the case's
    completely visible reference vertebrae, as ``evaluate`` computes them (missed ones count Dice 0).
    The sidecar and the reference array are read once, however many arrays are scored."""
    complete = {v.label: v.complete for v in dataset.read_case_info(case, labels=reference).vertebrae}
    ref, spacing = sitk.GetArrayFromImage(reference), reference.GetSpacing()[::-1]

    def score(labels: np.ndarray) -> List[metrics.VertebraScore]:
        return metrics.select(metrics.score_case(ref, labels, spacing, complete, None, case.case_id).vertebrae)

    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", type=Path, required=True, help="reference dataset folder")
    parser.add_argument("--spacing", type=float, default=2.5, help="model grid spacing in mm (compact: 2.5)")
    parser.add_argument("--passes", type=int, help="CT surface-refinement passes (default: as segment; 0: none)")
    parser.add_argument("--threshold-hu", type=float, default=200.0, help="CT surface-refinement threshold (200)")
    parser.add_argument("--interpolator", choices=LABEL_INTERPOLATORS, default="linear",
                        help="how the model-grid labels are mapped back (segment's default: linear)")
    args = parser.parse_args()
    scores: List[metrics.VertebraScore] = []
    for case in dataset.list_cases(args.ref):
        reference = imageio.read_label_map(case.labels)
        case_scores = complete_scorer(case, reference)(through_grid(case, reference, args.spacing, args.passes,
                                                                    args.interpolator, args.threshold_hu))
        scores += case_scores
        print(f"{case.case_id}: {len(case_scores)} complete vertebrae, Dice {100 * metrics.mean_dice(case_scores):.1f} %, "
              f"ASSD {metrics.mean_assd(case_scores):.2f} mm", flush=True)
    dices = [v.dice for v in scores]
    print(f"all: {len(scores)} complete vertebrae at {args.spacing:g} mm, Dice {100 * np.mean(dices):.1f} ± "
          f"{100 * np.std(dices):.1f} % (min {100 * np.min(dices):.1f}), ASSD {metrics.mean_assd(scores):.2f} mm")


if __name__ == "__main__":
    main()

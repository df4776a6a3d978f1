"""Dice and ASSD of one model under every way of mapping its result back onto the image.

    python benchmarks/mapping_variants.py --model ct --data ct-test [--count 12] [--threads 2] [--levels 0.5 0.4]

For each scan the network traverses once (:func:`pipeline.run_traversal`, :func:`pipeline.label_model_grid`);
its model-grid result is then mapped back by nearest neighbour and by linear interpolation
(:func:`geometry.from_model_grid`) and, for CT, surface-refined with 0, 1 and 2 passes (paper §3.1,
:func:`postprocess.refine_surface_ct`; ``segment`` uses :func:`postprocess.surface_passes`, 2 on the
bundled CT model's test images). Scores are those of ``evaluate`` over completely visible reference
vertebrae (missed ones count Dice 0). Labels do not depend on the mapping, so only Dice and ASSD are printed.

``--levels`` adds linear mapping at other levels of the interpolated indicator than ``segment``'s 0.5 (a
voxel takes the label with the highest value above the level; below 0.5 every mask grows by a fraction
of a model voxel), each followed by the model's own post-processing as ``segment`` runs it (refinement at
its threshold, largest piece); level 0.5 reproduces ``segment``'s masks.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import SimpleITK as sitk
import torch

from vertebra_traversal import dataset, imageio, metrics
from vertebra_traversal.checkpoint import load_model
from vertebra_traversal.geometry import LABEL_INTERPOLATORS, from_model_grid
from vertebra_traversal.models import resolve_model
from vertebra_traversal.pipeline import SegmentConfig, _postprocess, label_model_grid, run_traversal
from vertebra_traversal.postprocess import refine_surface_ct
from vertebra_traversal.torch_predictor import TorchPredictor

from grid_ceiling import complete_scorer  # beside this script

Variant = Tuple[str, int]


def linear_at_level(label_model: sitk.Image, image: sitk.Image, level: float) -> sitk.Image:
    """Each label's indicator interpolated linearly onto ``image``'s grid; a voxel takes the label of the
    highest value above ``level`` (dense, one resampling per label: for benchmarks, not for ``segment``)."""
    model = sitk.GetArrayViewFromImage(label_model)
    best = np.zeros(image.GetSize()[::-1], np.float32)
    out = np.zeros(best.shape, np.uint8)
    for label in np.unique(model)[1:]:
        indicator = sitk.GetImageFromArray((model == label).astype(np.float32))
        indicator.CopyInformation(label_model)
        value = sitk.GetArrayFromImage(sitk.Resample(indicator, image, sitk.Transform(), sitk.sitkLinear, 0.0,
                                                     sitk.sitkFloat32))
        take = (value > level) & (value > best)
        best[take], out[take] = value[take], label
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(image)
    return result


def variants_of_case(case: dataset.CaseFiles, model, config: SegmentConfig,
                     levels: Tuple[float, ...] = ()) -> Dict[Variant, List[metrics.VertebraScore]]:
    """Scores of the complete reference vertebrae of one case under every (interpolation, passes), and
    under ``("level L", -1)`` for each of ``levels``."""
    image = sitk.ReadImage(str(case.image), sitk.sitkFloat32)
    reference = imageio.read_label_map(case.labels)
    score = complete_scorer(case, reference)
    model_image, result = run_traversal(image, TorchPredictor(model, config.batch_size), model.metadata, config)
    label_model, _, _ = label_model_grid(model_image, result, config.for_model(model.metadata))
    passes = (0, 1, 2) if model.metadata.modality.upper() == "CT" else (0,)
    scores = {}
    for interpolation in LABEL_INTERPOLATORS:
        back = sitk.GetArrayFromImage(from_model_grid(label_model, image, interpolation))
        for n in passes:
            out = refine_surface_ct(back, sitk.GetArrayViewFromImage(image), iterations=n) if n else back
            scores[(interpolation, n)] = score(out)
    for level in levels:
        mapped = _postprocess(linear_at_level(label_model, image, level), image, model.metadata, config)
        scores[(f"level {level:g}", -1)] = score(sitk.GetArrayFromImage(mapped))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ct", help="'ct', 'mr' or a checkpoint path")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder with references")
    parser.add_argument("--count", type=int, help="only the first COUNT cases")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--levels", type=float, nargs="+", default=(),
                        help="also linear mapping at these levels, with the model's post-processing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(resolve_model(args.model), device="cpu")
    totals: Dict[Variant, List[metrics.VertebraScore]] = {}
    for case in dataset.list_cases(args.data)[:args.count]:
        scores = variants_of_case(case, model, SegmentConfig(), tuple(args.levels))
        for variant, vertebrae in scores.items():
            totals.setdefault(variant, []).extend(vertebrae)
        print(case.case_id, " ".join(f"{i}/{n}: {100 * metrics.mean_dice(v):.1f}" for (i, n), v in scores.items()),
              flush=True)
    for (interpolation, n), vertebrae in totals.items():
        how = f"{n} surface passes" if n >= 0 else "the model's post-processing"
        print(f"{interpolation:>8} mapping, {how}: {len(vertebrae)} complete vertebrae, "
              f"Dice {100 * metrics.mean_dice(vertebrae):.1f} %, ASSD {metrics.mean_assd(vertebrae):.2f} mm")


if __name__ == "__main__":
    main()

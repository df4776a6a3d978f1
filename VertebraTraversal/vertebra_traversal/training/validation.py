"""Validation passes during training.

* Patch level (always available, cheap): a fixed set of un-augmented patches of the held-out cases
  (or of the training cases when none are held out); Dice of the thresholded segmentation against the
  target mask, mean absolute label error, completeness accuracy and the loss terms.
* Whole scans (when held-out cases are given): the real traversal pipeline
  (:func:`vertebra_traversal.pipeline.segment_image`) on each held-out case, scored with the paper's
  metrics (:func:`vertebra_traversal.metrics.score_case`, the per-case scorer of ``evaluate``).
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from .. import imageio
from ..dataset import read_case_info
from .data import TrainingCase
from .loss import total_loss

logger = logging.getLogger(__name__)


def _batch(sample: Dict[str, np.ndarray], device: torch.device) -> Dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(v))[None].to(device) for k, v in sample.items()}


def dice_score(prediction: np.ndarray, target: np.ndarray) -> float:
    """Dice of two binary arrays; 1.0 when both are empty."""
    total = int(prediction.sum()) + int(target.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(prediction, target).sum()) / total


@torch.no_grad()
def patch_metrics(model: nn.Module, samples: Sequence[Dict[str, np.ndarray]], device: torch.device,
                  fp_lambda: float, seg_divisor: float) -> Dict[str, float]:
    """Patch-level metrics of ``model`` (eval mode during the pass, restored after).

    Returns ``dice`` (mean over patches with a target), ``empty_fp_voxels`` (mean predicted voxels in
    patches without a target), ``label_mae``, ``completeness_accuracy`` (threshold 0.5) and the mean
    loss terms (``loss``, ``seg``, ``label``, ``completeness``).
    """
    was_training = model.training
    model.eval()
    dices, empty_fp, label_err, comp_ok, terms = [], [], [], [], []
    try:
        for sample in samples:
            batch = _batch(sample, device)
            seg_logits, label, complete_logit = model.forward_logits(batch["input"])
            terms.append(total_loss(seg_logits, label, complete_logit, batch, fp_lambda, seg_divisor).as_floats())
            predicted = (seg_logits[0, 0] > 0).cpu().numpy()
            target = sample["target"][0] > 0.5
            if target.any():
                dices.append(dice_score(predicted, target))
            else:
                empty_fp.append(float(predicted.sum()))
            label_err.append(abs(float(label[0]) - float(sample["label"])))
            comp_ok.append(float((float(complete_logit[0]) > 0) == (float(sample["complete"]) > 0.5)))
    finally:
        model.train(was_training)
    out = {"patches": float(len(samples)), "dice": _mean(dices), "empty_fp_voxels": _mean(empty_fp),
           "label_mae": _mean(label_err), "completeness_accuracy": _mean(comp_ok)}
    out.update({k: _mean([t[k] for t in terms]) for k in ("loss", "seg", "label", "completeness")})
    return out


def _mean(values: List[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def json_ready(record: Dict[str, Any]) -> Dict[str, Any]:
    """The record with NaN / infinite floats replaced by None (strict JSON)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def score_scan(loaded: Any, case: TrainingCase) -> Any:
    """Segment ``case`` with ``loaded`` (a :class:`~vertebra_traversal.checkpoint.LoadedModel`, its own
    settings) and score it as ``evaluate`` does (:func:`vertebra_traversal.metrics.score_case`, §4.2) with
    the case's completeness flags (its sidecar, else every labelled vertebra complete)."""
    from ..metrics import score_case
    from ..pipeline import segment_image
    image = imageio.read_image(case.image)
    reference = imageio.read_label_map(case.labels, reference=image)
    info = read_case_info(case.files, reference)
    result = segment_image(image, loaded)
    flags = {int(v.label): bool(v.complete) for v in info.vertebrae}
    predicted = {int(v.label): bool(v.complete) for v in result.vertebrae}
    return score_case(sitk.GetArrayFromImage(reference), sitk.GetArrayFromImage(result.labels),
                      tuple(reversed(image.GetSpacing())), flags, predicted, case.case_id)


def pipeline_metrics(model: nn.Module, metadata: Any, cases: Sequence[TrainingCase],
                     device: torch.device) -> Optional[Dict[str, float]]:
    """Segment each held-out case with the real pipeline and score it like ``evaluate`` (paper §4.2).

    Scores come from :func:`vertebra_traversal.metrics.score_case` pooled by
    :func:`vertebra_traversal.evaluate.summarize` (the Table 1 row, completely visible vertebrae).
    Returns ``scan_dice`` (0..1), ``scan_assd_mm``, ``scan_identification_accuracy``,
    ``scan_completeness_accuracy``, ``scan_missed``, ``scan_false_detections`` (totals), ``scans`` and
    ``scan_seconds``; None when the pipeline is not available in this checkout.
    """
    try:
        from ..checkpoint import LoadedModel
        from ..evaluate import summarize
    except ImportError as exc:  # the engine is not complete in this checkout
        logger.info("whole-scan validation skipped: pipeline not available (%s)", exc)
        return None
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        loaded = LoadedModel(module=model, metadata=metadata, device=device, path=Path("<training>"))
        with torch.no_grad():
            scores = [score_scan(loaded, case) for case in cases]
    finally:
        model.train(was_training)
    row = summarize(scores, "validation")
    return {"scan_dice": row.dice_mean, "scan_assd_mm": row.assd_mean,
            "scan_identification_accuracy": row.identification_accuracy,
            "scan_completeness_accuracy": row.completeness_accuracy, "scan_missed": float(row.missed),
            "scan_false_detections": float(row.false_detections), "scans": float(row.scans),
            "scan_seconds": time.perf_counter() - start}

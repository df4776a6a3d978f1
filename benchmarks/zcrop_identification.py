"""The paper's random z-crop experiment (§5.2): identification on arbitrary fields of view.

    python benchmarks/zcrop_identification.py --data DATASET --model ct|mr|PATH [--seed 0]

For every case two crops along the superior axis are drawn: at most 20 % and 40 % of the original
length (the paper's "minimally 80 % and 60 % smaller"), but never shorter than 150 mm (or the whole
scan when it is shorter). Each crop is segmented and every reference vertebra matched by overlap
counts as identified when its predicted label is right. Prints per-crop lines (with the mean Dice over the
crop's reference vertebrae, a missed one counting 0, and the number of vertebrae found) and the accuracy
and linearly weighted kappa over all matched vertebrae, and the crops' mean Dice. CT: where a crop is read
two ways (its labels counted from the ribs and the network's own, report ``own_label``; or, with the
reading that keeps the network's labels, the ribs' reading offered as ``rib_label``), ``by_other_reading``
counts the vertebrae the other reading would identify (``other_reading``: the crops with one; ``shift``:
how many levels apart the two readings put the vertebra where the ribs end).

``--also MODEL`` segments every crop with a second model as well and prints what it identifies beside
(``also_identified``, and totals ``also``): for two model files with the same networks and another label
reading (``calibrate --keep-reading``), the second run's patches are answered from the first's network
outputs wherever its inputs are the same (they are, up to the reading), so it costs little more than one.
"""
from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import SimpleITK as sitk

from vertebra_traversal import anatomy, dataset
from vertebra_traversal.checkpoint import load_model
from vertebra_traversal.geometry import crop_z, physical_bounds
from vertebra_traversal.imageio import read_image, read_label_map
from vertebra_traversal.metrics import linear_kappa, score_case
from vertebra_traversal.models import resolve_model
from vertebra_traversal.pipeline import segment_image

MIN_LENGTH_MM = 150.0


class SharedAnswers:
    """Predictor hooks (``segment_image(..., predictor_hook=)``) that answer a patch batch seen before, by the
    same kind of network (main network, or the start network's wrapper), from the stored outputs; ``clear``
    between crops."""

    def __init__(self) -> None:
        self.answers: dict = {}

    def clear(self) -> None:
        self.answers.clear()

    def hook(self, predictor):
        def predict(images, memories):
            key = (type(predictor.model.module).__name__, hashlib.sha1(images.tobytes()).hexdigest(),
                   hashlib.sha1(memories.tobytes()).hexdigest())
            if key not in self.answers:
                self.answers[key] = predictor(images, memories)
            return self.answers[key]
        return predict


def crops(image: sitk.Image, rng: np.random.Generator):
    low, high = physical_bounds(image)
    length = high[2] - low[2]
    for fraction in (0.2, 0.4):
        size = min(length, max(MIN_LENGTH_MM, fraction * length))
        start = low[2] + rng.uniform(0, length - size)
        yield fraction, start, start + size


def _other(v) -> int:
    """A vertebra's label by the other reading of its run (0: none)."""
    return v.rib_label or v.own_label or 0


def _shift(result) -> float:
    """Levels (anatomical rank) between the two readings of the vertebra where the ribs end; 0 where the run
    has one reading."""
    for v in result.vertebrae:
        if v.label == result.ribs_end and _other(v):
            return abs(anatomy.vertebra(_other(v)).rank - anatomy.vertebra(v.label).rank)
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="ct")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--also", help="a second model segmenting the same crops (module docstring)")
    args = parser.parse_args()
    model = load_model(resolve_model(args.model), device=args.device)
    also = load_model(resolve_model(args.also), device=args.device) if args.also else None
    shared, also_right, also_matched = SharedAnswers(), 0, 0
    hook = shared.hook if also is not None else None  # stored answers only where a second model reads them
    rng = np.random.default_rng(args.seed)
    refs, preds, dices, by_other, other_readings = [], [], [], 0, 0
    for case in dataset.list_cases(args.data):
        image = read_image(case.image)
        labels = read_label_map(case.labels, reference=image)
        for fraction, z0, z1 in crops(image, rng):
            image_crop, labels_crop = crop_z(image, z0, z1), crop_z(labels, z0, z1)
            reference, spacing = sitk.GetArrayFromImage(labels_crop), tuple(reversed(image_crop.GetSpacing()))
            shared.clear()
            result = segment_image(image_crop, model, predictor_hook=hook)
            score = score_case(reference, sitk.GetArrayFromImage(result.labels), spacing, case_id=case.case_id)
            extra = {}
            if also is not None:
                second = segment_image(image_crop, also, predictor_hook=hook).labels
                second = score_case(reference, sitk.GetArrayFromImage(second), spacing, case_id=case.case_id)
                pairs = [(v.label, v.pred_label) for v in second.vertebrae if v.pred_label is not None]
                extra = {"also_matched": len(pairs), "also_identified": sum(r == p for r, p in pairs)}
                also_right, also_matched = also_right + extra["also_identified"], also_matched + len(pairs)
            matched = [v for v in score.vertebrae if v.pred_label is not None]
            refs += [v.label for v in matched]
            preds += [v.pred_label for v in matched]
            other = {v.label: _other(v) for v in result.vertebrae if _other(v)}
            counted = sum(v.label == other.get(v.pred_label, v.pred_label) for v in matched)
            other_readings, by_other = other_readings + bool(other), by_other + counted
            dices.append(float(np.mean([v.dice or 0.0 for v in score.vertebrae])) if score.vertebrae else 0.0)
            print(json.dumps({"case": case.case_id, "crop": fraction, "length_mm": round(z1 - z0),
                              "reference": len(score.vertebrae), "matched": len(matched),
                              "identified": sum(v.label == v.pred_label for v in matched),
                              "dice": round(dices[-1], 3), "found": len(result.vertebrae),
                              "other_reading": bool(other), "by_other_reading": counted, "shift": _shift(result),
                              **extra}))
    correct = sum(r == p for r, p in zip(refs, preds))
    print(json.dumps({"crops": len(dices), "vertebrae": len(refs), "identified": correct,
                      "accuracy": round(correct / max(1, len(refs)), 3),
                      "kappa": round(linear_kappa(refs, preds), 3) if refs else None,
                      "dice": round(float(np.mean(dices)), 3) if dices else None,
                      "other_reading": other_readings, "by_other_reading": by_other,
                      **({"also": {"vertebrae": also_matched, "identified": also_right}} if also else {})}))


if __name__ == "__main__":
    main()

"""A ``segment`` run read again with another label reading, without running the network again.

    python benchmarks/relabel_run.py --pred ct-pred --out ct-pred-read2 --model ct --gaps 2 --trim-ends 3

For every ``<stem>_report.json`` in ``--pred`` the instances' label values (top first) are read by the
model's label reading (``SegmentConfig.labeling_for``) with the given sequence settings, and
``<stem>_seg-vert_msk.nii.gz`` and the report are written to ``--out`` with the new labels; instances the
reading leaves out at the chain's ends are removed. The masks are the run's, so this is what ``segment``
writes with the new reading wherever the report lists every instance it labelled (a vertebra that
vanished on the input grid is missing from both). ``vertebra-traversal evaluate --pred OUT`` then scores it.
With the model's own settings it reproduces the run's label maps exactly where the run kept the network's
labels (a report without ``"counted_from_ribs": true``) and the model does not price skipped levels by the
instances' spacing (``LabelingConfig.wide_ratio``); where it does, the report's centroids (of the final masks
on the input grid) stand in for the model grid's, which ``segment`` compares, so a pair near the ratio may
read differently. A reading that needs the image (the bottom anchor's
distance below the lowest instance, the rib anchor's ribs; the bundled MR model counts from the sacrum) is
refused: the reports do not hold what it reads, so segment again instead. Counting from the ribs needs the
scan's height, so it is not done here: every case is read from the network's values alone, as
``segment --count-from-ribs off`` reads them without its offer, and the report says so (no
``label_count_from_ribs``, ``counted_from_ribs`` false, no ``rib_label`` or ``own_label``), which makes
``calibrate --confidence`` refuse it for a CT model.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import SimpleITK as sitk

from vertebra_traversal import anatomy
from vertebra_traversal.checkpoint import read_metadata
from vertebra_traversal.confidence import ribs_disagree, steps_from_start
from vertebra_traversal.labeling import refine_labels
from vertebra_traversal.models import resolve_model
from vertebra_traversal.segment_config import SegmentConfig, reading_record

REPORT = "_report.json"


def relabel_case(report: Path, out: Path, labeling, confidence=None, direction: str = "up",
                 penalties: Optional[Dict[str, float]] = None) -> int:
    """Write one case's label map and report read by ``labeling`` into ``out``; returns how many instances
    changed their label or were left out. ``confidence``: the model's fitted label confidence where
    ``labeling`` is its own reading (``segment`` reports it then), else None: the sequences' share.
    ``penalties``: gap and trim penalties other than the model's, recorded in the report's ``model`` entry
    (``label_penalties``) so that ``calibrate --confidence`` refuses the run."""
    stem = report.name[:-len(REPORT)]
    doc = json.loads(report.read_text())
    image = sitk.ReadImage(str(report.parent / f"{stem}_seg-vert_msk.nii.gz"))
    lut = np.arange(256, dtype=np.uint8)
    vertebrae = doc["vertebrae"]
    centroids = [v["centroid_lps_mm"] for v in vertebrae]  # the final masks': the model grid's are not reported
    assignment = refine_labels([v["label_value"] for v in vertebrae], labeling,
                               centroids_mm=centroids) if vertebrae else None
    new = assignment.labels if assignment is not None else ()
    lut[[v["label"] for v in vertebrae]] = 0
    for v, label in zip(vertebrae, new):
        lut[v["label"]] = label
    kept = assignment.kept() if assignment is not None else ()
    steps = steps_from_start(len(kept), direction)
    if doc.get("ribs_end") is not None:  # the instance where the ribs end, under its new name (None: left out)
        doc["ribs_end"] = int(lut[doc["ribs_end"]]) or None
    off = ribs_disagree(doc.get("ribs_end"))
    doc["vertebrae"] = [{**vertebrae[i], "order": order, "label": int(new[i]), "name": anatomy.name_of(new[i]),
                         "label_likelihood": round(float(assignment.likelihoods[i]), 4),
                         "label_confidence": round(float(assignment.confidences[i]) if confidence is None else
                                                   confidence.probability(assignment.likelihoods[i], step, off), 4)}
                        for order, (i, step) in enumerate(zip(kept, steps), start=1)]
    if assignment is not None:
        doc["chain"] = assignment.chain
    doc["counted_from_ribs"] = False  # read from the network's values alone (module docstring)
    for v in doc["vertebrae"]:
        v.update(rib_label=None, own_label=None)
    if isinstance(doc.get("model"), dict):
        doc["model"].pop("label_count_from_ribs", None)
        doc["model"].pop("label_wide_ratio", None)
        doc["model"].pop("label_reversal_levels", None)
        doc["model"].update(reading_record(labeling))
        doc["model"].update(label_gaps=labeling.max_gaps, label_trimmed=labeling.max_trimmed,
                            label_confidence_fitted=confidence is not None)
        if penalties:
            doc["model"]["label_penalties"] = penalties
    result = sitk.GetImageFromArray(lut[sitk.GetArrayFromImage(image)])
    result.CopyInformation(image)
    sitk.WriteImage(result, str(out / f"{stem}_seg-vert_msk.nii.gz"), True)
    (out / f"{stem}{REPORT}").write_text(json.dumps(doc, indent=1))
    return sum(label != v["label"] for v, label in zip(vertebrae, new))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", type=Path, required=True, help="a segment output folder")
    parser.add_argument("--out", type=Path, required=True, help="new folder for the relabelled run")
    parser.add_argument("--model", default="ct", help="the model the run used: its label reading")
    parser.add_argument("--gaps", type=int, help="skipped levels (default: the model's), as segment --gaps")
    parser.add_argument("--gap-penalty", type=float, help="default: the model's, else 0.1")
    parser.add_argument("--trim-ends", type=int, help="instances left out at the ends (default: the model's), "
                                                      "as segment --trim-ends")
    parser.add_argument("--trim-penalty", type=float, help="default: the model's, else 0.15")
    args = parser.parse_args()
    config = SegmentConfig(max_gaps=args.gaps, max_trimmed=args.trim_ends, count_from_ribs=False)
    meta = read_metadata(resolve_model(args.model))
    labeling = config.labeling_for(meta)
    if labeling.bottom_anchor_mm or labeling.rib_anchor:
        parser.error(f"{args.model}: its label reading needs the image (bottom anchor {labeling.bottom_anchor_mm} mm, "
                     f"rib anchor {'on' if labeling.rib_anchor else 'off'}), which a report does not hold; "
                     "segment again instead")
    penalties = {k: v for k, v in (("gap_penalty", args.gap_penalty), ("trim_penalty", args.trim_penalty))
                 if v is not None}
    segment_reading = labeling  # what segment reads with these counts: the model's penalties
    labeling = replace(labeling, **penalties)
    confidence = meta.confidence() if labeling == SegmentConfig().labeling_for(meta) and config.labels_as_model(meta) \
        else None  # the fit describes the model's own reading (for a CT model: counted from the ribs)
    other = (None if labeling == segment_reading  # only the penalties were replaced
             else {"gap_penalty": labeling.gap_penalty, "trim_penalty": labeling.trim_penalty})
    args.out.mkdir(parents=True)  # a new folder: nothing is overwritten
    changed = sum(relabel_case(report, args.out, labeling, confidence, meta.direction, other)
                  for report in sorted(args.pred.glob(f"*{REPORT}")))
    print(json.dumps({"out": str(args.out), "instances_changed": int(changed), "max_gaps": labeling.max_gaps,
                      "max_trimmed": labeling.max_trimmed}))


if __name__ == "__main__":
    main()

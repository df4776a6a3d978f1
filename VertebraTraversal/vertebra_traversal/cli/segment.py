"""``vertebra-traversal segment INPUT... -o OUTDIR [--model ct|mr|PATH] [--device auto|cpu|cuda] [--events]``.

With ``--events`` one JSON object per line goes to stdout (the contract read by the Slicer module,
docs/ARCHITECTURE.md); messages go to stderr. SIGTERM / SIGINT stop the traversal between two steps,
print a ``cancelled`` event and leave no partial output.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from .. import anatomy
from ..checkpoint import load_model
from ..dataset import list_cases
from ..geometry import LABEL_INTERPOLATORS
from ..imageio import InputError, read_image
from ..metadata import RECORDED_START_USES, START_USES
from ..models import resolve_model
from ..outputs import input_stem, prepare_output_dir, write_outputs
from ..pipeline import SegmentationResult, SegmentConfig, segment_image
from ..postprocess import COMPLETENESS_RULES
from .edge_options import (add_edge_options, edge_options, non_negative_option, on_off, spine_offset_option,
                           volume_ratio_option)

logger = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
EXIT_CANCELLED = 130


class EventStream:
    """Writes events as JSON lines to stdout (``--events``) or a terse progress line to stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = (not enabled) and sys.stderr.isatty()

    def __call__(self, event: Dict[str, Any]) -> None:
        if self.enabled:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()
        elif event["event"] == "vertebra":
            logger.info("found %s (completeness %.2f)", event["provisional_name"], event["completeness"])
        elif event["event"] == "patch" and self.tty:
            sys.stderr.write(f"\r  step {event['step']:4d}  patch at {event['center_lps_mm']} mm   ")
            sys.stderr.flush()


class CancelFlag:
    """Set by SIGTERM/SIGINT; polled by the traversal between steps."""

    def __init__(self) -> None:
        self.cancelled = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._set)

    def _set(self, signum: int, frame: Any) -> None:
        self.cancelled = True

    def __call__(self) -> bool:
        return self.cancelled


def rib_offer(result: SegmentationResult) -> str:
    """One line for a run whose ribs end off T12/T13 (its vertebrae's ``rib_label``): how the labels read
    counted from the ribs."""
    end = anatomy.name_of(result.ribs_end) if result.ribs_end else "?"
    moved = ", ".join(f"{v.name} -> {anatomy.name_of(v.rib_label)}" for v in result.vertebrae
                      if v.rib_label and v.rib_label != v.label)
    return f"the ribs end at the vertebra named {end}; counted from there the labels would read {moved} (rib_label)"


def expand_inputs(inputs: List[str], modality: str) -> List[Path]:
    """The image files to segment, in order.

    A file stays; a dataset root (``rawdata/<id>/<id>_ct.nii.gz``, the layout that ``phantom`` and the
    Slicer export write and VerSe uses) becomes its images of the model's ``modality`` (``"ct"`` or
    ``"mr"``); a folder of image files becomes its files; any other folder is one DICOM series.

    Raises:
        InputError: an input does not exist, a dataset root has no image of that modality, or two inputs
            would write outputs of the same name (checked before any work starts).
    """
    paths: List[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise InputError(f"{path}: file not found")
        paths.extend(_folder_images(path, modality) if path.is_dir() else [path])
    seen: Dict[str, Path] = {}
    for path in paths:
        stem = input_stem(path)
        if stem in seen:
            raise InputError(f"{path}: same output name '{stem}' as {seen[stem]}; segment them into separate "
                             f"output folders")
        seen[stem] = path
    return paths


def _folder_images(folder: Path, modality: str) -> List[Path]:
    if (folder / "rawdata").is_dir():
        images = [case.image for case in list_cases(folder) if case.modality == modality]
        if not images:
            raise InputError(f"{folder}: dataset holds no {modality.upper()} image "
                             f"(expected rawdata/<id>/<id>_{modality}.nii.gz)")
        return images
    images = sorted(p for p in folder.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES))
    return images or [folder]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("segment", help="segment and label the vertebrae of images",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders of images, dataset folders (rawdata/<id>/<id>_ct.nii.gz), "
                             "DICOM folders")
    parser.add_argument("-o", "--out", required=True, type=Path, help="output folder (new or empty)")
    parser.add_argument("--model", default="ct", help="'ct' or 'mr' (bundled) or a checkpoint path (default: ct)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=4, help="patches per network call")
    parser.add_argument("--no-surface-refinement", action="store_true",
                        help="CT: keep the surface voxels below the refinement's threshold")
    parser.add_argument("--surface-threshold-hu", type=float, metavar="HU",
                        help="CT: the surface refinement peels voxels below this (default: the model's, else the "
                             "paper's 200; the bundled CT model's is 100)")
    parser.add_argument("--surface-growth", action="store_true",
                        help="CT: give bone within one model voxel of a vertebra to the nearest one, after the "
                             "surface refinement (not in the paper; the CT card has its numbers)")
    parser.add_argument("--growth-threshold-hu", type=float, default=200.0, metavar="HU",
                        help="CT: what counts as bone for --surface-growth (default 200; the CT card compares 100)")
    parser.add_argument("--no-label-calibration", action="store_true",
                        help="read the label values as the paper does (§3.4) even when the model carries a "
                             "label calibration (vertebra-traversal calibrate)")
    parser.add_argument("--all-components", action="store_true",
                        help="keep every piece of a vertebra (default: only its largest connected piece)")
    parser.add_argument("--label-interpolation", choices=LABEL_INTERPOLATORS, default="linear",
                        help="how the result is mapped from the model grid back onto the image: linear (default) "
                             "or nearest (the paper, §3.1, for a model grid as fine as the image)")
    parser.add_argument("--completeness-rule", choices=COMPLETENESS_RULES,
                        help="network: the completeness output (paper §3.5); edge: the vertebra does not reach the "
                             "scan's border; both. Default: the model's (its card says which and why)")
    add_edge_options(parser, recorded=False)
    parser.add_argument("--gaps", type=int, choices=range(4), metavar="G",
                        help="label levels the sequence may skip, 0-3 (default: the model's; the bundled CT "
                             "model: 2)")
    parser.add_argument("--trim-ends", type=int, choices=range(4), metavar="K",
                        help="instances the label sequence may leave out at the chain's two ends, 0-3; they "
                             "leave the output (default: the model's; the bundled CT model: 3; 0 keeps all)")
    parser.add_argument("--bottom-anchor-mm", type=float, metavar="MM",
                        help="read the lowest vertebra found as the last lumbar one when it ends MM or more above "
                             "the scan's inferior border (the sacrum lies below it); 0 = never (default: the "
                             "model's; the bundled MR model: 10, the CT model: never)")
    parser.add_argument("--rib-anchor", type=on_off, metavar="on|off",
                        help="CT: read the lowest vertebra with ribs as the last thoracic one (T12, T13) where a "
                             "vertebra without ribs lies below it (default: the model's; the bundled models: off)")
    parser.add_argument("--count-from-ribs", type=on_off, metavar="on|off",
                        help="CT: where the ribs end at a vertebra not named T12/T13 in a scan of 350 mm or more, "
                             "take the labels counted from the ribs (on; the report keeps the run's own as "
                             "own_label) or keep the run's own and offer those in the report (off, rib_label). "
                             "Default: on for CT models")
    parser.add_argument("--start-network", choices=START_USES,
                        help="for a model with a start network (combine): always, fallback (only when the main "
                             "network alone finds no vertebra in a scan, or vertebrae that span less than half of "
                             "its height) or off (accepted for any model). "
                             "Default: the model's")
    parser.add_argument("--no-rescue-network", action="store_true",
                        help="never run the model's rescue network (combine --rescue: a second traversal of a scan in "
                             "which the one with the start network stalls); accepted for any model")
    parser.add_argument("--events", action="store_true", help="JSON lines on stdout (for the Slicer module)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    emit = EventStream(args.events)
    cancel = CancelFlag()
    cancel.install()
    out_existed = args.out.exists()
    try:
        return _run(args, emit, cancel)
    except Exception as exc:
        if args.events:
            emit({"event": "error", "message": str(exc) if isinstance(exc, InputError) else f"internal error: {exc!r}"})
        raise
    finally:
        if not out_existed and args.out.is_dir() and not any(args.out.iterdir()):
            args.out.rmdir()  # leave nothing behind when no case was written


def _run(args: argparse.Namespace, emit: EventStream, cancel: CancelFlag) -> int:
    started = time.perf_counter()
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: must be at least 1")
    for option, value in (("--surface-threshold-hu", args.surface_threshold_hu),
                          ("--growth-threshold-hu", args.growth_threshold_hu)):
        if value is not None and not math.isfinite(value):
            raise InputError(f"{option} {value}: must be a finite number of HU")
    margin, contact, faces = edge_options(args)
    spine_offset, volume_ratio = spine_offset_option(args), volume_ratio_option(args)
    model_path = resolve_model(args.model)
    model = load_model(model_path, device=args.device)
    if args.start_network in RECORDED_START_USES and not model.metadata.start_network:
        raise InputError(f"--start-network {args.start_network}: {model_path} holds no start network")
    inputs = expand_inputs(args.inputs, model.metadata.modality.lower())
    out_dir = prepare_output_dir(args.out)
    config = SegmentConfig(batch_size=args.batch_size, surface_refinement=not args.no_surface_refinement,
                           surface_threshold_hu=args.surface_threshold_hu,
                           surface_growth=args.surface_growth, growth_threshold_hu=args.growth_threshold_hu,
                           largest_component=not args.all_components,
                           label_calibration=not args.no_label_calibration,
                           completeness_rule=args.completeness_rule, edge_margin_mm=margin,
                           edge_min_contact_mm2=contact, edge_margin_faces=faces,
                           max_spine_offset_mm=spine_offset, min_volume_ratio=volume_ratio,
                           label_interpolation=args.label_interpolation, max_gaps=args.gaps,
                           max_trimmed=args.trim_ends, bottom_anchor_mm=non_negative_option(args, "--bottom-anchor-mm"),
                           rib_anchor=args.rib_anchor, count_from_ribs=args.count_from_ribs,
                           fragment_pieces=args.fragment_pieces, start_network=args.start_network,
                           rescue_network=not args.no_rescue_network)
    meta = model.metadata
    try:
        model_info = {"path": str(model_path.resolve()), **config.report_record(meta)}
    except ValueError as exc:  # a setting this model cannot read with (the rib options of an MR model)
        raise InputError(f"{model_path}: {exc}") from None
    patch_mm = [float(p) * float(s) for p, s in zip(reversed(meta.patch_size), meta.spacing_mm)]
    for number, path in enumerate(inputs, start=1):
        emit({"event": "start", "input": str(path), "case": number, "cases": len(inputs),
              "model": str(model_path), "modality": meta.modality, "device": str(model.device),
              "patch_size_mm": patch_mm})
        image = read_image(path)
        result = segment_image(image, model, config, on_event=emit, should_cancel=cancel)
        if result.cancelled or cancel():
            emit({"event": "cancelled"})
            logger.warning("cancelled; %s left without outputs", path)
            return EXIT_CANCELLED
        paths = write_outputs(result, path, out_dir, model_info)
        emit({"event": "progress", "fraction": number / len(inputs), "message": f"{path.name} done"})
        emit({"event": "result", "input": str(path), "outputs": paths.to_json(),
              "vertebrae": [v.to_json() for v in result.vertebrae]})
        logger.info("%s: %s", path.name, ", ".join(v.name + ("" if v.complete else "(inc)")
                                                   for v in result.vertebrae) or "no vertebra found")
        if any(v.rib_label for v in result.vertebrae):
            logger.warning("%s: %s", path.name, rib_offer(result))
        elif result.counted_from_ribs:
            logger.warning("%s: labels counted from the ribs (own_label: the run's own reading): %s", path.name,
                           ", ".join(f"{anatomy.name_of(v.own_label)} -> {v.name}" for v in result.vertebrae
                                     if v.own_label and v.own_label != v.label))
    emit({"event": "done", "cases": len(inputs), "seconds": round(time.perf_counter() - started, 2)})
    return 0

"""``vertebra-traversal calibrate --model MODEL --out NEW.pt (--pred DIR --ref DIR [--confidence] | --gaussian SD |
--keep-reading)``.

Fits what the model's label output means per level (:mod:`vertebra_traversal.label_calibration`) on cases
it has segmented, and writes a new model file with that table in its metadata; ``segment`` then reads the
label values through it (``segment --no-label-calibration``: the paper's reading, §3.4). Use the model's
training cases, never the cases you judge it on:

    vertebra-traversal segment data/ -o pred/ --model runs/ct/model.pt
    vertebra-traversal calibrate --model runs/ct/model.pt --pred pred/ --ref data/ --out runs/ct/model-cal.pt

Prints a JSON summary, including identification on the fitting cases before and after (in-sample).

``--gaussian SD`` needs no cases: the model keeps the paper's expected values but reads them through a
Gaussian of SD levels instead of the paper's triangle, for a network that answers on the right scale
with errors of a level or more (the bundled CT model: 1.25).

``--gaps G [--gap-penalty D]`` (any mode) also lets the maximum-likelihood step skip up to G single
levels, each costing D of a sequence's average likelihood, so that a vertebra merged into its
neighbour's instance does not shift every label beyond it (the bundled CT model: 1 and 0.1).

``--trim-ends K [--trim-penalty T]`` (any mode) lets it leave out up to K instances at the two ends of
the chain, each costing T (default 0.15), which then get no label: pieces of other bone below L5 or
above C1 whose label values fit no level (off by default).

``--bottom-anchor-mm G [--bottom-anchor-penalty A]`` (any mode) reads the lowest instance as the last
lumbar vertebra (L5; L6 or L4 in those spines) when it ends G mm or more above the scan's inferior border:
the scan shows the sacrum below it. A sequence that does not end there costs A (default 1). Off by
default; the bundled MR model: 10 mm. The in-sample identification printed after a fit does not apply
it: the reports hold no distance to the border.

``--rib-anchor on [--rib-anchor-penalty R]`` (any mode; CT) reads the lowest vertebra with ribs as the
last thoracic one (T12; T13 in that spine) where a vertebra without ribs lies below it
(:mod:`vertebra_traversal.ribs`). A sequence that does not costs R (default 1). Off by default. The
in-sample identification printed after a fit does not apply it: the reports hold no ribs.

``--wide-ratio W [--wide-penalties S K]`` (any mode) prices a skipped level by where the instances lie:
between two consecutive instances whose centroids lie at least W times as far apart as the pairs around
them, a skipped level costs S instead of ``--gap-penalty`` and keeping consecutive levels costs K (default
0.1 and 0, which change nothing). It reads only where ``--gaps`` allows a skipped level. Off by default.
The in-sample identification printed after a fit does not apply it: the reports' centroids are not the
model grid's.

``--reversal-levels D [--reversal-penalty P]`` (any mode): where a label value lies more than D levels below
the one above it, a sequence may leave out every instance below that place, or every one above it, each at P
(default 0.05), however many: pieces of the pelvis or the sacrum traversed after L5 no longer move every label.
Off by default.

``--confidence`` (with ``--pred`` and ``--ref``, nothing else) fits no label reading but the label
confidence (:mod:`vertebra_traversal.confidence`): the probability that a label is right, from its
likelihood and its distance from the end of the chain where the traversal started, fitted on cases the
model segmented *as it is* (the reports must show its own label reading, spine-line limit, volume ratio
and start-network use). ``segment`` then reports that probability as ``label_confidence`` in runs with the
same settings. Any later change of the reading (the other modes) drops it. Prints
the in-sample Brier score (lower is better) beside that of a constant, and the area under the ROC curve.

``--keep-reading`` fits nothing: the model keeps the label reading it carries (a fitted table or a
Gaussian) and its skipped-level allowance unless ``--gaps`` is given (``--gaps 0`` removes one), likewise
its ends allowance unless ``--trim-ends`` is given, its bottom anchor unless ``--bottom-anchor-mm`` is, its
rib anchor unless ``--rib-anchor`` is, its spacing unless ``--wide-ratio`` is, its reversal unless
``--reversal-levels`` is, with
``--surface-threshold-hu``, ``--edge-margin-mm`` and ``--edge-min-contact-mm2`` when given.

``--surface-threshold-hu HU`` (any mode) also records the threshold below which ``segment``'s CT surface
refinement peels this model's masks (default: the paper's 200; the bundled CT model: 100).
``--edge-margin-mm MM``, ``--edge-min-contact-mm2 MM2`` and ``--edge-margin-faces`` (any mode) record how
close to the scan's border a mask counts as cut by it, what area it must cover there, and which faces
the distance applies to, for the ``edge`` and ``both`` completeness rules (default 0, 0 and all:
touching, by any voxel; the bundled MR model: 2 mm on all faces, the CT model: 50 mm², 3 mm on the
cranio-caudal faces). ``--max-spine-offset-mm MM`` (any mode) records how far off the spine line an
instance may lie before ``segment`` drops it (default 0: none dropped), ``--min-volume-ratio R`` how small
beside its neighbours (default 0: none dropped).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from ..calibrate import (calibrate_model, confidence_model, describe, describe_confidence, gaussian_model,
                         regapped_model)
from ..checkpoint import read_metadata
from ..imageio import InputError
from ..labeling import LabelingConfig
from ..metadata import CT_HU_RANGE, SEQUENCE_ENTRIES, PostSettings, in_ct_range
from ..models import resolve_model
from .edge_options import add_edge_options, edge_options, on_off, spine_offset_option, volume_ratio_option

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("calibrate", help="fit a model's label calibration on cases it has segmented",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="'ct' or 'mr' (bundled) or a checkpoint path")
    parser.add_argument("--pred", type=Path, help="segment's outputs for the reference cases")
    parser.add_argument("--ref", type=Path, help="reference dataset folder")
    parser.add_argument("--out", required=True, type=Path, help="the calibrated model file to write (new)")
    parser.add_argument("--smoothing", type=float, help="kernel width over levels (default 1; fitting only)")
    parser.add_argument("--sd-floor", type=float, help="smallest spread per level (default 2; fitting only)")
    parser.add_argument("--gaussian", type=float, metavar="SD",
                        help="instead of fitting: the paper's expected values read through a Gaussian of SD levels")
    parser.add_argument("--confidence", action="store_true",
                        help="with --pred and --ref: fit only the label confidence (what a label's likelihood and "
                             "its distance from the traversal's start say about it being right) on cases "
                             "segmented with the model as it is; nothing else changes")
    parser.add_argument("--keep-reading", action="store_true",
                        help="instead of fitting: keep the model's own label reading and its sequence settings, "
                             "changing only those given (--gaps, --trim-ends, --bottom-anchor-mm, --rib-anchor) and "
                             "the settings below")
    parser.add_argument("--gaps", type=int, metavar="G",
                        help="let the label refinement skip up to G single levels (a vertebra merged into its "
                             "neighbour's instance or not found), each costing --gap-penalty (default 0: the "
                             "paper's gap-free sequences; with --keep-reading: the model's)")
    parser.add_argument("--gap-penalty", type=float, metavar="D",
                        help="subtracted from a sequence's average likelihood per skipped level (default 0.1; "
                             "needs --gaps)")
    parser.add_argument("--trim-ends", type=int, metavar="K",
                        help="let the label refinement leave out up to K instances at the chain's two ends "
                             "(no label), each costing --trim-penalty (default 0: none; with --keep-reading: "
                             "the model's)")
    parser.add_argument("--trim-penalty", type=float, metavar="T",
                        help="subtracted from a sequence's average likelihood per instance left out (default "
                             "0.15; needs --trim-ends)")
    parser.add_argument("--bottom-anchor-mm", type=float, metavar="G",
                        help="read the lowest instance as the last lumbar vertebra when it ends G mm or more above "
                             "the scan's inferior border; a sequence that does not costs --bottom-anchor-penalty "
                             "(default 0: never; with --keep-reading: the model's)")
    parser.add_argument("--bottom-anchor-penalty", type=float, metavar="A",
                        help="subtracted from a sequence that does not end on its chain's last vertebra where the "
                             "anchor holds (default 1; needs --bottom-anchor-mm)")
    parser.add_argument("--rib-anchor", type=on_off, metavar="on|off",
                        help="CT: read the lowest vertebra with ribs as the last thoracic one where a vertebra "
                             "without ribs lies below it; a sequence that does not costs --rib-anchor-penalty "
                             "(default off; with --keep-reading: the model's)")
    parser.add_argument("--rib-anchor-penalty", type=float, metavar="R",
                        help="subtracted from a sequence that does not end the thoracic spine at the last rib, "
                             "0-2 (default 1; above 1 the anchor always holds; needs --rib-anchor)")
    parser.add_argument("--wide-ratio", type=float, metavar="W",
                        help="price a skipped level by where the instances lie: between two instances at least W "
                             "times as far apart as the pairs around them a skipped level costs the first of "
                             "--wide-penalties and no skip the second (default 0: off; with --keep-reading: the "
                             "model's)")
    parser.add_argument("--wide-penalties", type=float, nargs=2, metavar=("S", "K"),
                        help="a skipped level and consecutive levels between two instances wide apart, each "
                             "subtracted from a sequence's average likelihood (default 0.1 0; needs --wide-ratio)")
    parser.add_argument("--reversal-levels", type=float, metavar="D",
                        help="where a label value lies more than D levels below the one above it, a sequence may "
                             "leave out everything below that place or everything above it (default 0: off; with "
                             "--keep-reading: the model's)")
    parser.add_argument("--reversal-penalty", type=float, metavar="P",
                        help="subtracted from a sequence's average likelihood per instance so left out (default "
                             "0.05; needs --reversal-levels)")
    parser.add_argument("--surface-threshold-hu", type=float, metavar="HU",
                        help="record the CT surface refinement threshold of this model's masks (default: keep the "
                             "model's; without one segment uses the paper's 200)")
    add_edge_options(parser, recorded=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.confidence:
        return _run_confidence(args)
    fitting = args.pred is not None or args.ref is not None
    modes = int(fitting) + int(args.gaussian is not None) + int(args.keep_reading)
    if modes != 1 or (fitting and (args.pred is None or args.ref is None)):
        raise InputError("give one of --pred and --ref (fit a table on segmented cases), --gaussian SD, "
                         "or --keep-reading")
    if not fitting and (args.smoothing is not None or args.sd_floor is not None):
        raise InputError("--smoothing and --sd-floor shape a fitted table; --gaussian and --keep-reading fit none")
    sequence = _sequence(args)
    threshold = args.surface_threshold_hu
    if threshold is not None and not in_ct_range(threshold):
        raise InputError(f"--surface-threshold-hu {threshold}: expected a number of HU from "
                         f"{CT_HU_RANGE[0]:g} to {CT_HU_RANGE[1]:g}")
    margin, contact, faces = edge_options(args)
    settings = PostSettings(surface_threshold_hu=threshold, edge_margin_mm=margin, edge_min_contact_mm2=contact,
                            edge_margin_faces=faces, max_spine_offset_mm=spine_offset_option(args),
                            min_volume_ratio=volume_ratio_option(args), fragment_pieces=args.fragment_pieces)
    recorded = vars(settings)  # printed as written: None = the model's own kept
    model = resolve_model(args.model)
    if args.keep_reading:
        own = read_metadata(model)  # the model's own allowances stay with its own reading unless given
        carried = own.label_sequence()
        kept = {name: carried[name] for count_option, _, count, penalty in SEQUENCE_OPTIONS
                if _value(args, count_option) is None for name in (count, penalty) if name in carried}
        sequence = {**kept, **(sequence or {})} or None
        path = regapped_model(model, args.out, sequence, settings)
        sys.stdout.write(json.dumps({"model": str(path), "kept_reading": True, **_printed(sequence),
                                     **recorded}) + "\n")
        return 0
    if args.gaussian is not None:
        try:
            path = gaussian_model(model, args.gaussian, args.out, sequence, settings)
        except ValueError as exc:
            raise InputError(f"--gaussian {args.gaussian}: {exc}") from None
        sys.stdout.write(json.dumps({"model": str(path), "gaussian_sd": args.gaussian, **_printed(sequence),
                                     **recorded}) + "\n")
        return 0
    shape = {name: value for name, value in (("smoothing", args.smoothing), ("sd_floor", args.sd_floor))
             if value is not None}  # calibrate_model's own defaults otherwise
    result = calibrate_model(model, args.pred, args.ref, args.out, **shape, gaps=sequence, settings=settings,
                             progress=lambda fraction, message: logger.info("%3.0f%% %s", 100 * fraction, message))
    sys.stdout.write(json.dumps(describe(result), indent=1) + "\n")
    return 0


def _run_confidence(args: argparse.Namespace) -> int:
    """``--confidence``: fit the label confidence alone; every option that would change the labels is refused."""
    if args.pred is None or args.ref is None:
        raise InputError("--confidence needs --pred and --ref: cases the model segmented, and their reference")
    margin, contact, faces = edge_options(args)
    given = (("--gaussian", args.gaussian), ("--smoothing", args.smoothing), ("--sd-floor", args.sd_floor),
             *((option, _value(args, option)) for options in SEQUENCE_OPTIONS for option in options[:2]),
             ("--keep-reading", args.keep_reading or None),
             ("--surface-threshold-hu", args.surface_threshold_hu), ("--edge-margin-mm", margin),
             ("--edge-min-contact-mm2", contact), ("--edge-margin-faces", faces),
             ("--max-spine-offset-mm", spine_offset_option(args)), ("--min-volume-ratio", volume_ratio_option(args)),
             ("--fragment-pieces", args.fragment_pieces))
    others = [option for option, value in given if value is not None]
    if others:
        raise InputError(f"--confidence fits the confidence of the model as it segmented --pred and takes no other "
                         f"setting ({', '.join(others)} given)")
    result = confidence_model(resolve_model(args.model), args.pred, args.ref, args.out,
                              progress=lambda fraction, message: logger.info("%3.0f%% %s", 100 * fraction, message))
    sys.stdout.write(json.dumps(describe_confidence(result), indent=1) + "\n")
    return 0


#: (count option, penalty option, LabelingConfig count field, penalty field); the penalty's default is
#: LabelingConfig's (0.1 a skipped level, 0.15 an end left out, 1 a sequence off the bottom anchor).
SEQUENCE_OPTIONS = (("--gaps", "--gap-penalty", "max_gaps", "gap_penalty"),
                    ("--trim-ends", "--trim-penalty", "max_trimmed", "trim_penalty"),
                    ("--bottom-anchor-mm", "--bottom-anchor-penalty", "bottom_anchor_mm", "bottom_anchor_penalty"),
                    ("--rib-anchor", "--rib-anchor-penalty", "rib_anchor", "rib_anchor_penalty"),
                    ("--wide-ratio", "--wide-penalties", "wide_ratio", "wide_penalties"),
                    ("--reversal-levels", "--reversal-penalty", "reversal_levels", "reversal_penalty"))


def _sequence(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """The sequence settings given: ``{"max_gaps": G, "gap_penalty": D}`` from ``--gaps`` and
    ``--gap-penalty`` (default 0.1), ``{"max_trimmed": K, "trim_penalty": T}`` from ``--trim-ends`` and
    ``--trim-penalty`` (default 0.15), ``{"bottom_anchor_mm": G, "bottom_anchor_penalty": A}`` from
    ``--bottom-anchor-mm`` and ``--bottom-anchor-penalty`` (default 1), together; None when no count is given or
    all are 0.

    Raises:
        InputError: a penalty without its count, or values ``LabelingConfig`` refuses.
    """
    out: Dict[str, Any] = {}
    for count_option, penalty_option, count_field, penalty_field in SEQUENCE_OPTIONS:
        count, penalty = _value(args, count_option), _value(args, penalty_option)
        if count is None:
            if penalty is not None:
                raise InputError(f"{penalty_option} needs {count_option}: it prices what {count_option} allows")
            continue
        values = {count_field: count, penalty_field: getattr(LabelingConfig(), penalty_field) if penalty is None
                  else penalty}
        try:
            LabelingConfig(**values)
        except ValueError as exc:
            raise InputError(f"{count_option} / {penalty_option}: {exc}") from None
        out.update(values if count else {})
    return out or None


def _value(args: argparse.Namespace, option: str) -> Any:
    """The parsed value of ``option`` (``--name-like-this``), None where not given."""
    return getattr(args, option[2:].replace("-", "_"))


def _printed(sequence: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``{"gaps": {...} or None, "trim": {...} or None, "anchor": {...} or None}`` of the sequence settings
    written, for the summary."""
    return {entry: {key: sequence[key] for key in keys} if sequence and sequence.get(keys[0]) else None
            for entry, keys in SEQUENCE_ENTRIES.items()}

"""The options that say when a mask reaches the scan's border (``segment`` uses them, ``calibrate``
records them in a model): ``--edge-margin-mm``, ``--edge-min-contact-mm2`` and ``--edge-margin-faces``
(:func:`~vertebra_traversal.postprocess.labels_at_edge`, ``ModelMetadata.edge_margin_mm``); and beside
them ``--max-spine-offset-mm``, how far off the spine line an instance may lie (:mod:`..spine_line`), and
``--min-volume-ratio``, how small beside its neighbours it may be (:mod:`..fragments`), and
``--fragment-pieces``, what of the network's output the traversal takes as a fragment (:mod:`..traversal`)."""
from __future__ import annotations

import argparse
import math
from typing import Optional, Tuple

from ..imageio import InputError
from ..postprocess import EDGE_MARGIN_FACES
from ..traversal import FRAGMENT_PIECES

EDGE_OPTIONS = (("--edge-margin-mm", "MM", "a mask within this distance (mm) of the scan's border counts as reaching "
                 "it (0 = touching; the bundled models': MR 2, CT 3)"),
                ("--edge-min-contact-mm2", "MM2", "a mask must cover at least this area (mm²) on the scan's faces "
                 "to count as reaching them (0 = any voxel; the bundled CT model's is 50)"))
SPINE_HELP = ("drop every instance whose centroid lies more than this (mm) across the superior axis from the "
              "centroids of the 2 instances nearest above and the 2 nearest below it, before the labels are assigned "
              "(0 = keep all)")
VOLUME_HELP = ("drop every instance whose volume is below this share of the median volume of the 4 instances "
               "nearest to it in cranio-caudal order, before the labels are assigned; the two at the ends of the chain "
               "and those the scan's cranio-caudal border cuts are kept (0 = keep all, else below 1)")
PIECES_HELP = ("what of the network's thresholded output the traversal takes as the next vertebra: all of it (the "
               "paper; both bundled models) or its largest connected piece, the other pieces going into the memory "
               "with it")
FACES_HELP = ("the faces --edge-margin-mm applies to: all, or cranio-caudal (the two across the patient's "
              "superior-inferior axis; the others need the mask on their outermost layer; the bundled CT model's)")


def add_edge_options(parser: argparse.ArgumentParser, recorded: bool) -> None:
    """Add both options; ``recorded``: they are written into a model (``calibrate``), else used in a run."""
    default = "default: keep the model's" if recorded else "default: the model's"
    for option, metavar, text in EDGE_OPTIONS:
        parser.add_argument(option, type=float, metavar=metavar,
                            help=f"edge and both completeness rules: {text}; {default}")
    parser.add_argument("--edge-margin-faces", choices=EDGE_MARGIN_FACES, help=f"{FACES_HELP}; {default}")
    parser.add_argument("--max-spine-offset-mm", type=float, metavar="MM", help=f"{SPINE_HELP}; {default}")
    parser.add_argument("--min-volume-ratio", type=float, metavar="R", help=f"{VOLUME_HELP}; {default}")
    parser.add_argument("--fragment-pieces", choices=FRAGMENT_PIECES, help=f"{PIECES_HELP}; {default}")


def edge_options(args: argparse.Namespace) -> Tuple[Optional[float], Optional[float], Optional[str]]:
    """(margin mm, contact mm², margin faces) from parsed options, None where not given.

    Raises:
        InputError: a value that is negative or not finite (the message names the option).
    """
    values = [non_negative_option(args, option) for option, _, _ in EDGE_OPTIONS]
    return values[0], values[1], args.edge_margin_faces


def spine_offset_option(args: argparse.Namespace) -> Optional[float]:
    """``--max-spine-offset-mm`` (mm) from parsed options, None where not given.

    Raises:
        InputError: a value that is negative or not finite.
    """
    return non_negative_option(args, "--max-spine-offset-mm")


def volume_ratio_option(args: argparse.Namespace) -> Optional[float]:
    """``--min-volume-ratio`` from parsed options, None where not given.

    Raises:
        InputError: a value below 0, of 1 or more, or not finite.
    """
    value = args.min_volume_ratio
    if value is not None and not (math.isfinite(value) and 0 <= value < 1):
        raise InputError(f"--min-volume-ratio {value}: must be a number from 0 up to (not including) 1")
    return value


def non_negative_option(args: argparse.Namespace, option: str) -> Optional[float]:
    """The value of ``option`` (``--name-like-this``) from parsed options, None where not given.

    Raises:
        InputError: a value that is negative or not finite.
    """
    value = getattr(args, option[2:].replace("-", "_"))
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise InputError(f"{option} {value}: must be a finite number of 0 or more")
    return value


def on_off(text: str) -> bool:
    """argparse ``type`` of a switch given as ``on`` or ``off``."""
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected 'on' or 'off', got {text!r}")
    return text == "on"

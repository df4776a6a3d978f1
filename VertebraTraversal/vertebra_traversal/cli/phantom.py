"""``vertebra-traversal phantom``: write synthetic spine CT/MR cases in the dataset layout.

    vertebra-traversal phantom --out DIR --count N --seed S [--modality ct|mr] [--stats] [options]

Case ``i`` gets id ``phantom{S + i:05d}`` and equals case 0 of seed ``S + i``. Existing case folders are
never overwritten (exit code 2). ``--stats`` prints per-vertebra volume, intensity percentiles and
extents of every written case (the calibration numbers of :mod:`vertebra_traversal.phantom.stats`).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Tuple

from ..anatomy import MODALITIES
from ..imageio import InputError, read_image, read_label_map
from ..phantom import PhantomConfig, format_stats, generate_dataset, vertebra_stats
from ..phantom.config import FOV_MODES

logger = logging.getLogger(__name__)


def _whole_number(text: str) -> int:
    """A count written as ``2000000`` or ``2e6``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number such as 2e6, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number such as 2e6, got {text!r}")
    return int(value)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("phantom", help="generate synthetic spine CT/MR cases (VerSe-style layout)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="dataset root (created if missing)")
    p.add_argument("--count", type=int, default=1, help="number of cases (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first case (default 0)")
    p.add_argument("--modality", choices=MODALITIES, default="ct")
    p.add_argument("--fov", choices=FOV_MODES, default="random", help="field of view (default random)")
    p.add_argument("--inplane-spacing", type=float, nargs=2, metavar=("MIN", "MAX"), default=(0.3, 1.0),
                   help="in-plane spacing range, mm (default 0.3 1.0)")
    p.add_argument("--slice-spacing", type=float, nargs=2, metavar=("MIN", "MAX"), default=(0.7, 2.5),
                   help="slice spacing range, mm (default 0.7 2.5)")
    p.add_argument("--noise", type=float, nargs=2, metavar=("MIN", "MAX"), default=(10.0, 60.0),
                   help="CT noise standard deviation range, HU (default 10 60)")
    for name, default in (("fracture-rate", 0.1), ("low-density-rate", 0.15), ("t13-rate", 0.03), ("l6-rate", 0.03),
                          ("four-lumbar-rate", 0.03), ("implant-rate", 0.0), ("scoliosis-rate", 0.15)):
        p.add_argument(f"--{name}", type=float, default=default, help=f"probability per case (default {default})")
    for name, what in (("cervical-rib-rate", "a rib on C7 (patients: 0.5-1 %%)"),
                       ("lumbar-rib-rate", "a rib on L1 (patients: about 1.3 %%)"),
                       ("short-rib-rate", "a short last rib, 12-38 mm (patients: 7-11 %%)")):
        p.add_argument(f"--{name}", type=float, default=0.0, help=f"probability per case of {what}; default 0")
    p.add_argument("--max-voxels", type=_whole_number, default=25_000_000,
                   help="coarsen spacing above this (default 25e6; 2e6 or 2000000)")
    p.add_argument("--no-random-orientation", action="store_true", help="store every image as LPS")
    p.add_argument("--stats", action="store_true", help="print per-vertebra statistics of each case")
    p.set_defaults(func=run)


def config_from(args: argparse.Namespace) -> PhantomConfig:
    """The generator settings from parsed arguments.

    Raises:
        InputError: an out-of-range option (the message names it).
    """
    def pair(value) -> Tuple[float, float]:
        return float(value[0]), float(value[1])

    try:
        return PhantomConfig(modality=args.modality, fov=args.fov, inplane_spacing_mm=pair(args.inplane_spacing),
                             slice_spacing_mm=pair(args.slice_spacing), fracture_rate=args.fracture_rate,
                             low_density_rate=args.low_density_rate, t13_rate=args.t13_rate, l6_rate=args.l6_rate,
                             four_lumbar_rate=args.four_lumbar_rate, cervical_rib_rate=args.cervical_rib_rate,
                             lumbar_rib_rate=args.lumbar_rib_rate, short_rib_rate=args.short_rib_rate,
                             implant_rate=args.implant_rate,
                             scoliosis_rate=args.scoliosis_rate, noise=pair(args.noise),
                             random_orientation=not args.no_random_orientation, max_voxels=args.max_voxels)
    except ValueError as exc:
        option = str(exc).split(" ", 1)[0].replace("_mm", "").replace("_", "-")
        raise InputError(f"--{option}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    if args.seed < 0:
        raise InputError(f"--seed: must be non-negative, got {args.seed}")
    started = time.time()

    def progress(done: int, total: int) -> None:
        logger.info("case %d/%d written (%.1f s)", done, total, time.time() - started)

    written = generate_dataset(args.out, args.count, args.seed, config, progress)
    for files in written:
        if args.stats:
            image = read_image(files.image)
            labels = read_label_map(files.labels, reference=image)
            sys.stdout.write(f"{files.case_id} ({files.modality.upper()})\n")
            sys.stdout.write(format_stats(vertebra_stats(image, labels)) + "\n")
    logger.info("%d case(s) in %s", len(written), args.out)
    return 0

"""``vertebra-traversal combine --model MAIN (--start START | --rescue RESCUE | --extract NAME | --blend OTHER
--share S) --out NEW.pt``.

Writes a model file that holds two networks (:mod:`vertebra_traversal.start_network`): MAIN answers every
patch whose instance memory holds a voxel and gives every patch its label value and completeness; START
segments the patches that the traversal sees with an empty memory (the search, and a scan's first
vertebra; paper §3.3). The new file keeps MAIN's metadata (label reading, completeness rule) but for a
fitted label confidence, which it drops (the fit saw runs without START), and records START in
``start_network``. Train a start network from MAIN with every vertebra patch drawn with an empty
memory:

    vertebra-traversal train --data train/ --out runs/start --init main.pt --start-fraction 1
    vertebra-traversal combine --model main.pt --start runs/start/model.pt --out main-start.pt

``--rescue RESCUE`` adds a third network to a model whose start network runs always: a start network
for a second traversal of the scans in which the first one stalls (it finds nothing, or vertebrae in
less than half of the scan's height). ``--extract main|start|rescue`` writes that network of MAIN as a
model of one network, to train it further:

    vertebra-traversal combine --model mr --extract start --out mr-start.pt
    vertebra-traversal train --data neck/ --out runs/rescue --init mr-start.pt --start-fraction 1
    vertebra-traversal combine --model mr --rescue runs/rescue/model.pt --out mr-rescue.pt

Fine-tuning the combined model (``train --init main-start.pt``) trains its main network and keeps the
other networks as they are.

``--blend OTHER --share S`` mixes MAIN with a copy of it fine-tuned elsewhere, weight by weight
(:mod:`vertebra_traversal.weight_blend`): ``(1 - S) * MAIN + S * OTHER``, to keep part of what MAIN knew:

    vertebra-traversal tune-masks --model ct --data train/ --validation aside/ --out ct-masks.pt
    vertebra-traversal combine --model ct --blend ct-masks.pt --share 0.5 --out ct-half.pt

Prints the new file's path.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..imageio import InputError
from ..metadata import RECORDED_START_USES
from ..models import resolve_model
from ..start_network import attach_rescue, attach_start, extract_network
from ..weight_blend import blend_models


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("combine", help="add a start or rescue network to a model, take one out, or "
                                                   "mix two models",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the main model: 'ct' or 'mr' (bundled) or a checkpoint path")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--start", help="the start model (a checkpoint path)")
    what.add_argument("--rescue", help="the rescue model (a checkpoint path), for a model whose start network "
                                       "runs always")
    what.add_argument("--extract", choices=("main", "start", "rescue"), help="write this network of MODEL alone")
    what.add_argument("--blend", metavar="OTHER",
                      help="a model trained from MODEL (a checkpoint path) to mix with it weight by weight")
    parser.add_argument("--share", type=float, metavar="S",
                        help="with --blend: the share of its weights in the mix, 0 to 1")
    parser.add_argument("--out", required=True, type=Path, help="the model file to write (new)")
    parser.add_argument("--use", choices=RECORDED_START_USES,
                        help="with --start: when segment runs the start network: always, or fallback: only in a "
                             "scan where the main network alone finds no vertebra, or vertebrae that span less "
                             "than half of the scan's height (segment --start-network overrides). Default: "
                             "the use of the start network MAIN holds, else always")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.use is not None and args.start is None:
        raise InputError("--use: only with --start")
    if (args.share is None) != (args.blend is None):
        raise InputError("--blend and --share go together")
    model = resolve_model(args.model)
    if args.start is not None:
        path = attach_start(model, resolve_model(args.start), args.out, use=args.use)
    elif args.blend is not None:
        path = blend_models(model, resolve_model(args.blend), args.share, args.out)
    elif args.rescue is not None:
        path = attach_rescue(model, resolve_model(args.rescue), args.out)
    else:
        path = extract_network(model, args.extract, args.out)
    sys.stdout.write(f"{path}\n")
    return 0

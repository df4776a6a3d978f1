"""``vertebra-traversal combine --model MAIN --start START --out NEW.pt``.

Writes a model file that holds two networks (:mod:`vertebra_traversal.start_network`): MAIN answers every
patch whose instance memory holds a voxel and gives every patch its label value and completeness; START
segments the patches that the traversal sees with an empty memory (the search, and a scan's first
vertebra; paper §3.3). The new file keeps MAIN's metadata (label reading, completeness rule) but for a
fitted label confidence, which it drops (the fit saw runs without START), and records START in
``start_network``. Train a start network from MAIN with every vertebra patch drawn with an empty
memory:

    vertebra-traversal train --data train/ --out runs/start --init main.pt --start-fraction 1
    vertebra-traversal combine --model main.pt --start runs/start/model.pt --out main-start.pt

Fine-tuning the combined model (``train --init main-start.pt``) trains its main network and keeps the
start network as it is. Prints the new file's path.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..metadata import RECORDED_START_USES
from ..models import resolve_model
from ..start_network import attach_start


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("combine", help="add a start network for empty-memory patches to a model",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the main model: 'ct' or 'mr' (bundled) or a checkpoint path")
    parser.add_argument("--start", required=True, help="the start model (a checkpoint path)")
    parser.add_argument("--out", required=True, type=Path, help="the combined model file to write (new)")
    parser.add_argument("--use", choices=RECORDED_START_USES,
                        help="when segment runs the start network: always, or fallback: only in a scan where the "
                             "main network alone finds no vertebra, or vertebrae that span less than half of the "
                             "scan's height (segment --start-network overrides). Default: "
                             "the use of the start network MAIN holds, else always")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = attach_start(resolve_model(args.model), resolve_model(args.start), args.out, use=args.use)
    sys.stdout.write(f"{path}\n")
    return 0

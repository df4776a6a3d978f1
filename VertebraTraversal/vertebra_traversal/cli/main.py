"""Entry point ``vertebra-traversal``: one subcommand per module of this package (``tune_labels.py``:
``tune-labels``).

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func=run`` with ``run(args) -> int``. Bad input (:class:`~vertebra_traversal.imageio.InputError`)
becomes one line on stderr and exit code 2; nothing else is caught here.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from .. import __version__
from ..imageio import InputError

COMMANDS = ("phantom", "evaluate", "segment", "train", "tune_labels", "tune_masks", "calibrate", "combine", "export",
            "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vertebra-traversal",
                                     description="Iterative FCN vertebra segmentation and identification "
                                                 "(Lessmann et al., Medical Image Analysis 2019).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        sys.stderr.write(f"vertebra-traversal {args.command}: error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())

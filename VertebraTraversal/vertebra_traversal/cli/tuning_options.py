"""What ``tune-labels`` and ``tune-masks`` share: the model, the training and aside cases, the new file, the
processes; and the checks made before either segments anything."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from ..checkpoint import LoadedModel, load_model
from ..imageio import InputError
from ..models import resolve_model
from ..training.data import TrainingCase, check_disjoint, describe_case, find_cases


def add_inputs(parser: argparse.ArgumentParser, chooses: str) -> None:
    """``--model``, ``--data``, ``--validation`` (aside cases that choose ``chooses``) and ``--out``."""
    parser.add_argument("--model", required=True, help="'ct' or 'mr' (bundled) or a checkpoint path")
    parser.add_argument("--data", required=True, nargs="+", type=Path, metavar="DIR", help="training cases")
    parser.add_argument("--validation", required=True, nargs="+", type=Path, metavar="DIR",
                        help=f"other training cases, kept aside to choose the {chooses}")
    parser.add_argument("--out", required=True, type=Path, help="the model file to write (new)")


def add_processes(parser: argparse.ArgumentParser) -> None:
    """``--workers`` and ``--threads``."""
    parser.add_argument("--workers", type=int, default=0,
                        help="processes that segment the cases, one torch thread each (default 0: this one)")
    parser.add_argument("--threads", type=int, help="torch CPU threads of this process (default: torch's choice)")


def settings_error(exc: ValueError, options: Optional[Dict[str, str]] = None) -> InputError:
    """A settings dataclass's "field must be ..." as "--field must be ..." (``options``: field -> option where
    the option is named otherwise)."""
    name, rest = str(exc).split(" ", 1)
    return InputError(f"{(options or {}).get(name, '--' + name.replace('_', '-'))} {rest}")


def open_inputs(args: argparse.Namespace) -> Tuple[Path, LoadedModel, List[TrainingCase], List[TrainingCase]]:
    """(model path, model, training cases, aside cases), after refusing an existing ``--out`` and aside cases
    that are also training cases; sets ``--threads``."""
    if args.out.exists():
        raise InputError(f"{args.out}: already exists; choose a new file for the tuned model")
    path = resolve_model(args.model)
    model = load_model(path, device="cpu")
    training = find_cases(args.data, model.metadata.modality.lower())
    aside = find_cases(args.validation, model.metadata.modality.lower())
    check_disjoint([describe_case(c) for c in training], [describe_case(c) for c in aside])
    if args.threads:
        torch.set_num_threads(args.threads)
    return path, model, training, aside

"""``vertebra-traversal train``: train or fine-tune a model (paper §3.6).

Re-running the same command resumes from ``RUN_DIR/checkpoint.pt``; a run folder holding another run
is refused. Ctrl-C once writes a checkpoint at the end of the current iteration and exits (130).
Progress (one line, loss terms and ETA) goes to stderr; the model path is printed on stdout.
"""
from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

from ..imageio import InputError
from ..models import resolve_model
from ..postprocess import COMPLETENESS_RULES
from ..training.config import LR_SCHEDULES, MODALITIES, PRESETS, TrainingConfig, preset

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train", help="train or fine-tune a model on labelled cases (paper §3.6)",
        description="Train the iterative FCN on dataset folders (project or VerSe layout). Re-running the "
                    "same command resumes an interrupted run.")
    parser.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR", help="dataset root(s)")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR",
                        help="run folder (new or empty; the same folder resumes the same run)")
    parser.add_argument("--preset", choices=PRESETS, default="compact",
                        help="; ".join(_describe(name) for name in PRESETS) + ". Default compact")
    parser.add_argument("--modality", choices=MODALITIES, default="ct")
    parser.add_argument("--iterations", type=_positive, help="planned iterations (default: the preset's)")
    parser.add_argument("--init", metavar="MODEL",
                        help="fine-tune this model (same modality): 'ct' or 'mr' (bundled) or a checkpoint path")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--validation", type=Path, nargs="+", metavar="DIR", help="held-out dataset root(s)")
    parser.add_argument("--workers", type=_non_negative, help="patch-sampling processes (default 2)")
    parser.add_argument("--validate-every", type=_positive, metavar="N", help="iterations between validations")
    parser.add_argument("--checkpoint-every", type=_positive, metavar="N", help="iterations between checkpoints")
    parser.add_argument("--threads", type=_non_negative, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=_non_negative,
                        help="seeds the weights and every patch draw (default 0); use another one when "
                             "fine-tuning a model that was trained with the same data and seed")
    parser.add_argument("--lambda-min", type=_unit_interval, metavar="L",
                        help="false-positive weight λ at the start of the schedule (default 0.1, paper "
                             "§3.6); 1 keeps false positives fully weighted throughout, e.g. when "
                             "fine-tuning a model that already finds the bone")
    parser.add_argument("--learning-rate", type=_positive_float, metavar="LR",
                        help="Adam learning rate (default 1e-3, paper §3.6); a smaller one, e.g. 1e-4, "
                             "when fine-tuning with --init")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, dest="learning_rate_schedule",
                        help="constant (default, paper §3.6) or cosine: the learning rate falls from "
                             "--learning-rate to 0 along half a cosine over the planned iterations, so the "
                             "last weights are not caught in mid-swing")
    parser.add_argument("--centred-fraction", type=_fraction, metavar="F",
                        help="share of the vertebra patches centred on the vertebra (within 5 mm) instead of "
                             "anywhere in its box, as the traversal sees it when it converges (default 0, the "
                             "paper's sampling, §3.6)")
    parser.add_argument("--start-fraction", type=_fraction, metavar="F",
                        help="share of the vertebra patches drawn with an empty instance memory, as the "
                             "traversal's search sees a scan before it has found a vertebra (default 0, the "
                             "paper's sampling, §3.6); teaches the network to start on any part of the spine")
    parser.add_argument("--partial-memory", type=_fraction, metavar="P",
                        help="chance of each vertebra in a training patch's instance memory being shown only "
                             "in part (a cap of up to half of it left out), as the traversal's own imperfect "
                             "masks sit in the memory at inference (default 0, the paper's reference memory, "
                             "§3.6)")
    parser.add_argument("--overreach-memory", type=_fraction, metavar="Q",
                        help="chance of a training patch's instance memory also holding a cap (up to half) of "
                             "the vertebra to segment, whose rest is then the target, as the traversal's own "
                             "masks may take in part of the next vertebra at inference (default 0, the paper's "
                             "reference memory, §3.6)")
    parser.add_argument("--end-fraction", type=_fraction, metavar="F",
                        help="share of all patches drawn beyond the last vertebra the scan shows in traversal "
                             "order, with every vertebra in the instance memory, so that the answer is 'nothing "
                             "left': where the traversal must stop (default 0, the paper's sampling, §3.6)")
    parser.add_argument("--filters", type=_positive, metavar="N",
                        help="feature maps in every layer of the network (default: the preset's); the run "
                             "becomes a custom one. Not with --init, whose network is fixed")
    parser.add_argument("--spacing", type=_positive_float, metavar="MM",
                        help="isotropic model-grid spacing in mm (default: the preset's); the patch keeps about "
                             "the preset's field of view unless --patch is given. Not with --init")
    parser.add_argument("--patch", type=_positive, metavar="N",
                        help="edge of the cubic patch in voxels (default: the preset's, or the preset's field "
                             "of view at --spacing); a multiple of 2**(depth + head_depth). Not with --init")
    parser.add_argument("--label-path-only", action="store_true",
                        help="train only the label path of the --init model, with the label term; the "
                             "segmentation and completeness outputs stay exactly as they were")
    parser.add_argument("--batch-size", type=_positive, metavar="N", help="patches per iteration (default 1)")
    parser.add_argument("--beta1", type=_beta, metavar="B", help="Adam β₁ (default 0.99, paper §3.6)")
    parser.add_argument("--completeness-rule", choices=COMPLETENESS_RULES,
                        help="how the model calls a vertebra complete when it segments (stored in its metadata; "
                             "see segment --completeness-rule). Default: the --init model's, else network")
    parser.set_defaults(func=run)


def _describe(name: str) -> str:
    config = preset(name, "ct")
    return (f"{name}: {config.spacing_mm:g} mm, {config.patch_size}^3, {config.network.filters} filters, "
            f"{config.iterations} iterations")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0.0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text}")
    return value


def _beta(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def _config(args: argparse.Namespace) -> TrainingConfig:
    config = preset(args.preset, args.modality)
    names = ("iterations", "workers", "validate_every", "checkpoint_every", "threads", "seed", "learning_rate",
             "completeness_rule", "centred_fraction", "start_fraction", "partial_memory", "overreach_memory",
             "end_fraction", "batch_size", "beta1", "learning_rate_schedule")
    changes = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.label_path_only:
        changes["trained_part"] = "label-path"
    if args.lambda_min is not None:
        changes["loss"] = replace(config.loss, lambda_min=args.lambda_min)
    return _custom_network(config.replace(**changes), args)


def _custom_network(config: TrainingConfig, args: argparse.Namespace) -> TrainingConfig:
    """Applies ``--filters``, ``--spacing`` and ``--patch``; the run's preset becomes ``custom``.

    Without ``--patch``, the patch is the multiple of ``2**(depth + head_depth)`` voxels closest to the
    preset's field of view (patch × spacing, mm) at the new spacing.
    """
    given = [f"--{name}" for name in ("filters", "spacing", "patch") if getattr(args, name, None) is not None]
    if not given:
        return config
    if args.init is not None:
        raise InputError(f"{', '.join(given)}: a fine-tuned model keeps the network and grid of --init "
                         f"{args.init}; leave these options out")
    network, spacing = config.network, args.spacing or config.spacing_mm
    divisor = 2 ** (network.depth + network.head_depth)
    patch = args.patch or divisor * max(1, math.floor(config.patch_size * config.spacing_mm / spacing / divisor + 0.5))
    try:
        network = replace(network, filters=args.filters or network.filters, patch_size=(patch,) * 3)
        config = config.replace(preset="custom", network=network, spacing_mm=spacing)
    except ValueError as exc:
        raise InputError(f"{', '.join(given)}: {exc}") from None
    logger.info("custom network: %d filters, %d^3 patches at %g mm (%g mm field of view)", network.filters,
                patch, spacing, patch * spacing)
    return config


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLine:
    """Renders :class:`~vertebra_traversal.training.trainer.TrainingProgress` on one terminal line
    (carriage return); when the stream is not a terminal, one line every ``every`` seconds."""

    def __init__(self, stream: Optional[TextIO] = None, every: float = 30.0) -> None:
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.every = every
        stream = self.stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last = -math.inf
        self.width = 0

    def __call__(self, report: Any) -> None:
        if report.phase != "train":
            self._line(f"{report.phase}: {report.message}", final=True)
            return
        now = time.monotonic()
        done = report.iteration == report.total
        if not done and now - self.last < (0.2 if self.tty else self.every):
            return
        self.last = now
        t = report.terms
        text = (f"train {report.iteration}/{report.total} {100.0 * report.iteration / report.total:5.1f}% "
                f"loss {t.get('loss', math.nan):.4g} (seg {t.get('seg', math.nan):.3g} "
                f"label {t.get('label', math.nan):.3g} compl {t.get('completeness', math.nan):.3g}) "
                f"λ {report.fp_lambda:.3f} elapsed {_duration(report.seconds)} ETA {_duration(report.eta_seconds)}")
        self._line(text, final=done)

    def _line(self, text: str, final: bool) -> None:
        if self.tty:
            pad = max(0, self.width - len(text))
            self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
            self.width = 0 if final else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _stop_flag() -> "tuple[Callable[[], bool], Callable[[], None]]":
    """A SIGINT handler: the first Ctrl-C asks the trainer to stop; a second one interrupts."""
    state = {"stop": False}
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Optional[Any]) -> None:
        if state["stop"]:
            raise KeyboardInterrupt
        state["stop"] = True
        sys.stderr.write("\nstopping after this iteration (Ctrl-C again to abort without a checkpoint)\n")

    signal.signal(signal.SIGINT, handler)
    return (lambda: state["stop"]), (lambda: signal.signal(signal.SIGINT, previous))


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import resolve_device
    from ..training.trainer import TrainingInterrupted, train

    config = _config(args)
    if config.preset == "paper" and resolve_device(args.device).type == "cpu":
        logger.warning("the paper preset (84 filters, 128^3 patches) is impractically slow on a CPU; "
                       "consider --preset compact")
    init = resolve_model(args.init) if args.init is not None else None
    should_stop, restore = _stop_flag()
    try:
        model = train(args.data, args.out, config, init=init, device=args.device,
                      validation_dirs=args.validation, progress=ProgressLine(), should_stop=should_stop)
    except TrainingInterrupted as stop:
        sys.stderr.write(f"vertebra-traversal train: stopped at iteration {stop.iteration}; run the same "
                         f"command again to resume from {stop.checkpoint}\n")
        return 130
    finally:
        restore()
    sys.stdout.write(f"{model}\n")
    return 0

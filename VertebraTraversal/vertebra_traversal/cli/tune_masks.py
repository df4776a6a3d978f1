"""``vertebra-traversal tune-masks --model MODEL --data DIR... --validation DIR... --out NEW.pt``.

Trains the model's segmentation path on the patches its own traversal visits (:mod:`vertebra_traversal.
training.mask_tuning`): the main network traverses every ``--data`` case with the model's settings (``--runs
main``; ``pipeline``: every run the pipeline makes, the fallback's too; ``--crops N``: also N random crops of
each case along z), each patch evaluated is kept with its image, its memory (the network's own masks) and the
mask the traversal should have been given there, and the decoders alone are trained on them for
``--iterations`` batches (``--sampler-share``: that share of each batch is drawn instead as the network was
trained, the reference vertebrae in memory, from the same cases). The model as it is and the model after each
of ``--checkpoints`` segment the ``--validation`` cases, each checkpoint by itself and mixed back into the model
at each of ``--shares`` (``(1 - s) * model + s * checkpoint``, weight by weight, as ``combine --blend`` mixes);
the candidate written is the one of highest Dice among those with a higher Dice than the model as it is and an
identification rate not below it (``--identification count``: as many vertebrae identified; ``none``: Dice
alone, where ``tune-labels`` trains the label path again on the new model's runs afterwards). Where none
qualifies, nothing is written (exit 1). The label and completeness paths and the encoder they read are not
trained, so the label reading and the start and rescue networks are kept; a fitted label confidence, which
describes the old model's runs, is dropped with a warning, as every writer of the traversal drops it: fit it
again (``calibrate --confidence``) on runs of the new model.

    vertebra-traversal tune-masks --model ct --data ct-train/ --validation ct-aside/ --out ct-masks.pt --workers 2

Use training cases for both, never the cases you judge the new model on. Prints a JSON summary.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np

from ..checkpoint import LoadedModel, save_torchscript
from ..evaluate import GroupSummary
from ..start_network import named_networks, with_networks
from ..training.config import LR_SCHEDULES
from ..training.data import TrainingCase
from ..training.candidates import IDENTIFICATION, candidate_name
from ..training.mask_tuning import RUNS, MaskTuning, MaskTuningResult, tune_masks, tuned_metadata
from ..training.validation import json_ready
from .tuning_options import add_inputs, add_processes, open_inputs, settings_error

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tune-masks", help="train the segmentation path on the traversal's own patches",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_inputs(parser, "checkpoint")
    defaults = MaskTuning()
    parser.add_argument("--iterations", type=int, default=defaults.iterations, help=f"default {defaults.iterations}")
    parser.add_argument("--checkpoints", type=int, nargs="+", default=list(defaults.checkpoints), metavar="N",
                        help="iteration counts whose models are scored (default "
                             f"{' '.join(map(str, defaults.checkpoints))})")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help=f"Adam learning rate (default {defaults.learning_rate:g})")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=defaults.learning_rate_schedule,
                        dest="learning_rate_schedule", help=f"default {defaults.learning_rate_schedule}")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"default {defaults.batch_size}")
    parser.add_argument("--done-share", type=float, default=defaults.done_share,
                        help="share of a vertebra's voxels in a patch that must be in the memory for it to count "
                             f"as segmented there (default {defaults.done_share:g})")
    parser.add_argument("--search-share", type=float, default=defaults.search_share,
                        help=f"share of the sliding search's patches kept (default {defaults.search_share:g})")
    parser.add_argument("--runs", choices=RUNS, default=defaults.runs,
                        help="record the main network's own run (main) or every run the pipeline makes, the "
                             f"fallback's too where the main network stalls (pipeline; default {defaults.runs})")
    parser.add_argument("--crops", type=int, default=defaults.crops,
                        help="random crops along z recorded per case besides the whole scan, 20-40 %% of its length and "
                             f"at least 150 mm, as the paper's z-crop experiment (default {defaults.crops})")
    parser.add_argument("--sampler-share", type=float, default=defaults.sampler_share,
                        help="share of each batch drawn by the training's sampler (paper section 3.6: the reference "
                             "vertebrae in memory) from the same cases instead of the recorded patches "
                             f"(default {defaults.sampler_share:g})")
    parser.add_argument("--shares", type=float, nargs="+", default=list(defaults.shares), metavar="S",
                        help="each checkpoint is a candidate mixed into the model at each share, (1 - S) * model + "
                             "S * checkpoint weight by weight; 1: the checkpoint itself (default "
                             f"{' '.join(f'{s:g}' for s in defaults.shares)})")
    parser.add_argument("--identification", choices=IDENTIFICATION, default=defaults.identification,
                        help="a candidate must identify at least the model's share of the vertebrae it matches "
                             "(rate) or at least as many vertebrae (count: for a model that finds vertebrae whose "
                             "level it cannot say) or is not compared (none: Dice alone, for a model whose label "
                             f"path tune-labels trains again afterwards; default {defaults.identification})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seeds the kept patches, crops and batches")
    add_processes(parser)
    parser.set_defaults(func=run)


def _row(row: GroupSummary) -> dict:
    """The held-aside row as strict JSON (None where nothing was measurable)."""
    return json_ready({"dice": row.dice_mean, "assd_mm": row.assd_mean, "identification": row.identification_accuracy,
                       "vertebrae": row.vertebrae, "missed": row.missed, "false_detections": row.false_detections})


def _scores(result: MaskTuningResult) -> dict:
    """Each scored candidate's held-aside row (:func:`_row`) by its name (``"0"`` the model as it is, ``"50"``
    checkpoint 50, ``"50@0.25"`` its mix at 0.25), in order."""
    return {candidate_name(k): _row(v) for k, v in sorted(result.scores.items())}


def _chosen(result: MaskTuningResult) -> dict:
    """The kept candidate as ``{"chosen": iteration count, "share": share}`` (both None where none was kept)."""
    iteration, share = result.chosen or (None, None)
    return {"chosen": iteration, "share": share}


def run(args: argparse.Namespace) -> int:
    try:
        tuning = MaskTuning(iterations=args.iterations, checkpoints=tuple(args.checkpoints),
                            learning_rate=args.learning_rate, learning_rate_schedule=args.learning_rate_schedule,
                            batch_size=args.batch_size, done_share=args.done_share, search_share=args.search_share,
                            runs=args.runs, crops=args.crops, sampler_share=args.sampler_share, seed=args.seed,
                            shares=tuple(args.shares), identification=args.identification)
    except ValueError as exc:  # "done_share must be ..." -> "--done-share must be ..."
        raise settings_error(exc, {"learning_rate_schedule": "--lr-schedule"}) from None
    path, model, training, aside = open_inputs(args)
    start = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=".tune-masks-") as work:
        result = tune_masks(path, training, aside, Path(work), tuning, args.workers, logger.info)
    summary = {"model": None, **_chosen(result), "patches": result.patches, "scores": _scores(result)}
    if result.chosen is None:
        sys.stderr.write(f"vertebra-traversal tune-masks: no candidate beat {path} as it is on the validation "
                         "cases; nothing written\n")
        sys.stdout.write(json.dumps(summary) + "\n")
        return 1
    summary["model"] = str(write_tuned(args.out, path, model, result, tuning, (training, aside),
                                       time.perf_counter() - start))
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def write_tuned(out: Path, path: Path, model: LoadedModel, result: MaskTuningResult, tuning: MaskTuning,
                cases: Tuple[Sequence[TrainingCase], Sequence[TrainingCase]], seconds: float) -> Path:
    """Write ``model`` (read from ``path``) with its main network replaced by ``result.network`` to ``out``
    (TorchScript), its start and rescue networks kept, and the run recorded under ``training.mask_tuning``:
    the settings, the kept candidate (``chosen``, the checkpoint, and ``share``), each candidate's held-aside
    row, the first and last 25 batches' mean loss, the seconds and the (training, held-aside) case ids. A
    fitted label confidence is dropped with a warning (:func:`~vertebra_traversal.training.mask_tuning.
    tuned_metadata`)."""
    if result.chosen is None:
        raise ValueError("no candidate was kept; nothing to write")
    training, aside = cases
    record = {"init": str(path), "tuning": dataclasses.asdict(tuning), **_chosen(result),
              "scores": _scores(result), "patches": result.patches,
              "first_loss": float(np.mean(result.losses[:25])), "last_loss": float(np.mean(result.losses[-25:])),
              "seconds": round(seconds), "data": [c.case_id for c in training],
              "validation": [c.case_id for c in aside]}
    if model.metadata.label_confidence:
        logger.warning("the label confidence of %s describes its own runs and was not kept: fit it again with "
                       "calibrate --confidence on runs of %s", path, out)
    children = named_networks(model)
    module = with_networks(result.network, children.get("start"), children.get("rescue"))
    return save_torchscript(module, tuned_metadata(model.metadata, record), out)

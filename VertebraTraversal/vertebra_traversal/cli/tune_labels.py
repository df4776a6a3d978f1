"""``vertebra-traversal tune-labels --model MODEL --data DIR... --validation DIR... --out NEW.pt``.

Trains the model's label path where the traversal reads its labels (:mod:`vertebra_traversal.training.
label_tuning`): the model segments every ``--data`` and ``--validation`` case with its own settings, the
patch each vertebra's label was read from (and up to ``--approach`` steps before it) is paired with the
reference vertebra that vertebra is matched to, and the label path alone is trained on them for
``--epochs`` passes. The epoch that identifies the most completely visible vertebrae of the
``--validation`` cases is written; where none identifies more than the model as it is, nothing is
written (exit 1). ``--crops N`` records N random crops of every case along z as well (20-40 % of its length,
at least 150 mm, as the paper's z-crop experiment draws them), so that the label path also learns vertebrae
at the borders of fields of view that the scans themselves do not have. Masks and completeness stay as they
are. As after ``train --init``, a label reading fitted to the old label values (``calibrate`` with
``--pred``) and a fitted label confidence are dropped with a warning (a Gaussian reading stays): fit them
again with ``calibrate``.

    vertebra-traversal tune-labels --model ct --data ct-train/ --validation ct-aside/ --out ct-tuned.pt

Use training cases for both, never the cases you judge the new model on. Prints a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace

from ..checkpoint import save_torchscript
from ..imageio import InputError
from ..segment_config import SegmentConfig
from ..start_network import named_networks, with_networks
from ..training.config import LR_SCHEDULES
from .tuning_options import add_inputs, add_processes, open_inputs, settings_error
from ..training.label_tuning import LabelTuning, capture_cases, main_network, tune_label_path, tuned_metadata

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tune-labels", help="train the label path on the traversal's own patches",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_inputs(parser, "epoch")
    defaults = LabelTuning()
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"default {defaults.epochs}")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help=f"Adam learning rate (default {defaults.learning_rate:g})")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=defaults.learning_rate_schedule,
                        dest="learning_rate_schedule",
                        help="constant (default) or cosine: the rate falls from --learning-rate to 0 along half "
                             "a cosine over all epochs, so the last epochs move the label path little")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                        help=f"Adam weight decay (default {defaults.weight_decay:g})")
    parser.add_argument("--approach", type=int, default=defaults.approach,
                        help=f"steps before the label patch kept per vertebra (default {defaults.approach})")
    parser.add_argument("--crops", type=int, default=defaults.crops,
                        help="random crops along z recorded per case besides the whole scan, 20-40 %% of its length "
                             f"and at least 150 mm, as the paper's z-crop experiment (default {defaults.crops})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seeds the order of the patches and the crops")
    add_processes(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        tuning = LabelTuning(epochs=args.epochs, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
                             learning_rate_schedule=args.learning_rate_schedule, approach=args.approach,
                             crops=args.crops, seed=args.seed)
    except ValueError as exc:  # "learning_rate must be ..." -> "--learning-rate must be ..."
        raise settings_error(exc, {"learning_rate_schedule": "--lr-schedule"}) from None
    path, model, training, aside = open_inputs(args)
    meta, reading = tuned_metadata(path, model.metadata)  # the label reading the tuned model keeps
    train_scans = capture_cases(training, path, tuning, args.workers, logger.info)
    aside_scans = capture_cases(aside, path, tuning, args.workers, logger.info)
    net = main_network(model)
    try:
        best, history = tune_label_path(net, train_scans, aside_scans, SegmentConfig().labeling_for(meta), tuning,
                                        logger.info)
    except ValueError as exc:
        raise InputError(f"{', '.join(map(str, args.data))}: {exc}") from None
    summary = {"model": None, "best_epoch": best, "history": history}
    if best is None:
        sys.stderr.write(f"vertebra-traversal tune-labels: no epoch identified more than {path} as it is "
                         f"({history[0]['identified']} of {history[0]['counted']}); nothing written\n")
        sys.stdout.write(json.dumps(summary) + "\n")
        return 1
    record = {"init": str(path), "init_label_reading": reading, "tuning": vars(tuning), "best_epoch": best,
              "history": history, "data": [c.case_id for c in training], "validation": [c.case_id for c in aside]}
    children = named_networks(model)
    module = with_networks(net, children.get("start"), children.get("rescue"))
    meta = replace(meta, training=dict(meta.training, label_tuning=record))
    summary["model"] = str(save_torchscript(module, meta, args.out))
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0

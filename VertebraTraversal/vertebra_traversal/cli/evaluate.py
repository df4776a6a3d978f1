"""``vertebra-traversal evaluate --pred DIR --ref DIR [--out DIR] [--overwrite] [--allow-missing]``.

Scores predictions against a reference dataset with the metrics of the paper (§4.2): per vertebra
Dice and average symmetric surface distance against the predicted instance with the largest overlap,
identification accuracy and linearly weighted κ, completeness accuracy and false positives /
negatives per scan. Prints a table shaped like the paper's Table 1 (one row per dataset group) for
completely visible vertebrae and for all vertebrae, then per spine region (cervical, thoracic, lumbar)
for completely visible vertebrae; with --out also writes per_vertebra.csv and
summary.json.

--pred is either a dataset folder with the same case ids or a folder of `segment` outputs
(<case>_seg-vert_msk.nii.gz with optional <case>_report.json).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..evaluate import (EvaluationOptions, check_output_dir, evaluate_folders, format_region_table, format_table,
                        write_results)

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="score predictions against a reference dataset (paper §4.2)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", required=True, type=Path, help="prediction folder (dataset or segment outputs)")
    parser.add_argument("--ref", required=True, type=Path, help="reference dataset folder")
    parser.add_argument("--out", type=Path, help="folder for per_vertebra.csv and summary.json")
    parser.add_argument("--overwrite", action="store_true", help="replace result files already in --out")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score reference cases without prediction as all vertebrae missed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_output_dir(args.out, args.overwrite)  # fail before the work, not after
    result = evaluate_folders(args.pred, args.ref, EvaluationOptions(allow_missing=args.allow_missing),
                              progress=lambda fraction, message: logger.info("%3.0f%% %s", 100 * fraction, message))
    sys.stdout.write("\n".join([format_table(result, complete_only=True), format_table(result, complete_only=False),
                                format_region_table(result, complete_only=True)]))
    if args.out is not None:
        for path in write_results(result, args.out, overwrite=args.overwrite):
            sys.stderr.write(f"wrote {path}\n")
    return 0

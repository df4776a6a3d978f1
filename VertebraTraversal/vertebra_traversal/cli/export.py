"""``vertebra-traversal export --image IMG --segmentation SEG --dataset DIR --case-id ID [--modality ct|mr]``.

Writes a corrected segmentation (a Slicer ``.seg.nrrd`` or a label map with VerSe ids) and its image
as a new case of a dataset folder, ready for ``vertebra-traversal train --init`` (fine-tuning).
Segment names give the vertebra ("L1"; "L1 (incomplete)" marks a vertebra that is not completely
visible). An existing case is never overwritten.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..anatomy import MODALITIES
from ..export import ExportConfig, export_case


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="write a (corrected) segmentation + image as a training case",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, type=Path, help="the image the segmentation belongs to")
    parser.add_argument("--segmentation", required=True, type=Path,
                        help="Slicer .seg.nrrd or label map (.nii.gz, VerSe ids) on the image grid")
    parser.add_argument("--dataset", required=True, type=Path, help="dataset root folder (created when missing)")
    parser.add_argument("--case-id", required=True, help="id of the new case (letters, digits, '.', '_', '-')")
    parser.add_argument("--modality", default="ct", choices=MODALITIES)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = ExportConfig(image=args.image, segmentation=args.segmentation, dataset=args.dataset,
                          case_id=args.case_id, modality=args.modality)
    files = export_case(config)
    sys.stdout.write(f"{files.image}\n{files.labels}\n{files.sidecar}\n")
    return 0

"""Two models on the same scans: what changed on the vertebrae both find, and what only one finds.

    python benchmarks/paired_comparison.py --base eval-a/per_vertebra.csv --candidate eval-b/per_vertebra.csv

Both files are ``evaluate --out`` results for the same reference dataset. Only completely visible
reference vertebrae count (the rows of the paper's Fig. 5). A model that finds more vertebrae adds them
to its mean ASSD and identification, which are taken over the vertebrae it finds; so a candidate that
finds hard vertebrae (a neck, a scan's edge) can lose on both while segmenting and labelling the rest
exactly as before. This script separates the two. Per region of the reference vertebra it prints, for
the vertebrae *both* find, each model's mean Dice, ASSD (mm) and identification, and for those only
one finds, their count and the finder's means.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Dict, List, Tuple

from vertebra_traversal import anatomy

Key = Tuple[str, int]


def found_rows(path: Path) -> Dict[Key, dict]:
    """Complete reference vertebrae of a ``per_vertebra.csv``: (case, label) -> row, with ``found``."""
    rows = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["ref_complete"] != "False":     # as evaluate: unknown completeness counts as complete
                rows[(row["case"], int(row["label"]))] = dict(row, found=bool(row["pred_label"]))
    return rows


def means(rows: List[dict]) -> str:
    """'n, Dice %, ASSD mm, identification %' of matched rows."""
    if not rows:
        return "0"
    dice = 100 * sum(float(r["dice"]) for r in rows) / len(rows)
    assd = sum(float(r["assd_mm"]) for r in rows) / len(rows)
    ident = 100 * sum(r["identified"] == "True" for r in rows) / len(rows)
    return f"{len(rows)}, Dice {dice:.1f} %, ASSD {assd:.2f} mm, Id {ident:.1f} %"


def compare(base: Dict[Key, dict], candidate: Dict[Key, dict]) -> List[str]:
    """Report lines, one block per region and one for all."""
    keys = sorted(set(base) & set(candidate))
    if len(keys) != len(base) or len(keys) != len(candidate):
        raise SystemExit("the two files hold different reference vertebrae: are they of the same dataset?")
    lines = []
    for region in ("all", "cervical", "thoracic", "lumbar"):
        here = [k for k in keys if region == "all" or anatomy.vertebra(k[1]).region == region]
        both = [k for k in here if base[k]["found"] and candidate[k]["found"]]
        only_base = [base[k] for k in here if base[k]["found"] and not candidate[k]["found"]]
        only_candidate = [candidate[k] for k in here if candidate[k]["found"] and not base[k]["found"]]
        lines += [f"{region} ({len(here)} complete vertebrae)",
                  f"  found by both, base:      {means([base[k] for k in both])}",
                  f"  found by both, candidate: {means([candidate[k] for k in both])}",
                  f"  found by base only:       {means(only_base)}",
                  f"  found by candidate only:  {means(only_candidate)}"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="per_vertebra.csv of the reference model")
    parser.add_argument("--candidate", type=Path, required=True, help="per_vertebra.csv of the candidate")
    args = parser.parse_args()
    print("\n".join(compare(found_rows(args.base), found_rows(args.candidate))))


if __name__ == "__main__":
    main()

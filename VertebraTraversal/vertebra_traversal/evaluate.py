"""Evaluation of prediction folders against a reference dataset (file and folder layers, paper §4.2).

Reference: a dataset root (:mod:`vertebra_traversal.dataset`); completeness comes from each case's
sidecar (VerSe cases without one count every labelled vertebra as complete). Prediction: either

* a dataset root with the same case ids (``derivatives/<id>/<id>_seg-vert_msk.nii.gz``, completeness
  from its sidecar when present), or
* a folder of ``segment`` outputs, ``<id>_seg-vert_msk.nii.gz`` (or ``<id>_<modality>_seg-vert_msk.nii.gz``,
  the name ``segment`` gives when run on ``rawdata/<id>/<id>_ct.nii.gz``) with an optional
  ``..._report.json`` whose ``vertebrae`` entries give ``label`` and ``complete``.

Scores are pooled per dataset group (``source["group"]`` of the sidecar, else ``"all"``) into a
table shaped like the paper's Table 1. Means and standard deviations (sample sd, ddof=1) are taken
over the individual vertebrae of a group ("calculated for individual vertebrae and then averaged
across all scans", paper §4.2). Dice is stored as a fraction (0..1) and shown in percent.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from . import anatomy, dataset, imageio, metrics
from .formats import LABELS_SUFFIX, REPORT_FORMAT, REPORT_SUFFIX
from .imageio import InputError, PathLike

logger = logging.getLogger(__name__)

OUTPUT_FILES = ("per_vertebra.csv", "summary.json")
UNGROUPED = "all"
OVERALL = "overall"
#: Spine regions in cranio-caudal order, as the anatomy table names them.
REGIONS = tuple(dict.fromkeys(v.region for v in anatomy.VERTEBRAE))
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class EvaluationOptions:
    """``allow_missing``: score a reference case without prediction as all vertebrae missed instead of
    refusing. ``complete_only`` is not an option: both subsets are always computed."""

    allow_missing: bool = False


@dataclass(frozen=True)
class PredictionFiles:
    """Where one case's prediction lives: its label map and, if any, a completeness source."""

    labels: Path
    report: Optional[Path] = None
    sidecar: Optional[dataset.CaseFiles] = None


@dataclass(frozen=True)
class EvaluatedCase:
    score: metrics.CaseScore
    group: str
    prediction: Optional[Path]  # None: no prediction (scored as all missed)


@dataclass(frozen=True)
class GroupSummary:
    """Table 1 row. Fractions in 0..1, distances in mm; NaN where nothing was measurable."""

    group: str
    scans: int
    vertebrae: int
    dice_mean: float
    dice_sd: float
    assd_mean: float
    assd_sd: float
    identification_accuracy: float
    kappa: float
    completeness_accuracy: float
    fp_per_scan: float
    fn_per_scan: float
    missed: int
    false_detections: int


@dataclass(frozen=True)
class EvaluationResult:
    cases: List[EvaluatedCase]

    def summaries(self, complete_only: bool = True) -> List[GroupSummary]:
        """One row per group (sorted), plus an ``"overall"`` row when there are several groups."""
        groups = sorted({c.group for c in self.cases})
        rows = [summarize([c.score for c in self.cases if c.group == g], g, complete_only) for g in groups]
        if len(groups) > 1:
            rows.append(summarize([c.score for c in self.cases], OVERALL, complete_only))
        return rows

    def region_summaries(self, complete_only: bool = True) -> List[GroupSummary]:
        """One row per spine region of the anatomy table (cervical, thoracic, lumbar; T13 and L6 count as
        the table says) over all cases, for regions that occur. ``scans`` counts the scans showing the
        region; false detections cannot be given a region and are 0 here (see :meth:`summaries`)."""
        rows = []
        for region in REGIONS:
            parts = [metrics.CaseScore(c.score.case_id, [v for v in c.score.vertebrae
                                                         if anatomy.vertebra(v.label).region == region], 0)
                     for c in self.cases]
            parts = [p for p in parts if p.vertebrae]  # summarize selects for Dice, ASSD, Id.
            if parts:
                rows.append(summarize(parts, region, complete_only))
        return rows


def _mean_sd(values: Sequence[float]) -> "tuple[float, float]":
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return math.nan, math.nan
    return float(finite.mean()), float(finite.std(ddof=1)) if finite.size > 1 else 0.0


def summarize(cases: Sequence[metrics.CaseScore], group: str, complete_only: bool = True) -> GroupSummary:
    """Pool the vertebrae of ``cases`` into one Table 1 row (see :mod:`vertebra_traversal.metrics` for
    which vertebrae enter which statistic). FP/FN per scan count only scans with known completeness."""
    selected = [v for c in cases for v in metrics.select(c.vertebrae, complete_only)]
    matched = [v for v in selected if v.matched]
    dice_mean, dice_sd = _mean_sd([v.dice for v in selected])
    assd_mean, assd_sd = _mean_sd([v.assd_mm for v in matched])
    kappa = metrics.linear_kappa([v.label for v in matched], [int(v.pred_label) for v in matched]) \
        if matched else math.nan
    pairs = [metrics.completeness_pairs(c.vertebrae) for c in cases]
    known_scans = sum(1 for p in pairs if p)
    flat = [pair for p in pairs for pair in p]
    return GroupSummary(
        group=group, scans=len(cases), vertebrae=len(selected), dice_mean=dice_mean, dice_sd=dice_sd,
        assd_mean=assd_mean, assd_sd=assd_sd,
        identification_accuracy=metrics.identification_accuracy(selected), kappa=kappa,
        completeness_accuracy=sum(r == p for r, p in flat) / len(flat) if flat else math.nan,
        fp_per_scan=sum(c.completeness_fp for c in cases) / known_scans if known_scans else math.nan,
        fn_per_scan=sum(c.completeness_fn for c in cases) / known_scans if known_scans else math.nan,
        missed=sum(not v.matched for v in selected), false_detections=sum(c.false_detections for c in cases))


def find_prediction(pred_dir: Path, case: dataset.CaseFiles) -> Optional[PredictionFiles]:
    """The prediction of ``case`` in ``pred_dir`` (dataset layout first, then ``segment`` outputs)."""
    as_dataset = dataset.CaseFiles(pred_dir, case.case_id, case.modality)
    if as_dataset.labels.exists():
        return PredictionFiles(as_dataset.labels, sidecar=as_dataset if as_dataset.sidecar.exists() else None)
    for stem in (case.case_id, f"{case.case_id}_{case.modality}"):
        labels = pred_dir / f"{stem}{LABELS_SUFFIX}"
        if labels.exists():
            report = pred_dir / f"{stem}{REPORT_SUFFIX}"
            return PredictionFiles(labels, report=report if report.exists() else None)
    return None


def _report_completeness(path: Path) -> Dict[int, bool]:
    data = imageio.read_json_document(path, REPORT_FORMAT, "report")
    try:
        return {int(v["label"]): bool(v["complete"]) for v in data["vertebrae"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: cannot read completeness from report ({type(exc).__name__}: {exc})") from None


def predicted_completeness(pred: PredictionFiles) -> Optional[Dict[int, bool]]:
    """Predicted completeness per instance id, or None when the prediction carries none."""
    if pred.report is not None:
        return _report_completeness(pred.report)
    if pred.sidecar is not None:
        return {r.label: r.complete for r in dataset.read_case_info(pred.sidecar).vertebrae}
    return None


def _read_prediction(pred: PredictionFiles, reference: sitk.Image, ref_path: Path) -> sitk.Image:
    labels = imageio.read_label_map(pred.labels)
    if not imageio.same_grid(labels, reference):
        raise InputError(f"{pred.labels}: prediction grid differs from the reference {ref_path} "
                         f"({imageio.grid_difference(labels, reference)})")
    return labels


def evaluate_case(case: dataset.CaseFiles, pred: Optional[PredictionFiles]) -> EvaluatedCase:
    """Score one reference case against its prediction (None: every vertebra missed).

    Raises:
        InputError: unreadable files, unknown ids, or a prediction on another grid than the reference.
    """
    reference = imageio.read_label_map(case.labels)
    info = dataset.read_case_info(case, labels=reference)
    ref_complete = {r.label: r.complete for r in info.vertebrae}
    ref_array = sitk.GetArrayFromImage(reference)
    if pred is None:
        pred_array, pred_complete = np.zeros_like(ref_array), None
    else:
        pred_array = sitk.GetArrayFromImage(_read_prediction(pred, reference, case.labels))
        pred_complete = predicted_completeness(pred)
    spacing_zyx = reference.GetSpacing()[::-1]
    score = metrics.score_case(ref_array, pred_array, spacing_zyx, ref_complete, pred_complete, case.case_id)
    group = str(info.source.get("group") or UNGROUPED)
    return EvaluatedCase(score, group, None if pred is None else pred.labels)


def evaluate_folders(pred_dir: PathLike, ref_dir: PathLike, options: EvaluationOptions = EvaluationOptions(),
                     progress: Optional[Progress] = None) -> EvaluationResult:
    """Score every case of the reference dataset ``ref_dir`` against its prediction in ``pred_dir``.

    Raises:
        InputError: missing folders, a reference case without prediction (unless
            ``options.allow_missing``; the message names the case), or any bad file.
    """
    pred_root = Path(pred_dir)
    if not pred_root.is_dir():
        raise InputError(f"{pred_root}: prediction folder not found")
    cases = dataset.list_cases(ref_dir)
    found = {c.case_id: find_prediction(pred_root, c) for c in cases}
    missing = [cid for cid, p in found.items() if p is None]
    if missing and not options.allow_missing:
        raise InputError(f"{pred_root}: no prediction for reference case(s) {', '.join(missing)} "
                         f"(expected <case>{LABELS_SUFFIX}; --allow-missing scores them as all missed)")
    for cid in missing:
        logger.warning("case %s: no prediction, every vertebra counts as missed", cid)
    results = []
    for number, case in enumerate(cases):
        if progress is not None:
            progress(number / len(cases), f"scoring {case.case_id}")
        results.append(evaluate_case(case, found[case.case_id]))
        logger.debug("case %s: mean Dice %.4f", case.case_id, results[-1].score.mean_dice)
    if progress is not None:
        progress(1.0, f"scored {len(cases)} case(s)")
    return EvaluationResult(results)


def _fmt(value: float, digits: int, scale: float = 1.0) -> str:
    return "-" if not math.isfinite(value) else f"{value * scale:.{digits}f}"


def _row(s: GroupSummary) -> List[str]:
    dice = "-" if not math.isfinite(s.dice_mean) else f"{_fmt(s.dice_mean, 1, 100)} ± {_fmt(s.dice_sd, 1, 100)}"
    assd = "-" if not math.isfinite(s.assd_mean) else f"{_fmt(s.assd_mean, 2)} ± {_fmt(s.assd_sd, 2)}"
    return [s.group, str(s.scans), str(s.vertebrae), dice, assd, _fmt(s.identification_accuracy, 1, 100),
            _fmt(s.kappa, 2), _fmt(s.completeness_accuracy, 1, 100), _fmt(s.fp_per_scan, 2),
            _fmt(s.fn_per_scan, 2), str(s.missed), str(s.false_detections)]


_HEADER = ["Dataset", "Scans", "Vertebrae", "Dice (%)", "ASSD (mm)", "Id. acc. (%)", "κ", "Compl. acc. (%)",
           "FP / scan", "FN / scan", "Missed", "False det."]


#: Columns of the region table: a region has no false detections or per-scan rates of its own.
_REGION_COLUMNS = (0, 1, 2, 3, 4, 5, 6, 7, 10)


def format_table(result: EvaluationResult, complete_only: bool = True) -> str:
    """Plain-text table in the shape of the paper's Table 1 (mean ± sd), one row per group."""
    return _layout([_HEADER] + [_row(s) for s in result.summaries(complete_only)], complete_only)


def format_region_table(result: EvaluationResult, complete_only: bool = True) -> str:
    """The same scores per spine region (cervical, thoracic, lumbar), pooled over all groups."""
    header = ["Region"] + _HEADER[1:]
    rows = [header] + [_row(s) for s in result.region_summaries(complete_only)]
    return _layout([[r[i] for i in _REGION_COLUMNS] for r in rows], complete_only)


def _layout(rows: List[List[str]], complete_only: bool) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    subset = ("completely visible reference vertebrae (paper Fig. 5)" if complete_only
              else "all reference vertebrae")
    return "\n".join([f"Dice, ASSD and identification over {subset}; completeness over all matched vertebrae."]
                     + lines) + "\n"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def summary_json(result: EvaluationResult) -> Dict[str, Any]:
    """``summary.json`` content: group rows for complete and all vertebrae, and per-case values.
    Non-finite numbers become null."""
    cases = [{"case": c.score.case_id, "group": c.group, "prediction": None if c.prediction is None
              else str(c.prediction), "mean_dice": c.score.mean_dice, "mean_dice_all": c.score.mean_dice_all,
              "mean_assd_mm": c.score.mean_assd, "mean_assd_mm_all": c.score.mean_assd_all,
              "identification_accuracy": c.score.identification_accuracy,
              "completeness_accuracy": c.score.completeness_accuracy, "completeness_fp": c.score.completeness_fp,
              "completeness_fn": c.score.completeness_fn, "missed": c.score.missed,
              "false_detections": c.score.false_detections} for c in result.cases]
    return _json_safe({"format": "vertebra-traversal-evaluation", "version": 1,
                       "groups_complete_vertebrae": [asdict(s) for s in result.summaries(True)],
                       "groups_all_vertebrae": [asdict(s) for s in result.summaries(False)],
                       "regions_complete_vertebrae": [asdict(s) for s in result.region_summaries(True)],
                       "cases": cases})


def per_vertebra_csv(result: EvaluationResult) -> str:
    """``per_vertebra.csv`` content: one row per reference vertebra (empty cells for unknown values)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "group", "label", "name", "pred_label", "pred_name", "dice", "assd_mm",
                     "ref_complete", "pred_complete", "identified"])
    for case in result.cases:
        for v in case.score.vertebrae:
            writer.writerow([case.score.case_id, case.group, v.label, anatomy.name_of(v.label),
                             "" if v.pred_label is None else v.pred_label,
                             "" if v.pred_label is None else anatomy.name_of(v.pred_label), f"{v.dice:.6f}",
                             f"{v.assd_mm:.6f}" if math.isfinite(v.assd_mm) else "",
                             "" if v.ref_complete is None else v.ref_complete,
                             "" if v.pred_complete is None else v.pred_complete, v.identified])
    return buffer.getvalue()


def check_output_dir(out_dir: PathLike, overwrite: bool = False) -> Path:
    """Refuse an output folder that is a file, or holds result files already (unless ``overwrite``)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output path exists and is not a folder")
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise InputError(f"{out}: already holds {', '.join(existing)}; not overwriting (use --overwrite)")
    return out


def _write_text_atomic(text: str, path: Path) -> None:
    imageio.write_bytes_atomic(text.encode("utf-8"), path)


def write_results(result: EvaluationResult, out_dir: PathLike, overwrite: bool = False) -> List[Path]:
    """Write ``per_vertebra.csv`` and ``summary.json`` atomically into ``out_dir`` (created if needed).

    Raises:
        InputError: see :func:`check_output_dir`.
    """
    out = check_output_dir(out_dir, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in OUTPUT_FILES]
    _write_text_atomic(per_vertebra_csv(result), paths[0])
    _write_text_atomic(json.dumps(summary_json(result), indent=2, ensure_ascii=False) + "\n", paths[1])
    return paths

"""Fit a model's label calibration on cases it has segmented (folder layer of :mod:`.label_calibration`).

The cases must be the model's *training* cases (or others never used to judge it): ``segment`` them with the
model, then :func:`calibrate_model` matches every predicted instance to its reference vertebra with the
metrics of ``evaluate`` (paper §4.2: the instance with the largest overlap), pairs the reference level with
the label value the network gave the instance (from ``segment``'s report), fits the table and writes a
new model file: the same network, its metadata with ``label_calibration``. The input model is never
changed.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import anatomy, dataset
from .confidence import (RIBS_WEIGHT, WEIGHTS, ConfidenceCalibration, auroc, brier, fit_confidence, ribs_disagree,
                         steps_from_start)
from .checkpoint import LoadedModel, ModelMetadata, load_to_rewrite, save_torchscript
from .evaluate import Progress, evaluate_case, find_prediction
from .formats import REPORT_FORMAT
from .imageio import InputError, PathLike, read_json_document
from .label_calibration import LabelCalibration, fit_calibration, gaussian_reading
from .labeling import LabelingConfig, refine_labels
from .metadata import PostSettings
from .segment_config import SELECTION_OPTIONAL, SegmentConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationCase:
    """One segmented case: its instances' label values top first, the reference label of each matched
    instance (``None`` where an instance matched no reference vertebra), and the labels ``segment`` gave
    them with their likelihoods and where the report says the ribs end (for :func:`confidence_model`;
    ``ribs_read``: the report says, ``ribs_end`` its VerSe id or None)."""

    case_id: str
    label_values: Tuple[float, ...]
    reference_labels: Tuple[Optional[int], ...]
    labels: Tuple[int, ...] = ()
    likelihoods: Tuple[float, ...] = ()
    ribs_read: bool = False
    ribs_end: Optional[int] = None


@dataclass(frozen=True)
class CalibrationResult:
    """The fitted table, where it was written, and identification on the fitting cases before and after
    (in-sample: an upper bound of what held-out cases will show)."""

    calibration: LabelCalibration
    model: Path
    identified_before: float
    identified_after: float
    matched: int


def _report_values(path: Path, model: Path, reading: Optional[Dict[str, Any]] = None
                   ) -> Tuple[List[Tuple[int, float, float]], Dict[str, Any]]:
    """(label, label value, label likelihood or NaN) of the report's vertebrae, top first, and the report;
    ``reading``: the report's ``model`` entries the run must have used (:func:`_own_reading`), None = any."""
    data = read_json_document(path, REPORT_FORMAT, "report")
    made_with = Path(str(data.get("model", {}).get("path", ""))).resolve()
    if made_with != model.resolve():
        raise InputError(f"{path}: segmented with {made_with}, not with {model}; calibrate the model that made "
                         f"the predictions")
    used = {key: data["model"].get(key) for key in reading or {}}
    if reading and used != reading:
        raise InputError(f"{path}: instances picked and named with {used}, not with the model's own settings "
                         f"{reading} (a segment run with --gaps, --trim-ends, --no-label-calibration, "
                         f"--max-spine-offset-mm, --min-volume-ratio, --start-network, --rib-anchor, "
                         f"--count-from-ribs or --fragment-pieces, a run read again with other "
                         f"penalties, or a report from a version that did not record them); segment again with the "
                         f"model's own settings")
    try:
        rows = sorted(data["vertebrae"], key=lambda v: int(v["order"]))
        values = [(int(v["label"]), float(v["label_value"]), float(v.get("label_likelihood", math.nan)))
                  for v in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: cannot read label values ({type(exc).__name__}: {exc})") from None
    if reading and not all(math.isfinite(p) for _, _, p in values):
        raise InputError(f"{path}: a vertebra without a finite label_likelihood; the label confidence is fitted on it")
    ribs = data.get("ribs_end")
    if ribs is not None and anatomy.as_label(ribs) is None:
        raise InputError(f"{path}: ribs_end must be a vertebra's label id or null, got {ribs!r}")
    return values, data


def collect_cases(model: Path, pred_dir: PathLike, ref_dir: PathLike, progress: Optional[Progress] = None,
                  reading: Optional[Dict[str, Any]] = None) -> List[CalibrationCase]:
    """Match every case of the reference dataset ``ref_dir`` to ``segment``'s outputs in ``pred_dir``
    (``reading``: as :func:`_report_values`).

    Raises:
        InputError: a case without prediction or report, a report made by another model (or with another
            label reading than ``reading``), bad files.
    """
    cases = dataset.list_cases(ref_dir)
    out = []
    for number, case in enumerate(cases):
        if progress is not None:
            progress(number / len(cases), f"matching {case.case_id}")
        pred = find_prediction(Path(pred_dir), case)
        if pred is None or pred.report is None:
            raise InputError(f"{pred_dir}: no segment report for case {case.case_id} (calibration needs the "
                             f"label values that `segment` writes into <case>_report.json)")
        values, report = _report_values(pred.report, model, reading)
        score = evaluate_case(case, pred).score
        reference_of: Dict[int, int] = {}  # an instance matched by two references keeps the better one
        for v in sorted((v for v in score.vertebrae if v.matched), key=lambda v: v.dice):
            reference_of[int(v.pred_label)] = v.label
        out.append(CalibrationCase(case.case_id, tuple(v for _, v, _ in values),
                                   tuple(reference_of.get(label) for label, _, _ in values),
                                   tuple(label for label, _, _ in values), tuple(p for _, _, p in values),
                                   "ribs_end" in report, report.get("ribs_end")))
    if progress is not None:
        progress(1.0, f"matched {len(cases)} case(s)")
    return out


def _identified(cases: List[CalibrationCase], config: LabelingConfig) -> Tuple[float, int]:
    right = total = 0
    for case in cases:
        if not case.label_values:
            continue
        labels = refine_labels(case.label_values, config).labels
        pairs = [(ref, lab) for ref, lab in zip(case.reference_labels, labels) if ref is not None]
        right += sum(ref == lab for ref, lab in pairs)
        total += len(pairs)
    return (right / total if total else float("nan")), total


def calibrate_model(model_path: PathLike, pred_dir: PathLike, ref_dir: PathLike, out: PathLike,
                    smoothing: float = 1.0, sd_floor: float = 2.0, gaps: Optional[Dict[str, Any]] = None,
                    progress: Optional[Progress] = None, settings: PostSettings = PostSettings()
                    ) -> CalibrationResult:
    """Fit the label calibration of ``model_path`` on its predictions and write it as a new model ``out``
    (``gaps``, ``settings``: as :func:`write_calibrated`; ``gaps`` is also used for the in-sample
    identification after).

    Raises:
        InputError / CheckpointError: bad inputs (see :func:`collect_cases`), fewer than 2 matched
            vertebrae, a model that is not TorchScript, or ``out`` exists already (nothing is overwritten).
    """
    model_path, out = Path(model_path), Path(out)
    loaded = load_to_rewrite(model_path, out, "calibrated")
    cases = collect_cases(model_path, pred_dir, ref_dir, progress)
    pairs = [(anatomy.vertebra(ref).regression_value, value) for case in cases
             for ref, value in zip(case.reference_labels, case.label_values) if ref is not None]
    try:
        calibration = fit_calibration(pairs, cases=len(cases), smoothing=smoothing, sd_floor=sd_floor)
    except ValueError as exc:
        raise InputError(f"{pred_dir}: {exc}") from None
    before, matched = _identified(cases, LabelingConfig())
    after, _ = _identified(cases, LabelingConfig(calibration=calibration, **(gaps or {})))
    write_calibrated(loaded, calibration, out, gaps, settings)
    logger.info("label calibration from %d vertebrae of %d cases written to %s", len(pairs), len(cases), out)
    return CalibrationResult(calibration, out, before, after, matched)


@dataclass(frozen=True)
class ConfidenceResult:
    """The fitted label confidence, where it was written, and how it scores on the fitting vertebrae
    (in-sample: :func:`~vertebra_traversal.confidence.brier`, lower is better, and
    :func:`~vertebra_traversal.confidence.auroc`, 0.5 = no guide)."""

    confidence: ConfidenceCalibration
    model: Path
    brier: float
    brier_constant: float
    auroc: float


def _own_reading(metadata: ModelMetadata) -> Dict[str, Any]:
    """The report's ``model`` entries of a ``segment`` run that picks and names the instances as
    ``metadata`` says (``SegmentConfig.labels_as_model``), and no ``label_penalties``: a run read again with
    other gap or trim penalties than the model's (``benchmarks/relabel_run.py``) records them there. The
    entries a report holds only where a run set them (``SELECTION_OPTIONAL``) must be absent unless the
    model's own run holds them."""
    return {**{key: None for key in SELECTION_OPTIONAL}, **SegmentConfig().selection_record(metadata),
            "label_penalties": None}


def confidence_model(model_path: PathLike, pred_dir: PathLike, ref_dir: PathLike, out: PathLike,
                     progress: Optional[Progress] = None) -> ConfidenceResult:
    """Fit the label confidence (:mod:`.confidence`) of ``model_path`` on its ``segment`` outputs of the
    reference dataset ``ref_dir`` (read with its own label reading) and write the model with it as ``out``;
    everything else in the model stays as it is. A matched vertebra's label is right when it is its
    reference's. A CT model's fit includes the ribs (``ribs_weight``, :func:`~.confidence.ribs_disagree`) when
    every report says where the ribs end (``ribs_end``).

    Raises:
        InputError: as :func:`collect_cases` (reports must show the model's own settings,
            :func:`_own_reading`); a report without label likelihoods; fewer than 10 matched vertebrae or
            labels that are all right or all wrong.
        CheckpointError: as :func:`calibrate_model`.
    """
    model_path, out = Path(model_path), Path(out)
    loaded = load_to_rewrite(model_path, out, "calibrated")
    cases = collect_cases(model_path, pred_dir, ref_dir, progress, _own_reading(loaded.metadata))
    samples = []
    for case in cases:
        steps = steps_from_start(len(case.labels), loaded.metadata.direction)
        for label, likelihood, reference, step in zip(case.labels, case.likelihoods, case.reference_labels, steps):
            if reference is not None:
                samples.append((likelihood, step, ribs_disagree(case.ribs_end), reference == label))
    ct = loaded.metadata.modality.upper() == "CT"
    ribs = ct and all(case.ribs_read for case in cases)
    if ct and not ribs:
        logger.warning("%s: reports without ribs_end (written before segment read the ribs): the label confidence "
                       "is fitted without the ribs", pred_dir)
    try:
        confidence = fit_confidence(samples, cases=len(cases), ribs=ribs)
    except ValueError as exc:
        raise InputError(f"{pred_dir}: {exc}") from None
    fitted = replace(loaded.metadata, label_confidence=confidence.to_json())
    save_torchscript(loaded.module, fitted, out)  # type: ignore[arg-type]
    right = [r for *_, r in samples]
    probabilities = [confidence.probability(lk, step, off) for lk, step, off, _ in samples]
    logger.info("label confidence from %d vertebrae of %d cases written to %s", len(samples), len(cases), out)
    return ConfidenceResult(confidence, out, brier(probabilities, right),
                            brier([confidence.right] * len(right), right), auroc(probabilities, right))


def write_calibrated(loaded: LoadedModel, calibration: LabelCalibration, out: PathLike,
                     gaps: Optional[Dict[str, Any]] = None, settings: PostSettings = PostSettings()) -> Path:
    """Write ``loaded``'s network with ``calibration`` in its metadata as the new model file ``out``;
    ``gaps``: the label refinement's sequence settings, ``{"max_gaps": G, "gap_penalty": D}`` and / or
    ``{"max_trimmed": K, "trim_penalty": T}`` (``ModelMetadata.label_gaps``, ``label_trim``);
    ``settings``: post-processing settings to record (those not given keep the model's)."""
    if loaded.metadata.label_confidence:
        logger.warning("%s: the label confidence fitted with the old reading is not kept; fit it again with "
                       "calibrate --confidence on cases segmented with the new model", out)
    metadata = settings.apply(replace(loaded.metadata, label_confidence={},
                                      label_calibration=ModelMetadata.reading_record(calibration, gaps)))
    return save_torchscript(loaded.module, metadata, out)  # type: ignore[arg-type]


def gaussian_model(model_path: PathLike, sd: float, out: PathLike, gaps: Optional[Dict[str, Any]] = None,
                   settings: PostSettings = PostSettings()) -> Path:
    """Write ``model_path`` as ``out`` reading its label values through a Gaussian of ``sd`` levels around
    the paper's expected values (:func:`~vertebra_traversal.label_calibration.gaussian_reading`).

    Raises:
        CheckpointError / ValueError: as :func:`calibrate_model`; a spread that is not positive.
    """
    calibration = gaussian_reading(sd)
    return write_calibrated(load_to_rewrite(model_path, out, "calibrated"), calibration, out, gaps, settings)


def regapped_model(model_path: PathLike, out: PathLike, gaps: Optional[Dict[str, Any]] = None,
                   settings: PostSettings = PostSettings()) -> Path:
    """Write ``model_path`` as ``out`` with its own label reading (fitted table or Gaussian) unchanged and the
    sequence settings (skipped levels, ends left out) set to ``gaps`` (None: the paper's gap-free sequences
    of every instance); ``settings`` as
    :func:`write_calibrated`.

    Raises:
        InputError: the model carries no label reading to keep.
        CheckpointError: as :func:`calibrate_model`.
    """
    loaded = load_to_rewrite(model_path, out, "calibrated")
    calibration = loaded.metadata.calibration()
    if calibration is None:
        raise InputError(f"{model_path}: carries no label reading to keep; fit one (--pred, --ref) or use --gaussian")
    return write_calibrated(loaded, calibration, out, gaps, settings)


def describe(result: CalibrationResult) -> Dict[str, object]:
    """JSON-ready summary printed by the command line."""
    return {"model": str(result.model), "cases": result.calibration.cases,
            "vertebrae": result.calibration.vertebrae,
            "identification_in_sample_before": round(result.identified_before, 4),
            "identification_in_sample_after": round(result.identified_after, 4),
            "means": [round(v, 2) for v in result.calibration.means]}


def describe_confidence(result: ConfidenceResult) -> Dict[str, object]:
    """JSON-ready summary of :func:`confidence_model` printed by the command line."""
    c = result.confidence
    return {"model": str(result.model), "cases": c.cases, "vertebrae": c.vertebrae, "right": round(c.right, 4),
            "weights": {name: round(getattr(c, name), 4) for name in WEIGHTS + (RIBS_WEIGHT,)},
            "brier_in_sample": round(result.brier, 4), "brier_constant": round(result.brier_constant, 4),
            "auroc_in_sample": round(result.auroc, 4)}

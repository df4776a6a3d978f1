"""The training loop (paper §3.6): Adam, the λ schedule, resumable checkpoints, validation, export.

:func:`train` prepares the cases (model grid, cached in the run folder), then runs ``iterations``
backward passes on patches drawn by :class:`.patches.PatchDataset` in DataLoader workers. Every
``checkpoint_every`` iterations it writes ``checkpoint.pt`` (model, optimiser, RNG states, iteration);
re-running the same command resumes from it and reaches the same weights as an uninterrupted run.
Every ``validate_every`` iterations it validates (:mod:`.validation`). At the end it writes the
TorchScript model ``model.pt`` with full metadata (:mod:`vertebra_traversal.checkpoint`).
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from .. import __version__
from ..checkpoint import CheckpointError, ModelMetadata, load_model, resolve_device, save_torchscript
from ..imageio import InputError
from ..metadata import PostSettings
from ..network import IterativeFCN, NetworkConfig
from ..normalization import NormalizationSpec
from ..start_network import named_networks, with_networks
from .config import TrainingConfig
from .data import PreparedCase, TrainingCase, check_disjoint, describe_case, find_cases, prepare_cases
from .loss import fp_weight, reference_voxels, total_loss
from .patches import PatchDataset, PatchSettings, fixed_samples, make_loader
from .runfolder import RunFolder
from .validation import json_ready, patch_metrics, pipeline_metrics

logger = logging.getLogger(__name__)

LOG_FLUSH_EVERY = 20


@dataclass(frozen=True)
class TrainingProgress:
    """One progress report. ``phase``: ``prepare``, ``train``, ``validate`` or ``done``.

    ``terms`` holds the loss terms of the last iteration (``loss``, ``seg``, ``label``,
    ``completeness``); ``eta_seconds`` is the estimated remaining time of the run.
    """

    phase: str
    iteration: int
    total: int
    terms: Dict[str, float] = field(default_factory=dict)
    fp_lambda: float = 0.0
    seconds: float = 0.0
    eta_seconds: float = float("nan")
    message: str = ""


ProgressCallback = Callable[[TrainingProgress], None]


class TrainingInterrupted(Exception):
    """Raised when ``should_stop`` asked to stop; the checkpoint of ``iteration`` is on disk."""

    def __init__(self, iteration: int, checkpoint: Path) -> None:
        super().__init__(f"training stopped at iteration {iteration}; checkpoint {checkpoint}")
        self.iteration = iteration
        self.checkpoint = checkpoint


def adopt_init(config: TrainingConfig, metadata: ModelMetadata) -> TrainingConfig:
    """Fine-tuning: network, grid, patch, normalisation and direction come from the init model, and so
    does the completeness rule unless the run sets one."""
    if metadata.modality.lower() != config.modality:
        raise CheckpointError(f"init model is a {metadata.modality} model; this run trains {config.modality.upper()}")
    if len(set(metadata.spacing_mm)) != 1:
        raise CheckpointError(f"init model has anisotropic spacing {metadata.spacing_mm}; cannot fine-tune it")
    return config.replace(network=NetworkConfig.from_json(metadata.network), spacing_mm=float(metadata.spacing_mm[0]),
                          normalization=NormalizationSpec.from_json(metadata.normalization),
                          direction=metadata.direction,
                          completeness_rule=config.completeness_rule or metadata.completeness_rule)


@dataclass(frozen=True)
class _Init:
    """What a fine-tune takes from its ``--init`` model (all empty without one).

    ``state``: the main network's weights; ``info``: its description in the run identity; ``reading``
    and ``reading_note``: :func:`inherited_reading`; ``start`` and ``rescue``: its start and rescue networks
    (:mod:`..start_network`), kept unchanged in the fine-tuned model, and ``start_network`` their metadata record;
    ``post``: its post-processing settings (the CT surface refinement threshold, the border settings), kept
    like a Gaussian reading (they describe the masks, not the weights).
    """

    state: Optional[Dict[str, torch.Tensor]] = None
    info: Optional[Dict[str, Any]] = None
    reading: Dict[str, Any] = field(default_factory=dict)
    reading_note: Optional[str] = None
    start: Optional[torch.nn.Module] = None
    rescue: Optional[torch.nn.Module] = None
    start_network: Dict[str, Any] = field(default_factory=dict)
    post: PostSettings = PostSettings()

    @property
    def start_note(self) -> Optional[str]:
        """``"kept"`` or ``"none"`` (the init model's start network), None without an init model."""
        return None if self.info is None else ("kept" if self.start is not None else "none")


def _init_weights(init: Path, config: TrainingConfig) -> "tuple[TrainingConfig, _Init]":
    """The run's configuration adopted from the init model, and what the fine-tune takes from it."""
    loaded = load_model(init, device="cpu", expect_modality=config.modality)
    if not loaded.metadata.network:
        raise CheckpointError(f"{init}: the model metadata has no network configuration; cannot fine-tune it")
    config = adopt_init(config, loaded.metadata)
    digest = hashlib.sha1(init.read_bytes()).hexdigest()[:16]
    info = {"path": str(init), "sha1": digest, "training": loaded.metadata.training.get("data_summary")}
    reading, note = inherited_reading(init, loaded.metadata)
    children = named_networks(loaded)
    state = {k: v.detach().clone() for k, v in children["main"].state_dict().items()}
    return config, _Init(state, info, reading, note, children.get("start"), children.get("rescue"),
                         loaded.metadata.start_network, PostSettings.of(loaded.metadata))


def inherited_reading(init: Path, metadata: ModelMetadata) -> "tuple[Dict[str, Any], str]":
    """The label reading a model fine-tuned from ``init`` keeps (``ModelMetadata.label_calibration``), and
    what became of the init model's: ``"none"``, ``"kept"`` or ``"dropped"`` (recorded in the new model's
    training metadata as ``init_label_reading``).

    A Gaussian reading of the paper's expected values does not depend on the weights and is kept, with
    its sequence settings (``ModelMetadata.label_sequence``: skipped levels, instances left out at the chain's
    ends, the bottom anchor); a table fitted to the init model's answers describes those weights only and is
    dropped with its settings, with a warning that says how to fit one for the new weights
    (``vertebra-traversal calibrate``, which takes the settings again: ``--bottom-anchor-mm 10`` for the MR model's).
    """
    if metadata.label_confidence:
        logger.warning("%s carries a label confidence fitted on its own runs; the fine-tuned model does not keep "
                       "it and reports the share of the plausible label sequences until you fit one for it "
                       "(vertebra-traversal calibrate --confidence)", init)
    calibration = metadata.calibration()
    if calibration is None:
        return {}, "none"
    if calibration.fitted:
        logger.warning("%s reads its labels through a table fitted to its own weights; the fine-tuned model "
                       "does not keep it nor its sequence settings %s (fit one for it with vertebra-traversal "
                       "calibrate)", init, metadata.label_sequence() or "(none)")
        return {}, "dropped"
    return ModelMetadata.reading_record(calibration, metadata.label_sequence()), "kept"


def _target(cases: Sequence[PreparedCase]) -> str:
    targets = sorted({c.target for c in cases})
    if len(targets) != 1:
        raise InputError(f"training cases mix targets {targets} (whole vertebrae and vertebral bodies); "
                         f"train one model per target")
    return targets[0]


class _Session:
    """State of one :func:`train` call: model, optimiser, data, bookkeeping."""

    def __init__(self, run: RunFolder, config: TrainingConfig, device: torch.device, cases: List[PreparedCase],
                 held_out: List[TrainingCase], progress: Optional[ProgressCallback]) -> None:
        self.run, self.config, self.device, self.cases = run, config, device, cases
        self.held_out, self.progress = held_out, progress
        torch.manual_seed(config.seed)
        self.model = IterativeFCN(config.network).to(device)
        if device.type == "cpu":  # channels-last weights: oneDNN's conv3d ~20 % faster (benchmarks/network_speed.py)
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.optimizer = torch.optim.Adam(_trainable(self.model, config.trained_part), lr=config.learning_rate,
                                          betas=(config.beta1, config.beta2))
        self.iteration, self.seconds, self.history = 0, 0.0, []  # type: ignore[var-annotated]
        spacing = (config.spacing_mm,) * 3
        self.seg_divisor = reference_voxels(config.loss, spacing)
        self.settings = PatchSettings.of(config)
        self.pending: List[Dict[str, float]] = []

    def state(self) -> Dict[str, Any]:
        state = {"iteration": self.iteration, "seconds": self.seconds, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                 "validation": self.history, "version": __version__}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def restore(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.iteration, self.seconds = int(state["iteration"]), float(state["seconds"])
        self.history = list(state.get("validation", []))

    def checkpoint(self) -> None:
        self.flush_log()
        self.run.save_checkpoint(self.state())

    def flush_log(self) -> None:
        if self.pending:
            self.run.append_log(self.pending)
            self.pending = []

    def report(self, phase: str, terms: Optional[Dict[str, float]] = None, fp_lambda: float = 0.0,
               eta: float = float("nan"), message: str = "") -> None:
        if self.progress is not None:
            self.progress(TrainingProgress(phase, self.iteration, self.config.iterations, terms or {},
                                           fp_lambda, self.seconds, eta, message))

    def step(self, batch: Dict[str, torch.Tensor]) -> "tuple[Dict[str, float], float]":
        fp_lambda = fp_weight(self.iteration, self.config.iterations, self.config.loss.lambda_min)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        seg_logits, label, complete_logit = self.model.forward_logits(batch["input"])
        terms = total_loss(seg_logits, label, complete_logit, batch, fp_lambda, self.seg_divisor)
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate_at(self.iteration)
        self.optimizer.step()
        self.iteration += 1
        return terms.as_floats(), fp_lambda

    def validate(self, samples: List[Dict[str, Any]], metadata: ModelMetadata) -> Dict[str, Any]:
        self.report("validate", message=f"validating at iteration {self.iteration}")
        fp_lambda = fp_weight(self.iteration, self.config.iterations, self.config.loss.lambda_min)
        record: Dict[str, Any] = {"iteration": self.iteration, "source": "held-out" if self.held_out else "training",
                                  **patch_metrics(self.model, samples, self.device, fp_lambda, self.seg_divisor)}
        if self.held_out:
            # the network being trained, alone: a start network kept from --init is not part of it
            scans = pipeline_metrics(self.model, replace(metadata, start_network={}), self.held_out, self.device)
            if scans is not None:
                record.update(scans)
        record = json_ready(record)
        self.history.append(record)
        self.run.append_validation(record)
        logger.info("validation at %d: %s", self.iteration,
                    ", ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float)))
        return record


def _trainable(model: IterativeFCN, part: str) -> List[torch.nn.Parameter]:
    """The parameters a run trains; with ``"label-path"`` every other one is frozen (``requires_grad``
    off). Batch-norm statistics stay fixed too, because such a run keeps the model in eval mode."""
    if part == "all":
        return list(model.parameters())
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trained = list(model.label_path.parameters())
    for parameter in trained:
        parameter.requires_grad_(True)
    return trained


def _metadata(config: TrainingConfig, target: str, training: Dict[str, Any],
              reading: Dict[str, Any]) -> ModelMetadata:
    spacing = (config.spacing_mm,) * 3
    return ModelMetadata(modality=config.modality.upper(), target=target, spacing_mm=spacing,
                         patch_size=config.network.patch_size, normalization=config.normalization.to_json(),
                         direction=config.direction, completeness_rule=config.completeness_rule or "network",
                         network=config.network.to_json(), training=training, label_calibration=reading)


def _loop(session: _Session, config: TrainingConfig, workers: int, samples: List[Dict[str, Any]],
          metadata: ModelMetadata, should_stop: Optional[Callable[[], bool]]) -> None:
    dataset = PatchDataset(session.cases, session.settings, config.iterations * config.batch_size)
    loader = make_loader(dataset, config.batch_size, session.iteration, workers)
    session.model.train(config.trained_part == "all")  # label path only: frozen batch-norm statistics
    started, start_iteration = time.perf_counter(), session.iteration
    base_seconds = session.seconds
    for batch in loader:
        terms, fp_lambda = session.step(batch)
        session.seconds = base_seconds + time.perf_counter() - started
        session.pending.append({"iteration": session.iteration, **terms, "lambda": fp_lambda,
                                "seconds": session.seconds})
        rate = (time.perf_counter() - started) / (session.iteration - start_iteration)
        session.report("train", terms, fp_lambda, rate * (config.iterations - session.iteration))
        if len(session.pending) >= LOG_FLUSH_EVERY:
            session.flush_log()
        if session.iteration % config.validate_every == 0 or session.iteration == config.iterations:
            session.validate(samples, metadata)
        if session.iteration % config.checkpoint_every == 0 or session.iteration == config.iterations:
            session.checkpoint()
        if should_stop is not None and session.iteration < config.iterations and should_stop():
            session.checkpoint()
            raise TrainingInterrupted(session.iteration, session.run.checkpoint)


def train(data_dirs: Sequence[Path], out_dir: Path, config: TrainingConfig, init: Optional[Path] = None,
          device: str = "auto", validation_dirs: Optional[Sequence[Path]] = None,
          progress: Optional[ProgressCallback] = None, should_stop: Optional[Callable[[], bool]] = None) -> Path:
    """Train (or resume training) a model; returns the path of the final TorchScript model.

    Args:
        data_dirs: dataset roots (project or VerSe layout, :mod:`.data`).
        out_dir: the run folder (created; resumed when it holds this same run; refused otherwise).
        config: the run's configuration (:func:`.config.preset`).
        init: fine-tune this model instead of starting from random weights (same modality required);
            its network, grid and normalisation replace those of ``config``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        validation_dirs: held-out dataset roots, validated every ``config.validate_every`` iterations.
        progress: receives :class:`TrainingProgress` reports.
        should_stop: polled after each iteration; when it returns True a checkpoint is written and
            :class:`TrainingInterrupted` is raised (re-running resumes).

    Raises:
        InputError: bad data, a run folder holding something else, an init model of another modality.
    """
    run, torch_device = RunFolder(Path(out_dir)), resolve_device(device)
    if config.threads:
        torch.set_num_threads(config.threads)
    inherited = _Init()
    if init is None and config.trained_part != "all":
        raise InputError(f"training only the {config.trained_part} needs an --init model to start from")
    if init is not None:
        config, inherited = _init_weights(Path(init), config)
        if config.trained_part == "all" and config.loss.lambda_min < 1.0:  # the label path has no mask term
            logger.warning("fine-tuning with false positives weighted %.2g at first (the paper's ramp for a network "
                           "that has yet to find bone): the masks may swell; --lambda-min 1 weighs them fully",
                           config.loss.lambda_min)
    cases = find_cases(data_dirs, config.modality)
    held_out = find_cases(validation_dirs, config.modality) if validation_dirs else []
    data, validation = [describe_case(c) for c in cases], [describe_case(c) for c in held_out]
    check_disjoint(data, validation)
    identity = {"config": config.identity(), "data": data, "validation": validation, "init": inherited.info}
    fresh = not run.identity_file.exists()
    resuming = run.claim(identity)
    with run.locked():  # one process per run folder
        if run.model.exists():
            logger.info("%s: this run is complete; its model is %s", run.root, run.model)
            return run.model
        if not held_out:
            logger.warning("no held-out cases (--validation): validation scores fixed patches of the training "
                           "cases, and the traversal is not run on whole scans")
        try:
            session = _prepare(run, config, torch_device, cases, held_out, progress)
        except InputError:
            if fresh:  # nothing trained yet: leave the folder as empty as we found it, so a fixed rerun fits
                run.release()
            raise
        if resuming:
            session.restore(run.load_checkpoint())
            logger.info("resuming %s at iteration %d of %d", run.root, session.iteration, config.iterations)
        elif inherited.state is not None:
            session.model.load_state_dict(inherited.state)
        run.start_log(session.iteration)
        training: Dict[str, Any] = {"preset": config.preset, "config": config.to_json(), "data": data,
                                    "validation_data": identity["validation"], "init": inherited.info,
                                    "init_label_reading": inherited.reading_note,
                                    "init_start_network": inherited.start_note}
        metadata = _metadata(config, _target(session.cases), training, inherited.reading)
        metadata = inherited.post.apply(replace(metadata, start_network=inherited.start_network))
        samples = fixed_samples(session.cases if not held_out else _prepare_held_out(run, config, held_out),
                                session.settings, config.validation_patches)
        if session.iteration < config.iterations:
            _loop(session, config, config.workers, samples, metadata, should_stop)
        return _finish(session, metadata, training, inherited)


def _prepare(run: RunFolder, config: TrainingConfig, device: torch.device, cases: List[TrainingCase],
             held_out: List[TrainingCase], progress: Optional[ProgressCallback]) -> _Session:
    def report(done: int, total: int, case_id: str) -> None:
        if progress is not None:
            progress(TrainingProgress("prepare", 0, config.iterations, message=f"prepared {case_id} ({done}/{total})"))

    prepared = prepare_cases(cases, run.cache, config.spacing_mm, config.normalization, config.verse_margin_mm, report,
                             config.workers)
    return _Session(run, config, device, prepared, held_out, progress)


def _prepare_held_out(run: RunFolder, config: TrainingConfig, held_out: List[TrainingCase]) -> List[PreparedCase]:
    return prepare_cases(held_out, run.cache, config.spacing_mm, config.normalization, config.verse_margin_mm,
                         workers=config.workers)


def _finish(session: _Session, metadata: ModelMetadata, training: Dict[str, Any], inherited: _Init) -> Path:
    """Write ``model.pt``: the trained network, with the init model's start and rescue networks where it had them."""
    final = dict(training, iterations=session.iteration, wall_seconds=round(session.seconds, 3),
                 metrics=session.history[-1] if session.history else {}, device=str(session.device),
                 torch=torch.__version__, vertebra_traversal=__version__,
                 finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    final["data_summary"] = {"cases": len(training["data"]), "case_ids": [d["case"] for d in training["data"]]}
    model = with_networks(session.model.cpu(), inherited.start, inherited.rescue)
    path = save_torchscript(model, replace(metadata, training=final), session.run.model)
    session.report("done", message=f"model written to {path}")
    return path

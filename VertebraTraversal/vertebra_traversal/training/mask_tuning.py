"""The segmentation path trained on the traversal's own patches (extends paper §3.6 with one round of
imitation learning).

§3.6 trains the network with the reference in its instance memory; at inference (§3.3) the memory holds the
network's own masks, which leave parts of vertebrae out and reach into neighbours. This module segments
labelled scans, and random crops of them along z, with the model's own settings (§3.3, with the fallback's
run where the main network stalls) and records every patch the traversals evaluate: the image and the
memory as the network saw them, and the place. Each patch is paired with the mask the traversal should
have been given there (:func:`expert_target`): §3.6's target, the first vertebra in traversal order in the
patch that is not yet segmented, read against the network's own memory. Only the segmentation path
(decoders and output layer) is trained on them, with the paper's loss at the end of its λ schedule
(λ = 1); the encoder, the label and completeness paths and every batch-norm statistic stay frozen, so a
given patch keeps its label value and completeness. Part of each batch may be §3.6's own patches (reference
memory, the paper's sampling) of the same scans, so that what the network learnt there (the search, the first
vertebra, the neck) is rehearsed while it learns its own runs (``sampler_share``). Checkpoints are judged by
segmenting held-aside scans with the whole pipeline, scored as ``evaluate`` scores (§4.2)
(:func:`choose_checkpoint`), each by itself and, with ``shares``, mixed back into the model as it was
(weight-space ensembling, :mod:`vertebra_traversal.weight_blend`): a tuned decoder forgets part of what the
sampler taught it, and a mix keeps more of it.
"""
from __future__ import annotations

import copy
import logging
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch

from .. import anatomy
from ..checkpoint import LoadedModel, ModelMetadata, save_torchscript
from ..evaluate import GroupSummary, summarize
from ..geometry import to_model_grid
from ..imageio import read_image, read_label_map
from ..metrics import CaseScore
from ..network import IterativeFCN
from ..normalization import NormalizationSpec, normalize
from ..pipeline import segment_image, traversal_config
from ..predictor import Predictor
from ..segment_config import SegmentConfig
from ..start_network import named_networks, with_networks
from ..torch_predictor import TorchPredictor
from ..traversal import PatchEvent, crop_patch, traverse
from .candidates import IDENTIFICATION, START, Candidate, candidate_name, candidate_state, choose_checkpoint
from .config import LR_SCHEDULES, check_choice, check_settings, scheduled_learning_rate
from .data import TrainingCase, case_crops, prepare_cases
from .label_tuning import RecordingPredictor, main_network
from .loss import LossConfig, reference_voxels, segmentation_error, surface_weights
from .parallel import loaded_model, map_cases
from .patches import model_patches
from .sampler import first_unsegmented
from .validation import score_scan

logger = logging.getLogger(__name__)

RUNS = ("main", "pipeline")


@dataclass(frozen=True)
class MaskTuning:
    """How the segmentation path is trained on the traversal's patches: ``iterations`` batches of
    ``batch_size`` patches drawn at random (Adam, ``learning_rate``, constant or falling along half a
    cosine, ``learning_rate_schedule``); the models after the ``checkpoints`` (iteration counts) are the
    candidates. A vertebra counts as segmented in a patch when ``done_share`` of its voxels there are in the
    memory (:func:`expert_target`); ``search_share`` of the sliding search's patches are kept (all of the
    climbs'), of the main network's run alone (``runs`` = ``main``) or of every run the pipeline makes
    (``pipeline``: also the fallback's, where the main network stalls), in each scan and in ``crops`` random
    crops of it along z (:func:`.data.case_crops`); ``sampler_share`` of each batch's patches are drawn instead by
    §3.6's sampler from the same scans (:func:`~vertebra_traversal.training.patches.model_patches`; 0: none);
    ``seed`` seeds those choices and the batches. Each checkpoint is a candidate at each of ``shares``: its
    decoders' weights mixed into the model's as it was, ``(1 - s) * model + s * checkpoint`` (1: the checkpoint
    itself, :func:`candidate_state`). A candidate is kept only where it identifies on the aside scans at least
    the model's share of the vertebrae it finds (``identification`` = ``rate``) or at least as many vertebrae
    (``count``: one that finds vertebrae whose level the label path cannot say, such as the MR model's neck
    bodies, lowers the rate while it names as many right; ``none``: Dice alone, where the label path is trained
    again on the new model's runs afterwards; :func:`choose_checkpoint`)."""

    iterations: int = 150
    checkpoints: Tuple[int, ...] = (50, 75, 100, 150)
    learning_rate: float = 3e-4
    learning_rate_schedule: str = "cosine"
    batch_size: int = 4
    done_share: float = 0.2
    search_share: float = 0.5
    runs: str = "main"
    crops: int = 0
    sampler_share: float = 0.0
    seed: int = 0
    shares: Tuple[float, ...] = (1.0,)
    identification: str = "rate"

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoints", tuple(sorted(set(int(c) for c in self.checkpoints))))
        object.__setattr__(self, "shares", tuple(sorted(set(float(s) for s in self.shares))))
        check_settings(self, (("iterations", self.iterations >= 1, "at least 1"),
                              ("batch_size", self.batch_size >= 1, "at least 1"),
                              ("learning_rate", self.learning_rate > 0, "positive"),
                              ("done_share", 0 < self.done_share <= 1, "in (0, 1]"),
                              ("search_share", 0 <= self.search_share <= 1, "in [0, 1]"),
                              ("crops", self.crops >= 0, "0 or more"),
                              ("sampler_share", 0 <= self.sampler_share < 1 and
                               (self.sampler_share == 0 or 1 <= self.sampled_per_batch < self.batch_size),
                               "0, or a share of the batch size that leaves at least one patch of each kind"),
                              ("checkpoints", bool(self.checkpoints) and 1 <= self.checkpoints[0]
                               and self.checkpoints[-1] <= self.iterations, "between 1 and the iterations"),
                              ("shares", bool(self.shares) and all(0 < s <= 1 for s in self.shares), "in (0, 1]")))
        check_choice("runs", self.runs, RUNS)
        check_choice("identification", self.identification, IDENTIFICATION)
        check_choice("learning_rate_schedule", self.learning_rate_schedule, LR_SCHEDULES)

    @property
    def sampled_per_batch(self) -> int:
        """Patches of each batch drawn by §3.6's sampler: ``sampler_share`` of the batch size, rounded."""
        return int(round(self.batch_size * self.sampler_share))


def expert_target(reference: np.ndarray, memory: np.ndarray, direction: str = "up",
                  done_share: float = 0.2) -> np.ndarray:
    """The mask the traversal should be given for one patch: the voxels of the first reference vertebra in
    traversal order (``direction``, §3.3) of which less than ``done_share`` of the voxels in the patch are in
    the memory, minus the memory; all False where every vertebra in the patch is segmented.

    ``reference``: VerSe ids (D, H, W) of the patch; ``memory``: bool (D, H, W), the network's own masks.
    Returns bool (D, H, W)."""
    present = [int(v) for v in np.unique(reference) if v and anatomy.is_valid_label(int(v))]
    done = [v for v in present
            if np.count_nonzero(memory & (reference == v)) >= done_share * np.count_nonzero(reference == v)]
    target = first_unsegmented(present, done, direction)
    return (reference == target) & ~memory if target else np.zeros(reference.shape, bool)


@dataclass(frozen=True)
class MaskPatches:
    """The kept patches of one scan's traversal, in the order evaluated: ``images`` float16 (N, D, H, W)
    normalised as the network saw them, ``memories`` and ``targets`` bool (N, D, H, W) (:func:`expert_target`),
    ``centers`` int (N, 3) model-grid (z, y, x) voxels, ``phases`` "search" or "converge" (N,)."""

    case_id: str
    images: np.ndarray
    memories: np.ndarray
    targets: np.ndarray
    centers: np.ndarray
    phases: Tuple[str, ...]

    def __len__(self) -> int:
        return len(self.phases)


Visited = Tuple[List[Tuple[Tuple[float, float, float], str]], List[Tuple[np.ndarray, np.ndarray, float, int]]]


def _main_run(array: np.ndarray, model: LoadedModel) -> Visited:
    """(centre (z, y, x) and phase of each patch, its recorded call) of the main network's traversal of the
    normalised model-grid ``array``, with the model's traversal settings."""
    config = traversal_config(model.metadata, SegmentConfig())
    recorder = RecordingPredictor(TorchPredictor(replace(model, module=named_networks(model)["main"]),
                                                 batch_size=config.search_batch))
    events: List[PatchEvent] = []
    traverse(array, recorder, config, on_event=lambda e: events.append(e) if isinstance(e, PatchEvent) else None)
    return [(e.center_zyx, e.phase) for e in events], recorder.calls


def _pipeline_runs(image: sitk.Image, model_image: sitk.Image, model: LoadedModel) -> Visited:
    """The same for every traversal :func:`~vertebra_traversal.pipeline.segment_image` makes of ``image`` (the
    main network's, and the fallback's where that stalls), centres mapped back from LPS to ``model_image``."""
    recorders: List[RecordingPredictor] = []

    def record(predictor: Predictor) -> Predictor:
        recorders.append(RecordingPredictor(predictor))
        return recorders[-1]

    events: List[dict] = []
    segment_image(image, model, SegmentConfig(), predictor_hook=record,
                  on_event=lambda e: events.append(e) if e["event"] == "patch" else None)
    direction = np.asarray(model_image.GetDirection()).reshape(3, 3)
    ijk = ((np.array([e["center_lps_mm"] for e in events]).reshape(-1, 3) - model_image.GetOrigin()) @ direction
           / model_image.GetSpacing())
    return ([(tuple(float(c) for c in zyx), e["phase"]) for zyx, e in zip(ijk[:, ::-1], events)],
            [c for r in recorders for c in r.calls])


def capture_patches(image: sitk.Image, reference: sitk.Image, model: LoadedModel, tuning: MaskTuning = MaskTuning(),
                    case_id: str = "") -> MaskPatches:
    """Traverse ``image`` as ``tuning.runs`` says (``main``: the main network once, with the model's traversal
    settings, :func:`~vertebra_traversal.pipeline.traversal_config`; ``pipeline``: every run the pipeline
    makes) and keep the patches with their :func:`expert_target` from ``reference`` (VerSe ids on the grid of
    ``image``), both resampled to the model grid as the pipeline resamples them."""
    meta = model.metadata
    model_image = to_model_grid(image, meta.spacing_mm, "linear")
    labels = sitk.GetArrayFromImage(to_model_grid(reference, meta.spacing_mm, "nearest"))
    if tuning.runs == "main":
        array = normalize(sitk.GetArrayFromImage(model_image), NormalizationSpec.from_json(meta.normalization))
        visited, calls = _main_run(array, model)
    else:
        visited, calls = _pipeline_runs(image, model_image, model)
    if len(visited) != len(calls):
        raise RuntimeError(f"{case_id}: {len(visited)} patch events for {len(calls)} recorded patches")
    if labels.shape != sitk.GetArrayViewFromImage(model_image).shape:
        raise RuntimeError(f"{case_id}: the label map resamples to {labels.shape} voxels, the image to "
                           f"{sitk.GetArrayViewFromImage(model_image).shape}")
    rng = np.random.default_rng([tuning.seed, zlib.crc32(case_id.encode())])
    kept = [k for k, (_, phase) in enumerate(visited) if phase != "search" or rng.random() < tuning.search_share]
    size = tuple(int(p) for p in meta.patch_size)
    centers = np.array([[int(round(c)) for c in visited[k][0]] for k in kept], int).reshape(-1, 3)
    memories = np.array([calls[k][1] > 0.5 for k in kept], bool).reshape(-1, *size)
    targets = [expert_target(crop_patch(labels, c, size, 0).astype(np.uint8), m, meta.direction, tuning.done_share)
               for c, m in zip(centers, memories)]
    return MaskPatches(case_id, np.array([calls[k][0] for k in kept], np.float16).reshape(memories.shape),
                       memories, np.array(targets, bool).reshape(memories.shape), centers,
                       tuple(visited[k][1] for k in kept))


def joined(case_id: str, parts: Sequence[MaskPatches]) -> MaskPatches:
    """The patches of ``parts`` as one :class:`MaskPatches` (each part's centres on its own model grid)."""
    return MaskPatches(case_id, *(np.concatenate([getattr(p, name) for p in parts])
                                  for name in ("images", "memories", "targets", "centers")),
                       tuple(phase for p in parts for phase in p.phases))


def capture_case(case: TrainingCase, model_path: Path, tuning: MaskTuning = MaskTuning()) -> MaskPatches:
    """:func:`capture_patches` of one case's files and of ``tuning.crops`` random crops of it along z
    (:func:`.data.case_crops`; the cut vertebrae are the crop's); the model is loaded once per process."""
    image = read_image(case.image)
    reference = read_label_map(case.labels, reference=image)
    model = loaded_model(model_path)
    parts = [capture_patches(image, reference, model, tuning, case.case_id)]
    for crop_id, image_crop, reference_crop in case_crops(case.case_id, image, reference, tuning.crops,
                                                          tuning.seed, 1):
        parts.append(capture_patches(image_crop, reference_crop, model, tuning, crop_id))
    return joined(case.case_id, parts)


def _batch(scans: Sequence[MaskPatches], picks: Sequence[Tuple[int, int]], spacing_mm: Sequence[float],
           sampled: Sequence[Dict[str, np.ndarray]] = ()) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs (B, 2, D, H, W), targets and §3.6 surface weights (B, 1, D, H, W)) of the picked patches, then
    of the ``sampled`` ones (the sampler's samples: ``input``, ``target``, ``weights``)."""
    inputs, targets, weights = [], [], []
    for i, j in picks:
        scan = scans[i]
        inputs.append(np.stack([scan.images[j].astype(np.float32), scan.memories[j].astype(np.float32)]))
        targets.append(scan.targets[j][None].astype(np.float32))
        weights.append(surface_weights(scan.targets[j], spacing_mm)[None])
    for sample in sampled:
        inputs.append(sample["input"])
        targets.append(sample["target"])
        weights.append(sample["weights"])
    return tuple(torch.from_numpy(np.stack(a)) for a in (inputs, targets, weights))  # type: ignore[return-value]


def segmentation_parameters(net: IterativeFCN) -> List[torch.nn.Parameter]:
    """The parameters :func:`tune_segmentation_path` trains: the decoders' and the output layer's."""
    return [p for module in (net.decoders, net.seg_out) for p in module.parameters()]


def tune_segmentation_path(net: IterativeFCN, scans: Sequence[MaskPatches], spacing_mm: Sequence[float],
                           tuning: MaskTuning = MaskTuning(), on_checkpoint: Optional[Callable[[int], None]] = None,
                           progress: Optional[Callable[[str], None]] = None,
                           sampler: Optional[Sequence[Dict[str, np.ndarray]]] = None) -> List[float]:
    """Train :func:`segmentation_parameters` of ``net`` in place on the patches of ``scans``, each batch's
    last ``tuning.sampled_per_batch`` patches taken in order from ``sampler`` (samples with ``input``,
    ``target`` and ``weights``, :func:`~vertebra_traversal.training.patches.model_patches`) (loss
    λ·FP_soft + FN_soft with λ = 1 and §3.6's surface weights, over the reference volume in voxels at
    ``spacing_mm`` (z, y, x)); everything else frozen and in eval mode. ``on_checkpoint(iteration)`` after
    each of ``tuning.checkpoints``; the rate falls over ``tuning.iterations`` and the training stops at the
    last checkpoint. Returns the loss of every batch."""
    index = [(i, j) for i, scan in enumerate(scans) for j in range(len(scan))]
    if not index:
        raise ValueError("no patch was recorded: nothing to train on")
    extra = tuning.sampled_per_batch
    if extra and sampler is None:
        raise ValueError(f"sampler_share {tuning.sampler_share:g} needs the sampler's patches")
    net.eval()
    trained = segmentation_parameters(net)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    divisor = reference_voxels(LossConfig(), spacing_mm)
    optimizer = torch.optim.Adam(trained, lr=tuning.learning_rate)
    rng = np.random.default_rng(tuning.seed)
    losses: List[float] = []
    for iteration in range(tuning.checkpoints[-1]):  # nothing after the last checkpoint is kept
        picks = rng.choice(len(index), min(tuning.batch_size - extra, len(index)), replace=False)
        inputs, targets, weights = _batch(scans, [index[k] for k in picks], spacing_mm,
                                          [sampler[iteration * extra + k] for k in range(extra)] if extra else ())
        for group in optimizer.param_groups:
            group["lr"] = scheduled_learning_rate(tuning.learning_rate, tuning.learning_rate_schedule, iteration,
                                                  tuning.iterations)
        loss = segmentation_error(torch.sigmoid(net.forward_logits(inputs)[0]), targets, weights, 1.0) / divisor
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress is not None and (iteration + 1) % 25 == 0:
            progress(f"iteration {iteration + 1}/{tuning.iterations}: loss {np.mean(losses[-25:]):.3f}")
        if on_checkpoint is not None and iteration + 1 in tuning.checkpoints:
            on_checkpoint(iteration + 1)
    for p in net.parameters():
        p.requires_grad_(True)
    return losses


def tuned_metadata(metadata: ModelMetadata, record: Dict[str, Any]) -> ModelMetadata:
    """The metadata of a model whose segmentation path was tuned: the label reading kept (the label values of a
    patch do not change), a fitted label confidence dropped (it describes the old model's runs), ``record``
    added to the training record as ``mask_tuning``."""
    return replace(metadata, label_confidence={}, training=dict(metadata.training, mask_tuning=record))


def _score_case(case: TrainingCase, model_path: Path) -> CaseScore:
    return score_scan(loaded_model(model_path), case)


def score_model(model_path: Path, cases: Sequence[TrainingCase], workers: int = 0) -> GroupSummary:
    """Segment ``cases`` with the model file (its own settings) and pool their scores into one Table 1 row
    (:func:`~vertebra_traversal.evaluate.summarize`, completely visible vertebrae)."""
    return summarize(map_cases(_score_case, cases, model_path, workers=workers), "aside")


@dataclass(frozen=True)
class MaskTuningResult:
    """``chosen``: the kept candidate, (iteration count, share) (None: none beat the model as it is);
    ``scores``: the held-aside row of each candidate, :data:`START` for the model as it is; ``losses``: every
    batch's loss; ``network``: the main network with the kept candidate's weights (or the model's own);
    ``patches``: patches recorded."""

    chosen: Optional[Candidate]
    scores: Dict[Candidate, GroupSummary]
    losses: List[float]
    network: IterativeFCN
    patches: int


def tune_masks(model_path: Path, training: Sequence[TrainingCase], aside: Sequence[TrainingCase], work_dir: Path,
               tuning: MaskTuning = MaskTuning(), workers: int = 0,
               progress: Optional[Callable[[str], None]] = None) -> MaskTuningResult:
    """Record the patches of the traversals of ``training`` (:func:`capture_case`), train the segmentation path on
    them (:func:`tune_segmentation_path`; with ``tuning.sampler_share``, §3.6's patches of ``training`` prepared on
    the model grid in ``work_dir``), score the model as it is and each checkpoint at each of ``tuning.shares``
    on ``aside`` (:func:`score_model`; each candidate is written to ``work_dir`` for that and removed after) and
    keep the one :func:`choose_checkpoint` picks. ``workers``: processes for recording and scoring."""
    say = progress or (lambda text: None)
    model = loaded_model(model_path)
    sampler = _sampler(model, training, work_dir, tuning, workers) if tuning.sampled_per_batch else None
    scans = map_cases(capture_case, training, model_path, tuning, workers=workers,
                      progress=lambda done, total, case_id: say(f"recorded {case_id} ({done}/{total})"))
    patches = sum(len(s) for s in scans)
    say(f"{patches} patches of {len(scans)} scans")
    scores = {START: score_model(model_path, aside, workers)}
    say(f"as it is: {_describe(scores[START])}")
    net = main_network(model)
    children = named_networks(model)
    weights = {0: copy.deepcopy(net.state_dict())}
    probe = copy.deepcopy(net).eval()

    def checkpoint(iteration: int) -> None:
        weights[iteration] = copy.deepcopy(net.state_dict())
        for share in tuning.shares:
            probe.load_state_dict(candidate_state(weights[0], weights[iteration], share))
            name = candidate_name((iteration, share))
            path = save_torchscript(with_networks(probe, children.get("start"), children.get("rescue")),
                                    model.metadata, work_dir / f"checkpoint-{name}.pt")
            try:
                scores[iteration, share] = score_model(path, aside, workers)
            finally:
                path.unlink()
            say(f"checkpoint {name}: {_describe(scores[iteration, share])}")

    losses = tune_segmentation_path(net, scans, model.metadata.spacing_mm[::-1], tuning, checkpoint, say, sampler)
    chosen = choose_checkpoint(scores[START], {k: v for k, v in scores.items() if k != START}, tuning.identification)
    net.load_state_dict(candidate_state(weights[0], weights[chosen[0]], chosen[1]) if chosen else weights[0])
    return MaskTuningResult(chosen, scores, losses, net.eval(), patches)


def _sampler(model: LoadedModel, cases: Sequence[TrainingCase], work_dir: Path, tuning: MaskTuning,
             workers: int) -> Sequence[Dict[str, np.ndarray]]:
    """§3.6's patches of ``cases``, as many as the training takes, prepared on the model grid under ``work_dir``."""
    meta = model.metadata
    if len(set(meta.spacing_mm)) != 1:
        raise ValueError(f"the sampler needs an isotropic model grid; the model's is {tuple(meta.spacing_mm)} mm")
    prepared = prepare_cases(cases, work_dir / "cache", float(meta.spacing_mm[0]),
                             NormalizationSpec.from_json(meta.normalization), workers=workers)
    return model_patches(prepared, meta, tuning.seed, tuning.checkpoints[-1] * tuning.sampled_per_batch)


def _describe(row: GroupSummary) -> str:
    return (f"Dice {100 * row.dice_mean:.1f} %, identification {100 * row.identification_accuracy:.1f} %, "
            f"missed {row.missed}, false detections {row.false_detections}")

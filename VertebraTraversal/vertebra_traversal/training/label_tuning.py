"""The label path trained where the traversal reads labels (extends paper §3.4 and §3.6).

The traversal reads each vertebra's label once, from the patch where it converged (§3.3), and the
instance memory of that patch holds the network's own masks. Training (§3.6) shows the label path the
reference memory instead. This module runs a model's traversal on labelled scans with the model's own
settings (:func:`~vertebra_traversal.pipeline.segment_image`), records for every vertebra of the output
the patch its label value was read from and up to ``approach`` single-patch steps of the climb that led
there, and pairs them with the reference vertebra the output vertebra is matched to, by largest overlap
as the evaluation matches them (§4.2). The label path alone is then trained on those patches, on the
frozen network's bottleneck features, and the epoch kept that identifies the most completely visible
vertebrae of held-aside scans, read as the model reads its labels. Masks, completeness and the moves of
the traversal stay exactly as they were: only the label values change.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch

from .. import anatomy
from ..checkpoint import LoadedModel, ModelMetadata
from ..dataset import read_case_info
from ..imageio import read_image, read_label_map
from ..labeling import LabelingConfig, refine_labels
from ..metrics import largest_overlap_matches
from ..network import IterativeFCN, NetworkConfig
from ..pipeline import SegmentationResult, segment_image
from ..predictor import PatchPrediction, Predictor
from ..segment_config import SegmentConfig
from ..start_network import named_networks
from .config import LR_SCHEDULES, check_choice, check_settings, scheduled_learning_rate
from .data import TrainingCase, case_crops
from .parallel import loaded_model, map_cases
from .trainer import inherited_reading

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LabelTuning:
    """How the label path is trained on the traversal's patches: ``epochs`` passes over the training
    patches in batches of ``batch_size`` (Adam, ``learning_rate``, ``weight_decay``; the rate constant or
    falling along half a cosine over all batches, ``learning_rate_schedule``), ``approach`` earlier
    single-patch steps kept per vertebra besides the patch its label was read from, ``crops`` random crops
    along z recorded per case besides the whole scan (:func:`capture_case`), ``seed`` for the order and
    the crops."""

    epochs: int = 20
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    learning_rate_schedule: str = "constant"
    batch_size: int = 32
    approach: int = 2
    crops: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_settings(self, (("epochs", self.epochs >= 1, "at least 1"),
                              ("batch_size", self.batch_size >= 1, "at least 1"),
                              ("approach", self.approach >= 0, "0 or more"),
                              ("crops", self.crops >= 0, "0 or more"),
                              ("weight_decay", self.weight_decay >= 0, "0 or more"),
                              ("learning_rate", self.learning_rate > 0, "positive")))
        check_choice("learning_rate_schedule", self.learning_rate_schedule, LR_SCHEDULES)


class RecordingPredictor:
    """A :class:`~vertebra_traversal.predictor.Predictor` that answers with ``inner`` and keeps every patch
    it was given: ``calls`` holds (image float32 (D, H, W), memory float32 (D, H, W), label value, batch size)."""

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.calls: List[Tuple[np.ndarray, np.ndarray, float, int]] = []

    def __call__(self, images: np.ndarray, memories: np.ndarray) -> PatchPrediction:
        prediction = self.inner(images, memories)
        values = np.ravel(prediction.label_values)
        for i, value in enumerate(values):
            self.calls.append((images[i].copy(), memories[i].copy(), float(value), len(values)))
        return prediction


@dataclass(frozen=True)
class CapturedScan:
    """The recorded patches of one scan. ``features`` (N, C, d, h, w): the frozen network's bottleneck for
    each patch; ``targets`` (N,): regression value of the reference vertebra (§3.4); ``final`` (N,): the
    patch the label was read from; ``order`` (N,): the vertebra's place in the output, 1 = top-most;
    ``counted`` (N,): it is matched to a completely visible reference vertebra ``reference`` (N,) (VerSe id).
    ``features`` is None where the scan gave no patch."""

    case_id: str
    features: Optional[torch.Tensor]
    targets: torch.Tensor
    final: np.ndarray
    order: np.ndarray
    reference: np.ndarray
    counted: np.ndarray


def tuned_metadata(init: Path, metadata: ModelMetadata) -> Tuple[ModelMetadata, str]:
    """The metadata of a model whose label path was tuned from ``init`` (its ``metadata``), and what became of
    its label reading (``"none"``, ``"kept"`` or ``"dropped"``): as a fine-tune does
    (:func:`~vertebra_traversal.training.trainer.inherited_reading`), a Gaussian reading of the paper's
    values stays and a table fitted to the old label values goes; a fitted label confidence goes too."""
    reading, note = inherited_reading(init, metadata)
    return replace(metadata, label_calibration=reading, label_confidence={}), note


def main_network(model: LoadedModel) -> IterativeFCN:
    """The model's main network as a trainable module (eval mode), its weights copied from the file."""
    net = IterativeFCN(NetworkConfig.from_json(model.metadata.network))
    net.load_state_dict(named_networks(model)["main"].state_dict())
    return net.eval()


def vertebra_targets(reference: np.ndarray, output: np.ndarray) -> Dict[int, Tuple[int, bool]]:
    """For each output label id: (reference id it is the largest-overlap match of, True), the one of most
    overlap where it matches several; else (reference id it overlaps most, False); absent without overlap.
    Both maps (z, y, x) VerSe ids on one grid."""
    overlap = {}
    for ref_id, (out_id, voxels) in largest_overlap_matches(reference, output).items():
        if voxels > overlap.get(out_id, (0, 0))[1]:
            overlap[out_id] = (ref_id, voxels)
    targets = {out_id: (ref_id, True) for out_id, (ref_id, _) in overlap.items()}
    for out_id, (ref_id, _) in largest_overlap_matches(output, reference).items():
        targets.setdefault(out_id, (ref_id, False))
    return targets


def _patches_of(result: SegmentationResult, recorders: Sequence[RecordingPredictor], approach: int
                ) -> Dict[int, List[Tuple[np.ndarray, np.ndarray]]]:
    """Output label id -> [the patch its label was read from, then up to ``approach`` steps before it]."""
    values = [v.label_value for v in result.vertebrae]
    calls = next((r.calls for r in reversed(recorders)
                  if all(any(c[2] == value for c in r.calls) for value in values)), None)
    if calls is None:
        raise RuntimeError("the label value of a vertebra was not found among the recorded patches")
    finals = {value: max(k for k, c in enumerate(calls) if c[2] == value) for value in values}
    taken = set(finals.values())
    patches = {}
    for v in result.vertebrae:
        k = finals[v.label_value]
        picks = [k]
        while len(picks) <= approach and k > 0 and calls[k - 1][3] == 1 and k - 1 not in taken:
            k -= 1
            picks.append(k)
        patches[v.label] = [(calls[i][0], calls[i][1]) for i in picks]
    return patches


@dataclass(frozen=True)
class LabelPatch:
    """One recorded patch of an output vertebra: ``image`` and ``memory`` float32 (D, H, W) as the network
    saw them, ``reference`` the VerSe id of the reference vertebra the output vertebra is paired with
    (:func:`vertebra_targets`), ``final`` for the patch its label was read from, ``order`` its place in the
    output (1 = top-most), ``counted`` when it is the match of a completely visible reference vertebra."""

    image: np.ndarray
    memory: np.ndarray
    reference: int
    final: bool
    order: int
    counted: bool


def label_patches(result: SegmentationResult, recorders: Sequence[RecordingPredictor], reference: np.ndarray,
                  complete: Optional[Dict[int, bool]] = None, approach: int = 2) -> List[LabelPatch]:
    """The label patches of ``result``'s vertebrae, recorded by ``recorders`` (one per traversal the run
    made), paired with ``reference`` ((z, y, x) VerSe ids on the grid of ``result.labels``); ``complete``:
    reference completeness per id (None: every reference vertebra counts as complete). A vertebra that
    overlaps no reference vertebra gives none."""
    targets = vertebra_targets(reference, sitk.GetArrayFromImage(result.labels))
    patches = _patches_of(result, recorders, approach)
    out = []
    for v in result.vertebrae:
        if v.label not in targets:
            continue  # overlaps no reference vertebra: nothing to learn
        ref_id, matched = targets[v.label]
        counted = matched and (complete is None or bool(complete.get(ref_id, False)))
        out.extend(LabelPatch(image, memory, ref_id, n == 0, v.order, counted)
                   for n, (image, memory) in enumerate(patches[v.label]))
    return out


def capture_scan(image: sitk.Image, reference: sitk.Image, model: LoadedModel, net: IterativeFCN,
                 complete: Optional[Dict[int, bool]] = None, approach: int = 2, case_id: str = "") -> CapturedScan:
    """Segment ``image`` with ``model`` (its own settings), record its :func:`label_patches` and pass them
    through ``net`` (:func:`main_network` of ``model``) to the bottleneck (``IterativeFCN.encode``).
    ``reference``: VerSe-id map on the grid of ``image``; ``complete`` as for :func:`label_patches`."""
    recorders: List[RecordingPredictor] = []

    def record(predictor: Predictor) -> Predictor:
        recorders.append(RecordingPredictor(predictor))
        return recorders[-1]

    result = segment_image(image, model, SegmentConfig(), predictor_hook=record)
    patches = label_patches(result, recorders, sitk.GetArrayFromImage(reference), complete, approach)
    x = np.stack([np.stack([p.image, p.memory]) for p in patches]).astype(np.float32) if patches else None
    with torch.no_grad():  # plain tensors (not inference ones): training reads them
        features = (torch.cat([net.encode(torch.from_numpy(x[i:i + 16]))[-1] for i in range(0, len(x), 16)])
                    if x is not None else None)
    return CapturedScan(case_id, features,
                        torch.tensor([anatomy.vertebra(p.reference).regression_value for p in patches],
                                     dtype=torch.float32),
                        np.array([p.final for p in patches], bool), np.array([p.order for p in patches], int),
                        np.array([p.reference for p in patches], int), np.array([p.counted for p in patches], bool))


@lru_cache(maxsize=2)
def _loaded_main(model_path: Path) -> Tuple[LoadedModel, IterativeFCN]:
    """(the model file, its :func:`main_network`), built once per process (:func:`~.parallel.loaded_model`)."""
    model = loaded_model(model_path)
    return model, main_network(model)


def _complete_in_crop(reference: np.ndarray, crop: np.ndarray, complete: Dict[int, bool]) -> Dict[int, bool]:
    """Completeness per id of the reference vertebrae in a crop of the scan (``reference`` and ``crop`` VerSe-id
    maps): complete in the scan (``complete``) and not one of its voxels cut off."""
    whole, kept = np.bincount(reference.ravel(), minlength=256), np.bincount(crop.ravel(), minlength=256)
    return {label: bool(complete.get(label, False)) and kept[label] == whole[label]
            for label in map(int, np.flatnonzero(kept[1:]) + 1)}


def capture_case(case: TrainingCase, model_path: Path, tuning: LabelTuning = LabelTuning()) -> List[CapturedScan]:
    """:func:`capture_scan` of one case's files, its completeness as ``evaluate`` reads it
    (:func:`~vertebra_traversal.dataset.read_case_info`: the sidecar, or every labelled vertebra complete where
    there is none), then of ``tuning.crops`` random crops of it along z (:func:`~vertebra_traversal.geometry.
    crop_range_mm`, as the paper's z-crop experiment draws them; a vertebra cut by the crop is incomplete
    there), ``case_id`` ``<case>-crop<n>``. The model and its main network are loaded once per process
    (:func:`_loaded_main`)."""
    model, net = _loaded_main(model_path)
    image = read_image(case.image)
    reference = read_label_map(case.labels, reference=image)
    complete = {v.label: v.complete for v in read_case_info(case.files, labels=reference).vertebrae}
    scans = [capture_scan(image, reference, model, net, complete, tuning.approach, case.case_id)]
    whole = sitk.GetArrayViewFromImage(reference)
    for crop_id, image_crop, crop in case_crops(case.case_id, image, reference, tuning.crops, tuning.seed, 2):
        scans.append(capture_scan(image_crop, crop, model, net,
                                  _complete_in_crop(whole, sitk.GetArrayViewFromImage(crop), complete),
                                  tuning.approach, crop_id))
    return scans


def capture_cases(cases: Sequence[TrainingCase], model_path: Path, tuning: LabelTuning = LabelTuning(),
                  workers: int = 0, progress: Optional[Progress] = None) -> List[CapturedScan]:
    """:func:`capture_case` of every case (the whole scans and their crops, in order), in ``workers`` processes
    of one torch thread each (0: here)."""
    def report(done: int, total: int, case_id: str) -> None:
        if progress is not None:
            progress(f"captured {case_id} ({done}/{total})")

    per_case = map_cases(capture_case, cases, model_path, tuning, workers=workers, progress=report)
    return [scan for scans in per_case for scan in scans]


def identified(path: torch.nn.Module, scans: Sequence[CapturedScan], labeling: LabelingConfig) -> Tuple[int, int]:
    """(identified, counted) complete vertebrae of ``scans`` with labels read from ``path``'s values on each
    vertebra's final patch through ``labeling`` (the output's vertebrae top first)."""
    right = total = 0
    with torch.no_grad():
        for scan in scans:
            rows = np.flatnonzero(scan.final)
            if rows.size == 0:
                continue
            rows = rows[np.argsort(scan.order[rows])]
            values = torch.relu(path(scan.features[rows])).tolist()
            labels = refine_labels(values, labeling).labels
            counted = scan.counted[rows]
            total += int(counted.sum())
            right += sum(int(lab == ref) for lab, ref, c in zip(labels, scan.reference[rows], counted) if c)
    return right, total


def tune_label_path(net: IterativeFCN, train: Sequence[CapturedScan], select: Sequence[CapturedScan],
                    labeling: LabelingConfig, tuning: LabelTuning = LabelTuning(),
                    progress: Optional[Progress] = None) -> Tuple[Optional[int], List[Dict[str, Any]]]:
    """Train ``net.label_path`` in place on ``train`` (L1 on the regression value, §3.6), batch norm frozen;
    keep the epoch with the most identified complete vertebrae of ``select``, or the label path as it was
    when no epoch identifies more. Returns (best epoch or None, one record per epoch, with the learning
    rate of its last batch)."""
    used = [s for s in train if s.features is not None]
    if not used:
        raise ValueError("no recorded patch overlaps a reference vertebra: nothing to train on")
    features, targets = torch.cat([s.features for s in used]), torch.cat([s.targets for s in used])
    path = net.label_path.eval()
    start = identified(path, select, labeling)
    best: Tuple[int, Optional[int], dict] = (start[0], None, copy.deepcopy(path.state_dict()))
    optimizer = torch.optim.Adam(path.parameters(), lr=tuning.learning_rate, weight_decay=tuning.weight_decay)
    rng = np.random.default_rng(tuning.seed)
    history: List[Dict[str, Any]] = [{"epoch": 0, "loss": None, "identified": start[0], "counted": start[1]}]
    batches = -(-len(targets) // tuning.batch_size)
    for epoch in range(1, tuning.epochs + 1):
        losses = []
        order = rng.permutation(len(targets))
        for b, s in enumerate(range(0, len(order), tuning.batch_size)):
            rate = scheduled_learning_rate(tuning.learning_rate, tuning.learning_rate_schedule,
                                           (epoch - 1) * batches + b, tuning.epochs * batches)
            for group in optimizer.param_groups:
                group["lr"] = rate
            batch = torch.from_numpy(order[s:s + tuning.batch_size])
            loss = torch.mean(torch.abs(torch.relu(path(features[batch])) - targets[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        right, total = identified(path, select, labeling)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "learning_rate": rate, "identified": right,
                        "counted": total})
        if progress is not None:
            progress(f"epoch {epoch}/{tuning.epochs}: loss {np.mean(losses):.3f}, identified {right} of {total}")
        if right > best[0]:
            best = (right, epoch, copy.deepcopy(path.state_dict()))
    path.load_state_dict(best[2])
    return best[1], history

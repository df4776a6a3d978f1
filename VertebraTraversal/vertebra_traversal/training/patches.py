"""The patch dataset the DataLoader workers run (paper §3.6).

Sample ``i`` is a pure function of ``(seed, i)``: its random generator is
``numpy.random.default_rng([seed, i])``. The run is therefore reproducible and resumable whatever the
number of workers: resuming at iteration ``n`` simply continues with sample ``n * batch_size``.

One sample (all arrays on the model grid, (z, y, x), axis 0 inferior -> superior):

* ``input`` float32 (2, P, P, P): normalised image and binary instance memory (§3.2);
* ``target`` float32 (1, P, P, P): mask of the first not-yet-segmented vertebra;
* ``weights`` float32 (1, P, P, P): surface weights ω (§3.6), computed here in the worker;
* ``label`` float32 (): regression target (§3.4); ``complete`` float32 (): completeness target (§3.5).
"""
from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..metadata import ModelMetadata
from ..normalization import NormalizationSpec, pad_value
from .augment import AugmentConfig, augment_patch, random_z_window
from .config import TrainingConfig
from .data import PreparedCase
from .loss import LossConfig, surface_weights
from .sampler import (PatchPlan, SamplingConfig, TargetInfo, extract_patch, memory_mask, overreaching_memory,
                      partial_memory_mask, patch_targets, plan_patch, target_mask)


@dataclass(frozen=True)
class PatchSettings:
    """Everything a worker needs besides the cases."""

    sampling: SamplingConfig
    augment: AugmentConfig
    loss: LossConfig
    pad_value: float
    seed: int

    @classmethod
    def of(cls, config: TrainingConfig, seed: Optional[int] = None) -> "PatchSettings":
        """The settings of a training configuration (its own seed unless ``seed`` is given)."""
        return cls(config.sampling(), config.augment, config.loss, pad_value(config.normalization),
                   config.seed if seed is None else seed)


def build_sample(image: np.ndarray, labels: np.ndarray, case: PreparedCase, settings: PatchSettings,
                 rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Draw, augment and annotate one patch of a case (arrays (D, H, W) on the model grid)."""
    window = random_z_window(case.index.shape[0], rng, settings.augment)
    plan = plan_patch(case.index, rng, settings.sampling, window)
    return annotate(image, labels, case, settings, plan, rng)


def annotate(image: np.ndarray, labels: np.ndarray, case: PreparedCase, settings: PatchSettings,
             plan: PatchPlan, rng: Optional[np.random.Generator]) -> Dict[str, np.ndarray]:
    """Cut the patch of ``plan``, augment it when ``rng`` is given, and derive the targets.

    With ``rng`` the memory may also be partial (``settings.sampling.partial_memory``) or overreach into
    the target (``settings.sampling.overreach_memory``); without it (the fixed validation patches) it is
    the reference memory of §3.6.
    """
    size = settings.sampling.patch_size
    image_patch = extract_patch(image, plan.centre, size, settings.pad_value, plan.z_window).astype(np.float32)
    label_patch = extract_patch(labels, plan.centre, size, 0, plan.z_window)
    info = patch_targets(label_patch, plan, case.index, settings.sampling)
    if rng is not None:
        image_patch, label_patch = augment_patch(image_patch, label_patch, case.spacing_mm, rng,
                                                 settings.augment, settings.pad_value)
        sampling = settings.sampling
        memory = partial_memory_mask(label_patch, plan.memory_labels, sampling.partial_memory, rng)
        memory, target = overreaching_memory(label_patch, memory, info.label, sampling.overreach_memory, rng,
                                             sampling.direction)
    else:
        memory = memory_mask(label_patch, plan.memory_labels)
        target = target_mask(label_patch, info.label)
    return _arrays(image_patch, target, memory, info, case.spacing_mm, settings.loss)


def _arrays(image_patch: np.ndarray, target: np.ndarray, memory: np.ndarray, info: TargetInfo,
            spacing_mm: float, loss: LossConfig) -> Dict[str, np.ndarray]:
    weights = surface_weights(target, (spacing_mm,) * 3, loss.gamma, loss.sigma_mm)
    return {"input": np.stack([image_patch, memory]).astype(np.float32),
            "target": target[None].astype(np.float32), "weights": weights[None],
            "label": np.float32(info.label_value), "complete": np.float32(info.complete)}


class PatchDataset(Dataset):
    """Map-style dataset: item ``i`` is the ``i``-th training patch (see module docstring).

    Cases are chosen uniformly ("a random scan", §3.6). Arrays are memory-mapped lazily per process.
    """

    def __init__(self, cases: Sequence[PreparedCase], settings: PatchSettings, length: int) -> None:
        if not cases:
            raise ValueError("PatchDataset needs at least one case")
        self.cases = list(cases)
        self.settings = settings
        self.length = int(length)
        self._arrays: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length

    def arrays(self, number: int) -> Tuple[np.ndarray, np.ndarray]:
        if number not in self._arrays:
            self._arrays[number] = self.cases[number].load(mmap=True)
        return self._arrays[number]

    def __getitem__(self, item: int) -> Dict[str, np.ndarray]:
        rng = np.random.default_rng([self.settings.seed, int(item)])
        number = int(rng.integers(len(self.cases)))
        image, labels = self.arrays(number)
        return build_sample(image, labels, self.cases[number], self.settings, rng)


def make_loader(dataset: PatchDataset, batch_size: int, start: int, workers: int) -> DataLoader:
    """Loader over samples ``start * batch_size`` .. ``len(dataset)``, in order, batched."""
    indices = range(start * batch_size, len(dataset))
    return DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=workers,
                      persistent_workers=False, prefetch_factor=2 if workers > 0 else None,
                      worker_init_fn=_worker_init if workers > 0 else None)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's: it stops after the iteration


def fixed_samples(cases: Sequence[PreparedCase], settings: PatchSettings, count: int) -> List[Dict[str, np.ndarray]]:
    """``count`` deterministic, un-augmented patches for validation (the same at every pass)."""
    samples = []
    for item in range(count):
        rng = np.random.default_rng([settings.seed, 7919, item])
        number = item % len(cases)
        image, labels = cases[number].load(mmap=True)
        plan = plan_patch(cases[number].index, rng, settings.sampling)
        samples.append(annotate(image, labels, cases[number], settings, plan, None))
    return samples


def model_patches(cases: Sequence[PreparedCase], metadata: ModelMetadata, seed: int, length: int) -> PatchDataset:
    """``length`` patches of §3.6's sampler (the paper's sampling: 75 % in a vertebra's box, the reference
    vertebrae before the target in memory; the default augmentation) of ``cases``, prepared on the model grid
    of ``metadata``, cut to its patch size, traversal direction and padding."""
    size = {int(p) for p in metadata.patch_size}
    if len(size) != 1:
        raise ValueError(f"the sampler cuts cubic patches; the model's are {tuple(metadata.patch_size)} voxels")
    settings = PatchSettings(SamplingConfig(size.pop(), direction=metadata.direction), AugmentConfig(),
                             LossConfig(), pad_value(NormalizationSpec.from_json(metadata.normalization)), seed)
    return PatchDataset(cases, settings, length)

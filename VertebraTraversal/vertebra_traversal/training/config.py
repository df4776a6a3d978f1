"""Training configuration and presets (paper §3.6).

``paper``: the published setting -- 1 mm isotropic model grid, 128³ patches (a 128 mm field of view),
84 filters, 100 000 iterations; it needs a GPU. ``compact``: about the same field of view (120 mm) at
2.5 mm (48³ patches) with the smaller network of :func:`vertebra_traversal.network.compact_config`, so that
training and inference run on a CPU; of the networks measured it gave the best held-out accuracy for
the same training CPU time (the CT model card, ``Resources/Models/ct.md``).
``vertebra-traversal train --filters/--spacing/--patch`` makes a ``custom`` one.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from ..anatomy import MODALITIES
from ..network import NetworkConfig, compact_config, paper_config
from ..normalization import NormalizationSpec
from ..postprocess import check_completeness_rule
from .augment import AugmentConfig
from .loss import LossConfig
from .sampler import DIRECTIONS, SamplingConfig

PRESETS = ("paper", "compact")
#: Largest offset (mm, per axis) of a centred training patch from the middle of its vertebra's box.
CENTRE_JITTER_MM = 5.0
#: Fields added after run folders were first written, with the value that reproduces older runs; a field
#: at that value stays out of the run identity, so those runs still resume.
LATER_FIELDS = {"centred_fraction": 0.0, "trained_part": "all", "start_fraction": 0.0,
                "learning_rate_schedule": "constant", "partial_memory": 0.0,
                "overreach_memory": 0.0, "end_fraction": 0.0}
#: What a run trains: the whole network, or only the label path of an ``--init`` model (beyond the paper).
TRAINED_PARTS = ("all", "label-path")
#: How the learning rate moves over a run: the paper's constant rate, or a cosine decay to 0 (beyond the paper).
LR_SCHEDULES = ("constant", "cosine")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise ``ValueError("<name> must be one of <choices>, got <value>")`` unless ``value`` is a choice."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_settings(settings: Any, rules: Iterable[Tuple[str, bool, str]]) -> None:
    """Raise ``ValueError("<name> must be <need>, got <value>")`` for the first (name, ok, need) not ok, the
    value read from ``settings``."""
    for name, ok, need in rules:
        if not ok:
            raise ValueError(f"{name} must be {need}, got {getattr(settings, name)}")


def scheduled_learning_rate(rate: float, schedule: str, step: int, steps: int) -> float:
    """The learning rate of the 0-based ``step`` of ``steps``: ``rate`` throughout (``constant``), or
    (``cosine``) ``rate`` at step 0 falling along half a cosine to ``rate · (1 − cos(π / steps)) / 2`` at
    the last step."""
    if schedule == "constant":
        return float(rate)
    fraction = min(max(step, 0), steps) / steps
    return float(rate * 0.5 * (1.0 + math.cos(math.pi * fraction)))


#: Fields that do not change the trained weights; a run may be resumed with other values.
RUNTIME_FIELDS = ("workers", "validate_every", "checkpoint_every", "threads", "validation_patches",
                  "completeness_rule")


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that defines a training run.

    Attributes:
        preset: name of the preset it started from (``"paper"``, ``"compact"`` or ``"custom"``).
        iterations: planned iterations n_max (backward passes); also sets the λ schedule (§3.6).
        spacing_mm: isotropic model-grid spacing in mm.
        network: the network hyper-parameters; ``network.patch_size`` is the patch in voxels.
        modality: ``"ct"`` or ``"mr"``.
        normalization: intensity normalisation (stored in the model metadata).
        direction: traversal direction (§3.3), ``"up"`` = caudal to cranial.
        batch_size, learning_rate, beta1, beta2: Adam settings (paper: 1 patch, 1e-3, β₁ = 0.99).
        learning_rate_schedule: ``"constant"`` (the paper) or ``"cosine"``: the rate of step ``n``
            (0-based) is ``learning_rate · (1 + cos(π n / iterations)) / 2``, so the last steps barely
            move the weights and the exported model is not caught in mid-swing (see
            :meth:`learning_rate_at`).
        validate_every, checkpoint_every: iterations between validation passes / resumable checkpoints.
        workers: DataLoader worker processes (0 = sample in the main process); as many prepare the cache.
        seed: seeds weights and every patch (patch ``i`` uses the generator ``(seed, i)``).
        foreground_fraction: share of patches inside a random vertebra's bounding box (§3.6: 75 %).
        centred_fraction: share of those centred on the middle of the box, within
            ``CENTRE_JITTER_MM``, as the traversal sees a vertebra when it converges (0 = the paper).
        start_fraction: share of those drawn with an empty memory, as the traversal's search sees a scan
            before it has found anything (0 = the paper).
        partial_memory: chance of each memory vertebra of a training patch being shown only in part, as
            the traversal's own under-segmented masks sit in the memory at inference (0 = the paper's
            reference memory; :func:`.sampler.partial_memory_mask`).
        overreach_memory: chance of a training patch's memory also holding a cap of its target vertebra,
            whose rest is then the target, as the traversal's own masks may take in part of the next
            vertebra at inference (0 = the paper's reference memory; :func:`.sampler.overreaching_memory`).
        end_fraction: share of all patches drawn beyond the last vertebra in traversal order with every
            vertebra in memory, where the traversal must stop (0 = the paper; :func:`.sampler.plan_patch`).
        loss, augment: see :class:`LossConfig`, :class:`AugmentConfig`.
        verse_margin_mm: VerSe cases without sidecar are cropped along z to the labelled vertebrae
            plus this margin (paper §4.1).
        validation_patches: fixed patches per validation pass (patch-level metrics).
        threads: torch intra-op threads (0 = leave torch's default).
        completeness_rule: the trained model's ``ModelMetadata.completeness_rule`` (an inference setting,
            not part of the run identity); None = the ``--init`` model's, else ``"network"``.
        trained_part: ``"all"`` (the paper) or ``"label-path"``: only the label path of the ``--init``
            model learns (label term only; every other weight and batch-norm statistic stays as it was, so
            the segmentation and completeness outputs do not change).
    """

    preset: str
    iterations: int
    spacing_mm: float
    network: NetworkConfig
    modality: str = "ct"
    normalization: NormalizationSpec = field(default_factory=lambda: NormalizationSpec("ct"))
    direction: str = "up"
    batch_size: int = 1
    learning_rate: float = 1e-3
    beta1: float = 0.99
    beta2: float = 0.999
    validate_every: int = 1000
    checkpoint_every: int = 250
    workers: int = 2
    seed: int = 0
    foreground_fraction: float = 0.75
    centred_fraction: float = 0.0
    start_fraction: float = 0.0
    partial_memory: float = 0.0
    overreach_memory: float = 0.0
    end_fraction: float = 0.0
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    verse_margin_mm: float = 2.0
    validation_patches: int = 16
    threads: int = 0
    completeness_rule: Optional[str] = None
    trained_part: str = "all"
    learning_rate_schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.completeness_rule is not None:
            check_completeness_rule(self.completeness_rule)
        for name, choices in (("modality", MODALITIES), ("trained_part", TRAINED_PARTS),
                              ("learning_rate_schedule", LR_SCHEDULES), ("direction", DIRECTIONS)):
            check_choice(name, getattr(self, name), choices)
        check_settings(self, [(name, int(getattr(self, name)) >= 1, "at least 1")
                              for name in ("iterations", "batch_size", "validate_every", "checkpoint_every")])
        if self.workers < 0 or self.threads < 0:
            raise ValueError("workers and threads must not be negative")
        if not 0.05 <= self.spacing_mm <= 20.0:
            raise ValueError(f"spacing_mm must be within 0.05..20 mm, got {self.spacing_mm}")
        if len(set(self.network.patch_size)) != 1:
            raise ValueError(f"training patches are cubes; got patch_size {self.network.patch_size}")
        self.sampling()  # validates the sampling fields

    @property
    def patch_size(self) -> int:
        """Edge of the cubic patch in voxels (from the network configuration)."""
        return int(self.network.patch_size[0])

    def learning_rate_at(self, step: int) -> float:
        """Adam's learning rate for the 0-based step ``step`` (the step that makes iteration ``step + 1``).

        ``constant``: ``learning_rate`` throughout. ``cosine``: ``learning_rate`` at step 0, half of it at
        step ``iterations / 2``, and ``learning_rate · (1 − cos(π / iterations)) / 2`` (nearly 0) at the
        last step, ``iterations − 1``.
        """
        return scheduled_learning_rate(self.learning_rate, self.learning_rate_schedule, step, self.iterations)

    def sampling(self) -> SamplingConfig:
        jitter = int(round(CENTRE_JITTER_MM / self.spacing_mm))
        return SamplingConfig(self.patch_size, self.foreground_fraction, self.direction,
                              centred_fraction=self.centred_fraction, centre_jitter=jitter,
                              start_fraction=self.start_fraction, partial_memory=self.partial_memory,
                              overreach_memory=self.overreach_memory, end_fraction=self.end_fraction)

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["network"] = self.network.to_json()
        data["normalization"] = self.normalization.to_json()
        return data

    def identity(self) -> Dict[str, Any]:
        """The fields that decide the trained weights (to recognise the same run on resume)."""
        return {k: v for k, v in self.to_json().items()
                if k not in RUNTIME_FIELDS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "TrainingConfig":
        values = dict(data)
        values["network"] = NetworkConfig.from_json(values["network"])
        values["normalization"] = NormalizationSpec.from_json(values["normalization"])
        values["loss"] = LossConfig(**values.get("loss", {}))
        values["augment"] = AugmentConfig(**values.get("augment", {}))
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainingConfig":
        return replace(self, **changes)


def default_normalization(modality: str) -> NormalizationSpec:
    """CT: the fixed HU window; MR: 5th/95th percentile to [-1, 1] (paper §5)."""
    return NormalizationSpec("ct") if modality == "ct" else NormalizationSpec("percentile")


def preset(name: str, modality: str = "ct") -> TrainingConfig:
    """A preset configuration.

    ``paper``: 1 mm, 128³ patches, 84 filters, 100 000 iterations (paper §3.1, §3.6; GPU).
    ``compact``: 2.5 mm, 48³ patches (120 mm field of view), 16 filters, 20 000 iterations (CPU).

    Raises:
        ValueError: unknown preset or modality.
    """
    modality = modality.lower()
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if name == "paper":
        return TrainingConfig("paper", 100_000, 1.0, paper_config(), modality, default_normalization(modality),
                              validate_every=5000, checkpoint_every=1000)
    if name == "compact":
        return TrainingConfig("compact", 20_000, 2.5, compact_config(), modality,
                              default_normalization(modality), validate_every=1000, checkpoint_every=250)
    raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")

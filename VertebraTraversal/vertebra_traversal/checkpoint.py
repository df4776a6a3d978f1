"""Model files: TorchScript (primary) or torch.export ``.pt2``, each with ``metadata.json`` inside.

The metadata (docs/ARCHITECTURE.md, "Checkpoint metadata") says how the model must be fed: modality,
target, model-grid spacing in mm, patch size in voxels ``(z, y, x)``, intensity normalisation, traversal
direction (paper §3.3), label ids, minimum fragment size in mm^3 (paper §3.3 ``v_min``), the network
configuration, how it was trained and, optionally, the calibration of its label output
(:mod:`.label_calibration`).

TorchScript is deprecated upstream (torch 2.13 warns on every ``jit`` call); it stays the primary
format because one file runs on CPU and CUDA, and its deprecation warnings are silenced narrowly here.
``.pt2`` files (torch.export) carry the same metadata so the project survives the removal.

Loading validates before deserialising anything: the archive kind, the metadata, its format version
and (optionally) the modality. Every refusal is one :class:`CheckpointError` naming the file.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

import torch
from torch import nn

from . import anatomy
from .imageio import InputError, PathLike, atomic_path
from .label_calibration import LabelCalibration
from .network import NetworkConfig
from .normalization import NormalizationSpec
from .postprocess import COMPLETENESS_RULES

logger = logging.getLogger(__name__)

FORMAT = "vertebra-traversal-model"
FORMAT_VERSION = 1
METADATA_NAME = "metadata.json"
MODALITIES = ("CT", "MR")
TARGETS = ("vertebra", "body")
DIRECTIONS = ("up", "down")


class CheckpointError(InputError):
    """A model file that cannot be used; the message names the file and the problem."""


def _default_labels() -> Tuple[int, ...]:
    return tuple(v.label for v in anatomy.VERTEBRAE)


@dataclass(frozen=True)
class ModelMetadata:
    """What a model needs to be fed correctly (embedded as ``metadata.json``).

    Attributes:
        modality: ``"CT"`` or ``"MR"``.
        target: ``"vertebra"`` (whole vertebra) or ``"body"`` (vertebral body only).
        spacing_mm: model-grid spacing (x, y, z) in mm, as SimpleITK orders spacing (paper: 1 mm).
        patch_size: patch size in voxels (z, y, x) (paper: 128^3).
        normalization: ``NormalizationSpec.to_json()`` of the intensity normalisation.
        direction: traversal direction ``"up"`` (increasing model-grid z) or ``"down"`` (paper §3.3).
        labels: VerSe ids the model may produce (anatomy.py).
        min_fragment_mm3: smallest fragment that moves the patch (paper §3.3 ``v_min``), mm^3.
        completeness_rule: how this model's vertebrae are called complete (``COMPLETENESS_RULES``);
            ``network`` is the paper's; chosen per model on training cases and stated in its card.
        network: ``NetworkConfig.to_json()``; may be empty for foreign networks.
        training: free-form JSON record of how the model was trained.
        label_calibration: ``LabelCalibration.to_json()`` of the label output (``vertebra-traversal
            calibrate``), or empty: the paper's reading of the label value (§3.4).
        format_version: metadata format version (this code reads up to ``FORMAT_VERSION``).

    Raises:
        CheckpointError: on construction, for any invalid field (the message names the field).
    """

    modality: str
    target: str
    spacing_mm: Tuple[float, float, float]
    patch_size: Tuple[int, int, int]
    normalization: Dict[str, Any]
    direction: str = "up"
    labels: Tuple[int, ...] = field(default_factory=_default_labels)
    min_fragment_mm3: float = 1000.0
    completeness_rule: str = "network"
    network: Dict[str, Any] = field(default_factory=dict)
    training: Dict[str, Any] = field(default_factory=dict)
    label_calibration: Dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_choice("modality", self.modality, MODALITIES)
        _check_choice("target", self.target, TARGETS)
        _check_choice("direction", self.direction, DIRECTIONS)
        _check_choice("completeness_rule", self.completeness_rule, COMPLETENESS_RULES)
        normalised = {"spacing_mm": _triple("spacing_mm", self.spacing_mm, float),
                      "patch_size": _triple("patch_size", self.patch_size, int),
                      "labels": _labels(self.labels),
                      "min_fragment_mm3": _positive("min_fragment_mm3", self.min_fragment_mm3, allow_zero=True)}
        for name, value in normalised.items():
            object.__setattr__(self, name, value)  # frozen dataclass: canonical types once, here
        _check_version(self.format_version)
        _check_normalization(self.normalization)
        _check_network(self.network, self.patch_size)
        _check_json("training", self.training)
        _check_json("label_calibration", self.label_calibration)
        self.calibration()

    def calibration(self) -> Optional[LabelCalibration]:
        """The label calibration, or None when the model has none.

        Raises:
            CheckpointError: the stored table is malformed.
        """
        if not self.label_calibration:
            return None
        try:
            return LabelCalibration.from_json(dict(self.label_calibration))
        except ValueError as exc:
            raise CheckpointError(f"metadata: 'label_calibration' is invalid ({exc})") from None

    def to_json(self) -> Dict[str, Any]:
        """The ``metadata.json`` document (see docs/ARCHITECTURE.md)."""
        data = asdict(self)
        data.update(spacing_mm=list(self.spacing_mm), patch_size=list(self.patch_size), labels=list(self.labels))
        return {"format": FORMAT, **data}

    @classmethod
    def from_json(cls, data: Any) -> "ModelMetadata":
        """Parse and validate a ``metadata.json`` document.

        Raises:
            CheckpointError: not an object, wrong ``format``, newer ``format_version``, missing or invalid
                fields (the message names the field; callers prefix the file name).
        """
        if not isinstance(data, Mapping):
            raise CheckpointError(f"metadata: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise CheckpointError(f"metadata: 'format' is {data.get('format')!r}, expected {FORMAT!r}")
        _check_version(data.get("format_version"))
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known - {"format"})
        if unknown:
            logger.warning("metadata: ignoring unknown fields %s", unknown)
        missing = sorted(name for name in ("modality", "target", "spacing_mm", "patch_size", "normalization")
                         if name not in data)
        if missing:
            raise CheckpointError(f"metadata: missing fields {missing}")
        return cls(**{k: v for k, v in data.items() if k in known})


def _check_choice(name: str, value: Any, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise CheckpointError(f"metadata: '{name}' is {value!r}, expected one of {', '.join(choices)}")


def _check_version(version: Any) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"metadata: 'format_version' must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"metadata: format_version {version} is newer than this VertebraTraversal reads "
                              f"(up to {FORMAT_VERSION}); update VertebraTraversal to use this model")


def _positive(name: str, value: Any, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        raise CheckpointError(f"metadata: '{name}' must be a positive finite number, got {value!r}")
    return float(value)


def _triple(name: str, value: Any, kind: type) -> tuple:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__") or len(value) != 3:
        raise CheckpointError(f"metadata: '{name}' must hold three numbers, got {value!r}")
    if kind is int and any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise CheckpointError(f"metadata: '{name}' must hold three positive integers, got {value!r}")
    return tuple(kind(_positive(name, v)) for v in value)


def _labels(value: Any) -> Tuple[int, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise CheckpointError(f"metadata: 'labels' must be a list of vertebra ids, got {value!r}")
    labels = tuple(value)
    bad = [v for v in labels if isinstance(v, bool) or not isinstance(v, int) or not anatomy.is_valid_label(v)]
    if not labels or bad or len(set(labels)) != len(labels):
        raise CheckpointError(f"metadata: 'labels' must be distinct vertebra ids of the anatomy table, got {value!r}")
    return labels


def _check_normalization(value: Any) -> None:
    try:
        NormalizationSpec.from_json(value)
    except ValueError as exc:
        raise CheckpointError(f"metadata: {exc}") from None


def _check_network(value: Any, patch_size: Tuple[int, int, int]) -> None:
    _check_json("network", value)
    if not value:
        return
    try:
        config = NetworkConfig.from_json(value)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"metadata: 'network': {exc}") from None
    if config.patch_size != patch_size:
        raise CheckpointError(f"metadata: network patch_size {list(config.patch_size)} differs from "
                              f"'patch_size' {list(patch_size)}")


def _check_json(name: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise CheckpointError(f"metadata: '{name}' must be a JSON object, got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"metadata: '{name}' is not plain JSON ({exc})") from None


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference (eval mode, on ``device``).

    Attributes:
        module: callable ``x (B, 2, D, H, W) float32 -> (seg_prob (B, 1, D, H, W), label (B,), complete (B,))``.
        metadata: the validated :class:`ModelMetadata`.
        device: where ``module`` runs; inputs must be moved there.
        path: the file it was loaded from.
    """

    module: Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    metadata: ModelMetadata
    device: torch.device
    path: Path


@contextlib.contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """Silence only torch's "`torch.jit.*` is deprecated" warnings (torch >= 2.13)."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=category)
        yield


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        InputError: unknown name, or CUDA requested but not available.
    """
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r}: CUDA is not available on this machine (use 'cpu' or 'auto')")
        device = torch.device(text)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise InputError(f"device {name!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


@contextlib.contextmanager
def _atomic_target(path: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); rename it onto ``path`` on success."""
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path}: already exists; refusing to overwrite it (pass overwrite=True)")
    with atomic_path(path) as tmp:
        yield tmp


def _complete_metadata(model: nn.Module, metadata: ModelMetadata) -> ModelMetadata:
    """Fill ``network`` from ``model.config`` when the caller left it empty."""
    config = getattr(model, "config", None)
    if not metadata.network and isinstance(config, NetworkConfig):
        return replace(metadata, network=config.to_json())
    return metadata


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    try:
        yield model.eval()
    finally:
        model.train(was_training)


def save_torchscript(model: nn.Module, metadata: ModelMetadata, path: PathLike, overwrite: bool = False) -> Path:
    """Script ``model`` (eval mode) and write it atomically with ``metadata.json`` inside. Returns the path.

    Raises:
        CheckpointError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    metadata = _complete_metadata(model, metadata)
    extra = {METADATA_NAME: json.dumps(metadata.to_json(), indent=1)}
    with _eval_mode(model), _quiet_torchscript(), _atomic_target(path, overwrite) as tmp:
        scripted = model if isinstance(model, torch.jit.ScriptModule) else torch.jit.script(model)
        torch.jit.save(scripted, str(tmp), _extra_files=extra)
    logger.info("saved TorchScript model %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def save_exported(model: nn.Module, metadata: ModelMetadata, path: PathLike, overwrite: bool = False,
                  max_batch: int = 256) -> Path:
    """``torch.export`` ``model`` (eval mode, batch size dynamic up to ``max_batch``) to a ``.pt2`` file
    with ``metadata.json`` inside, atomically. Returns the path.

    Raises:
        CheckpointError: ``path`` does not end in ``.pt2``, or exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise CheckpointError(f"{path}: exported models must be saved with the suffix .pt2")
    metadata = _complete_metadata(model, metadata)
    in_channels = getattr(getattr(model, "config", None), "in_channels", 2)
    device = next(model.parameters()).device
    example = torch.zeros((2, in_channels) + metadata.patch_size, device=device)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    extra = {METADATA_NAME: json.dumps(metadata.to_json(), indent=1)}
    with _eval_mode(model), _atomic_target(path, overwrite) as tmp:
        program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
        program.example_inputs = None  # do not store the (large, all-zero) example patch in the file
        torch.export.save(program, str(tmp), extra_files=extra)
    logger.info("saved exported model %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def _archive_kind(path: Path) -> Tuple[str, str]:
    """Return (kind, archive root) of a model file: kind ``"torchscript"`` or ``"exported"``."""
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a model file (not a TorchScript or .pt2 archive)")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    root = names[0].split("/", 1)[0] if names else ""
    present = {name.split("/", 1)[1] for name in names if "/" in name}
    if "archive_format" in present:
        return "exported", root
    if "constants.pkl" in present and any(name.startswith("code/") for name in present):
        return "torchscript", root
    if "data.pkl" in present:
        raise CheckpointError(f"{path}: a plain torch.save file (e.g. a state dict), not a model; "
                              f"save models with checkpoint.save_torchscript or save_exported")
    raise CheckpointError(f"{path}: not a model file (zip archive without TorchScript or .pt2 content)")


def read_metadata(path: PathLike) -> ModelMetadata:
    """Validate the archive kind and read its metadata without loading the network.

    Raises:
        CheckpointError: not a model, no or invalid metadata, newer format version (message names the file).
    """
    path = Path(path)
    return _read_metadata(path, _archive_kind(path)[1])


def _read_metadata(path: Path, root: str) -> ModelMetadata:
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read(f"{root}/extra/{METADATA_NAME}").decode("utf-8")
        return ModelMetadata.from_json(json.loads(text))
    except KeyError:
        raise CheckpointError(f"{path}: model has no {METADATA_NAME}; it was not saved by VertebraTraversal") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: {METADATA_NAME} is not valid JSON ({exc})") from None
    except (UnicodeDecodeError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read {METADATA_NAME} ({exc})") from None
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _load_module(path: Path, kind: str, device: torch.device) -> Callable:
    try:
        if kind == "torchscript":
            with _quiet_torchscript():
                return torch.jit.load(str(path), map_location=device).eval()
        program = torch.export.load(str(path))
        if device.type != "cpu":
            from torch.export.passes import move_to_device_pass
            program = move_to_device_pass(program, device)
        return program.module()  # exported in eval mode; the graph holds inference-time ops
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        first = (str(exc).strip().splitlines() or ["unknown error"])[0]
        raise CheckpointError(f"{path}: cannot load the {kind} model ({first})") from None


def load_model(path: PathLike, device: str = "auto", expect_modality: Optional[str] = None) -> LoadedModel:
    """Load a TorchScript (``.pt``) or exported (``.pt2``) model with its metadata, in eval mode.

    Args:
        path: the model file.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (:func:`resolve_device`).
        expect_modality: when given (``"CT"``/``"MR"``, any case), refuse a model of another modality.

    Raises:
        CheckpointError: anything wrong with the file (message names it).
        InputError: an unusable device.
    """
    path = Path(path)
    kind, root = _archive_kind(path)
    metadata = _read_metadata(path, root)
    if expect_modality is not None and metadata.modality != str(expect_modality).strip().upper():
        raise CheckpointError(f"{path}: a {metadata.modality} model, but a {str(expect_modality).upper()} "
                              f"model is needed")
    torch_device = resolve_device(device)
    module = _load_module(path, kind, torch_device)
    logger.info("loaded %s %s model %s on %s", kind, metadata.modality, path, torch_device)
    return LoadedModel(module=module, metadata=metadata, device=torch_device, path=path)

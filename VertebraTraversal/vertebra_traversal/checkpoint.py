"""Model files: TorchScript (primary) or torch.export ``.pt2``, each with ``metadata.json`` inside.

The metadata (:mod:`.metadata`; docs/ARCHITECTURE.md, "Checkpoint metadata") says how the model must be
fed. :class:`ModelMetadata` and :class:`CheckpointError` are imported from here too.

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
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple

import torch
from torch import nn

from .imageio import InputError, PathLike, atomic_path
from .metadata import METADATA_NAME, CheckpointError, ModelMetadata
from .network import NetworkConfig

logger = logging.getLogger(__name__)





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


def load_to_rewrite(path: PathLike, out: PathLike, action: str) -> LoadedModel:
    """Load the TorchScript model ``path`` on the CPU to write a new model file ``out`` from it.

    Raises:
        CheckpointError: ``out`` exists (checked first: nothing is loaded or overwritten); ``path`` is not a
            usable model, or a ``.pt2`` one ("only TorchScript models (.pt) can be ``action``").
    """
    path, out = Path(path), Path(out)
    if out.exists():
        raise CheckpointError(f"{out}: already exists; refusing to overwrite it")
    loaded = load_model(path, device="cpu")
    if not isinstance(loaded.module, torch.jit.ScriptModule):
        raise CheckpointError(f"{path}: only TorchScript models (.pt) can be {action}")
    return loaded

"""A start network: a second network for the patches that the traversal sees with an empty memory.

This extends the search of the paper (§3.3). There, every search window runs the one network with an
empty instance memory, and so does the convergence on a scan's first vertebra. The paper's sampling
(§3.6) shows the network an empty memory only for a scan's first vertebra in traversal order, which in a
whole-spine scan is lumbar. A network trained that way may not start anywhere else: the bundled compact
models segment a cervical vertebra only with the vertebrae below it in memory
(``benchmarks/start_patches.py``), so a scan of the neck alone comes back empty. Training the one network
on empty-memory patches as well (``train --start-fraction``) taught it to start but cost it the
continuation (the CT model card). A model file may therefore hold two networks of the same model grid:

* the **main** network answers every patch whose memory holds a voxel, and gives *every* patch its label
  value (§3.4) and completeness (§3.5);
* the **start** network gives the segmentation of every patch whose memory is empty.

:class:`StartSwitch` is that model; it has the one network's interface (``x (B, 2, D, H, W)`` ->
``(seg_prob (B, 1, D, H, W), label (B,), complete (B,))``), so the traversal, the predictor and Slicer
see one network. :func:`attach_start` writes it from two model files (``vertebra-traversal combine``);
its metadata records the start network in ``start_network``. Train a start network with
``train --start-fraction 1`` (every vertebra patch drawn with an empty memory).

A model whose start network runs ``always`` may hold a third network, the **rescue** network
(:class:`RescueSwitch`, :func:`attach_rescue`; ``start_network.rescue`` in the metadata): a start network
for the second traversal of a scan in which the first one stalled (:mod:`.fallback`). It runs only there,
so a rescue trained on the scans that stall (the neck, say) cannot change a scan that does not.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from torch import Tensor, nn

from .checkpoint import CheckpointError, LoadedModel, load_to_rewrite, save_torchscript
from .imageio import PathLike

logger = logging.getLogger(__name__)

#: Metadata fields in which the two networks must agree: they read the same patches.
SHARED_FIELDS = ("modality", "target", "spacing_mm", "patch_size", "normalization", "direction")


class StartSwitch(nn.Module):
    """The main network, with the segmentation of empty-memory patches taken from the start network.

    ``forward(x)``: ``x`` float32 (B, 2, D, H, W), channel 0 the image patch, channel 1 the instance memory
    (paper §3.2), model-grid (z, y, x). Returns the main network's ``(seg_prob (B, 1, D, H, W), label (B,),
    complete (B,))``, except that ``seg_prob[i]`` is the start network's where ``x[i, 1]`` is all zero.
    The start network runs only on those patches.
    """

    def __init__(self, main: nn.Module, start: nn.Module) -> None:
        super().__init__()
        self.main = main
        self.start = start

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        seg, label, complete = self.main(x)
        empty = x[:, 1].flatten(1).amax(1) <= 0
        if bool(empty.any()):
            rows = empty.nonzero().flatten()
            start_seg, _, _ = self.start(x.index_select(0, rows))
            seg = seg.index_copy(0, rows, start_seg.to(seg.dtype))
        return seg, label, complete


class RescueSwitch(StartSwitch):
    """A :class:`StartSwitch` that also carries the rescue network (``rescue``); it runs as the start network
    of a second traversal (:func:`traversal_modules`), never in this module's ``forward``."""

    def __init__(self, main: nn.Module, start: nn.Module, rescue: nn.Module) -> None:
        super().__init__(main, start)
        self.rescue = rescue


def named_networks(loaded: LoadedModel) -> Dict[str, nn.Module]:
    """The networks of ``loaded`` by name (``main``, ``start``, ``rescue``), checked against its metadata.

    Raises:
        CheckpointError: the metadata and the file disagree on which networks it holds.
    """
    children = dict(loaded.module.named_children()) if isinstance(loaded.module, nn.Module) else {}
    if set(children) not in ({"main", "start"}, {"main", "start", "rescue"}):
        children = {"main": loaded.module}  # type: ignore[dict-item]
    record = loaded.metadata.start_network
    for name, claimed in (("start", bool(record)), ("rescue", bool(record.get("rescue")))):
        if (name in children) != claimed:
            raise CheckpointError(f"{loaded.path}: the metadata and the network disagree on whether it holds "
                                  f"a {name} network")
    return children


def networks(loaded: LoadedModel) -> Tuple[nn.Module, Optional[nn.Module]]:
    """``(main, start)`` of a loaded model; ``start`` is None for a model of one network.

    Raises:
        CheckpointError: the metadata names a start (or rescue) network but the file holds none, or the reverse.
    """
    children = named_networks(loaded)
    return children["main"], children.get("start")


def rescue_network(loaded: LoadedModel) -> Optional[nn.Module]:
    """The rescue network of a loaded model (:class:`RescueSwitch`), or None."""
    return named_networks(loaded).get("rescue")


def with_networks(main: nn.Module, start: Optional[nn.Module], rescue: Optional[nn.Module] = None) -> nn.Module:
    """The module a model file holds for these networks: ``main`` alone, a :class:`StartSwitch` or a
    :class:`RescueSwitch`."""
    if start is None:
        return main
    return StartSwitch(main, start) if rescue is None else RescueSwitch(main, start, rescue)


def traversal_modules(loaded: LoadedModel, use: str, rescue: bool = True
                      ) -> Tuple[nn.Module, Optional[nn.Module], str]:
    """The networks of a scan's first traversal and of its second, run only where the first stalls
    (:func:`~vertebra_traversal.fallback.stalled`), or None; and the name of the second's start network.

    ``use`` (``START_USES``): ``off`` -> the main network alone, no second; ``fallback`` -> the main network
    alone, then main + start; ``always`` -> main + start, then main + rescue where the model holds a rescue
    network and ``rescue`` is true (``SegmentConfig.rescues``, which the run's report records).
    """
    children = named_networks(loaded)
    main, start = children["main"], children.get("start")
    spare = children.get("rescue") if rescue else None
    if use == "off" or start is None:
        return main, None, ""
    if use == "fallback":
        return main, StartSwitch(main, start), "start"
    return loaded.module, None if spare is None else StartSwitch(main, spare), "rescue"  # type: ignore[return-value]


def describe_start(path: Path, loaded: LoadedModel) -> Dict[str, Any]:
    """The ``start_network`` metadata record of the start model ``path``: file name, SHA-1, network, training."""
    training = loaded.metadata.training
    return {"file": path.name, "sha1": hashlib.sha1(path.read_bytes()).hexdigest()[:16],
            "network": loaded.metadata.network,
            "training": {key: training[key] for key in ("config", "data_summary", "iterations", "init")
                         if key in training}}


def _load_pair(main_path: Path, start_path: Path, out: Path) -> Tuple[LoadedModel, LoadedModel]:
    """The model and the network of one to put into it, checked (:func:`attach_start`'s errors)."""
    if out.suffix == ".pt2" and not out.exists():  # an existing file is refused as such by load_to_rewrite
        raise CheckpointError(f"{out}: a combined model is TorchScript; torch.export cannot trace its switch "
                              f"(give a .pt file name)")
    main_model, start_model = (load_to_rewrite(p, out, "combined") for p in (main_path, start_path))
    if networks(start_model)[1] is not None:
        raise CheckpointError(f"{start_path}: holds a start network itself; give a model of one network")
    check_agreement(main_model, start_model)
    return main_model, start_model


def check_agreement(model: LoadedModel, other: LoadedModel, names: Tuple[str, ...] = SHARED_FIELDS) -> None:
    """Refuse ``other`` where its metadata differs from ``model``'s in one of ``names``.

    Raises:
        CheckpointError: names the first such field, both values and both files.
    """
    for name in names:
        mine, theirs = getattr(model.metadata, name), getattr(other.metadata, name)
        if mine != theirs:
            raise CheckpointError(f"{other.path}: its {name} {theirs!r} differs from {model.path}'s {mine!r}")


def _save(model: LoadedModel, record: Dict[str, Any], module: nn.Module, out: Path, added: str) -> Path:
    """Write ``module`` with ``model``'s metadata, ``record`` as its ``start_network`` and no label confidence
    (fitted on runs without the ``added`` network)."""
    if model.metadata.label_confidence:
        logger.warning("%s: its label confidence was fitted on runs without this %s network and is not kept; "
                       "fit it again with calibrate --confidence", model.path, added)
    return save_torchscript(module, replace(model.metadata, label_confidence={}, start_network=record), out)


def attach_start(main_path: PathLike, start_path: PathLike, out: PathLike, use: Optional[str] = None) -> Path:
    """Write ``out``: the main network of ``main_path`` with the start network ``start_path`` (TorchScript).

    The metadata is ``main_path``'s (label reading, completeness rule, ...) without a fitted label
    confidence (``label_confidence``: fitted on runs without this start network) and with ``start_network`` set,
    its ``use`` (``"always"`` or ``"fallback"``, :meth:`~vertebra_traversal.metadata.ModelMetadata.start_use`)
    included. A start network already in ``main_path`` is replaced, its rescue network kept; ``use=None``
    keeps its use (else ``"always"``).

    Raises:
        CheckpointError: ``out`` exists (nothing is overwritten) or ends in ``.pt2``; either file is not a
            usable TorchScript model; the start model holds two networks itself; the two disagree in one of
            ``SHARED_FIELDS`` (the message names the field and both files); ``use`` is ``fallback`` for a
            model with a rescue network.
    """
    main_path, start_path, out = Path(main_path), Path(start_path), Path(out)
    main_model, start_model = _load_pair(main_path, start_path, out)
    children = named_networks(main_model)
    main, previous, rescue = children["main"], children.get("start"), children.get("rescue")
    if previous is not None:
        logger.info("%s: replacing its start network", main_path)
    use = use or (main_model.metadata.start_use() if previous is not None else "always")
    record = dict(describe_start(start_path, start_model), use=use)
    if rescue is not None:
        if use != "always":
            raise CheckpointError(f"{main_path}: holds a rescue network, which needs a start network that runs "
                                  f"always, not {use}")
        record["rescue"] = main_model.metadata.start_network["rescue"]
    module = with_networks(main, start_model.module, rescue)  # type: ignore[arg-type]
    return _save(main_model, record, module, out, "start")


def attach_rescue(model_path: PathLike, rescue_path: PathLike, out: PathLike) -> Path:
    """Write ``out``: ``model_path`` (a main network whose start network runs always) with the rescue network
    ``rescue_path`` (:class:`RescueSwitch`), recorded in ``start_network.rescue``; a rescue network already
    there is replaced. Metadata as :func:`attach_start` writes it.

    Raises:
        CheckpointError: as :func:`attach_start`; ``model_path`` holds no start network, or one that runs
            only as a fallback (that start network is its rescue already).
    """
    model_path, rescue_path, out = Path(model_path), Path(rescue_path), Path(out)
    model, rescue_model = _load_pair(model_path, rescue_path, out)
    main, start = networks(model)
    if start is None or model.metadata.start_use() != "always":
        raise CheckpointError(f"{model_path}: a rescue network runs where the traversal with the start network "
                              f"stalls; give a model whose start network runs always (combine --start --use always)")
    record = dict(model.metadata.start_network, rescue=describe_start(rescue_path, rescue_model))
    module = RescueSwitch(main, start, rescue_model.module)  # type: ignore[arg-type]
    return _save(model, record, module, out, "rescue")


def extract_network(model_path: PathLike, name: str, out: PathLike) -> Path:
    """Write ``out``: the ``main``, ``start`` or ``rescue`` network of ``model_path`` as a model of one network,
    e.g. to train it further (``train --init``). Metadata: the model's, with the start or rescue network's own
    ``network`` and ``training`` records, no start network and no label confidence.

    Raises:
        CheckpointError: ``out`` exists; the model holds no such network, or only one (``main``).
    """
    model_path, out = Path(model_path), Path(out)
    model = load_to_rewrite(model_path, out, "extracted")
    children = named_networks(model)
    if len(children) == 1 and name == "main":
        raise CheckpointError(f"{model_path}: holds one network; it is the model itself")
    if name not in children:
        raise CheckpointError(f"{model_path}: holds no {name} network")
    metadata = replace(model.metadata, start_network={}, label_confidence={})
    if name != "main":
        record = model.metadata.start_network if name == "start" else model.metadata.start_network["rescue"]
        metadata = replace(metadata, network=record["network"], training=dict(record.get("training", {})))
    return save_torchscript(children[name], metadata, out)

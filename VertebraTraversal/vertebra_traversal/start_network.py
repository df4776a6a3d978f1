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


def networks(loaded: LoadedModel) -> Tuple[nn.Module, Optional[nn.Module]]:
    """``(main, start)`` of a loaded model; ``start`` is None for a model of one network.

    Raises:
        CheckpointError: the metadata names a start network but the file holds none, or the reverse.
    """
    children = dict(loaded.module.named_children()) if isinstance(loaded.module, nn.Module) else {}
    combined = set(children) == {"main", "start"}
    if combined != bool(loaded.metadata.start_network):
        raise CheckpointError(f"{loaded.path}: the metadata and the network disagree on whether it holds "
                              f"a start network")
    return (children["main"], children["start"]) if combined else (loaded.module, None)  # type: ignore


def describe_start(path: Path, loaded: LoadedModel) -> Dict[str, Any]:
    """The ``start_network`` metadata record of the start model ``path``: file name, SHA-1, network, training."""
    training = loaded.metadata.training
    return {"file": path.name, "sha1": hashlib.sha1(path.read_bytes()).hexdigest()[:16],
            "network": loaded.metadata.network,
            "training": {key: training[key] for key in ("config", "data_summary", "iterations", "init")
                         if key in training}}


def attach_start(main_path: PathLike, start_path: PathLike, out: PathLike, use: Optional[str] = None) -> Path:
    """Write ``out``: the main network of ``main_path`` with the start network ``start_path`` (TorchScript).

    The metadata is ``main_path``'s (label reading, completeness rule, ...) without a fitted label
    confidence (``label_confidence``: fitted on runs without this start network) and with ``start_network`` set,
    its ``use`` (``"always"`` or ``"fallback"``, :meth:`~vertebra_traversal.metadata.ModelMetadata.start_use`)
    included. A start network already in ``main_path`` is replaced; ``use=None`` keeps its use (else
    ``"always"``).

    Raises:
        CheckpointError: ``out`` exists (nothing is overwritten) or ends in ``.pt2``; either file is not a
            usable TorchScript model; the start model holds two networks itself; the two disagree in one of
            ``SHARED_FIELDS`` (the message names the field and both files).
    """
    main_path, start_path, out = Path(main_path), Path(start_path), Path(out)
    if out.suffix == ".pt2" and not out.exists():  # an existing file is refused as such by load_to_rewrite
        raise CheckpointError(f"{out}: a combined model is TorchScript; torch.export cannot trace its switch "
                              f"(give a .pt file name)")
    main_model, start_model = (load_to_rewrite(p, out, "combined") for p in (main_path, start_path))
    if networks(start_model)[1] is not None:
        raise CheckpointError(f"{start_path}: holds a start network itself; give a model of one network")
    for name in SHARED_FIELDS:
        mine, theirs = getattr(main_model.metadata, name), getattr(start_model.metadata, name)
        if mine != theirs:
            raise CheckpointError(f"{start_path}: its {name} {theirs!r} differs from {main_path}'s {mine!r}")
    main, previous = networks(main_model)
    if previous is not None:
        logger.info("%s: replacing its start network", main_path)
    use = use or (main_model.metadata.start_use() if previous is not None else "always")
    if main_model.metadata.label_confidence:
        logger.warning("%s: its label confidence was fitted on runs without this start network and is not kept; "
                       "fit it again with calibrate --confidence", main_path)
    metadata = replace(main_model.metadata, label_confidence={},
                       start_network=dict(describe_start(start_path, start_model), use=use))
    return save_torchscript(StartSwitch(main, start_model.module), metadata, out)  # type: ignore[arg-type]

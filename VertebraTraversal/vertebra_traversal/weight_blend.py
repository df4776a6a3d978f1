"""Two models of one lineage mixed weight by weight (weight-space ensembling).

A model fine-tuned from another (``train --init``, ``tune-masks``, ``tune-labels``) may gain on the cases it
was tuned on and lose what the first one knew: every decoder tuned on the traversal's own patches so far
identified more vertebrae in whole scans and fewer in short z-crops and the neck (the CT model card). Mixing
the weights of the model and its fine-tuned copy, ``theta = (1 - s) * theta_model + s * theta_other``, keeps
part of both (Wortsman et al., *Robust fine-tuning of zero-shot models*, CVPR 2022); ``s = 0`` is the model,
``s = 1`` the other. The mix is meaningful only between a model and a copy trained from it: both must hold the
same networks (main, start, rescue) of the same architecture and read the same patches.

The new file keeps the model's metadata (label reading, completeness rule, start network's use), drops a
fitted label confidence (it describes the model's own runs) and records the mix in ``training.blend``.
``vertebra-traversal combine --model MODEL --blend OTHER --share S --out NEW.pt`` writes it.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Dict

import torch

from .checkpoint import CheckpointError, LoadedModel, load_to_rewrite, save_torchscript
from .imageio import PathLike
from .start_network import SHARED_FIELDS, check_agreement, named_networks

logger = logging.getLogger(__name__)


def mixed_state(mine: Dict[str, torch.Tensor], theirs: Dict[str, torch.Tensor], share: float
                ) -> Dict[str, torch.Tensor]:
    """``(1 - share) * mine + share * theirs`` for every floating-point entry of two state dicts with the same
    keys and shapes; other entries (counters such as ``num_batches_tracked``) are ``mine``'s.

    Raises:
        ValueError: ``share`` outside [0, 1]; the keys or a shape differ (the message names the first entry).
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the share must be in [0, 1], got {share}")
    if set(mine) != set(theirs):
        different = sorted(set(mine) ^ set(theirs))
        raise ValueError(f"the networks differ in their weights (first: {different[0]})")
    mixed = {}
    for key, value in mine.items():
        other = theirs[key]
        if value.shape != other.shape:
            raise ValueError(f"the networks differ in the shape of {key}: {tuple(value.shape)} "
                             f"vs {tuple(other.shape)}")
        mixed[key] = torch.lerp(value, other.to(value.dtype), share) if value.is_floating_point() else value
    return mixed


def _check_lineage(model: LoadedModel, other: LoadedModel) -> None:
    """Both files hold the same networks of the same architecture reading the same patches."""
    check_agreement(model, other, SHARED_FIELDS + ("network",))
    mine, theirs = sorted(named_networks(model)), sorted(named_networks(other))
    if mine != theirs:
        raise CheckpointError(f"{other.path}: holds the networks {', '.join(theirs)}; {model.path} holds "
                              f"{', '.join(mine)}")


def blend_models(model_path: PathLike, other_path: PathLike, share: float, out: PathLike) -> Path:
    """Write ``out``: ``model_path``'s networks with every floating-point weight and buffer mixed with
    ``other_path``'s, ``(1 - share) * model + share * other`` (:func:`mixed_state`); the model's metadata
    without a fitted label confidence, the mix recorded in ``training.blend`` (the other file's name, SHA-1,
    share and its own training record).

    Raises:
        CheckpointError: ``out`` exists (nothing is overwritten); either file is not a usable TorchScript
            model; they differ in one of ``SHARED_FIELDS`` or the network (the message names the field and
            both files), or in the networks they hold; ``share`` outside [0, 1].
    """
    model_path, other_path, out = Path(model_path), Path(other_path), Path(out)
    if not 0.0 <= share <= 1.0:
        raise CheckpointError(f"--share must be in [0, 1], got {share}")
    model, other = (load_to_rewrite(p, out, "blended") for p in (model_path, other_path))
    _check_lineage(model, other)
    module = model.module
    try:
        module.load_state_dict(mixed_state(module.state_dict(), other.module.state_dict(), share))
    except ValueError as exc:
        raise CheckpointError(f"{other_path}: cannot be mixed with {model_path}: {exc}") from None
    if model.metadata.label_confidence:
        logger.warning("%s: its label confidence was fitted on its own runs and is not kept; fit it again with "
                       "calibrate --confidence", model_path)
    record = {"file": other_path.name, "sha1": hashlib.sha1(other_path.read_bytes()).hexdigest()[:16],
              "share": share, "training": other.metadata.training}
    training = dict(model.metadata.training, blend=record)
    return save_torchscript(module, replace(model.metadata, label_confidence={}, training=training), out)

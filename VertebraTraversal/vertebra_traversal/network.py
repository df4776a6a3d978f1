"""The iterative FCN: one network, three outputs (paper §3.1, §3.4, §3.5, Fig. 1).

Input: a two-channel patch ``(B, 2, D, H, W)`` = (normalised image, binary instance memory), axes
``(z, y, x)`` of the model grid (docs/ARCHITECTURE.md). Outputs:

- segmentation of the next not yet segmented vertebra, ``(B, 1, D, H, W)`` (paper §3.1, §3.3);
- the anatomical label as one regressed value, ``(B,)``, ReLU, 0 = no vertebra, 1..24 = C1..L5 (§3.4);
- the probability that the vertebra is completely visible, ``(B,)`` (§3.5).

Layout (paper §3.1 and Fig. 1): a U-Net-like compression/expansion path with skip connections and a
*constant* number of filters in every layer (paper: 84), batch normalisation, and zero padding before
every convolution so the segmentation has the size of the patch. The label and completeness paths each
continue the compression path with further conv + max-pooling steps of 48 feature maps, a global
pooling and a dense layer 48 -> 1. The paper's text gives no per-cube sizes; we follow the published
figure (also followed by public re-implementations): 128 -> 64 -> 32 -> 16 in the U-Net (``depth=3``)
and 16 -> 8 -> 4 -> 2 in each recognition path (``head_depth=3``) before global pooling.

Each resolution level has two 3x3x3 convolutions (conv -> BN -> ReLU), as in the U-Net of Çiçek et al.;
expansion uses nearest-neighbour up-sampling followed by the level's convolutions on the concatenation
with the skip connection. The module is ``torch.jit.script``-able and ``torch.export``-able.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import is_integer

logger = logging.getLogger(__name__)

#: Initial bias of the label output: mid-range of the regression targets 0..24 (paper §3.4), so that the
#: ReLU output unit starts active and receives gradients.
LABEL_BIAS_INIT = 12.0


@dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters of :class:`IterativeFCN`.

    Attributes:
        in_channels: input channels (image + instance memory = 2, paper §3.2).
        filters: feature maps in every layer of the U-Net path (paper: 84).
        depth: down-sampling steps of the U-Net (paper Fig. 1: 128 -> 16 is 3).
        head_features: feature maps in the label / completeness paths (paper: 48).
        head_depth: further conv + pooling steps in each of those paths before global pooling.
        patch_size: (z, y, x) voxels of the training/inference patch; each side divisible by
            ``2**(depth + head_depth)`` so every pooling step halves an even size.
        batch_norm: batch normalisation after each convolution (paper §3.1).
    """

    in_channels: int = 2
    filters: int = 84
    depth: int = 3
    head_features: int = 48
    head_depth: int = 3
    patch_size: Tuple[int, int, int] = (128, 128, 128)
    batch_norm: bool = True

    def __post_init__(self) -> None:
        for name in ("in_channels", "filters", "depth", "head_features", "head_depth"):
            value = getattr(self, name)
            if not is_integer(value) or value < 1:
                raise ValueError(f"NetworkConfig.{name}: expected a positive integer, got {value!r}")
        if not isinstance(self.batch_norm, bool):
            raise ValueError(f"NetworkConfig.batch_norm: expected true/false, got {self.batch_norm!r}")
        patch = tuple(self.patch_size)
        if len(patch) != 3 or any(not is_integer(p) or p < 1 for p in patch):
            raise ValueError(f"NetworkConfig.patch_size: expected three positive integers, got {self.patch_size!r}")
        divisor = 2 ** (self.depth + self.head_depth)
        if any(p % divisor for p in patch):
            raise ValueError(f"NetworkConfig.patch_size: {patch} must be divisible by 2**(depth + head_depth) "
                             f"= {divisor} (depth={self.depth}, head_depth={self.head_depth})")
        object.__setattr__(self, "patch_size", patch)

    def to_json(self) -> Dict[str, Any]:
        """JSON-ready dictionary (stored as checkpoint metadata ``network``)."""
        data = asdict(self)
        data["patch_size"] = list(self.patch_size)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "NetworkConfig":
        """Inverse of :meth:`to_json`. Raises ValueError naming unknown or invalid fields."""
        if not isinstance(data, Mapping):
            raise ValueError(f"NetworkConfig: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"NetworkConfig: unknown fields {unknown}")
        kwargs = dict(data)
        if "patch_size" in kwargs:
            patch = kwargs["patch_size"]
            if isinstance(patch, (str, bytes)) or not hasattr(patch, "__len__"):
                raise ValueError(f"NetworkConfig.patch_size: expected three integers, got {patch!r}")
            kwargs["patch_size"] = tuple(patch)
        return cls(**kwargs)


def paper_config() -> NetworkConfig:
    """The paper's network: 84 filters, 128^3 patches at 1 mm (paper §3.1)."""
    return NetworkConfig(filters=84, depth=3, head_features=48, head_depth=3, patch_size=(128, 128, 128))


def compact_config() -> NetworkConfig:
    """A CPU-trainable network: 16 filters, 48^3 patches meant for 2.5 mm spacing (a 120 mm field of view).

    Measured on 2 idle CPU threads (benchmarks/network_speed.py, channels-last): one training step takes
    0.53 s with these settings, 0.95 s with 24 filters, 1.6 s with 64^3 patches and 3.1 s with 32 filters
    at 64^3 (PyTorch's CPU conv3d backward dominates; under load the larger ones took 2-5x longer).
    For the same training CPU time (about 1.5 h, from scratch) it beat 24 filters on held-out CT phantoms:
    Dice 40.4 % against 15.7 %, ASSD 4.8 mm against 8.9 mm (the CT model card has the runs).
    """
    return NetworkConfig(filters=16, depth=3, head_features=32, head_depth=1, patch_size=(48, 48, 48))


class _ConvBlock(nn.Sequential):
    """``convs`` x (3x3x3 conv with zero padding 1 -> [BN] -> ReLU); keeps the spatial size."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool, convs: int = 2) -> None:
        layers = []
        for i in range(convs):
            layers.append(nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1,
                                    bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm3d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class _RecognitionPath(nn.Module):
    """Continuation of the compression path (paper §3.4/§3.5): ``steps`` x (max-pool -> conv block),
    global average pooling, dense layer ``features -> 1``. Returns the raw dense output, shape (B,)."""

    def __init__(self, in_channels: int, features: int, steps: int, batch_norm: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [_ConvBlock(in_channels if i == 0 else features, features, batch_norm) for i in range(steps)])
        self.dense = nn.Linear(features, 1)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(F.max_pool3d(x, 2))
        x = torch.mean(x, dim=(2, 3, 4))
        return self.dense(x).reshape(-1)


class IterativeFCN(nn.Module):
    """Segmentation + label regression + completeness classification in one network (paper Fig. 1).

    ``forward(x)``: x float32 (B, 2, D, H, W), D/H/W divisible by ``2**(depth + head_depth)`` ->
    ``(seg_prob (B, 1, D, H, W) in [0, 1], label (B,) >= 0, complete (B,) in [0, 1])``.
    ``forward_logits(x)``: the same before the sigmoids, for numerically stable losses (paper §3.6).
    """

    def __init__(self, config: NetworkConfig = NetworkConfig()) -> None:
        super().__init__()
        self.config = config
        f, bn = config.filters, config.batch_norm
        self.encoders = nn.ModuleList(
            [_ConvBlock(config.in_channels if i == 0 else f, f, bn) for i in range(config.depth + 1)])
        self.decoders = nn.ModuleList([_ConvBlock(2 * f, f, bn) for _ in range(config.depth)])
        self.seg_out = nn.Conv3d(f, 1, 1)
        self.label_path = _RecognitionPath(f, config.head_features, config.head_depth, bn)
        self.complete_path = _RecognitionPath(f, config.head_features, config.head_depth, bn)
        with torch.no_grad():  # start the label in the ReLU's active range, else it may never learn
            self.label_path.dense.bias.fill_(LABEL_BIAS_INIT)

    def encode(self, x: Tensor) -> List[Tensor]:
        """The compression path (paper Fig. 1) on x (B, 2, D, H, W): each level's features, finest first; the
        last is the bottleneck, which the label and completeness paths read."""
        skips: List[Tensor] = []
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                x = F.max_pool3d(x, 2)
            x = encoder(x)
            skips.append(x)
        return skips

    @torch.jit.export
    def forward_logits(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """x (B, 2, D, H, W) -> (seg_logits (B, 1, D, H, W), label (B,) after ReLU, complete_logit (B,))."""
        skips = self.encode(x)
        bottleneck = skips[-1]
        x = bottleneck
        for i, decoder in enumerate(self.decoders):
            skip = skips[len(skips) - 2 - i]
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = decoder(torch.cat([skip, x], dim=1))
        seg_logits = self.seg_out(x)
        label = F.relu(self.label_path(bottleneck))
        complete_logit = self.complete_path(bottleneck)
        return seg_logits, label, complete_logit

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """x (B, 2, D, H, W) -> (seg_prob (B, 1, D, H, W), label (B,), complete (B,)); see class doc."""
        seg_logits, label, complete_logit = self.forward_logits(x)
        return torch.sigmoid(seg_logits), label, torch.sigmoid(complete_logit)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""Small synthetic training cases and a tiny configuration, shared by the training tests.

A case is a (z, y, x) volume on a 2 mm grid with identity direction (axis 0 = inferior -> superior):
soft tissue 40 HU, vertebrae as 800 HU boxes with known ids stacked along z with 3-slice discs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from vertebra_traversal import anatomy
from vertebra_traversal.dataset import CaseInfo, VertebraRecord, centroids_of, write_case
from vertebra_traversal.network import NetworkConfig
from vertebra_traversal.normalization import NormalizationSpec
from vertebra_traversal.training.augment import AugmentConfig
from vertebra_traversal.training.config import TrainingConfig

SPACING = 2.0
BOX_HEIGHT, GAP = 6, 3


def spine_arrays(ids_bottom_up: Sequence[int], shape: Tuple[int, int, int] = (40, 24, 24), bottom: int = 4,
                 seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(image HU float32, labels uint8): one 6 x 10 x 10 box per id, from slice ``bottom`` upwards."""
    labels = np.zeros(shape, np.uint8)
    for i, label in enumerate(ids_bottom_up):
        z0 = bottom + i * (BOX_HEIGHT + GAP)
        labels[z0:z0 + BOX_HEIGHT, 7:17, 7:17] = label
    rng = np.random.default_rng(seed)
    image = np.where(labels > 0, 800.0, 40.0) + rng.normal(0, 20, shape)
    return image.astype(np.float32), labels


def to_images(image: np.ndarray, labels: np.ndarray) -> Tuple[sitk.Image, sitk.Image]:
    img, lab = sitk.GetImageFromArray(image), sitk.GetImageFromArray(labels)
    for item in (img, lab):
        item.SetSpacing((SPACING,) * 3)
        item.SetOrigin((-20.0, 10.0, -300.0))
    return img, lab


def write_spine_case(root: Path, case_id: str, ids_bottom_up: Sequence[int],
                     complete: Dict[int, bool] | None = None, **kw) -> None:
    """Write a synthetic case in the project layout (with sidecar)."""
    image, labels = to_images(*spine_arrays(ids_bottom_up, **kw))
    centres = centroids_of(labels)
    flags = complete or {}
    records = [VertebraRecord(l, anatomy.name_of(l), flags.get(l, True), [float(c) for c in centres[l]])
               for l in sorted(centres)]
    write_case(root, CaseInfo(case_id, "ct", "vertebra", records), image, labels)


def write_verse_case(root: Path, folder: str, stem: str, ids_bottom_up: Sequence[int], **kw) -> None:
    """Write a case in the published VerSe layout (stem may differ from folder; no sidecar)."""
    image, labels = to_images(*spine_arrays(ids_bottom_up, **kw))
    (root / "rawdata" / folder).mkdir(parents=True)
    (root / "derivatives" / folder).mkdir(parents=True)
    sitk.WriteImage(image, str(root / "rawdata" / folder / f"{stem}_ct.nii.gz"))
    sitk.WriteImage(labels, str(root / "derivatives" / folder / f"{stem}_seg-vert_msk.nii.gz"))


def tiny_config(iterations: int = 6, **kw) -> TrainingConfig:
    """8 filters, 32^3 patches at 2 mm, no workers, no augmentation unless given."""
    network = NetworkConfig(filters=8, depth=2, head_features=8, head_depth=2, patch_size=(32, 32, 32))
    values = dict(preset="custom", iterations=iterations, spacing_mm=SPACING, network=network,
                  normalization=NormalizationSpec("ct"), workers=0, validate_every=1000, checkpoint_every=3,
                  augment=AugmentConfig(enabled=False), validation_patches=2, threads=1)
    values.update(kw)
    return TrainingConfig(**values)


def test_spine_arrays_are_as_documented():
    image, labels = spine_arrays([24, 23])
    assert labels.shape == (40, 24, 24)
    assert np.count_nonzero(labels == 24) == 6 * 10 * 10 and np.count_nonzero(labels == 23) == 600
    assert np.flatnonzero((labels == 23).any(axis=(1, 2)))[0] == 4 + BOX_HEIGHT + GAP
    assert image[labels > 0].mean() > 700 and image[labels == 0].mean() < 100

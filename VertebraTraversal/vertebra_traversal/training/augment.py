"""Data augmentation of training patches (paper §3.6).

The paper uses random elastic deformation, Gaussian noise, Gaussian smoothing and random cropping
along z; we add a random intensity scale and shift. All functions take a numpy random generator and
work on model-grid patches of shape (D, H, W) = (z, y, x) with isotropic spacing in mm.

Elastic deformation is the expensive one on CPU: a random displacement field is drawn on a coarse
control grid (one node every ``elastic_grid_mm``) and upsampled to the patch by separable linear
interpolation (three small matrix products); only the patch is then resampled with
``scipy.ndimage.map_coordinates`` (image linear, labels nearest, so label ids are preserved).

Random z cropping acts on the scan, not the patch: :func:`random_z_window` draws the visible z range
and the sampler treats everything outside it as outside the image, so vertebrae cut by the crop
become incomplete (their completeness target follows from the visible volume, paper §3.5).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentations (intensities in normalised units).

    Attributes:
        enabled: False switches every augmentation off.
        elastic_probability / elastic_mm / elastic_grid_mm: chance of an elastic deformation, the
            standard deviation (mm) of the control-point displacements, and the control-point spacing.
        noise_probability / noise_std: chance of additive Gaussian noise, its largest std.
        smooth_probability / smooth_sigma_mm: chance of Gaussian smoothing, its largest sigma (mm).
        intensity_probability / scale / shift: chance of ``x * (1 + a) + b``, ``|a| <= scale``,
            ``|b| <= shift``.
        z_crop_probability / z_crop_min_fraction: chance of cropping the scan along z and the
            smallest kept fraction of its z extent.
    """

    enabled: bool = True
    elastic_probability: float = 0.5
    elastic_mm: float = 2.0
    elastic_grid_mm: float = 32.0
    noise_probability: float = 0.5
    noise_std: float = 0.05
    smooth_probability: float = 0.3
    smooth_sigma_mm: float = 1.5
    intensity_probability: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    z_crop_probability: float = 0.25
    z_crop_min_fraction: float = 0.4


def _linear_matrix(size: int, nodes: int) -> np.ndarray:
    """(size, nodes) matrix interpolating ``nodes`` equally spaced control values linearly to
    ``size`` samples spanning the same extent."""
    positions = np.linspace(0.0, nodes - 1.0, size)
    lower = np.clip(np.floor(positions).astype(int), 0, nodes - 2)
    frac = positions - lower
    matrix = np.zeros((size, nodes))
    matrix[np.arange(size), lower] = 1.0 - frac
    matrix[np.arange(size), lower + 1] += frac
    return matrix


def displacement_field(shape: Tuple[int, int, int], spacing_mm: float, rng: np.random.Generator,
                       std_mm: float, grid_mm: float) -> np.ndarray:
    """Smooth random displacement (voxels) of shape (3, D, H, W), drawn on a coarse grid."""
    nodes = [max(2, int(round(n * spacing_mm / grid_mm)) + 1) for n in shape]
    coarse = rng.normal(0.0, std_mm / spacing_mm, size=(3, *nodes))
    mz, my, mx = (_linear_matrix(n, k) for n, k in zip(shape, nodes))
    return np.einsum("cabd,za,yb,xd->czyx", coarse, mz, my, mx, optimize=True).astype(np.float32)


def elastic_deform(image: np.ndarray, labels: np.ndarray, displacement: np.ndarray,
                   fill: float) -> Tuple[np.ndarray, np.ndarray]:
    """Resample an image patch (linear, ``fill`` outside) and its label patch (nearest, 0 outside)
    at ``grid + displacement``. Shapes are kept; label ids are preserved (no new values)."""
    grid = np.indices(image.shape, dtype=np.float32) + displacement
    warped = ndimage.map_coordinates(image, grid, order=1, mode="constant", cval=fill)
    warped_labels = ndimage.map_coordinates(labels, grid, order=0, mode="constant", cval=0)
    return warped.astype(image.dtype, copy=False), warped_labels.astype(labels.dtype, copy=False)


def random_z_window(depth: int, rng: np.random.Generator, config: AugmentConfig,
                    min_voxels: int = 8) -> Tuple[int, int]:
    """Visible half-open z range of a scan of ``depth`` slices: the whole scan, or with
    probability ``z_crop_probability`` a random sub-range of at least ``z_crop_min_fraction``."""
    if not config.enabled or depth <= min_voxels or rng.random() >= config.z_crop_probability:
        return 0, depth
    shortest = max(min_voxels, int(np.ceil(config.z_crop_min_fraction * depth)))
    length = int(rng.integers(shortest, depth + 1))
    start = int(rng.integers(0, depth - length + 1))
    return start, start + length


def augment_patch(image: np.ndarray, labels: np.ndarray, spacing_mm: float, rng: np.random.Generator,
                  config: AugmentConfig, fill: float) -> Tuple[np.ndarray, np.ndarray]:
    """Apply the random patch augmentations to an image patch and its label patch.

    Args:
        image: float32 (D, H, W) normalised image patch.
        labels: integer (D, H, W) label patch (VerSe ids, 0 background); deformed with the image.
        spacing_mm: isotropic model spacing.
        fill: normalised value of voxels outside the scan (padding).

    Returns:
        ``(image, labels)`` of the same shapes and dtypes; labels hold a subset of the input ids.
    """
    if not config.enabled:
        return image, labels
    if rng.random() < config.elastic_probability:
        field = displacement_field(image.shape, spacing_mm, rng, config.elastic_mm, config.elastic_grid_mm)
        image, labels = elastic_deform(image, labels, field, fill)
    if rng.random() < config.smooth_probability:
        sigma = rng.uniform(0.0, config.smooth_sigma_mm) / spacing_mm
        image = ndimage.gaussian_filter(image, sigma, mode="nearest")
    if rng.random() < config.intensity_probability:
        scale = 1.0 + rng.uniform(-config.intensity_scale, config.intensity_scale)
        image = image * scale + rng.uniform(-config.intensity_shift, config.intensity_shift)
    if rng.random() < config.noise_probability:
        image = image + rng.normal(0.0, rng.uniform(0.0, config.noise_std), size=image.shape)
    return image.astype(np.float32, copy=False), labels

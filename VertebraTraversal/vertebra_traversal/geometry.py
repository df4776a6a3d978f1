"""The model grid: resampling to the network's spacing and orientation, and back (paper §3.1).

Paper §3.1: "we resample all input images to an isotropic resolution of 1 mm x 1 mm x 1 mm prior to
the segmentation. The obtained segmentation masks are resampled back to the original image
resolution using nearest neighbor interpolation."

The **model grid** (docs/ARCHITECTURE.md, "Coordinates and axes") has the model's spacing and the
identity direction, so its SimpleITK array ``(z, y, x)`` has axis 0 inferior -> superior (+S),
axis 1 anterior -> posterior (+P) and axis 2 right -> left (+L) whatever the file's storage
orientation. Physical coordinates are LPS millimetres. Spacings given as ``spacing_mm`` are in
SimpleITK order (x, y, z); indices and shapes named ``*_zyx`` are in array order.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

logger = logging.getLogger(__name__)

_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
#: Tolerance (in voxels) when sizing the model grid, so that float error never adds a voxel.
_SIZE_TOLERANCE = 1e-4
CROP_MIN_MM = 150.0  # the shortest crop of the paper's z-crop experiment (§5.2)


def _direction(image: sitk.Image) -> np.ndarray:
    """3x3 direction matrix; column i is the LPS direction of index axis i."""
    return np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)


def physical_bounds(image: sitk.Image) -> Tuple[np.ndarray, np.ndarray]:
    """(min, max) LPS mm (x, y, z) over the centres of the 8 corner voxels of ``image``."""
    size = np.asarray(image.GetSize(), dtype=np.float64)
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64)
    indices = corners * (size - 1.0)
    points = np.asarray(image.GetOrigin()) + (indices * np.asarray(image.GetSpacing())) @ _direction(image).T
    return points.min(axis=0), points.max(axis=0)


def model_grid_for(image: sitk.Image, spacing_mm: Sequence[float]) -> sitk.Image:
    """An empty (uint8) image defining the model grid of ``image``: identity direction, the given
    spacing (x, y, z mm), covering the physical bounding box of all 8 corner voxel centres and
    centred on it. When the spacing equals the image's and its axes are (flipped) permutations of
    LPS, the model grid's voxel centres coincide with the image's."""
    spacing = np.asarray([float(s) for s in spacing_mm], dtype=np.float64)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise ValueError(f"model spacing must be three positive numbers (x, y, z) in mm, got {tuple(spacing_mm)}")
    low, high = physical_bounds(image)
    extent = high - low
    size = np.ceil(extent / spacing - _SIZE_TOLERANCE).astype(int) + 1
    origin = low - ((size - 1) * spacing - extent) / 2.0
    grid = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    grid.SetSpacing(tuple(spacing))
    grid.SetOrigin(tuple(origin))
    return grid


def _effective_target_spacing(image: sitk.Image, spacing_mm: Sequence[float]) -> np.ndarray:
    """Target spacing along each index axis (i, j, k) of ``image`` (projection of the LPS spacing)."""
    projected = _direction(image).T * np.asarray(spacing_mm, dtype=np.float64)[None, :]
    return np.sqrt((projected ** 2).sum(axis=1))


def anti_alias(image: sitk.Image, spacing_mm: Sequence[float]) -> sitk.Image:
    """Gaussian pre-filter before downsampling to ``spacing_mm`` (x, y, z mm).

    Along each index axis whose target spacing t exceeds the voxel spacing s, the image is blurred with
    sigma = 0.5 * sqrt(t^2 - s^2) mm (-> 0.5 t for strong downsampling); other axes are left alone.
    Sampled Gaussian kernels (scipy, truncated at 3 sigma, edges replicated), float32 output.
    Returns the input itself when no axis is downsampled.
    """
    source = np.asarray(image.GetSpacing(), dtype=np.float64)
    target = _effective_target_spacing(image, spacing_mm)
    sigma = np.where(target > source * (1 + 1e-3), 0.5 * np.sqrt(np.maximum(target ** 2 - source ** 2, 0.0)), 0.0)
    if not np.any(sigma > 0):
        return image
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    for axis_ijk in np.flatnonzero(sigma > 0):
        sigma_voxels = float(sigma[axis_ijk] / source[axis_ijk])
        array = ndimage.gaussian_filter1d(array, sigma_voxels, axis=2 - int(axis_ijk), mode="nearest", truncate=3.0)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def to_model_grid(image: sitk.Image, spacing_mm: Sequence[float], interpolator: str = "linear",
                  default_value: Optional[float] = None) -> sitk.Image:
    """Resample ``image`` onto its model grid (see :func:`model_grid_for`).

    Args:
        image: 3D image, any direction.
        spacing_mm: model voxel spacing (x, y, z) in mm, e.g. ``(1, 1, 1)`` (paper §3.1).
        interpolator: ``"linear"`` for images (anti-aliased when downsampling, float32 output) or
            ``"nearest"`` for label maps (pixel type kept).
        default_value: value outside the input; None means the image minimum for ``"linear"``
            (air in CT, background in MR) and 0 for ``"nearest"``.

    Returns:
        Image with identity direction; array (z, y, x) = (inferior->superior, anterior->posterior,
        right->left).
    """
    if interpolator not in _INTERPOLATORS:
        raise ValueError(f"interpolator must be one of {sorted(_INTERPOLATORS)}, got {interpolator!r}")
    grid = model_grid_for(image, spacing_mm)
    if interpolator == "linear":
        if default_value is None:
            default_value = float(sitk.GetArrayViewFromImage(image).min())
        source = sitk.Cast(anti_alias(image, spacing_mm), sitk.sitkFloat32)
        pixel_type = sitk.sitkFloat32
    else:
        default_value = 0.0 if default_value is None else default_value
        source, pixel_type = image, image.GetPixelID()
    return sitk.Resample(source, grid, sitk.Transform(), _INTERPOLATORS[interpolator], float(default_value),
                         pixel_type)


#: Label-map interpolations of :func:`from_model_grid`.
LABEL_INTERPOLATORS = ("nearest", "linear")


def from_model_grid(labels_model: sitk.Image, reference: sitk.Image, interpolator: str = "nearest") -> sitk.Image:
    """Resample a model-grid label map onto exactly ``reference``'s grid (size, spacing, origin,
    direction); uint8, 0 outside the model grid.

    ``interpolator``:

    * ``"nearest"`` -- the paper's choice (§3.1) for its 1 mm grid; from a coarser grid it keeps a
      staircase up to one model voxel deep on every surface.
    * ``"linear"`` -- each label's indicator is interpolated linearly and a fine voxel takes the label
      whose value exceeds 0.5 (the indicators sum to 1, so at most one does): the surface passes
      between the model voxel centres instead of along their faces.
    """
    if interpolator not in LABEL_INTERPOLATORS:
        raise ValueError(f"interpolator must be one of {LABEL_INTERPOLATORS}, got {interpolator!r}")
    if interpolator == "linear":
        return _from_model_grid_linear(labels_model, reference)
    out = sitk.Resample(sitk.Cast(labels_model, sitk.sitkUInt8), reference, sitk.Transform(),
                        sitk.sitkNearestNeighbor, 0.0, sitk.sitkUInt8)
    out.CopyInformation(reference)
    return out


def _reference_box(labels_model: sitk.Image, lo_zyx: Sequence[int], hi_zyx: Sequence[int],
                   reference: sitk.Image) -> Optional[Tuple[Tuple[int, ...], Tuple[int, ...]]]:
    """Index box ``(start_xyz, size_xyz)`` of ``reference`` covering the model voxels ``[lo, hi)`` (z, y, x)
    plus one voxel of interpolation support; None when it misses the reference."""
    corners = [labels_model.TransformContinuousIndexToPhysicalPoint(
        [float(c[2]), float(c[1]), float(c[0])]) for c in np.array(np.meshgrid(
            *[(a - 1.0, b) for a, b in zip(lo_zyx, hi_zyx)], indexing="ij")).reshape(3, -1).T]
    index = np.array([reference.TransformPhysicalPointToContinuousIndex(c) for c in corners])
    start = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
    stop = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1, reference.GetSize())
    if np.any(stop <= start):
        return None
    return tuple(int(v) for v in start), tuple(int(v) for v in stop - start)


def _from_model_grid_linear(labels_model: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """:func:`from_model_grid` with ``"linear"``: one linear resampling per label, within its box."""
    model = sitk.GetArrayViewFromImage(labels_model)
    out = np.zeros(reference.GetSize()[::-1], np.uint8)
    for position, box in enumerate(ndimage.find_objects(model.astype(np.int64, copy=False))):
        if box is None:
            continue
        label = position + 1
        lo = [max(b.start - 1, 0) for b in box]
        hi = [min(b.stop + 1, n) for b, n in zip(box, model.shape)]
        region = _reference_box(labels_model, lo, hi, reference)
        if region is None:
            continue
        indicator = sitk.GetImageFromArray((model[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] == label).astype(np.float32))
        indicator.SetSpacing(labels_model.GetSpacing())
        indicator.SetDirection(labels_model.GetDirection())
        indicator.SetOrigin(labels_model.TransformIndexToPhysicalPoint([lo[2], lo[1], lo[0]]))
        start, size = region
        grid = sitk.Image(list(size), sitk.sitkUInt8)
        grid.SetSpacing(reference.GetSpacing())
        grid.SetDirection(reference.GetDirection())
        grid.SetOrigin(reference.TransformIndexToPhysicalPoint(list(start)))
        value = sitk.GetArrayFromImage(sitk.Resample(indicator, grid, sitk.Transform(), sitk.sitkLinear,
                                                     0.0, sitk.sitkFloat32))
        view = out[start[2]:start[2] + size[2], start[1]:start[1] + size[1], start[0]:start[0] + size[0]]
        view[value > 0.5] = label
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(reference)
    return result


def pad_to_shape(array: np.ndarray, min_shape_zyx: Sequence[int],
                 value: float) -> Tuple[np.ndarray, Tuple[int, int, int]]:
    """Pad a (z, y, x) array with ``value`` to at least ``min_shape_zyx`` voxels, symmetrically
    (an odd remainder goes to the end). Axes already large enough are unchanged.

    Returns:
        (padded array, offset (z, y, x) of ``array``'s first voxel inside the padded array);
        :func:`crop_padding` undoes it.
    """
    if array.ndim != 3 or len(min_shape_zyx) != 3:
        raise ValueError(f"pad_to_shape needs a 3D array and a 3D shape, got {array.shape} and {min_shape_zyx}")
    missing = [max(int(m) - s, 0) for m, s in zip(min_shape_zyx, array.shape)]
    widths = [(m // 2, m - m // 2) for m in missing]
    offset = (widths[0][0], widths[1][0], widths[2][0])
    if not any(missing):
        return array, offset
    return np.pad(array, widths, mode="constant", constant_values=value), offset


def crop_padding(padded: np.ndarray, offset_zyx: Sequence[int], shape_zyx: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`pad_to_shape`: the ``shape_zyx`` block starting at ``offset_zyx`` (a view)."""
    z, y, x = (int(o) for o in offset_zyx)
    dz, dy, dx = (int(s) for s in shape_zyx)
    if min(z, y, x) < 0 or z + dz > padded.shape[0] or y + dy > padded.shape[1] or x + dx > padded.shape[2]:
        raise ValueError(f"crop {offset_zyx}+{shape_zyx} lies outside the array of shape {padded.shape}")
    return padded[z:z + dz, y:y + dy, x:x + dx]


def box_voxels(labels: np.ndarray, label: int, box: Tuple[slice, ...]) -> Tuple[np.ndarray, ...]:
    """Indices (z, y, x) into ``labels`` of its voxels equal to ``label``, searched only inside ``box``
    (slices of ``labels``; an open start counts from 0)."""
    found = np.nonzero(labels[box] == label)
    return tuple(axis + (s.start or 0) for axis, s in zip(found, box))


def model_index_to_lps(model_image: sitk.Image, index_zyx: Sequence[float]) -> np.ndarray:
    """Physical point (LPS mm, (x, y, z)) of a continuous array index (z, y, x) of ``model_image``.

    Accepts one index, shape (3,), or several, shape (N, 3); returns the same shape. Works for any
    direction, equal to SimpleITK's ``TransformContinuousIndexToPhysicalPoint(index[::-1])``.
    """
    index = np.asarray(index_zyx, dtype=np.float64)
    if index.shape[-1] != 3:
        raise ValueError(f"index must have 3 components (z, y, x), got shape {index.shape}")
    ijk = index[..., ::-1] * np.asarray(model_image.GetSpacing())
    return np.asarray(model_image.GetOrigin()) + ijk @ _direction(model_image).T


def distance_below_mm(image: sitk.Image, point_lps: Sequence[float]) -> float:
    """How far (mm) the scan ``image`` reaches below ``point_lps`` (x, y, z LPS mm): the length of the ray
    from the point towards the patient's feet (LPS -z) until it leaves the image's voxels (their outer
    faces, any direction); 0 for a point outside the image."""
    direction, spacing = _direction(image), np.asarray(image.GetSpacing(), dtype=np.float64)
    index = direction.T @ (np.asarray(point_lps, dtype=np.float64) - np.asarray(image.GetOrigin())) / spacing
    step = direction.T @ np.array([0.0, 0.0, -1.0]) / spacing  # index change per mm along the ray
    size = np.asarray(image.GetSize(), dtype=np.float64)
    if np.any(index < -0.5) or np.any(index > size - 0.5):
        return 0.0
    moving = np.abs(step) > 1e-12
    bound = np.where(step > 0, size - 0.5, -0.5)
    return float(np.min((bound[moving] - index[moving]) / step[moving]))


def superior_axis(image: sitk.Image) -> int:
    """Index axis (0 = i, 1 = j, 2 = k) of ``image`` that is closest to the patient's z (S) axis."""
    return int(np.argmax(np.abs(_direction(image)[2, :])))


def crop_z(image: sitk.Image, z_min_mm: float, z_max_mm: float) -> sitk.Image:
    """Keep the slices whose centre lies within [z_min_mm, z_max_mm] along LPS z (superior).

    The cut runs across the index axis closest to z (:func:`superior_axis`); slice positions are
    taken through the image centre. Physical positions are kept (the origin moves). Used for the
    paper's §5.2 random z-crop experiment and for training augmentation.

    Raises:
        ValueError: empty or inverted range, or a range that holds no slice of the image.
    """
    if not z_min_mm < z_max_mm:
        raise ValueError(f"crop_z: need z_min_mm < z_max_mm, got {z_min_mm} and {z_max_mm}")
    axis = superior_axis(image)
    size = list(image.GetSize())
    index = (np.asarray(size, dtype=np.float64) - 1.0) / 2.0
    positions = np.repeat(index[None, :], size[axis], axis=0)
    positions[:, axis] = np.arange(size[axis])
    z = (np.asarray(image.GetOrigin()) + (positions * np.asarray(image.GetSpacing())) @ _direction(image).T)[:, 2]
    inside = np.flatnonzero((z >= z_min_mm) & (z <= z_max_mm))
    if inside.size == 0:
        raise ValueError(f"crop_z: range {z_min_mm}..{z_max_mm} mm holds no slice of the image "
                         f"(z from {z.min():.1f} to {z.max():.1f} mm)")
    start = [0, 0, 0]
    start[axis] = int(inside[0])
    size[axis] = int(inside[-1] - inside[0] + 1)
    return sitk.RegionOfInterest(image, size, start)


def crop_range_mm(image: sitk.Image, rng: np.random.Generator) -> Tuple[float, float]:
    """A range along LPS z (mm) over a random 20–40 % of the scan's length, at least ``CROP_MIN_MM`` (the whole
    scan where it is shorter), placed at random: the crops of the paper's z-crop experiment (§5.2)."""
    low, high = physical_bounds(image)
    length = float(high[2] - low[2])
    size = min(length, max(CROP_MIN_MM, rng.uniform(0.2, 0.4) * length))
    start = float(low[2]) + rng.uniform(0.0, length - size)
    return start, start + size

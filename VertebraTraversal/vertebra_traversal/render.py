"""PNG previews: mid-sagittal and mid-coronal reformats with a translucent label overlay.

Both panels are resampled from the image's physical space (any storage orientation) onto an
isotropic display grid in patient orientation: superior up; sagittal with anterior on the left,
coronal with the patient's right on the left (radiological convention). The planes pass through the
centroid of all labels (the image centre when there are none). Labels are drawn in the anatomy
table's colours and named beside each vertebra. Used for phantom previews and segmentation results.
"""
from __future__ import annotations

import io
import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont

from . import anatomy

logger = logging.getLogger(__name__)

#: Longest physical extent of the volume maps to this many display pixels (isotropic display spacing).
PANEL_PIXELS = 480
#: Title bar height and the gap between/around panels, pixels. The title bar holds the title and, above
#: each panel, its orientation tag.
TITLE_HEIGHT, GAP = 40, 8
#: Colour of the panels' orientation tags (RGB).
TAG_COLOUR = (255, 255, 0)
OVERLAY_ALPHA = 0.45


def physical_box(image: sitk.Image) -> Tuple[np.ndarray, np.ndarray]:
    """LPS bounding box (mm) of the voxel centres of ``image``: (lo (3,), hi (3,))."""
    size = np.asarray(image.GetSize()) - 1
    corners = [image.TransformContinuousIndexToPhysicalPoint([float(c) for c in (a, b, d)])
               for a in (0, size[0]) for b in (0, size[1]) for d in (0, size[2])]
    pts = np.asarray(corners)
    return pts.min(axis=0), pts.max(axis=0)


def display_spacing(image: sitk.Image) -> float:
    """Isotropic display spacing (mm/pixel): the longest extent over :data:`PANEL_PIXELS`."""
    lo, hi = physical_box(image)
    return max(float(np.max(hi - lo)) / PANEL_PIXELS, 0.05)


def _plane(image: sitk.Image, labels: sitk.Image, axis: int, position: float, spacing: float
           ) -> Tuple[np.ndarray, np.ndarray]:
    """Reformat at ``position`` (mm) along world ``axis`` (0 x: sagittal, 1 y: coronal); rows run
    superior -> inferior, columns along the other horizontal axis (increasing y or x)."""
    lo, hi = physical_box(image)
    size = [max(int(round((h - l) / spacing)) + 1, 1) for l, h in zip(lo, hi)]
    origin = list(lo)
    size[axis], origin[axis] = 1, position
    ref = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    ref.SetSpacing([spacing] * 3)
    ref.SetOrigin([float(o) for o in origin])
    pad = float(sitk.GetArrayViewFromImage(image).min())
    img = sitk.GetArrayFromImage(sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, pad, sitk.sitkFloat32))
    lab = sitk.GetArrayFromImage(sitk.Resample(labels, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                               sitk.sitkUInt8))
    img, lab = (a[:, :, 0] if axis == 0 else a[:, 0, :] for a in (img, lab))
    return img[::-1].copy(), lab[::-1].copy()


def _window(values: np.ndarray, ct: bool) -> np.ndarray:
    if ct:
        lo, hi = -250.0, 1250.0
    else:
        lo, hi = np.percentile(values, [1.0, 99.5]) if values.size else (0.0, 1.0)
        hi = max(hi, lo + 1e-3)
    return np.clip((values - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)


def _color(label: int) -> np.ndarray:
    if anatomy.is_valid_label(label):
        return np.asarray(anatomy.vertebra(label).color) * 255.0
    return np.array([200.0, 200.0, 200.0])


def _overlay(gray: np.ndarray, lab: np.ndarray) -> np.ndarray:
    rgb = np.repeat(gray[:, :, None].astype(np.float32), 3, axis=2)
    for label in np.unique(lab):
        if label == 0:
            continue
        mask = lab == label
        rgb[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * _color(int(label))
    return rgb.astype(np.uint8)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def _names(draw: ImageDraw.ImageDraw, lab: np.ndarray, names: Dict[int, str], x0: int, y0: int) -> None:
    """Write each label's name left of its leftmost pixel at its mean row (inside the panel)."""
    font = _font(12)
    for label in np.unique(lab):
        if label == 0:
            continue
        rows, cols = np.nonzero(lab == label)
        text = names.get(int(label), anatomy.name_of(int(label)) if anatomy.is_valid_label(int(label)) else str(label))
        width = draw.textlength(text, font=font)
        x = max(int(cols.min()) - width - 4, 0)
        y = int(rows.mean()) - 6
        color = tuple(int(c) for c in _color(int(label)))
        draw.text((x0 + x + 1, y0 + y + 1), text, fill=(0, 0, 0), font=font)
        draw.text((x0 + x, y0 + y), text, fill=color, font=font)


def preview_png(image: sitk.Image, labels: sitk.Image, names: Optional[Dict[int, str]] = None,
                title: str = "") -> bytes:
    """PNG bytes: mid-sagittal (left) and mid-coronal (right) panels with label overlay and names.

    Args:
        image: 3D scalar image (HU when its minimum is below -500, otherwise windowed by percentiles).
        labels: label map on the same grid (any ids; vertebra ids get anatomy colours).
        names: text per label id (default: anatomy names).
        title: written in the title bar.

    The panels have isotropic display spacing :func:`display_spacing`; a panel is
    ``round(extent / spacing) + 1`` pixels along each of its two axes (extent of the voxel centres).
    """
    spacing = display_spacing(image)
    arr = sitk.GetArrayViewFromImage(labels)
    if np.any(arr):
        centre = np.mean([p for l, p in _centroids(labels).items()], axis=0)
    else:
        lo, hi = physical_box(image)
        centre = (lo + hi) / 2
    ct = float(sitk.GetArrayViewFromImage(image).min()) < -500
    panels: List[Tuple[np.ndarray, np.ndarray]] = [_plane(image, labels, 0, float(centre[0]), spacing),
                                                   _plane(image, labels, 1, float(centre[1]), spacing)]
    height = max(p[0].shape[0] for p in panels)
    width = sum(p[0].shape[1] for p in panels) + GAP * (len(panels) + 1)
    canvas = Image.new("RGB", (width, height + TITLE_HEIGHT + GAP), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 6), title, fill=(255, 255, 255), font=_font(14))
    x0 = GAP
    for (img, lab), tag in zip(panels, ("sagittal  A | P", "coronal  R | L")):
        canvas.paste(Image.fromarray(_overlay(_window(img, ct), lab)), (x0, TITLE_HEIGHT))
        _names(draw, lab, names or {}, x0, TITLE_HEIGHT)
        draw.text((x0 + 2, TITLE_HEIGHT - 14), tag, fill=TAG_COLOUR, font=_font(11))  # never over a name
        x0 += img.shape[1] + GAP
    out = io.BytesIO()
    canvas.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _centroids(labels: sitk.Image) -> Dict[int, np.ndarray]:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(labels, sitk.sitkUInt8))
    return {int(l): np.asarray(stats.GetCentroid(l)) for l in stats.GetLabels()}

"""Per-vertebra statistics of an image and its label map (calibration against real CT).

For every label: volume (mL), intensity percentiles inside the mask (p10 / median / p90; HU for CT),
and the physical extents of the mask along the patient axes L-R, A-P and S-I (mm), whatever the
storage orientation. Real lumbar CT masks (1.5-3 mm voxels) give about 58-66 mL per L1-L5
(T12 about 48 mL), HU p10 -20..90, median 140-210, p90 320-750, extents 45-55 mm cranio-caudal and
80-100 mm across the transverse processes.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import SimpleITK as sitk

from .. import anatomy


def vertebra_stats(image: sitk.Image, labels: sitk.Image) -> List[Dict[str, object]]:
    """Statistics of every non-zero label of ``labels`` (same grid as ``image``), sorted by label rank.

    Returns:
        One dict per label: ``label``, ``name``, ``voxels``, ``volume_ml``, ``p10``, ``median``,
        ``p90`` (image units), ``extent_lr_mm``, ``extent_ap_mm``, ``extent_si_mm``.

    Raises:
        ValueError: when the two images are not on the same grid.
    """
    if image.GetSize() != labels.GetSize() or not np.allclose(image.GetSpacing(), labels.GetSpacing()):
        raise ValueError(f"image (size {image.GetSize()}) and labels (size {labels.GetSize()}) differ in grid")
    values = sitk.GetArrayViewFromImage(image)
    lab = sitk.GetArrayViewFromImage(labels)
    spacing = np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    voxel_extent = np.abs(direction) @ spacing  # one voxel's size along x, y, z (mm)
    out = []
    for label in [int(v) for v in np.unique(lab) if v != 0]:
        kji = np.nonzero(lab == label)
        vals = values[kji]
        ijk = np.stack([kji[2], kji[1], kji[0]], axis=1).astype(np.float64)
        lo = ijk.min(axis=0) * spacing
        hi = ijk.max(axis=0) * spacing
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        phys = corners @ direction.T
        extent = phys.max(axis=0) - phys.min(axis=0) + voxel_extent
        p10, med, p90 = np.percentile(vals, [10, 50, 90])
        name = anatomy.name_of(label) if anatomy.is_valid_label(label) else str(label)
        out.append({"label": label, "name": name, "voxels": int(vals.size), "volume_ml": round(vals.size * voxel_ml, 2),
                    "p10": round(float(p10), 1), "median": round(float(med), 1), "p90": round(float(p90), 1),
                    "extent_lr_mm": round(float(extent[0]), 1), "extent_ap_mm": round(float(extent[1]), 1),
                    "extent_si_mm": round(float(extent[2]), 1)})
    rank = {v.label: v.rank for v in anatomy.VERTEBRAE}
    return sorted(out, key=lambda r: rank.get(r["label"], 100 + r["label"]))


def format_stats(rows: List[Dict[str, object]]) -> str:
    """A fixed-width text table of :func:`vertebra_stats` rows."""
    head = f"{'level':<6}{'mL':>7}{'p10':>8}{'median':>8}{'p90':>8}{'L-R mm':>8}{'A-P mm':>8}{'S-I mm':>8}"
    lines = [head]
    for r in rows:
        lines.append(f"{r['name']:<6}{r['volume_ml']:>7.1f}{r['p10']:>8.0f}{r['median']:>8.0f}{r['p90']:>8.0f}"
                     f"{r['extent_lr_mm']:>8.1f}{r['extent_ap_mm']:>8.1f}{r['extent_si_mm']:>8.1f}")
    return "\n".join(lines)

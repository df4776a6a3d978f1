"""Which of the traversal's instances a run labels (beyond the paper): the instances in cranio-caudal order,
at most as many as the label reading can hold, without those off the spine line (:mod:`.spine_line`) and
without fragments far smaller than their neighbours (:mod:`.fragments`). Used by
:func:`~vertebra_traversal.pipeline.label_model_grid`; instances carry ``index``, ``voxels``,
``center_zyx`` and ``bbox`` on an isotropic model grid (z, y, x; axis 0 superior).
"""
from __future__ import annotations

import logging
from typing import Any, List, Tuple

import numpy as np

from .fragments import fragments
from .spine_line import off_spine

logger = logging.getLogger(__name__)

#: An instance the scan's cranio-caudal border cuts across this area (mm²) or more is a vertebra the scan
#: cuts, whatever its volume (``SegmentConfig.min_volume_ratio``): a cut through a vertebra's body alone
#: covers several cm²; the demo sample's rib piece touches the border over 1.3 cm², the pieces of other bone
#: that traversals stored on 20 training phantoms over 3.4 cm² at most.
CUT_AREA_MM2 = 400.0


def plausible(instances: Tuple[Any, ...], most: int) -> List[Any]:
    """Instances in cranio-caudal order (top first); beyond ``most`` keep the largest. ``most``: the longest
    spine (25), or fewer where the labelling cannot take that many (:func:`~.labeling.capacity`). The cap
    comes before the spine-line and volume filters, and stays at 25 where the labelling may leave out
    ends: taking up to 28 after the filters found 2 more complete vertebrae on 60 validation phantoms but
    kept 3 more pieces of other bone (CT model history)."""
    kept = list(instances)
    if len(kept) > most:
        logger.warning("%d instances found, more than the allowed spines hold; keeping the %d largest", len(kept),
                       most)
        kept = sorted(kept, key=lambda v: -v.voxels)[:most]
    return sorted(kept, key=lambda v: -v.center_zyx[0])


def on_spine(found: List[Any], shape: Tuple[int, ...], spacing_mm: float, max_offset_mm: float) -> List[Any]:
    """``found`` (instances, ``center_zyx`` and ``bbox`` in voxels of an isotropic (z, y, x) grid of
    ``shape`` and ``spacing_mm``) without those more than ``max_offset_mm`` off the spine line of the
    others (:mod:`.spine_line`). An instance within one voxel of the grid's border is kept and left out of
    the line: the scan may show any part of a vertebra it cuts, a spinous process's tip, say."""
    if not max_offset_mm or not found:
        return found
    inner = [v for v in found if not _near_border(v.bbox, shape)]
    dropped = off_spine(np.array([v.center_zyx for v in inner], dtype=float).reshape(-1, 3) * spacing_mm,
                        max_offset_mm)
    gone = {v.index for v, off in zip(inner, dropped) if off}
    for v in (v for v in inner if v.index in gone):
        logger.info("instance %d (%d voxels) lies more than %g mm off the spine line: not a vertebra", v.index,
                    v.voxels, max_offset_mm)
    return [v for v in found if v.index not in gone]


def whole(found: List[Any], instances: np.ndarray, spacing_mm: float, min_ratio: float) -> List[Any]:
    """``found`` (instances in cranio-caudal order, ``voxels`` and ``index`` in ``instances``, the (z, y, x)
    instance map of an isotropic grid of ``spacing_mm`` whose axis 0 is the superior axis) without the
    fragments (:mod:`.fragments`): instances whose volume is below ``min_ratio`` of the median of their
    nearest neighbours'. Not judged, but counted as neighbours: the two at the ends of the chain, and any
    the grid's cranio-caudal faces cut across ``CUT_AREA_MM2`` or more (a vertebra the scan cuts)."""
    if not min_ratio or not found:
        return found
    judged = [0 < i < len(found) - 1 and _cut_area_mm2(instances, v.index, spacing_mm) < CUT_AREA_MM2
              for i, v in enumerate(found)]
    dropped = fragments(np.array([v.voxels for v in found], dtype=float), min_ratio, np.array(judged))
    for v, gone in zip(found, dropped):
        if gone:
            logger.info("instance %d (%d voxels) is far smaller than the instances around it: a fragment, "
                        "not a vertebra", v.index, v.voxels)
    return [v for v, gone in zip(found, dropped) if not gone]


def _cut_area_mm2(instances: np.ndarray, index: int, spacing_mm: float) -> float:
    """The larger area (mm²) that instance ``index`` covers on the two cranio-caudal faces (axis 0) of an
    isotropic grid: its voxels in the face's two outermost layers, projected onto the face."""
    faces = (instances[:2], instances[-2:])
    return max(float(np.count_nonzero((face == index).any(axis=0))) for face in faces) * spacing_mm ** 2


def _near_border(bbox: Tuple[slice, ...], shape: Tuple[int, ...]) -> bool:
    return any(s.start <= 1 or s.stop >= n - 1 for s, n in zip(bbox, shape))

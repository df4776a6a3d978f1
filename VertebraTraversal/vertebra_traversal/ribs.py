"""Where the ribs end: the last thoracic vertebra of a CT scan, read from its ribs (beyond the paper).

A reader of a CT names the lumbar vertebrae by counting down from the last rib. The network regresses each
vertebra's label from the patch around it (paper §3.2), and on the bundled CT model whole runs of thoracic
instances come out one level off (the CT model card, *Where it fails*). This module finds the ribs next to
the spine and tells :func:`~vertebra_traversal.labeling.refine_labels` which instance is the last one with
ribs; the label reading then prefers sequences that name it T12 (T13 in that chain).

Everything runs on the model grid (:func:`~vertebra_traversal.geometry.to_model_grid`: identity direction,
array axes (z, y, x) = (inferior->superior, anterior->posterior, right->left), values in HU). A *rib stub* is
a connected piece of bone (above ``RibConfig.bone_hu``) in a window beside the spine line: 50-95 mm to the
side of it, from 30 mm in front of it to 60 mm behind. A rib crosses that window as a short tube leaving it
outwards; the window is wide enough to leave the lumbar transverse processes (at most 47 mm from the
midline) out. Pieces that are tall (the scapula with the ribs it touches, the iliac wings) or large (the
pelvis), that start far out (the scapula), that do not reach out (a process's tip), or that touch the
grid's top or bottom slice (cut by the scan) are not stubs. Each stub belongs to the instance whose height
range holds its inner end and whose centre is nearest to it in height.

The last thoracic vertebra is the lowest instance of the longest run of rib-bearing instances (up to
``RibConfig.run_gap`` instances without a stub may interrupt a run: ribs missed), provided that an
instance lies below it whose lower end is not cut by the scan's bottom (``RibConfig.min_below_mm``):
otherwise the end of the ribs is not in view, and a run that reaches the bottom of the scan says nothing.
(``RibConfig.run_choice = "lowest"`` takes the lowest run of at least ``min_run`` instances instead, past a
scapula that splits the ribs; measured on the phantoms and not better, so not the default.)
CT only: the window is read in HU. An option, off in the bundled models (``segment --rib-anchor on``): the
CT model's history, *Counting from the last rib*, has what it gained and lost on the phantoms. Every CT run
also reads it on its final label map (:func:`ribs_end_label`): the report says where the ribs end, and the
label confidence counts a run whose ribs end at a vertebra not named T12 as less likely right. Where they
do, in a scan at least ``OFFER_MIN_SCAN_MM`` tall, :func:`rib_assignment` reads the same vertebrae once more
counting from that end; a CT run takes that reading as its labels and keeps the network's own beside
(``own_label``), or with ``SegmentConfig.count_from_ribs`` off keeps its own and offers it (``rib_label``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from . import anatomy
from .confidence import LAST_RIBBED
from .geometry import box_voxels
from .labeling import LabelAssignment, LabelingConfig, refine_labels

logger = logging.getLogger(__name__)

#: The rib anchor's price in :func:`rib_assignment`: above any average likelihood, so the anchor holds.
ABSOLUTE_PENALTY = 2.0

#: Where a run reads its labels counted from the ribs (:func:`rib_assignment`): scans at least this tall (mm,
#: :func:`~vertebra_traversal.fallback.height_mm`). On 90 new CT phantoms that reading took 692 to 752 of
#: 1 017 complete vertebrae in any scan and 378 to 306 of 667 on their 150-307 mm z-crops; in scans of 350 mm
#: and more, 692 to 751, and the crops kept theirs (CT model history, *The labels counted from the ribs*).
OFFER_MIN_SCAN_MM = 350.0
#: Offers that move the vertebra where the ribs end by at most this many levels (None: any). One level
#: gained nothing over any on those full scans (752 both) and was not adopted.
OFFER_MAX_LEVELS: Optional[float] = None

#: How the run of rib-bearing instances that ends the ribs is chosen (``RibConfig.run_choice``).
RUN_CHOICES = ("longest", "lowest")


@dataclass(frozen=True)
class RibConfig:
    """The rib-stub window and filters (mm, HU); the defaults are those measured on the CT phantoms.

    Attributes:
        bone_hu: what counts as bone.
        lateral_mm: (inner, outer) distance to the side of the spine line.
        posterior_mm: (front, back) extent of the window, negative = in front of the spine line.
        max_height_mm: a stub spans at most this along the superior axis.
        max_volume_mm3: and holds at most this much bone.
        max_medial_mm: its inner end lies at most this far to the side of the spine line.
        min_reach_mm: its outer end at least this far.
        min_below_mm: the instance below the last rib-bearing one must end this far above the grid's bottom.
        run_gap: how many instances without a stub may interrupt a run of rib-bearing ones (ribs missed).
        run_choice: which run ends the ribs: ``"longest"`` (the top-most on a tie) or ``"lowest"``, the
            lowest of at least ``min_run`` rib-bearing instances (a lone stub, say on the iliac crest,
            does not count).
        min_run: see ``run_choice``.
    """

    bone_hu: float = 250.0
    lateral_mm: Tuple[float, float] = (50.0, 95.0)
    posterior_mm: Tuple[float, float] = (-30.0, 60.0)
    max_height_mm: float = 45.0
    max_volume_mm3: float = 6250.0
    max_medial_mm: float = 62.0
    min_reach_mm: float = 64.0
    min_below_mm: float = 5.0
    run_gap: int = 1
    run_choice: str = "longest"
    min_run: int = 2

    def __post_init__(self) -> None:
        if self.run_choice not in RUN_CHOICES:
            raise ValueError(f"RibConfig.run_choice must be one of {RUN_CHOICES}, got {self.run_choice!r}")
        if self.min_run < 1 or self.run_gap < 0:
            raise ValueError(f"RibConfig: min_run must be >= 1 and run_gap >= 0, got {self.min_run}, {self.run_gap}")


@dataclass(frozen=True)
class Instance:
    """One instance on the model grid: median voxel (z, y, x) and its 5th / 95th height percentiles (voxels)."""

    center: Tuple[float, float, float]
    low: float
    high: float


def instance_extent(instances: np.ndarray, index: int, bbox: Tuple[slice, ...]) -> Instance:
    """:class:`Instance` of label ``index`` in the instance map ``instances`` (z, y, x), searched in ``bbox``."""
    z, y, x = box_voxels(instances, index, bbox)
    return Instance((float(np.median(z)), float(np.median(y)), float(np.median(x))),
                    float(np.percentile(z, 5)), float(np.percentile(z, 95)))


def _spine_line(centers: Sequence[Tuple[float, float, float]], depth: int) -> Tuple[np.ndarray, np.ndarray]:
    """(y, x) of the spine line per slice (voxels): the instance centres joined linearly, constant beyond."""
    c = np.array(centers, dtype=float)
    c = c[np.argsort(c[:, 0])]
    slices = np.arange(depth)
    return np.interp(slices, c[:, 0], c[:, 1]), np.interp(slices, c[:, 0], c[:, 2])


def rib_stubs(image_hu: np.ndarray, centers: Sequence[Tuple[float, float, float]],
              spacing_mm: Sequence[float], config: RibConfig = RibConfig()) -> List[float]:
    """Heights (model-grid slice, float) of the inner ends of the rib stubs beside the spine line.

    Args:
        image_hu: model-grid CT (z, y, x), HU.
        centers: instance centres (z, y, x) in voxels, any order; at least one.
        spacing_mm: grid spacing (x, y, z) in mm, as SimpleITK gives it.
    """
    sx, sy, sz = (float(s) for s in spacing_mm)
    depth = image_hu.shape[0]
    line_y, line_x = _spine_line(centers, depth)
    yy, xx = np.mgrid[0:image_hu.shape[1], 0:image_hu.shape[2]]
    across = (xx[None] - line_x[:, None, None]) * sx
    behind = (yy[None] - line_y[:, None, None]) * sy
    window = ((np.abs(across) >= config.lateral_mm[0]) & (np.abs(across) <= config.lateral_mm[1])
              & (behind >= config.posterior_mm[0]) & (behind <= config.posterior_mm[1]))
    pieces, _ = ndimage.label((image_hu > config.bone_hu) & window)
    heights = []
    for number, box in enumerate(ndimage.find_objects(pieces), start=1):
        z, y, x = box_voxels(pieces, number, box)
        side = np.abs(across[z, y, x])
        tall = (z.max() - z.min() + 1) * sz > config.max_height_mm
        large = z.size * sx * sy * sz > config.max_volume_mm3
        cut = z.min() == 0 or z.max() == depth - 1
        if tall or large or cut or side.min() > config.max_medial_mm or side.max() < config.min_reach_mm:
            continue
        heights.append(float(z[side <= side.min() + 7.5].mean()))  # the inner 7.5 mm
    return heights


def _end_of_run(ribbed: Sequence[int], config: RibConfig) -> Optional[int]:
    """The last index of the chosen run in the sorted indices ``ribbed`` (top first; up to
    ``config.run_gap`` indices may be missing between two of a run): the longest (the top-most on a tie)
    or the lowest of at least ``config.min_run``; None for none."""
    runs: List[List[int]] = []
    for index in ribbed:
        if runs and index - runs[-1][-1] <= config.run_gap + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    if config.run_choice == "lowest":
        long_enough = [run for run in runs if len(run) >= config.min_run]
        return long_enough[-1][-1] if long_enough else None
    return max(runs, key=len)[-1] if runs else None


def last_thoracic(image_hu: np.ndarray, instances: Sequence[Instance], spacing_mm: Sequence[float],
                  config: RibConfig = RibConfig()) -> Optional[int]:
    """Index into ``instances`` (top first) of the last thoracic vertebra, or None where the end of the ribs
    is not in view (module docstring). ``spacing_mm`` (x, y, z) as SimpleITK gives it."""
    if len(instances) < 2:
        return None
    ribbed = set()
    for height in rib_stubs(image_hu, [i.center for i in instances], spacing_mm, config):
        holding = [k for k, i in enumerate(instances) if i.low - 1 <= height <= i.high + 1]
        if holding:
            ribbed.add(min(holding, key=lambda k: abs(instances[k].center[0] - height)))
    last = _end_of_run(sorted(ribbed), config)
    if last is None or last == len(instances) - 1:
        return None
    if instances[last + 1].low * float(spacing_mm[2]) < config.min_below_mm:  # below it: cut by the scan's bottom
        return None
    logger.info("ribs on instances %s: instance %d is the last thoracic vertebra", sorted(ribbed), last)
    return last


def ribs_end_label(model_image: sitk.Image, labels: sitk.Image, config: RibConfig = RibConfig()) -> Optional[int]:
    """The VerSe id of the vertebra of the label map ``labels`` (any grid) that the ribs show to be the last
    thoracic one (:func:`last_thoracic`), or None where the end of the ribs is not in view. ``labels`` is
    resampled (nearest) onto ``model_image``, the scan on its model grid in HU
    (:func:`~vertebra_traversal.geometry.to_model_grid`), where the instances are its labels top first."""
    on_grid = sitk.GetArrayFromImage(sitk.Resample(labels, model_image, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    found = [(instance_extent(on_grid, label, box), label)
             for label, box in enumerate(ndimage.find_objects(on_grid), start=1) if box is not None]
    found.sort(key=lambda pair: -pair[0].center[0])  # top first: array axis 0 runs inferior -> superior
    last = last_thoracic(sitk.GetArrayViewFromImage(model_image), [extent for extent, _ in found],
                         model_image.GetSpacing(), config)
    return None if last is None else found[last][1]


def rib_assignment(values: Sequence[float], labels: Sequence[int], ribs_end: Optional[int],
                   labeling: LabelingConfig = LabelingConfig(), gap_below_mm: Optional[float] = None,
                   max_levels: Optional[float] = None,
                   centroids_mm: Optional[Sequence[Sequence[float]]] = None) -> Optional[LabelAssignment]:
    """The label assignment of the run's vertebrae counted from the end of the ribs, or None where that
    reading names none of them differently, cannot name the vertebra where the ribs end T12 or T13 (no
    allowed chain fits the vertebrae around it so), or moves it by more than ``max_levels`` (anatomical
    rank, T13 = 19.5; None: any).

    Args:
        values: the vertebrae's regressed label values, top first (as :func:`.labeling.refine_labels`).
        labels: their labels as the run reads them (VerSe ids, distinct, one per value, none 0).
        ribs_end: the label of the vertebra the ribs show to be the last thoracic one
            (:func:`ribs_end_label`), or None (not in view: None).
        labeling: the run's label reading; read again with the rib anchor at ``ABSOLUTE_PENALTY`` (a
            sequence that does not name that vertebra its chain's last thoracic member loses to any that
            does) and no end left out (nor any instance beyond a reversal), so that every vertebra keeps a label.
        gap_below_mm, centroids_mm: as :func:`.labeling.refine_labels` takes them.
    """
    if ribs_end is None or ribs_end not in labels or len(values) != len(labels):
        return None
    anchored = replace(labeling, rib_anchor=True, rib_anchor_penalty=ABSOLUTE_PENALTY, max_trimmed=0,
                       reversal_levels=0.0)
    end = list(labels).index(ribs_end)
    read = refine_labels(values, anchored, gap_below_mm, end, centroids_mm)
    moved = abs(anatomy.vertebra(read.labels[end]).rank - anatomy.vertebra(ribs_end).rank)
    if tuple(read.labels) == tuple(labels) or anatomy.name_of(read.labels[end]) not in LAST_RIBBED or \
            (max_levels is not None and moved > max_levels):
        return None  # the same labels; no chain can end its thoracic spine there; or too far a move
    return read


def relabel(labels: sitk.Image, mapping: Dict[int, int]) -> sitk.Image:
    """The label map ``labels`` (uint8 VerSe ids) with every id in ``mapping`` replaced by its value, all at
    once (a chain moved by one level maps T11 to T12 and T12 to L1)."""
    lut = np.arange(256, dtype=np.uint8)
    for old, new in mapping.items():
        lut[old] = new
    out = sitk.GetImageFromArray(lut[sitk.GetArrayViewFromImage(labels)])
    out.CopyInformation(labels)
    return out

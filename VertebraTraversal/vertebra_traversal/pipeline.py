"""Image -> labelled, completeness-flagged vertebrae (the engine, file-free).

The steps follow the paper: resample to the model's isotropic grid (§3.1), normalise (CT: HU as the
model says; MR: 5th/95th percentile to [-1, 1], §5), run the iterative traversal (§3.3), drop the
instances off the spine line when the model or run asks for it (not in the paper; :mod:`.spine_line`),
refine the labels by maximum likelihood (§3.4; through the model's label calibration when it has one,
:mod:`.label_calibration`), map the instances back to the input grid (linear interpolation of
each mask by default; nearest neighbour as in §3.1) and, for CT, remove voxels below 200 HU from each
vertebra's surface (§3.1), a surface layer one model voxel thick
(:func:`~vertebra_traversal.postprocess.surface_passes`); then keep each vertebra's largest connected
piece (not in the paper; ``SegmentConfig.largest_component``). On request, for CT, bone voxels within
one model voxel of a vertebra then join the nearest one (not in the paper; ``SegmentConfig.surface_growth``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import numpy as np
import SimpleITK as sitk

from . import anatomy
from .checkpoint import LoadedModel, ModelMetadata
from .confidence import ConfidenceCalibration, ribs_disagree, steps_from_start
from .fallback import Counted, EventCallback, height_mm, span_mm, stalled
from .geometry import (box_voxels, distance_below_mm, from_model_grid, model_index_to_lps, superior_axis,
                       to_model_grid)
from .instance_filters import on_spine, plausible, whole
from .labeling import LabelAssignment, LabelingConfig, capacity, provisional_label, refine_labels
from .normalization import NormalizationSpec, normalize, pad_value
from .predictor import Predictor
from .ribs import (OFFER_MAX_LEVELS, OFFER_MIN_SCAN_MM, instance_extent, last_thoracic, relabel, rib_assignment,
                   ribs_end_label)
from .postprocess import (EDGE_MARGIN_FACES, grow_into_bone, is_complete, labels_at_edge, largest_component_per_label,
                          refine_surface_ct, surface_passes)
from .segment_config import SegmentConfig
from .start_network import traversal_modules
from .torch_predictor import TorchPredictor
from .traversal import PatchEvent, TraversalConfig, TraversalResult, VertebraEvent, traverse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VertebraResult:
    """One segmented vertebra. ``order`` counts cranio-caudally from 1 (top-most); ``at_scan_edge``: its
    mask reaches the scan's border as the run's edge margin and contact area define it (``SegmentConfig``);
    ``rib_label``: its label counted from the end of the ribs, in a CT run whose ribs end at a vertebra
    that reading names differently (:func:`~vertebra_traversal.ribs.rib_assignment`), else None; ``own_label``:
    where the run took that reading as its labels (``SegmentConfig.count_from_ribs``), the label its own
    reading gave this vertebra, else None."""

    order: int
    label: int
    name: str
    complete: bool
    completeness_probability: float
    at_scan_edge: bool
    label_likelihood: float
    label_confidence: float
    label_value: float
    volume_mm3: float
    centroid_lps_mm: Tuple[float, float, float]
    rib_label: Optional[int] = None
    own_label: Optional[int] = None

    def to_json(self) -> Dict[str, Any]:
        return {"order": self.order, "label": self.label, "name": self.name, "complete": self.complete,
                "completeness_probability": round(self.completeness_probability, 4),
                "at_scan_edge": self.at_scan_edge,
                "label_likelihood": round(self.label_likelihood, 4),
                "label_confidence": round(self.label_confidence, 4),
                "label_value": round(self.label_value, 3), "volume_mm3": round(self.volume_mm3, 1),
                "centroid_lps_mm": [round(c, 2) for c in self.centroid_lps_mm], "rib_label": self.rib_label,
                "own_label": self.own_label}


@dataclass(frozen=True)
class SegmentationResult:
    """Outcome of :func:`segment_image`. ``labels`` is a uint8 VerSe-id map on the input grid;
    ``start_network_used``: the model's start network segmented this scan's empty-memory patches;
    ``rescue_network_used``: its rescue network did, in the second traversal that gave this result;
    ``ribs_end``: CT, the VerSe id of the vertebra the ribs show to be the last thoracic one
    (:func:`~vertebra_traversal.ribs.ribs_end_label`), None where that is not in view (and for MR);
    ``counted_from_ribs``: the labels are the ribs' reading (``SegmentConfig.count_from_ribs``)."""

    labels: sitk.Image
    vertebrae: Tuple[VertebraResult, ...]
    chain: str
    network_passes: int
    steps: int
    seconds: float
    cancelled: bool
    start_network_used: bool = False
    rescue_network_used: bool = False
    ribs_end: Optional[int] = None
    counted_from_ribs: bool = False


def traversal_config(meta: ModelMetadata, config: SegmentConfig) -> TraversalConfig:
    """The traversal settings a model's runs use: its patch size, direction and smallest fragment (the
    metadata's mm³ in model-grid voxels), the run's step limit, batch and fragment pieces, and the
    padding value of the model's normalisation."""
    voxel_mm3 = float(np.prod(meta.spacing_mm))
    return TraversalConfig(
        patch_size=tuple(int(p) for p in meta.patch_size),
        direction=meta.direction,
        min_fragment_voxels=max(1, int(round(meta.min_fragment_mm3 / voxel_mm3))),
        max_steps=config.max_steps,
        search_batch=config.batch_size,
        fragment_pieces=config.pieces_for(meta),
        pad_value=pad_value(NormalizationSpec.from_json(meta.normalization)),
    )


def _event_adapter(model_image: sitk.Image, patch_mm: List[float], on_event: Optional[EventCallback],
                   labeling: LabelingConfig, direction: str = "up") -> Callable[[Any], None]:
    """Turn traversal events (model-grid voxels) into JSON-ready dicts with LPS millimetres. A patch event
    also says how far along the scan's superior axis (model-grid z) its centre lies in the traversal's
    ``direction``, 0..1: the sliding search and the climb both move that way (§3.3), so it serves as the
    run's progress."""
    depth = max(1, model_image.GetSize()[2])

    def emit(event: Any) -> None:
        if on_event is None:
            return
        center = [round(float(c), 2) for c in model_index_to_lps(model_image, event.center_zyx)]
        if isinstance(event, PatchEvent):
            along = min(1.0, max(0.0, (float(event.center_zyx[0]) + 0.5) / depth))
            on_event({"event": "patch", "step": event.step, "center_lps_mm": center,
                      "size_mm": patch_mm, "phase": event.phase,
                      "scan_fraction": round(along if direction == "up" else 1.0 - along, 4)})
        elif isinstance(event, VertebraEvent):
            label = provisional_label(event.label_value, labeling.calibration)
            on_event({"event": "vertebra", "index": event.index, "provisional_label": label,
                      "provisional_name": anatomy.name_of(label), "label_value": round(event.label_value, 3),
                      "completeness": round(event.completeness, 4), "complete": event.completeness >= 0.5,
                      "center_lps_mm": center})

    return emit


def run_traversal(image: sitk.Image, predictor: Predictor, meta: ModelMetadata,
                  config: SegmentConfig = SegmentConfig(), on_event: Optional[EventCallback] = None,
                  should_cancel: Optional[Callable[[], bool]] = None) -> Tuple[sitk.Image, TraversalResult]:
    """Resample to the model grid, normalise and traverse. Returns (model-grid image, traversal result)."""
    model_image = to_model_grid(image, meta.spacing_mm, "linear")
    spec = NormalizationSpec.from_json(meta.normalization)
    array = normalize(sitk.GetArrayFromImage(model_image), spec)
    patch_mm = [round(float(p) * float(s), 2) for p, s in zip(reversed(meta.patch_size), meta.spacing_mm)]
    result = traverse(array, predictor, traversal_config(meta, config),
                      on_event=_event_adapter(model_image, patch_mm, on_event, config.labeling_for(meta),
                                              meta.direction),
                      should_cancel=should_cancel)
    return model_image, result


def _label_model_grid(result: TraversalResult, labels_by_instance: Dict[int, int]) -> np.ndarray:
    lut = np.zeros(int(result.instances.max()) + 1 if result.instances.size else 1, dtype=np.uint8)
    for index, label in labels_by_instance.items():
        lut[index] = label
    return lut[result.instances]


def _gap_below_mm(model_image: sitk.Image, instances: np.ndarray, instance: Any, scan: sitk.Image) -> float:
    """How far (mm) ``scan`` reaches below ``instance`` (``index`` and ``bbox`` in the model-grid map
    ``instances``, axis 0 superior): from the lower face of its lowest slice, through the middle of its
    voxels there. Only its bounding box is searched."""
    z, y, x = box_voxels(instances, instance.index, instance.bbox)
    low = z == z.min()
    point = model_index_to_lps(model_image, (float(z.min()) - 0.5, float(y[low].mean()), float(x[low].mean())))
    return distance_below_mm(scan, point)


def _last_thoracic(model_image: sitk.Image, instances: np.ndarray, found: List[Any]) -> Optional[int]:
    """Index into ``found`` (top first) of the instance the ribs show to be the last thoracic vertebra
    (:func:`~vertebra_traversal.ribs.last_thoracic`; ``model_image`` in HU), or None."""
    extents = [instance_extent(instances, v.index, v.bbox) for v in found]
    return last_thoracic(sitk.GetArrayViewFromImage(model_image), extents, model_image.GetSpacing())


def centroids_mm(model_image: sitk.Image, found: List[Any]) -> List[Tuple[float, float, float]]:
    """The model-grid centroids of the instances ``found`` (``center_zyx``, voxels) in mm from the grid's
    first voxel, (z, y, x): what the label reading compares when it prices a skipped level by where the
    instances lie (``LabelingConfig.wide_ratio``)."""
    spacing = model_image.GetSpacing()[::-1]
    return [tuple(float(c) * float(s) for c, s in zip(v.center_zyx, spacing)) for v in found]  # type: ignore[misc]


def label_model_grid(model_image: sitk.Image, result: TraversalResult, config: SegmentConfig = SegmentConfig(),
                     scan: Optional[sitk.Image] = None) -> Tuple[sitk.Image, List[Any], Optional[LabelAssignment]]:
    """Label the traversal's instances (paper §3.4): (VerSe-id map on the model grid, the kept instances
    top first, their label assignment or None when none was found). ``config`` as a run uses it, the
    model's settings read in (:meth:`SegmentConfig.for_model`). Instances off the spine line
    (``config.max_spine_offset_mm``; None counts as 0, keep all) and fragments far smaller than the
    instances around them (``config.min_volume_ratio``; likewise) get no label, nor do instances the
    label refinement leaves out at the ends of the chain (``config.labeling.max_trimmed``). With
    ``config.labeling.bottom_anchor_mm`` the reading learns how far the scan (``scan``, the input image;
    None: the model grid) reaches below the lowest instance, with ``config.labeling.rib_anchor`` which
    instance the ribs show to be the last thoracic one (``model_image`` in HU: CT), with
    ``config.labeling.wide_ratio`` where the instances lie (:func:`centroids_mm`)."""
    most = min(len(anatomy.STANDARD) + 1, capacity(config.labeling))
    found = on_spine(plausible(result.vertebrae, most), result.instances.shape,
                      model_image.GetSpacing()[0], config.max_spine_offset_mm or 0.0)
    found = whole(found, result.instances, model_image.GetSpacing()[0], config.min_volume_ratio or 0.0)
    gap = (_gap_below_mm(model_image, result.instances, found[-1], model_image if scan is None else scan)
           if found and config.labeling.bottom_anchor_mm else None)
    ribs = _last_thoracic(model_image, result.instances, found) if found and config.labeling.rib_anchor else None
    assignment = refine_labels([v.label_value for v in found], config.labeling, gap, ribs,
                               centroids_mm(model_image, found)) if found else None
    kept = assignment.kept() if assignment is not None else ()
    if assignment is not None and len(kept) < len(found):  # left out at an end of the chain
        for v, label in zip(found, assignment.labels):
            if not label:
                logger.info("instance %d (label value %.1f) fits no level at the end of the chain: left out",
                            v.index, v.label_value)
        found, assignment = [found[i] for i in kept], assignment.select(kept)
    labels_by_instance = {v.index: assignment.labels[i] for i, v in enumerate(found)} if assignment else {}
    label_model = sitk.GetImageFromArray(_label_model_grid(result, labels_by_instance))
    label_model.CopyInformation(model_image)
    return label_model, found, assignment


def segment_image(image: sitk.Image, model: LoadedModel, config: SegmentConfig = SegmentConfig(),
                  on_event: Optional[EventCallback] = None,
                  should_cancel: Optional[Callable[[], bool]] = None,
                  predictor_hook: Optional[Callable[[Predictor], Predictor]] = None) -> SegmentationResult:
    """Segment and label the vertebrae of ``image`` (float32 HU for CT, any unit for MR).

    Args:
        image: the input volume, any storage orientation.
        model: a loaded checkpoint (:func:`vertebra_traversal.checkpoint.load_model`).
        on_event: receives ``patch`` and ``vertebra`` events (docs/ARCHITECTURE.md), LPS mm.
        should_cancel: polled between traversal steps.
        predictor_hook: wraps the predictor of each traversal (e.g. to record its patches,
            :mod:`vertebra_traversal.training.label_tuning`); None: the model's predictor as it is.

    With ``config.start_use_for(model.metadata) == "fallback"`` the traversal runs with the main network
    alone and, when that stalls (:func:`~.fallback.stalled`: no vertebra, or vertebrae bunched in a small
    part of the scan), once more with the start network; with ``"always"`` and a model that holds a rescue
    network (and ``config.rescue_network``), with the start network and then, where that stalls, with the
    rescue network (:func:`~.start_network.traversal_modules`). The second run's result is kept unless it
    holds fewer vertebrae; its patch steps and vertebra indices continue the first's, and the result
    counts the passes and seconds of both.
    """
    def traverse_with(module: Any, events: Optional[EventCallback]) -> SegmentationResult:
        predictor: Predictor = TorchPredictor(replace(model, module=module), batch_size=config.batch_size)
        if predictor_hook is not None:
            predictor = predictor_hook(predictor)
        return segment_with_predictor(image, predictor, model.metadata, config, events, should_cancel)

    use = config.start_use_for(model.metadata)
    first_network, second_network, name = traversal_modules(model, use, config.rescues(model.metadata))
    counted = Counted(on_event)
    first = replace(traverse_with(first_network, counted), start_network_used=use == "always")
    centroids = [v.centroid_lps_mm for v in first.vertebrae]
    if second_network is None or first.cancelled or not stalled(centroids, image):
        return first
    logger.info("%d vertebrae found in %.0f mm of the scan's %.0f; traversing again with the %s network",
                len(centroids), span_mm(centroids), height_mm(image), name)
    if on_event is not None:  # the vertebrae announced so far may be replaced (docs/ARCHITECTURE.md)
        on_event({"event": "restart", "network": name, "found": len(first.vertebrae)})
    second = traverse_with(second_network, counted.continued())
    kept = second if second.cancelled or len(second.vertebrae) >= len(first.vertebrae) else first
    if kept is first:
        logger.info("the %s network found fewer vertebrae (%d); keeping the first run's", name, len(second.vertebrae))
    return replace(kept, network_passes=first.network_passes + second.network_passes,
                   steps=first.steps + second.steps, seconds=first.seconds + second.seconds,
                   start_network_used=first.start_network_used or (kept is second),
                   rescue_network_used=kept is second and name == "rescue")


def segment_with_predictor(image: sitk.Image, predictor: Predictor, meta: ModelMetadata,
                           config: SegmentConfig = SegmentConfig(), on_event: Optional[EventCallback] = None,
                           should_cancel: Optional[Callable[[], bool]] = None) -> SegmentationResult:
    """:func:`segment_image` with any :class:`~vertebra_traversal.predictor.Predictor` (e.g. an oracle)."""
    start = time.perf_counter()
    config = config.for_model(meta)  # the model's settings read once, used twice
    model_image, result = run_traversal(image, predictor, meta, config, on_event, should_cancel)
    passes = result.steps  # patches through the network (the paper's "network passes")
    label_model, found, assignment = label_model_grid(model_image, result, config, image)
    labels = from_model_grid(label_model, image, config.label_interpolation)
    labels = _postprocess(labels, image, meta, config) if found else labels
    at_edge = scan_edge_labels(labels, config.margin_for(meta), config.contact_for(meta), config.faces_for(meta))
    ribs_end = ribs_end_label(model_image, labels) if found and meta.modality.upper() == "CT" else None
    gap = (_gap_below_mm(model_image, result.instances, found[-1], image)
           if ribs_end is not None and config.labeling.bottom_anchor_mm else None)
    rib = rib_assignment([v.label_value for v in found], assignment.labels, ribs_end, config.labeling, gap,
                         OFFER_MAX_LEVELS, centroids_mm(model_image, found)) \
        if found and height_mm(image) >= OFFER_MIN_SCAN_MM else None
    offer, own = dict(zip(assignment.labels, rib.labels)) if rib else {}, {}
    if offer and config.counts_from_ribs(meta):  # taken: the run's labels are the ribs' reading, its own kept beside
        labels, own, at_edge = relabel(labels, offer), {new: old for old, new in offer.items()}, \
            {offer.get(label, label) for label in at_edge}
        ribs_end, assignment, offer = offer[ribs_end], rib, {}
    vertebrae = _describe(labels, found, assignment, config.completeness_threshold, config.rule_for(meta), at_edge,
                          config.confidence_for(meta), meta.direction, ribs_disagree(ribs_end), offer, own)
    seconds = time.perf_counter() - start
    logger.info("%d vertebrae (%s chain) in %.1f s, %d network passes", len(vertebrae),
                assignment.chain if assignment else "-", seconds, passes)
    return SegmentationResult(labels, tuple(vertebrae), assignment.chain if assignment else "none",
                              passes, result.steps, seconds, result.cancelled, ribs_end=ribs_end,
                              counted_from_ribs=bool(own))


def _postprocess(labels: sitk.Image, image: sitk.Image, meta: ModelMetadata, config: SegmentConfig) -> sitk.Image:
    """CT surface refinement (§3.1), each vertebra's largest piece, then (on request) CT surface growth and
    the largest piece again; all on the input grid."""
    array = sitk.GetArrayFromImage(labels)
    ct, hu = meta.modality.upper() == "CT", sitk.GetArrayViewFromImage(image)
    if ct and config.surface_refinement:
        array = refine_surface_ct(array, hu, threshold_hu=config.threshold_for(meta),
                                  iterations=surface_passes(meta.spacing_mm, image.GetSpacing()))
    if config.largest_component:
        array = largest_component_per_label(array, connectivity=3)
    if ct and config.surface_growth:
        array = grow_into_bone(array, hu, image.GetSpacing(), max(float(s) for s in meta.spacing_mm),
                               threshold_hu=config.growth_threshold_hu)
        if config.largest_component:
            array = largest_component_per_label(array, connectivity=3)
    out = sitk.GetImageFromArray(array.astype(np.uint8))
    out.CopyInformation(image)
    return out


def scan_edge_labels(labels: sitk.Image, margin_mm: float = 0.0, min_contact_mm2: float = 0.0,
                     margin_faces: str = "all") -> Set[int]:
    """:func:`~vertebra_traversal.postprocess.labels_at_edge` on a label image: spacing from the image, and
    with ``margin_faces="cranio-caudal"`` the margin only across the array axis closest to the patient's
    superior axis (found from the image's direction, :func:`~vertebra_traversal.geometry.superior_axis`)."""
    if margin_faces not in EDGE_MARGIN_FACES:
        raise ValueError(f"margin_faces must be one of {EDGE_MARGIN_FACES}, got {margin_faces!r}")
    axes = None if margin_faces == "all" else (2 - superior_axis(labels),)  # index axis i, j, k -> array axis
    return labels_at_edge(sitk.GetArrayViewFromImage(labels), labels.GetSpacing()[::-1], margin_mm,
                          min_contact_mm2, axes)


def _describe(labels: sitk.Image, found: list, assignment: Any, threshold: float, rule: str, at_edge: Set[int],
              confidence: Optional[ConfidenceCalibration] = None, direction: str = "up",
              ribs_off: bool = False, from_ribs: Optional[Dict[int, int]] = None,
              own: Optional[Dict[int, int]] = None) -> List[VertebraResult]:
    """Per-vertebra report rows measured on the final label map (input grid); ``at_edge``: the labels
    that reach the scan's border (:func:`scan_edge_labels`). ``label_confidence`` is ``confidence``'s
    probability (:mod:`.confidence`; steps counted over the rows reported, from the end where a traversal
    of ``direction`` started; ``ribs_off``: the ribs end at a vertebra not named T12 / T13) or, without
    one, the label's share of the plausible sequences; ``from_ribs``: each label counted from the ribs
    (:func:`~vertebra_traversal.ribs.rib_assignment`; empty or None: not offered); ``own``: where the labels
    were counted from the ribs (``SegmentConfig.count_from_ribs``), each one's label by the run's own reading."""
    if not found:
        return []
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    present = set(stats.GetLabels())
    kept = []
    for i, label in enumerate(assignment.labels):  # one per instance found
        if label in present:
            kept.append(i)
        else:  # lost entirely to resampling / refinement
            logger.warning("vertebra %s vanished on the input grid", anatomy.name_of(label))
    out = []
    for i, steps in zip(kept, steps_from_start(len(kept), direction)):
        v, label, likelihood = found[i], assignment.labels[i], float(assignment.likelihoods[i])
        out.append(VertebraResult(
            order=i + 1, label=label, name=anatomy.name_of(label),
            complete=is_complete(float(v.completeness), label in at_edge, threshold, rule),
            completeness_probability=float(v.completeness), at_scan_edge=label in at_edge,
            label_likelihood=likelihood, label_value=float(v.label_value),
            label_confidence=float(assignment.confidences[i]) if confidence is None
            else confidence.probability(likelihood, steps, ribs_off),
            volume_mm3=float(stats.GetPhysicalSize(label)),
            centroid_lps_mm=tuple(float(c) for c in stats.GetCentroid(label)),
            rib_label=(from_ribs or {}).get(label), own_label=(own or {}).get(label)))
    return out

"""The settings of one segmentation run (:class:`SegmentConfig`) and how they meet the model's own.

A field left at ``None`` takes the model's value (``ModelMetadata``: the surface threshold, the
completeness rule and its edge settings, the start network's use, the label reading); the ``*_for``
methods resolve a run's value from the two. :mod:`.pipeline` runs with them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Optional

from .checkpoint import ModelMetadata
from .confidence import ConfidenceCalibration
from .geometry import LABEL_INTERPOLATORS
from .labeling import LabelingConfig
from .metadata import START_USES
from .postprocess import EDGE_MARGIN_FACES, check_completeness_rule
from .traversal import FRAGMENT_PIECES

#: The surface refinement's threshold in the paper (§3.1), HU.
PAPER_SURFACE_THRESHOLD_HU = 200.0


#: The entries of :meth:`SegmentConfig.selection_record` that it writes only where they apply, so that
#: reports from before them stay readable.
SELECTION_OPTIONAL = ("fragment_pieces", "label_bottom_anchor_mm", "label_rib_anchor", "label_count_from_ribs",
                      "rescue_network", "label_wide_ratio", "label_reversal_levels")


def reading_record(labeling: LabelingConfig) -> Dict[str, Any]:
    """The report entries of a label reading's optional settings that apply (``SELECTION_OPTIONAL``):
    ``label_wide_ratio`` where it prices skipped levels by the instances' spacing, ``label_reversal_levels``
    where it leaves out what lies beyond a reversal of the values; absent otherwise."""
    record: Dict[str, Any] = {}
    if labeling.reads_spacing:
        record["label_wide_ratio"] = labeling.wide_ratio
    if labeling.reversal_levels:
        record["label_reversal_levels"] = labeling.reversal_levels
    return record


@dataclass(frozen=True)
class SegmentConfig:
    """User-facing settings of one segmentation run.

    Attributes:
        batch_size: patches per network call (sliding search batches, paper §3.3 speed-up).
        surface_refinement: CT only, paper §3.1 (remove surface voxels below ``surface_threshold_hu``, a
            layer one model voxel thick).
        surface_threshold_hu: the refinement's threshold; None = the model's (``ModelMetadata``), else the
            paper's 200. The bundled CT model's is 100: on 60 validation phantoms (seeds 1100000-1100029,
            1101000-1101029) Dice rose 67.62 -> 71.57 % and ASSD fell 2.784 -> 2.619 mm against 200 (its card).
        largest_component: keep only each vertebra's largest 26-connected piece on the input grid (after the
            surface refinement): detached specks are dropped. Not in the paper; on 10 validation CT phantoms
            (seeds 800000-800009) it lowered the bundled CT model's ASSD from 3.56 to 3.01 mm (Dice 61.7 ->
            62.6 %); MR bodies unchanged (13 validation phantoms: Dice 57.7 %, ASSD 0.88 -> 0.89 mm).
        surface_growth: CT only, after the two steps above: background voxels of at least
            ``growth_threshold_hu`` within one model voxel (the model's largest spacing, mm) of a vertebra,
            off the scan's faces, join the nearest one (:func:`~vertebra_traversal.postprocess.grow_into_bone`),
            then each vertebra's largest piece is kept again (with ``largest_component``). Not in the paper
            and off by default: on 60 validation phantoms (seeds 994000-994029, 995000-995029) it moved the
            bundled CT model's Dice only from 67.88 to 68.06 % and ASSD from 2.870 to 2.861 mm (the CT history).
        growth_threshold_hu: the bone threshold of ``surface_growth``. With the refinement at 200 HU, 100 HU
            here gained 3-3.5 Dice points on three sets of 60 validation phantoms, but each time one more
            vertebra counted as matched and not identified; on top of the bundled CT model's 100 HU
            refinement it lowered Dice on 30 training phantoms, 67.7 -> 67.4 % (the CT history).
        label_interpolation: how the model-grid result is mapped back onto the input
            (:func:`~vertebra_traversal.geometry.from_model_grid`): ``"linear"`` (default; on a model grid
            coarser than the image it follows the surface between the model voxel centres) or
            ``"nearest"`` (the paper, §3.1, whose 1 mm grid matches its images).
        completeness_threshold: the network calls a vertebra complete when its probability is at least this.
        completeness_rule: ``"network"`` (paper §3.5), ``"edge"`` (the mask does not reach a face of the
            scan) or ``"both"``; None = the model's ``completeness_rule``.
        edge_margin_mm: for ``edge`` and ``both``: a mask within this distance (mm, along each axis) of a
            face of the scan counts as reaching it; None = the model's ``edge_margin_mm`` (0: touching).
        edge_min_contact_mm2: for ``edge`` and ``both``: the smallest area (mm²) a mask must cover on the
            scan's faces to count as reaching them; None = the model's ``edge_min_contact_mm2`` (0: any).
        edge_margin_faces: the faces ``edge_margin_mm`` applies to: ``"all"`` or ``"cranio-caudal"`` (the two
            across the patient's S-I axis, found from the image's direction); None = the model's.
        max_spine_offset_mm: drop, before the labels are assigned, every instance whose centroid lies more
            than this (mm) across the superior axis from the spine line of the instances nearest to it
            (:mod:`~vertebra_traversal.spine_line`; not in the paper); 0 = keep all, None = the model's.
        min_volume_ratio: drop, before the labels are assigned, every instance whose volume is below this
            share of the median volume of the 4 instances nearest to it in cranio-caudal order, but for the
            chain's two ends and the vertebrae the scan's top or bottom face cuts
            (:mod:`~vertebra_traversal.fragments`; not in the paper); 0 = keep all, None = the model's.
        max_steps: cap on patch positions (guard against runaway traversal).
        labeling: label refinement settings (T13 / L6 / four lumbar, paper §3.4 and beyond).
        label_calibration: read the label values through the model's calibration table when it has one
            (:mod:`~vertebra_traversal.label_calibration`); False = the paper's reading (§3.4).
        max_gaps / max_trimmed: how many levels the label sequence may skip and how many instances it may
            leave out at the chain's two ends in this run (0-3), at the model's penalties where it carries
            them (else ``labeling``'s); None = the model's reading (the bundled CT model: 2 and 3).
        bottom_anchor_mm: read the lowest instance as its chain's last vertebra when it ends this far (mm)
            or more above the scan's inferior border (``LabelingConfig.bottom_anchor_mm``); 0 = never,
            None = the model's reading.
        rib_anchor: read the instance the ribs show to be the last thoracic one as T12 (T13)
            (``LabelingConfig.rib_anchor``, :mod:`~vertebra_traversal.ribs`; CT models only); None = the
            model's reading.
        count_from_ribs: where the ribs' reading applies (CT scans at least ``ribs.OFFER_MIN_SCAN_MM`` tall
            whose ribs end at a vertebra not named T12/T13, :func:`~vertebra_traversal.ribs.rib_assignment`),
            take it as the run's labels and keep the run's own reading beside (report ``own_label``); False
            = keep the run's own labels and offer the ribs' reading beside (report ``rib_label``); None = on
            for CT models (judged on CT phantoms: CT model history), off for others. True needs a CT model.
        fragment_pieces: what of the network's output the traversal takes as a fragment, ``"all"`` (the paper)
            or ``"largest"`` (``TraversalConfig.fragment_pieces``); None = the model's.
        start_network: when a model's start network (:mod:`~vertebra_traversal.start_network`) segments
            the empty-memory patches: ``"always"``, ``"fallback"`` (only when the main network alone stalls
            in the scan, :func:`~vertebra_traversal.fallback.stalled`; the traversal then runs again) or
            ``"off"``; None = the model's (``ModelMetadata.start_use``). Ignored for a model of one network.
        rescue_network: run a model's rescue network (:class:`~vertebra_traversal.start_network.RescueSwitch`)
            in a second traversal where the first stalls; False = never. Ignored for a model without one.
    """

    batch_size: int = 4
    surface_refinement: bool = True
    surface_threshold_hu: Optional[float] = None
    largest_component: bool = True
    surface_growth: bool = False
    growth_threshold_hu: float = 200.0
    label_interpolation: str = "linear"
    completeness_threshold: float = 0.5
    completeness_rule: Optional[str] = None
    edge_margin_mm: Optional[float] = None
    edge_min_contact_mm2: Optional[float] = None
    edge_margin_faces: Optional[str] = None
    max_spine_offset_mm: Optional[float] = None
    min_volume_ratio: Optional[float] = None
    max_steps: int = 2000
    labeling: LabelingConfig = field(default_factory=LabelingConfig)
    label_calibration: bool = True
    max_gaps: Optional[int] = None
    max_trimmed: Optional[int] = None
    bottom_anchor_mm: Optional[float] = None
    rib_anchor: Optional[bool] = None
    count_from_ribs: Optional[bool] = None
    fragment_pieces: Optional[str] = None
    start_network: Optional[str] = None
    rescue_network: bool = True

    def __post_init__(self) -> None:
        if self.completeness_rule is not None:
            check_completeness_rule(self.completeness_rule)
        if self.fragment_pieces is not None and self.fragment_pieces not in FRAGMENT_PIECES:
            raise ValueError(f"fragment_pieces must be one of {FRAGMENT_PIECES}, got {self.fragment_pieces!r}")
        if self.start_network is not None and self.start_network not in START_USES:
            raise ValueError(f"start_network must be one of {START_USES}, got {self.start_network!r}")
        if self.surface_threshold_hu is not None and not math.isfinite(self.surface_threshold_hu):
            raise ValueError(f"surface_threshold_hu must be finite, got {self.surface_threshold_hu!r}")
        if self.edge_margin_faces is not None and self.edge_margin_faces not in EDGE_MARGIN_FACES:
            raise ValueError(f"edge_margin_faces must be one of {EDGE_MARGIN_FACES}, got {self.edge_margin_faces!r}")
        for name in ("edge_margin_mm", "edge_min_contact_mm2", "max_spine_offset_mm"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if self.min_volume_ratio is not None and not (math.isfinite(self.min_volume_ratio)
                                                      and 0 <= self.min_volume_ratio < 1):
            raise ValueError(f"min_volume_ratio must be in [0, 1), got {self.min_volume_ratio!r}")
        if not math.isfinite(self.growth_threshold_hu):
            raise ValueError(f"growth_threshold_hu must be finite, got {self.growth_threshold_hu!r}")
        replace(self.labeling, **self._counts())  # LabelingConfig checks them: ValueError naming the field
        if self.label_interpolation not in LABEL_INTERPOLATORS:
            raise ValueError(f"label_interpolation must be one of {LABEL_INTERPOLATORS}, "
                             f"got {self.label_interpolation!r}")

    def threshold_for(self, meta: ModelMetadata) -> float:
        """The CT surface refinement's threshold of a run (HU): this config's, else the model's, else 200."""
        for value in (self.surface_threshold_hu, meta.surface_threshold_hu):
            if value is not None:
                return float(value)
        return PAPER_SURFACE_THRESHOLD_HU

    def rule_for(self, meta: ModelMetadata) -> str:
        """The completeness rule of a run: this config's, else the model's."""
        return self.completeness_rule or meta.completeness_rule

    def margin_for(self, meta: ModelMetadata) -> float:
        """How close to the scan's border (mm) a mask counts as reaching it in a run: this config's, else
        the model's."""
        return float(meta.edge_margin_mm if self.edge_margin_mm is None else self.edge_margin_mm)

    def faces_for(self, meta: ModelMetadata) -> str:
        """The faces the edge margin applies to in a run: this config's, else the model's."""
        return self.edge_margin_faces or meta.edge_margin_faces

    def contact_for(self, meta: ModelMetadata) -> float:
        """The area on the scan's faces (mm²) a mask must cover to count as reaching them in a run: this
        config's, else the model's."""
        return float(meta.edge_min_contact_mm2 if self.edge_min_contact_mm2 is None else self.edge_min_contact_mm2)

    def spine_offset_for(self, meta: ModelMetadata) -> float:
        """How far (mm) off the spine line an instance may lie in a run: this config's, else the model's
        (0 = no limit)."""
        return float(meta.max_spine_offset_mm if self.max_spine_offset_mm is None else self.max_spine_offset_mm)

    def volume_ratio_for(self, meta: ModelMetadata) -> float:
        """The smallest share of its neighbours' median volume an instance may have in a run (the ends of the
        chain and cut vertebrae aside): this config's, else the model's (0 = no limit)."""
        return float(meta.min_volume_ratio if self.min_volume_ratio is None else self.min_volume_ratio)

    def pieces_for(self, meta: ModelMetadata) -> str:
        """What the traversal takes as a fragment in this run: this config's, else the model's."""
        return self.fragment_pieces or meta.fragment_pieces

    def start_use_for(self, meta: ModelMetadata) -> str:
        """When the start network runs in this run: ``"off"`` without one, else this config's or the model's."""
        return "off" if not meta.start_network else (self.start_network or meta.start_use())

    def counts_from_ribs(self, meta: ModelMetadata) -> bool:
        """Whether this run takes the ribs' reading where it applies (``count_from_ribs``; None: CT models)."""
        return meta.modality.upper() == "CT" if self.count_from_ribs is None else bool(self.count_from_ribs)

    def rescues(self, meta: ModelMetadata) -> bool:
        """Whether the model's rescue network may run in this run (where the first traversal stalls)."""
        return self.rescue_network and bool(meta.start_network.get("rescue")) and self.start_use_for(meta) == "always"

    def for_model(self, meta: ModelMetadata) -> "SegmentConfig":
        """This config with the model's label reading (:meth:`labeling_for`), spine-line limit and volume ratio
        read in, as a run uses them: what :func:`~vertebra_traversal.pipeline.label_model_grid` expects."""
        return replace(self, labeling=self.labeling_for(meta), max_spine_offset_mm=self.spine_offset_for(meta),
                       min_volume_ratio=self.volume_ratio_for(meta))

    def labeling_for(self, meta: ModelMetadata) -> LabelingConfig:
        """The label refinement of a run: ``labeling``, with the model's calibration and sequence settings
        (``ModelMetadata.label_sequence``: skipped levels, ends left out, bottom anchor) unless switched off or
        a calibration is already set; then this run's ``max_gaps``, ``max_trimmed``, ``bottom_anchor_mm`` and
        ``rib_anchor``. The rib anchor reads HU: a model of another modality refuses it (ValueError)."""
        labeling = self.labeling
        calibration = meta.calibration() if labeling.calibration is None and self.label_calibration else None
        if calibration is not None:
            labeling = replace(labeling, calibration=calibration, **meta.label_sequence())
        labeling = replace(labeling, **self._counts())
        for wanted, what in ((labeling.rib_anchor, "the rib anchor"), (self.count_from_ribs, "counting from the ribs")):
            # an explicit request only: count_from_ribs None means "where it applies" (CT)
            if wanted and meta.modality != "CT":
                raise ValueError(f"{what} reads the ribs in HU: CT models only, this model is {meta.modality!r}")
        return labeling

    def selection_record(self, meta: ModelMetadata) -> Dict[str, Any]:
        """The settings of this run that decide which instances get which labels, as a report's ``model`` entry
        records them (``segment``) and ``calibrate --confidence`` checks them against the model's own; the
        entries of ``SELECTION_OPTIONAL`` only where they apply."""
        resolved = self.for_model(meta)
        labeling = resolved.labeling
        record = {"max_spine_offset_mm": resolved.max_spine_offset_mm, "min_volume_ratio": resolved.min_volume_ratio,
                  "label_calibration": labeling.calibration is not None, "label_gaps": labeling.max_gaps,
                  "label_trimmed": labeling.max_trimmed, "start_network_use": self.start_use_for(meta)}
        if self.pieces_for(meta) != "all":  # recorded only where it differs from the paper: older reports stay readable
            record["fragment_pieces"] = self.pieces_for(meta)
        if labeling.bottom_anchor_mm:  # recorded only where it reads: older reports stay readable
            record["label_bottom_anchor_mm"] = labeling.bottom_anchor_mm
        if labeling.rib_anchor:  # likewise
            record["label_rib_anchor"] = True
        if self.counts_from_ribs(meta):  # likewise
            record["label_count_from_ribs"] = True
        record.update(reading_record(labeling))  # likewise
        if meta.start_network.get("rescue"):   # recorded only for a model with one: older reports stay readable
            record["rescue_network"] = self.rescues(meta)
        return record

    def report_record(self, meta: ModelMetadata) -> Dict[str, Any]:
        """Everything a report's ``model`` entry says of the model and of this run's settings, but the model's
        path (``segment`` and ``demo`` write it; docs/ARCHITECTURE.md, *Outputs*)."""
        return {"modality": meta.modality, "spacing_mm": list(meta.spacing_mm), "patch_size": list(meta.patch_size),
                "direction": meta.direction, "completeness_rule": self.rule_for(meta),
                "edge_margin_mm": self.margin_for(meta), "edge_min_contact_mm2": self.contact_for(meta),
                "edge_margin_faces": self.faces_for(meta), "label_interpolation": self.label_interpolation,
                "surface_threshold_hu": self.threshold_for(meta), "largest_component": self.largest_component,
                "surface_growth": self.surface_growth, "growth_threshold_hu": self.growth_threshold_hu,
                **self.selection_record(meta),  # what the model's settings read in make of this run's
                "label_confidence_fitted": self.confidence_for(meta) is not None,
                "start_network": bool(meta.start_network)}

    def labels_as_model(self, meta: ModelMetadata) -> bool:
        """Whether this run picks and names the instances as the model's own settings do: the same label
        reading, spine-line limit, volume ratio, start-network use and fragment pieces (the settings in a
        report's ``model`` entry that :func:`~vertebra_traversal.calibrate.confidence_model` checks)."""
        own = SegmentConfig()
        return (self.labeling_for(meta) == own.labeling_for(meta)
                and self.spine_offset_for(meta) == own.spine_offset_for(meta)
                and self.volume_ratio_for(meta) == own.volume_ratio_for(meta)
                and self.start_use_for(meta) == own.start_use_for(meta) and self.rescues(meta) == own.rescues(meta)
                and self.pieces_for(meta) == own.pieces_for(meta)
                and self.counts_from_ribs(meta) == own.counts_from_ribs(meta))

    def confidence_for(self, meta: ModelMetadata) -> Optional[ConfidenceCalibration]:
        """The model's fitted label confidence (:mod:`~vertebra_traversal.confidence`) when this run picks and
        names the instances as the model does (:meth:`labels_as_model`; it was fitted on such runs), else
        None: the run reports the share of the plausible label sequences that agree
        (``LabelAssignment.confidences``)."""
        return meta.confidence() if self.labels_as_model(meta) else None

    def _counts(self) -> Dict[str, Any]:
        """This run's ``max_gaps``, ``max_trimmed``, ``bottom_anchor_mm`` and ``rib_anchor``, those given."""
        return {k: v for k, v in (("max_gaps", self.max_gaps), ("max_trimmed", self.max_trimmed),
                                  ("bottom_anchor_mm", self.bottom_anchor_mm), ("rib_anchor", self.rib_anchor))
                if v is not None}

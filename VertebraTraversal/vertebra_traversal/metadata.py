"""Model metadata: what a model file says about how it must be fed (docs/ARCHITECTURE.md, "Checkpoint metadata").

Modality, target, model-grid spacing in mm, patch size in voxels ``(z, y, x)``, intensity normalisation,
traversal direction (paper §3.3), label ids, minimum fragment size in mm^3 (paper §3.3 ``v_min``), the
network configuration, how it was trained and, optionally, the calibration of its label output
(:mod:`.label_calibration`) and its start network (:mod:`.start_network`). Every check raises one
:class:`CheckpointError`; :mod:`.checkpoint` reads and writes the files that carry it.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from . import anatomy
from .checks import is_integer, is_number
from .confidence import ConfidenceCalibration
from .imageio import InputError
from .label_calibration import LabelCalibration
from .labeling import LabelingConfig
from .network import NetworkConfig
from .normalization import NormalizationSpec
from .postprocess import COMPLETENESS_RULES, EDGE_MARGIN_FACES
from .traversal import FRAGMENT_PIECES

logger = logging.getLogger(__name__)

FORMAT = "vertebra-traversal-model"
FORMAT_VERSION = 1
METADATA_NAME = "metadata.json"
MODALITIES = tuple(m.upper() for m in anatomy.MODALITIES)
TARGETS = ("vertebra", "body")
DIRECTIONS = anatomy.DIRECTIONS
#: HU values a CT image stores (12-bit, air at -1024), e.g. for ``surface_threshold_hu``.
CT_HU_RANGE = (-1024.0, 3071.0)
#: When a model's start network segments the empty-memory patches (:mod:`.start_network`): on every run
#: (``always``), only when the main network alone stalls in the scan (``fallback``: it finds no vertebra, or
#: vertebrae bunched in less than half of the scan's height, ``fallback.stalled``), or never
#: (``off``, a segment-time choice only).
START_USES = ("always", "fallback", "off")
#: The uses a model file can record (``off`` is a segment-time choice only).
RECORDED_START_USES = START_USES[:2]


class CheckpointError(InputError):
    """A model file that cannot be used; the message names the file and the problem."""


def _default_labels() -> Tuple[int, ...]:
    return tuple(v.label for v in anatomy.VERTEBRAE)


#: The sequence settings a model's label reading may carry (``label_calibration`` entries): entry name ->
#: (``LabelingConfig`` count field, its penalty field).
SEQUENCE_ENTRIES = {"gaps": ("max_gaps", "gap_penalty"), "trim": ("max_trimmed", "trim_penalty"),
                    "anchor": ("bottom_anchor_mm", "bottom_anchor_penalty"),
                    "ribs": ("rib_anchor", "rib_anchor_penalty"), "spacing": ("wide_ratio", "wide_penalties"),
                    "reversal": ("reversal_levels", "reversal_penalty")}

@dataclass(frozen=True)
class ModelMetadata:
    """What a model needs to be fed correctly (embedded as ``metadata.json``).

    Attributes:
        modality: ``"CT"`` or ``"MR"``.
        target: ``"vertebra"`` (whole vertebra) or ``"body"`` (vertebral body only).
        spacing_mm: model-grid spacing (x, y, z) in mm, as SimpleITK orders spacing (paper: 1 mm).
        patch_size: patch size in voxels (z, y, x) (paper: 128^3).
        normalization: ``NormalizationSpec.to_json()`` of the intensity normalisation.
        direction: traversal direction ``"up"`` (increasing model-grid z) or ``"down"`` (paper §3.3).
        labels: VerSe ids the model may produce (anatomy.py).
        min_fragment_mm3: smallest fragment that moves the patch (paper §3.3 ``v_min``), mm^3.
        completeness_rule: how this model's vertebrae are called complete (``COMPLETENESS_RULES``);
            ``network`` is the paper's; chosen per model on training cases and stated in its card.
        network: ``NetworkConfig.to_json()``; may be empty for foreign networks.
        training: free-form JSON record of how the model was trained.
        label_calibration: ``LabelCalibration.to_json()`` of the label output (``vertebra-traversal
            calibrate``), or empty: the paper's reading of the label value (§3.4). An optional ``gaps``
            entry ``{"max_gaps": G, "gap_penalty": D}`` lets the label refinement skip levels
            (``LabelingConfig``; ``calibrate --gaps``; see :meth:`label_gaps`), an optional ``trim`` entry
            ``{"max_trimmed": K, "trim_penalty": T}`` leave out instances at the chain's ends
            (``calibrate --trim-ends``; see :meth:`label_trim`), an optional ``anchor`` entry
            ``{"bottom_anchor_mm": G, "bottom_anchor_penalty": A}`` have it read the lowest instance as the last
            lumbar vertebra when it ends G mm or more above the scan's inferior border (``calibrate
            --bottom-anchor-mm``; see :meth:`label_anchor`), an optional ``ribs`` entry ``{"rib_anchor": true,
            "rib_anchor_penalty": R}`` read the lowest rib-bearing instance as the last thoracic vertebra (CT;
            ``calibrate --rib-anchor on``; :mod:`.ribs`), an optional ``spacing`` entry ``{"wide_ratio": W,
            "wide_penalties": [S, K]}`` price a skipped level between two instances W times as far apart as
            those around them S and no skip there K (``calibrate --wide-ratio``; :mod:`.labeling`), an optional
            ``reversal`` entry ``{"reversal_levels": D, "reversal_penalty": P}`` let it leave out, at P each, every
            instance beyond a value more than D levels below the one above it (``calibrate --reversal-levels``).
        label_confidence: ``ConfidenceCalibration.to_json()`` (:mod:`.confidence`; ``calibrate --confidence``):
            what a vertebra's label likelihood and its distance from the traversal's start say about the
            label being right, fitted on cases segmented with this model's own settings
            (``SegmentConfig.selection_record``); or empty: ``segment`` reports the share of the plausible
            label sequences that agree instead.
        surface_threshold_hu: CT only: the HU below which the surface refinement (§3.1) peels this model's
            mask surfaces, or None: the paper's 200. Chosen per model on validation cases and stated in its card.
        edge_margin_mm: for the ``edge`` and ``both`` completeness rules, how close (mm, along each axis) to
            a face of the scan a vertebra's mask must come to count as cut by the scan; 0 = it must touch a
            face. Chosen per model on validation cases and stated in its card.
        edge_min_contact_mm2: for the same rules, the smallest area (mm²) a mask must cover on the scan's
            faces (within ``edge_margin_mm``) to count as cut; 0 = any voxel. Chosen likewise.
        edge_margin_faces: where ``edge_margin_mm`` applies (``EDGE_MARGIN_FACES``): ``"all"`` six faces, or
            only the two across the patient's cranio-caudal axis (the others count their outermost layer).
        max_spine_offset_mm: drop every instance whose centroid lies more than this (mm) across the superior
            axis from the spine line of the instances nearest to it (:mod:`.spine_line`), before the labels
            are assigned; 0 = keep all. Chosen per model on validation cases and stated in its card.
        min_volume_ratio: drop every instance whose volume is below this share of the median volume of the
            4 instances nearest to it in cranio-caudal order, but for the chain's two ends and the vertebrae
            the scan's top or bottom face cuts (:mod:`.fragments`), before the labels are assigned; 0 = keep
            all, else below 1. Chosen likewise.
        fragment_pieces: what of the network's thresholded output the traversal takes as the fragment
            (``TraversalConfig.fragment_pieces``): ``"all"`` (the paper) or ``"largest"``, its largest
            connected piece, the rest into the memory with it. Chosen likewise.
        start_network: description of the start network the file holds beside the main one
            (:mod:`.start_network`; ``vertebra-traversal combine``), or empty: one network. Its ``use``
            (``"always"`` when absent, or ``"fallback"``) says when it runs; see :meth:`start_use`. Its
            ``rescue``, where present, describes a third network the file holds (:class:`~.start_network.RescueSwitch`).
        format_version: metadata format version (this code reads up to ``FORMAT_VERSION``).

    Raises:
        CheckpointError: on construction, for any invalid field (the message names the field).
    """

    modality: str
    target: str
    spacing_mm: Tuple[float, float, float]
    patch_size: Tuple[int, int, int]
    normalization: Dict[str, Any]
    direction: str = "up"
    labels: Tuple[int, ...] = field(default_factory=_default_labels)
    min_fragment_mm3: float = 1000.0
    completeness_rule: str = "network"
    network: Dict[str, Any] = field(default_factory=dict)
    training: Dict[str, Any] = field(default_factory=dict)
    label_calibration: Dict[str, Any] = field(default_factory=dict)
    label_confidence: Dict[str, Any] = field(default_factory=dict)
    start_network: Dict[str, Any] = field(default_factory=dict)
    surface_threshold_hu: Optional[float] = None
    edge_margin_mm: float = 0.0
    edge_min_contact_mm2: float = 0.0
    edge_margin_faces: str = "all"
    max_spine_offset_mm: float = 0.0
    min_volume_ratio: float = 0.0
    fragment_pieces: str = "all"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_choice("modality", self.modality, MODALITIES)
        _check_choice("target", self.target, TARGETS)
        _check_choice("direction", self.direction, DIRECTIONS)
        _check_choice("completeness_rule", self.completeness_rule, COMPLETENESS_RULES)
        _check_choice("edge_margin_faces", self.edge_margin_faces, EDGE_MARGIN_FACES)
        _check_choice("fragment_pieces", self.fragment_pieces, FRAGMENT_PIECES)
        normalised = {"spacing_mm": _triple("spacing_mm", self.spacing_mm, float),
                      "patch_size": _triple("patch_size", self.patch_size, int),
                      "labels": _labels(self.labels),
                      "min_fragment_mm3": _positive("min_fragment_mm3", self.min_fragment_mm3, allow_zero=True),
                      "edge_margin_mm": _positive("edge_margin_mm", self.edge_margin_mm, allow_zero=True),
                      "edge_min_contact_mm2": _positive("edge_min_contact_mm2", self.edge_min_contact_mm2,
                                                        allow_zero=True),
                      "max_spine_offset_mm": _positive("max_spine_offset_mm", self.max_spine_offset_mm,
                                                       allow_zero=True),
                      "min_volume_ratio": _share("min_volume_ratio", self.min_volume_ratio)}
        for name, value in normalised.items():
            object.__setattr__(self, name, value)  # frozen dataclass: canonical types once, here
        _check_version(self.format_version)
        _check_normalization(self.normalization)
        _check_network(self.network, self.patch_size)
        _check_json("training", self.training)
        _check_json("label_calibration", self.label_calibration)
        _check_json("label_confidence", self.label_confidence)
        _check_json("start_network", self.start_network)
        if self.surface_threshold_hu is not None:
            object.__setattr__(self, "surface_threshold_hu", _hu("surface_threshold_hu", self.surface_threshold_hu))
        self.start_use()
        self.calibration()
        self.confidence()
        self.label_sequence()

    def start_use(self) -> str:
        """When the start network runs (``START_USES``): ``"off"`` for a model of one network, else the
        record's ``use``, ``"always"`` when the record has none (files written before ``use`` existed).

        Raises:
            CheckpointError: ``start_network.use`` is not ``"always"`` or ``"fallback"``, or not ``"always"``
                in a model with a rescue network (``start_network.rescue``, :mod:`.start_network`).
        """
        if not self.start_network:
            return "off"
        use = self.start_network.get("use", "always")
        _check_choice("start_network.use", use, RECORDED_START_USES)
        if self.start_network.get("rescue") and use != "always":
            raise CheckpointError(f"start_network.use must be 'always' with a rescue network, got {use!r}")
        return use

    def calibration(self) -> Optional[LabelCalibration]:
        """The label calibration, or None when the model has none.

        Raises:
            CheckpointError: the stored table is malformed.
        """
        return _parsed("label_calibration", self.label_calibration, LabelCalibration.from_json)

    def confidence(self) -> Optional[ConfidenceCalibration]:
        """The fitted label confidence (:mod:`.confidence`), or None when the model has none.

        Raises:
            CheckpointError: the stored record is malformed.
        """
        return _parsed("label_confidence", self.label_confidence, ConfidenceCalibration.from_json)

    @staticmethod
    def reading_record(calibration: LabelCalibration, sequence: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """The ``label_calibration`` field for ``calibration`` with the sequence settings ``sequence``:
        ``{"max_gaps": G, "gap_penalty": D}`` (skipped levels), ``{"max_trimmed": K, "trim_penalty": T}``
        (instances left out at the chain's ends), ``{"bottom_anchor_mm": G, "bottom_anchor_penalty": A}`` (the
        lowest instance on the sacrum), ``{"rib_anchor": True, "rib_anchor_penalty": R}`` (the last rib) and / or
        ``{"wide_ratio": W, "wide_penalties": (S, K)}`` (skipped levels priced by the instances' spacing),
        ``{"reversal_levels": D, "reversal_penalty": P}`` (what lies beyond a reversal of the values left out);
        a count 0, False or absent: no such entry."""
        record = calibration.to_json()
        for entry, (count, penalty) in SEQUENCE_ENTRIES.items():
            if sequence and sequence.get(count):
                record[entry] = {count: sequence[count], penalty: sequence[penalty]}
        return record

    def label_gaps(self) -> Dict[str, Any]:
        """``{"max_gaps": G, "gap_penalty": D}`` for ``LabelingConfig`` when the calibration carries a
        ``gaps`` entry, else ``{}`` (gap-free sequences, the paper).

        Raises:
            CheckpointError: the entry is not such an object or its values are out of range.
        """
        return self._sequence_entry("gaps")

    def label_trim(self) -> Dict[str, Any]:
        """``{"max_trimmed": K, "trim_penalty": T}`` for ``LabelingConfig`` when the calibration carries a
        ``trim`` entry, else ``{}`` (every instance labelled, the paper).

        Raises:
            CheckpointError: the entry is not such an object or its values are out of range.
        """
        return self._sequence_entry("trim")

    def label_anchor(self) -> Dict[str, Any]:
        """``{"bottom_anchor_mm": G, "bottom_anchor_penalty": A}`` for ``LabelingConfig`` when the calibration
        carries an ``anchor`` entry, else ``{}`` (no bottom anchor, the paper).

        Raises:
            CheckpointError: the entry is not such an object or its values are out of range.
        """
        return self._sequence_entry("anchor")

    def label_sequence(self) -> Dict[str, Any]:
        """Every sequence setting the reading carries (``SEQUENCE_ENTRIES``: :meth:`label_gaps`,
        :meth:`label_trim`, :meth:`label_anchor`, the rib anchor, the spacing and the reversal) as ``LabelingConfig``
        fields.

        Raises:
            CheckpointError: an entry is invalid.
        """
        return {key: value for entry in SEQUENCE_ENTRIES for key, value in self._sequence_entry(entry).items()}

    def _sequence_entry(self, entry: str) -> Dict[str, Any]:
        value = self.label_calibration.get(entry) if self.label_calibration else None
        if value is None:
            return {}
        count, penalty = SEQUENCE_ENTRIES[entry]
        try:
            if not isinstance(value, dict) or sorted(value) != sorted((count, penalty)):
                raise ValueError(f"expected {{'{count}': N, '{penalty}': P}}, got {value!r}")
            LabelingConfig(**value)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"metadata: 'label_calibration.{entry}' is invalid ({exc})") from None
        return dict(value)

    def to_json(self) -> Dict[str, Any]:
        """The ``metadata.json`` document (see docs/ARCHITECTURE.md)."""
        data = asdict(self)
        data.update(spacing_mm=list(self.spacing_mm), patch_size=list(self.patch_size), labels=list(self.labels))
        return {"format": FORMAT, **data}

    @classmethod
    def from_json(cls, data: Any) -> "ModelMetadata":
        """Parse and validate a ``metadata.json`` document.

        Raises:
            CheckpointError: not an object, wrong ``format``, newer ``format_version``, missing or invalid
                fields (the message names the field; callers prefix the file name).
        """
        if not isinstance(data, Mapping):
            raise CheckpointError(f"metadata: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise CheckpointError(f"metadata: 'format' is {data.get('format')!r}, expected {FORMAT!r}")
        _check_version(data.get("format_version"))
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known - {"format"})
        if unknown:
            logger.warning("metadata: ignoring unknown fields %s", unknown)
        missing = sorted(name for name in ("modality", "target", "spacing_mm", "patch_size", "normalization")
                         if name not in data)
        if missing:
            raise CheckpointError(f"metadata: missing fields {missing}")
        return cls(**{k: v for k, v in data.items() if k in known})


def _parsed(name: str, record: Dict[str, Any], parse: Callable[[Dict[str, Any]], Any]) -> Any:
    """``parse(record)``, or None for an empty record; a record ``parse`` refuses raises CheckpointError
    naming the field."""
    if not record:
        return None
    try:
        return parse(dict(record))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"metadata: '{name}' is invalid ({exc})") from None


def in_ct_range(value: Any) -> bool:
    """Whether ``value`` is a number of HU that CT stores (``CT_HU_RANGE``, inclusive)."""
    low, high = CT_HU_RANGE
    return is_number(value) and low <= float(value) <= high


def _hu(name: str, value: Any) -> float:
    """``value`` as a float within ``CT_HU_RANGE``; else CheckpointError naming the field."""
    if not in_ct_range(value):
        raise CheckpointError(f"metadata: '{name}' is {value!r}, expected a number of HU from "
                              f"{CT_HU_RANGE[0]:g} to {CT_HU_RANGE[1]:g}")
    return float(value)


def _check_choice(name: str, value: Any, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise CheckpointError(f"metadata: '{name}' is {value!r}, expected one of {', '.join(choices)}")


@dataclass(frozen=True)
class PostSettings:
    """Post-processing settings that describe a model's masks, recorded in its metadata beside the label
    reading (``ModelMetadata``; None = keep the model's): the CT surface refinement's threshold (HU), and
    for the ``edge`` rules the distance to the scan's border (mm) within which a mask counts as cut and
    the area (mm²) it must cover there, and which faces the distance applies to; and how far off the
    spine line (mm) an instance may lie, and the smallest share of its neighbours' volume it may have; and
    what of the network's output the traversal takes as a fragment (``"all"`` or ``"largest"`` piece)."""

    surface_threshold_hu: Optional[float] = None
    edge_margin_mm: Optional[float] = None
    edge_min_contact_mm2: Optional[float] = None
    edge_margin_faces: Optional[str] = None
    max_spine_offset_mm: Optional[float] = None
    min_volume_ratio: Optional[float] = None
    fragment_pieces: Optional[str] = None

    @classmethod
    def of(cls, metadata: ModelMetadata) -> "PostSettings":
        """The settings ``metadata`` records (what a fine-tuned model keeps from its init model)."""
        return cls(**{name: getattr(metadata, name) for name in cls.__dataclass_fields__})

    def apply(self, metadata: ModelMetadata) -> ModelMetadata:
        """``metadata`` with every setting given here (validated by ``ModelMetadata``)."""
        given = {name: value for name, value in vars(self).items() if value is not None}
        return replace(metadata, **given) if given else metadata


def _check_version(version: Any) -> None:
    if not is_integer(version) or version < 1:
        raise CheckpointError(f"metadata: 'format_version' must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"metadata: format_version {version} is newer than this VertebraTraversal reads "
                              f"(up to {FORMAT_VERSION}); update VertebraTraversal to use this model")


def _positive(name: str, value: Any, allow_zero: bool = False) -> float:
    if not is_number(value) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        raise CheckpointError(f"metadata: '{name}' must be a positive finite number, got {value!r}")
    return float(value)


def _share(name: str, value: Any) -> float:
    if not is_number(value) or not 0 <= value < 1:
        raise CheckpointError(f"metadata: '{name}' must be a number from 0 up to (not including) 1, got {value!r}")
    return float(value)


def _triple(name: str, value: Any, kind: type) -> tuple:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__") or len(value) != 3:
        raise CheckpointError(f"metadata: '{name}' must hold three numbers, got {value!r}")
    if kind is int and any(not is_integer(v) for v in value):
        raise CheckpointError(f"metadata: '{name}' must hold three positive integers, got {value!r}")
    return tuple(kind(_positive(name, v)) for v in value)


def _labels(value: Any) -> Tuple[int, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise CheckpointError(f"metadata: 'labels' must be a list of vertebra ids, got {value!r}")
    labels = tuple(value)
    bad = [v for v in labels if anatomy.as_label(v) is None]
    if not labels or bad or len(set(labels)) != len(labels):
        raise CheckpointError(f"metadata: 'labels' must be distinct vertebra ids of the anatomy table, got {value!r}")
    return labels


def _check_normalization(value: Any) -> None:
    try:
        NormalizationSpec.from_json(value)
    except ValueError as exc:
        raise CheckpointError(f"metadata: {exc}") from None


def _check_network(value: Any, patch_size: Tuple[int, int, int]) -> None:
    _check_json("network", value)
    if not value:
        return
    try:
        config = NetworkConfig.from_json(value)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"metadata: 'network': {exc}") from None
    if config.patch_size != patch_size:
        raise CheckpointError(f"metadata: network patch_size {list(config.patch_size)} differs from "
                              f"'patch_size' {list(patch_size)}")


def _check_json(name: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise CheckpointError(f"metadata: '{name}' must be a JSON object, got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"metadata: '{name}' is not plain JSON ({exc})") from None

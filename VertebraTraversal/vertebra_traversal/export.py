"""Segmentation + image -> one dataset case: the correct-and-retrain loop (file layer).

A user corrects a segmentation (in Slicer's Segment Editor or elsewhere) and exports it, with its
image, as a case of the project's dataset layout (:mod:`vertebra_traversal.dataset`): the image, a
label map with VerSe ids on the image grid, VerSe centroids and the sidecar JSON that records for
every vertebra whether it is completely visible. ``vertebra-traversal train --init`` fine-tunes on
such cases; completeness is the target of the network's classification output (paper §3.5), and
the label map gives the segmentation and identification targets (paper §3.1, §3.4, §3.6).

Segments map to vertebra ids by name, case-insensitive: ``"L1"``, ``"L1 (incomplete)"``, ``"L1 incomplete"``
and the terminology's ``"L1 vertebra"`` (``anatomy.csv``'s SNOMED meaning), with or without the flag. The
level gives the id and the ``incomplete`` flag the completeness. ``segment`` writes names and tags
(``VertebraTraversal.labelId``, ``VertebraTraversal.complete``) that agree; when they disagree the user has
edited the name ("rename a segment to relabel it", README), so the name decides. A name that is not such
a name (``"fragment"``, ``"L7"``, ``"L1 wedge fracture"``) is refused whatever its tags say: the tags still
hold the engine's label, and a segment renamed away from it would go into the training data under a label
its name no longer says.

Arrays: slicerio returns voxels indexed ``(i, j, k)`` (``(layer, i, j, k)`` with several layers);
SimpleITK arrays are ``(z, y, x)`` = ``(k, j, i)``. Physical coordinates are LPS millimetres.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import slicerio

from . import __version__, anatomy, dataset
from .formats import TAG_COMPLETE, TAG_LABEL_ID
from .imageio import InputError, PathLike, read_image, read_label_map

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^\s*([A-Za-z]\d{1,2})(?:\s+vertebra)?\s*(\(\s*incomplete\s*\)|incomplete)?\s*$", re.IGNORECASE)
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Tolerances: direction/spacing entries (mm) and the grid offset (voxels).
_MATRIX_TOL_MM = 1e-3
_OFFSET_TOL_VOXELS = 1e-2


@dataclass(frozen=True)
class ExportConfig:
    """One export request.

    Attributes:
        image: the image file (any format :func:`imageio.read_image` reads).
        segmentation: a Slicer ``.seg.nrrd`` or a label map with VerSe ids on the image grid.
        dataset: dataset root folder (created when missing).
        case_id: the new case's id (letters, digits, ``.``, ``_``, ``-``); never overwritten.
        modality: ``"ct"`` or ``"mr"``.
        target: sidecar target, ``"vertebra"`` or ``"body"``; default by modality (MR: ``"body"``, paper §5).
    """

    image: Path
    segmentation: Path
    dataset: Path
    case_id: str
    modality: str = "ct"
    target: Optional[str] = None


@dataclass(frozen=True)
class SegmentAssignment:
    """The vertebra a segment stands for. ``segment`` is the segment's name as the user sees it."""

    segment: str
    label: int
    complete: bool


def parse_segment_name(name: str) -> Optional[Tuple[int, bool]]:
    """``"L1"`` -> ``(20, False)``, ``"t1 (incomplete)"`` / ``"T1 vertebra incomplete"`` -> ``(8, True)``; ``None``
    for other names.

    Returns:
        (VerSe label id, flagged incomplete) or None when the name is not a vertebra of anatomy.py.
    """
    match = _NAME.match(name or "")
    if not match or match.group(1).upper() not in anatomy.BY_NAME:
        return None
    return anatomy.label_of(match.group(1)), match.group(2) is not None


def _tag_label(tags: Mapping[str, str]) -> Optional[int]:
    value = str(tags.get(TAG_LABEL_ID, "")).strip()
    return int(value) if value.isdigit() and anatomy.is_valid_label(int(value)) else None


def _tag_complete(tags: Mapping[str, str]) -> Optional[bool]:
    value = str(tags.get(TAG_COMPLETE, "")).strip().lower()
    return {"true": True, "1": True, "false": False, "0": False}.get(value)


def resolve_segment(name: str, tags: Mapping[str, str], source: PathLike) -> SegmentAssignment:
    """Map one segment to a vertebra id and a completeness flag by its name (rules: module docstring); the
    tags only show, in the log, where the user changed what ``segment`` wrote.

    Raises:
        InputError: naming ``source`` and the segment, when its name is not a vertebra name.
    """
    parsed = parse_segment_name(name)
    if parsed is None:
        was = _tag_label(tags)
        hint = f" (it was {anatomy.name_of(was)})" if was is not None else ""
        raise InputError(f"{source}: segment {name!r}{hint} is not named as a vertebra; name it by its level, "
                         f"e.g. 'L1' or 'L1 (incomplete)', or delete it before exporting (levels: "
                         f"{', '.join(anatomy.BY_NAME)})")
    label, flagged = parsed
    tag_label, tag_complete = _tag_label(tags), _tag_complete(tags)
    if tag_label is not None and tag_label != label:
        logger.info("segment %r: the name decides (%s), not its tag %s", name, anatomy.name_of(label),
                    anatomy.name_of(tag_label))
    if tag_complete is not None and tag_complete == flagged:
        logger.info("segment %r: the name decides (%s), not its tag", name, "incomplete" if flagged else "complete")
    return SegmentAssignment(name, label, not flagged)


def check_unique(assignments: Sequence[SegmentAssignment], source: PathLike) -> None:
    """Refuse two segments that stand for the same vertebra.

    Raises:
        InputError: naming ``source`` and both segments.
    """
    seen: Dict[int, str] = {}
    for item in assignments:
        if item.label in seen:
            raise InputError(f"{source}: segments {seen[item.label]!r} and {item.segment!r} are both "
                             f"{anatomy.name_of(item.label)}; rename or merge one of them")
        seen[item.label] = item.segment


def validate_case_id(case_id: str, root: PathLike) -> str:
    """Return ``case_id`` when it is a safe folder name.

    Raises:
        InputError: naming the dataset root, for an empty id or one with path separators / odd characters.
    """
    if not _CASE_ID.match(case_id or "") or ".." in case_id:
        raise InputError(f"{root}: case id {case_id!r} is not valid (use letters, digits, '.', '_', '-'; "
                         f"start with a letter or digit)")
    return case_id


def new_case_files(root: PathLike, case_id: str, modality: str) -> dataset.CaseFiles:
    """Where a new case would go, checked before any work: a valid modality and case id, a dataset root that
    is a folder (or not there yet) and not a folder inside another dataset, and no case of that id in it.

    Raises:
        InputError: naming the root or the existing case folder.
    """
    root = Path(root)
    if str(modality).lower() not in dataset.MODALITIES:
        raise InputError(f"{root}: modality {modality!r} is not one of {dataset.MODALITIES}")
    validate_case_id(case_id, root)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: is a file, not a dataset folder")
    inside = next((p for p in (root, *root.parents) if p.name in ("rawdata", "derivatives")), None)
    if inside is not None:
        raise InputError(f"{root}: lies inside a dataset ({inside}); export into the dataset folder itself, the one "
                         f"that holds rawdata/ and derivatives/")
    files = dataset.CaseFiles(root, case_id, modality.lower())
    for folder in (files.image.parent, files.labels.parent):
        if folder.exists():
            raise InputError(f"{folder}: case {case_id!r} already exists; not overwriting")
    return files


def warn_missing_levels(labels: Sequence[int], source: PathLike) -> List[str]:
    """Log a warning, and return the names, of standard vertebrae missing between the highest and the lowest
    labelled one (T13 and L6 are never missing): training reads such a vertebra as background."""
    ordered = sorted(labels, key=lambda label: anatomy.vertebra(label).rank)
    if not ordered:
        return []
    low, high = anatomy.vertebra(ordered[0]), anatomy.vertebra(ordered[-1])
    missing = [v.name for v in anatomy.STANDARD if low.rank < v.rank < high.rank and v.label not in labels]
    if missing:
        logger.warning("%s: no vertebra labelled %s between %s and %s; training reads its bone as background, so "
                       "segment it or leave this case out", source, ", ".join(missing), low.name, high.name)
    return missing


def case_id_from_name(name: str) -> str:
    """A valid case id made from any name (a volume's, say ``"3: CT Chest"`` -> ``"3_CT_Chest"``): every run of
    other characters becomes one ``_``, leading and trailing ``._-`` go, at most 128 characters; ``"case"``
    when nothing is left."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name or "").replace("..", "_").strip("._-")[:128].rstrip("._-")
    return safe if _CASE_ID.match(safe) else "case"


def _image_matrix(image: sitk.Image) -> np.ndarray:
    """4x4 voxel (i, j, k) -> LPS mm matrix of a SimpleITK image."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())[None, :]
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def grid_offset(ijk_to_lps: np.ndarray, image: sitk.Image, source: PathLike) -> Tuple[int, int, int]:
    """Index (i, j, k) in ``image`` of the segmentation's voxel (0, 0, 0).

    Raises:
        InputError: the segmentation's axes/spacing differ from the image's, or its voxels are not
            aligned to the image's voxel grid.
    """
    image_matrix = _image_matrix(image)
    seg = np.asarray(ijk_to_lps, dtype=float)
    if not np.allclose(seg[:3, :3], image_matrix[:3, :3], atol=_MATRIX_TOL_MM):
        spacing = tuple(round(float(s), 3) for s in np.linalg.norm(seg[:3, :3], axis=0))
        raise InputError(f"{source}: segmentation grid (spacing {spacing} mm) differs from the image grid "
                         f"(spacing {tuple(round(s, 3) for s in image.GetSpacing())} mm, or other axes); "
                         f"export it on the image's geometry")
    offset = np.linalg.solve(image_matrix[:3, :3], seg[:3, 3] - image_matrix[:3, 3])
    if not np.allclose(offset, np.round(offset), atol=_OFFSET_TOL_VOXELS):
        raise InputError(f"{source}: segmentation voxels are shifted by {[round(float(v), 3) + 0.0 for v in offset]} voxels "
                         f"against the image grid; export it on the image's geometry")
    return tuple(int(v) for v in np.round(offset))


def _place(layer: np.ndarray, offset: Sequence[int], size_ijk: Sequence[int], source: PathLike) -> np.ndarray:
    """Put an (i, j, k) array whose voxel 0 sits at ``offset`` into a zero array of ``size_ijk``.

    Raises:
        InputError: when labelled voxels fall outside the image.
    """
    out = np.zeros(tuple(size_ijk), dtype=layer.dtype)
    lo = [max(0, o) for o in offset]
    hi = [min(s, o + n) for s, o, n in zip(size_ijk, offset, layer.shape)]
    if any(h <= l for l, h in zip(lo, hi)):
        inside = np.zeros_like(layer, dtype=bool)
    else:
        src = tuple(slice(l - o, h - o) for l, h, o in zip(lo, hi, offset))
        out[tuple(slice(l, h) for l, h in zip(lo, hi))] = layer[src]
        inside = np.zeros_like(layer, dtype=bool)
        inside[src] = True
    if np.any(layer[~inside]):
        raise InputError(f"{source}: the segmentation has labelled voxels outside the image")
    return out


def _read_seg_nrrd(path: Path) -> Dict[str, Any]:
    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:  # slicerio/pynrrd raise IOError, ValueError, NRRDError, ...
        raise InputError(f"{path}: cannot read segmentation ({exc})") from None
    voxels = seg.get("voxels")
    if voxels is None or voxels.ndim not in (3, 4):
        raise InputError(f"{path}: segmentation holds no 3D voxel data")
    if not seg.get("segments"):
        raise InputError(f"{path}: segmentation holds no segments")
    return seg


def _layers(voxels: np.ndarray) -> np.ndarray:
    return voxels[None] if voxels.ndim == 3 else voxels


def labels_from_seg_nrrd(path: PathLike, image: sitk.Image) -> Tuple[sitk.Image, Dict[int, bool]]:
    """Read a Slicer ``.seg.nrrd`` (one or several layers, extent possibly smaller than the image).

    Returns:
        (uint8 label map with VerSe ids on ``image``'s grid, completeness by label id). Segments
        without voxels are left out (with a warning).

    Raises:
        InputError: unreadable file, unknown or duplicate segment name, overlapping segments,
            another grid, labelled voxels outside the image, or no vertebra voxels at all.
    """
    path = Path(path)
    seg = _read_seg_nrrd(path)
    assignments = {}
    for segment in seg["segments"]:
        assignments[segment["id"]] = resolve_segment(segment.get("name", segment["id"]), segment.get("tags", {}), path)
    check_unique(list(assignments.values()), path)
    offset = grid_offset(seg["ijkToLPS"], image, path)
    layers = _layers(np.asarray(seg["voxels"]))
    size_ijk = image.GetSize()
    labels_ijk = np.zeros(size_ijk, dtype=np.uint8)
    owner: Dict[int, str] = {}
    for index, layer in enumerate(layers):
        lut = np.zeros(max(256, int(layer.max()) + 1), dtype=np.uint8)
        for segment in seg["segments"]:
            if int(segment.get("layer", 0)) == index:
                item = assignments[segment["id"]]
                lut[int(segment.get("labelValue", 1))] = item.label
                owner[item.label] = item.segment
        mapped = _place(lut[np.asarray(layer, dtype=np.int64)], offset, size_ijk, path)
        clash = (labels_ijk != 0) & (mapped != 0)
        if np.any(clash):
            first = tuple(int(v) for v in np.argwhere(clash)[0])
            raise InputError(f"{path}: segments {owner[int(labels_ijk[first])]!r} and {owner[int(mapped[first])]!r} "
                             f"overlap (e.g. at voxel i, j, k = {first}); a voxel can belong to one vertebra only")
        labels_ijk = np.where(mapped != 0, mapped, labels_ijk)
    labels = sitk.GetImageFromArray(np.ascontiguousarray(labels_ijk.transpose(2, 1, 0)))
    labels.CopyInformation(image)
    present = set(int(v) for v in np.unique(labels_ijk)) - {0}
    for item in assignments.values():
        if item.label not in present:
            logger.warning("%s: segment %r is empty; left out", path, item.segment)
    return labels, {item.label: item.complete for item in assignments.values() if item.label in present}


def is_slicer_segmentation(path: PathLike) -> bool:
    """True for a ``.seg.nrrd`` or a ``.nrrd`` whose header describes Slicer segments."""
    name = Path(path).name.lower()
    if name.endswith(".seg.nrrd"):
        return True
    if not name.endswith(".nrrd"):
        return False
    try:
        return bool(slicerio.read_segmentation(str(path), skip_voxels=True).get("segments"))
    except Exception:  # not a readable NRRD header: treat as an image, read_label_map reports it
        return False


def read_segmentation_file(path: PathLike, image: sitk.Image,
                           completeness: Optional[Mapping[int, bool]] = None) -> Tuple[sitk.Image, Dict[int, bool]]:
    """A ``.seg.nrrd`` or a label map -> (label map on ``image``'s grid, completeness by label id).

    ``completeness`` overrides what the file says (a label map carries no flags: default complete).

    Raises:
        InputError: see :func:`labels_from_seg_nrrd` and :func:`imageio.read_label_map`.
    """
    if is_slicer_segmentation(path):
        labels, flags = labels_from_seg_nrrd(path, image)
    else:
        labels = read_label_map(path, reference=image)
        present = set(int(v) for v in np.unique(sitk.GetArrayViewFromImage(labels))) - {0}
        flags = {label: True for label in present}
    for label, value in (completeness or {}).items():
        if label in flags:
            flags[label] = bool(value)
    if not flags:
        raise InputError(f"{path}: the segmentation holds no vertebra voxels")
    return labels, flags


def case_info(config: ExportConfig, labels: sitk.Image, flags: Mapping[int, bool],
              source: Optional[Mapping[str, Any]] = None) -> dataset.CaseInfo:
    """The sidecar content: one record per labelled vertebra (centroid in LPS mm), cranio-caudal order."""
    centroids = dataset.centroids_of(labels)
    rows = sorted((anatomy.vertebra(label) for label in flags), key=lambda v: v.rank)
    records = [dataset.VertebraRecord(v.label, v.name, bool(flags[v.label]),
                                      [round(float(c), 3) for c in centroids[v.label]]) for v in rows]
    modality = config.modality.lower()
    target = config.target or ("body" if modality == "mr" else "vertebra")
    origin = {"tool": "vertebra-traversal export", "version": __version__, "image": str(config.image),
              "segmentation": str(config.segmentation)}
    origin.update(source or {})
    return dataset.CaseInfo(config.case_id, modality, target, records, origin)


def export_case(config: ExportConfig, completeness: Optional[Mapping[int, bool]] = None,
                source: Optional[Mapping[str, Any]] = None) -> dataset.CaseFiles:
    """Write ``config``'s image and segmentation as a new case of ``config.dataset``.

    Args:
        config: the request.
        completeness: per label id, overrides the flags read from the segmentation file.
        source: extra provenance stored in the sidecar's ``source``.

    Returns:
        The paths of the written case.

    Raises:
        InputError: bad modality, case id or dataset folder (:func:`new_case_files`), an existing case
            (nothing is overwritten), or any problem of the image or segmentation file (the message names the file).
    """
    new_case_files(config.dataset, config.case_id, config.modality)
    image = read_image(config.image)
    labels, flags = read_segmentation_file(config.segmentation, image, completeness)
    warn_missing_levels(sorted(flags), (source or {}).get("segmentation", config.segmentation))
    info = case_info(config, labels, flags, source)
    written = dataset.write_case(config.dataset, info, image, labels)
    logger.info("exported case %s: %s", config.case_id,
                ", ".join(r.name + ("" if r.complete else " (incomplete)") for r in info.vertebrae))
    return written


"""The project's dataset layout (folder layer), compatible with how VerSe names its files.

One case ``<id>`` of a dataset root::

    rawdata/<id>/<id>_ct.nii.gz                    image (``_mr.nii.gz`` for MR)
    derivatives/<id>/<id>_seg-vert_msk.nii.gz      label map, VerSe ids, on the image grid
    derivatives/<id>/<id>_seg-subreg_ctd.json      VerSe-style centroid list
    derivatives/<id>/<id>_vertebrae.json           sidecar: per vertebra id, name, complete, centroid, fracture
    derivatives/<id>/<id>_preview.png              optional picture

The phantom generator, the trainer, ``evaluate`` and the Slicer export all read and write this layout
through this module. VerSe releases drop in as they are (their cases have no sidecar; see
:func:`read_case_info`).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from . import anatomy
from .imageio import InputError, PathLike, read_json_document, write_image_atomic, write_json_atomic

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = "vertebra-traversal-case"
SIDECAR_VERSION = 1
MODALITIES = anatomy.MODALITIES


@dataclass(frozen=True)
class CaseFiles:
    """Paths of one case in a dataset root (files may not exist yet)."""

    root: Path
    case_id: str
    modality: str  # "ct" or "mr"

    @property
    def image(self) -> Path:
        return self.root / "rawdata" / self.case_id / f"{self.case_id}_{self.modality}.nii.gz"

    @property
    def labels(self) -> Path:
        return self.root / "derivatives" / self.case_id / f"{self.case_id}_seg-vert_msk.nii.gz"

    @property
    def centroids(self) -> Path:
        return self.root / "derivatives" / self.case_id / f"{self.case_id}_seg-subreg_ctd.json"

    @property
    def sidecar(self) -> Path:
        return self.root / "derivatives" / self.case_id / f"{self.case_id}_vertebrae.json"

    @property
    def preview(self) -> Path:
        return self.root / "derivatives" / self.case_id / f"{self.case_id}_preview.png"


@dataclass(frozen=True)
class VertebraRecord:
    """One vertebra of a case. ``centroid_lps_mm`` is the mask centroid in LPS millimetres."""

    label: int
    name: str
    complete: bool
    centroid_lps_mm: Sequence[float]
    fracture: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class CaseInfo:
    """Content of a sidecar JSON. ``target`` is ``"vertebra"`` (CT) or ``"body"`` (MR bodies only)."""

    case_id: str
    modality: str
    target: str
    vertebrae: List[VertebraRecord]
    source: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "case": self.case_id,
                "modality": self.modality.upper(), "target": self.target,
                "vertebrae": [asdict(v) for v in self.vertebrae], "source": self.source}


def list_cases(root: PathLike) -> List[CaseFiles]:
    """All cases under ``root/rawdata`` that have an image, sorted by id.

    Raises:
        InputError: when ``root`` does not exist or holds no case.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found")
    cases = []
    for folder in sorted((root / "rawdata").glob("*")):
        for modality in MODALITIES:
            if (folder / f"{folder.name}_{modality}.nii.gz").exists():
                cases.append(CaseFiles(root, folder.name, modality))
    if not cases:
        raise InputError(f"{root}: no cases found (expected rawdata/<id>/<id>_ct.nii.gz or _mr.nii.gz)")
    return cases


def centroids_of(labels: sitk.Image) -> Dict[int, np.ndarray]:
    """Centroid (LPS mm, shape (3,)) of every label id present in a label map."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(labels, sitk.sitkUInt8))
    return {int(l): np.asarray(stats.GetCentroid(l)) for l in stats.GetLabels()}


def orientation_code(image: sitk.Image) -> str:
    """Three letters, the anatomical direction each index axis (i, j, k) points to, e.g. ``"LPS"``."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def verse_centroid_json(labels: sitk.Image) -> List[Dict[str, Any]]:
    """VerSe-style centroid list: a direction entry, then ``{label, X, Y, Z}`` in continuous voxel
    indices (i, j, k) of ``labels``' grid; the direction letters say where each index axis points."""
    out: List[Dict[str, Any]] = [{"direction": list(orientation_code(labels))}]
    for label, point in sorted(centroids_of(labels).items()):
        i, j, k = labels.TransformPhysicalPointToContinuousIndex(tuple(float(c) for c in point))
        out.append({"label": label, "X": round(i, 2), "Y": round(j, 2), "Z": round(k, 2)})
    return out


def write_case(root: PathLike, info: CaseInfo, image: sitk.Image, labels: sitk.Image,
               preview_png: Optional[bytes] = None) -> CaseFiles:
    """Write one case; refuse to overwrite an existing one.

    All files go to temporary folders first and are moved in place only when complete, so a failure
    leaves nothing half-written.

    Raises:
        InputError: the case already exists, or the label map is on another grid than the image.
    """
    files = CaseFiles(Path(root), info.case_id, info.modality.lower())
    if files.image.parent.exists() or files.labels.parent.exists():
        raise InputError(f"{files.image.parent}: case {info.case_id!r} already exists; not overwriting")
    if labels.GetSize() != image.GetSize() or not np.allclose(labels.GetSpacing(), image.GetSpacing()):
        raise InputError(f"{files.labels}: label map grid differs from its image")
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=_ensure(files.root)))
    try:
        raw = staging / "rawdata" / info.case_id
        der = staging / "derivatives" / info.case_id
        raw.mkdir(parents=True)
        der.mkdir(parents=True)
        write_image_atomic(image, raw / files.image.name)
        write_image_atomic(sitk.Cast(labels, sitk.sitkUInt8), der / files.labels.name)
        write_json_atomic(verse_centroid_json(labels), der / files.centroids.name)
        write_json_atomic(info.to_json(), der / files.sidecar.name)
        if preview_png is not None:
            (der / files.preview.name).write_bytes(preview_png)
        for sub in ("rawdata", "derivatives"):
            _ensure(files.root / sub)
            os.replace(staging / sub / info.case_id, files.root / sub / info.case_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return files


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_case_info(files: CaseFiles, labels: Optional[sitk.Image] = None) -> CaseInfo:
    """Read the sidecar of a case, or derive one for a VerSe case that has none.

    Without a sidecar every labelled vertebra counts as complete (VerSe labels only vertebrae it marks
    as visible; the trainer crops partially visible ones away, paper §4.1).

    Raises:
        InputError: unreadable sidecar, wrong format, or unknown vertebra ids.
    """
    if files.sidecar.exists():
        data = read_json_document(files.sidecar, SIDECAR_FORMAT, "sidecar")
        records = []
        for entry in data.get("vertebrae", []):
            if not anatomy.is_valid_label(entry.get("label", 0)):
                raise InputError(f"{files.sidecar}: unknown vertebra label {entry.get('label')!r}")
            records.append(VertebraRecord(int(entry["label"]), str(entry["name"]), bool(entry["complete"]),
                                          [float(c) for c in entry["centroid_lps_mm"]], entry.get("fracture")))
        return CaseInfo(files.case_id, str(data.get("modality", files.modality)).lower(),
                        str(data.get("target", "vertebra")), records, dict(data.get("source", {})))
    if labels is None:
        raise InputError(f"{files.sidecar}: no sidecar and no label map given to derive one")
    records = [VertebraRecord(l, anatomy.name_of(l), True, [float(c) for c in p])
               for l, p in sorted(centroids_of(labels).items()) if anatomy.is_valid_label(l)]
    target = "body" if files.modality == "mr" else "vertebra"
    return CaseInfo(files.case_id, files.modality, target, records, {"derived": "no sidecar"})

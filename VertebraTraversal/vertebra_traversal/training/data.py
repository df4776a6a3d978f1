"""Training data: find cases, resample them once to the model grid and cache them on disk.

Two layouts are read (both ``rawdata/`` + ``derivatives/``, see :mod:`vertebra_traversal.dataset`):

* the project's own (``dataset.list_cases``), with a sidecar per case;
* VerSe as published, where a file stem may differ from its folder
  (``rawdata/sub-gl003/sub-gl003_dir-ax_ct.nii.gz`` with
  ``derivatives/sub-gl003/sub-gl003_dir-ax_seg-vert_msk.nii.gz``) and there is no sidecar.

VerSe does not label partially visible vertebrae. Like the paper (§4.1), such scans are cropped along
z to the labelled vertebrae (plus ``margin_mm``), so unlabelled bone is never trained as background.
This applies to every case without a sidecar.

A prepared case is three files in the cache folder, keyed by case id, spacing and a hash of the
sources: ``<key>.image.npy`` (float16 normalised image, (z, y, x) on the model grid, axis 0
inferior -> superior), ``<key>.labels.npy`` (uint8 VerSe ids) and ``<key>.json`` (sampler index).
Workers memory-map the arrays.
"""
from __future__ import annotations

import hashlib
import json
import logging
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from .. import anatomy, imageio
from ..dataset import MODALITIES, CaseFiles, list_cases, read_case_info
from ..geometry import crop_range_mm, crop_z, to_model_grid
from ..imageio import InputError, atomic_path, write_json_atomic
from ..normalization import NormalizationSpec, normalize
from .sampler import ScanIndex, scan_index

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class TrainingCase:
    """One labelled scan. ``files`` locates the sidecar (which may not exist)."""

    case_id: str
    modality: str
    image: Path
    labels: Path
    files: CaseFiles


@dataclass(frozen=True)
class PreparedCase:
    """A case on the model grid, ready for sampling.

    Attributes:
        case_id: the case id.
        image_path / labels_path: cached ``.npy`` arrays (D, H, W), axis 0 inferior -> superior.
        index: bounding boxes, volumes and completeness flags (voxels, :class:`ScanIndex`).
        spacing_mm: isotropic model spacing.
        target: ``"vertebra"`` or ``"body"`` (from the sidecar).
    """

    case_id: str
    image_path: Path
    labels_path: Path
    index: ScanIndex
    spacing_mm: float
    target: str

    def load(self, mmap: bool = True) -> "tuple[np.ndarray, np.ndarray]":
        """(image float16 (D, H, W), labels uint8 (D, H, W)), memory-mapped by default."""
        mode = "r" if mmap else None
        return np.load(self.image_path, mmap_mode=mode), np.load(self.labels_path, mmap_mode=mode)


def _verse_case(root: Path, image: Path, modality: str) -> TrainingCase:
    stem = image.name[: -len(f"_{modality}.nii.gz")]
    folder = image.parent.name
    labels = root / "derivatives" / folder / f"{stem}_seg-vert_msk.nii.gz"
    return TrainingCase(stem, modality, image, labels, CaseFiles(root, stem, modality))


def find_cases(data_dirs: Sequence[Path], modality: Optional[str] = None) -> List[TrainingCase]:
    """All cases of the given dataset roots, in both layouts, sorted by root then id.

    Raises:
        InputError: a missing or empty folder, a case without label map, or (when ``modality`` is
            given) a case of another modality -- the message names the file.
    """
    if not data_dirs:
        raise InputError("no training data folder given")
    cases: List[TrainingCase] = []
    for root in (Path(d) for d in data_dirs):
        if not root.is_dir():
            raise InputError(f"{root}: dataset folder not found")
        found: Dict[Path, TrainingCase] = {}
        try:
            for files in list_cases(root):
                found[files.image] = TrainingCase(files.case_id, files.modality, files.image, files.labels, files)
        except InputError:
            pass
        for kind in MODALITIES:
            for image in sorted(root.glob(f"rawdata/*/*_{kind}.nii.gz")):
                found.setdefault(image, _verse_case(root, image, kind))
        if not found:
            raise InputError(f"{root}: no cases found (expected rawdata/<id>/<id>_ct.nii.gz or _mr.nii.gz "
                             f"with derivatives/<id>/<id>_seg-vert_msk.nii.gz)")
        cases.extend(found[key] for key in sorted(found))
    for case in cases:
        _check_case(case, modality)
    return cases


def _check_case(case: TrainingCase, modality: Optional[str]) -> None:
    if not case.labels.exists():
        raise InputError(f"{case.labels}: label map missing for case {case.case_id!r} (image {case.image}); "
                         f"every training case needs a reference segmentation")
    if modality is not None and case.modality != modality.lower():
        raise InputError(f"{case.image}: a {case.modality.upper()} image, but this run trains a "
                         f"{modality.upper()} model")


def _file_stamp(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def cache_key(case: TrainingCase, spacing_mm: float, normalization: NormalizationSpec, margin_mm: float) -> str:
    """``<case id>-<spacing>mm-<hash>``; the hash covers source files, normalisation and margin."""
    text = "|".join([str(CACHE_VERSION), _file_stamp(case.image), _file_stamp(case.labels),
                     _file_stamp(case.files.sidecar) if case.files.sidecar.exists() else "-",
                     json.dumps(normalization.to_json(), sort_keys=True), f"{margin_mm:g}"])
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
    return f"{case.case_id}-{spacing_mm:g}mm-{digest}"


def check_disjoint(training: Sequence[Dict[str, Any]], held_out: Sequence[Dict[str, Any]]) -> None:
    """Refuse held-out cases that are also training cases, given both as :func:`describe_case` records: the
    same image file, or a copy of one (same image size in bytes and the same label map).

    Raises:
        InputError: names the held-out file and the training file it repeats.
    """
    def key(record: Dict[str, Any]) -> "tuple[int, str]":
        return record["image_bytes"], record["labels_sha1"]

    seen = {key(record): record for record in training}
    for record in held_out:
        same = seen.get(key(record))
        if same is not None:
            raise InputError(f"{record['image']}: this held-out case (--validation) is also a training case "
                             f"({same['image']}); validation needs cases the model is not trained on")


def describe_case(case: TrainingCase) -> Dict[str, Any]:
    """A JSON description of a source case (for the run identity and the model metadata)."""
    digest = hashlib.sha1(case.labels.read_bytes()).hexdigest()[:16]
    return {"case": case.case_id, "modality": case.modality, "image": str(case.image),
            "image_bytes": case.image.stat().st_size, "labels_sha1": digest}


def _crop_range(labels: np.ndarray, margin_voxels: int) -> "tuple[int, int]":
    rows = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    return max(0, int(rows[0]) - margin_voxels), min(labels.shape[0], int(rows[-1]) + 1 + margin_voxels)


def _model_arrays(case: TrainingCase, spacing_mm: float, normalization: NormalizationSpec,
                  margin_mm: float) -> "tuple[np.ndarray, np.ndarray, Dict[int, bool], str]":
    image = imageio.read_image(case.image)
    labels = imageio.read_label_map(case.labels, reference=image)
    info = read_case_info(case.files, labels)
    if not any(anatomy.is_valid_label(l) for l in np.unique(sitk.GetArrayViewFromImage(labels))):
        raise InputError(f"{case.labels}: label map holds no vertebra")
    spacing = (spacing_mm,) * 3
    model_image = sitk.GetArrayFromImage(to_model_grid(image, spacing, "linear"))
    model_labels = sitk.GetArrayFromImage(to_model_grid(labels, spacing, "nearest")).astype(np.uint8)
    array = normalize(model_image, normalization)
    if not case.files.sidecar.exists():
        lo, hi = _crop_range(model_labels, int(round(margin_mm / spacing_mm)))
        logger.info("%s: no sidecar; cropping z to the labelled vertebrae (slices %d..%d of %d)",
                    case.case_id, lo, hi, model_labels.shape[0])
        array, model_labels = array[lo:hi], model_labels[lo:hi]
    complete = {int(v.label): bool(v.complete) for v in info.vertebrae}
    return array, model_labels, complete, info.target


def _save_npy(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def _index_to_json(index: ScanIndex) -> Dict[str, Any]:
    return {"shape": list(index.shape), "boxes": {str(k): [list(a), list(b)] for k, (a, b) in index.boxes.items()},
            "volumes": {str(k): v for k, v in index.volumes.items()},
            "complete": {str(k): v for k, v in index.complete.items()}}


def _index_from_json(data: Dict[str, Any]) -> ScanIndex:
    boxes = {int(k): (tuple(a), tuple(b)) for k, (a, b) in data["boxes"].items()}
    return ScanIndex(tuple(data["shape"]), boxes, {int(k): int(v) for k, v in data["volumes"].items()},
                     {int(k): bool(v) for k, v in data["complete"].items()})


def prepare_case(case: TrainingCase, cache_dir: Path, spacing_mm: float, normalization: NormalizationSpec,
                 margin_mm: float = 2.0) -> PreparedCase:
    """Resample, normalise and cache one case (or reuse its cache entry).

    Raises:
        InputError: unreadable image/labels, a label map on another grid, or no vertebra in it.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(case, spacing_mm, normalization, margin_mm)
    meta_path = cache_dir / f"{key}.json"
    image_path, labels_path = cache_dir / f"{key}.image.npy", cache_dir / f"{key}.labels.npy"
    if meta_path.exists() and image_path.exists() and labels_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return PreparedCase(case.case_id, image_path, labels_path, _index_from_json(meta["index"]),
                            spacing_mm, meta["target"])
    array, labels, complete, target = _model_arrays(case, spacing_mm, normalization, margin_mm)
    index = scan_index(labels, complete)
    _save_npy(array.astype(np.float16), image_path)
    _save_npy(labels, labels_path)
    meta = {"case": case.case_id, "source": str(case.image), "spacing_mm": spacing_mm, "target": target,
            "index": _index_to_json(index)}
    write_json_atomic(meta, meta_path, indent=None)
    logger.debug("cached %s as %s, shape %s", case.case_id, key, labels.shape)
    return PreparedCase(case.case_id, image_path, labels_path, index, spacing_mm, target)


def prepare_cases(cases: Sequence[TrainingCase], cache_dir: Path, spacing_mm: float,
                  normalization: NormalizationSpec, margin_mm: float = 2.0,
                  progress: Optional[Progress] = None, workers: int = 0) -> List[PreparedCase]:
    """:func:`prepare_case` for every case, in ``workers`` processes (0: in this one); ``progress(done, total,
    case_id)`` after each, in the order of ``cases``.

    Raises:
        InputError: the first case (in order) that cannot be prepared; the cases not yet started are not.
    """
    args = (cache_dir, spacing_mm, normalization, margin_mm)
    if workers < 1 or len(cases) < 2:
        results: Iterable[PreparedCase] = (prepare_case(case, *args) for case in cases)
        return _reported(results, cases, progress)
    # the platform's default start method, as the DataLoader's workers use it (a fork on Linux: a script needs
    # no ``if __name__ == "__main__"`` guard there, as it needs one on Windows and macOS for both)
    with ProcessPoolExecutor(max_workers=min(workers, len(cases))) as pool:
        futures = [pool.submit(prepare_case, case, *args) for case in cases]
        try:
            return _reported((f.result() for f in futures), cases, progress)
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def _reported(results: Iterable[PreparedCase], cases: Sequence[TrainingCase],
              progress: Optional[Progress]) -> List[PreparedCase]:
    prepared = []
    for number, (case, result) in enumerate(zip(cases, results), start=1):
        prepared.append(result)
        if progress is not None:
            progress(number, len(cases), case.case_id)
    return prepared


def case_crops(case_id: str, image: sitk.Image, reference: sitk.Image, count: int, seed: int,
               stream: int) -> List[Tuple[str, sitk.Image, sitk.Image]]:
    """``count`` random crops of a case along z (:func:`~vertebra_traversal.geometry.crop_range_mm`, as the
    paper's z-crop experiment draws them), each ``(<case_id>-crop<n>, image, reference)``: drawn from ``seed``,
    the case and ``stream`` (a tuner's own), so a case gets the same crops in every run and process."""
    rng = np.random.default_rng([seed, zlib.crc32(case_id.encode()), stream])
    out = []
    for n in range(count):
        z0, z1 = crop_range_mm(image, rng)
        out.append((f"{case_id}-crop{n + 1}", crop_z(image, z0, z1), crop_z(reference, z0, z1)))
    return out

"""Image input and output with validation (file layer).

Every reader returns a SimpleITK image; arrays taken from it are in SimpleITK's numpy order
``(z, y, x)`` = ``(k, j, i)``. Physical coordinates are LPS millimetres (ITK convention).

Bad input raises :class:`InputError` whose message names the file and the problem; callers turn it
into one line on stderr and a non-zero exit code.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk

from . import anatomy

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Voxel spacings outside this range (mm) are refused as absurd.
SPACING_RANGE_MM = (0.05, 20.0)


class InputError(ValueError):
    """Bad user input: the message names the file and the problem."""


def _read_any(path: Path) -> sitk.Image:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise InputError(f"{path}: folder holds no DICOM series")
            if len(series) > 1:
                logger.warning("%s: %d DICOM series, reading the first (%s)", path, len(series), series[0])
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise InputError(f"{path}: cannot read image ({first})") from None


def _check_geometry(image: sitk.Image, path: Path) -> None:
    if image.GetDimension() != 3:
        raise InputError(f"{path}: expected a 3D image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components")
    lo, hi = SPACING_RANGE_MM
    spacing = image.GetSpacing()
    if any(not (lo <= s <= hi) for s in spacing):
        raise InputError(f"{path}: absurd voxel spacing {tuple(round(s, 4) for s in spacing)} mm "
                         f"(expected {lo}..{hi} mm)")
    if min(image.GetSize()) < 2:
        raise InputError(f"{path}: image of size {image.GetSize()} is not a volume")


def read_image(path: PathLike) -> sitk.Image:
    """Read a 3D scalar image (any format SimpleITK reads, or a DICOM series folder) as float32.

    Raises:
        InputError: missing/unreadable file, not 3D, vector image, absurd spacing, NaN/inf voxels,
            or a constant image.
    """
    path = Path(path)
    image = _read_any(path)
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    _check_geometry(image, path)
    image = sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{path}: image holds NaN or infinite voxels")
    if float(array.max()) == float(array.min()):
        raise InputError(f"{path}: image is constant ({float(array.min())}) - nothing to segment")
    return image


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    """True when both images share size, spacing, origin and direction (within ``tol``, origin ``10 tol``)."""
    return not grid_difference(a, b, tol)


def grid_difference(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> str:
    """Which of size, spacing, origin (mm) and direction differ between two grids (the :func:`same_grid`
    tolerances), each as ``"origin (0.0, 0.0, 0.0) against (0.0, 0.0, 20.0)"``; empty when none does."""
    fields = (("size", lambda i: i.GetSize(), 0.0, 0), ("spacing", lambda i: i.GetSpacing(), tol, 3),
              ("origin", lambda i: i.GetOrigin(), tol * 10, 2), ("direction", lambda i: i.GetDirection(), tol, 3))
    parts = []
    for name, get, atol, digits in fields:
        x, y = get(a), get(b)
        if len(x) != len(y) or not np.allclose(x, y, atol=atol):
            parts.append(f"{name} {tuple(round(float(v), digits) for v in x)} against "
                         f"{tuple(round(float(v), digits) for v in y)}")
    return "; ".join(parts)


def read_label_map(path: PathLike, reference: Optional[sitk.Image] = None,
                   allowed_extra: Sequence[int] = tuple(anatomy.NON_VERTEBRA_LABELS)) -> sitk.Image:
    """Read a vertebra label map (VerSe ids) as uint8, checking ids and, if given, the grid.

    Labels in ``allowed_extra`` (sacrum 26, coccyx 27 by default) are set to 0.

    Raises:
        InputError: unreadable, not 3D, non-integer values, unknown ids, or another grid than ``reference``.
    """
    path = Path(path)
    image = _read_any(path)
    _check_geometry(image, path)
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise InputError(f"{path}: label map holds non-integer values")
    ids = set(int(v) for v in np.unique(array)) - {0}
    extra = ids & set(allowed_extra)
    unknown = sorted(ids - set(anatomy.BY_LABEL) - extra)
    if unknown:
        raise InputError(f"{path}: unknown label ids {unknown} (VerSe ids expected: {sorted(anatomy.BY_LABEL)})")
    if reference is not None and not same_grid(image, reference):
        raise InputError(f"{path}: label map grid differs from its image ({grid_difference(image, reference)})")
    if extra:
        array[np.isin(array, list(extra))] = 0
    out = sitk.GetImageFromArray(array.astype(np.uint8))
    out.CopyInformation(image)
    return out


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same extensions); rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left as it was, so a reader
    never sees a half-written file. The file gets the permissions of any new file (``0o666`` less the
    umask), not the owner-only ones of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix="".join(path.suffixes) or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    """The process's umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_json_document(path: PathLike, expected_format: str, what: str) -> dict:
    """Read a JSON object whose ``format`` field must be ``expected_format``.

    Raises:
        InputError: ``"<path>: cannot read <what> (...)"`` or ``"<path>: not a <expected_format> <what>"``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read {what} ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        raise InputError(f"{path}: not a {expected_format} {what}")
    return data


def write_bytes_atomic(data: bytes, path: PathLike) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(obj: Any, path: PathLike, indent: Optional[int] = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(json.dumps(obj, indent=indent).encode("utf-8"), path)


def write_image_atomic(image: sitk.Image, path: PathLike, compress: bool = True) -> Path:
    """Write ``image`` to ``path`` atomically; the temporary name keeps the extension so that
    SimpleITK picks the right writer."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return Path(path)

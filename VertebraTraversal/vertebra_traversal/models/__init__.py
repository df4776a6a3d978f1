"""Models bundled with the package (trained on synthetic phantoms only; not for clinical use).

``ct.pt`` segments whole vertebrae in CT, ``mr.pt`` vertebral bodies in T2-weighted MR. Each has a model
card (``ct.md``, ``mr.md``) beside it. They live in the Slicer module's ``Resources/Models/``; this
package finds them there in the source tree and in Slicer's installed module layout (both put
``Resources/`` beside the ``vertebra_traversal`` folder), and under ``<prefix>/share/vertebra-traversal/
models`` when it was installed from a wheel.
"""
from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Sequence

from ..imageio import InputError

#: Where the bundled models may be, first match wins.
SEARCH_DIRS = (
    Path(__file__).resolve().parents[2] / "Resources" / "Models",
    Path(sysconfig.get_path("data")) / "share" / "vertebra-traversal" / "models",
)


def models_dir(candidates: Sequence[Path] = SEARCH_DIRS) -> Path:
    """The first of ``candidates`` that holds ``ct.pt`` (the first one if none does)."""
    return next((d for d in candidates if (d / "ct.pt").is_file()), candidates[0])


MODELS_DIR = models_dir()
BUNDLED = {"ct": MODELS_DIR / "ct.pt", "mr": MODELS_DIR / "mr.pt"}


def resolve_model(spec: str) -> Path:
    """``"ct"``/``"mr"`` -> the bundled checkpoint; anything else is a file path.

    Raises:
        InputError: the bundled model is missing or the file does not exist.
    """
    key = spec.strip().lower()
    if key in BUNDLED:
        path = BUNDLED[key]
        if not path.exists():
            raise InputError(f"{path}: the bundled {key.upper()} model is not in this installation; "
                             f"pass --model PATH to a checkpoint (see `vertebra-traversal train`)")
        return path
    path = Path(spec)
    if not path.exists():
        raise InputError(f"{path}: model file not found")
    return path

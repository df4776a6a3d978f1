"""Models bundled with the package (trained on synthetic phantoms only; not for clinical use).

``ct.pt`` segments whole vertebrae in CT, ``mr.pt`` vertebral bodies in T2-weighted MR. Each has a model
card (``ct.md``, ``mr.md``) beside it.
"""
from __future__ import annotations

from pathlib import Path

from ..imageio import InputError

MODELS_DIR = Path(__file__).resolve().parent
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

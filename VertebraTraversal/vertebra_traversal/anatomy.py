"""The one anatomy table of the project: vertebra ids, names, colours and SNOMED CT codes.

Ids follow the VerSe convention (1-7 C1-C7, 8-19 T1-T12, 20-24 L1-L5, 25 L6, 28 T13; 26 sacrum and
27 coccyx are known but are not vertebra instances here). The data live in ``data/anatomy.csv`` so that
every layer -- phantoms, the network's regression targets, label refinement, the Slicer segments --
reads the same rows.

``rank`` orders the vertebrae cranio-caudally (C1 = 1 ... L5 = 24; T13 = 19.5 sits between T12 and L1,
L6 = 25 after L5). ``regression_value`` is the value the network regresses for the vertebra (paper
§3.4: C1..L5 as 1..24, 0 for "no vertebra").
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from typing import Dict, Optional, Tuple

from .checks import is_integer

#: Imaging modalities, as the dataset layout spells them in file names (``<id>_ct.nii.gz``); the model
#: metadata writes them in capitals.
MODALITIES = ("ct", "mr")
#: Traversal directions along the spine (§3.3): ``up`` starts caudally, ``down`` cranially.
DIRECTIONS = ("up", "down")

#: Labels that may appear in VerSe label maps but are not vertebra instances for this method.
NON_VERTEBRA_LABELS: Dict[int, str] = {26: "sacrum", 27: "coccyx"}

#: SNOMED CT category used for every vertebra segment (Slicer terminology).
ANATOMICAL_STRUCTURE = ("123037004", "SCT", "Anatomical Structure")


@dataclass(frozen=True)
class Vertebra:
    """One row of the anatomy table.

    Attributes:
        label: VerSe label id (1..25, 28).
        name: short anatomical name, e.g. ``"L4"``.
        region: ``"cervical"``, ``"thoracic"`` or ``"lumbar"``.
        rank: cranio-caudal position (C1 = 1 ... L5 = 24, T13 = 19.5, L6 = 25).
        regression_value: target of the network's label output (paper §3.4).
        color: RGB in [0, 1].
        snomed_code / snomed_meaning: SNOMED CT type of the segment.
    """

    label: int
    name: str
    region: str
    rank: float
    regression_value: float
    color: Tuple[float, float, float]
    snomed_code: str
    snomed_meaning: str


def _load() -> Tuple[Vertebra, ...]:
    text = resources.files(__package__).joinpath("data/anatomy.csv").read_text(encoding="utf-8")
    rows = []
    for row in csv.DictReader(text.splitlines()):
        rows.append(
            Vertebra(
                label=int(row["label"]),
                name=row["name"],
                region=row["region"],
                rank=float(row["rank"]),
                regression_value=float(row["regression_value"]),
                color=(float(row["red"]), float(row["green"]), float(row["blue"])),
                snomed_code=row["snomed_code"],
                snomed_meaning=row["snomed_meaning"],
            )
        )
    return tuple(sorted(rows, key=lambda v: v.rank))


#: All vertebrae, cranio-caudal order (C1 first, L6 last).
VERTEBRAE: Tuple[Vertebra, ...] = _load()
BY_LABEL: Dict[int, Vertebra] = {v.label: v for v in VERTEBRAE}
BY_NAME: Dict[str, Vertebra] = {v.name: v for v in VERTEBRAE}
#: The 24 standard vertebrae C1..L5 in cranio-caudal order.
STANDARD: Tuple[Vertebra, ...] = tuple(v for v in VERTEBRAE if v.name not in ("T13", "L6"))


def vertebra(label_or_name: "int | str") -> Vertebra:
    """Return the table row for a VerSe label id or a name (``"L4"``, case-insensitive).

    Raises:
        KeyError: with a message naming the unknown id or name.
    """
    if isinstance(label_or_name, str):
        key = label_or_name.strip().upper()
        if key in BY_NAME:
            return BY_NAME[key]
        raise KeyError(f"unknown vertebra name {label_or_name!r}; known: {', '.join(BY_NAME)}")
    key_int = int(label_or_name)
    if key_int in BY_LABEL:
        return BY_LABEL[key_int]
    raise KeyError(f"unknown vertebra label id {label_or_name!r}; known: {sorted(BY_LABEL)}")


def name_of(label: int) -> str:
    """Name of a VerSe label id, e.g. ``name_of(20) == "L1"``."""
    return vertebra(label).name


def label_of(name: str) -> int:
    """VerSe label id of a vertebra name, e.g. ``label_of("L1") == 20``."""
    return vertebra(name).label


def is_valid_label(label: int) -> bool:
    """True for a vertebra id of the table (not 0, not sacrum/coccyx)."""
    return int(label) in BY_LABEL


def as_label(value: object) -> Optional[int]:
    """``value`` (read from a file: JSON, metadata) when it is a vertebra id of the table, else None; an
    integer only, not a boolean, a float or a string."""
    ok = is_integer(value) and value in BY_LABEL
    return int(value) if ok else None

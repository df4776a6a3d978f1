"""Settings of the synthetic spine generator (one frozen dataclass, validated on construction)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from ..anatomy import MODALITIES

FOV_MODES = ("random", "spine", "neck", "chest", "lumbar", "full")


@dataclass(frozen=True)
class PhantomConfig:
    """What kind of cases to generate.

    Attributes:
        modality: ``"ct"`` (HU, whole-vertebra labels) or ``"mr"`` (T2-like, vertebral bodies only).
        fov: ``"random"``, ``"spine"`` (dedicated spine scan of a random section), ``"neck"``
            (dedicated cervical spine scan: C1-T1 or C2-T2, never drawn by ``"random"``), ``"chest"``,
            ``"lumbar"`` or ``"full"`` (C1 to below the sacrum).
        inplane_spacing_mm: range (min, max) the in-plane voxel spacing is drawn from, mm.
        slice_spacing_mm: range of the slice spacing (along S-I for CT, L-R for sagittal MR), mm.
        fracture_rate: probability that a case has 1-3 compression fractures (Genant grade 1-3).
        low_density_rate: probability of low bone density (osteoporotic cancellous bone).
        t13_rate, l6_rate, four_lumbar_rate: probabilities of the transitional variants; they exclude
            each other and are tried in this order (one uniform draw against the cumulative rates).
        cervical_rib_rate, lumbar_rib_rate, short_rib_rate: probabilities of a rib on C7, a rib on L1
            and a short (12-38 mm) last rib, each drawn on its own, each on one side or both
            (:mod:`.ribvariants`, with patients' prevalences); 0 by default, so that a seed gives the
            case it gave before they existed.
        implant_rate: probability of pedicle screws and rods (with metal streaks in CT).
        scoliosis_rate: probability of a lateral curve (Cobb 10-45 degrees).
        noise: range of the CT noise standard deviation, HU (standard dose .. low dose); for MR the
            Rician noise is scaled from the same draw.
        random_orientation: store images in a random orientation (else LPS).
        max_voxels: the spacing is coarsened (isotropically scaled) if the field would exceed this.
    """

    modality: str = "ct"
    fov: str = "random"
    inplane_spacing_mm: Tuple[float, float] = (0.3, 1.0)
    slice_spacing_mm: Tuple[float, float] = (0.7, 2.5)
    fracture_rate: float = 0.1
    low_density_rate: float = 0.15
    t13_rate: float = 0.03
    l6_rate: float = 0.03
    four_lumbar_rate: float = 0.03
    cervical_rib_rate: float = 0.0
    lumbar_rib_rate: float = 0.0
    short_rib_rate: float = 0.0
    implant_rate: float = 0.0
    scoliosis_rate: float = 0.15
    noise: Tuple[float, float] = (10.0, 60.0)
    random_orientation: bool = True
    max_voxels: int = 25_000_000

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.fov not in FOV_MODES:
            raise ValueError(f"fov must be one of {FOV_MODES}, got {self.fov!r}")
        for name in ("inplane_spacing_mm", "slice_spacing_mm", "noise"):
            lo, hi = getattr(self, name)
            low_limit = 0.0 if name == "noise" else 0.1
            if not (low_limit <= lo <= hi) or (name != "noise" and hi > 10.0):
                raise ValueError(f"{name} must be a range (min, max) with {low_limit} <= min <= max"
                                 f"{'' if name == 'noise' else ' <= 10'}, got {(lo, hi)}")
        for name in ("fracture_rate", "low_density_rate", "t13_rate", "l6_rate", "four_lumbar_rate",
                     "cervical_rib_rate", "lumbar_rib_rate", "short_rib_rate", "implant_rate", "scoliosis_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.max_voxels < 1000:
            raise ValueError(f"max_voxels must be at least 1000, got {self.max_voxels}")

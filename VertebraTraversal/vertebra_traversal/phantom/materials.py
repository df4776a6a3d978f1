"""Tissue intensities: CT in Hounsfield units, MR as T2-weighted turbo-spin-echo arbitrary units.

CT values are typical adult values (air -1000, lung about -860, fat about -100, muscle about 50,
contrast-enhanced aorta 150-380, cancellous vertebral bone 120-230 HU in normal and 40-110 HU in low
bone density, cortical bone 1000-1600 HU before partial volume). They are calibrated so that the
rendered lumbar vertebra masks reproduce real CT statistics (see :mod:`.stats`).

MR (T2): fat and fatty marrow bright-intermediate, cortex dark, disc nucleus and CSF bright, muscle
dark-intermediate, flowing blood dark; values are arbitrary units before bias field and noise.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

#: name: (CT mean HU, CT case-to-case SD, MR mean, MR SD)
_TISSUES = {
    "air": (-1000, 0, 0, 0),
    "lung": (-860, 25, 12, 4),
    "fat": (-100, 8, 760, 60),
    "muscle": (46, 6, 170, 20),
    "soft": (35, 6, 250, 30),
    "viscera": (28, 6, 300, 40),
    "liver": (60, 8, 150, 20),
    "spleen": (48, 5, 380, 40),
    "kidney": (35, 5, 420, 40),
    "heart": (42, 5, 110, 20),
    "blood": (42, 4, 60, 20),
    "disc": (85, 8, 230, 30),
    "nucleus": (72, 6, 950, 120),
    "csf": (10, 4, 1150, 80),
    "cord": (35, 4, 430, 40),
    "epidural_fat": (-80, 10, 700, 60),
    "cortex": (780, 70, 30, 8),
    "cancellous": (108, 35, 420, 50),
    "marrow": (220, 25, 470, 50),
    "bone_cortex": (1300, 120, 30, 8),
    "cartilage": (120, 15, 250, 30),
    "teeth": (2200, 200, 10, 4),
    "metal": (3071, 0, 0, 0),
    "calcification": (700, 200, 30, 8),
    "gas": (-985, 8, 0, 0),
    "brain": (34, 3, 480, 40),
    "fluid": (8, 4, 1100, 80),
    "table_shell": (250, 60, 0, 0),
    "table_foam": (-850, 40, 0, 0),
}


def sample_materials(modality: str, rng: np.random.Generator, low_density: bool) -> Dict[str, float]:
    """Per-case tissue values (HU for CT, arbitrary units for MR).

    Adds derived entries: ``aorta`` (contrast-enhanced in about 60 % of CT cases), ``cancellous_post``
    (denser cancellous bone of the posterior elements) and ``cortex_t_body`` / ``cortex_t_post``
    (cortical thicknesses, mm).
    """
    ct = modality == "ct"
    out = {}
    for name, (ct_mean, ct_sd, mr_mean, mr_sd) in _TISSUES.items():
        mean, sd = (ct_mean, ct_sd) if ct else (mr_mean, mr_sd)
        out[name] = float(mean + sd * np.clip(rng.normal(), -2.5, 2.5))
    contrast = rng.random() < 0.6
    out["aorta"] = float(rng.uniform(150, 380)) if ct and contrast else out["blood"]
    out["kidney"] = float(rng.uniform(120, 200)) if ct and contrast else out["kidney"]
    out["contrast"] = float(contrast)
    if low_density:
        out["cancellous"] = float(rng.uniform(40, 110)) if ct else float(rng.uniform(480, 600))
    out["cancellous_post"] = out["cancellous"] + (320.0 if ct else 20.0)
    out["muscle_fat_fraction"] = float(rng.uniform(0.1, 0.5))
    thin = 0.75 if low_density else 1.0
    out["cortex_t_body"] = float(rng.uniform(0.3, 0.5)) * thin
    out["cortex_t_post"] = float(rng.uniform(0.6, 0.9)) * thin
    return out

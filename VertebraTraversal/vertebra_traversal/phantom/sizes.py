"""Per-level vertebra dimensions (mm) of an average adult, the phantom's anatomy table.

Sources (values rounded, read from the published tables and figures):

- Panjabi MM et al. "Cervical human vertebrae. Quantitative three-dimensional anatomy of the middle
  and lower regions." Spine 16(8):861-869, 1991 (C2-C7 end-plate width/depth, body height, pedicles,
  spinal canal).
- Panjabi MM et al. "Thoracic human vertebrae. Quantitative three-dimensional anatomy."
  Spine 16(8):888-901, 1991 (T1-T12).
- Panjabi MM et al. "Human lumbar vertebrae. Quantitative three-dimensional anatomy."
  Spine 17(3):299-306, 1992 (L1-L5, incl. transverse process width).
- Disc heights: typical mid-disc heights from radiographic series (cervical ~5 mm, thoracic 4-7 mm,
  lumbar 9-12 mm; e.g. Frobin W et al., Clin Biomech 12:S1-S63, 1997 for the lumbar spine).
- Spinous process length/angle, lamina height: approximate values from the same series and standard
  anatomy atlases; they are tuned so that whole-vertebra volumes and extents match real lumbar CT
  masks (see ``phantom/stats.py`` and the calibration numbers in the tests).

Columns (all mm unless stated):
    width, depth: upper end-plate width (left-right) and depth (antero-posterior).
    height: posterior body height; ``wedge`` = anterior / posterior height ratio.
    disc: height of the disc *below* the level (mid-disc).
    ped_w, ped_h: pedicle width and height; ``ped_angle``: transverse angle (deg, diverging posteriorly).
    canal_w, canal_d: spinal canal width and depth.
    tp_span: transverse process tip-to-tip width.
    sp_len, sp_angle: spinous process length and downward inclination (deg from horizontal).
    lam_h: lamina height (cranio-caudal).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict

import numpy as np


@dataclass(frozen=True)
class LevelSize:
    """Dimensions of one vertebra level (see module docstring for the columns)."""

    width: float
    depth: float
    height: float
    wedge: float
    disc: float
    ped_w: float
    ped_h: float
    ped_angle: float
    canal_w: float
    canal_d: float
    tp_span: float
    sp_len: float
    sp_angle: float
    lam_h: float

    def scaled(self, body: float, posterior: float, disc: float) -> "LevelSize":
        """A copy with body, posterior-element and disc dimensions multiplied by the given factors."""
        return replace(self, width=self.width * body, depth=self.depth * body, height=self.height * body,
                       disc=self.disc * disc, ped_w=self.ped_w * posterior, ped_h=self.ped_h * posterior,
                       canal_w=self.canal_w * posterior, canal_d=self.canal_d * posterior,
                       tp_span=self.tp_span * posterior, sp_len=self.sp_len * posterior,
                       lam_h=self.lam_h * posterior)


_COLUMNS = ("width depth height wedge disc ped_w ped_h ped_angle canal_w canal_d tp_span sp_len sp_angle lam_h")
# name:  width depth height wedge disc  ped_w ped_h angle canal_w canal_d tp_span sp_len sp_angle lam_h
_TABLE = """
C1     46.0  45.0  11.0  1.00  0.0   6.0   8.0   0     28.0  30.0   76.0   8.0    0     9.0
C2     17.0  15.5  21.0  1.00  4.5   7.0   8.0   40    25.0  16.0   56.0   22.0   20    12.0
C3     15.5  15.2  11.8  1.00  5.0   5.5   7.0   45    24.5  14.5   52.0   16.0   15    10.0
C4     16.0  15.5  11.6  1.00  5.5   5.7   7.2   45    25.0  14.5   53.0   16.0   18    10.0
C5     17.0  15.9  11.2  1.00  5.5   6.0   7.2   45    25.5  14.5   55.0   17.0   20    10.5
C6     18.7  16.4  11.2  1.00  5.0   6.0   7.3   42    25.0  14.3   58.0   22.0   24    11.0
C7     20.6  16.5  12.8  1.00  4.5   6.5   7.5   35    24.0  14.5   72.0   36.0   30    12.0
T1     25.0  16.0  14.5  1.00  4.0   7.8   9.8   25    21.0  15.0   82.0   38.0   35    14.0
T2     26.0  17.0  16.0  0.98  4.0   6.0   11.5  15    17.5  15.0   76.0   40.0   42    15.0
T3     26.5  18.5  16.6  0.97  4.2   4.8   11.8  10    15.5  14.5   72.0   42.0   48    15.5
T4     27.0  20.0  17.0  0.96  4.3   4.6   11.5  8     15.2  14.5   70.0   42.0   55    16.0
T5     28.5  22.0  17.5  0.95  4.5   4.8   11.5  8     15.0  14.8   68.0   42.0   60    16.0
T6     30.0  24.0  18.0  0.95  4.6   5.0   11.8  8     15.0  14.8   68.0   42.0   62    16.5
T7     31.0  25.0  18.5  0.95  4.8   5.2   12.0  8     15.0  14.8   66.0   40.0   62    17.0
T8     32.5  26.0  19.2  0.96  5.0   5.8   12.5  8     15.0  15.0   66.0   40.0   58    17.5
T9     34.0  27.0  19.8  0.96  5.3   6.0   13.5  8     15.5  15.0   64.0   36.0   50    18.0
T10    36.0  28.0  20.8  0.97  5.7   6.5   15.0  6     16.0  15.5   62.0   34.0   40    18.5
T11    39.0  29.0  22.0  0.98  6.2   7.5   16.5  4     17.5  16.5   60.0   32.0   28    19.5
T12    41.0  30.0  23.5  0.98  8.0   8.0   16.5  4     20.0  17.5   62.0   31.0   15    21.0
L1     42.0  31.5  24.8  0.97  9.0   8.7   15.5  8     22.0  18.0   82.0   31.0   8     22.0
L2     44.0  33.0  25.5  0.98  10.5  9.0   15.0  10    22.5  17.5   86.0   31.0   5     22.5
L3     46.0  34.0  25.8  1.00  11.5  10.3  14.5  14    23.5  17.0   93.0   30.0   3     22.5
L4     48.0  35.0  25.2  1.03  12.0  12.5  14.0  18    24.0  17.0   88.0   28.0   3     22.0
L5     50.0  35.0  24.5  1.10  11.0  17.0  14.0  28    26.0  17.0   94.0   25.0   0     21.0
"""


def _parse(text: str) -> Dict[str, LevelSize]:
    rows = {}
    names = _COLUMNS.split()
    for line in text.strip().splitlines():
        parts = line.split()
        rows[parts[0]] = LevelSize(**{k: float(v) for k, v in zip(names, parts[1:])})
    return rows


#: Average adult sizes per standard level C1..L5.
SIZES: Dict[str, LevelSize] = _parse(_TABLE)


def _mix(a: LevelSize, b: LevelSize, t: float) -> LevelSize:
    va, vb = np.array([getattr(a, k) for k in _COLUMNS.split()]), np.array([getattr(b, k) for k in _COLUMNS.split()])
    return LevelSize(*[float(x) for x in (1 - t) * va + t * vb])


#: Transitional levels: T13 between T12 and L1 (thoracic, with ribs), L6 a slightly smaller L5.
SIZES["T13"] = replace(_mix(SIZES["T12"], SIZES["L1"], 0.5), tp_span=64.0)
SIZES["L6"] = replace(SIZES["L5"], width=49.0, height=24.0, wedge=1.08, disc=10.0)

#: Sacral segments S1..S5: (width, depth, height) of the fused bodies, and the lateral (alar) half-span.
SACRUM = ((48.0, 33.0, 22.0), (38.0, 26.0, 19.0), (30.0, 20.0, 16.0), (22.0, 15.0, 13.0), (16.0, 11.0, 10.0))
SACRAL_HALF_SPAN = (52.0, 48.0, 40.0, 30.0, 20.0)

#: Facet-joint geometry per region: joint normal (w, v, u) on the left side, pointing from the lower
#: vertebra's superior articular process to the upper vertebra's inferior process; process half
#: thickness along the normal and in-plane radii.
FACET_NORMAL = {"cervical": (0.0, 0.72, 0.70), "thoracic": (0.20, 0.88, 0.43), "lumbar": (-0.86, 0.5, 0.0),
                "atlas": (0.0, 0.0, 1.0)}
FACET_THICKNESS = {"cervical": 3.2, "thoracic": 3.0, "lumbar": 3.9, "atlas": 4.0}
FACET_RADII = {"cervical": (6.5, 6.0), "thoracic": (6.5, 6.0), "lumbar": (8.5, 7.0), "atlas": (7.0, 8.0)}
#: Facet joint gap (cartilage + joint space), mm.
FACET_GAP = 1.4

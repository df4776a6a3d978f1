"""When a fallback start network runs: a run that found nothing, or whose vertebrae bunch in a small part
of the scan (``vertebra_traversal.fallback``); the runs themselves are in test_start_network_fallback.py."""
from __future__ import annotations

import math

import SimpleITK as sitk

from vertebra_traversal.fallback import height_mm, stalled


def _at(*heights_mm: float):
    return [(0.0, 0.0, z) for z in heights_mm]


def _scan(size, spacing, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    image = sitk.Image(*size, sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def test_a_run_stalls_when_its_vertebrae_span_less_than_half_the_scans_height():
    image = _scan((10, 10, 101), (1.0, 1.0, 2.0))               # 200 mm tall between the outer voxel centres
    assert height_mm(image) == 200.0
    assert stalled([], image) and stalled(_at(50.0), image) and stalled(_at(20.0, 119.0), image)
    assert not stalled(_at(20.0, 120.0), image)                  # exactly half: not stalled
    assert not stalled(_at(20.0, 121.0), image) and not stalled(_at(121.0, 60.0, 20.0), image)
    flipped = _scan((10, 10, 101), (1.0, 1.0, 2.0), (1, 0, 0, 0, 1, 0, 0, 0, -1))
    rotated = _scan((101, 10, 10), (2.0, 1.0, 1.0), (0, 1, 0, 0, 0, 1, 1, 0, 0))    # z along index i
    for other in (flipped, rotated):
        assert height_mm(other) == 200.0
        assert stalled(_at(20.0, 119.0), other) and not stalled(_at(20.0, 121.0), other)
    c, s = math.cos(math.radians(10)), math.sin(math.radians(10))
    tilted = _scan((300, 10, 101), (1.0, 1.0, 2.0), (c, 0, s, 0, 1, 0, -s, 0, c))   # 10 degrees about y
    assert height_mm(tilted) == 200.0                            # the tilt does not widen it
    one_slice = _scan((10, 10, 1), (1.0, 1.0, 2.0))            # 0 mm tall: only an empty run stalls
    assert stalled([], one_slice) and not stalled(_at(0.0), one_slice)

"""The bundled sample case of ``vertebra-traversal demo`` and of the Slicer self-test.

A thoracolumbar CT phantom (15 vertebrae) that no model was trained or evaluated on. It lives here,
free of torch, so that Slicer's self-test can generate it inside the Slicer process.
"""
from __future__ import annotations

from .config import PhantomConfig

SAMPLE_SEED = 424242
SAMPLE_CONFIG = PhantomConfig(modality="ct", fov="spine", inplane_spacing_mm=(1.5, 1.5), slice_spacing_mm=(2.0, 2.0),
                              fracture_rate=0.0, t13_rate=0.0, l6_rate=0.0, four_lumbar_rate=0.0,
                              random_orientation=False)

"""Fragments: instances far smaller than the vertebrae around them (not in the paper).

The traversal (paper §3.3) stores whatever the network segments as the next vertebra. Now and then that
is a fragment: a piece of a vertebra whose rest went to its neighbours' instances, or a piece of other
bone (a rib near its head). The label refinement (§3.4) gives a fragment a level of its own, so every
vertebra on one side of it is named a level off, and a fragment that does not reach the scan's border is
flagged complete by the edge rule. Neighbouring vertebrae differ in volume by a few per cent per level;
on 190 completely visible vertebrae of 20 training phantoms none measured less than 0.64 of the median
of its four nearest neighbours (a C7; ``benchmarks/volume_ratios.py``). The pieces of bone that the
traversals stored there away from the scan's border measured 0.07-0.33, the rib piece stored on the
demo sample 0.14.

Volumes are counted in voxels of one grid; instances are given in cranio-caudal order.
"""
from __future__ import annotations

import numpy as np

from .spine_line import drop_one_at_a_time

#: The fewest other instances that make a neighbourhood to judge by; with fewer, every instance is kept.
MIN_OTHERS = 3
#: How many other instances, nearest in cranio-caudal order, make an instance's neighbourhood.
NEIGHBOURS = 4


def volume_ratios(volumes: np.ndarray) -> np.ndarray:
    """Each instance's volume over the median volume of its ``NEIGHBOURS`` nearest others.

    Args:
        volumes: (N,) volumes (voxels or mm³), in cranio-caudal order.

    Returns:
        (N,) float: the ratios; the nearest others are those nearest in that order (the upper one
        first at equal distance), fewer at an end of the spine only when fewer exist. All 1 when
        fewer than ``MIN_OTHERS`` other instances exist.
    """
    volumes = np.asarray(volumes, dtype=float).reshape(-1)
    ratios = np.ones(len(volumes))
    if len(volumes) <= MIN_OTHERS:
        return ratios
    order = np.arange(len(volumes))
    for i, volume in enumerate(volumes):
        nearest = sorted(np.delete(order, i), key=lambda j: (abs(j - i), j))[:NEIGHBOURS]
        ratios[i] = volume / max(float(np.median(volumes[nearest])), 1e-9)
    return ratios


def fragments(volumes: np.ndarray, min_ratio: float, judged: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: the fragments, True where dropped.

    One at a time, the judged instance with the smallest :func:`volume_ratios` is dropped while that
    ratio is below ``min_ratio``, and the ratios of the rest are measured again without it (so that two
    fragments side by side do not make each other's neighbourhood). Instances not judged (``judged``
    False; ``segment`` judges neither end of the chain nor a vertebra the scan cuts, which may show any
    part of itself) are never dropped but count as neighbours. ``min_ratio`` 0 drops none.

    Raises:
        ValueError: ``min_ratio`` not in [0, 1), or ``judged`` of another length.
    """
    if not (np.isfinite(min_ratio) and 0.0 <= min_ratio < 1.0):
        raise ValueError(f"min_ratio must be in [0, 1), got {min_ratio!r}")
    volumes = np.asarray(volumes, dtype=float).reshape(-1)
    judged = np.ones(len(volumes), dtype=bool) if judged is None else np.asarray(judged, dtype=bool).reshape(-1)
    if len(judged) != len(volumes):
        raise ValueError(f"judged has {len(judged)} entries for {len(volumes)} volumes")
    if not min_ratio:
        return np.zeros(len(volumes), dtype=bool)

    def smallness(kept: np.ndarray) -> np.ndarray:  # the smallest ratio first; the unjudged never go
        return np.where(judged[kept], -volume_ratios(volumes[kept]), -np.inf)

    return drop_one_at_a_time(len(volumes), smallness, -min_ratio)

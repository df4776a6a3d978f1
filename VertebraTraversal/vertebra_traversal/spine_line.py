"""Instances beside the spine: what the traversal stored off the line of the others (not in the paper).

The traversal (paper §3.3) stores whatever the network segments as the next vertebra. Now and then that
is bone beside the spinal column, a piece of a rib near its angle, say. The label refinement (§3.4)
then gives it a level of its own, and every vertebra beyond it is named one level off. A vertebra's
centroid lies close to its neighbours' across the superior axis, so an instance whose centroid lies far
from the centroids of the instances nearest to it above and below is not a vertebra of this spine.

Positions are in mm on an isotropic grid whose axis 0 is the superior axis (the model grid, inferior ->
superior); axes 1 and 2 lie across it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

#: The fewest other instances that make a line to judge by; with fewer, every instance is kept.
MIN_OTHERS = 3
#: How many other instances on each side (above, below) give the spine's position at an instance.
PER_SIDE = 2


def spine_offsets_mm(centers_mm: np.ndarray) -> np.ndarray:
    """Each instance's distance across the superior axis from the spine line of the others.

    The line at an instance is the median (per axis) of the centroids of the ``PER_SIDE`` other instances
    nearest above it and the ``PER_SIDE`` nearest below it along axis 0 (at either end of the spine, those
    on its one side). On a straight or evenly slanted spine that is the instance's own position in its
    interior; one instance beside the line moves the median of its neighbours by at most half its distance.

    Args:
        centers_mm: (N, 3) centroids, mm, axis 0 along the superior axis.

    Returns:
        (N,) float, mm: the distance in the plane of axes 1 and 2 from each centroid to that line; all 0
        when fewer than ``MIN_OTHERS`` other instances exist.
    """
    centers = np.asarray(centers_mm, dtype=float).reshape(-1, 3)
    offsets = np.zeros(len(centers))
    if len(centers) <= MIN_OTHERS:
        return offsets
    for i, center in enumerate(centers):
        others = np.delete(centers, i, axis=0)
        rise = others[:, 0] - center[0]
        below, above = np.flatnonzero(rise < 0), np.flatnonzero(rise >= 0)
        nearest = np.concatenate([below[np.argsort(-rise[below], kind="stable")[:PER_SIDE]],
                                  above[np.argsort(rise[above], kind="stable")[:PER_SIDE]]])
        offsets[i] = float(np.linalg.norm(center[1:] - np.median(others[nearest, 1:], axis=0)))
    return offsets


def off_spine(centers_mm: np.ndarray, max_offset_mm: float) -> np.ndarray:
    """(N,) bool: the instances off the spine, True where dropped.

    One at a time, the instance farthest off the line of the others (:func:`spine_offsets_mm`) is dropped
    while that distance exceeds ``max_offset_mm`` (mm), and the distances of the rest are measured again
    without it. So two pieces of a rib side by side do not pull the line towards them and push the
    vertebrae beside them off it. ``max_offset_mm`` 0 drops none.

    Raises:
        ValueError: ``max_offset_mm`` negative or not finite.
    """
    if not (np.isfinite(max_offset_mm) and max_offset_mm >= 0):
        raise ValueError(f"max_offset_mm must be finite and >= 0, got {max_offset_mm!r}")
    centers = np.asarray(centers_mm, dtype=float).reshape(-1, 3)
    if not max_offset_mm:
        return np.zeros(len(centers), dtype=bool)
    return drop_one_at_a_time(len(centers), lambda kept: spine_offsets_mm(centers[kept]), max_offset_mm)


def drop_one_at_a_time(count: int, measure: Callable[[np.ndarray], np.ndarray], limit: float) -> np.ndarray:
    """(count,) bool, True where dropped: while the largest of ``measure(kept)`` (one value per index of
    ``kept``, the instances not yet dropped, measured among themselves alone) exceeds ``limit``, drop that
    instance (the first of equals) and measure the rest again. The spine line and the fragments
    (:mod:`.fragments`) drop this way, so that two bad instances side by side do not hide or condemn
    their neighbours."""
    dropped = np.zeros(count, dtype=bool)
    while True:
        kept = np.flatnonzero(~dropped)
        if not len(kept):
            return dropped
        values = measure(kept)
        if values.max() <= limit:
            return dropped
        dropped[kept[int(np.argmax(values))]] = True

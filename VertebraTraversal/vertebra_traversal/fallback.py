"""When a model's fallback start network or its rescue network runs, and how the second traversal's events
count on.

A model whose start network is a fallback (``start_network.use: fallback``, :mod:`.start_network`) runs
the traversal (§3.3) with its main network alone and, where that *stalls*, once more with the start
network answering the patches with an empty memory (:func:`vertebra_traversal.pipeline.segment_image`).
A model with a rescue network runs it with its start network and, where that stalls, once more with the
rescue network in the start network's place.
Not in the paper: its search runs the network with an empty memory, which a network trained by §3.6
rarely sees, so a scan of the neck alone may never start, or start on the wrong bone and stop.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

import SimpleITK as sitk

from .geometry import superior_axis

#: Receives the engine's JSON-ready events (docs/ARCHITECTURE.md, *Event stream*).
EventCallback = Callable[[Dict[str, Any]], None]

#: A main-network run whose vertebrae's centroids span less than this share of the scan's superior extent has
#: stalled (:func:`stalled`). On 100 training phantoms (60 of all fields of view, 40 of the neck) the spans of the
#: bundled CT model's runs were at least 0.62 of the scan outside the neck; 7 neck scans fell below 0.5 and the
#: start network found 32 more vertebrae in them (CT model history).
STALLED_SPAN_FRACTION = 0.5


def span_mm(centroids_lps_mm: Sequence[Sequence[float]]) -> float:
    """Distance (mm) along LPS z (superior) between the top-most and bottom-most of the (x, y, z) centroids."""
    heights = [float(c[2]) for c in centroids_lps_mm]
    return max(heights) - min(heights) if heights else 0.0


def height_mm(image: sitk.Image) -> float:
    """The scan's extent (mm) along its index axis closest to the superior axis, between the outermost voxel
    centres (:func:`~vertebra_traversal.geometry.superior_axis`; an oblique scan is not widened by its tilt)."""
    axis = superior_axis(image)
    return (image.GetSize()[axis] - 1) * image.GetSpacing()[axis]


def stalled(centroids_lps_mm: Sequence[Sequence[float]], image: sitk.Image) -> bool:
    """Whether a scan's first traversal stalled: it found no vertebra, or the centroids (LPS mm) of the
    vertebrae it reports span less than ``STALLED_SPAN_FRACTION`` of the scan's height (:func:`height_mm`):
    it started on the wrong bone and stopped. The vertebrae are those the run reports, after its label
    reading and filters (``segment --trim-ends``, ``--max-spine-offset-mm``, ``--min-volume-ratio``), so
    these options can change whether the second traversal runs."""
    return not centroids_lps_mm or span_mm(centroids_lps_mm) < STALLED_SPAN_FRACTION * height_mm(image)


class Counted:
    """An event callback that counts what it passes on, so that a second traversal's ``patch`` steps and
    ``vertebra`` indices can continue the first's (docs/ARCHITECTURE.md: both count from 1 per scan)."""

    def __init__(self, on_event: Optional[EventCallback]) -> None:
        self.on_event = on_event
        self.last = {"step": 0, "index": 0}

    def __call__(self, event: Dict[str, Any]) -> None:
        for key in self.last:
            self.last[key] = max(self.last[key], int(event.get(key, 0)))
        if self.on_event is not None:
            self.on_event(event)

    def continued(self) -> Optional[EventCallback]:
        """The callback for the second traversal: ``step`` and ``index`` moved on by the first's last ones."""
        if self.on_event is None:
            return None
        offsets, on_event = dict(self.last), self.on_event
        return lambda event: on_event({k: v + offsets[k] if k in offsets else v for k, v in event.items()})

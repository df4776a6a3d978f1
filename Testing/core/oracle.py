"""Test helpers: an exact stand-in for a trained network, built from ground truth.

The traversal is fed the ground-truth label map itself as its "image" (float VerSe ids, padded with
0), so the oracle reads from each image patch alone which vertebra every voxel belongs to. For each
patch it answers like a perfect network (paper §3.3-§3.5):

* probabilities: 1 on the voxels of the first not-yet-segmented vertebra in traversal order that are
  not in memory ("up": the most caudal by anatomy rank among the labels in the patch that have
  voxels outside memory; "down": the most cranial), 0 elsewhere;
* label value: that vertebra's anatomy regression value (0 when none);
* completeness: 1 when the vertebra is complete in the scan and at most 2 % of its total volume
  lies outside the patch, else 0.

Also the hand-built spines the tests use (boxes with known ids, gaps, lateral offsets).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from vertebra_traversal import anatomy
from vertebra_traversal.predictor import PatchPrediction

#: Largest share of a vertebra's volume that may lie outside the patch for "complete".
OUTSIDE_TOLERANCE = 0.02


@dataclass
class OraclePredictor:
    """A perfect network for label-map images (see module docstring).

    Attributes:
        direction: ``"up"`` or ``"down"``, the traversal direction the oracle was "trained" for.
        volumes: total voxel count of each vertebra id (in the whole spine, also outside the scan).
        complete_in_scan: per vertebra id, whether the scan shows it entirely.
        batch_sizes: the batch size of every call, appended as the oracle is called.
    """

    direction: str
    volumes: Mapping[int, int]
    complete_in_scan: Mapping[int, bool]
    batch_sizes: List[int] = field(default_factory=list)

    def __call__(self, images: np.ndarray, memories: np.ndarray) -> PatchPrediction:
        self.batch_sizes.append(int(images.shape[0]))
        probs = np.zeros(images.shape, dtype=np.float32)
        labels = np.zeros(images.shape[0], dtype=np.float32)
        complete = np.zeros(images.shape[0], dtype=np.float32)
        for b in range(images.shape[0]):
            ids = np.rint(images[b]).astype(np.int64)
            target = self._next_vertebra(ids, memories[b] > 0.5)
            if target is None:
                continue
            probs[b] = (ids == target) & (memories[b] <= 0.5)
            labels[b] = anatomy.vertebra(target).regression_value
            outside = 1.0 - np.count_nonzero(ids == target) / float(self.volumes[target])
            complete[b] = float(self.complete_in_scan[target] and outside <= OUTSIDE_TOLERANCE)
        return PatchPrediction(probs, labels, complete)

    def _next_vertebra(self, ids: np.ndarray, memory: np.ndarray) -> "int | None":
        present = [int(v) for v in np.unique(ids[~memory]) if anatomy.is_valid_label(int(v))]
        if not present:
            return None
        ranks = {v: anatomy.vertebra(v).rank for v in present}
        pick = max if self.direction == "up" else min
        return pick(present, key=ranks.__getitem__)


@dataclass(frozen=True)
class BoxSpine:
    """A hand-built spine: ``labels`` (z, y, x) int16 VerSe ids, axis 0 inferior -> superior;
    ``boxes`` maps each id to its (z, y, x) slices."""

    labels: np.ndarray
    boxes: Dict[int, Tuple[slice, slice, slice]]

    @property
    def volumes(self) -> Dict[int, int]:
        return {v: int(np.prod([s.stop - s.start for s in box])) for v, box in self.boxes.items()}

    def ids_bottom_up(self) -> List[int]:
        return sorted(self.boxes, key=lambda v: self.boxes[v][0].start)


def box_spine(shape: Sequence[int], ids_bottom_up: Sequence[int], height: int = 12, gap: int = 4,
              z0: int = 2, size_yx: Tuple[int, int] = (16, 18),
              offsets_yx: Sequence[Tuple[int, int]] = ()) -> BoxSpine:
    """Boxes of ``height`` voxels stacked along z from ``z0`` with ``gap`` voxels between them.

    Vertebra i sits at lateral offset ``offsets_yx[i]`` (y, x) of its lower corner (default: the
    boxes are centred in y and x). A box may extend beyond the array (a cut vertebra); ``boxes``
    keeps its full extent so that volumes count what the scan does not show.
    """
    labels = np.zeros(tuple(shape), dtype=np.int16)
    boxes: Dict[int, Tuple[slice, slice, slice]] = {}
    dy, dx = size_yx
    for i, vid in enumerate(ids_bottom_up):
        z = z0 + i * (height + gap)
        y, x = offsets_yx[i] if i < len(offsets_yx) else ((shape[1] - dy) // 2, (shape[2] - dx) // 2)
        box = (slice(z, z + height), slice(y, y + dy), slice(x, x + dx))
        boxes[int(vid)] = box
        labels[tuple(slice(max(b.start, 0), min(b.stop, n)) for b, n in zip(box, shape))] = vid
    return BoxSpine(labels, boxes)


def oracle_for(spine: BoxSpine, direction: str) -> OraclePredictor:
    """Oracle whose completeness flags follow which boxes lie entirely inside the array."""
    shape = spine.labels.shape
    complete = {v: all(0 <= s.start and s.stop <= n for s, n in zip(box, shape))
                for v, box in spine.boxes.items()}
    return OraclePredictor(direction, spine.volumes, complete)

"""The engine's event stream, read on the Slicer side (Qt-free).

``vertebra-traversal segment --events`` prints one JSON object per line (docs/ARCHITECTURE.md, "Event
stream"). :class:`EventStreamReader` turns arbitrary chunks of that output into events (robust to
lines split across chunks, to split UTF-8 sequences and to non-JSON noise); :func:`apply_event` moves
the markups ROI "Traversal patch" to every patch the traversal visits (paper §3.3) and folds each
event into a small immutable :class:`RunState` for the progress bar and status line.

Coordinates: events carry LPS millimetres (``*_lps_mm``, x/y/z); Slicer is RAS, so x and y are negated.
"""
from __future__ import annotations

import codecs
import json
import logging
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import slicer

from vertebra_traversal.formats import INCOMPLETE_SUFFIX

logger = logging.getLogger(__name__)

ROI_NAME = "Traversal patch"
#: Node attribute that marks nodes this library created (value: their role).
ROLE_ATTRIBUTE = "VertebraTraversal.role"
ROI_ROLE = "patch"


@dataclass(frozen=True)
class RunState:
    """What the module shows about a run; every event returns a new state.

    Attributes:
        fraction: progress 0..1: within a case from the ``patch`` events' ``scan_fraction`` (never going
            back), per finished case from ``progress`` events; 1 on ``result``.
        status: one line for the status label.
        vertebrae: provisional names found so far, in order found (``"T1 (incomplete)"`` when flagged);
            from the ``result`` event on, the final names (after the label refinement, top first).
        patches: number of patch positions visited.
        outputs: the ``result`` event's ``outputs`` (labels, segmentation, centroids, report paths).
        done / cancelled: the engine said ``done`` / ``cancelled``.
        error: message of an ``error`` event (or of a failed run).
        modality: the model's modality (``"ct"`` / ``"mr"``) from the ``start`` event; None before it.
        case / cases: the ``start`` event's case number (1-based) and number of cases.
    """

    fraction: float = 0.0
    status: str = "Starting"
    vertebrae: Tuple[str, ...] = ()
    patches: int = 0
    outputs: Optional[Mapping[str, str]] = None
    done: bool = False
    cancelled: bool = False
    error: Optional[str] = None
    modality: Optional[str] = None
    case: int = 1
    cases: int = 1

    @property
    def finished(self) -> bool:
        """True once the run ended in any way (done, cancelled or error)."""
        return self.done or self.cancelled or self.error is not None


class LineReader:
    """Complete text lines from a byte (or str) stream read in chunks of any size: a line or a UTF-8
    character cut between two chunks comes out whole."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, chunk: Union[bytes, str]) -> List[str]:
        """The lines (without their newline) that ``chunk`` completes; the rest waits."""
        text = self._decoder.decode(chunk) if isinstance(chunk, (bytes, bytearray)) else chunk
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        return lines

    def close(self) -> List[str]:
        """End of stream: the last line without a newline, if any."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return [rest] if rest else []


class EventStreamReader:
    """Incremental parser of the JSON-lines stream.

    ``feed`` takes any chunk (bytes or str) and returns the complete events it closes; an incomplete
    last line waits for the next chunk (or :meth:`close`). Lines that are not a JSON object with an
    ``"event"`` key are kept in :attr:`noise` (they go to the module's log).
    """

    def __init__(self) -> None:
        self._lines = LineReader()
        self.noise: List[str] = []

    def feed(self, chunk: Union[bytes, str]) -> List[Dict[str, Any]]:
        """Parse a chunk; return the events of every line it completes."""
        return self._events(self._lines.feed(chunk))

    def close(self) -> List[Dict[str, Any]]:
        """End of stream: parse what is left (a last line without a newline)."""
        return self._events(self._lines.close())

    def _events(self, lines: List[str]) -> List[Dict[str, Any]]:
        return [event for event in (self._parse(line) for line in lines) if event is not None]

    def _parse(self, line: str) -> Optional[Dict[str, Any]]:
        line = line.strip()
        if not line:
            return None
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            return event
        self.noise.append(line)
        logger.debug("engine output (not an event): %s", line)
        return None


def lps_to_ras(point: Sequence[float]) -> Tuple[float, float, float]:
    """LPS millimetres -> RAS millimetres (negate x and y)."""
    x, y, z = (float(c) for c in point)
    return -x, -y, z


def find_patch_roi(scene: "slicer.vtkMRMLScene") -> Optional["slicer.vtkMRMLMarkupsROINode"]:
    """The ROI this library created in ``scene``, or None."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLMarkupsROINode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLMarkupsROINode")
        if node.GetAttribute(ROLE_ATTRIBUTE) == ROI_ROLE:
            return node
    return None


def create_patch_roi(scene: "slicer.vtkMRMLScene", transform_id: Optional[str] = None) -> "slicer.vtkMRMLMarkupsROINode":
    """Add the "Traversal patch" ROI (locked, marked with :data:`ROLE_ATTRIBUTE`), under ``transform_id``."""
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", ROI_NAME)
    roi.SetAttribute(ROLE_ATTRIBUTE, ROI_ROLE)
    roi.CreateDefaultDisplayNodes()
    roi.SetLocked(True)
    if transform_id:
        roi.SetAndObserveTransformNodeID(transform_id)
    return roi


def remove_patch_roi(scene: "slicer.vtkMRMLScene") -> None:
    """Remove the library's ROI and its display nodes (no-op when there is none)."""
    roi = find_patch_roi(scene)
    while roi is not None:
        displays = [roi.GetNthDisplayNode(i) for i in range(roi.GetNumberOfDisplayNodes())]
        scene.RemoveNode(roi)  # first: removing a display node would modify the ROI once more
        for display in displays:
            if display is not None and scene.IsNodePresent(display):
                scene.RemoveNode(display)
        roi = find_patch_roi(scene)


def move_roi(roi: "slicer.vtkMRMLMarkupsROINode", center_lps_mm: Sequence[float], size_mm: Sequence[float]) -> None:
    """Centre (LPS mm) and size (mm, x/y/z) of the patch; exactly one ModifiedEvent per call, also
    when the traversal stays in place (the views then show that a step happened)."""
    was_modifying = roi.StartModify()
    roi.SetSize(*(float(s) for s in size_mm))
    roi.SetCenter(*lps_to_ras(center_lps_mm))
    roi.Modified()
    roi.EndModify(was_modifying)


def _status(state: RunState, tail: str) -> str:
    if state.vertebrae:
        found = f"{len(state.vertebrae)} found: {', '.join(state.vertebrae[-6:])}"
    else:
        found = "no vertebra found" if state.outputs is not None else "none found yet"
    return f"{tail} - {found}" if tail else found


def _name(record: Mapping[str, Any], key: str) -> str:
    """``"T1"``, or ``"T1 (incomplete)"`` when the record says it is not complete."""
    name = str(record.get(key, "?"))
    return name if record.get("complete", True) else f"{name} {INCOMPLETE_SUFFIX}"


def _on_patch(target: Any, event: Mapping[str, Any], state: RunState) -> RunState:
    roi = target
    if isinstance(target, slicer.vtkMRMLScene):
        roi = find_patch_roi(target) or create_patch_roi(target)
    move_roi(roi, event["center_lps_mm"], event["size_mm"])
    patches = state.patches + 1
    tail = f"patch {event.get('step', patches)} ({event.get('phase', 'search')})"
    fraction = state.fraction
    if isinstance(event.get("scan_fraction"), (int, float)):  # this case's share, short of its end
        along = min(0.99, max(0.0, float(event["scan_fraction"])))
        fraction = max(fraction, (state.case - 1 + along) / state.cases)
    return replace(state, patches=patches, fraction=fraction, status=_status(state, tail))


def _on_vertebra(event: Mapping[str, Any], state: RunState) -> RunState:
    state = replace(state, vertebrae=state.vertebrae + (_name(event, "provisional_name"),))
    return replace(state, status=_status(state, ""))


def apply_event(target: Any, event: Mapping[str, Any], state: Optional[RunState] = None) -> RunState:
    """Fold one event into the run state; a ``patch`` event moves the ROI.

    Args:
        target: a ``vtkMRMLScene`` (the ROI is found or created there) or the ROI node itself.
        event: one parsed event (docs/ARCHITECTURE.md).
        state: the previous state (None: a fresh run).

    Returns:
        The new state. Unknown events leave it unchanged.

    Raises:
        KeyError: a ``patch`` event without ``center_lps_mm`` / ``size_mm``.
    """
    state = state or RunState()
    kind = event.get("event")
    if kind == "start":
        modality = str(event["modality"]).lower() if event.get("modality") else state.modality
        case, cases = max(1, int(event.get("case", 1))), max(1, int(event.get("cases", 1)))
        status = f"Segmenting with the {event.get('modality', '')} model on {event.get('device', '')}"
        return replace(state, modality=modality, case=case, cases=cases, status=status)
    if kind == "patch":
        return _on_patch(target, event, state)
    if kind == "vertebra":
        return _on_vertebra(event, state)
    if kind == "restart":  # the first traversal stalled: its vertebrae may be replaced, the search starts over
        state = replace(state, vertebrae=())
        return replace(state, status=_status(state, f"starting again with the {event.get('network', 'start')} "
                                                    f"network ({event.get('found', 0)} found before)"))
    if kind == "progress":
        fraction = min(1.0, max(0.0, float(event.get("fraction", state.fraction))))
        return replace(state, fraction=fraction, status=_status(state, str(event.get("message", ""))))
    if kind == "result":  # the final labels replace the provisional ones
        final = tuple(_name(v, "name") for v in event.get("vertebrae", []))
        state = replace(state, fraction=1.0, outputs=dict(event.get("outputs", {})), vertebrae=final)
        return replace(state, status=_status(state, ""))
    if kind == "done":
        return replace(state, done=True, status=_status(state, f"done in {event.get('seconds', '?')} s"))
    if kind == "error":
        return replace(state, error=str(event.get("message", "unknown error")))
    if kind == "cancelled":
        return replace(state, cancelled=True, status="Cancelled")
    return state

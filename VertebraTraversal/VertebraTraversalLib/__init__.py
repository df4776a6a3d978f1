"""Qt-free Slicer-side library of the Vertebra Traversal module.

Everything that touches MRML lives here and takes the scene (and logic objects) as arguments, so it
runs - and is tested - with the ``slicer-core`` wheel in plain Python as well as inside Slicer. It
imports slicer MRML classes, vtk and numpy, and the core package ``vertebra_traversal``; never qt,
ctk or ``slicer.app``.
"""
from .events import (ROI_NAME, EventStreamReader, RunState, apply_event, create_patch_roi, find_patch_roi,
                     lps_to_ras, remove_patch_roi)
from .exporting import export_segmentation_case, segment_assignments, warnings_collected
from .process import RunConfig, SegmentationRun
from .results import build_results_table
from .segmentation import (IncompleteStyle, build_segmentation_node, other_reading_offered, segment_name, segment_tag,
                           switch_reading, terminology_entry)
from .volumes import load_volume, read_volume_into, same_geometry, write_volume

__all__ = [
    "ROI_NAME", "EventStreamReader", "RunState", "apply_event", "create_patch_roi", "find_patch_roi", "lps_to_ras",
    "remove_patch_roi", "export_segmentation_case", "segment_assignments", "warnings_collected", "RunConfig",
    "SegmentationRun",
    "build_results_table",
    "IncompleteStyle", "build_segmentation_node", "other_reading_offered", "segment_name", "segment_tag",
    "switch_reading", "terminology_entry",
    "load_volume", "read_volume_into", "same_geometry", "write_volume",
]

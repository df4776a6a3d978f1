"""Helpers of the Slicer-side tests (real MRML from the slicer-core wheel): a scene with the logic
objects a module gets from the application, and small volumes/engine outputs with exactly known
content. A uniquely named module (not conftest) so that test folders never shadow each other."""
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from vertebra_traversal import anatomy

MODULE_DIR = Path(__file__).resolve().parents[2] / "VertebraTraversal"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))  # Slicer puts the module folder on sys.path the same way

import slicer  # noqa: E402
import slicer.util  # noqa: E402
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_ERROR)

#: Test grid: numpy (z, y, x) shape, spacing (x, y, z) mm, RAS origin of voxel 0.
SHAPE_ZYX = (10, 8, 6)
SPACING = (1.5, 1.0, 2.0)
ORIGIN_RAS = (10.0, 20.0, 30.0)
#: Vertebrae of the synthetic label map: VerSe id -> (z, y, x) box; T12, L1 and the incomplete L2.
BOXES = {19: (slice(6, 9), slice(2, 6), slice(1, 5)),
         20: (slice(3, 6), slice(2, 6), slice(1, 5)),
         21: (slice(0, 2), slice(2, 6), slice(1, 5))}
INCOMPLETE = {21}


def new_mrml() -> "Mrml":
    """A fresh scene with application, colour and segmentations logic, as Slicer sets them up."""
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)
    app.SetModuleLogic("Colors", colors)
    seg_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    seg_logic.SetMRMLScene(scene)
    seg_logic.SetMRMLApplicationLogic(app)
    return Mrml(scene, app, seg_logic)


@dataclass
class Mrml:
    scene: "slicer.vtkMRMLScene"
    app: "slicer.vtkSlicerApplicationLogic"
    seg_logic: "slicer.vtkSlicerSegmentationsModuleLogic"

    def node_ids(self) -> Tuple[str, ...]:
        return tuple(self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes()))


def label_array(boxes: Dict[int, Sequence[slice]] = BOXES) -> np.ndarray:
    out = np.zeros(SHAPE_ZYX, np.uint8)
    for label, box in boxes.items():
        out[tuple(box)] = label
    return out


def add_volume(scene, array_zyx: np.ndarray, name: str = "ct", node_class: str = "vtkMRMLScalarVolumeNode",
               spacing=SPACING, origin=ORIGIN_RAS):
    """A volume node with identity IJK-to-RAS directions from a numpy (z, y, x) array."""
    image = vtk.vtkImageData()
    image.SetDimensions(*reversed(array_zyx.shape))
    image.AllocateScalars(numpy_support.get_vtk_array_type(array_zyx.dtype), 1)
    image.GetPointData().GetScalars().DeepCopy(numpy_support.numpy_to_vtk(np.ascontiguousarray(array_zyx).ravel()))
    node = scene.AddNewNodeByClass(node_class, name)
    node.SetAndObserveImageData(image)
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin)
    node.CreateDefaultDisplayNodes()
    return node


def segment_mask(node, segment_id: str) -> np.ndarray:
    """A segment's voxels as a bool (z, y, x) array on the test grid (its internal labelmap may be cropped)."""
    array = slicer.util.arrayFromSegmentInternalBinaryLabelmap(node, segment_id)
    i0, _, j0, _, k0, _ = node.GetBinaryLabelmapInternalRepresentation(segment_id).GetExtent()
    mask = np.zeros(SHAPE_ZYX, bool)
    value = node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    mask[k0:k0 + array.shape[0], j0:j0 + array.shape[1], i0:i0 + array.shape[2]] = array == value
    return mask


def ct_array() -> np.ndarray:
    """Bone-like values where the vertebrae are, soft tissue elsewhere (int16 HU)."""
    return np.where(label_array() > 0, 700, 40).astype(np.int16)


def lps_image(array_zyx: np.ndarray) -> sitk.Image:
    """The same grid as :func:`add_volume` seen from ITK: LPS directions diag(-1, -1, 1)."""
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(SPACING)
    image.SetOrigin((-ORIGIN_RAS[0], -ORIGIN_RAS[1], ORIGIN_RAS[2]))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    return image


def write_engine_outputs(folder: Path, labels_zyx: np.ndarray = None, rib_labels: Sequence = (),
                         own_labels: Sequence = ()) -> Dict[str, Path]:
    """What ``segment`` writes that the library reads: the label map and the report JSON; ``rib_labels`` and
    ``own_labels``: the vertebrae's ``rib_label`` and ``own_label`` top first (none given: the key left out,
    as in reports from before it)."""
    labels_zyx = label_array() if labels_zyx is None else labels_zyx
    folder.mkdir(parents=True, exist_ok=True)
    labels_path = folder / "input_seg-vert_msk.nii.gz"
    sitk.WriteImage(lps_image(labels_zyx), str(labels_path))
    present = sorted(set(np.unique(labels_zyx).tolist()) - {0})
    entries = [{"order": i + 1, "label": label, "name": anatomy.name_of(label) if anatomy.is_valid_label(label) else "?",
                "complete": label not in INCOMPLETE, "completeness_probability": 0.2 if label in INCOMPLETE else 0.9,
                "at_scan_edge": label in INCOMPLETE,
                "label_likelihood": 0.75, "label_confidence": 0.5, "label_value": float(label - 4),
                "volume_mm3": 1.0, "centroid_lps_mm": [0.0, 0.0, 0.0]} for i, label in enumerate(present)]
    for key, values in (("rib_label", rib_labels), ("own_label", own_labels)):
        for entry, value in zip(entries, values):
            entry[key] = value
    report_path = folder / "input_report.json"
    report_path.write_text(json.dumps({"format": "vertebra-traversal-report", "version": 1, "vertebrae": entries}))
    return {"labels": labels_path, "report": report_path}

"""Volume nodes <-> files through Slicer's own storage nodes (Qt-free).

Slicer volumes live in RAS; ``vtkMRMLVolumeArchetypeStorageNode`` converts to and from the files'
LPS, so a volume written here and read with SimpleITK has the same voxels, spacing and physical
position. Storage nodes used here are never added to the scene (the scene stays as it was).
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Optional, Union

import numpy as np
import slicer
import vtk

from vertebra_traversal.imageio import InputError

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def ijk_to_ras(volume_node: "slicer.vtkMRMLVolumeNode") -> np.ndarray:
    """4x4 voxel (i, j, k) -> RAS mm matrix of a volume node (its own frame, no parent transform)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def same_geometry(a: "slicer.vtkMRMLVolumeNode", b: "slicer.vtkMRMLVolumeNode", tol_mm: float = 1e-3) -> bool:
    """True when both volumes have the same dimensions and IJK-to-RAS matrix (within ``tol_mm``)."""
    if a.GetImageData() is None or b.GetImageData() is None:
        return False
    return (a.GetImageData().GetDimensions() == b.GetImageData().GetDimensions()
            and np.allclose(ijk_to_ras(a), ijk_to_ras(b), atol=tol_mm))


def write_volume(volume_node: "slicer.vtkMRMLVolumeNode", path: PathLike) -> Path:
    """Write a volume (or label map) node to ``path`` (e.g. ``.nii.gz``) via a temporary name + rename.

    Raises:
        InputError: the node has no image data, or the writer failed.
    """
    path = Path(path)
    if volume_node is None or volume_node.GetImageData() is None:
        raise InputError(f"{path}: volume {getattr(volume_node, 'GetName', lambda: None)()!r} holds no image data")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".nii.gz"
    tmp = str(path.parent / f".tmp-{uuid.uuid4().hex}{suffix}")  # not created beforehand: no writer warning
    try:
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(tmp)
        storage.SetUseCompression(True)
        if not storage.WriteData(volume_node):
            raise InputError(f"{path}: could not write volume {volume_node.GetName()!r}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_volume_into(node: "slicer.vtkMRMLVolumeNode", path: PathLike) -> "slicer.vtkMRMLVolumeNode":
    """Fill ``node`` (scalar or label map volume, in a scene or not) from a file.

    Raises:
        InputError: the file is missing or cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if isinstance(node, slicer.vtkMRMLLabelMapVolumeNode):
        storage.SetSingleFile(True)
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise InputError(f"{path}: cannot read volume")
    return node


def load_volume(scene: "slicer.vtkMRMLScene", path: PathLike, name: Optional[str] = None,
                labelmap: bool = False) -> "slicer.vtkMRMLVolumeNode":
    """Add a scalar (or label map) volume node read from ``path`` to ``scene``; removed again on failure.

    Raises:
        InputError: see :func:`read_volume_into`.
    """
    path = Path(path)
    node_class = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(node_class, name or path.name.split(".")[0])
    try:
        read_volume_into(node, path)
    except InputError:
        scene.RemoveNode(node)
        raise
    node.CreateDefaultDisplayNodes()
    return node

"""End to end, as a user in Slicer: CT -> volume node -> real ``vertebra-traversal segment --events``
child process -> ROI moves -> segmentation node -> export for training -> the trainer's data loader
reads the case. The same scenario runs inside Slicer as VertebraTraversalTest.

``test_real_engine_*`` use a tiny random-weight checkpoint (Testing/core/model_factory.py) on a
synthetic CT with a bony column: what the network finds is arbitrary (so only the chain is checked:
events, ROI, node, tags, export, loader; the voxel geometry is checked exactly in test_process.py).
``test_phantom_*`` uses the demo's sample phantom and the bundled CT model, and checks that what it
finds lies on phantom vertebrae.
"""
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import vtk
from slicer_testing import Mrml
from VertebraTraversalLib import events, exporting, load_volume, segment_tag
from VertebraTraversalLib.process import RunConfig, SegmentationRun

from vertebra_traversal import anatomy, dataset
from vertebra_traversal.export import parse_segment_name
from vertebra_traversal.imageio import read_label_map, write_image_atomic
from vertebra_traversal.models import BUNDLED
from vertebra_traversal.normalization import NormalizationSpec
from vertebra_traversal.phantom import generate_case
from vertebra_traversal.phantom.sample import SAMPLE_CONFIG
from vertebra_traversal.training.data import find_cases, prepare_case

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from model_factory import tiny_model  # noqa: E402
from test_rescue_network import MR_NECK_SEED  # noqa: E402

TIMEOUT_S = 900


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt")


def _column_ct(path: Path) -> Path:
    """60 x 60 x 120 voxels of 2 x 2 x 2.5 mm; bone (600 HU) in a column, LPS storage."""
    array = np.random.default_rng(1).normal(-50, 30, size=(120, 60, 60)).astype(np.float32)
    array[:, 10:30, 30:50] = 600
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 2.5))
    image.SetOrigin((-60.0, 40.0, -150.0))
    return write_image_atomic(image, path)


def _start(mrml: Mrml, volume, model: str, tmp_path: Path, start_network=None, rescue_network=True):
    run = SegmentationRun(mrml.scene, volume, mrml.seg_logic,
                          RunConfig(python=sys.executable, model=model, device="cpu", work_dir=tmp_path,
                                    start_network=start_network, rescue_network=rescue_network))
    run.start()
    moves = []
    events.find_patch_roi(mrml.scene).AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *a: moves.append(1))
    return run, moves


def _check_segments(node):
    """Every segment: a vertebra name, tags that agree with it, anatomy colour; cranio-caudal order.

    Returns {label: flagged incomplete}, in segment order."""
    segmentation = node.GetSegmentation()
    flags = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        label, flagged = parse_segment_name(segment.GetName())
        assert segment_tag(segment, "VertebraTraversal.labelId") == str(label)
        assert segment_tag(segment, "VertebraTraversal.complete") == ("false" if flagged else "true")
        assert segment.GetColor() == pytest.approx(anatomy.vertebra(label).color)
        flags[label] = flagged
    labels = list(flags)
    assert labels == sorted(labels, key=lambda label: anatomy.vertebra(label).rank)
    return flags


def _export_and_load(mrml, node, volume, tmp_path, labels):
    """Export, read back with the core readers and the trainer's loader; return the label array (z, y, x)."""
    files = exporting.export_segmentation_case(mrml.scene, node, volume, tmp_path / "data", "e2e", mrml.seg_logic)
    exported = sitk.GetArrayFromImage(read_label_map(files.labels, reference=sitk.ReadImage(str(files.image))))
    assert sorted(set(np.unique(exported).tolist()) - {0}) == sorted(labels)
    found = find_cases([tmp_path / "data"], "ct")
    assert [c.case_id for c in found] == ["e2e"]
    prepared = prepare_case(found[0], tmp_path / "cache", 4.0, NormalizationSpec(kind="ct"))
    info = dataset.read_case_info(files)
    assert dict(prepared.index.complete) == {r.label: r.complete for r in info.vertebrae}
    assert set(prepared.index.complete) == set(labels)
    return exported


def test_real_engine_run_to_training_case(mrml, tmp_path, tiny):
    image_path = _column_ct(tmp_path / "column_ct.nii.gz")
    volume = load_volume(mrml.scene, image_path, "column")
    run, moves = _start(mrml, volume, str(tiny), tmp_path)
    state = run.wait(TIMEOUT_S)
    assert state.done and run.returncode == 0, (state, run.log[-20:])
    assert len(moves) == state.patches > 0 and events.find_patch_roi(mrml.scene) is None
    labels = list(_check_segments(run.segmentation_node))
    assert labels, "the tiny model found nothing; the chain after it was not exercised"
    exported = _export_and_load(mrml, run.segmentation_node, volume, tmp_path, labels)
    assert exported.shape == (120, 60, 60)


def test_real_engine_takes_the_start_network_choice(mrml, tmp_path, tiny):
    volume = load_volume(mrml.scene, _column_ct(tmp_path / "column_ct.nii.gz"), "column")
    before = mrml.node_ids()
    refused, _ = _start(mrml, volume, str(tiny), tmp_path, start_network="fallback")
    state = refused.wait(TIMEOUT_S)        # the tiny model has one network: the child refuses, names the file
    assert refused.returncode == 2 and "start network" in state.error and tiny.name in state.error, state.error
    assert refused.segmentation_node is None and mrml.node_ids() == before
    plain, _ = _start(mrml, volume, str(tiny), tmp_path)
    off, _ = _start(mrml, volume, str(tiny), tmp_path, start_network="off")   # "off" is the tiny model's own use
    for run in (plain, off):
        assert run.wait(TIMEOUT_S).done and run.returncode == 0, run.log[-20:]
    plain_segments, off_segments = (run.segmentation_node.GetSegmentation() for run in (plain, off))
    assert [plain_segments.GetNthSegment(i).GetName() for i in range(plain_segments.GetNumberOfSegments())] == \
        [off_segments.GetNthSegment(i).GetName() for i in range(off_segments.GetNumberOfSegments())]


def test_real_engine_takes_the_rescue_network_choice(mrml, tmp_path):
    """The bundled MR model on a neck scan its start network never starts (``Testing/core/test_rescue_network.py``):
    its rescue network finds the bodies; left out, the run finds none."""
    case = generate_case(MR_NECK_SEED, replace(SAMPLE_CONFIG, fov="neck", modality="mr"))
    volume = load_volume(mrml.scene, write_image_atomic(case.image, tmp_path / "neck_mr.nii.gz"), "neck")
    runs = {rescue: _start(mrml, volume, "mr", tmp_path, rescue_network=rescue)[0] for rescue in (True, False)}
    for run in runs.values():
        assert run.wait(TIMEOUT_S).done and run.returncode == 0, run.log[-20:]
    found = {rescue: run.segmentation_node.GetSegmentation().GetNumberOfSegments() for rescue, run in runs.items()}
    assert found[True] >= 4 and found[False] == 0, found


def test_real_engine_refuses_a_blank_volume_by_its_name(mrml, tmp_path, tiny):
    volume = load_volume(mrml.scene, _column_ct(tmp_path / "column_ct.nii.gz"), "blank scan")
    image = vtk.vtkImageData()
    image.SetDimensions(10, 9, 8)
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    image.GetPointData().GetScalars().Fill(0.0)  # a blank scan: the engine refuses it
    volume.SetAndObserveImageData(image)
    before = mrml.node_ids()
    run, _ = _start(mrml, volume, str(tiny), tmp_path)
    state = run.wait(TIMEOUT_S)
    assert run.returncode != 0 and not state.done
    assert "volume 'blank scan'" in state.error and "constant" in state.error, state.error
    assert "input.nii.gz" not in state.error
    assert mrml.node_ids() == before and run.segmentation_node is None


def test_real_engine_cancel_restores_the_scene(mrml, tmp_path, tiny):
    volume = load_volume(mrml.scene, _column_ct(tmp_path / "column_ct.nii.gz"), "column")
    before = (mrml.node_ids(), sorted(p.name for p in tmp_path.iterdir()))
    run, _ = _start(mrml, volume, str(tiny), tmp_path)
    deadline = time.monotonic() + TIMEOUT_S
    while run.poll().patches < 2 and run.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.running, (run.state, run.log[-20:])
    assert 0 < run.state.fraction < 1  # the engine's patches say how far along the scan it is
    assert run.request_cancel().status == "Cancelling"  # as the module's Cancel: returns at once
    state = run.wait(TIMEOUT_S)
    assert state.cancelled and run.returncode == 130  # the engine stopped between two steps (SIGTERM)
    assert (mrml.node_ids(), sorted(p.name for p in tmp_path.iterdir())) == before
    assert run.segmentation_node is None


def test_phantom_with_bundled_model_to_training_case(mrml, tmp_path):
    from vertebra_traversal.phantom.sample import SAMPLE_CONFIG, SAMPLE_SEED
    from vertebra_traversal.phantom import generate_case
    assert BUNDLED["ct"].exists(), "the bundled CT model is part of the package"
    case = generate_case(SAMPLE_SEED, SAMPLE_CONFIG, case_id="e2e")
    volume = load_volume(mrml.scene, write_image_atomic(case.image, tmp_path / "phantom_ct.nii.gz"), "phantom")
    run, moves = _start(mrml, volume, "ct", tmp_path)
    state = run.wait(TIMEOUT_S)
    assert state.done, (state, run.log[-20:])
    assert len(moves) == state.patches > 0
    flagged = _check_segments(run.segmentation_node)
    labels = list(flagged)
    assert labels
    table = run.results_table.GetTable()  # the results table lists the same vertebrae, top first
    assert [table.GetValue(r, 0).ToString() for r in range(table.GetNumberOfRows())] == \
        [anatomy.name_of(label) for label in labels]
    # the bundled CT model carries a fitted label confidence, and the table says so
    assert run.results_table.GetColumnDescription("Label confidence").startswith("The probability that this label")
    # one row at most is marked where the ribs end (none where the end of the ribs is not in view)
    assert table.GetColumnByName("Ribs end here") is not None
    marks = [table.GetValueByName(r, "Ribs end here").ToString() for r in range(table.GetNumberOfRows())]
    assert set(marks) <= {"yes", ""} and marks.count("yes") <= 1
    exported = _export_and_load(mrml, run.segmentation_node, volume, tmp_path, labels)
    truth = sitk.GetArrayFromImage(case.labels)
    # what was found is spine: the exported voxels lie on the phantom's vertebrae far above chance (their
    # fraction of the spine's bounding box) and cover most of them; every vertebra found lies on bone
    # (> 200 HU) above chance, and every one flagged complete on vertebrae above chance. Fragments flagged
    # incomplete are kept and flagged (paper §3.5) and may be other bone. The bundled model is far from
    # the targets and flags too many vertebrae incomplete (model card); on this sample it measured 67 % on
    # vertebrae against 18 % chance, covered 76 % of them, 51-77 % per complete-flagged vertebra, and
    # 51-99 % bone per vertebra against 15 % chance (its two top fragments, flagged incomplete, are 99 %
    # bone at the field of view's edge but no vertebra).
    z, y, x = np.nonzero(truth)
    box = tuple(slice(a.min(), a.max() + 1) for a in (z, y, x))
    chance = np.mean(truth[box] > 0)
    assert np.mean(truth[exported > 0] > 0) > 2 * chance
    assert np.mean(exported[truth > 0] > 0) > 0.5
    hu = sitk.GetArrayFromImage(case.image)
    bone_chance = np.mean(hu[box] > 200)
    for label in labels:
        inside = exported == label
        assert np.mean(hu[inside] > 200) > bone_chance, anatomy.name_of(label)
        if not flagged[label]:
            assert np.mean(truth[inside] > 0) > chance, anatomy.name_of(label)

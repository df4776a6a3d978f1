"""SegmentationRun with real child processes: a scripted engine (the run's input) that speaks the
event protocol, succeeds, fails, or runs until cancelled."""
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from slicer_testing import add_volume, ct_array, label_array, segment_mask
from VertebraTraversalLib import events
from VertebraTraversalLib.process import RunConfig, SegmentationRun

FAKE_ENGINE = r'''
import json, os, signal, subprocess, sys, time
import numpy as np
import SimpleITK as sitk

def emit(obj, split=False):
    line = json.dumps(obj) + "\n"
    if split:  # a line delivered in two writes
        sys.stdout.write(line[:7]); sys.stdout.flush(); time.sleep(0.05)
        line = line[7:]
    sys.stdout.write(line); sys.stdout.flush()

args = sys.argv[1:]
assert args[0] == "segment" and "--events" in args, args
source, out = args[1], args[args.index("-o") + 1]
mode = os.environ["FAKE_MODE"]
emit({"event": "start", "input": source, "case": 1, "cases": 1, "model": "fake", "modality": "CT",
      "device": "cpu", "patch_size_mm": [9, 8, 20]})
print("library noise on stdout", flush=True)
sys.stderr.write("engine: working\n"); sys.stderr.flush()
note = "engine: Wirbel gefunden: \u00e4\n".encode("utf-8")
cut = note.index(b"\xc3") + 1  # a line, and its one two-byte character, in two writes
sys.stderr.buffer.write(note[:cut]); sys.stderr.flush(); time.sleep(0.05)
sys.stderr.buffer.write(note[cut:]); sys.stderr.flush()
if mode == "error":
    emit({"event": "error", "message": source + ": input is not a spine"}); sys.exit(1)
if mode == "forever":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stubborn child: only SIGKILL ends it
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    sys.stderr.write("grandchild %d\n" % child.pid); sys.stderr.flush()
    step = 0
    while True:
        step += 1
        emit({"event": "patch", "step": step, "center_lps_mm": [0, 0, step], "size_mm": [9, 8, 20]})
        time.sleep(0.02)
image = sitk.ReadImage(source)
array = sitk.GetArrayFromImage(image)
labels = np.zeros(array.shape, np.uint8)
for label, (z0, z1) in {19: (6, 9), 20: (3, 6), 21: (0, 2)}.items():
    labels[z0:z1][array[z0:z1] > 300] = label
for step, z in enumerate((-28.0, -20.0, -12.0), start=1):
    emit({"event": "patch", "step": step, "center_lps_mm": [-13.0, -23.0, z], "size_mm": [9, 8, 20],
          "phase": "search"}, split=step == 2)
for index, (label, name) in enumerate(((21, "L2"), (20, "L1"), (19, "T12")), start=1):
    emit({"event": "vertebra", "index": index, "provisional_label": label, "provisional_name": name,
          "label_value": label - 4.0, "completeness": 0.3 if label == 21 else 0.9, "complete": label != 21,
          "center_lps_mm": [0, 0, 0]})
if mode == "badlabels":  # an id no vertebra has: the library must refuse the result
    labels[0, 0, 0] = 99
os.makedirs(out)
result = sitk.GetImageFromArray(labels); result.CopyInformation(image)
paths = {"labels": os.path.join(out, "input_seg-vert_msk.nii.gz"), "report": os.path.join(out, "input_report.json")}
sitk.WriteImage(result, paths["labels"])
entries = [{"label": l, "name": n, "complete": l != 21, "completeness_probability": 0.3 if l == 21 else 0.9,
            "label_likelihood": 0.8} for l, n in ((19, "T12"), (20, "L1"), (21, "L2"))]
json.dump({"format": "vertebra-traversal-report", "version": 1, "vertebrae": entries}, open(paths["report"], "w"))
emit({"event": "result", "input": source, "outputs": paths, "vertebrae": entries})
emit({"event": "done", "cases": 1, "seconds": 0.1})
'''


@pytest.fixture
def engine(tmp_path):
    folder = tmp_path / "fake_pkg"
    folder.mkdir()
    (folder / "fake_engine.py").write_text(FAKE_ENGINE)

    def config(mode):
        return RunConfig(python=sys.executable, command=("fake_engine", "segment"), work_dir=tmp_path,
                         terminate_timeout_s=0.5, env=(("FAKE_MODE", mode), ("PYTHONPATH", str(folder))))
    return config


def _work_dirs(tmp_path):
    return sorted(p.name for p in tmp_path.glob("VertebraTraversal-*"))


def test_successful_run_builds_the_segmentation_and_cleans_up(mrml, tmp_path, engine):
    volume = add_volume(mrml.scene, ct_array())
    run = SegmentationRun(mrml.scene, volume, mrml.seg_logic, engine("ok"))
    descriptors = _open_descriptors()
    run.start()
    assert events.find_patch_roi(mrml.scene) is not None
    seen = []
    state = run.wait(timeout_s=60, on_state=seen.append)
    assert state.done and state.error is None, (state, run.log)
    assert seen and not any(s.finished for s in seen)  # "finished" only once the node exists
    assert state.patches == 3 and state.vertebrae == ("T12", "L1", "L2 (incomplete)")   # the result's, top first
    assert run.returncode == 0 and events.find_patch_roi(mrml.scene) is None
    node = run.segmentation_node
    seg = node.GetSegmentation()
    assert [seg.GetNthSegment(i).GetName() for i in range(3)] == ["T12", "L1", "L2 (incomplete)"]
    for index, label in enumerate((19, 20, 21)):  # the child segmented what the library wrote for it
        np.testing.assert_array_equal(segment_mask(node, seg.GetNthSegmentID(index)), label_array() == label)
    assert "engine: working" in run.log and "library noise on stdout" in run.log
    assert "engine: Wirbel gefunden: \u00e4" in run.log  # whole, though it came in two pieces
    table = run.results_table.GetTable()  # the report as a table, top first
    assert [table.GetValue(r, 0).ToString() for r in range(table.GetNumberOfRows())] == ["T12", "L1", "L2"]
    assert _work_dirs(tmp_path) == []
    assert _open_descriptors() == descriptors  # the child's pipes are closed, not leaked


@pytest.mark.parametrize("mode, error, code", [
    ("error", "engine exited with code 1: volume 'ct': input is not a spine", 1),  # not our temporary copy
    ("badlabels", "could not load the result: ", 0),  # the engine's map holds id 99: the library refuses it
])
def test_a_failed_run_is_reported_and_leaves_the_scene_alone(mrml, tmp_path, engine, mode, error, code):
    volume = add_volume(mrml.scene, ct_array())
    before = mrml.node_ids()
    run = SegmentationRun(mrml.scene, volume, mrml.seg_logic, engine(mode))
    run.start()
    state = run.wait(timeout_s=60)
    assert state.error.startswith(error) and run.returncode == code, state.error
    assert mode == "error" or "99" in state.error
    assert run.segmentation_node is None and run.results_table is None
    assert mrml.node_ids() == before and _work_dirs(tmp_path) == []


def test_cancel_before_start_changes_nothing(mrml, engine):
    run = SegmentationRun(mrml.scene, add_volume(mrml.scene, ct_array()), mrml.seg_logic, engine("ok"))
    state = run.cancel()
    assert state is run.state and not state.cancelled and not state.finished and run.returncode is None
    assert run.request_cancel() is state


def _open_descriptors() -> int:
    """File descriptors open in this process (Linux; -1 where /proc is missing)."""
    fds = Path("/proc/self/fd")
    return len(list(fds.iterdir())) if fds.is_dir() else -1


def _dead(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        return "\nState:\tZ" in status.read_text()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _stubborn_run(mrml, engine, patches):
    """(scene node ids before, a started run of the engine that ignores SIGTERM, polled until it
    reported ``patches`` patch positions)."""
    volume = add_volume(mrml.scene, ct_array())
    before = mrml.node_ids()
    run = SegmentationRun(mrml.scene, volume, mrml.seg_logic, engine("forever"))
    run.start()
    deadline = time.monotonic() + 60
    while run.poll().patches < patches and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.state.patches >= patches and run.running
    return before, run


@pytest.mark.skipif(os.name == "nt", reason="process-group signals; Windows uses taskkill /T")
def test_cancel_ends_child_and_grandchild_and_restores_the_scene(mrml, tmp_path, engine):
    before, run = _stubborn_run(mrml, engine, patches=5)
    grandchild = int(next(line for line in run.log if line.startswith("grandchild")).split()[1])
    descriptors = _open_descriptors()
    state = run.cancel()
    assert _open_descriptors() == descriptors - 2  # stdout and stderr of the child
    assert state.cancelled and state.finished and not run.running
    assert run.returncode == -9  # it ignored SIGTERM: SIGKILL after the grace period
    deadline = time.monotonic() + 5
    while not _dead(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _dead(grandchild)
    assert mrml.node_ids() == before and run.segmentation_node is None and _work_dirs(tmp_path) == []
    assert run.poll() is state  # nothing happens after a cancel


@pytest.mark.skipif(os.name == "nt", reason="process-group signals; Windows uses taskkill /T")
def test_request_cancel_returns_at_once_and_polling_ends_the_run(mrml, tmp_path, engine):
    """The GUI's Cancel: nothing waits; the stubborn child (it ignores SIGTERM) is still running when
    request_cancel returns, and polling kills it after the grace period and restores the scene."""
    before, run = _stubborn_run(mrml, engine, patches=3)
    state = run.request_cancel()
    assert state.status == "Cancelling" and not state.finished and run.running and run.returncode is None
    patches = state.patches
    assert run.request_cancel() is state  # a second click changes nothing
    state = run.wait(timeout_s=30)  # polling, as the module's timer does
    assert state.cancelled and state.status == "Cancelled" and run.returncode == -9
    assert state.patches == patches  # events after the request are not applied
    assert mrml.node_ids() == before and run.segmentation_node is None and _work_dirs(tmp_path) == []

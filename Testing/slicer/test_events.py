"""Event stream -> ROI moves and run state, on a real MRML scene."""
import json

import pytest
import vtk
from VertebraTraversalLib import events


def _lines(*objects) -> str:
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects)


def test_reader_handles_split_lines_split_utf8_and_noise():
    reader = events.EventStreamReader()
    text = _lines({"event": "progress", "fraction": 0.5, "message": "Wirbel gefunden: ä"}) + \
        "Warning: some library chatter\n" + '{"not": "an event"}\n[1, 2]\n' + '{"event": "done", "seconds": 1.5}'
    data = text.encode("utf-8")
    split_in_umlaut = data.index("ä".encode("utf-8")) + 1  # cut between the two bytes of "ä"
    got = reader.feed(data[:10]) + reader.feed(data[10:split_in_umlaut]) + reader.feed(data[split_in_umlaut:])
    assert got == [{"event": "progress", "fraction": 0.5, "message": "Wirbel gefunden: ä"}]
    assert reader.close() == [{"event": "done", "seconds": 1.5}]
    assert reader.noise == ["Warning: some library chatter", '{"not": "an event"}', "[1, 2]"]


def test_line_reader_joins_lines_and_characters_cut_between_chunks():
    reader = events.LineReader()
    data = "first ä\nsecond\nlast".encode("utf-8")
    cut = data.index("ä".encode("utf-8")) + 1
    assert reader.feed(data[:cut]) == []
    assert reader.feed(data[cut:]) == ["first ä", "second"]
    assert reader.close() == ["last"] and reader.close() == []


def test_reader_accepts_str_chunks():
    reader = events.EventStreamReader()
    assert reader.feed('{"event": "can') == []
    assert reader.feed('celled"}\n') == [{"event": "cancelled"}]


def test_lps_to_ras_negates_x_and_y():
    assert events.lps_to_ras([1.0, -2.0, 3.0]) == (-1.0, 2.0, 3.0)


def test_every_patch_event_moves_the_roi_once(mrml):
    roi = events.create_patch_roi(mrml.scene)
    moves = []
    roi.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *args: moves.append(1))
    centers = [[10.0, 20.0, 30.0], [10.0, 20.0, 45.5], [10.0, 20.0, 45.5], [-4.0, 21.0, 60.0]]  # one repeat
    state = None
    for step, center in enumerate(centers, start=1):
        state = events.apply_event(roi, {"event": "patch", "step": step, "center_lps_mm": center,
                                         "size_mm": [128.0, 96.0, 64.0], "phase": "search"}, state)
    assert len(moves) == len(centers)
    center_ras = [0.0, 0.0, 0.0]
    roi.GetCenter(center_ras)
    assert center_ras == pytest.approx([4.0, -21.0, 60.0])
    assert roi.GetSize() == pytest.approx((128.0, 96.0, 64.0))
    assert state.patches == 4 and "patch 4 (search)" in state.status


def test_patch_on_a_scene_creates_one_roi_and_removal_restores_the_scene(mrml):
    before = mrml.node_ids()
    state = events.apply_event(mrml.scene, {"event": "patch", "step": 1, "center_lps_mm": [1, 2, 3], "size_mm": [8, 8, 8]})
    events.apply_event(mrml.scene, {"event": "patch", "step": 2, "center_lps_mm": [1, 2, 9], "size_mm": [8, 8, 8]}, state)
    rois = mrml.scene.GetNodesByClass("vtkMRMLMarkupsROINode")
    assert rois.GetNumberOfItems() == 1
    roi = events.find_patch_roi(mrml.scene)
    assert roi.GetName() == events.ROI_NAME
    center = [0.0, 0.0, 0.0]
    roi.GetCenter(center)
    assert center == pytest.approx([-1, -2, 9])
    events.remove_patch_roi(mrml.scene)
    assert mrml.node_ids() == before


def test_state_follows_the_run(mrml):
    roi = events.create_patch_roi(mrml.scene)
    stream = [
        {"event": "start", "input": "x.nii.gz", "case": 1, "cases": 1, "model": "ct.pt", "modality": "CT",
         "device": "cpu", "patch_size_mm": [128, 128, 128]},
        {"event": "vertebra", "index": 1, "provisional_label": 20, "provisional_name": "L1", "label_value": 20.1,
         "completeness": 0.9, "complete": True, "center_lps_mm": [0, 0, 0]},
        {"event": "vertebra", "index": 2, "provisional_label": 19, "provisional_name": "T12", "label_value": 19.2,
         "completeness": 0.1, "complete": False, "center_lps_mm": [0, 0, 30]},
        {"event": "progress", "fraction": 1.7, "message": "x.nii.gz done"},
        {"event": "result", "input": "x", "outputs": {"labels": "l.nii.gz", "report": "r.json"},
         "vertebrae": [{"name": "T12", "complete": False}, {"name": "L1", "complete": True}]},
        {"event": "mystery"},
    ]
    state = None
    for event in stream:
        state = events.apply_event(roi, event, state)
        if event["event"] == "progress":
            assert state.vertebrae == ("L1", "T12 (incomplete)")        # provisional, in order found
            assert "2 found: L1, T12 (incomplete)" in state.status
    assert state.vertebrae == ("T12 (incomplete)", "L1")                # the result's final names, top first
    assert state.status == "2 found: T12 (incomplete), L1"
    assert state.fraction == 1.0 and state.outputs == {"labels": "l.nii.gz", "report": "r.json"}
    assert state.modality == "ct"  # from the start event: what an export of this result is written as
    assert not state.finished
    assert events.apply_event(roi, {"event": "done", "seconds": 2}, state).done
    assert events.apply_event(roi, {"event": "error", "message": "boom"}, state).error == "boom"
    assert events.apply_event(roi, {"event": "cancelled"}, state).finished


def test_progress_follows_the_patches_along_the_scan_and_never_goes_back(mrml):
    roi = events.create_patch_roi(mrml.scene)
    state = events.apply_event(roi, {"event": "start", "case": 2, "cases": 4, "modality": "MR"})
    assert (state.case, state.cases, state.modality) == (2, 4, "mr") and state.fraction == 0.0
    seen = []
    for along in (0.2, 0.6, 0.4, 1.0):  # the converge phase may step back; a case ends only with its result
        patch = {"event": "patch", "step": 1, "center_lps_mm": [0, 0, 0], "size_mm": [9, 9, 9], "scan_fraction": along}
        state = events.apply_event(roi, patch, state)
        seen.append(state.fraction)
    assert seen == pytest.approx([(1 + 0.2) / 4, (1 + 0.6) / 4, (1 + 0.6) / 4, (1 + 0.99) / 4])
    old_engine = {"event": "patch", "step": 2, "center_lps_mm": [0, 0, 0], "size_mm": [9, 9, 9]}
    assert events.apply_event(roi, old_engine, state).fraction == state.fraction


def test_a_run_that_finds_nothing_says_so(mrml):
    roi = events.create_patch_roi(mrml.scene)
    state = events.apply_event(roi, {"event": "patch", "step": 1, "center_lps_mm": [0, 0, 0],
                                     "size_mm": [120, 120, 120], "phase": "search"})
    assert state.status == "patch 1 (search) - none found yet"
    state = events.apply_event(roi, {"event": "result", "input": "x", "outputs": {"labels": "l.nii.gz"},
                                     "vertebrae": []}, state)
    assert state.vertebrae == () and state.status == "no vertebra found"
    assert events.apply_event(roi, {"event": "done", "seconds": 2}, state).status == "done in 2 s - no vertebra found"


def test_a_restart_voids_the_stalled_runs_vertebrae(mrml):
    roi = events.create_patch_roi(mrml.scene)
    found = {"event": "vertebra", "index": 1, "provisional_label": 8, "provisional_name": "T1", "label_value": 8.2,
             "completeness": 0.4, "complete": False, "center_lps_mm": [0, 0, 0]}
    state = events.apply_event(roi, found, None)
    assert state.vertebrae == ("T1 (incomplete)",)
    state = events.apply_event(roi, {"event": "restart", "network": "start", "found": 1}, state)
    assert state.vertebrae == ()
    assert state.status == "starting again with the start network (1 found before) - none found yet"
    again = dict(found, index=2, provisional_label=3, provisional_name="C3", complete=True)
    assert events.apply_event(roi, again, state).vertebrae == ("C3",)   # the second run's, numbered on
    rescue = events.apply_event(roi, {"event": "restart", "network": "rescue", "found": 0}, state)
    assert rescue.status == "starting again with the rescue network (0 found before) - none found yet"

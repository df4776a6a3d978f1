"""`vertebra-traversal segment` as the Slicer module runs it: a real child process and its event stream."""
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from model_factory import tiny_model
from vertebra_traversal.imageio import write_image_atomic

CLI = [sys.executable, "-m", "vertebra_traversal.cli.main"]


def _ct(path, shape=(60, 40, 36), spacing=(1.5, 1.6, 3.0)):
    rng = np.random.default_rng(1)
    array = rng.normal(-50, 30, size=shape).astype(np.float32)
    array[:, 12:28, 12:24] = 600  # a bony column
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetDirection((1, 0, 0, 0, 0, 1, 0, -1, 0))  # stored coronal-ish, not LPS
    image.SetOrigin((-20.0, 30.0, -15.0))
    return write_image_atomic(image, path)


def _run(args, **kw):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt")


def test_events_and_outputs_end_to_end(tmp_path, model):
    image = _ct(tmp_path / "scan_ct.nii.gz")
    out = _run(["segment", image, "-o", tmp_path / "out", "--model", model, "--device", "cpu", "--events"])
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "result" in kinds and kinds.count("patch") >= 1
    assert events[0]["patch_size_mm"] == [128.0, 128.0, 128.0]
    result = next(e for e in events if e["event"] == "result")
    labels = sitk.ReadImage(result["outputs"]["labels"])
    reference = sitk.ReadImage(str(image))
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(labels, getter)(), getattr(reference, getter)(), atol=1e-5)
    seg = slicerio.read_segmentation(result["outputs"]["segmentation"])
    assert len(seg["segments"]) == len(result["vertebrae"])
    report = json.loads(open(result["outputs"]["report"]).read())
    assert report["network_passes"] == kinds.count("patch")
    assert report["model"]["completeness_rule"] == "network"  # the tiny model's (the default)
    assert report["model"]["label_interpolation"] == "linear" and report["model"]["largest_component"] is True
    assert set(report["model"]) == {  # docs/ARCHITECTURE.md, *Outputs*; a model of one network: no rescue entry
        "path", "modality", "spacing_mm", "patch_size", "direction", "completeness_rule", "edge_margin_mm",
        "edge_min_contact_mm2", "edge_margin_faces", "max_spine_offset_mm", "min_volume_ratio", "label_interpolation",
        "surface_threshold_hu", "largest_component", "surface_growth", "growth_threshold_hu", "label_calibration",
        "label_gaps", "label_trimmed", "label_confidence_fitted", "start_network", "start_network_use",
        "label_count_from_ribs"}  # a CT model's run takes the ribs' reading where it applies


@pytest.mark.parametrize("option, value, bad", [("--completeness-rule", "edge", "vote"),
                                                ("--label-interpolation", "nearest", "cubic")])
def test_settings_reach_the_report_and_bad_choices_are_refused(tmp_path, model, option, value, bad):
    image = _ct(tmp_path / "scan_ct.nii.gz")
    out = _run(["segment", image, "-o", tmp_path / "out", "--model", model, "--device", "cpu", option, value])
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "out" / "scan_ct_report.json").read_text())
    assert report["model"][option[2:].replace("-", "_")] == value
    if option == "--completeness-rule":  # the option overrides the model's rule (network)
        assert report["vertebrae"] and all(v["complete"] is not v["at_scan_edge"] for v in report["vertebrae"])
    refused = _run(["segment", image, "-o", tmp_path / "out2", "--model", model, option, bad])
    assert refused.returncode == 2 and f"invalid choice: '{bad}'" in refused.stderr
    assert not (tmp_path / "out2").exists()


def test_the_edge_margin_option_reaches_the_report_and_the_flags(tmp_path, model):
    image = _ct(tmp_path / "scan_ct.nii.gz")
    reports = {}
    for margin, contact in (("0", "0"), ("1000", "0"), ("1000", "1e9")):  # 1000 mm: every mask is within it
        out = _run(["segment", image, "-o", tmp_path / f"{margin}-{contact}", "--model", model, "--device", "cpu",
                    "--completeness-rule", "edge", "--edge-margin-mm", margin, "--edge-min-contact-mm2", contact,
                    "--max-spine-offset-mm", margin, "--min-volume-ratio", "0.1" if margin == "0" else "0"])
        assert out.returncode == 0, out.stderr
        reports[margin, contact] = json.loads((tmp_path / f"{margin}-{contact}" / "scan_ct_report.json").read_text())
        assert reports[margin, contact]["model"]["edge_margin_mm"] == float(margin)
        assert reports[margin, contact]["model"]["edge_min_contact_mm2"] == float(contact)
        assert reports[margin, contact]["model"]["edge_margin_faces"] == "all"  # the tiny model's
        assert reports[margin, contact]["model"]["max_spine_offset_mm"] == float(margin)  # 1000 mm: none dropped
        assert reports[margin, contact]["model"]["min_volume_ratio"] == (0.1 if margin == "0" else 0.0)
        assert reports[margin, contact]["model"]["label_trimmed"] == 0  # the tiny model reads every instance
    near, covering_nothing = reports["1000", "0"]["vertebrae"], reports["1000", "1e9"]["vertebrae"]
    assert near and all(v["at_scan_edge"] and not v["complete"] for v in near)
    assert all(not v["at_scan_edge"] and v["complete"] for v in covering_nothing)  # no mask covers 1e9 mm²
    assert len(reports["0", "0"]["vertebrae"]) == len(near) == len(covering_nothing)
    for option in ("--edge-margin-mm", "--edge-min-contact-mm2", "--max-spine-offset-mm"):
        refused = _run(["segment", image, "-o", tmp_path / "bad", "--model", model, option, "-1"])
        assert refused.returncode != 0 and f"{option} -1.0: must be a finite number of 0 or more" in refused.stderr
        assert not (tmp_path / "bad").exists()
    for bad in ("1", "-0.5"):
        refused = _run(["segment", image, "-o", tmp_path / "bad", "--model", model, "--min-volume-ratio", bad])
        assert refused.returncode != 0 and f"--min-volume-ratio {float(bad)}: must be a number from 0" in refused.stderr
        assert not (tmp_path / "bad").exists()


def test_all_components_switches_the_largest_piece_filter_off(tmp_path, model):
    image = _ct(tmp_path / "scan_ct.nii.gz")
    out = _run(["segment", image, "-o", tmp_path / "out", "--model", model, "--device", "cpu", "--all-components"])
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "out" / "scan_ct_report.json").read_text())
    assert report["model"]["largest_component"] is False


def test_surface_growth_on_request_adds_only_bone_next_to_a_vertebra(tmp_path, model):
    image = _ct(tmp_path / "scan_ct.nii.gz")
    maps = {}
    for flags, grown in ((["--surface-growth"], True), ([], False)):
        out = _run(["segment", image, "-o", tmp_path / f"out{int(grown)}", "--model", model, "--device", "cpu"] + flags)
        assert out.returncode == 0, out.stderr
        report = json.loads((tmp_path / f"out{int(grown)}" / "scan_ct_report.json").read_text())
        assert report["model"]["surface_growth"] is grown
        assert report["model"]["surface_threshold_hu"] == 200.0  # the tiny model records none: the paper's
        maps[grown] = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"out{int(grown)}" / "scan_ct_seg-vert_msk.nii.gz")))
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(image)))
    added = (maps[True] > 0) & (maps[False] == 0)
    assert added.any() and (hu[added] >= 200).all()  # the tiny model's mask leaves bone of the column out
    kept = maps[False] > 0
    np.testing.assert_array_equal(maps[True][kept], maps[False][kept])
    lower = _run(["segment", image, "-o", tmp_path / "out100", "--model", model, "--device", "cpu",
                  "--surface-growth", "--growth-threshold-hu", "100"])
    assert lower.returncode == 0, lower.stderr
    assert json.loads((tmp_path / "out100" / "scan_ct_report.json").read_text())["model"]["growth_threshold_hu"] == 100.0
    for option in ("--growth-threshold-hu", "--surface-threshold-hu"):
        refused = _run(["segment", image, "-o", tmp_path / "bad", "--model", model, option, "nan"])
        assert refused.returncode != 0 and f"{option} nan: must be a finite number" in refused.stderr
        assert not (tmp_path / "bad").exists()


def test_the_surface_threshold_option_overrides_the_models_and_reaches_the_report(tmp_path, model):
    image = _ct(tmp_path / "scan_ct.nii.gz")  # its bony column is 600 HU: 700 peels its surface, 200 does not
    voxels = {}
    for threshold in ("200", "700"):
        out = _run(["segment", image, "-o", tmp_path / threshold, "--model", model, "--device", "cpu",
                    "--surface-threshold-hu", threshold])
        assert out.returncode == 0, out.stderr
        report = json.loads((tmp_path / threshold / "scan_ct_report.json").read_text())
        assert report["model"]["surface_threshold_hu"] == float(threshold)
        labels = sitk.ReadImage(str(tmp_path / threshold / "scan_ct_seg-vert_msk.nii.gz"))
        voxels[threshold] = int((sitk.GetArrayFromImage(labels) > 0).sum())
    assert 0 < voxels["700"] < voxels["200"]


def test_a_calibrated_models_table_is_used_unless_switched_off(tmp_path):
    from vertebra_traversal.label_calibration import fit_calibration
    table = fit_calibration([(1.0, 5.0), (24.0, 20.0)]).to_json()
    calibrated = tiny_model(tmp_path / "cal.pt", label_calibration=table)
    image = _ct(tmp_path / "scan_ct.nii.gz")
    for flags, used in (([], True), (["--no-label-calibration"], False)):
        out_dir = tmp_path / f"out{int(used)}"
        out = _run(["segment", image, "-o", out_dir, "--model", calibrated.name, "--device", "cpu"] + flags,
                   cwd=tmp_path)  # a relative model path: the report keeps the absolute one (for `calibrate`)
        assert out.returncode == 0, out.stderr
        model_info = json.loads((out_dir / "scan_ct_report.json").read_text())["model"]
        assert model_info["label_calibration"] is used and model_info["path"] == str(calibrated.resolve())


@pytest.mark.parametrize("setup, message", [
    (lambda d, m: ["segment", d / "missing.nii.gz", "-o", d / "o", "--model", m], "file not found"),
    (lambda d, m: ["segment", _ct(d / "a.nii.gz"), "-o", d / "o", "--model", d / "junk.pt"], "model file not found"),
    (lambda d, m: (d / "bad.pt").write_bytes(b"PK\x03\x04 nope") and
     ["segment", _ct(d / "a.nii.gz"), "-o", d / "o", "--model", d / "bad.pt"], "bad.pt"),
    (lambda d, m: ["segment", _ct(d / "a.nii.gz", shape=(1, 40, 36)), "-o", d / "o", "--model", m], "not a volume"),
    (lambda d, m: ["segment", _ct(d / "a_mr.nii.gz"), "-o", d / "o", "--model", tiny_model(d / "mr.pt", "MR"),
                   "--rib-anchor", "on"], "mr.pt: the rib anchor reads the ribs in HU: CT models only"),
    (lambda d, m: ["segment", _ct(d / "a_mr.nii.gz"), "-o", d / "o", "--model", tiny_model(d / "mr.pt", "MR"),
                   "--count-from-ribs", "on"], "mr.pt: counting from the ribs reads the ribs in HU: CT models only"),
])
def test_bad_input_gives_one_message_exit_2_and_no_output(tmp_path, model, setup, message):
    out = _run(setup(tmp_path, model) + ["--events"])
    assert out.returncode == 2
    assert message in out.stderr and out.stderr.count("error:") == 1
    assert json.loads(out.stdout.splitlines()[-1])["event"] == "error"
    assert not (tmp_path / "o").exists()


def test_existing_output_folder_is_refused_and_untouched(tmp_path, model):
    image = _ct(tmp_path / "a.nii.gz")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "mine.txt").write_text("user data")
    out = _run(["segment", image, "-o", tmp_path / "o", "--model", model])
    assert out.returncode == 2 and "not empty" in out.stderr
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["mine.txt"]


def test_sigterm_cancels_between_steps_and_leaves_no_output(tmp_path, model):
    image = _ct(tmp_path / "big.nii.gz", shape=(200, 120, 120), spacing=(2.0, 2.0, 2.0))
    proc = subprocess.Popen(CLI + ["segment", str(image), "-o", str(tmp_path / "o"), "--model", str(model),
                                   "--events", "--batch-size", "1"], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if json.loads(line)["event"] == "patch":
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 130
    assert json.loads(rest.splitlines()[-1])["event"] == "cancelled"
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_batch_of_inputs_in_a_folder_loads_the_model_once(tmp_path, model):
    folder = tmp_path / "scans"
    _ct(folder / "one.nii.gz")
    _ct(folder / "two.nrrd")
    out = _run(["segment", folder, "-o", tmp_path / "o", "--model", model, "--events"])
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["case"] for e in events if e["event"] == "start"] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "o").glob("*_report.json")) == ["one_report.json", "two_report.json"]
    assert out.stderr.count("loaded torchscript CT model") == 1


def test_dataset_folder_segments_its_images_of_the_models_modality(tmp_path, model):
    root = tmp_path / "dataset"
    for case in ("case1", "case2"):
        _ct(root / "rawdata" / case / f"{case}_ct.nii.gz")
    _ct(root / "rawdata" / "case3" / "case3_mr.nii.gz")  # an MR case: not for a CT model
    out = _run(["segment", root, "-o", tmp_path / "o", "--model", model, "--events"])
    assert out.returncode == 0, out.stderr
    starts = [json.loads(line)["input"] for line in out.stdout.splitlines() if '"start"' in line]
    assert [p.split("/")[-1] for p in starts] == ["case1_ct.nii.gz", "case2_ct.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "o").glob("*_report.json")) == ["case1_ct_report.json",
                                                                               "case2_ct_report.json"]


def test_dataset_folder_without_the_models_modality_is_refused(tmp_path, model):
    root = tmp_path / "dataset"
    _ct(root / "rawdata" / "case3" / "case3_mr.nii.gz")
    out = _run(["segment", root, "-o", tmp_path / "o", "--model", model])
    assert out.returncode == 2
    assert f"{root}: dataset holds no CT image" in out.stderr and out.stderr.count("error:") == 1
    assert not (tmp_path / "o").exists()


def test_two_inputs_with_the_same_output_name_are_refused_before_any_work(tmp_path, model):
    first, second = _ct(tmp_path / "a" / "scan.nii.gz"), _ct(tmp_path / "b" / "scan.nrrd")
    out = _run(["segment", first, second, "-o", tmp_path / "o", "--model", model, "--events"])
    assert out.returncode == 2
    assert f"{second}: same output name 'scan' as {first}" in out.stderr
    assert not any(json.loads(line)["event"] == "start" for line in out.stdout.splitlines())
    assert not (tmp_path / "o").exists()


def test_skipped_levels_ends_left_out_bottom_anchor_and_fragment_pieces_can_be_set_per_run(tmp_path, model):
    image = _ct(tmp_path / "scan_ct.nii.gz")
    out = _run(["segment", image, "-o", tmp_path / "out", "--model", model, "--device", "cpu",
                "--gaps", "3", "--trim-ends", "2", "--bottom-anchor-mm", "10", "--fragment-pieces", "largest",
                "--rib-anchor", "on"])
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "out" / "scan_ct_report.json").read_text())
    assert (report["model"]["label_gaps"], report["model"]["label_trimmed"]) == (3, 2)
    assert report["model"]["label_bottom_anchor_mm"] == 10.0 and report["model"]["fragment_pieces"] == "largest"
    assert report["model"]["label_rib_anchor"] is True
    switch = _run(["segment", image, "-o", tmp_path / "bad", "--model", model, "--rib-anchor", "yes"])
    assert switch.returncode == 2 and "expected 'on' or 'off', got 'yes'" in switch.stderr
    refused = _run(["segment", image, "-o", tmp_path / "bad", "--model", model, "--trim-ends", "4"])
    assert refused.returncode == 2 and "--trim-ends: invalid choice: 4" in refused.stderr
    negative = _run(["segment", image, "-o", tmp_path / "bad", "--model", model, "--bottom-anchor-mm", "-1"])
    assert negative.returncode == 2 and "--bottom-anchor-mm -1.0: must be a finite number of 0 or more" in negative.stderr
    assert not (tmp_path / "bad").exists()

"""A model file with a start network for empty-memory patches (``start_network``, ``combine``)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from model_factory import TINY, tiny_model
from test_cli_segment import _ct, _run
from vertebra_traversal.checkpoint import CheckpointError, _quiet_torchscript, load_model, save_torchscript
from vertebra_traversal.cli import main as cli
from vertebra_traversal.models import resolve_model
from vertebra_traversal.network import IterativeFCN
from vertebra_traversal.start_network import StartSwitch, networks
from vertebra_traversal.torch_predictor import TorchPredictor


def _networks(*seeds: int):
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        nets.append(IterativeFCN(TINY).eval())
    return nets


def test_empty_memory_patches_take_the_start_networks_segmentation_and_all_take_the_main_labels():
    main, start = _networks(0, 1)
    x = torch.randn(3, 2, 16, 16, 16)
    x[0, 1] = 0.0
    x[1, 1] = 0.0
    x[1, 1, 3, 4, 5] = 1.0      # one memory voxel: the main network answers
    x[2, 1] = 0.0
    with _quiet_torchscript():
        scripted = torch.jit.script(StartSwitch(main, start).eval())
    with torch.inference_mode():
        main_out, start_out = main(x), start(x)
        for switch in (StartSwitch(main, start).eval(), scripted):
            seg, label, complete = switch(x)
            for i, source in ((0, start_out), (1, main_out), (2, start_out)):
                torch.testing.assert_close(seg[i], source[0][i], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(label, main_out[1])
            torch.testing.assert_close(complete, main_out[2])
    assert not torch.allclose(main_out[0][0], start_out[0][0], atol=1e-3)   # the two differ
    with torch.inference_mode():
        memory_only = x[1:2]
        torch.testing.assert_close(StartSwitch(main, start).eval()(memory_only)[0], main(memory_only)[0])


def _patches():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(2,) + TINY.patch_size).astype(np.float32)
    memories = np.zeros_like(images)
    memories[1, :4] = 1.0
    return images, memories


def test_combine_writes_a_model_the_engine_runs_and_records_the_start_network(tmp_path, capsys):
    main, start = tiny_model(tmp_path / "main.pt", seed=0), tiny_model(tmp_path / "start.pt", seed=1)
    out = tmp_path / "both.pt"
    assert cli.main(["combine", "--model", str(main), "--start", str(start), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    combined = load_model(out, device="cpu")
    record = combined.metadata.start_network
    assert record["file"] == "start.pt" and record["sha1"] == hashlib.sha1(start.read_bytes()).hexdigest()[:16]
    assert record["network"] == TINY.to_json()
    assert networks(combined)[1] is not None and networks(load_model(main, device="cpu"))[1] is None
    images, memories = _patches()
    outputs = {name: TorchPredictor(load_model(p, device="cpu"))(images, memories)
               for name, p in (("main", main), ("start", start), ("both", out))}
    np.testing.assert_allclose(outputs["both"].probabilities[0], outputs["start"].probabilities[0], atol=1e-6)
    np.testing.assert_allclose(outputs["both"].probabilities[1], outputs["main"].probabilities[1], atol=1e-6)
    np.testing.assert_allclose(outputs["both"].label_values, outputs["main"].label_values, atol=1e-6)
    other = tiny_model(tmp_path / "other.pt", seed=2)                       # a new start network replaces it
    again = tmp_path / "again.pt"
    assert cli.main(["combine", "--model", str(out), "--start", str(other), "--out", str(again)]) == 0
    replaced = load_model(again, device="cpu")
    assert replaced.metadata.start_network["file"] == "other.pt"
    main_again, start_again = networks(replaced)
    assert all(torch.equal(a, b) for a, b in zip(main_again.state_dict().values(),
                                                 networks(combined)[0].state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(start_again.state_dict().values(),
                                                 load_model(other, device="cpu").module.state_dict().values()))


def test_combine_refuses_an_existing_file_another_grid_and_a_combined_start(tmp_path, capsys):
    main, start = tiny_model(tmp_path / "main.pt", seed=0), tiny_model(tmp_path / "start.pt", seed=1)
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"keep me")
    cases = [
        (start, mine, "mine.pt: already exists"),
        (start, tmp_path / "d.pt2", "d.pt2: a combined model is TorchScript"),
        (tiny_model(tmp_path / "mr.pt", modality="MR"), tmp_path / "a.pt", "mr.pt: its modality 'MR' differs"),
        (tiny_model(tmp_path / "coarse.pt", spacing_mm=4.0), tmp_path / "b.pt", "coarse.pt: its spacing_mm"),
    ]
    combined = tmp_path / "both.pt"
    assert cli.main(["combine", "--model", str(main), "--start", str(start), "--out", str(combined)]) == 0
    cases.append((combined, tmp_path / "c.pt", "both.pt: holds a start network itself"))
    capsys.readouterr()
    for start_model, out, message in cases:
        assert cli.main(["combine", "--model", str(main), "--start", str(start_model), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert mine.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.glob("[abcd].pt*")) == []


def test_a_model_whose_metadata_and_network_disagree_is_refused(tmp_path):
    main, = _networks(0)
    metadata = load_model(tiny_model(tmp_path / "plain.pt"), device="cpu").metadata
    claims = tmp_path / "claims.pt"
    save_torchscript(main, replace(metadata, start_network={"file": "x.pt"}), claims)
    with pytest.raises(CheckpointError, match="claims.pt: the metadata and the network disagree"):
        networks(load_model(claims, device="cpu"))


def test_segment_runs_a_combined_model_in_the_child_process_and_reports_it(tmp_path):
    main, start = tiny_model(tmp_path / "main.pt", seed=0), tiny_model(tmp_path / "start.pt", seed=1)
    both = tmp_path / "both.pt"
    assert cli.main(["combine", "--model", str(main), "--start", str(start), "--out", str(both)]) == 0
    image = _ct(tmp_path / "scan_ct.nii.gz")
    for model, flag in ((main, False), (both, True)):
        out_dir = tmp_path / f"out-{model.stem}"
        out = _run(["segment", image, "-o", out_dir, "--model", model, "--device", "cpu"])
        assert out.returncode == 0, out.stderr
        assert json.loads((out_dir / "scan_ct_report.json").read_text())["model"]["start_network"] is flag


def test_the_bundled_models_hold_start_networks_mr_always_and_ct_as_fallback():
    mr, ct = (load_model(resolve_model(name), device="cpu") for name in ("mr", "ct"))
    for loaded, use in ((mr, "always"), (ct, "fallback")):
        main, start = networks(loaded)
        assert start is not None and loaded.metadata.start_network["training"]["config"]["start_fraction"] == 1.0
        assert loaded.metadata.start_use() == use
    assert mr.metadata.label_calibration    # the main network's fitted table is kept inside
    assert ct.metadata.label_confidence     # fitted again on runs with the start network as fallback


def test_calibrating_a_combined_model_keeps_both_networks(tmp_path):
    main, start = tiny_model(tmp_path / "main.pt", seed=0), tiny_model(tmp_path / "start.pt", seed=1)
    both = tmp_path / "both.pt"
    assert cli.main(["combine", "--model", str(main), "--start", str(start), "--out", str(both)]) == 0
    read = tmp_path / "read.pt"
    assert cli.main(["calibrate", "--model", str(both), "--gaussian", "1.5", "--out", str(read)]) == 0
    before, after = load_model(both, device="cpu"), load_model(read, device="cpu")
    assert after.metadata.start_network == before.metadata.start_network and after.metadata.label_calibration
    for old, new in zip(networks(before), networks(after)):
        assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))


def test_combine_drops_a_label_confidence_fitted_without_the_start_network(tmp_path, caplog):
    from vertebra_traversal.checkpoint import read_metadata
    from vertebra_traversal.confidence import ConfidenceCalibration
    fitted = ConfidenceCalibration(-0.1, 1.5, -1.9, vertebrae=20, cases=2, right=0.5).to_json()
    main = tiny_model(tmp_path / "main.pt", seed=0)
    loaded = load_model(main, device="cpu")
    with_confidence = save_torchscript(loaded.module, replace(loaded.metadata, label_confidence=fitted),
                                       tmp_path / "fitted.pt")
    start, out = tiny_model(tmp_path / "start.pt", seed=1), tmp_path / "both.pt"
    assert cli.main(["combine", "--model", str(with_confidence), "--start", str(start), "--out", str(out)]) == 0
    assert read_metadata(with_confidence).confidence() is not None and read_metadata(out).confidence() is None
    assert "label confidence was fitted on runs without this start network" in caplog.text

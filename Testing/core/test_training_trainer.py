"""The training loop: resume equality, run-folder protection, fine-tuning checks, a short overfit."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from test_training_fixtures import tiny_config, write_spine_case
from vertebra_traversal.checkpoint import load_model, read_metadata
from vertebra_traversal.imageio import InputError
from vertebra_traversal.network import NetworkConfig
from vertebra_traversal.training.augment import AugmentConfig
from vertebra_traversal.training.loss import LossConfig
from vertebra_traversal.training.runfolder import LOG_FIELDS, RunFolder
from vertebra_traversal.training.trainer import TrainingInterrupted, train

FAST_NET = NetworkConfig(filters=8, depth=1, head_features=8, head_depth=2, patch_size=(16, 16, 16))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_spine_case(root, "case001", [24, 23, 22])
    write_spine_case(root, "case002", [23, 22], complete={22: False}, seed=1)
    return root


def _config(**kw):
    values = dict(iterations=4, network=FAST_NET, checkpoint_every=2, validate_every=2,
                  augment=AugmentConfig(elastic_probability=1.0, z_crop_probability=0.5))
    values.update(kw)
    return tiny_config(**values)


def _state(run: Path):
    return torch.load(run / "checkpoint.pt", weights_only=False)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["iteration"] == b["iteration"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys() and len(opt_a) > 0
    for index in opt_a:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(torch.as_tensor(opt_a[index][name]), torch.as_tensor(opt_b[index][name]))


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(data, tmp_path):
    straight = train([data], tmp_path / "a", _config(workers=2), device="cpu")
    assert straight == tmp_path / "a" / "model.pt"

    stops = iter([False, True])                                   # stop cleanly after iteration 2
    with pytest.raises(TrainingInterrupted) as stopped:
        train([data], tmp_path / "b", _config(), device="cpu", should_stop=lambda: next(stops))
    assert stopped.value.iteration == 2 and _state(tmp_path / "b")["iteration"] == 2
    assert not (tmp_path / "b" / "model.pt").exists()
    train([data], tmp_path / "b", _config(), device="cpu")

    def crash(report):                                             # a hard failure in iteration 3
        if report.phase == "train" and report.iteration == 3:
            raise RuntimeError("power cut")
    with pytest.raises(RuntimeError):
        train([data], tmp_path / "c", _config(), device="cpu", progress=crash)
    assert _state(tmp_path / "c")["iteration"] == 2
    train([data], tmp_path / "c", _config(), device="cpu")

    reference = _state(tmp_path / "a")
    assert reference["iteration"] == 4
    _assert_same_state(reference, _state(tmp_path / "b"))
    _assert_same_state(reference, _state(tmp_path / "c"))
    for run in ("a", "b", "c"):
        rows = RunFolder(tmp_path / run).read_log()
        assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
        assert set(rows[0]) == set(LOG_FIELDS)
    losses_a = [r["loss"] for r in RunFolder(tmp_path / "a").read_log()]
    losses_c = [r["loss"] for r in RunFolder(tmp_path / "c").read_log()]
    assert np.allclose(losses_a, losses_c, rtol=1e-5)


def test_final_model_carries_metadata_and_rerun_returns_it(data, tmp_path):
    config = _config(iterations=2)
    path = train([data], tmp_path / "run", config, device="cpu")
    meta = read_metadata(path)
    assert meta.modality == "CT" and meta.target == "vertebra" and meta.direction == "up"
    assert meta.spacing_mm == (2.0, 2.0, 2.0) and meta.patch_size == (16, 16, 16)
    assert meta.network["filters"] == 8 and meta.normalization["kind"] == "ct"
    assert meta.training["iterations"] == 2 and meta.training["wall_seconds"] > 0
    assert [d["case"] for d in meta.training["data"]] == ["case001", "case002"]
    assert meta.training["metrics"]["iteration"] == 2 and "dice" in meta.training["metrics"]
    before = path.stat().st_mtime_ns
    assert train([data], tmp_path / "run", config, device="cpu") == path
    assert path.stat().st_mtime_ns == before
    module = load_model(path, device="cpu").module
    seg, label, complete = module(torch.zeros(1, 2, 16, 16, 16))
    assert seg.shape == (1, 1, 16, 16, 16) and label.shape == (1,) and complete.shape == (1,)


def test_a_folder_holding_another_run_or_other_files_is_refused_untouched(data, tmp_path):
    with pytest.raises(TrainingInterrupted):
        train([data], tmp_path / "run", _config(), device="cpu", should_stop=lambda: True)
    files = {p: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    with pytest.raises(InputError, match=r"different training run .*iterations"):
        train([data], tmp_path / "run", _config(iterations=5), device="cpu")
    assert {p: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == files
    # resuming with other runtime settings (workers) is the same run
    train([data], tmp_path / "run", _config(workers=1, validate_every=3), device="cpu")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        train([data], other, _config(), device="cpu")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    (other / "run.json").write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match=r"run.json: not a vertebra-traversal-run run description"):
        train([data], other, _config(), device="cpu")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt", "run.json"]


def test_a_run_folder_in_use_or_a_file_as_out_is_refused_untouched(data, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train([data], run, _config(), device="cpu", should_stop=lambda: True)
    files = {p: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with RunFolder(run).locked():  # what another process training in the folder holds
        with pytest.raises(InputError, match="another training process is using this run folder"):
            train([data], run, _config(), device="cpu")
    assert {p: p.read_bytes() for p in run.iterdir() if p.is_file()} == files
    assert train([data], run, _config(), device="cpu").exists()  # released: the run resumes and ends
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    with pytest.raises(InputError, match=r"notes\.txt: is a file, not a folder"):
        train([data], target, _config(), device="cpu")
    assert target.read_text() == "keep me"


def test_held_out_cases_that_are_training_cases_are_refused(data, tmp_path):
    with pytest.raises(InputError, match=r"case001_ct\.nii\.gz: this held-out case .* is also a training case"):
        train([data], tmp_path / "run", _config(), device="cpu", validation_dirs=[data])
    assert not (tmp_path / "run").exists()


def test_a_run_without_held_out_cases_says_that_it_scores_training_patches(data, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="vertebra_traversal.training.trainer"):
        train([data], tmp_path / "run", _config(iterations=2), device="cpu")
    assert "no held-out cases (--validation)" in caplog.text
    last = json.loads((tmp_path / "run" / "validation.jsonl").read_text().splitlines()[-1])
    assert last["source"] == "training" and not [k for k in last if k.startswith("scan_")]


def test_init_fine_tunes_and_refuses_another_modality(data, tmp_path, caplog):
    model = train([data], tmp_path / "base", _config(iterations=2), device="cpu")
    assert "fine-tuning with false positives" not in caplog.text
    tuned = train([data], tmp_path / "tuned", _config(iterations=2, network=NetworkConfig(
        filters=4, depth=1, head_features=4, head_depth=2, patch_size=(16, 16, 16))), init=model, device="cpu")
    assert "fine-tuning with false positives weighted 0.1 at first" in caplog.text  # the default ramp
    caplog.clear()
    train([data], tmp_path / "full", _config(iterations=1, loss=LossConfig(lambda_min=1.0)), init=model, device="cpu")
    assert "fine-tuning with false positives" not in caplog.text
    meta = read_metadata(tuned)
    assert meta.network["filters"] == 8  # the init model's network wins over the config's
    assert meta.training["init"]["path"] == str(model)
    assert read_metadata(model).surface_threshold_hu is None and meta.surface_threshold_hu is None
    assert meta.edge_margin_mm == 0.0
    from vertebra_traversal.calibrate import gaussian_model
    from vertebra_traversal.metadata import PostSettings
    peeled = gaussian_model(model, 1.5, tmp_path / "peeled.pt",
                            settings=PostSettings(surface_threshold_hu=100.0, edge_margin_mm=2.0,
                                                  edge_min_contact_mm2=50.0, edge_margin_faces="cranio-caudal",
                                                  max_spine_offset_mm=30.0, min_volume_ratio=0.35,
                                                  fragment_pieces="largest"))
    again = read_metadata(train([data], tmp_path / "again", _config(iterations=2), init=peeled, device="cpu"))
    # they describe the masks
    assert PostSettings.of(again) == PostSettings(100.0, 2.0, 50.0, "cranio-caudal", 30.0, 0.35, "largest")
    mr = tiny_config(modality="mr", network=FAST_NET)
    with pytest.raises(InputError, match="CT model"):
        train([data], tmp_path / "mr", mr, init=model, device="cpu")


def test_short_run_overfits_one_case(tmp_path):
    root = tmp_path / "one"
    write_spine_case(root, "case001", [23])
    config = tiny_config(iterations=80, network=FAST_NET, validate_every=80, checkpoint_every=80,
                         foreground_fraction=1.0, learning_rate=0.01, beta1=0.9, validation_patches=8)
    train([root], tmp_path / "run", config, device="cpu")
    rows = RunFolder(tmp_path / "run").read_log()
    first, last = np.mean([r["loss"] for r in rows[:10]]), np.mean([r["loss"] for r in rows[-10:]])
    assert last < 0.5 * first
    record = json.loads((tmp_path / "run" / "validation.jsonl").read_text().splitlines()[-1])
    assert record["iteration"] == 80 and record["dice"] > 0.8


def test_a_failed_preparation_leaves_the_new_folder_reusable(tmp_path):
    import SimpleITK as sitk

    root = tmp_path / "data"
    write_spine_case(root, "case001", [24])
    labels_path = root / "derivatives" / "case001" / "case001_seg-vert_msk.nii.gz"
    good = sitk.ReadImage(str(labels_path))
    bad = sitk.Image(good)
    bad.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(bad, str(labels_path))
    with pytest.raises(InputError, match="differs from its image"):
        train([root], tmp_path / "run", _config(iterations=1), device="cpu")
    assert list((tmp_path / "run").iterdir()) == []
    sitk.WriteImage(good, str(labels_path))
    assert train([root], tmp_path / "run", _config(iterations=1), device="cpu").exists()


def test_label_path_only_changes_nothing_but_the_label_path(data, tmp_path, caplog):
    base = train([data], tmp_path / "base", _config(iterations=2), device="cpu")
    tuned = train([data], tmp_path / "tuned", _config(iterations=3, trained_part="label-path", learning_rate=0.05),
                  init=base, device="cpu")
    assert "fine-tuning with false positives" not in caplog.text  # no mask term to weigh
    before = load_model(base, device="cpu").module.state_dict()
    after = load_model(tuned, device="cpu").module.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(k.startswith("label_path.") for k in changed)  # BN statistics included elsewhere
    assert any(k.endswith("running_mean") for k in before if not k.startswith("label_path."))
    assert read_metadata(tuned).training["config"]["trained_part"] == "label-path"
    with pytest.raises(InputError, match="needs an --init model"):
        train([data], tmp_path / "scratch", _config(iterations=2, trained_part="label-path"), device="cpu")


def test_cosine_schedule_sets_adams_rate_at_every_step_and_resumes_exactly(data, tmp_path):
    config = _config(learning_rate_schedule="cosine")
    train([data], tmp_path / "a", config, device="cpu")
    final = _state(tmp_path / "a")
    assert final["optimizer"]["param_groups"][0]["lr"] == pytest.approx(config.learning_rate_at(3))
    stops = iter([False, True])                                   # stop cleanly after iteration 2
    with pytest.raises(TrainingInterrupted):
        train([data], tmp_path / "b", config, device="cpu", should_stop=lambda: next(stops))
    assert _state(tmp_path / "b")["optimizer"]["param_groups"][0]["lr"] == pytest.approx(config.learning_rate_at(1))
    train([data], tmp_path / "b", config, device="cpu")
    _assert_same_state(final, _state(tmp_path / "b"))
    train([data], tmp_path / "c", _config(), device="cpu")        # the constant rate moves the weights otherwise
    constant = _state(tmp_path / "c")["model"]
    assert any(not torch.equal(value, constant[key]) for key, value in final["model"].items())


def test_a_fine_tune_does_not_keep_the_init_models_label_confidence(tmp_path, caplog):
    from dataclasses import replace

    from vertebra_traversal.confidence import ConfidenceCalibration
    from vertebra_traversal.label_calibration import gaussian_reading
    from vertebra_traversal.metadata import ModelMetadata
    from vertebra_traversal.training.trainer import inherited_reading
    meta = ModelMetadata(modality="CT", target="vertebra", spacing_mm=(2.5,) * 3, patch_size=(48,) * 3,
                         normalization={"kind": "ct", "clip": [-1000, 2000], "scale": 0.001, "offset": 0.0},
                         label_calibration=gaussian_reading(1.25).to_json(),
                         label_confidence=ConfidenceCalibration(-0.1, 1.5, -1.9).to_json())
    with caplog.at_level(logging.WARNING):
        reading, fate = inherited_reading(tmp_path / "init.pt", meta)
    assert fate == "kept" and reading == ModelMetadata.reading_record(gaussian_reading(1.25))
    assert "does not keep it and reports the share of the plausible label sequences" in caplog.text
    caplog.clear()
    inherited_reading(tmp_path / "init.pt", replace(meta, label_confidence={}))
    assert "label confidence" not in caplog.text

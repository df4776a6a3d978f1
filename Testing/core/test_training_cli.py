"""``vertebra-traversal train`` end to end at a tiny configuration (the preset is the input we replace)."""
from __future__ import annotations

import hashlib
import io
import json
import math

import pytest
import torch

from test_training_fixtures import tiny_config, write_spine_case
from vertebra_traversal.calibrate import write_calibrated
from vertebra_traversal.checkpoint import load_model, read_metadata
from vertebra_traversal.cli import main as cli
from vertebra_traversal.cli import train as train_cli
from vertebra_traversal.imageio import InputError
from vertebra_traversal.label_calibration import TABLE_VALUES, LabelCalibration, gaussian_reading
from vertebra_traversal.models import BUNDLED
from vertebra_traversal.network import NetworkConfig
from vertebra_traversal.start_network import networks, rescue_network
from vertebra_traversal.training.config import preset
from vertebra_traversal.training.trainer import TrainingProgress

FAST_NET = NetworkConfig(filters=4, depth=1, head_features=4, head_depth=2, patch_size=(16, 16, 16))


@pytest.fixture()
def tiny_presets(monkeypatch):
    def fake(name: str, modality: str = "ct"):
        return tiny_config(iterations=99, network=FAST_NET, modality=modality, preset=name)
    monkeypatch.setattr(train_cli, "preset", fake)


def test_train_writes_model_log_and_resumes_or_refuses(tiny_presets, tmp_path, capsys):
    data = tmp_path / "data"
    write_spine_case(data, "case001", [24, 23])
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--iterations", "2", "--workers", "0"]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out / "model.pt")
    assert "train 2/2" in captured.err
    assert (out / "log.csv").read_text().splitlines()[0] == "iteration,loss,seg,label,completeness,lambda,seconds"
    assert cli.main(args) == 0                                   # same command: already complete
    assert cli.main(args[:-4] + ["--iterations", "3"]) == 2      # another run in the same folder
    assert "different training run" in capsys.readouterr().err
    mr = ["train", "--data", str(data), "--out", str(tmp_path / "mr"), "--modality", "mr",
          "--init", str(out / "model.pt")]
    assert cli.main(mr) == 2
    assert "CT model" in capsys.readouterr().err and not (tmp_path / "mr").exists()


def _one_case_run(tmp_path, iterations: int):
    """A dataset of one two-vertebra case; returns the run folder and the train arguments."""
    write_spine_case(tmp_path / "data", "case001", [24, 23])
    out = tmp_path / "run"
    return out, ["train", "--data", str(tmp_path / "data"), "--out", str(out), "--iterations", str(iterations),
                 "--workers", "0"]


def test_seed_option_is_part_of_the_run_identity(tiny_presets, tmp_path, capsys):
    out, args = _one_case_run(tmp_path, 1)
    assert cli.main(args + ["--seed", "3"]) == 0
    assert json.loads((out / "run.json").read_text())["identity"]["config"]["seed"] == 3
    before = (out / "run.json").read_bytes()
    assert cli.main(args + ["--seed", "4"]) == 2                 # other patch draws: another run
    assert "seed" in capsys.readouterr().err and (out / "run.json").read_bytes() == before


def test_init_takes_a_bundled_model_by_name(tiny_presets, tmp_path, capsys):
    """``--init ct`` fine-tunes the bundled CT model (as ``segment --model ct`` reads it); ``--init mr`` on a
    CT run is refused before a run folder is made."""
    out, args = _one_case_run(tmp_path, 1)
    assert cli.main(args + ["--init", "mr"]) == 2
    assert "MR model" in capsys.readouterr().err and not out.exists()
    assert cli.main(args + ["--init", "ct"]) == 0
    info = read_metadata(out / "model.pt").training["init"]
    assert info["path"] == str(BUNDLED["ct"])
    assert info["sha1"] == hashlib.sha1(BUNDLED["ct"].read_bytes()).hexdigest()[:16]
    assert read_metadata(out / "model.pt").network == read_metadata(BUNDLED["ct"]).network != FAST_NET.to_json()


def test_lambda_min_option_sets_the_schedule_start(tiny_presets, tmp_path, capsys):
    out, args = _one_case_run(tmp_path, 4)
    assert cli.main(args + ["--lambda-min", "1"]) == 0
    assert json.loads((out / "run.json").read_text())["identity"]["config"]["loss"]["lambda_min"] == 1.0
    rows = (out / "log.csv").read_text().splitlines()
    column = rows[0].split(",").index("lambda")
    assert [float(r.split(",")[column]) for r in rows[1:]] == [1.0] * 4
    assert cli.main(args) == 2                                   # the default schedule is another run
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(args + ["--lambda-min", "0"])
    assert "expected a number in (0, 1]" in capsys.readouterr().err


def test_learning_rate_option_reaches_the_optimiser(tiny_presets, tmp_path, capsys):
    out, args = _one_case_run(tmp_path, 2)
    assert cli.main(args + ["--learning-rate", "2.5e-4", "--checkpoint-every", "1"]) == 0
    assert json.loads((out / "run.json").read_text())["identity"]["config"]["learning_rate"] == 2.5e-4
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert [group["lr"] for group in state["optimizer"]["param_groups"]] == [2.5e-4]
    assert cli.main(args) == 2                                   # the default rate is another run
    capsys.readouterr()
    for bad in ("0", "-1e-3", "inf", "nan"):
        with pytest.raises(SystemExit):
            cli.main(args + [f"--learning-rate={bad}"])
        assert "expected a positive number" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["centred-fraction", "start-fraction", "partial-memory", "overreach-memory",
                                    "end-fraction"])
def test_sampling_share_options_are_part_of_the_run_and_checked(option, tiny_presets, tmp_path, capsys):
    out, args = _one_case_run(tmp_path, 1)
    field = option.replace("-", "_")
    assert cli.main(args + [f"--{option}", "0.4"]) == 0
    assert json.loads((out / "run.json").read_text())["identity"]["config"][field] == 0.4
    assert cli.main(args) == 2                                   # the paper's sampling is another run
    capsys.readouterr()
    for bad in ("-0.1", "1.5", "nan"):
        with pytest.raises(SystemExit):
            cli.main(args + [f"--{option}={bad}"])
        assert "expected a number in [0, 1]" in capsys.readouterr().err


def test_completeness_rule_goes_into_the_model_and_fine_tunes_inherit_it(tiny_presets, tmp_path, capsys):
    out, args = _one_case_run(tmp_path, 1)
    assert cli.main(args + ["--completeness-rule", "edge"]) == 0
    assert read_metadata(out / "model.pt").completeness_rule == "edge"
    identity = json.loads((out / "run.json").read_text())["identity"]["config"]
    assert "completeness_rule" not in identity                   # metadata only: not another run
    def tune(name):
        return ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / name), "--iterations", "1",
                "--workers", "0", "--init", str(out / "model.pt")]
    assert cli.main(tune("tuned")) == 0
    assert read_metadata(tmp_path / "tuned" / "model.pt").completeness_rule == "edge"
    assert cli.main(tune("both") + ["--completeness-rule", "both"]) == 0
    assert read_metadata(tmp_path / "both" / "model.pt").completeness_rule == "both"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(args + ["--completeness-rule", "vote"])
    assert "invalid choice: 'vote'" in capsys.readouterr().err


def test_fine_tunes_keep_a_gaussian_label_reading_and_drop_a_fitted_table(tiny_presets, tmp_path, caplog):
    out, args = _one_case_run(tmp_path, 1)
    assert cli.main(args) == 0
    trained = load_model(out / "model.pt", device="cpu")
    assert read_metadata(out / "model.pt").calibration() is None
    fitted = LabelCalibration(tuple(v + 1.0 for v in TABLE_VALUES), (2.0,) * len(TABLE_VALUES), vertebrae=9, cases=3)
    gaps, trim = {"max_gaps": 1, "gap_penalty": 0.1}, {"max_trimmed": 3, "trim_penalty": 0.15}
    inits = {"gauss": write_calibrated(trained, gaussian_reading(1.5), tmp_path / "gauss.pt", {**gaps, **trim}),
             "table": write_calibrated(trained, fitted, tmp_path / "table.pt")}
    for name, init in inits.items():
        assert cli.main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / name), "--iterations",
                         "1", "--workers", "0", "--init", str(init)]) == 0
    assert read_metadata(tmp_path / "gauss" / "model.pt").calibration() == gaussian_reading(1.5)
    assert read_metadata(tmp_path / "gauss" / "model.pt").label_gaps() == gaps
    assert read_metadata(tmp_path / "gauss" / "model.pt").label_trim() == trim  # the ends allowance comes along
    assert read_metadata(tmp_path / "table" / "model.pt").calibration() is None
    assert [read_metadata(path).training["init_label_reading"] for path in
            (out / "model.pt", tmp_path / "gauss" / "model.pt", tmp_path / "table" / "model.pt")] == \
        [None, "kept", "dropped"]
    assert read_metadata(tmp_path / "table" / "model.pt").training["init_start_network"] == "none"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "fitted" in r.getMessage()]
    assert len(warnings) == 1 and "table.pt" in warnings[0] and "calibrate" in warnings[0]
    assert not gaussian_reading(1.5).fitted and fitted.fitted


def test_a_fine_tune_trains_the_main_network_and_keeps_the_start_and_rescue_networks(tiny_presets, tmp_path, capsys):
    out, args = _one_case_run(tmp_path, 1)
    assert cli.main(args) == 0
    assert cli.main(args[:-4] + ["--out", str(tmp_path / "start"), "--seed", "5", "--iterations", "1"]) == 0
    both, three = tmp_path / "both.pt", tmp_path / "three.pt"
    assert cli.main(["combine", "--model", str(out / "model.pt"), "--start", str(tmp_path / "start" / "model.pt"),
                     "--out", str(both)]) == 0
    assert cli.main(["combine", "--model", str(both), "--rescue", str(out / "model.pt"), "--out", str(three)]) == 0
    write_spine_case(tmp_path / "held", "case009", [23, 22], seed=3)
    assert cli.main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "tuned"), "--iterations",
                     "1", "--workers", "0", "--init", str(three), "--validation", str(tmp_path / "held")]) == 0
    lines = (tmp_path / "tuned" / "validation.jsonl").read_text().splitlines()
    assert lines and "scan_dice" in json.loads(lines[-1])                 # the whole-scan validation ran
    init, tuned = (load_model(p, device="cpu") for p in (three, tmp_path / "tuned" / "model.pt"))
    (init_main, init_start), (tuned_main, tuned_start) = networks(init), networks(tuned)
    for kept, was in ((tuned_start, init_start), (rescue_network(tuned), rescue_network(init))):
        assert all(torch.equal(a, b) for a, b in zip(was.state_dict().values(), kept.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(init_main.state_dict().values(), tuned_main.state_dict().values()))
    assert tuned.metadata.start_network == init.metadata.start_network
    assert [read_metadata(p).training["init_start_network"] for p in (out / "model.pt", tmp_path / "tuned" / "model.pt")] \
        == [None, "kept"]


def _parsed(*options: str):
    return train_cli._config(cli.build_parser().parse_args(["train", "--data", "d", "--out", "o", *options]))


@pytest.mark.parametrize("options, filters, patch, spacing", [
    (("--filters", "24"), 24, 48, 2.5),
    (("--spacing", "2"), 16, 64, 2.0),        # 120 mm / 2 mm = 60 -> the nearest multiple of 16
    (("--spacing", "3"), 16, 48, 3.0),        # 40 lies halfway between 32 and 48: the larger view
    (("--spacing", "2", "--patch", "48"), 16, 48, 2.0),
])
def test_network_options_make_a_custom_run(options, filters, patch, spacing):
    config = _parsed(*options)
    assert (config.preset, config.network.filters, config.patch_size, config.spacing_mm) == \
        ("custom", filters, patch, spacing)
    assert config.network.head_features == preset("compact", "ct").network.head_features
    assert _parsed().preset == "compact"


def test_network_options_are_checked_and_refused_with_init(tiny_presets, tmp_path, capsys):
    with pytest.raises(InputError, match=r"--patch: .*\(20, 20, 20\) must be divisible by .* = 8"):
        _parsed("--patch", "20")
    out, args = _one_case_run(tmp_path, 1)
    assert cli.main(args + ["--filters", "6"]) == 0
    assert read_metadata(out / "model.pt").network["filters"] == 6
    assert json.loads((out / "run.json").read_text())["identity"]["config"]["preset"] == "custom"
    assert cli.main(args) == 2                                   # the preset's network is another run
    capsys.readouterr()
    tuned = ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "tuned"), "--workers", "0",
             "--init", str(out / "model.pt"), "--filters", "8"]
    assert cli.main(tuned) == 2
    err = capsys.readouterr().err
    assert "--filters: a fine-tuned model keeps the network" in err and not (tmp_path / "tuned").exists()


def test_bad_data_folder_is_one_clear_error(tiny_presets, tmp_path, capsys):
    assert cli.main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "none: dataset folder not found" in err and "Traceback" not in err


def test_progress_line_on_a_pipe_and_on_a_terminal():
    pipe = io.StringIO()
    line = train_cli.ProgressLine(pipe, every=3600)
    terms = {"loss": 3.5, "seg": 0.5, "label": 2.5, "completeness": 0.5}
    for i in (1, 2, 10):
        line(TrainingProgress("train", i, 10, terms, 0.1, 5.0, 50.0))
    rows = pipe.getvalue().splitlines()
    assert len(rows) == 2 and rows[0].startswith("train 1/10") and rows[1].startswith("train 10/10")
    assert "ETA 0:00:50" in rows[0] and "loss 3.5" in rows[0]

    class Tty(io.StringIO):
        def isatty(self):
            return True
    tty = Tty()
    line = train_cli.ProgressLine(tty)
    line(TrainingProgress("train", 1, 10, terms, 0.1, 5.0, math.nan))
    line(TrainingProgress("train", 10, 10, terms, 0.1, 5.0, 0.0))
    assert tty.getvalue().startswith("\rtrain 1/10") and tty.getvalue().count("\n") == 1
    assert "ETA --:--" in tty.getvalue()


def test_presets_keep_about_the_papers_128_mm_field_of_view():
    fov = {name: preset(name, "ct").patch_size * preset(name, "ct").spacing_mm for name in ("paper", "compact")}
    assert fov == {"paper": pytest.approx(128.0), "compact": pytest.approx(120.0)}
    assert preset("paper", "ct").network.filters == 84 and preset("compact", "mr").normalization.kind == "percentile"
    with pytest.raises(ValueError):
        preset("huge", "ct")


def test_centred_patch_jitter_is_five_mm_on_every_preset_grid():
    assert preset("paper", "ct").replace(centred_fraction=0.5).sampling().centre_jitter == 5    # 1 mm grid
    compact = preset("compact", "ct").replace(centred_fraction=0.5).sampling()
    assert compact.centre_jitter == 2 and compact.centred_fraction == 0.5                   # 2.5 mm grid
    assert "centred_fraction" not in preset("compact", "ct").identity()   # runs from before it still resume
    assert "start_fraction" not in preset("compact", "ct").identity()
    assert "partial_memory" not in preset("compact", "ct").identity()
    assert preset("compact", "ct").replace(partial_memory=0.3).sampling().partial_memory == 0.3
    assert "overreach_memory" not in preset("compact", "ct").identity()
    assert preset("compact", "ct").replace(overreach_memory=0.2).sampling().overreach_memory == 0.2
    assert "end_fraction" not in preset("compact", "ct").identity()
    assert preset("compact", "ct").replace(end_fraction=0.15).sampling().end_fraction == 0.15
    assert preset("compact", "ct").replace(centred_fraction=0.5).identity()["centred_fraction"] == 0.5
    with pytest.raises(ValueError, match="centred_fraction"):
        preset("compact", "ct").replace(centred_fraction=2.0)


def test_first_ctrl_c_asks_to_stop_and_the_second_interrupts(capsys):
    import os
    import signal

    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when started in the background
    should_stop, restore = train_cli._stop_flag()
    try:
        assert not should_stop()
        os.kill(os.getpid(), signal.SIGINT)
        assert should_stop()
        assert "stopping after this iteration" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        restore()
    assert signal.getsignal(signal.SIGINT) == before


def test_label_path_batch_and_beta_options_reach_the_configuration(capsys):
    config = _parsed("--label-path-only", "--batch-size", "4", "--beta1", "0.9")
    assert (config.trained_part, config.batch_size, config.beta1) == ("label-path", 4, 0.9)
    assert (_parsed().trained_part, _parsed().batch_size, _parsed().beta1) == ("all", 1, 0.99)
    with pytest.raises(SystemExit):
        _parsed("--beta1", "1")
    assert "expected a number in [0, 1)" in capsys.readouterr().err


def test_cosine_schedule_falls_from_the_rate_to_nearly_zero_and_constant_stays():
    cosine = preset("compact", "ct").replace(iterations=10, learning_rate=1e-3, learning_rate_schedule="cosine")
    rates = [cosine.learning_rate_at(step) for step in range(10)]
    assert rates[0] == pytest.approx(1e-3) and rates[5] == pytest.approx(5e-4)
    assert rates[9] == pytest.approx(1e-3 * (1 - math.cos(math.pi / 10)) / 2) and rates[9] < 3e-5
    assert all(a > b for a, b in zip(rates, rates[1:]))
    constant = cosine.replace(learning_rate_schedule="constant")
    assert {constant.learning_rate_at(step) for step in range(10)} == {1e-3}
    assert "learning_rate_schedule" not in constant.identity()              # runs from before it still resume
    assert cosine.identity()["learning_rate_schedule"] == "cosine"
    with pytest.raises(ValueError, match="learning_rate_schedule"):
        cosine.replace(learning_rate_schedule="step")
    assert _parsed("--lr-schedule", "cosine").learning_rate_schedule == "cosine"
    assert _parsed().learning_rate_schedule == "constant"
    with pytest.raises(SystemExit):
        _parsed("--lr-schedule", "linear")

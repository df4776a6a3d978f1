"""``vertebra-traversal tune-masks``: what it refuses before it traverses anything, and what a run writes."""
from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
import torch

from model_factory import tiny_model
from test_training_fixtures import write_spine_case
from vertebra_traversal.checkpoint import load_model, save_torchscript
from vertebra_traversal.cli import main as cli
from vertebra_traversal.cli.tune_masks import write_tuned
from vertebra_traversal.confidence import ConfidenceCalibration
from vertebra_traversal.evaluate import GroupSummary
from vertebra_traversal.start_network import named_networks
from vertebra_traversal.training.data import find_cases
from vertebra_traversal.training.label_tuning import main_network
from vertebra_traversal.training.mask_tuning import MaskTuning, MaskTuningResult


@pytest.fixture()
def folders(tmp_path):
    write_spine_case(tmp_path / "train", "case001", [24, 23, 22], shape=(48, 24, 24))
    write_spine_case(tmp_path / "aside", "case002", [22, 21, 20], shape=(48, 24, 24), seed=1)
    return tmp_path, tiny_model(tmp_path / "model.pt", spacing_mm=4.0)


def _args(root, model, *extra):
    return ["tune-masks", "--model", str(model), "--data", str(root / "train"), "--validation", str(root / "aside"),
            "--out", str(root / "tuned.pt"), *extra]


def test_an_existing_out_file_is_never_overwritten(folders, capsys):
    root, model = folders
    (root / "tuned.pt").write_bytes(b"the user's file")
    assert cli.main(_args(root, model)) == 2
    assert "tuned.pt: already exists" in capsys.readouterr().err
    assert (root / "tuned.pt").read_bytes() == b"the user's file"


def test_validation_cases_must_not_repeat_training_cases(folders, capsys):
    root, model = folders
    args = _args(root, model)
    args[args.index("--validation") + 1] = str(root / "train")
    assert cli.main(args) == 2
    assert "case001_ct.nii.gz: this held-out case (--validation) is also a training case" in capsys.readouterr().err
    assert not (root / "tuned.pt").exists()


@pytest.mark.parametrize("extra, message", [(["--done-share", "0"], "--done-share must be in (0, 1]"),
                                            (["--search-share", "2"], "--search-share must be in [0, 1]"),
                                            (["--iterations", "10", "--checkpoints", "5", "20"],
                                             "--checkpoints must be between 1 and the iterations"),
                                            (["--batch-size", "0"], "--batch-size must be at least 1"),
                                            (["--shares", "0.5", "0"], "--shares must be in (0, 1]"),
                                            (["--batch-size", "1", "--sampler-share", "0.4"],
                                             "--sampler-share must be 0, or a share of the batch size")])
def test_bad_settings_are_refused_with_their_option(folders, capsys, extra, message):
    root, model = folders
    assert cli.main(_args(root, model, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (root / "tuned.pt").exists()


def test_a_run_writes_the_kept_checkpoint_with_its_record_or_nothing(folders, capsys):
    root, model = folders
    code = cli.main(_args(root, model, "--iterations", "4", "--checkpoints", "2", "4", "--search-share", "1",
                          "--sampler-share", "0.5", "--shares", "1", "0.5", "--identification", "count"))
    summary = json.loads(capsys.readouterr().out)
    assert list(summary["scores"]) == ["0", "2@0.5", "2", "4@0.5", "4"] and summary["patches"] > 0
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no checkpoint or cache left behind
    if summary["chosen"] is None:
        assert code == 1 and summary["model"] is None and summary["share"] is None
        assert not (root / "tuned.pt").exists()
        return
    assert code == 0 and summary["model"] == str(root / "tuned.pt")
    tuned, base = load_model(root / "tuned.pt", device="cpu"), load_model(model, device="cpu")
    record = tuned.metadata.training["mask_tuning"]
    assert record["chosen"] == summary["chosen"] and record["share"] == summary["share"] in (0.5, 1.0)
    assert record["data"] == ["case001"]
    assert record["validation"] == ["case002"] and record["tuning"]["iterations"] == 4
    assert record["tuning"]["sampler_share"] == 0.5 and record["tuning"]["identification"] == "count"
    new, old = named_networks(tuned)["main"].state_dict(), named_networks(base)["main"].state_dict()
    assert all(torch.equal(new[k], old[k]) for k in old if not k.startswith(("decoders.", "seg_out.")))


def _aside_row(dice):
    return GroupSummary("aside", 1, 3, dice, 1.5, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.0, 0, 1)


def test_the_kept_checkpoint_is_written_beside_the_start_network_with_its_record(folders, caplog):
    """The writing step alone, given a run's result (which checkpoint a real run keeps depends on its scores)."""
    root, tiny = folders
    assert cli.main(["combine", "--model", str(tiny), "--start", str(tiny), "--out", str(root / "pair.pt")]) == 0
    pair = load_model(root / "pair.pt", device="cpu")
    fitted = ConfidenceCalibration(0.0, 0.0, 1.0).to_json()
    path = save_torchscript(pair.module, replace(pair.metadata, label_confidence=fitted), root / "confident.pt")
    model = load_model(path, device="cpu")
    tuned = main_network(model)
    with torch.no_grad():
        for name, value in tuned.named_parameters():
            if name.startswith(("decoders.", "seg_out.")):
                value.add_(0.5)
    result = MaskTuningResult(chosen=(75, 0.5), scores={(0, 1.0): _aside_row(0.6), (75, 1.0): _aside_row(0.65),
                                                        (75, 0.5): _aside_row(0.7)},
                              losses=[2.0] * 25 + [1.0] * 25, network=tuned, patches=40)
    cases = (find_cases([root / "train"]), find_cases([root / "aside"]))
    with caplog.at_level(logging.WARNING):
        out = write_tuned(root / "tuned.pt", path, model, result, MaskTuning(iterations=150), cases, 12.4)
    assert "label confidence of" in caplog.text
    written = load_model(out, device="cpu")
    networks, old = named_networks(written), named_networks(model)
    assert set(networks) == {"main", "start"}
    new_main, new_start = networks["main"].state_dict(), networks["start"].state_dict()
    assert all(torch.equal(new_main[k], v) for k, v in tuned.state_dict().items())
    assert all(torch.equal(new_start[k], v) for k, v in old["start"].state_dict().items())
    assert not torch.equal(new_main["seg_out.weight"], old["main"].state_dict()["seg_out.weight"])
    meta = written.metadata
    assert meta.label_confidence == {} and meta.start_network == model.metadata.start_network
    record = meta.training["mask_tuning"]
    assert record["init"] == str(path) and record["chosen"] == 75 and record["share"] == 0.5
    assert record["patches"] == 40
    assert record["first_loss"] == 2.0 and record["last_loss"] == 1.0 and record["seconds"] == 12
    assert record["tuning"]["iterations"] == 150 and list(record["scores"]) == ["0", "75@0.5", "75"]
    assert record["scores"]["75@0.5"]["dice"] == 0.7 and record["scores"]["0"]["false_detections"] == 1
    assert record["data"] == ["case001"] and record["validation"] == ["case002"]
    with pytest.raises(ValueError, match="no candidate was kept"):
        write_tuned(root / "other.pt", path, model, replace(result, chosen=None), MaskTuning(), cases, 1.0)
    assert not (root / "other.pt").exists()

"""``vertebra-traversal tune-masks``: what it refuses before it traverses anything, and what a run writes."""
from __future__ import annotations

import json

import pytest
import torch

from model_factory import tiny_model
from test_training_fixtures import write_spine_case
from vertebra_traversal.checkpoint import load_model
from vertebra_traversal.cli import main as cli
from vertebra_traversal.start_network import named_networks


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
                          "--sampler-share", "0.5"))
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["scores"]) == {"0", "2", "4"} and summary["patches"] > 0
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no checkpoint or cache left behind
    if summary["chosen"] is None:
        assert code == 1 and summary["model"] is None and not (root / "tuned.pt").exists()
        return
    assert code == 0 and summary["model"] == str(root / "tuned.pt")
    tuned, base = load_model(root / "tuned.pt", device="cpu"), load_model(model, device="cpu")
    record = tuned.metadata.training["mask_tuning"]
    assert record["chosen"] == summary["chosen"] and record["data"] == ["case001"]
    assert record["validation"] == ["case002"] and record["tuning"]["iterations"] == 4
    assert record["tuning"]["sampler_share"] == 0.5
    new, old = named_networks(tuned)["main"].state_dict(), named_networks(base)["main"].state_dict()
    assert all(torch.equal(new[k], old[k]) for k in old if not k.startswith(("decoders.", "seg_out.")))

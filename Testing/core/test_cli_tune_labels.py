"""``vertebra-traversal tune-labels``: what it refuses before it segments anything."""
from __future__ import annotations

import pytest

from model_factory import tiny_model
from test_training_fixtures import write_spine_case
from vertebra_traversal.cli import main as cli


@pytest.fixture()
def folders(tmp_path):
    write_spine_case(tmp_path / "train", "case001", [24, 23])
    write_spine_case(tmp_path / "aside", "case002", [22, 21, 20])
    return tmp_path, tiny_model(tmp_path / "model.pt")


def test_an_existing_out_file_is_never_overwritten(folders, capsys):
    root, model = folders
    out = root / "tuned.pt"
    out.write_bytes(b"the user's file")
    args = ["tune-labels", "--model", str(model), "--data", str(root / "train"), "--validation",
            str(root / "aside"), "--out", str(out)]
    assert cli.main(args) == 2
    assert "tuned.pt: already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's file"


def test_validation_cases_must_not_repeat_training_cases(folders, capsys):
    root, model = folders
    args = ["tune-labels", "--model", str(model), "--data", str(root / "train"), "--validation",
            str(root / "train"), "--out", str(root / "tuned.pt")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "case001_ct.nii.gz: this held-out case (--validation) is also a training case" in err
    assert not (root / "tuned.pt").exists()


@pytest.mark.parametrize("option, value", [("--epochs", "0"), ("--approach", "-1"), ("--learning-rate", "0")])
def test_bad_settings_are_refused_with_their_value(folders, capsys, option, value):
    root, model = folders
    args = ["tune-labels", "--model", str(model), "--data", str(root / "train"), "--validation",
            str(root / "aside"), "--out", str(root / "tuned.pt"), option, value]
    assert cli.main(args) == 2
    assert f"{option} must be" in capsys.readouterr().err
    assert not (root / "tuned.pt").exists()

"""Where the bundled models are found: the module's Resources/Models, or a wheel's share/ folder."""
from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from vertebra_traversal.imageio import InputError
from vertebra_traversal.models import BUNDLED, SEARCH_DIRS, models_dir, resolve_model

ROOT = Path(__file__).resolve().parents[2]
RESOURCES = ROOT / "VertebraTraversal" / "Resources" / "Models"


def test_source_tree_uses_the_modules_resources_folder():
    assert SEARCH_DIRS[0] == RESOURCES
    assert resolve_model("ct") == BUNDLED["ct"] == RESOURCES / "ct.pt"
    assert resolve_model(" MR ") == RESOURCES / "mr.pt"
    for name in ("ct", "mr"):
        assert (RESOURCES / f"{name}.md").read_text(encoding="utf-8").count("Not for clinical use") == 1


def test_first_folder_that_holds_the_ct_model_wins(tmp_path):
    empty, wheel = tmp_path / "Resources" / "Models", tmp_path / "share" / "models"
    wheel.mkdir(parents=True)
    assert models_dir((empty, wheel)) == empty                  # none holds it: the first, for the message
    (wheel / "ct.pt").write_bytes(b"x")
    assert models_dir((empty, wheel)) == wheel
    empty.mkdir(parents=True)
    (empty / "ct.pt").write_bytes(b"y")
    assert models_dir((empty, wheel)) == empty


def test_a_path_that_does_not_exist_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="nothing.pt: model file not found"):
        resolve_model(str(tmp_path / "nothing.pt"))


def test_wheel_data_files_carry_every_bundled_file():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["data-files"]["share/vertebra-traversal/models"]
    files = sorted(p.relative_to(ROOT).as_posix() for p in RESOURCES.iterdir() if p.is_file())
    assert {"ct.pt", "mr.pt"} <= {Path(f).name for f in files}
    assert [f for f in files if not any(fnmatch(f, pattern) for pattern in patterns)] == []
    assert SEARCH_DIRS[1].parts[-3:] == ("share", "vertebra-traversal", "models")


def test_the_bundled_models_carry_the_readings_their_cards_describe():
    from vertebra_traversal.checkpoint import read_metadata
    mr, ct = read_metadata(resolve_model("mr")), read_metadata(resolve_model("ct"))
    assert mr.label_anchor() == {"bottom_anchor_mm": 10.0, "bottom_anchor_penalty": 1.0}  # counts from the sacrum
    assert ct.label_anchor() == {} and ct.label_sequence() == {"max_gaps": 2, "gap_penalty": 0.1, "max_trimmed": 3,
                                                               "trim_penalty": 0.15, "wide_ratio": 1.05,
                                                               "wide_penalties": [0.075, 0.05]}
    assert "spacing" not in mr.label_calibration  # the MR model reads no spacing
    assert mr.fragment_pieces == ct.fragment_pieces == "all"  # the paper's fragments in both

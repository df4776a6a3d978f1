"""Two models mixed weight by weight (``weight_blend``, ``combine --blend``)."""
from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
import torch

from model_factory import TINY, tiny_model
from vertebra_traversal.checkpoint import load_model, save_torchscript
from vertebra_traversal.cli import main as cli
from vertebra_traversal.confidence import ConfidenceCalibration
from vertebra_traversal.network import IterativeFCN
from vertebra_traversal.start_network import named_networks
from vertebra_traversal.weight_blend import mixed_state


def _state(path):
    return {k: v.clone() for k, v in load_model(path, device="cpu").module.state_dict().items()}


def test_mixed_state_is_the_straight_line_between_the_float_weights_and_keeps_the_counters():
    torch.manual_seed(0)
    mine, theirs = IterativeFCN(TINY).state_dict(), IterativeFCN(TINY).state_dict()
    counters = [k for k in mine if not mine[k].is_floating_point()]
    assert counters                                           # BatchNorm's num_batches_tracked
    for key in counters:
        theirs[key] = mine[key] + 7
    for share in (0.0, 0.25, 1.0):
        mixed = mixed_state(mine, theirs, share)
        for key, value in mine.items():
            if key in counters:
                assert torch.equal(mixed[key], value)
            else:
                torch.testing.assert_close(mixed[key], (1 - share) * value + share * theirs[key], rtol=0,
                                           atol=1e-7)
    weight = next(k for k in mine if k.endswith("weight") and mine[k].is_floating_point())
    assert not torch.equal(mine[weight], theirs[weight])      # the two differ, so the mix means something
    with pytest.raises(ValueError, match="share must be in"):
        mixed_state(mine, theirs, 1.5)
    with pytest.raises(ValueError, match="differ in their weights"):
        mixed_state(mine, {k: v for k, v in theirs.items() if k != weight}, 0.5)


def test_combine_blend_writes_the_mix_with_the_models_metadata_and_records_the_other(tmp_path, capsys):
    model, other = tiny_model(tmp_path / "model.pt", seed=0), tiny_model(tmp_path / "other.pt", seed=1)
    loaded = load_model(model, device="cpu")
    fitted = ConfidenceCalibration(0.0, 0.0, 1.0).to_json()
    confident = save_torchscript(loaded.module, replace(loaded.metadata, label_confidence=fitted),
                                 tmp_path / "confident.pt")
    out = tmp_path / "mix.pt"
    assert cli.main(["combine", "--model", str(confident), "--blend", str(other), "--share", "0.25",
                     "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    mine, theirs, mixed = _state(model), _state(other), _state(out)
    for key, value in mine.items():
        if value.is_floating_point():
            torch.testing.assert_close(mixed[key], 0.75 * value + 0.25 * theirs[key], rtol=0, atol=1e-6)
    written = load_model(out, device="cpu").metadata
    assert written.label_confidence == {}
    assert written.spacing_mm == loaded.metadata.spacing_mm and written.modality == "CT"
    record = written.training["blend"]
    assert record["file"] == "other.pt" and record["share"] == 0.25
    assert record["sha1"] == hashlib.sha1(other.read_bytes()).hexdigest()[:16]


def test_blend_mixes_every_network_of_a_two_network_model(tmp_path):
    paths = [tiny_model(tmp_path / f"n{seed}.pt", seed=seed) for seed in range(4)]
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    assert cli.main(["combine", "--model", str(paths[0]), "--start", str(paths[1]), "--out", str(first)]) == 0
    assert cli.main(["combine", "--model", str(paths[2]), "--start", str(paths[3]), "--out", str(second)]) == 0
    out = tmp_path / "half.pt"
    assert cli.main(["combine", "--model", str(first), "--blend", str(second), "--share", "0.5",
                     "--out", str(out)]) == 0
    blended = load_model(out, device="cpu")
    assert sorted(named_networks(blended)) == ["main", "start"]
    assert blended.metadata.start_network == load_model(first, device="cpu").metadata.start_network
    for name, source in (("main", (paths[0], paths[2])), ("start", (paths[1], paths[3]))):
        state = named_networks(blended)[name].state_dict()
        a, b = (_state(p) for p in source)
        floats = [k for k in a if a[k].is_floating_point()]
        for key in floats:
            torch.testing.assert_close(state[key], 0.5 * (a[key] + b[key]), rtol=0, atol=1e-6)
        assert any(not torch.equal(a[k], b[k]) for k in floats)      # the two differ: the mix means something


def test_blend_refuses_models_of_another_lineage_or_an_existing_file(tmp_path, capsys):
    model = tiny_model(tmp_path / "model.pt", seed=0)
    mr = tiny_model(tmp_path / "mr.pt", modality="MR", seed=1)
    coarse = tiny_model(tmp_path / "coarse.pt", spacing_mm=6.0, seed=1)
    two = tmp_path / "two.pt"
    assert cli.main(["combine", "--model", str(model), "--start", str(model),
                     "--out", str(two)]) == 0
    capsys.readouterr()
    cases = [(mr, "modality"), (coarse, "spacing_mm"), (two, "holds the networks main, start")]
    for other, message in cases:
        out = tmp_path / f"out-{other.stem}.pt"
        assert cli.main(["combine", "--model", str(model), "--blend", str(other), "--share", "0.5",
                         "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert message in error and str(other) in error and not out.exists()
    existing = tmp_path / "existing.pt"
    existing.write_bytes(b"mine")
    assert cli.main(["combine", "--model", str(model), "--blend", str(model), "--share", "0.5",
                     "--out", str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err and existing.read_bytes() == b"mine"
    for extra, message in ((["--share", "2"], "--share must be in [0, 1]"), ([], "--blend and --share go together")):
        out = tmp_path / "never.pt"
        assert cli.main(["combine", "--model", str(model), "--blend", str(model), "--out", str(out)] + extra) == 2
        assert message in capsys.readouterr().err and not out.exists()

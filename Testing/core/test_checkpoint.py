"""Checkpoints: TorchScript / .pt2 round trips, metadata validation, refusal of bad files (each message
names the file), atomic writes, quiet TorchScript deprecation warnings, device resolution."""
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from vertebra_traversal import anatomy
from vertebra_traversal.checkpoint import (CheckpointError, ModelMetadata, load_model, read_metadata, resolve_device,
                                           save_exported, save_torchscript)
from vertebra_traversal.imageio import InputError
from vertebra_traversal.metadata import FORMAT, FORMAT_VERSION
from vertebra_traversal.network import IterativeFCN, NetworkConfig

torch.set_num_threads(1)
CONFIG = NetworkConfig(filters=4, depth=2, head_features=6, head_depth=1, patch_size=(16, 16, 16))
CT_NORM = {"kind": "ct", "clip": [-1000, 2000], "scale": 0.001, "offset": 0}


class _Unscriptable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(v for v in [x])  # generator expressions are not TorchScript


def _metadata(**changes) -> ModelMetadata:
    fields = dict(modality="CT", target="vertebra", spacing_mm=(2.0, 2.0, 2.0), patch_size=(16, 16, 16),
                  normalization=CT_NORM, training={"iterations": 3, "data": "phantoms"})
    fields.update(changes)
    return ModelMetadata(**fields)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained-looking tiny model (non-trivial BN statistics) saved in both formats."""
    torch.manual_seed(0)
    model = IterativeFCN(CONFIG)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 2, 16, 16, 16) * 3 + 1)  # moves the BN running statistics
    folder = tmp_path_factory.mktemp("models")
    script = save_torchscript(model, _metadata(), folder / "model.pt")
    exported = save_exported(model, _metadata(), folder / "model.pt2")
    return model.eval(), script, exported


def _write_torchscript(path: Path, extra: dict) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(nn.Linear(2, 1)), str(path), _extra_files=extra)
    return path


@pytest.mark.parametrize("which", [1, 2])
def test_round_trip_gives_identical_outputs_and_metadata(saved, which):
    model, *paths = saved
    loaded = load_model(paths[which - 1], device="cpu")
    x = torch.randn(3, 2, 16, 16, 16)
    with torch.inference_mode():
        for got, want in zip(loaded.module(x), model(x)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    expected = _metadata(network=CONFIG.to_json())  # filled in from model.config when left empty
    assert loaded.metadata == expected
    assert loaded.device == torch.device("cpu") and loaded.path == paths[which - 1]


def test_loaded_torchscript_is_in_eval_mode(saved):
    _, script, _ = saved
    loaded = load_model(script, device="cpu")
    assert loaded.module.training is False
    x = torch.randn(2, 2, 16, 16, 16)
    with torch.inference_mode():  # eval-mode BN: an item's output does not depend on its batch mates
        torch.testing.assert_close(loaded.module(x)[1][:1], loaded.module(x[:1])[1])


def test_saving_and_loading_emits_no_torchscript_deprecation_warning(saved, tmp_path):
    model, script, _ = saved
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_torchscript(model, _metadata(), tmp_path / "again.pt")
        load_model(script, device="cpu")
    assert [str(w.message) for w in caught if "torch.jit" in str(w.message)] == []


def test_metadata_json_round_trip_and_documented_example():
    meta = _metadata(direction="down", labels=(20, 21, 22, 23, 24), min_fragment_mm3=250.0, completeness_rule="edge",
                     surface_threshold_hu=100, edge_margin_mm=2, edge_min_contact_mm2=50,
                     edge_margin_faces="cranio-caudal", max_spine_offset_mm=30, min_volume_ratio=0.35,
                     fragment_pieces="largest")
    doc = json.loads(json.dumps(meta.to_json()))
    assert doc["min_volume_ratio"] == 0.35 and doc["fragment_pieces"] == "largest"
    assert doc["surface_threshold_hu"] == 100.0 and doc["edge_margin_mm"] == 2.0 and doc["max_spine_offset_mm"] == 30.0
    assert doc["format"] == FORMAT and doc["format_version"] == FORMAT_VERSION
    assert ModelMetadata.from_json(doc) == meta
    example = {"format": FORMAT, "format_version": 1, "modality": "MR", "target": "vertebra",
               "spacing_mm": [2.0, 2.0, 2.0], "patch_size": [64, 64, 64],
               "normalization": {"kind": "percentile", "low": 5, "high": 95}, "direction": "up",
               "labels": [v.label for v in anatomy.VERTEBRAE], "min_fragment_mm3": 1000.0}
    parsed = ModelMetadata.from_json(example)
    assert parsed.patch_size == (64, 64, 64) and parsed.labels == tuple(v.label for v in anatomy.VERTEBRAE)
    assert parsed.completeness_rule == "network"  # older models: the paper's rule
    assert parsed.surface_threshold_hu is None  # ... and the paper's surface refinement threshold
    assert parsed.edge_margin_mm == parsed.edge_min_contact_mm2 == 0.0  # ... a mask touching the border is cut
    assert parsed.edge_margin_faces == "all" and parsed.max_spine_offset_mm == 0.0  # ... and no instance dropped
    assert parsed.min_volume_ratio == 0.0  # ... not even a fragment
    assert parsed.fragment_pieces == "all"  # ... and the paper's fragments
    assert _metadata().labels == tuple(v.label for v in anatomy.VERTEBRAE)


@pytest.mark.parametrize("field, value", [
    ("modality", "PET"), ("target", "disc"), ("direction", "sideways"), ("completeness_rule", "vote"),
    ("spacing_mm", (1.0, 0.0, 1.0)),
    ("spacing_mm", (1.0, 1.0)), ("patch_size", (16, 16, 16.5)), ("labels", (1, 2, 2)), ("labels", (1, 26)),
    ("min_fragment_mm3", float("nan")), ("normalization", {"kind": "zscore"}), ("training", {"x": {1, 2}}),
    ("surface_threshold_hu", float("nan")), ("surface_threshold_hu", 5000), ("surface_threshold_hu", "100"),
    ("edge_margin_mm", -1.0), ("edge_margin_mm", float("inf")), ("edge_margin_mm", "2"),
    ("edge_min_contact_mm2", -5.0), ("edge_min_contact_mm2", float("nan")), ("edge_margin_faces", "lateral"),
    ("max_spine_offset_mm", -1.0), ("max_spine_offset_mm", float("nan")),
    ("min_volume_ratio", -0.1), ("min_volume_ratio", 1.0), ("min_volume_ratio", float("nan")),
    ("min_volume_ratio", True), ("fragment_pieces", "biggest"),
    ("network", {"filters": 4, "depth": 2, "head_depth": 1, "patch_size": [32, 32, 32]}),
])
def test_invalid_metadata_fields_are_refused_by_name(field, value):
    name = "normalization" if field == "normalization" else ("network" if field == "network" else field)
    with pytest.raises(CheckpointError, match=name):
        _metadata(**{field: value})


def test_from_json_refuses_wrong_format_and_missing_fields():
    doc = _metadata().to_json()
    with pytest.raises(CheckpointError, match="format"):
        ModelMetadata.from_json({**doc, "format": "something-else"})
    with pytest.raises(CheckpointError, match="normalization"):
        ModelMetadata.from_json({k: v for k, v in doc.items() if k != "normalization"})
    with pytest.raises(CheckpointError, match="newer"):
        ModelMetadata.from_json({**doc, "format_version": FORMAT_VERSION + 1})


def _bad_files(folder: Path) -> dict:
    random_bytes = folder / "random.pt"
    random_bytes.write_bytes(os.urandom(4096))
    state_dict = folder / "state_dict.pt"
    torch.save(IterativeFCN(CONFIG).state_dict(), state_dict)
    newer = {**_metadata().to_json(), "format_version": FORMAT_VERSION + 1}
    return {
        "not a model": random_bytes,
        "plain torch.save": state_dict,
        "no metadata.json": _write_torchscript(folder / "bare.pt", {}),
        "newer": _write_torchscript(folder / "newer.pt", {"metadata.json": json.dumps(newer)}),
        "not valid JSON": _write_torchscript(folder / "broken.pt", {"metadata.json": "{oops"}),
        "file not found": folder / "missing.pt",
    }


def test_bad_files_are_refused_with_the_file_named(tmp_path):
    for problem, path in _bad_files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            load_model(path, device="cpu")
        assert str(path) in str(info.value), problem
        assert problem in str(info.value), (problem, str(info.value))


def test_wrong_modality_is_refused_and_matching_modality_accepted(saved):
    _, script, exported = saved
    for path in (script, exported):
        with pytest.raises(CheckpointError, match="MR model is needed") as info:
            load_model(path, device="cpu", expect_modality="mr")
        assert str(path) in str(info.value)
    assert load_model(script, device="cpu", expect_modality="ct").metadata.modality == "CT"


def test_read_metadata_does_not_need_the_network(saved):
    _, script, exported = saved
    assert read_metadata(script) == read_metadata(exported)


def test_save_is_atomic_and_never_overwrites(saved, tmp_path):
    model, script, _ = saved
    target = tmp_path / "user.pt"
    target.write_bytes(b"the user's own file")
    with pytest.raises(CheckpointError, match="exists"):
        save_torchscript(model, _metadata(), target)
    assert target.read_bytes() == b"the user's own file"
    save_torchscript(model, _metadata(), target, overwrite=True)
    assert read_metadata(target).modality == "CT"
    with pytest.raises(Exception):  # cannot be scripted: nothing may be left behind
        save_torchscript(_Unscriptable(), _metadata(), tmp_path / "broken.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user.pt"]
    with pytest.raises(CheckpointError, match=".pt2"):
        save_exported(model, _metadata(), tmp_path / "model.pt")


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(InputError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="expected 'auto'"):
        resolve_device("tpu")

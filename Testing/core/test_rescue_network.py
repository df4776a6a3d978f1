"""A model's rescue network: the start network of a second traversal, run only where the traversal with
the model's own start network stalls (``combine --rescue``, ``start_network.RescueSwitch``).

The networks are tiny ones whose segmentation output is a constant (``test_start_network_fallback``), so
which network answered a scan is known exactly.
"""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from test_cli_segment import _ct, _run
from test_start_network_fallback import EVERYWHERE, NOTHING, _constant, _same_labels
from vertebra_traversal.checkpoint import CheckpointError, load_model
from vertebra_traversal.cli import main as cli
from vertebra_traversal.imageio import read_image
from vertebra_traversal.models import resolve_model
from vertebra_traversal.phantom import generate_case
from vertebra_traversal.phantom.sample import SAMPLE_CONFIG
from vertebra_traversal.pipeline import SegmentConfig, segment_image
from vertebra_traversal.start_network import networks, rescue_network


def _with_rescue(tmp_path, main_logit: float, start_logit: float, rescue_logit: float):
    """``(model with a rescue network, the same model without it)``, loaded."""
    main, start = _constant(tmp_path / "main.pt", main_logit), _constant(tmp_path / "start.pt", start_logit, seed=1)
    rescue = _constant(tmp_path / "rescue.pt", rescue_logit, seed=2)
    both, three = tmp_path / "both.pt", tmp_path / "three.pt"
    assert cli.main(["combine", "--model", str(main), "--start", str(start), "--out", str(both)]) == 0
    assert cli.main(["combine", "--model", str(both), "--rescue", str(rescue), "--out", str(three)]) == 0
    return load_model(three, device="cpu"), load_model(both, device="cpu")


def _segment(image, model, **config):
    events = []
    result = segment_image(image, model, SegmentConfig(**config), on_event=events.append)
    return result, [e for e in events if e["event"] == "restart"]


def test_the_rescue_network_runs_where_the_start_networks_traversal_finds_nothing(tmp_path):
    model, without = _with_rescue(tmp_path, NOTHING, NOTHING, EVERYWHERE)
    assert model.metadata.start_use() == "always" and model.metadata.start_network["rescue"]["file"] == "rescue.pt"
    image = read_image(_ct(tmp_path / "scan_ct.nii.gz"))
    first, restarts = _segment(image, without)
    assert first.vertebrae == () and restarts == []
    rescued, restarts = _segment(image, model)
    assert rescued.vertebrae and rescued.rescue_network_used and rescued.start_network_used
    assert restarts == [{"event": "restart", "network": "rescue", "found": 0}]
    everywhere = _constant(tmp_path / "start2.pt", EVERYWHERE, seed=2)     # the rescue as the start network
    assert cli.main(["combine", "--model", str(tmp_path / "main.pt"), "--start", str(everywhere), "--out",
                     str(tmp_path / "as-start.pt")]) == 0
    as_start = segment_image(image, load_model(tmp_path / "as-start.pt", device="cpu"))
    assert rescued.vertebrae == as_start.vertebrae and _same_labels(rescued, as_start)
    assert rescued.steps == first.steps + as_start.steps
    off, restarts = _segment(image, model, rescue_network=False)
    assert off.vertebrae == () and not off.rescue_network_used and restarts == [] and off.steps == first.steps
    alone, restarts = _segment(image, model, start_network="off")   # the main network alone: no second run
    assert alone.vertebrae == () and not alone.start_network_used and restarts == []


def test_the_rescue_network_does_not_run_where_the_first_traversal_spans_the_scan(tmp_path):
    model, without = _with_rescue(tmp_path, EVERYWHERE, EVERYWHERE, NOTHING)
    image = read_image(_ct(tmp_path / "scan_ct.nii.gz", shape=(60, 200, 36)))     # 199 x 1.6 mm along index j
    first, _ = _segment(image, without)
    result, restarts = _segment(image, model)
    assert len(first.vertebrae) > 1 and restarts == [] and not result.rescue_network_used
    assert result.vertebrae == first.vertebrae and _same_labels(result, first) and result.steps == first.steps


def test_a_stalled_first_run_is_kept_where_the_rescue_network_finds_fewer_vertebrae(tmp_path):
    model, without = _with_rescue(tmp_path, EVERYWHERE, EVERYWHERE, NOTHING)
    image = read_image(_ct(tmp_path / "scan_ct.nii.gz"))      # one instance fills this 62 mm scan: stalled
    first, _ = _segment(image, without)
    result, restarts = _segment(image, model)
    assert len(first.vertebrae) == 1 and [r["found"] for r in restarts] == [1]
    assert result.vertebrae == first.vertebrae and not result.rescue_network_used and result.start_network_used
    assert result.steps > first.steps       # both ran


def test_combine_with_a_rescue_network_keeps_every_network_and_extract_takes_one_out(tmp_path):
    model, without = _with_rescue(tmp_path, NOTHING, EVERYWHERE, NOTHING)
    start, rescue = networks(model)[1], rescue_network(model)
    assert rescue is not None and rescue_network(without) is None
    x = torch.rand(2, 2, *model.metadata.patch_size)
    x[0, 1] = 0.0
    with torch.inference_mode():     # the rescue network never answers inside the model's own forward
        for got, want in zip(model.module(x), without.module(x)):
            torch.testing.assert_close(got, want)
    for name, network in (("main", networks(model)[0]), ("start", start), ("rescue", rescue)):
        out = tmp_path / f"{name}-alone.pt"
        assert cli.main(["combine", "--model", str(tmp_path / "three.pt"), "--extract", name, "--out", str(out)]) == 0
        alone = load_model(out, device="cpu")
        assert networks(alone)[1] is None and not alone.metadata.start_network
        for a, b in zip(alone.module.state_dict().values(), network.state_dict().values()):
            torch.testing.assert_close(a, b)
    other = _constant(tmp_path / "other.pt", EVERYWHERE, seed=3)
    assert cli.main(["combine", "--model", str(tmp_path / "three.pt"), "--start", str(other), "--out",
                     str(tmp_path / "new-start.pt")]) == 0
    replaced = load_model(tmp_path / "new-start.pt", device="cpu")
    assert replaced.metadata.start_network["file"] == "other.pt"
    assert replaced.metadata.start_network["rescue"] == model.metadata.start_network["rescue"]
    for a, b in zip(rescue_network(replaced).state_dict().values(), rescue.state_dict().values()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("args, message", [
    (["--model", "main.pt", "--rescue", "rescue.pt"], "main.pt: a rescue network runs where"),
    (["--model", "fallback.pt", "--rescue", "rescue.pt"], "fallback.pt: a rescue network runs where"),
    (["--model", "three.pt", "--start", "start.pt", "--use", "fallback"], "three.pt: holds a rescue network"),
    (["--model", "both.pt", "--extract", "rescue"], "both.pt: holds no rescue network"),
    (["--model", "main.pt", "--extract", "start"], "main.pt: holds no start network"),
    (["--model", "both.pt", "--rescue", "rescue.pt", "--use", "always"], "--use: only with --start"),
    (["--model", "main.pt", "--extract", "main"], "main.pt: holds one network"),
])
def test_combine_refuses_what_cannot_hold_or_give_a_rescue_network(tmp_path, args, message):
    _with_rescue(tmp_path, NOTHING, NOTHING, EVERYWHERE)
    assert cli.main(["combine", "--model", str(tmp_path / "main.pt"), "--start", str(tmp_path / "start.pt"),
                     "--use", "fallback", "--out", str(tmp_path / "fallback.pt")]) == 0
    paths = [str(tmp_path / a) if a.endswith(".pt") else a for a in args]
    out = _run(["combine"] + paths + ["--out", tmp_path / "new.pt"])
    assert out.returncode != 0 and out.stderr.count("error:") == 1 and message in out.stderr, out.stderr
    assert not (tmp_path / "new.pt").exists()


def test_metadata_and_file_must_agree_on_the_rescue_network(tmp_path):
    model, without = _with_rescue(tmp_path, NOTHING, NOTHING, EVERYWHERE)
    with pytest.raises(CheckpointError, match="must be 'always' with a rescue network"):
        replace(model.metadata, start_network=dict(model.metadata.start_network, use="fallback"))
    claims = replace(without, metadata=replace(without.metadata, start_network=model.metadata.start_network))
    with pytest.raises(CheckpointError, match="disagree on whether it holds a rescue network"):
        networks(claims)
    hides = replace(model, metadata=without.metadata)
    with pytest.raises(CheckpointError, match="disagree on whether it holds a rescue network"):
        rescue_network(hides)


def test_segment_reports_the_rescue_and_can_leave_it_out(tmp_path):
    _with_rescue(tmp_path, NOTHING, NOTHING, EVERYWHERE)
    image = _ct(tmp_path / "scan_ct.nii.gz")
    for option, used in (([], True), (["--no-rescue-network"], False)):
        out_dir = tmp_path / f"out{len(option)}"
        out = _run(["segment", image, "-o", out_dir, "--model", tmp_path / "three.pt", "--device", "cpu"] + option)
        assert out.returncode == 0, out.stderr
        report = json.loads((out_dir / "scan_ct_report.json").read_text())
        assert report["model"]["rescue_network"] is used and report["rescue_network_used"] is used
        assert bool(report["vertebrae"]) is used


#: An MR scan of the neck (C1 to T2 in view) in which the bundled MR model's start network never starts.
MR_NECK_SEED = 424301


def test_the_bundled_mr_model_rescues_a_neck_scan_its_start_network_never_starts():
    """The bundled MR model's rescue network (MR model card) finds the bodies of this neck scan, each almost
    all on one reference body; their names are wrong (its main network's label value has no cervical level)."""
    case = generate_case(MR_NECK_SEED, replace(SAMPLE_CONFIG, fov="neck", modality="mr"))
    model = load_model(resolve_model("mr"), device="cpu")
    assert model.metadata.start_use() == "always" and rescue_network(model) is not None
    first = segment_image(case.image, model, SegmentConfig(rescue_network=False))
    assert first.vertebrae == () and not first.rescue_network_used
    result = segment_image(case.image, model)
    assert result.rescue_network_used
    found, truth = sitk.GetArrayViewFromImage(result.labels), sitk.GetArrayViewFromImage(case.labels)
    lies_on = []
    for v in result.vertebrae:
        ids, counts = np.unique(truth[found == v.label], return_counts=True)
        counts[ids == 0] = 0
        lies_on.append((int(ids[counts.argmax()]), counts.max() / counts.sum()))
    assert all(share >= 0.9 for _, share in lies_on), lies_on
    assert len({ref for ref, _ in lies_on}) >= 4, lies_on     # four or more bodies of the neck, each once

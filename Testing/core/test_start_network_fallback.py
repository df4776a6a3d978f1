"""When a model's start network runs: ``always``, ``fallback`` (only where the main network stalls:
it finds nothing, or vertebrae bunched in a small part of the scan), ``off``.

The networks are tiny ones whose segmentation output is a constant: probability ~0 everywhere ("finds
nothing") or ~1 everywhere ("bone everywhere"), so which network answered a scan is known exactly.
"""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from model_factory import TINY
from test_cli_segment import _ct, _run
from vertebra_traversal.checkpoint import CheckpointError, load_model, save_torchscript
from vertebra_traversal.cli import main as cli
from vertebra_traversal.fallback import STALLED_SPAN_FRACTION, span_mm
from vertebra_traversal.imageio import read_image
from vertebra_traversal.metadata import ModelMetadata
from vertebra_traversal.models import resolve_model
from vertebra_traversal.network import IterativeFCN
from vertebra_traversal.phantom import generate_case
from vertebra_traversal.phantom.sample import SAMPLE_CONFIG
from vertebra_traversal.pipeline import SegmentConfig, segment_image

NOTHING, EVERYWHERE = -20.0, 20.0
#: A neck scan (C1 to T2 in view) whose search the bundled CT model's main network never starts.
NECK_SEED = 424308


def _constant(path, logit: float, seed: int = 0):
    """A tiny CT model (8 mm grid) whose segmentation is sigmoid(logit) in every voxel of every patch."""
    torch.manual_seed(seed)
    network = IterativeFCN(TINY).eval()
    with torch.no_grad():
        network.seg_out.weight.zero_()
        network.seg_out.bias.fill_(logit)
    metadata = ModelMetadata(modality="CT", target="vertebra", spacing_mm=(8.0,) * 3, patch_size=TINY.patch_size,
                             network=TINY.to_json(), min_fragment_mm3=4 * 8.0 ** 3,
                             normalization={"kind": "ct", "clip": [-1000, 2000], "scale": 0.001, "offset": 0.0})
    return save_torchscript(network, metadata, path)


def _combined(tmp_path, main_logit: float, start_logit: float, use: str):
    main, start = _constant(tmp_path / "main.pt", main_logit), _constant(tmp_path / "start.pt", start_logit, seed=1)
    out = tmp_path / f"{use}.pt"
    assert cli.main(["combine", "--model", str(main), "--start", str(start), "--out", str(out), "--use", use]) == 0
    return load_model(out, device="cpu")


def _runs(tmp_path, model, shape=(60, 40, 36)):
    image = read_image(_ct(tmp_path / "scan_ct.nii.gz", shape=shape))
    events = []
    results = {use: segment_image(image, model, SegmentConfig(start_network=use)) for use in ("always", "off")}
    results["model"] = segment_image(image, model, on_event=events.append)  # the file's own use
    indices = [e["index"] for e in events if e["event"] == "vertebra"]
    assert indices == list(range(1, len(indices) + 1))
    restarts = [e for e in events if e["event"] == "restart"]
    assert restarts == ([{"event": "restart", "network": "start", "found": len(results["off"].vertebrae)}]
                        if results["model"].steps > results["off"].steps else [])    # once, where the second run ran
    return results, [e["step"] for e in events if e["event"] == "patch"], restarts


def _same_labels(a, b) -> bool:
    return np.array_equal(sitk.GetArrayViewFromImage(a.labels), sitk.GetArrayViewFromImage(b.labels))


def test_fallback_runs_the_start_network_only_where_the_main_network_finds_nothing(tmp_path):
    model = _combined(tmp_path, NOTHING, EVERYWHERE, "fallback")
    assert model.metadata.start_network["use"] == "fallback" and model.metadata.start_use() == "fallback"
    results, steps, restarts = _runs(tmp_path, model)
    off, always, fallback = results["off"], results["always"], results["model"]
    assert off.vertebrae == () and not off.start_network_used
    assert always.vertebrae and always.start_network_used
    assert fallback.start_network_used and fallback.vertebrae == always.vertebrae and _same_labels(fallback, always)
    assert fallback.steps == off.steps + always.steps
    assert fallback.network_passes == off.network_passes + always.network_passes
    assert len(steps) == fallback.steps and steps == sorted(set(steps))     # the second run counts on
    assert [r["found"] for r in restarts] == [0]


def test_fallback_keeps_the_main_networks_result_where_its_vertebrae_span_the_scan(tmp_path):
    model = _combined(tmp_path, EVERYWHERE, NOTHING, "fallback")
    results, _, restarts = _runs(tmp_path, model, shape=(60, 200, 36))     # 199 x 1.6 mm along index j
    off, always, fallback = results["off"], results["always"], results["model"]
    assert len(off.vertebrae) > 1 and _span(off) > STALLED_SPAN_FRACTION * 199 * 1.6
    assert not fallback.start_network_used
    assert fallback.vertebrae == off.vertebrae and _same_labels(fallback, off) and fallback.steps == off.steps
    assert always.vertebrae == () and always.start_network_used    # the start network never starts
    assert restarts == []


def test_fallback_runs_where_the_main_networks_vertebrae_bunch_in_a_small_part_of_the_scan(tmp_path):
    model = _combined(tmp_path, EVERYWHERE, EVERYWHERE, "fallback")
    results, _, restarts = _runs(tmp_path, model)     # one instance fills this 62 mm scan: it spans 0 mm
    off, always, fallback = results["off"], results["always"], results["model"]
    assert len(off.vertebrae) == 1 and fallback.start_network_used
    assert fallback.vertebrae == always.vertebrae and fallback.steps == off.steps + always.steps
    assert [r["found"] for r in restarts] == [1]


def test_a_stalled_run_is_kept_where_the_start_network_finds_fewer_vertebrae(tmp_path):
    model = _combined(tmp_path, EVERYWHERE, NOTHING, "fallback")
    results, _, restarts = _runs(tmp_path, model)     # stalled (one instance); the start network never starts
    off, always, fallback = results["off"], results["always"], results["model"]
    assert len(off.vertebrae) == 1 and always.vertebrae == () and not fallback.start_network_used
    assert fallback.vertebrae == off.vertebrae and _same_labels(fallback, off)
    assert fallback.steps == off.steps + always.steps and len(restarts) == 1    # both ran


def _span(result) -> float:
    return span_mm([v.centroid_lps_mm for v in result.vertebrae])


def test_start_use_of_the_metadata(tmp_path):
    metadata = load_model(_constant(tmp_path / "one.pt", NOTHING), device="cpu").metadata
    assert metadata.start_use() == "off" and SegmentConfig(start_network="always").start_use_for(metadata) == "off"
    older = replace(metadata, start_network={"file": "start.pt"})           # written before 'use' existed
    assert older.start_use() == "always"
    assert SegmentConfig(start_network="fallback").start_use_for(older) == "fallback"
    with pytest.raises(CheckpointError, match="'start_network.use' is 'sometimes'"):
        replace(metadata, start_network={"file": "start.pt", "use": "sometimes"})
    with pytest.raises(ValueError, match="start_network must be one of"):
        SegmentConfig(start_network="sometimes")


def test_segment_reports_the_use_and_refuses_it_for_a_model_without_a_start_network(tmp_path):
    _combined(tmp_path, NOTHING, EVERYWHERE, "fallback")
    image = _ct(tmp_path / "scan_ct.nii.gz")
    for option, used in (([], True), (["--start-network", "off"], False)):
        out_dir = tmp_path / f"out{len(option)}"
        out = _run(["segment", image, "-o", out_dir, "--model", tmp_path / "fallback.pt", "--device", "cpu"] + option)
        assert out.returncode == 0, out.stderr
        report = json.loads((out_dir / "scan_ct_report.json").read_text())
        assert report["model"]["start_network_use"] == ("off" if option else "fallback")
        assert report["start_network_used"] is used and bool(report["vertebrae"]) is used
    out = _run(["segment", image, "-o", tmp_path / "none", "--model", tmp_path / "main.pt", "--start-network",
                "fallback"])
    assert out.returncode == 2 and out.stderr.count("error:") == 1 and "main.pt holds no start network" in out.stderr
    assert not (tmp_path / "none").exists()


def test_cancel_stops_the_fallback_in_either_traversal(tmp_path):
    model = _combined(tmp_path, NOTHING, EVERYWHERE, "fallback")
    image = read_image(_ct(tmp_path / "scan_ct.nii.gz"))
    off, always = (segment_image(image, model, SegmentConfig(start_network=use)) for use in ("off", "always"))
    for polls, second_ran in ((1, False), (off.steps + 2, True)):
        calls = []
        result = segment_image(image, model, should_cancel=lambda: calls.append(1) or len(calls) > polls)
        assert result.cancelled and result.start_network_used is second_ran
        assert (result.steps > off.steps) is second_ran and result.steps < off.steps + always.steps


def test_combine_keeps_the_use_of_the_start_network_it_replaces(tmp_path):
    _combined(tmp_path, NOTHING, EVERYWHERE, "fallback")
    other = _constant(tmp_path / "other.pt", EVERYWHERE, seed=2)
    for use, expected in (([], "fallback"), (["--use", "always"], "always")):
        out = tmp_path / f"again{len(use)}.pt"
        assert cli.main(["combine", "--model", str(tmp_path / "fallback.pt"), "--start", str(other),
                         "--out", str(out)] + use) == 0
        assert load_model(out, device="cpu").metadata.start_use() == expected
    fresh = tmp_path / "fresh.pt"
    assert cli.main(["combine", "--model", str(tmp_path / "main.pt"), "--start", str(other), "--out", str(fresh)]) == 0
    assert load_model(fresh, device="cpu").metadata.start_use() == "always"


def test_the_bundled_ct_model_starts_a_neck_scan_with_its_fallback_network():
    """The bundled CT model's main network, with an empty memory, finds nothing in this neck scan; its start
    network (``use: fallback``) starts it, and the main network climbs on from there (CT model card): every
    instance lies on the spine, six or more vertebrae of the neck hold most of one, half or more are named
    right. (This model's first instance holds C1 and a third of C2, 55 % on C1, and one near the top of the
    chain holds C7 and T1 about evenly; the model before it kept each instance 72 % or more on one.)"""
    case = generate_case(NECK_SEED, replace(SAMPLE_CONFIG, fov="neck"))
    model = load_model(resolve_model("ct"), device="cpu")
    alone = segment_image(case.image, model, SegmentConfig(start_network="off"))
    assert alone.vertebrae == () and not alone.start_network_used
    result = segment_image(case.image, model)
    assert result.start_network_used
    found, truth = sitk.GetArrayViewFromImage(result.labels), sitk.GetArrayViewFromImage(case.labels)
    lies_on, on_spine = {}, {}
    for v in result.vertebrae:   # the reference vertebra that holds most of the instance, and what share
        ids, counts = np.unique(truth[found == v.label], return_counts=True)
        on_spine[v.label] = counts[ids != 0].sum() / counts.sum()
        counts[ids == 0] = 0
        lies_on[v.label] = (int(ids[counts.argmax()]), counts.max() / counts.sum())
    assert all(share >= 0.9 for share in on_spine.values()), on_spine
    assert all(share > 0.5 for _, share in lies_on.values()), lies_on
    assert len({ref for ref, _ in lies_on.values()}) >= 6, lies_on      # six or more vertebrae of the neck
    assert sum(label == ref for label, (ref, _) in lies_on.items()) >= len(lies_on) / 2, lies_on

"""A model's climb network: in the rescue network's traversal it segments every patch whose memory holds a
voxel, while the main network still gives the label values and completeness (``combine --rescue --climb``,
``start_network.Resegmented``); ``--top-volume-ratio`` stops that traversal at the top of the spine.

The networks are tiny ones whose segmentation output is a constant (``test_start_network_fallback``).
"""
from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

from test_cli_segment import _ct, _run
from test_rescue_network import _segment, _with_rescue
from test_start_network_fallback import EVERYWHERE, NOTHING, _constant
from vertebra_traversal.checkpoint import CheckpointError, load_model
from vertebra_traversal.cli import main as cli
from vertebra_traversal.imageio import read_image
from vertebra_traversal.start_network import StartSwitch, networks, spare_networks, traversal_modules

HALF = 0.0  #: a constant segmentation of 0.5


def _with_climb(tmp_path, main_logit: float, rescue_logit: float, climb_logit: float, *options: str):
    """The model of :func:`_with_rescue` with a climb network, loaded, and its file (``four.pt``)."""
    _with_rescue(tmp_path, main_logit, NOTHING, rescue_logit)
    climb = _constant(tmp_path / "climb.pt", climb_logit, seed=4)
    four = tmp_path / "four.pt"
    assert cli.main(["combine", "--model", str(tmp_path / "both.pt"), "--rescue", str(tmp_path / "rescue.pt"),
                     "--climb", str(climb), "--out", str(four), *options]) == 0
    return load_model(four, device="cpu"), four


def test_the_second_traversal_takes_the_climbs_segmentation_and_the_main_labels(tmp_path):
    model, _ = _with_climb(tmp_path, NOTHING, HALF, EVERYWHERE, "--top-volume-ratio", "2.5")
    record = model.metadata.start_network["rescue"]
    assert record["climb"]["file"] == "climb.pt" and model.metadata.rescue_top_ratio() == 2.5
    main, start = networks(model)
    first, second, name = traversal_modules(model, "always", True)
    x = torch.rand(3, 2, *model.metadata.patch_size)
    x[1, 1] = 0.0                                       # row 1: an empty memory
    with torch.inference_mode():
        seg, label, complete = second(x)
        want_label, want_complete = main(x)[1:]
        assert first is model.module and name == "rescue"
        torch.testing.assert_close(seg[1], torch.full_like(seg[1], 0.5))                        # the rescue's
        torch.testing.assert_close(seg[[0, 2]], torch.full_like(seg[[0, 2]], torch.sigmoid(torch.tensor(20.0))))
        torch.testing.assert_close(label, want_label)
        torch.testing.assert_close(complete, want_complete)
        for got, want in zip(model.module(x), StartSwitch(main, start)(x)):   # its own forward: main + start
            torch.testing.assert_close(got, want)
    assert traversal_modules(model, "always", False)[1] is None



def test_in_a_scan_the_climb_network_finds_the_vertebrae_the_main_network_does_not(tmp_path):
    model, _ = _with_climb(tmp_path, NOTHING, EVERYWHERE, EVERYWHERE)
    three = load_model(tmp_path / "three.pt", device="cpu")          # the same model without the climb network
    image = read_image(_ct(tmp_path / "scan_ct.nii.gz", shape=(60, 200, 36)))
    rescued, restarts = _segment(image, three)
    climbed, climb_restarts = _segment(image, model)
    assert restarts == climb_restarts == [{"event": "restart", "network": "rescue", "found": 0}]
    assert len(climbed.vertebrae) > len(rescued.vertebrae) > 0 and climbed.rescue_network_used
    # the same traversal as main + start segmenting everywhere, the labels read from this model's main network
    everywhere = _constant(tmp_path / "everywhere.pt", EVERYWHERE, seed=5)
    assert cli.main(["combine", "--model", str(everywhere), "--start", str(tmp_path / "rescue.pt"), "--out",
                     str(tmp_path / "reference.pt")]) == 0
    reference = _segment(image, load_model(tmp_path / "reference.pt", device="cpu"))[0]
    shape = [(v.volume_mm3, v.centroid_lps_mm, v.at_scan_edge) for v in climbed.vertebrae]
    assert shape == [(v.volume_mm3, v.centroid_lps_mm, v.at_scan_edge) for v in reference.vertebrae]
    off, restarts = _segment(image, model, rescue_network=False)
    assert off.vertebrae == () and restarts == []


def test_climb_networks_are_kept_replaced_and_taken_out_like_the_others(tmp_path, caplog):
    model, four = _with_climb(tmp_path, NOTHING, HALF, EVERYWHERE, "--top-volume-ratio", "3")
    climb = spare_networks(model)["climb"]
    out = tmp_path / "climb-alone.pt"
    assert cli.main(["combine", "--model", str(four), "--extract", "climb", "--out", str(out)]) == 0
    alone = load_model(out, device="cpu")
    assert not alone.metadata.start_network and alone.metadata.training == model.metadata.start_network[
        "rescue"]["climb"]["training"]
    for a, b in zip(alone.module.state_dict().values(), climb.state_dict().values()):
        torch.testing.assert_close(a, b)
    other = _constant(tmp_path / "other.pt", EVERYWHERE, seed=6)     # a new start network keeps rescue and climb
    assert cli.main(["combine", "--model", str(four), "--start", str(other), "--out", str(tmp_path / "s.pt")]) == 0
    kept = load_model(tmp_path / "s.pt", device="cpu")
    assert kept.metadata.start_network["rescue"] == model.metadata.start_network["rescue"]
    for a, b in zip(spare_networks(kept)["climb"].state_dict().values(), climb.state_dict().values()):
        torch.testing.assert_close(a, b)
    with caplog.at_level(logging.WARNING):        # a new rescue without --climb drops it, and says so
        assert cli.main(["combine", "--model", str(four), "--rescue", str(other), "--out", str(tmp_path / "r.pt")]) == 0
    dropped = load_model(tmp_path / "r.pt", device="cpu")
    assert set(spare_networks(dropped)) == {"rescue"} and dropped.metadata.rescue_top_ratio() == 0.0
    assert "climb network is not kept" in caplog.text


@pytest.mark.parametrize("args, message", [
    (["--model", "three.pt", "--extract", "climb"], "three.pt: holds no climb network"),
    (["--model", "both.pt", "--start", "start.pt", "--climb", "climb.pt"], "--climb and --top-volume-ratio: only with"),
    (["--model", "both.pt", "--rescue", "rescue.pt", "--climb", "climb.pt", "--top-volume-ratio", "0.5"],
     "top_volume_ratio must be 0 or a number of at least 1"),
    (["--model", "both.pt", "--rescue", "rescue.pt", "--climb", "nowhere.pt"], "nowhere.pt"),
])
def test_combine_refuses_a_climb_it_cannot_hold(tmp_path, args, message):
    _with_climb(tmp_path, NOTHING, HALF, EVERYWHERE)
    paths = [str(tmp_path / a) if a.endswith(".pt") else a for a in args]
    out = _run(["combine"] + paths + ["--out", tmp_path / "new.pt"])
    assert out.returncode != 0 and out.stderr.count("error:") == 1 and message in out.stderr, out.stderr
    assert not (tmp_path / "new.pt").exists()


def test_metadata_and_file_must_agree_on_the_climb_network(tmp_path):
    model, _ = _with_climb(tmp_path, NOTHING, HALF, EVERYWHERE)
    three = load_model(tmp_path / "three.pt", device="cpu")
    claims = replace(three, metadata=replace(three.metadata, start_network=model.metadata.start_network))
    with pytest.raises(CheckpointError, match="disagree on whether it holds a climb network"):
        networks(claims)
    hides = replace(model, metadata=three.metadata)
    with pytest.raises(CheckpointError, match="disagree on whether it holds a climb network"):
        spare_networks(hides)

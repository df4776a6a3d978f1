"""The segmentation path trained on the traversal's own patches (``training/mask_tuning.py``)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from model_factory import TINY, tiny_model
from test_start_network_fallback import NECK_SEED
from test_training_fixtures import spine_arrays, to_images, write_spine_case
from vertebra_traversal import anatomy
from vertebra_traversal.checkpoint import ModelMetadata, load_model
from vertebra_traversal.label_calibration import gaussian_reading
from vertebra_traversal.geometry import to_model_grid
from vertebra_traversal.models import resolve_model
from vertebra_traversal.network import IterativeFCN
from vertebra_traversal.normalization import NormalizationSpec, normalize, pad_value
from vertebra_traversal.phantom import generate_case
from vertebra_traversal.phantom.sample import SAMPLE_CONFIG
from vertebra_traversal.traversal import crop_patch
from vertebra_traversal.training.data import describe_case, find_cases, prepare_cases
from vertebra_traversal.training.loss import LossConfig, reference_voxels, segmentation_error, surface_weights
from vertebra_traversal.training.candidates import START, choose_checkpoint
from vertebra_traversal.training.mask_tuning import (MaskPatches, MaskTuning, capture_case, capture_patches,
                                                     expert_target, segmentation_parameters, tune_masks,
                                                     tune_segmentation_path, tuned_metadata)
from vertebra_traversal.training.parallel import map_cases
from vertebra_traversal.training.patches import model_patches

L3, L2, L1 = (anatomy.label_of(n) for n in ("L3", "L2", "L1"))


def _line(*runs):
    """A (1, 1, N) label map from (id, length) runs."""
    return np.concatenate([np.full(n, i, np.uint8) for i, n in runs]).reshape(1, 1, -1)


def test_the_expert_names_the_first_vertebra_not_yet_segmented_minus_the_memory():
    reference = _line((L2, 10), (0, 2), (L1, 10))
    memory = np.zeros(reference.shape, bool)
    memory[..., :3] = True  # 30 % of L2
    up = expert_target(reference, memory, "up", done_share=0.2)
    np.testing.assert_array_equal(up, reference == L1)  # L2 counts as segmented: the next one, whole
    half = expert_target(reference, memory, "up", done_share=0.5)
    np.testing.assert_array_equal(half, (reference == L2) & ~memory)  # L2 is not: its remnant
    np.testing.assert_array_equal(expert_target(reference, memory, "down", 0.2), reference == L1)
    memory[..., 12:] = True  # all of L1 as well
    assert not expert_target(reference, memory, "up", 0.2).any()
    assert not expert_target(np.zeros_like(reference), np.zeros(reference.shape, bool)).any()


def test_settings_are_checked():
    for bad in ({"iterations": 0}, {"batch_size": 0}, {"learning_rate": 0.0}, {"done_share": 0.0},
                {"done_share": 1.5}, {"search_share": -0.1}, {"checkpoints": ()}, {"checkpoints": (0,)},
                {"iterations": 10, "checkpoints": (5, 11)}, {"learning_rate_schedule": "step"}, {"runs": "start"},
                {"crops": -1}, {"sampler_share": -0.1}, {"sampler_share": 1.0},
                {"batch_size": 1, "sampler_share": 0.3}, {"batch_size": 2, "sampler_share": 0.9},
                {"shares": ()}, {"shares": (0.0, 0.5)}, {"shares": (1.5,)}, {"identification": "share"}):
        with pytest.raises(ValueError):
            MaskTuning(**bad)
    assert MaskTuning(batch_size=4, sampler_share=0.5).sampled_per_batch == 2
    assert MaskTuning(batch_size=4, sampler_share=0.2).sampled_per_batch == 1
    assert MaskTuning(iterations=10, checkpoints=(10, 5, 5)).checkpoints == (5, 10)


def _check_capture(patches, image, reference, model, direction="up"):
    """Each kept patch is the normalised model-grid image at its centre, and its target is the expert's."""
    meta = model.metadata
    spec = NormalizationSpec.from_json(meta.normalization)
    array = normalize(sitk.GetArrayFromImage(to_model_grid(image, meta.spacing_mm, "linear")), spec)
    labels = sitk.GetArrayFromImage(to_model_grid(reference, meta.spacing_mm, "nearest"))
    for k, center in enumerate(patches.centers):
        expected = crop_patch(array, center, meta.patch_size, pad_value(spec)).astype(np.float16)
        np.testing.assert_array_equal(patches.images[k], expected)
        ref = crop_patch(labels, center, meta.patch_size, 0).astype(np.uint8)
        np.testing.assert_array_equal(patches.targets[k], expert_target(ref, patches.memories[k], direction))
        assert not (patches.targets[k] & patches.memories[k]).any()


def test_every_patch_of_the_tiny_models_traversal_is_kept_with_its_image_and_target(tmp_path):
    model = load_model(tiny_model(tmp_path / "tiny.pt", spacing_mm=4.0), device="cpu")
    image, reference = to_images(*spine_arrays([L3, L2, L1], shape=(48, 24, 24)))
    everything = capture_patches(image, reference, model, MaskTuning(search_share=1.0, runs="main"), "case")
    assert len(everything) > 0 and set(everything.phases) <= {"search", "converge"}
    _check_capture(everything, image, reference, model)
    climbs = capture_patches(image, reference, model, MaskTuning(search_share=0.0, runs="main"), "case")
    assert climbs.phases == tuple(p for p in everything.phases if p == "converge")
    kept = [k for k, p in enumerate(everything.phases) if p == "converge"]
    np.testing.assert_array_equal(climbs.centers, everything.centers[kept])
    # a model of one network: the pipeline makes that one run, and its centres map back to the same voxels
    pipeline = capture_patches(image, reference, model, MaskTuning(search_share=1.0, runs="pipeline"), "case")
    np.testing.assert_array_equal(pipeline.centers, everything.centers)
    np.testing.assert_array_equal(pipeline.images, everything.images)
    assert pipeline.phases == everything.phases


def test_in_a_neck_scan_the_pipeline_runs_bring_the_fallbacks_climbs():
    """The bundled CT model's main network stalls in this neck scan (no vertebra; one climb) and its start
    network's run gives the result: the pipeline's runs hold its climbs, seen with the network's own memory."""
    case = generate_case(NECK_SEED, replace(SAMPLE_CONFIG, fov="neck"))
    model = load_model(resolve_model("ct"), device="cpu")
    main = capture_patches(case.image, case.labels, model, MaskTuning(search_share=0.0, runs="main"), "neck")
    runs = capture_patches(case.image, case.labels, model, MaskTuning(search_share=0.0, runs="pipeline"), "neck")
    assert len(main) <= 1 and len(runs) >= 5 and set(runs.phases) == {"converge"}
    _check_capture(runs, case.image, case.labels, model)
    assert runs.memories[-1].any()  # later climbs see the vertebrae already stored
    assert sum(t.any() for t in runs.targets) >= len(runs) // 2


def test_a_case_is_recorded_whole_and_in_its_crops(tmp_path):
    write_spine_case(tmp_path, "case0", [L3, L2, L1], shape=(160, 24, 24))  # 320 mm: crops of 150 mm
    case = find_cases([tmp_path], "ct")[0]
    path = tiny_model(tmp_path / "tiny.pt", spacing_mm=4.0)
    whole = capture_case(case, path, MaskTuning(search_share=1.0, crops=0))
    both = capture_case(case, path, MaskTuning(search_share=1.0, crops=1))
    assert whole.case_id == both.case_id == "case0" and len(whole) < len(both)
    np.testing.assert_array_equal(both.images[:len(whole)], whole.images)
    assert both.phases[:len(whole)] == whole.phases


def _scans(net, count=6, seed=0):
    """Patches whose target is the bright cube of the image, a memory beside it."""
    rng = np.random.default_rng(seed)
    size = TINY.patch_size
    images, memories, targets = [], [], []
    for _ in range(count):
        image = rng.normal(0, 0.1, size).astype(np.float32)
        z = int(rng.integers(2, 8))
        image[z:z + 6, 5:11, 5:11] += 1.0
        memory = np.zeros(size, bool)
        memory[:2] = True
        images.append(image.astype(np.float16))
        memories.append(memory)
        targets.append((image > 0.5) & ~memory)
    return [MaskPatches("s", np.array(images), np.array(memories), np.array(targets), np.zeros((count, 3), int),
                        ("converge",) * count)]


def test_tuning_trains_the_decoders_alone_and_fits_the_targets():
    torch.manual_seed(0)
    net = IterativeFCN(TINY).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    scans = _scans(net)
    x = torch.from_numpy(np.stack([np.stack([scans[0].images[0].astype(np.float32),
                                             scans[0].memories[0].astype(np.float32)])]))
    with torch.no_grad():
        label, complete = net(x)[1:]
    seen = []
    losses = tune_segmentation_path(net, scans, (4.0,) * 3, MaskTuning(iterations=60, checkpoints=(20, 60),
                                                                    learning_rate=1e-2, batch_size=3),
                                    on_checkpoint=seen.append)
    assert seen == [20, 60] and len(losses) == 60
    short = tune_segmentation_path(IterativeFCN(TINY).eval(), scans, (4.0,) * 3,
                                   MaskTuning(iterations=60, checkpoints=(10,), batch_size=3))
    assert len(short) == 10  # nothing after the last checkpoint
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    trained = {id(p) for p in segmentation_parameters(net)}
    names = {n for n, p in net.named_parameters() if id(p) in trained}
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= names and all(k.startswith(("decoders.", "seg_out.")) for k in names)
    with torch.no_grad():  # label and completeness of a patch do not move
        assert torch.equal(net(x)[1], label) and torch.equal(net(x)[2], complete)


class _Samples(list):
    """The sampler's samples, recording which were taken."""

    def __init__(self, items):
        super().__init__(items)
        self.taken = []

    def __getitem__(self, k):
        self.taken.append(k)
        return super().__getitem__(k)


def test_each_batch_ends_with_the_samplers_patches_in_order():
    torch.manual_seed(0)
    net = IterativeFCN(TINY).eval()
    own = _scans(net, count=1)  # one recorded patch: every batch starts with it
    others = _scans(net, count=3, seed=1)[0]
    samples = _Samples([{"input": np.stack([others.images[k].astype(np.float32),
                                            others.memories[k].astype(np.float32)]),
                         "target": others.targets[k][None].astype(np.float32),
                         "weights": surface_weights(others.targets[k], (4.0,) * 3)[None]} for k in range(3)])
    x = torch.from_numpy(np.stack([np.stack([own[0].images[0].astype(np.float32),
                                             own[0].memories[0].astype(np.float32)]), samples[0]["input"]]))
    target = torch.from_numpy(np.stack([own[0].targets[0][None].astype(np.float32), samples[0]["target"]]))
    weights = torch.from_numpy(np.stack([surface_weights(own[0].targets[0], (4.0,) * 3)[None],
                                         samples[0]["weights"]]))
    with torch.no_grad():
        expected = (segmentation_error(torch.sigmoid(net.forward_logits(x)[0]), target, weights, 1.0)
                    / reference_voxels(LossConfig(), (4.0,) * 3)).item()
    samples.taken.clear()
    tuning = MaskTuning(iterations=3, checkpoints=(3,), batch_size=2, sampler_share=0.5)
    losses = tune_segmentation_path(net, own, (4.0,) * 3, tuning, sampler=samples)
    assert samples.taken == [0, 1, 2] and losses[0] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="sampler's patches"):
        tune_segmentation_path(net, own, (4.0,) * 3, tuning)


def test_the_samplers_patches_follow_the_models_grid_and_direction(tmp_path):
    write_spine_case(tmp_path, "case0", [L3, L2, L1], shape=(48, 24, 24))
    meta = load_model(tiny_model(tmp_path / "tiny.pt", spacing_mm=4.0), device="cpu").metadata
    prepared = prepare_cases(find_cases([tmp_path], "ct"), tmp_path / "cache", 4.0,
                             NormalizationSpec.from_json(meta.normalization))
    for direction in ("up", "down"):
        patches = model_patches(prepared, replace(meta, direction=direction), seed=3, length=40)
        assert len(patches) == 40
        assert patches.settings.pad_value == pad_value(NormalizationSpec.from_json(meta.normalization))
        ordered = 0
        for k in range(40):
            sample = patches[k]
            assert sample["input"].shape == (2, *TINY.patch_size) and sample["target"].shape == (1, *TINY.patch_size)
            memory_z = np.nonzero(sample["input"][1] > 0.5)[0]
            target_z = np.nonzero(sample["target"][0] > 0.5)[0]
            if len(memory_z) and len(target_z):  # the memory holds the vertebrae before the target
                ordered += 1
                assert memory_z.max() < target_z.min() if direction == "up" else memory_z.min() > target_z.max()
        assert ordered >= 5
    odd = replace(meta, patch_size=(16, 16, 8), network=dict(meta.network, patch_size=[16, 16, 8]))
    with pytest.raises(ValueError, match="cubic"):
        model_patches(prepared, odd, seed=0, length=1)


def test_tuning_refuses_an_empty_capture():
    net = IterativeFCN(TINY).eval()
    empty = MaskPatches("none", *(np.zeros((0, *TINY.patch_size)),) * 3, np.zeros((0, 3), int), ())
    with pytest.raises(ValueError, match="nothing to train on"):
        tune_segmentation_path(net, [empty], (4.0,) * 3)


def test_the_tuned_model_keeps_its_label_reading_and_drops_its_label_confidence():
    confidence = {"intercept": 0.0, "likelihood_weight": 1.0, "steps_weight": -1.0, "steps_cap": 15,
                  "vertebrae": 10, "cases": 2, "right": 0.5}
    reading = ModelMetadata.reading_record(gaussian_reading(1.25), {"max_gaps": 2, "gap_penalty": 0.1})
    base = ModelMetadata(modality="CT", target="vertebra", spacing_mm=(2.5,) * 3, patch_size=(48,) * 3,
                         normalization={"kind": "ct", "clip": [-1000, 2000], "scale": 0.001, "offset": 0.0},
                         label_calibration=reading, label_confidence=confidence, training={"iterations": 7})
    tuned = tuned_metadata(base, {"chosen": 75})
    assert tuned.label_calibration == reading and tuned.label_confidence == {}
    assert tuned.training == {"iterations": 7, "mask_tuning": {"chosen": 75}} and base.label_confidence == confidence


def test_the_cases_are_mapped_in_order_here_and_in_workers(tmp_path):
    for n, ids in enumerate(([L2], [L1, L2], [L3])):
        write_spine_case(tmp_path, f"case{n}", ids)
    cases = find_cases([tmp_path], "ct")
    calls = []
    here = map_cases(describe_case, cases, progress=lambda *a: calls.append(a))
    assert calls == [(1, 3, "case0"), (2, 3, "case1"), (3, 3, "case2")]
    assert map_cases(describe_case, cases, workers=2) == here == [describe_case(c) for c in cases]


def test_a_run_scores_each_checkpoint_and_returns_the_kept_weights(tmp_path):
    for n, ids in enumerate(([L3, L2, L1], [L2, L1], [L1, L2])):
        write_spine_case(tmp_path / ("train" if n < 2 else "aside"), f"case{n}", ids, shape=(48, 24, 24), seed=n)
    path = tiny_model(tmp_path / "tiny.pt", spacing_mm=4.0)
    before = load_model(path, device="cpu").module.state_dict()
    tuning = MaskTuning(iterations=4, checkpoints=(2, 4), batch_size=2, learning_rate=1e-2, search_share=1.0,
                        shares=(1.0, 0.5))
    assert tuning.shares == (0.5, 1.0)
    result = tune_masks(path, find_cases([tmp_path / "train"]), find_cases([tmp_path / "aside"]), tmp_path, tuning)
    assert set(result.scores) == {START, (2, 0.5), (2, 1.0), (4, 0.5), (4, 1.0)}
    assert len(result.losses) == 4 and result.patches > 0
    assert all(row.scans == 1 for row in result.scores.values())
    assert result.chosen == choose_checkpoint(result.scores[START], {k: v for k, v in result.scores.items() if k[0]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aside", "tiny.pt", "train"]  # checkpoints removed
    after = result.network.state_dict()
    frozen = [k for k in after if not k.startswith(("decoders.", "seg_out."))]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)
    moved = any(not torch.equal(after[k], before[k]) for k in after if k not in frozen)
    assert moved == (result.chosen is not None)

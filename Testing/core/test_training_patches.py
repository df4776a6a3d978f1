"""Worker-side samples: shapes, memory/target consistency with the traversal order, determinism."""
from __future__ import annotations

import signal

import numpy as np
import pytest
import torch

from test_training_fixtures import write_spine_case
from vertebra_traversal import anatomy
from vertebra_traversal.normalization import NormalizationSpec
from vertebra_traversal.training.augment import AugmentConfig
from vertebra_traversal.training.data import find_cases, prepare_case
from vertebra_traversal.training.loss import LossConfig
from vertebra_traversal.training.patches import PatchDataset, PatchSettings, fixed_samples, make_loader
from vertebra_traversal.training.sampler import SamplingConfig

IDS = [24, 23, 22]  # L5, L4, L3 from the bottom


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("patches")
    write_spine_case(root, "case001", IDS)
    return prepare_case(find_cases([root])[0], root / "cache", 2.0, NormalizationSpec("ct"))


def _settings(augment: AugmentConfig = AugmentConfig(enabled=False)) -> PatchSettings:
    return PatchSettings(SamplingConfig(patch_size=16), augment, LossConfig(), pad_value=-1.0, seed=3)


def test_samples_have_the_documented_shapes_and_consistent_targets(case):
    dataset = PatchDataset([case], _settings(), 60)
    _, labels = case.load()
    with_target = 0
    for item in range(60):
        s = dataset[item]
        assert s["input"].shape == (2, 16, 16, 16) and s["target"].shape == (1, 16, 16, 16)
        assert s["weights"].shape == (1, 16, 16, 16) and s["input"].dtype == np.float32
        memory, target = s["input"][1] > 0.5, s["target"][0] > 0.5
        assert not np.any(memory & target)
        assert set(np.unique(s["input"][1])) <= {0.0, 1.0}
        if target.any():
            with_target += 1
            assert s["label"] in {23.0, 22.0, 24.0}
            label = int(s["label"])  # regression value equals the VerSe id for L3..L5
            assert anatomy.vertebra(label).regression_value == s["label"]
            # memory holds only vertebrae below the target: it lies at lower z than every target voxel
            if memory.any():
                assert np.flatnonzero(memory.any(axis=(1, 2))).max() < np.flatnonzero(target.any(axis=(1, 2))).min()
            assert s["weights"][0][target].max() == pytest.approx(9.0)  # γ + 1 on the surface
        else:
            assert s["label"] == 0.0 and s["complete"] == 0.0 and np.all(s["weights"] == 1.0)
    assert with_target > 40


def test_samples_are_a_function_of_seed_and_index(case):
    dataset = PatchDataset([case], _settings(AugmentConfig()), 10)
    a, b, c = dataset[4], dataset[4], dataset[5]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["input"], c["input"])


def test_loader_batches_from_the_start_iteration(case):
    dataset = PatchDataset([case], _settings(), 8)
    batches = list(make_loader(dataset, batch_size=2, start=2, workers=0))
    assert len(batches) == 2 and batches[0]["input"].shape == (2, 2, 16, 16, 16)
    assert np.array_equal(batches[0]["input"][0].numpy(), dataset[4]["input"])


class _HandlerProbe(torch.utils.data.Dataset):
    """Answers, from inside the loader's worker, whether Ctrl-C is ignored there."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        return torch.tensor(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)


def test_loader_workers_leave_ctrl_c_to_the_main_process():
    # Python's own Ctrl-C handler for the test, whatever the test runner inherited (a shell's background
    # job starts with SIGINT ignored)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        answers = torch.cat(list(make_loader(_HandlerProbe(), batch_size=1, start=0, workers=1)))
        assert answers.tolist() == [True, True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the main process still takes it
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_fixed_validation_samples_are_not_augmented_and_repeat(case):
    settings = _settings(AugmentConfig(elastic_probability=1.0, noise_probability=1.0))
    first, second = fixed_samples([case], settings, 3), fixed_samples([case], settings, 3)
    assert all(np.array_equal(x["input"], y["input"]) for x, y in zip(first, second))
    image = first[0]["input"][0]
    assert set(np.round(np.unique(image[image < -0.5]), 3)) <= {-1.0}  # padding only, no noise on it


def test_memory_and_targets_on_a_phantom_follow_anatomy(tmp_path):
    """A randomly oriented phantom: on the model grid the memory lies below (axis 0) the target, it
    holds exactly the more caudal vertebrae, and complete vertebrae seen whole are complete."""
    from vertebra_traversal.dataset import write_case
    from vertebra_traversal.phantom import PhantomConfig, generate_case
    from vertebra_traversal.training.sampler import extract_patch, patch_targets, plan_patch

    phantom = generate_case(3, PhantomConfig(fov="lumbar", inplane_spacing_mm=(2.0, 2.0),
                                             slice_spacing_mm=(2.0, 2.0)))
    write_case(tmp_path, phantom.info, phantom.image, phantom.labels)
    case = prepare_case(find_cases([tmp_path])[0], tmp_path / "cache", 2.0, NormalizationSpec("ct"))
    _, labels = case.load(mmap=False)
    flags = {r.label: r.complete for r in phantom.info.vertebrae}
    assert case.index.complete == {l: flags[l] for l in case.index.labels}
    sampling = SamplingConfig(patch_size=64)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(40):
        plan = plan_patch(case.index, rng, sampling)
        patch = extract_patch(labels, plan.centre, 64, 0)
        info = patch_targets(patch, plan, case.index, sampling)
        if not info.label:
            continue
        rank = anatomy.vertebra(info.label).rank
        present = set(np.unique(patch)) - {0}
        assert all(anatomy.vertebra(l).rank > rank for l in present & plan.memory_labels)
        assert all(anatomy.vertebra(l).rank < rank for l in present - plan.memory_labels - {info.label})
        memory = np.isin(patch, sorted(plan.memory_labels))
        if memory.any():
            z = np.arange(64)[:, None, None]
            below = (z * memory).sum() / memory.sum() < (z * (patch == info.label)).sum() / (patch == info.label).sum()
            assert below
            checked += 1
        inside = np.count_nonzero(patch == info.label) / case.index.volumes[info.label]
        assert info.complete == float(flags[info.label] and inside >= 0.98)
    assert checked >= 10


def _memory_settings(**sampling: float) -> PatchSettings:
    """Patch settings of 16³ patches, seed 3, with the given memory options of ``SamplingConfig``."""
    return PatchSettings(SamplingConfig(patch_size=16, **sampling), AugmentConfig(), LossConfig(), pad_value=-1.0,
                         seed=3)


def test_partial_memory_changes_only_the_memory_of_training_samples(case):
    """Same seed, partial memory on and off: image, target, weights, label and completeness are equal;
    the memory is a subset, smaller in some samples; the fixed validation patches keep the full memory."""
    def settings(partial):
        return _memory_settings(partial_memory=partial)
    paper, partial = PatchDataset([case], settings(0.0), 30), PatchDataset([case], settings(1.0), 30)
    smaller = 0
    for item in range(30):
        a, b = paper[item], partial[item]
        assert all(np.array_equal(a[k], b[k]) for k in ("target", "weights", "label", "complete"))
        assert np.array_equal(a["input"][0], b["input"][0]) and np.all(b["input"][1] <= a["input"][1])
        smaller += b["input"][1].sum() < a["input"][1].sum()
    assert smaller >= 5
    fixed = fixed_samples([case], settings(1.0), 12), fixed_samples([case], settings(0.0), 12)
    assert all(np.array_equal(x["input"], y["input"]) for x, y in zip(*fixed))


def test_overreaching_memory_moves_target_voxels_into_the_memory_of_training_samples(case):
    """Same seed, overreach on and off: image, label and completeness are equal; the memory gains exactly
    the target voxels that leave the target, in some samples; the fixed validation patches keep the paper's."""
    def settings(overreach):
        return _memory_settings(overreach_memory=overreach)
    paper, over = PatchDataset([case], settings(0.0), 30), PatchDataset([case], settings(1.0), 30)
    moved_in = 0
    for item in range(30):
        a, b = paper[item], over[item]
        assert all(np.array_equal(a[k], b[k]) for k in ("label", "complete")) and np.array_equal(a["input"][0], b["input"][0])
        gained, lost = b["input"][1] - a["input"][1], a["target"][0] - b["target"][0]
        assert np.all(gained >= 0) and np.array_equal(gained, lost)
        moved_in += gained.sum() > 0
    assert moved_in >= 5
    fixed = fixed_samples([case], settings(1.0), 12), fixed_samples([case], settings(0.0), 12)
    assert all(np.array_equal(x["input"], y["input"]) and np.array_equal(x["target"], y["target"]) for x, y in zip(*fixed))

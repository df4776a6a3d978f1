"""Sampler rules of paper §3.6 on a small synthetic label map with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from vertebra_traversal import anatomy
from vertebra_traversal.training import sampler as S

L2, L3, L4, L5 = (anatomy.label_of(n) for n in ("L2", "L3", "L4", "L5"))


def _spine() -> np.ndarray:
    """(40, 12, 12): L5 at z 2..7, L4 at 12..17, L3 at 22..27, L2 at 32..37 (axis 0 = up), 6x6 in y/x."""
    labels = np.zeros((40, 12, 12), np.uint8)
    for z0, label in ((2, L5), (12, L4), (22, L3), (32, L2)):
        labels[z0:z0 + 6, 3:9, 3:9] = label
    return labels


def test_traversal_order_up_is_caudal_first_and_t13_between_t12_and_l1():
    t12, t13, l1 = anatomy.label_of("T12"), anatomy.label_of("T13"), anatomy.label_of("L1")
    assert S.traversal_order([L3, L5, L2, L4], "up") == (L5, L4, L3, L2)
    assert S.traversal_order([L3, L5, L2, L4], "down") == (L2, L3, L4, L5)
    assert S.traversal_order([t12, l1, t13], "up") == (l1, t13, t12)
    with pytest.raises(ValueError):
        S.traversal_order([L3], "sideways")


def test_memory_holds_every_vertebra_before_the_target():
    scan = [L2, L3, L4, L5]
    assert S.memory_before(L3, scan, "up") == {L5, L4}
    assert S.memory_before(L5, scan, "up") == frozenset()
    assert S.memory_before(L3, scan, "down") == {L2}


def test_first_unsegmented_follows_traversal_order():
    assert S.first_unsegmented({L2, L3, L4}, {L5, L4}, "up") == L3
    assert S.first_unsegmented({L2, L3, L4}, set(), "down") == L2
    assert S.first_unsegmented({L4, L5}, {L4, L5}, "up") == 0
    assert S.first_unsegmented({0}, set(), "up") == 0


def test_completeness_two_percent_rule():
    assert S.completeness_target(1000, 980, True) == 1.0   # exactly 2 % outside
    assert S.completeness_target(1000, 979, True) == 0.0   # 2.1 % outside
    assert S.completeness_target(1000, 1000, False) == 0.0  # marked incomplete in the scan
    assert S.completeness_target(1000, 990, True, tolerance=0.0) == 0.0


def test_extract_patch_pads_outside_and_outside_the_z_window():
    array = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4)
    patch = S.extract_patch(array, (0, 0, 0), 4, fill=-1.0)
    assert patch.shape == (4, 4, 4)
    assert np.all(patch[:2] == -1) and np.all(patch[:, :2] == -1) and np.all(patch[:, :, :2] == -1)
    assert np.array_equal(patch[2:, 2:, 2:], array[:2, :2, :2])
    windowed = S.extract_patch(array, (2, 2, 2), 4, fill=-1.0, z_window=(1, 3))
    assert np.array_equal(windowed[1:3], array[1:3]) and np.all(windowed[0] == -1) and np.all(windowed[3] == -1)
    assert np.all(S.extract_patch(array, (50, 0, 0), 4, fill=7.0) == 7.0)


def test_scan_index_boxes_volumes_and_flags():
    index = S.scan_index(_spine(), {L4: True, L3: False})
    assert index.labels == (L2, L3, L4, L5)
    assert index.boxes[L4] == ((12, 3, 3), (18, 9, 9))
    assert index.volumes[L2] == 6 * 6 * 6
    assert index.complete == {L2: False, L3: False, L4: True, L5: False}


def test_foreground_patches_are_centred_in_a_vertebra_box_with_the_caudal_ones_in_memory():
    index = S.scan_index(_spine(), {})
    config = S.SamplingConfig(patch_size=8, foreground_fraction=1.0)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(200):
        plan = S.plan_patch(index, rng, config)
        owners = [l for l, (lo, hi) in index.boxes.items()
                  if all(a <= c < b for a, c, b in zip(lo, plan.centre, hi))]
        assert plan.foreground and len(owners) == 1
        owner = owners[0]
        seen.add(owner)
        caudal = {l for l in index.labels if index.boxes[l][0][0] < index.boxes[owner][0][0]}
        assert plan.memory_labels == caudal
    assert seen == {L2, L3, L4, L5}


def test_random_patches_use_a_prefix_of_the_traversal_as_memory():
    index = S.scan_index(_spine(), {})
    config = S.SamplingConfig(patch_size=8, foreground_fraction=0.0)
    order = S.traversal_order(index.labels, "up")
    rng = np.random.default_rng(2)
    progress = set()
    for _ in range(300):
        plan = S.plan_patch(index, rng, config)
        assert not plan.foreground
        k = len(plan.memory_labels)
        assert plan.memory_labels == set(order[:k])
        progress.add(k)
        assert all(0 <= c < n for c, n in zip(plan.centre, index.shape))
    assert progress == set(range(len(order) + 1))


def test_foreground_fraction_is_respected():
    index = S.scan_index(_spine(), {})
    rng = np.random.default_rng(3)
    config = S.SamplingConfig(patch_size=8)
    share = np.mean([S.plan_patch(index, rng, config).foreground for _ in range(4000)])
    assert abs(share - 0.75) < 0.03


def test_targets_pick_first_unsegmented_and_apply_the_completeness_rule():
    labels = _spine()
    index = S.scan_index(labels, {L4: True, L3: True, L5: True, L2: True})
    config = S.SamplingConfig(patch_size=16)
    # patch z 8..23, centred at z 16: all of L4 (z 12..17), L3 rows z 22, 23 only; L5 in memory.
    plan = S.PatchPlan((16, 6, 6), frozenset({L5}), True, (0, 40))
    patch = S.extract_patch(labels, plan.centre, 16, 0)
    info = S.patch_targets(patch, plan, index, config)
    assert info.label == L4 and info.complete == 1.0
    assert info.label_value == anatomy.vertebra("L4").regression_value == 23.0
    memory = S.memory_mask(patch, plan.memory_labels)
    assert memory.sum() == 0  # L5 lies at z 2..7, outside the patch
    # with L4 also in memory the target is L3, of which only 2 of 6 slices are visible: incomplete
    info = S.patch_targets(patch, S.PatchPlan(plan.centre, frozenset({L5, L4}), True, (0, 40)), index, config)
    assert info.label == L3 and info.complete == 0.0 and info.label_value == 22.0
    # everything in memory: no target, label 0
    done = S.PatchPlan(plan.centre, frozenset(index.labels), False, (0, 40))
    assert S.patch_targets(patch, done, index, config) == S.TargetInfo(0, 0.0, 0.0)


def test_completeness_target_counts_the_volume_cut_by_the_patch():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:15, 5:15, 5:15] = L4          # 1000 voxels
    labels[5, 5:15, 5:7] = L3               # 20 voxels of L4's bottom slice become L3
    index = S.scan_index(labels, {L4: True})
    volume = index.volumes[L4]
    assert volume == 980
    config = S.SamplingConfig(patch_size=16)
    plan = S.PatchPlan((14, 10, 10), frozenset(), True, (0, 20))  # patch z 6..21: cuts L4's z=5 slice
    patch = S.extract_patch(labels, plan.centre, 16, 0)
    cut = volume - int(np.count_nonzero(patch == L4))
    assert cut == 80                        # 8.2 % outside -> incomplete
    assert S.patch_targets(patch, plan, index, config).complete == 0.0
    plan_in = S.PatchPlan((10, 10, 10), frozenset(), True, (0, 20))
    patch_in = S.extract_patch(labels, plan_in.centre, 16, 0)
    assert S.patch_targets(patch_in, plan_in, index, config) == S.TargetInfo(L4, 23.0, 1.0)
    # a z crop through L4 makes it incomplete even when the patch holds it
    cropped = S.PatchPlan(plan_in.centre, frozenset(), True, (8, 20))
    patch_crop = S.extract_patch(labels, cropped.centre, 16, 0, z_window=cropped.z_window)
    assert S.patch_targets(patch_crop, cropped, index, config).complete == 0.0


def test_z_window_restricts_foreground_candidates():
    index = S.scan_index(_spine(), {})
    config = S.SamplingConfig(patch_size=8, foreground_fraction=1.0)
    rng = np.random.default_rng(4)
    for _ in range(100):
        plan = S.plan_patch(index, rng, config, z_window=(20, 30))  # only L3 (z 22..27) is visible
        assert 22 <= plan.centre[0] < 28 and plan.memory_labels == {L5, L4}


def test_centred_patches_sit_at_the_middle_of_the_visible_box_within_the_jitter():
    index = S.scan_index(_spine(), {})
    rng = np.random.default_rng(5)
    exact = S.SamplingConfig(patch_size=8, foreground_fraction=1.0, centred_fraction=1.0)
    middles = {l: tuple((a + b - 1) // 2 for a, b in zip(*index.boxes[l])) for l in index.labels}
    assert middles[L4] == (14, 5, 5)                       # L4 covers z 12..17, y and x 3..8
    centres = {S.plan_patch(index, rng, exact).centre for _ in range(100)}
    assert centres == set(middles.values())
    # a z crop through L3 (z 22..27) moves its centre to the middle of the visible part, z 25..27
    cropped = {S.plan_patch(index, rng, exact, z_window=(25, 40)).centre for _ in range(50)}
    assert (26, 5, 5) in cropped and (24, 5, 5) not in cropped
    jittered = S.SamplingConfig(patch_size=8, foreground_fraction=1.0, centred_fraction=1.0, centre_jitter=1)
    offsets = set()
    for _ in range(300):
        plan = S.plan_patch(index, rng, jittered)
        owner = S.traversal_order(index.labels)[len(plan.memory_labels)]
        offsets.add(tuple(c - m for c, m in zip(plan.centre, middles[owner])))
    assert offsets == {(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)}


def test_centred_fraction_splits_the_foreground_patches():
    index = S.scan_index(_spine(), {})
    middles = {tuple((a + b - 1) // 2 for a, b in zip(*box)) for box in index.boxes.values()}
    rng = np.random.default_rng(6)
    config = S.SamplingConfig(patch_size=8, foreground_fraction=1.0, centred_fraction=0.5)
    share = np.mean([S.plan_patch(index, rng, config).centre in middles for _ in range(4000)])
    assert abs(share - (0.5 + 0.5 / 216)) < 0.03           # a uniform draw in a 6^3 box hits the middle 1/216
    paper = S.SamplingConfig(patch_size=8, foreground_fraction=1.0)
    assert np.mean([S.plan_patch(index, rng, paper).centre in middles for _ in range(4000)]) < 0.02


def test_start_patches_have_an_empty_memory_and_target_the_lowest_vertebra_they_hold():
    """What the traversal's search sees before it has found anything (§3.3): no memory, so the target
    is the most caudal vertebra in the patch, which may lie below the vertebra the patch was drawn in."""
    spine = _spine()
    index = S.scan_index(spine, {})
    config = S.SamplingConfig(patch_size=16, foreground_fraction=1.0, start_fraction=1.0)
    rng = np.random.default_rng(7)
    targets = set()
    for _ in range(300):
        plan = S.plan_patch(index, rng, config)
        assert plan.memory_labels == frozenset() and plan.foreground
        patch = S.extract_patch(spine, plan.centre, 16)
        z_lo, z_hi = plan.centre[0] - 8, plan.centre[0] + 8          # the patch's z range, half open
        lowest = min((z0, label) for z0, label in ((2, L5), (12, L4), (22, L3), (32, L2))
                     if z0 < z_hi and z0 + 6 > z_lo)[1]
        info = S.patch_targets(patch, plan, index, config)
        assert info.label == lowest
        targets.add((lowest, int(np.clip(plan.centre[0], 0, 39)) // 10))
    assert (L4, 2) in targets and (L3, 2) in targets     # drawn in L3: L4 below it in the patch, or not


def test_start_fraction_splits_the_foreground_patches():
    index = S.scan_index(_spine(), {})
    rng = np.random.default_rng(8)
    config = S.SamplingConfig(patch_size=8, foreground_fraction=1.0, start_fraction=0.5)
    empty = np.mean([not S.plan_patch(index, rng, config).memory_labels for _ in range(4000)])
    assert abs(empty - (0.5 + 0.5 / 4)) < 0.03          # L5, the first of four, has an empty memory anyway


def test_end_patches_lie_beyond_the_last_vertebra_with_the_whole_spine_in_memory():
    """Where the traversal must stop (§3.3): from the middle of the last vertebra in traversal order
    (L2 at z 32..37 going up, L5 at z 2..7 going down) to half a patch past it, inside its box in-plane,
    every vertebra in memory, so the target is none."""
    spine = _spine()
    index = S.scan_index(spine, {})
    for direction, z_range in (("up", (34, 40)), ("down", (0, 5))):
        config = S.SamplingConfig(patch_size=8, foreground_fraction=1.0, end_fraction=1.0, direction=direction)
        rng = np.random.default_rng(9)
        zs = set()
        for _ in range(300):
            plan = S.plan_patch(index, rng, config)
            assert plan.memory_labels == {L2, L3, L4, L5} and not plan.foreground
            assert z_range[0] <= plan.centre[0] < z_range[1] and all(3 <= c < 9 for c in plan.centre[1:])
            assert S.patch_targets(S.extract_patch(spine, plan.centre, 8), plan, index, config).label == 0
            zs.add(plan.centre[0])
        assert zs == set(range(*z_range))          # the scan's 40 layers clip the range: L2's box ends at 38, + 4 = 42


def test_end_patches_follow_the_visible_window_and_their_share():
    """In a z-crop the last vertebra the window shows is where the spine ends (L3 in z 10..30)."""
    index = S.scan_index(_spine(), {})
    config = S.SamplingConfig(patch_size=8, foreground_fraction=1.0, end_fraction=1.0)
    rng = np.random.default_rng(10)
    centres = [S.plan_patch(index, rng, config, z_window=(10, 30)).centre[0] for _ in range(200)]
    assert set(centres) == set(range(24, 30))       # L3's middle (24) to the window's end
    mixed = S.SamplingConfig(patch_size=8, foreground_fraction=1.0, end_fraction=0.25)
    share = np.mean([not S.plan_patch(index, rng, mixed).foreground for _ in range(4000)])
    assert abs(share - 0.25) < 0.03


def test_paper_sampling_draws_exactly_the_papers_random_numbers():
    """With no centred share, a vertebra patch costs the draws of §3.6 only: the choice of a
    foreground patch, of the vertebra and of the centre, so older runs replay the same patches."""
    index = S.scan_index(_spine(), {})
    config = S.SamplingConfig(patch_size=8, foreground_fraction=1.0)
    for seed in range(5):
        rng, replay = np.random.default_rng(seed), np.random.default_rng(seed)
        plan = S.plan_patch(index, rng, config)
        replay.random()
        label = index.labels[int(replay.integers(len(index.labels)))]
        lo, hi = index.boxes[label]
        assert plan.centre == tuple(int(replay.integers(a, b)) for a, b in zip(lo, hi))
        assert rng.random() == replay.random()


def test_config_validation():
    with pytest.raises(ValueError):
        S.SamplingConfig(patch_size=8, foreground_fraction=1.5)
    with pytest.raises(ValueError):
        S.SamplingConfig(patch_size=8, direction="left")
    with pytest.raises(ValueError, match="centred_fraction"):
        S.SamplingConfig(patch_size=8, centred_fraction=-0.1)
    with pytest.raises(ValueError, match="centre_jitter"):
        S.SamplingConfig(patch_size=8, centre_jitter=-1)
    with pytest.raises(ValueError, match="start_fraction"):
        S.SamplingConfig(patch_size=8, start_fraction=1.1)
    with pytest.raises(ValueError, match="partial_memory"):
        S.SamplingConfig(patch_size=8, partial_memory=-0.5)
    with pytest.raises(ValueError, match="end_fraction"):
        S.SamplingConfig(patch_size=8, end_fraction=2.0)


def test_partial_memory_leaves_out_a_cap_of_each_chosen_vertebra_and_nothing_else():
    """Probability 1: every memory vertebra keeps at least half of its voxels, loses a cap on one side of
    a plane (whatever the orientation, the kept voxels are those below a projection threshold), and
    voxels of vertebrae outside the memory never enter it."""
    labels = _spine()
    full = S.memory_mask(labels, {L5, L4})
    lost_any = False
    for seed in range(20):
        rng, replay = np.random.default_rng(seed), np.random.default_rng(seed)
        partial = S.partial_memory_mask(labels, {L4, L5}, 1.0, rng)
        assert partial.dtype == np.float32 and np.all(partial <= full)          # a subset of the memory
        for label in (L4, L5):                                                  # ascending order: L4 first
            replay.random()
            direction, share = replay.normal(size=3), replay.uniform(0.0, S.PARTIAL_MEMORY_MAX_CUT)
            coords = np.argwhere(labels == label)
            kept = partial[tuple(coords.T)] > 0
            assert kept.mean() >= 1.0 - S.PARTIAL_MEMORY_MAX_CUT
            assert abs((1.0 - kept.mean()) - share) <= 2.0 / len(coords)         # the drawn share is left out
            projection = coords @ (direction / np.linalg.norm(direction))
            if not kept.all():
                lost_any = True
                assert projection[kept].max() <= projection[~kept].min()        # a cap beyond a plane
        assert rng.random() == replay.random()                                  # three draws a vertebra, no more
    assert lost_any


def test_partial_memory_at_probability_zero_is_the_reference_memory_and_draws_nothing():
    labels = _spine()
    rng = np.random.default_rng(4)
    assert np.array_equal(S.partial_memory_mask(labels, {L5, L4, L3}, 0.0, rng), S.memory_mask(labels, {L5, L4, L3}))
    assert rng.random() == np.random.default_rng(4).random()
    half = [S.partial_memory_mask(labels, {L5, L4, L3}, 0.5, np.random.default_rng(seed)).sum() for seed in range(40)]
    assert min(half) < S.memory_mask(labels, {L5, L4, L3}).sum() == max(half)  # some vertebrae kept whole


def test_overreaching_memory_moves_a_cap_of_the_target_on_the_memorys_side_into_the_memory():
    """Probability 1, L4 the target above L5 in memory: the memory gains exactly the voxels the target loses,
    at most half of L4 and the drawn share of it, all of them below (up) or above (down) the kept ones
    along the plane's normal, whose axis component points to the memory."""
    labels = _spine()
    reference = S.memory_mask(labels, {L5})
    for direction, sign in (("up", -1.0), ("down", 1.0)):
        for seed in range(20):
            rng, replay = np.random.default_rng(seed), np.random.default_rng(seed)
            memory, target = S.overreaching_memory(labels, reference, L4, 1.0, rng, direction)
            replay.random()
            tilt, share = replay.normal(0.0, S.OVERREACH_TILT, size=2), replay.uniform(0.0, S.OVERREACH_MAX_SHARE)
            moved = (memory > 0) & (reference == 0)
            assert memory.dtype == np.float32 and np.all(memory >= reference)
            assert np.array_equal(moved | target, labels == L4) and not np.any(moved & target)
            assert abs(moved.sum() / (labels == L4).sum() - share) <= 1.0 / (labels == L4).sum()
            assert target.sum() >= (1.0 - S.OVERREACH_MAX_SHARE) * (labels == L4).sum()
            if moved.any():
                projection = np.argwhere(labels == L4) @ np.array([sign, *tilt])
                on_cap = moved[labels == L4]
                assert projection[on_cap].min() >= projection[~on_cap].max()
            assert rng.random() == replay.random()                               # four draws, no more
    assert np.array_equal(reference, S.memory_mask(labels, {L5}))                  # the input is not changed


def test_overreaching_memory_needs_a_target_and_a_memory_and_draws_nothing_at_probability_zero():
    labels = _spine()
    memory = S.memory_mask(labels, {L5})
    for label, mem in ((L4, np.zeros_like(memory)), (0, memory)):
        out_memory, target = S.overreaching_memory(labels, mem, label, 1.0, np.random.default_rng(1))
        assert np.array_equal(out_memory, mem) and np.array_equal(target, labels == label if label else labels < 0)
    rng = np.random.default_rng(4)
    out_memory, target = S.overreaching_memory(labels, memory, L4, 0.0, rng)
    assert np.array_equal(out_memory, memory) and np.array_equal(target, labels == L4)
    assert rng.random() == np.random.default_rng(4).random()
    with pytest.raises(ValueError, match="overreach_memory"):
        S.SamplingConfig(patch_size=8, overreach_memory=1.5)

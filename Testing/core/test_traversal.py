"""Tests of the iterative traversal (paper §3.3) against an exact oracle network (oracle.py)."""
from __future__ import annotations

from typing import List

import numpy as np
import pytest
import SimpleITK as sitk

from oracle import BoxSpine, OraclePredictor, box_spine, oracle_for
from vertebra_traversal import anatomy, geometry
from vertebra_traversal.predictor import PatchPrediction
from vertebra_traversal.traversal import (Fragment, PatchEvent, TraversalConfig, VertebraEvent, axis_centers,
                                          crop_patch, extract_fragment, fragment_center, has_converged,
                                          midpoint, patch_slices, resume_index, traverse, window_centers)

PATCH = (32, 32, 32)
IDS_BOTTOM_UP = [24, 23, 22, 21, 20, 19, 18]  # L5 .. T11
CURVE_X = [6, 8, 10, 12, 13, 12, 10]  # lateral curvature, voxels


def config(direction: str = "up", **kw) -> TraversalConfig:
    return TraversalConfig(patch_size=PATCH, direction=direction, min_fragment_voxels=50, pad_value=0.0, **kw)


def column(**kw) -> BoxSpine:
    """7 boxes 12 voxels high, 4-voxel gaps, curved in x, in a 120 x 40 x 40 array."""
    offsets = kw.pop("offsets_yx", [(12 + i % 2, x) for i, x in enumerate(CURVE_X)])
    return box_spine(kw.pop("shape", (120, 40, 40)), kw.pop("ids", IDS_BOTTOM_UP), offsets_yx=offsets, **kw)


def run(spine: BoxSpine, direction: str = "up", **kw):
    events: List[object] = []
    oracle = oracle_for(spine, direction)
    result = traverse(spine.labels.astype(np.float32), oracle, config(direction, **kw), on_event=events.append)
    return result, events, oracle


def assert_exact(result, spine: BoxSpine, expected_order: List[int]) -> None:
    assert [round(v.label_value) for v in result.vertebrae] == \
        [anatomy.vertebra(i).regression_value for i in expected_order]
    assert result.instances.dtype == np.int16
    for k, vid in enumerate(expected_order, start=1):
        np.testing.assert_array_equal(result.instances == k, spine.labels == vid, err_msg=f"instance {k}")


@pytest.mark.parametrize("direction", ["up", "down"])
def test_finds_every_vertebra_with_exact_masks_in_direction_order(direction):
    spine = column()
    result, _, _ = run(spine, direction)
    order = IDS_BOTTOM_UP if direction == "up" else IDS_BOTTOM_UP[::-1]
    assert_exact(result, spine, order)
    assert all(v.completeness == 1.0 for v in result.vertebrae)
    assert result.stopped_by == "complete" and not result.cancelled
    z = [v.center_zyx[0] for v in result.vertebrae]
    assert z == sorted(z, reverse=(direction == "down"))


def test_instance_records_match_masks():
    spine = column()
    result, _, _ = run(spine)
    for v in result.vertebrae:
        mask = result.instances == v.index
        assert v.voxels == int(mask.sum()) == spine.volumes[IDS_BOTTOM_UP[v.index - 1]]
        np.testing.assert_allclose(v.center_zyx, [c.mean() for c in np.nonzero(mask)])
        box = spine.boxes[IDS_BOTTOM_UP[v.index - 1]]
        assert v.bbox == box


@pytest.mark.parametrize("direction", ["up", "down"])
def test_partial_field_of_view_keeps_cut_vertebrae_flagged(direction):
    # bottom box starts at z = -5 (7 of 12 slices visible), top box z 91..102 is cut at 98
    spine = column(shape=(98, 40, 40), z0=-5)
    result, _, _ = run(spine, direction)
    order = IDS_BOTTOM_UP if direction == "up" else IDS_BOTTOM_UP[::-1]
    assert_exact(result, spine, order)
    completeness = {anatomy.BY_LABEL[order[v.index - 1]].name: v.completeness for v in result.vertebrae}
    assert completeness == {"L5": 0.0, "L4": 1.0, "L3": 1.0, "L2": 1.0, "L1": 1.0, "T12": 1.0, "T11": 0.0}


def test_spine_off_centre_in_an_image_wider_than_a_patch():
    offsets = [(5 + i, 60 + x) for i, x in enumerate(CURVE_X)]  # x 66..91 of 96, y 5..29 of 72
    spine = column(shape=(120, 72, 96), offsets_yx=offsets)
    result, events, _ = run(spine)
    assert_exact(result, spine, IDS_BOTTOM_UP)
    assert any(e.center_zyx[2] > 48 for e in events if isinstance(e, PatchEvent) and e.phase == "search")


def test_image_smaller_than_a_patch():
    spine = box_spine((20, 24, 24), [22], height=12, z0=4, size_yx=(10, 10))
    result, _, _ = run(spine)
    assert_exact(result, spine, [22])
    assert result.vertebrae[0].completeness == 1.0


def test_empty_image_covers_every_window_and_finds_nothing():
    oracle = OraclePredictor("up", {}, {})
    image = np.zeros((60, 40, 72), dtype=np.float32)
    result = traverse(image, oracle, config(search_batch=5))
    windows = 3 * 2 * 4  # z centres 16, 32, 44; y 16, 24; x 16, 32, 48, 56
    assert result.steps == windows and result.vertebrae == () and not result.instances.any()
    assert oracle.batch_sizes == [5, 5, 5, 5, 4] and result.network_passes == 5
    assert result.stopped_by == "complete"


def test_search_is_batched():
    spine = column()
    result, events, oracle = run(spine, search_batch=3)
    search_steps = sum(1 for e in events if isinstance(e, PatchEvent) and e.phase == "search")
    assert oracle.batch_sizes[0] == 3 and max(oracle.batch_sizes) == 3
    assert sum(oracle.batch_sizes) == result.steps
    assert result.network_passes == len(oracle.batch_sizes) < result.steps
    assert search_steps >= 3


def test_events_for_every_position_and_vertebra():
    result, events, oracle = run(column())
    patches = [e for e in events if isinstance(e, PatchEvent)]
    vertebrae = [e for e in events if isinstance(e, VertebraEvent)]
    assert [e.step for e in patches] == list(range(1, result.steps + 1))
    assert len(patches) == sum(oracle.batch_sizes)
    assert patches[0].phase == "search" and {e.phase for e in patches} <= {"search", "converge"}
    assert [e.index for e in vertebrae] == [v.index for v in result.vertebrae]
    assert [e.center_zyx for e in vertebrae] == [v.center_zyx for v in result.vertebrae]
    assert [e.voxels for e in vertebrae] == [v.voxels for v in result.vertebrae]


def test_cancel_stops_after_n_steps():
    spine = column()
    seen: List[PatchEvent] = []

    def on_event(event):
        if isinstance(event, PatchEvent):
            seen.append(event)

    result = traverse(spine.labels.astype(np.float32), oracle_for(spine, "up"), config(search_batch=1),
                      on_event=on_event, should_cancel=lambda: len(seen) >= 7)
    assert result.cancelled and result.stopped_by == "cancelled" and result.steps == 7 == len(seen)


def test_max_steps_caps_evaluations():
    spine = column()
    oracle = oracle_for(spine, "up")
    result = traverse(spine.labels.astype(np.float32), oracle, config(max_steps=5))
    assert result.steps == 5 and sum(oracle.batch_sizes) == 5 and result.stopped_by == "max_steps"
    assert not result.cancelled


@pytest.mark.parametrize("orientation", ["LPS", "RAS", "PIR", "ILA"])
@pytest.mark.parametrize("z_range, cut", [((0, 119), set()), ((7, 100), {24, 18})])
def test_any_storage_orientation_and_field_of_view_via_the_model_grid(orientation, z_range, cut):
    """The label map stored in another orientation, cropped along S, then put on the model grid
    (geometry.to_model_grid, nearest) is traversed exactly; boxes cut by the crop are flagged."""
    spine = column()
    model_in = sitk.GetImageFromArray(spine.labels)  # identity direction: array axes (S, P, L)
    stored = geometry.crop_z(sitk.DICOMOrient(model_in, orientation), *z_range)
    grid = sitk.GetArrayFromImage(geometry.to_model_grid(stored, (1.0, 1.0, 1.0), "nearest"))
    np.testing.assert_array_equal(grid, spine.labels[z_range[0]:z_range[1] + 1])  # precondition
    oracle = OraclePredictor("up", spine.volumes, {v: v not in cut for v in IDS_BOTTOM_UP})
    result = traverse(grid.astype(np.float32), oracle, config())
    for k, vid in enumerate(IDS_BOTTOM_UP, start=1):
        np.testing.assert_array_equal(result.instances == k, grid == vid)
        assert result.vertebrae[k - 1].completeness == (0.0 if vid in cut else 1.0)


@pytest.mark.parametrize("seed, fov, orientation, direction", [
    (2, "chest", "RAI", "down"), (3, "spine", "PIR", "up"), (4, "spine", "ASL", "up")])
def test_phantom_label_maps_on_the_model_grid(seed, fov, orientation, direction):
    """Phantom label maps (re-stored in a given orientation) on a 2 mm model grid: exact masks in
    traversal order and the completeness flags of the phantom's sidecar."""
    from vertebra_traversal import phantom
    case = phantom.generate_case(seed, phantom.PhantomConfig(
        fov=fov, inplane_spacing_mm=(1.5, 2.0), slice_spacing_mm=(2.0, 3.0), max_voxels=1_500_000))
    labels = sitk.DICOMOrient(case.labels, orientation)
    grid = sitk.GetArrayFromImage(geometry.to_model_grid(labels, (2.0, 2.0, 2.0), "nearest"))
    complete = {v.label: v.complete for v in case.info.vertebrae}
    ids = sorted((int(v) for v in np.unique(grid) if anatomy.is_valid_label(int(v))),
                 key=lambda v: anatomy.vertebra(v).rank, reverse=(direction == "up"))
    assert len(ids) >= 5 and set(ids) <= set(complete)
    oracle = OraclePredictor(direction, {v: int((grid == v).sum()) for v in ids}, complete)
    cfg = TraversalConfig((64, 64, 64), direction, min_fragment_voxels=1, pad_value=0.0)
    result = traverse(grid.astype(np.float32), oracle, cfg)
    assert len(result.vertebrae) == len(ids)
    for k, vid in enumerate(ids, start=1):
        np.testing.assert_array_equal(result.instances == k, grid == vid, err_msg=anatomy.name_of(vid))
        assert result.vertebrae[k - 1].completeness == float(complete[vid]), anatomy.name_of(vid)


# ---------------------------------------------------------------- fakes that read their position
# The image holds z + 1 at every voxel, so a fake reads the patch centre's z from the image patch.

SMALL_PATCH = (32, 16, 16)


def z_image(depth: int = 100) -> np.ndarray:
    return np.broadcast_to(np.arange(1, depth + 1, dtype=np.float32)[:, None, None], (depth, 16, 16)).copy()


def cube(shape, z_in_patch: int, half: int) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float32)
    lo, hi = max(z_in_patch - half, 0), min(z_in_patch + half + 1, shape[0])
    if lo < hi:
        out[lo:hi, 8 - half:8 + half + 1, 8 - half:8 + half + 1] = 1.0
    return out


class PositionFake:
    """Answers from the patch-centre z: ``rule(cz, memory_seen) -> (absolute z of cube, half size)``."""

    def __init__(self, rule):
        self.rule, self.centers = rule, []

    def __call__(self, images: np.ndarray, memories: np.ndarray) -> PatchPrediction:
        probs = np.zeros(images.shape, dtype=np.float32)
        for b in range(images.shape[0]):
            cz = int(images[b, 16, 8, 8]) - 1
            self.centers.append(cz)
            answer = self.rule(cz, bool(memories[b].any()))
            if answer is not None:
                probs[b] = cube(images.shape[1:], answer[0] - cz + 16, answer[1])
        n = images.shape[0]
        return PatchPrediction(probs, np.full(n, 5.0), np.ones(n))


def fake_config(**kw) -> TraversalConfig:
    return TraversalConfig(patch_size=SMALL_PATCH, min_fragment_voxels=50, pad_value=0.0, **kw)


def test_oscillation_ends_at_the_midpoint_after_max_iterations():
    # below z = 50 the fragment lies 3 voxels up, from 50 on 3 voxels down: 48 <-> 51 forever
    fake = PositionFake(lambda cz, _: (cz + 3 if cz < 50 else cz - 3, 2) if 40 <= cz <= 60 else None)
    result = traverse(z_image(), fake, fake_config(max_iterations_per_vertebra=4))
    # search batch: windows 16..84, hit at 48; then 51, 48, 51, midpoint round((51 + 48) / 2) = 50
    assert fake.centers[:10] == [16, 32, 48, 64, 80, 84, 51, 48, 51, 50]
    assert len(result.vertebrae) == 1
    z = np.nonzero(result.instances)[0]
    assert (z.min(), z.max()) == (45, 49)  # the cube seen from 50, centred at 47


def test_return_to_a_converged_position_ends_the_run_without_storing():
    def rule(cz, memory_seen):
        if not memory_seen:
            return 20, 2  # the first vertebra, centred at z = 20
        return (30, 2) if cz < 25 else (20, 4)  # from 30 it points back to 20 (leftover shell)

    fake = PositionFake(rule)
    result = traverse(z_image(), fake, fake_config(search_batch=1))
    assert len(result.vertebrae) == 1 and result.stopped_by == "complete"
    stored_at = fake.centers.index(20)
    assert 20 not in fake.centers[stored_at + 2:]  # never goes back to 20 after the look-again
    assert fake.centers[stored_at + 1:stored_at + 3] == [20, 30]


def test_new_instances_never_take_memory_voxels():
    class Everything:
        def __call__(self, images, memories):
            n = images.shape[0]
            return PatchPrediction(np.ones(images.shape, np.float32), np.ones(n), np.ones(n))

    image = np.zeros((70, 20, 20), dtype=np.float32)
    result = traverse(image, Everything(), fake_config())
    assert len(result.vertebrae) >= 2
    for v in result.vertebrae:  # a later instance overwriting an earlier one would break these
        assert v.voxels == int((result.instances == v.index).sum())
    assert sum(v.voxels for v in result.vertebrae) == np.count_nonzero(result.instances)
    assert result.vertebrae[0].voxels == 32 * 16 * 16  # the whole first window


def test_predictor_with_wrong_output_shape_is_refused():
    def bad(images, memories):
        return PatchPrediction(np.zeros((1, 2, 2, 2), np.float32), np.zeros(1), np.zeros(1))

    with pytest.raises(ValueError, match="predictor returned"):
        traverse(np.zeros((40, 40, 40), np.float32), bad, config())


@pytest.mark.parametrize("image", [np.zeros((4, 4)), np.zeros((0, 4, 4)), np.full((2, 2, 2), "a")])
def test_bad_image_is_refused(image):
    with pytest.raises(ValueError):
        traverse(image, OraclePredictor("up", {}, {}), config())


def test_search_resumes_beyond_the_current_position():
    spine = box_spine((100, 40, 40), [24, 23], height=12, gap=56)  # L5 z 2..13, L4 z 70..81
    result, events, _ = run(spine, search_batch=1)
    assert_exact(result, spine, [24, 23])
    first = next(i for i, e in enumerate(events) if isinstance(e, VertebraEvent))
    converged_z = events[first - 1].center_zyx[0]  # the position where L5 was stored
    later = [e.center_zyx[0] for e in events[first + 1:] if isinstance(e, PatchEvent) and e.phase == "search"]
    assert later and min(later) > converged_z
    searched = [e.center_zyx for e in events if isinstance(e, PatchEvent) and e.phase == "search"]
    assert len(searched) == len(set(searched))  # no window evaluated twice: no restart from the bottom


def test_largest_piece_keeps_instances_exact_where_the_network_answers_stray_voxels_too():
    spine = column()
    oracle = oracle_for(spine, "up")

    def with_strays(images, memories):  # beside each vertebra, a column of background voxels in the patch's corner
        pred = oracle(images, memories)
        probs = np.array(pred.probabilities)
        for b in range(probs.shape[0]):
            if probs[b].any():
                corner = probs[b, :, -3:, -3:]
                corner[images[b, :, -3:, -3:] == 0] = 1.0
        return PatchPrediction(probs, pred.label_values, pred.completeness)

    image = spine.labels.astype(np.float32)
    largest = traverse(image, with_strays, config(fragment_pieces="largest"))
    assert_exact(largest, spine, IDS_BOTTOM_UP)  # the strays went into the memory, never into an instance
    paper = traverse(image, with_strays, config())
    assert paper.vertebrae[0].voxels > int((spine.labels == IDS_BOTTOM_UP[0]).sum())  # the paper keeps them
    with pytest.raises(ValueError, match="fragment_pieces"):
        config(fragment_pieces="biggest")


# ---------------------------------------------------------------- pure helpers

def test_patch_slices_clip_at_the_borders():
    image, patch = patch_slices((10, 10, 10), (0, 5, 9), (4, 4, 4))
    assert image == (slice(0, 2), slice(3, 7), slice(7, 10))
    assert patch == (slice(2, 4), slice(0, 4), slice(0, 3))


def test_patch_slices_without_overlap_are_empty():
    image, patch = patch_slices((10, 10, 10), (30, 5, 5), (4, 4, 4))
    assert image[0] == slice(0, 0) and patch[0] == slice(0, 0)
    assert np.zeros((10, 10, 10))[image].size == 0 and np.zeros((4, 4, 4))[patch].size == 0


def test_crop_patch_pads_outside_the_volume():
    volume = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    got = crop_patch(volume, (1, 5, 3), (4, 4, 4), pad_value=-7.0)
    expected = np.pad(volume, 4, constant_values=-7.0)[1 - 2 + 4:1 + 2 + 4, 5 - 2 + 4:5 + 2 + 4, 3 - 2 + 4:3 + 2 + 4]
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float32 and got[0, 0, 0] == -7.0 and got[2, 2, 2] == volume[1, 5, 3]


@pytest.mark.parametrize("length, patch, expected", [
    (40, 32, [16, 24]), (120, 32, [16, 32, 48, 64, 80, 96, 104]), (32, 32, [16]), (20, 32, [10]), (33, 32, [16, 17])])
def test_axis_centers(length, patch, expected):
    assert axis_centers(length, patch) == expected


@pytest.mark.parametrize("length", [1, 7, 31, 32, 47, 64, 65, 200])
def test_axis_centers_cover_the_axis_with_half_patch_steps(length):
    centers = axis_centers(length, 16)
    covered = np.zeros(length, bool)
    for c in centers:
        covered[max(c - 8, 0):max(c + 8, 0)] = True
    assert covered.all() and all(0 < b - a <= 8 for a, b in zip(centers, centers[1:]))


def test_window_centers_order_follows_the_direction():
    up = window_centers((60, 40, 72), (32, 32, 32), "up")
    down = window_centers((60, 40, 72), (32, 32, 32), "down")
    assert len(up) == len(set(up)) == 3 * 2 * 4 and set(up) == set(down)
    assert up[:2] == [(16, 16, 16), (16, 16, 32)] and down[0] == (44, 16, 16)
    assert [c[0] for c in up] == sorted(c[0] for c in up)
    assert [c[0] for c in down] == sorted((c[0] for c in down), reverse=True)


def test_resume_index():
    windows = window_centers((60, 10, 10), (32, 10, 10), "up")  # z 16, 32, 44
    assert [resume_index(windows, z, "up") for z in (0, 16, 40, 44)] == [0, 1, 2, 3]
    down = window_centers((60, 10, 10), (32, 10, 10), "down")  # z 44, 32, 16
    assert [resume_index(down, z, "down") for z in (60, 44, 20, 16)] == [0, 1, 2, 3]


def test_extract_fragment_drops_memory_and_outside_voxels():
    probs = np.zeros((4, 4, 4), np.float32)
    probs[:, 1, 1] = 0.9  # z -2..1 in image coordinates; -2, -1 lie outside
    probs[3, 3, 3] = 0.5  # not above the threshold
    memory = np.zeros((10, 10, 10), bool)
    memory[1, 4, 4] = True
    frag = extract_fragment(probs, memory, (0, 5, 5), threshold=0.5)
    assert frag.region == (slice(0, 2), slice(3, 7), slice(3, 7))
    assert frag.voxels == 1 and frag.mask[0, 1, 1] and not frag.mask[1, 1, 1]


def test_fragment_center_is_the_rounded_bounding_box_centre_in_image_voxels():
    mask = np.zeros((6, 6, 6), bool)
    mask[2:6, 1, 1] = True  # z 2..5 -> 3.5 -> 4
    mask[3, 4, 1] = True  # y 1..4 -> 2.5 -> 3
    frag = Fragment((slice(10, 16), slice(0, 6), slice(20, 26)), mask)
    assert fragment_center(frag) == (14, 3, 21)
    assert fragment_center(Fragment(frag.region, np.zeros_like(mask))) is None


def test_convergence_and_midpoint():
    assert has_converged((10, 10, 10), (12, 8, 10), 2) and not has_converged((10, 10, 10), (10, 13, 10), 2)
    assert has_converged((5, 5, 5), (5, 5, 5), 0)
    assert midpoint((48, 8, 8), (51, 8, 9)) == (50, 8, 9)


@pytest.mark.parametrize("kw", [dict(patch_size=(32, 32)), dict(patch_size=(0, 32, 32)),
                                dict(direction="left"), dict(threshold=1.0), dict(min_fragment_voxels=0),
                                dict(max_iterations_per_vertebra=0), dict(search_batch=0), dict(max_steps=0),
                                dict(convergence_voxels=-1), dict(pad_value=float("nan"))])
def test_config_validation(kw):
    args = dict(patch_size=(32, 32, 32))
    args.update(kw)
    with pytest.raises(ValueError):
        TraversalConfig(**args)

"""The engine end to end on the model grid and back, driven by the exact oracle (paper §3.1-§3.4)."""
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from oracle import OraclePredictor, box_spine, oracle_for
from vertebra_traversal import anatomy
from vertebra_traversal.checkpoint import CheckpointError, ModelMetadata
from vertebra_traversal.labeling import LabelingConfig
from vertebra_traversal.pipeline import SegmentConfig, scan_edge_labels, segment_with_predictor
from vertebra_traversal.predictor import PatchPrediction

SPACING = 4.0
IDS_BOTTOM_UP = [anatomy.label_of(n) for n in ("L3", "L2", "L1", "T12", "T11", "T10")]


def _meta(direction="up", modality="MR"):
    return ModelMetadata(modality=modality, target="vertebra", spacing_mm=(SPACING,) * 3, patch_size=(32, 32, 32),
                         normalization={"kind": "ct", "clip": [-1000, 2000], "scale": 1.0, "offset": 0.0},
                         direction=direction, min_fragment_mm3=20 * SPACING ** 3)


def _stored(labels_zyx: np.ndarray, permutation=(0, 1, 2), flips=(1, 1, 1)) -> sitk.Image:
    """The model-grid label array stored as a file would be: axes permuted / flipped, LPS geometry kept."""
    image = sitk.GetImageFromArray(labels_zyx.astype(np.float32))
    image.SetSpacing((SPACING,) * 3)
    image.SetOrigin((-40.0, 12.0, 300.0))
    if permutation == (0, 1, 2) and flips == (1, 1, 1):
        return image
    direction = np.zeros((3, 3))
    for new_axis, old_axis in enumerate(permutation):
        direction[old_axis, new_axis] = flips[new_axis]
    oriented = sitk.Resample(image, [image.GetSize()[p] for p in permutation], sitk.Transform(),
                             sitk.sitkNearestNeighbor, _origin_for(image, direction), (SPACING,) * 3,
                             direction.flatten().tolist())
    return oriented


def _origin_for(image, direction):
    corners = [image.TransformIndexToPhysicalPoint((i, j, k)) for i in (0, image.GetSize()[0] - 1)
               for j in (0, image.GetSize()[1] - 1) for k in (0, image.GetSize()[2] - 1)]
    corners = np.array(corners)
    # pick the corner that is index (0,0,0) for the new direction: minimal along each positive new axis
    projections = corners @ direction
    return tuple(corners[np.lexsort(projections.T[::-1])[0]])


@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize("orientation", [((0, 1, 2), (1, 1, 1)), ((2, 0, 1), (-1, 1, -1)), ((1, 2, 0), (1, -1, 1))])
def test_oracle_segmentation_is_exact_on_the_input_grid(direction, orientation):
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP, height=12, gap=4, z0=-4)  # L3 cut at the bottom
    image = _stored(spine.labels, *orientation)
    result = segment_with_predictor(image, oracle_for(spine, direction), _meta(direction))
    out = sitk.GetArrayFromImage(result.labels)
    np.testing.assert_array_equal(out, sitk.GetArrayFromImage(image).astype(np.uint8))
    assert result.labels.GetDirection() == image.GetDirection() and result.labels.GetOrigin() == image.GetOrigin()
    assert [v.name for v in result.vertebrae] == ["T10", "T11", "T12", "L1", "L2", "L3"]  # top first
    assert [v.complete for v in result.vertebrae] == [True] * 5 + [False]
    assert result.chain == "standard" and all(v.label_likelihood == pytest.approx(1.0) for v in result.vertebrae)
    assert result.vertebrae[1].volume_mm3 == pytest.approx(12 * 16 * 18 * SPACING ** 3)


def test_events_carry_lps_millimetres_and_cancel_stops_cleanly():
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP)
    image = _stored(spine.labels)
    events = []
    result = segment_with_predictor(image, oracle_for(spine, "up"), _meta(), on_event=events.append,
                                    should_cancel=lambda: sum(e["event"] == "vertebra" for e in events) >= 2)
    assert result.cancelled and len(result.vertebrae) == 2
    patches = [e for e in events if e["event"] == "patch"]
    assert patches and all(e["size_mm"] == [128.0, 128.0, 128.0] for e in patches)
    first = next(e for e in events if e["event"] == "vertebra")
    assert first["provisional_name"] == "L3"
    z_box = spine.boxes[IDS_BOTTOM_UP[0]][0]
    expected_z = 300.0 + SPACING * (z_box.start + z_box.stop - 1) / 2
    assert first["center_lps_mm"][2] == pytest.approx(expected_z, abs=SPACING)


@pytest.mark.parametrize("direction", ["up", "down"])
def test_patch_events_say_how_far_along_the_scan_the_traversal_is(direction):
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP)
    events = []
    segment_with_predictor(_stored(spine.labels), oracle_for(spine, direction), _meta(direction),
                           on_event=events.append)
    patches = [e for e in events if e["event"] == "patch"]
    for e in patches:  # the centre's model-grid z (LPS z = 300 + 4 z here) over the 110 layers, in its direction
        along = ((e["center_lps_mm"][2] - 300.0) / SPACING + 0.5) / 110
        assert e["scan_fraction"] == pytest.approx(along if direction == "up" else 1 - along, abs=1e-4)
    fractions = [e["scan_fraction"] for e in patches]
    assert fractions[0] < 0.35 and max(fractions) > 0.75  # the run starts near its end of the scan and climbs


def test_ct_surface_refinement_peels_low_density_surface_voxels():
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP)
    image = _stored(spine.labels)
    meta = _meta(modality="CT")
    plain = segment_with_predictor(image, oracle_for(spine, "up"), meta, SegmentConfig(surface_refinement=False))
    refined = segment_with_predictor(image, oracle_for(spine, "up"), meta)  # label ids (<= 24) are all < 200 "HU"
    plain_count = np.count_nonzero(sitk.GetArrayFromImage(plain.labels))
    refined_count = np.count_nonzero(sitk.GetArrayFromImage(refined.labels))
    assert 0 < refined_count < plain_count


@pytest.mark.parametrize("rule, incomplete", [("network", {"T10"}), ("edge", {"L3"}), ("both", {"T10", "L3"})])
def test_completeness_rule_decides_from_the_network_the_scan_edge_or_both(rule, incomplete):
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP, height=12, gap=4, z0=-4)  # L3 cut at the bottom
    says_complete = {v: anatomy.name_of(v) != "T10" for v in IDS_BOTTOM_UP}  # wrong twice: T10 and L3
    sees_whole = {**spine.volumes, IDS_BOTTOM_UP[0]: int(np.count_nonzero(spine.labels == IDS_BOTTOM_UP[0]))}
    predictor = OraclePredictor("up", sees_whole, says_complete)
    for config, meta in ((SegmentConfig(completeness_rule=rule), _meta()),
                         (SegmentConfig(), replace(_meta(), completeness_rule=rule))):
        result = segment_with_predictor(_stored(spine.labels), predictor, meta, config)
        assert {v.name for v in result.vertebrae if not v.complete} == incomplete
        assert {v.name for v in result.vertebrae if v.at_scan_edge} == {"L3"}
        assert [v.completeness_probability for v in result.vertebrae] == [0.0] + [1.0] * 5


def test_the_edge_margin_counts_masks_near_the_border_as_cut_and_comes_from_the_run_then_the_model():
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP, height=12, gap=4, z0=-4)  # L3 cut at the bottom
    predictor = oracle_for(spine, "up")  # every box lies 6 voxels (24 mm) from the x faces
    edge, every = replace(_meta(), completeness_rule="edge"), {anatomy.name_of(v) for v in IDS_BOTTOM_UP}
    for config, meta, cut in ((SegmentConfig(edge_margin_mm=23.9), edge, {"L3"}),
                              (SegmentConfig(), replace(edge, edge_margin_mm=24.0), every),
                              (SegmentConfig(edge_margin_mm=0.0), replace(edge, edge_margin_mm=24.0), {"L3"})):
        result = segment_with_predictor(_stored(spine.labels), predictor, meta, config)
        assert {v.name for v in result.vertebrae if v.at_scan_edge} == cut
        assert {v.name for v in result.vertebrae if not v.complete} == cut
        assert config.margin_for(meta) == (config.edge_margin_mm if config.edge_margin_mm is not None else 24.0)
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="edge_margin_mm"):
            SegmentConfig(edge_margin_mm=bad)
        with pytest.raises(ValueError, match="edge_min_contact_mm2"):
            SegmentConfig(edge_min_contact_mm2=bad)


@pytest.mark.parametrize("permutation", [(0, 1, 2), (1, 2, 0)])
def test_a_cranio_caudal_edge_margin_looks_only_across_the_patients_superior_axis(permutation):
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP, height=12, gap=4, z0=-4)  # L3 cut at the bottom
    edge = replace(_meta(), completeness_rule="edge", edge_margin_mm=24.0)  # reaches every box sideways
    every = {anatomy.name_of(v) for v in IDS_BOTTOM_UP}
    for faces, cut in (("all", every), ("cranio-caudal", {"L3"})):  # L2 lies 48 mm above the bottom face
        stored = _stored(spine.labels, permutation)  # however the file's axes lie, S-I is found
        result = segment_with_predictor(stored, oracle_for(spine, "up"), replace(edge, edge_margin_faces=faces))
        assert {v.name for v in result.vertebrae if v.at_scan_edge} == cut
        by_run = segment_with_predictor(stored, oracle_for(spine, "up"), edge, SegmentConfig(edge_margin_faces=faces))
        assert {v.name for v in by_run.vertebrae if v.at_scan_edge} == cut
    with pytest.raises(ValueError, match="edge_margin_faces"):
        SegmentConfig(edge_margin_faces="lateral")
    with pytest.raises(ValueError, match="margin_faces"):
        scan_edge_labels(_stored(spine.labels), 24.0, 0.0, "lateral")


def test_the_edge_contact_area_ignores_masks_that_only_graze_the_border():
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP, height=12, gap=4, z0=-4)  # L3 cut at the bottom
    face = 16 * 18 * SPACING ** 2  # L3's cut face: 16 x 18 voxels of 4 x 4 mm
    edge = replace(_meta(), completeness_rule="edge")
    for config, meta, cut in ((SegmentConfig(edge_min_contact_mm2=face), edge, {"L3"}),
                              (SegmentConfig(), replace(edge, edge_min_contact_mm2=face + 1), set()),
                              (SegmentConfig(edge_min_contact_mm2=0.0), replace(edge, edge_min_contact_mm2=1e6), {"L3"})):
        result = segment_with_predictor(_stored(spine.labels), oracle_for(spine, "up"), meta, config)
        assert {v.name for v in result.vertebrae if v.at_scan_edge} == cut
        assert {v.name for v in result.vertebrae if not v.complete} == cut


def _bright_voxels(images: np.ndarray, memories: np.ndarray) -> PatchPrediction:
    """A stand-in network that segments the bright voxels not yet in memory, as one L1."""
    probs = ((images > 0.5) & (memories <= 0.5)).astype(np.float32)
    found = probs.reshape(len(probs), -1).any(axis=1).astype(np.float32)
    return PatchPrediction(probs, 20.0 * found, found)


def test_linear_label_interpolation_maps_a_coarse_result_back_closer_to_the_truth():
    """A ball (r 9 mm) in a 1 mm image, segmented on a 2.5 mm model grid and mapped back."""
    z, y, x = np.mgrid[:40, :40, :40].astype(np.float64) + 0.5
    truth = ((z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 81).astype(np.float32)
    image = sitk.GetImageFromArray(truth)
    meta = replace(_meta(), spacing_mm=(2.5,) * 3, min_fragment_mm3=100.0)
    dice = {}
    for interpolation in ("nearest", "linear"):
        result = segment_with_predictor(image, _bright_voxels, meta, SegmentConfig(label_interpolation=interpolation))
        assert [v.name for v in result.vertebrae] == ["L1"]
        out = sitk.GetArrayFromImage(result.labels) == anatomy.label_of("L1")
        dice[interpolation] = 2 * np.sum(out & (truth > 0)) / (np.sum(out) + np.sum(truth > 0))
    assert dice["nearest"] < 0.91 and dice["linear"] > 0.94  # measured: 0.895 and 0.942
    with pytest.raises(ValueError, match="label_interpolation"):
        SegmentConfig(label_interpolation="cubic")


def test_each_vertebra_keeps_only_its_largest_piece_unless_asked_for_all():
    """The network's fragment holds a ball (r 9 mm) and a detached 6 mm cube: one vertebra in two pieces."""
    z, y, x = np.mgrid[:40, :40, :40].astype(np.float64) + 0.5
    ball = (z - 24) ** 2 + (y - 24) ** 2 + (x - 24) ** 2 <= 81
    speck = np.zeros_like(ball)
    speck[2:8, 2:8, 2:8] = True
    image = sitk.GetImageFromArray((ball | speck).astype(np.float32))
    meta = replace(_meta(), spacing_mm=(2.5,) * 3, min_fragment_mm3=100.0)
    out = {}
    for keep_all in (False, True):
        result = segment_with_predictor(image, _bright_voxels, meta, SegmentConfig(largest_component=not keep_all))
        assert [v.name for v in result.vertebrae] == ["L1"]
        out[keep_all] = sitk.GetArrayFromImage(result.labels) == anatomy.label_of("L1")
        volume = result.vertebrae[0].volume_mm3
        assert volume == pytest.approx(np.count_nonzero(out[keep_all]))  # the report measures what is kept
    assert np.any(out[True] & speck) and not np.any(out[False] & speck)
    np.testing.assert_array_equal(out[False], out[True] & ~speck)  # the ball itself is untouched


def test_unknown_completeness_rule_is_refused():
    with pytest.raises(ValueError, match="completeness rule 'majority'"):
        SegmentConfig(completeness_rule="majority")
    with pytest.raises(CheckpointError, match="'completeness_rule' is 'majority'"):
        replace(_meta(), completeness_rule="majority")


def test_the_models_skipped_level_allowance_comes_with_its_calibration():
    from vertebra_traversal.label_calibration import gaussian_reading
    # the traversal found no T11 (its level is missing from the scan's instances): T9 T10 | T12 L1 L2 L3
    ids = [anatomy.label_of(n) for n in ("L3", "L2", "L1", "T12", "T10", "T9")]
    spine = box_spine((110, 30, 30), ids, height=12, gap=4, z0=4)
    reading = {**gaussian_reading(0.5).to_json(), "gaps": {"max_gaps": 1, "gap_penalty": 0.1}}
    meta = replace(_meta(), label_calibration=reading)
    assert SegmentConfig().labeling_for(meta).max_gaps == 1
    assert SegmentConfig(label_calibration=False).labeling_for(meta).max_gaps == 0
    skipping = segment_with_predictor(_stored(spine.labels), oracle_for(spine, "up"), meta)
    assert [v.name for v in skipping.vertebrae] == ["T9", "T10", "T12", "L1", "L2", "L3"]
    gap_free = segment_with_predictor(_stored(spine.labels), oracle_for(spine, "up"),
                                      replace(meta, label_calibration=gaussian_reading(0.5).to_json()))
    assert [v.name for v in gap_free.vertebrae] != ["T9", "T10", "T12", "L1", "L2", "L3"]


def test_the_models_label_calibration_is_used_unless_switched_off():
    from vertebra_traversal.label_calibration import TABLE_VALUES, LabelCalibration
    spine = box_spine((110, 30, 30), IDS_BOTTOM_UP, height=12, gap=4, z0=4)
    shifted = LabelCalibration(tuple(y + 5.0 for y in TABLE_VALUES), (0.5,) * len(TABLE_VALUES))
    meta = replace(_meta(), label_calibration=shifted.to_json())  # "the network answers 5 levels too low"
    events = []
    calibrated = segment_with_predictor(_stored(spine.labels), oracle_for(spine, "up"), meta, on_event=events.append)
    assert [v.name for v in calibrated.vertebrae] == ["T5", "T6", "T7", "T8", "T9", "T10"]
    assert [e["provisional_name"] for e in events if e["event"] == "vertebra"][0] == "T10"  # L3's value, read so
    paper = segment_with_predictor(_stored(spine.labels), oracle_for(spine, "up"), meta,
                                   SegmentConfig(label_calibration=False))
    assert [v.name for v in paper.vertebrae] == ["T10", "T11", "T12", "L1", "L2", "L3"]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_growth_threshold_that_is_not_a_number_of_hu_is_refused(value):
    with pytest.raises(ValueError, match="growth_threshold_hu must be finite"):
        SegmentConfig(growth_threshold_hu=value)


def test_the_surface_threshold_comes_from_the_run_then_the_model_then_the_paper():
    assert SegmentConfig().threshold_for(_meta(modality="CT")) == 200.0
    model = replace(_meta(modality="CT"), surface_threshold_hu=100.0)
    assert SegmentConfig().threshold_for(model) == 100.0
    assert SegmentConfig(surface_threshold_hu=150.0).threshold_for(model) == 150.0
    with pytest.raises(ValueError, match="surface_threshold_hu must be finite"):
        SegmentConfig(surface_threshold_hu=float("nan"))


def test_the_models_surface_threshold_decides_what_the_refinement_peels():
    # a CT box of 150 HU inside air: the paper's 200 peels its surface, the model's 100 keeps it
    labels = np.zeros((40, 30, 30), dtype=np.int16)
    labels[10:30, 8:22, 8:22] = anatomy.label_of("L1")
    image = sitk.GetImageFromArray(np.where(labels > 0, 150.0, -1000.0).astype(np.float32))
    image.SetSpacing((SPACING,) * 3)
    oracle = oracle_for(box_spine((40, 30, 30), [anatomy.label_of("L1")], height=20, z0=10, size_yx=(14, 14)), "up")

    def on_labels(images, memories):  # the oracle reads vertebra ids from its image: show it the label map
        return oracle(np.where(images > -0.5, float(anatomy.label_of("L1")), 0.0).astype(np.float32), memories)

    kept, peeled = (segment_with_predictor(image, on_labels, replace(_meta(modality="CT"), surface_threshold_hu=t))
                    for t in (100.0, None))
    inside = labels > 0
    assert (sitk.GetArrayFromImage(kept.labels) > 0).sum() == inside.sum()
    assert 0 < (sitk.GetArrayFromImage(peeled.labels) > 0).sum() < inside.sum()


@pytest.mark.parametrize("max_offset_mm, width", [(0.0, 48), (30.0, 48), (30.0, 44)])
def test_an_instance_off_the_spine_line_is_dropped_before_the_labels_are_assigned(max_offset_mm, width):
    # five boxes stacked on one line and a sixth, the top one, 24 voxels (96 mm) to the side: a rib's piece
    # that the traversal stores as a vertebra. Kept, it takes a level; dropped, it leaves no voxel. Where it
    # reaches the scan's border (width 44) it is kept: a cut vertebra may show any part of itself.
    ids = [anatomy.label_of(n) for n in ("L3", "L2", "L1", "T12", "T11", "T10")]
    spine = box_spine((100, 30, width), ids, offsets_yx=[(7, 2)] * 5 + [(7, 26)])
    result = segment_with_predictor(_stored(spine.labels), oracle_for(spine, "up"), _meta(),
                                    SegmentConfig(max_spine_offset_mm=max_offset_mm))
    out = sitk.GetArrayFromImage(result.labels)
    side = spine.labels == ids[-1]
    if max_offset_mm and width == 48:
        np.testing.assert_array_equal(out, np.where(side, 0, spine.labels))
        assert [v.name for v in result.vertebrae] == ["T11", "T12", "L1", "L2", "L3"]
    else:
        np.testing.assert_array_equal(out, spine.labels)
        assert [v.name for v in result.vertebrae] == ["T10", "T11", "T12", "L1", "L2", "L3"]


def test_the_spine_offset_limit_comes_from_the_run_then_the_model():
    meta = replace(_meta(), max_spine_offset_mm=25.0)
    assert SegmentConfig().spine_offset_for(meta) == 25.0 and SegmentConfig().spine_offset_for(_meta()) == 0.0
    assert SegmentConfig(max_spine_offset_mm=0.0).spine_offset_for(meta) == 0.0
    with pytest.raises(ValueError, match="max_spine_offset_mm"):
        SegmentConfig(max_spine_offset_mm=-1.0)
    with pytest.raises(CheckpointError, match="max_spine_offset_mm"):
        replace(_meta(), max_spine_offset_mm=float("nan"))


def _spine_with_a_fragment(at_top: bool):
    """Six boxes stacked with gaps of 8 voxels and a 4-voxel cube (64 voxels against 3456: 0.02) in the gap
    between L1 and T12 (named T13, so that the oracle takes it after L1) or above the top box (named T9):
    what the traversal stores of a rib's head."""
    ids = [anatomy.label_of(n) for n in ("L3", "L2", "L1", "T12", "T11", "T10")]
    spine = box_spine((130, 30, 30), ids, gap=8)
    z = spine.boxes[ids[-1]][0].stop + 2 if at_top else spine.boxes[ids[2]][0].stop + 2
    labels = spine.labels.copy()
    labels[z:z + 4, 13:17, 13:17] = anatomy.label_of("T9" if at_top else "T13")
    volumes = {**spine.volumes, anatomy.label_of("T9" if at_top else "T13"): 64}
    return spine, labels, OraclePredictor("up", volumes, {v: True for v in volumes})


@pytest.mark.parametrize("ratio, at_top", [(0.0, False), (0.35, False), (0.35, True)])
def test_a_fragment_between_vertebrae_is_dropped_before_the_labels_are_assigned(ratio, at_top):
    # kept, the fragment takes a level of its own between L1 and T12: a T13 this spine does not have;
    # dropped, it leaves no voxel and the six boxes keep their names. At the end of the chain it is kept.
    spine, labels, predictor = _spine_with_a_fragment(at_top)
    result = segment_with_predictor(_stored(labels), predictor, _meta(), SegmentConfig(min_volume_ratio=ratio))
    out = sitk.GetArrayFromImage(result.labels)
    if ratio and not at_top:
        np.testing.assert_array_equal(out, spine.labels)
        assert [v.name for v in result.vertebrae] == ["T10", "T11", "T12", "L1", "L2", "L3"]
    else:
        np.testing.assert_array_equal(out, labels)
        assert len(result.vertebrae) == 7


def test_a_small_instance_the_scans_border_cuts_is_kept_where_it_is_not_at_the_end_of_the_chain():
    # the top box (T10) shows 2 of its 12 layers (0.17 of its neighbours) across 16 x 18 voxels of the
    # top face (4608 mm²); a 24-voxel piece (T9) on the top layer beside it is the chain's top end
    ids = [anatomy.label_of(n) for n in ("L3", "L2", "L1", "T12", "T11", "T10")]
    spine = box_spine((84, 30, 30), ids)
    labels = spine.labels.copy()
    labels[83, 0:4, 0:6] = anatomy.label_of("T9")
    volumes = {**spine.volumes, anatomy.label_of("T9"): 24}
    predictor = OraclePredictor("up", volumes, {v: True for v in volumes})
    result = segment_with_predictor(_stored(labels), predictor, _meta(), SegmentConfig(min_volume_ratio=0.35))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.labels), labels)
    assert [v.name for v in result.vertebrae][:2] == ["T9", "T10"]


def test_the_volume_ratio_comes_from_the_run_then_the_model():
    meta = replace(_meta(), min_volume_ratio=0.3)
    assert SegmentConfig().volume_ratio_for(meta) == 0.3 and SegmentConfig().volume_ratio_for(_meta()) == 0.0
    assert SegmentConfig(min_volume_ratio=0.0).volume_ratio_for(meta) == 0.0
    resolved = SegmentConfig().for_model(replace(meta, max_spine_offset_mm=25.0))  # what label_model_grid takes
    assert (resolved.min_volume_ratio, resolved.max_spine_offset_mm) == (0.3, 25.0)
    assert SegmentConfig(min_volume_ratio=0.1).for_model(meta).min_volume_ratio == 0.1
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="min_volume_ratio"):
            SegmentConfig(min_volume_ratio=bad)
        with pytest.raises(CheckpointError, match="min_volume_ratio"):
            replace(_meta(), min_volume_ratio=bad)


@pytest.mark.parametrize("max_trimmed", [0, 1])
def test_an_instance_that_fits_no_level_at_the_end_of_the_chain_is_left_out_where_allowed(max_trimmed):
    # L1-L5 and above them a piece whose label value is C1's: kept, it is named T12 (5 of 6 fit: 0.83);
    # left out at 0.15 (1 - 0.15 = 0.85), it leaves no voxel and L1-L5 keep their names
    ids = [anatomy.label_of(n) for n in ("L5", "L4", "L3", "L2", "L1")]
    spine = box_spine((110, 30, 30), ids, gap=8)
    labels = spine.labels.copy()
    z = spine.boxes[ids[-1]][0].stop + 4
    labels[z:z + 6, 10:20, 10:20] = anatomy.label_of("C1")
    volumes = {**spine.volumes, anatomy.label_of("C1"): 600}
    labeling = LabelingConfig(allow_t13=False, allow_l6=False, allow_four_lumbar=False, max_trimmed=max_trimmed,
                              trim_penalty=0.15)
    result = segment_with_predictor(_stored(labels), OraclePredictor("up", volumes, {v: True for v in volumes}),
                                    _meta(), SegmentConfig(labeling=labeling))
    out = sitk.GetArrayFromImage(result.labels)
    if max_trimmed:
        np.testing.assert_array_equal(out, spine.labels)
        assert [v.name for v in result.vertebrae] == ["L1", "L2", "L3", "L4", "L5"]
    else:
        np.testing.assert_array_equal(out > 0, labels > 0)
        assert [v.name for v in result.vertebrae] == ["T12", "L1", "L2", "L3", "L4", "L5"]

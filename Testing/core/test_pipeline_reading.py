"""The label reading of a run: the model's, with the run's own skipped levels and ends left out, and
never more instances than the label refinement can hold (labeling.capacity), so that a reading without
T13 and L6 chains still labels a scan with 25 instances."""
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from vertebra_traversal import anatomy
from vertebra_traversal.checkpoint import ModelMetadata
from vertebra_traversal.labeling import LabelingConfig, capacity
from vertebra_traversal.pipeline import SegmentConfig, label_model_grid
from vertebra_traversal.traversal import Instance, TraversalResult


def _stack(values_top_first, voxels_top_first):
    """Instances stacked along z (z increases superior), each a slab of 4 x 4 columns whose voxel count is
    its size; the first one on top. Returns (model image, traversal result)."""
    n = len(values_top_first)
    instances = np.zeros((2 * n, 8, 8), np.int16)
    found = []
    for rank, (value, voxels) in enumerate(zip(values_top_first, voxels_top_first)):
        z = 2 * (n - 1 - rank)
        flat = instances[z].reshape(-1)
        flat[:voxels] = rank + 1
        found.append(Instance(rank + 1, float(value), 0.9, voxels, (float(z), 3.5, 3.5),
                              (slice(z, z + 1), slice(0, 8), slice(0, 8))))
    image = sitk.GetImageFromArray(np.zeros(instances.shape, np.float32))
    image.SetSpacing((2.0, 2.0, 2.0))
    return image, TraversalResult(instances, tuple(found), steps=1, network_passes=1, stopped_by="complete",
                                  cancelled=False)


def test_capacity_is_the_longest_allowed_chain_and_what_may_be_left_out():
    assert capacity(LabelingConfig()) == len(anatomy.STANDARD) + 1
    assert capacity(LabelingConfig(allow_t13=False, allow_l6=False)) == len(anatomy.STANDARD)
    assert capacity(LabelingConfig(max_trimmed=3)) == len(anatomy.STANDARD) + 4


def test_more_instances_than_a_spine_without_variants_holds_keeps_the_largest_and_labels_them():
    # C1-L5 (24) and a 25th, the smallest, between L2 and L3: without T13 and L6 no chain holds 25
    values = list(range(1, 22)) + [21.5] + list(range(22, 25))
    voxels = [40] * 21 + [5] + [40] * 3
    image, result = _stack(values, voxels)
    config = SegmentConfig(labeling=LabelingConfig(allow_t13=False, allow_l6=False, allow_four_lumbar=False))
    labels, kept, assignment = label_model_grid(image, result, config)
    assert len(kept) == 24 and 22 not in [v.index for v in kept]
    assert assignment.labels == tuple(range(1, 25))
    assert np.count_nonzero(sitk.GetArrayFromImage(labels)) == 24 * 40  # the 5-voxel piece is gone


def _meta():
    return ModelMetadata(modality="CT", target="vertebra", spacing_mm=(4.0,) * 3, patch_size=(32, 32, 32),
                         normalization={"kind": "ct", "clip": [-1000, 2000], "scale": 1.0, "offset": 0.0})


def test_a_run_sets_its_own_skipped_levels_and_ends_left_out_at_the_models_prices():
    from vertebra_traversal.label_calibration import gaussian_reading
    reading = {**gaussian_reading(1.25).to_json(), "gaps": {"max_gaps": 2, "gap_penalty": 0.2},
               "trim": {"max_trimmed": 3, "trim_penalty": 0.25}}
    meta = replace(_meta(), label_calibration=reading)
    model = SegmentConfig().labeling_for(meta)
    assert (model.max_gaps, model.gap_penalty, model.max_trimmed, model.trim_penalty) == (2, 0.2, 3, 0.25)
    run = SegmentConfig(max_gaps=0, max_trimmed=1).labeling_for(meta)
    assert (run.max_gaps, run.gap_penalty, run.max_trimmed, run.trim_penalty) == (0, 0.2, 1, 0.25)
    assert run.calibration == model.calibration
    paper = SegmentConfig(label_calibration=False, max_trimmed=2).labeling_for(meta)  # the paper's reading, plus
    assert paper.calibration is None and (paper.max_gaps, paper.max_trimmed, paper.trim_penalty) == (0, 2, 0.15)
    for bad in (dict(max_gaps=4), dict(max_trimmed=-1)):
        with pytest.raises(ValueError, match="max_gaps|max_trimmed"):
            SegmentConfig(**bad)


def test_the_bottom_anchor_reads_how_far_the_scan_reaches_below_the_lowest_instance():
    values = [19.45, 20.45, 21.45, 22.45, 23.45]  # read T12..L4, or L1..L5 where the sacrum lies below
    image, result = _stack(values, [40] * 5)  # the lowest instance fills the model grid's lowest slice
    config = SegmentConfig(labeling=LabelingConfig(bottom_anchor_mm=10.0))
    names = lambda assignment: [anatomy.name_of(label) for label in assignment.labels]  # noqa: E731
    assert names(label_model_grid(image, result, config)[2])[-1] == "L4"  # the model grid ends at the instance
    scan = sitk.Image(8, 8, 2 * len(values) + 5, sitk.sitkFloat32)  # the scan: 5 slices of 2 mm more below
    scan.SetSpacing((2.0, 2.0, 2.0))
    scan.SetOrigin((0.0, 0.0, -10.0))
    assert names(label_model_grid(image, result, config, scan)[2]) == ["L1", "L2", "L3", "L4", "L5"]
    scan.SetOrigin((0.0, 0.0, -8.0))  # 8 mm below: too little to see the sacrum
    assert names(label_model_grid(image, result, config, scan)[2])[-1] == "L4"
    off = SegmentConfig(labeling=LabelingConfig(bottom_anchor_mm=10.0), bottom_anchor_mm=0.0)
    assert names(label_model_grid(image, result, off.for_model(_meta()), scan)[2])[-1] == "L4"


def test_a_run_reads_the_models_bottom_anchor_unless_it_sets_its_own():
    from vertebra_traversal.label_calibration import gaussian_reading
    reading = {**gaussian_reading(1.25).to_json(), "anchor": {"bottom_anchor_mm": 10.0, "bottom_anchor_penalty": 0.5}}
    meta = replace(_meta(), label_calibration=reading)
    assert meta.label_anchor() == {"bottom_anchor_mm": 10.0, "bottom_anchor_penalty": 0.5}
    model = SegmentConfig().labeling_for(meta)
    assert (model.bottom_anchor_mm, model.bottom_anchor_penalty) == (10.0, 0.5)
    assert SegmentConfig(bottom_anchor_mm=0.0).labeling_for(meta).bottom_anchor_mm == 0.0
    assert SegmentConfig(label_calibration=False).labeling_for(meta).bottom_anchor_mm == 0.0  # the paper's reading
    assert SegmentConfig().selection_record(meta)["label_bottom_anchor_mm"] == 10.0
    assert "label_bottom_anchor_mm" not in SegmentConfig(bottom_anchor_mm=0.0).selection_record(meta)
    with pytest.raises(ValueError, match="bottom_anchor_mm"):
        SegmentConfig(bottom_anchor_mm=-1.0)
    from vertebra_traversal.metadata import CheckpointError
    for bad in ({"bottom_anchor_mm": -5.0, "bottom_anchor_penalty": 1.0}, {"bottom_anchor_mm": 10.0}):
        with pytest.raises(CheckpointError, match="label_calibration.anchor"):
            replace(_meta(), label_calibration={**reading, "anchor": bad})


def test_a_run_takes_the_models_fragment_pieces_unless_it_sets_its_own():
    from vertebra_traversal.pipeline import traversal_config
    meta = replace(_meta(), fragment_pieces="largest")
    assert traversal_config(meta, SegmentConfig()).fragment_pieces == "largest"
    assert traversal_config(meta, SegmentConfig(fragment_pieces="all")).fragment_pieces == "all"
    assert traversal_config(_meta(), SegmentConfig()).fragment_pieces == "all"  # the paper's
    assert SegmentConfig().selection_record(meta)["fragment_pieces"] == "largest"
    assert "fragment_pieces" not in SegmentConfig().selection_record(_meta())  # older reports stay readable
    assert not SegmentConfig(fragment_pieces="all").labels_as_model(meta)  # not the model's own instances
    with pytest.raises(ValueError, match="fragment_pieces"):
        SegmentConfig(fragment_pieces="some")


def test_a_run_reads_the_models_rib_anchor_unless_it_sets_its_own_and_only_for_ct():
    from vertebra_traversal.label_calibration import gaussian_reading
    reading = {**gaussian_reading(1.25).to_json(), "ribs": {"rib_anchor": True, "rib_anchor_penalty": 0.5}}
    meta = replace(_meta(), label_calibration=reading)
    assert meta.label_sequence() == {"rib_anchor": True, "rib_anchor_penalty": 0.5}
    model = SegmentConfig().labeling_for(meta)
    assert (model.rib_anchor, model.rib_anchor_penalty) == (True, 0.5)
    assert not SegmentConfig(rib_anchor=False).labeling_for(meta).rib_anchor
    assert SegmentConfig().selection_record(meta)["label_rib_anchor"] is True
    assert "label_rib_anchor" not in SegmentConfig().selection_record(_meta())  # older reports stay readable
    with pytest.raises(ValueError, match="CT models only"):
        SegmentConfig(rib_anchor=True).labeling_for(replace(_meta(), modality="MR"))
    from vertebra_traversal.metadata import CheckpointError
    with pytest.raises(CheckpointError, match="label_calibration.ribs"):
        replace(_meta(), label_calibration={**reading, "ribs": {"rib_anchor": "yes", "rib_anchor_penalty": 1.0}})


def test_the_rib_anchor_reads_the_ribs_on_the_model_grid():
    from test_ribs import spine
    array, instances = spine(ribbed=(3, 4))  # five instances, ribs on the top two (j = 0 lowest)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.5, 2.5, 2.5))
    found = tuple(Instance(j + 1, value, 0.9, 512, (10.0 * j + 7.5, 19.5, 39.5), (slice(0, 60),) * 3)
                  for j, value in zip(reversed(range(5)), [17.4, 18.4, 19.4, 20.4, 21.4]))
    result = TraversalResult(instances, found, steps=1, network_passes=1, stopped_by="complete", cancelled=False)
    names = lambda assignment: [anatomy.name_of(label) for label in assignment.labels]  # noqa: E731
    assert names(label_model_grid(image, result, SegmentConfig())[2]) == ["T10", "T11", "T12", "L1", "L2"]
    ribs = SegmentConfig(labeling=LabelingConfig(rib_anchor=True))  # the second from the top is the last with ribs
    assert names(label_model_grid(image, result, ribs)[2]) == ["T11", "T12", "L1", "L2", "L3"]


def test_the_reading_prices_a_skipped_level_by_where_the_instances_lie_on_the_model_grid():
    """T7, T8, then values a little over half a level above T9 and T10 (labeling's docstring): the middle two
    instances lie 22 voxels apart, the others 15, so the skip between them is the better reading."""
    values, heights = [14.0, 15.0, 16.6, 17.6], [52, 37, 15, 0]  # top first; model-grid z (superior up)
    instances = np.zeros((54, 8, 8), np.int16)
    found = []
    for rank, (value, z) in enumerate(zip(values, heights)):
        instances[z] = rank + 1
        found.append(Instance(rank + 1, value, 0.9, 64, (float(z), 3.5, 3.5), (slice(z, z + 1), slice(0, 8),
                                                                               slice(0, 8))))
    image = sitk.GetImageFromArray(np.zeros(instances.shape, np.float32))
    image.SetSpacing((2.0, 2.0, 2.0))
    result = TraversalResult(instances, tuple(found), steps=1, network_passes=1, stopped_by="complete", cancelled=False)
    wide = LabelingConfig(max_gaps=1, wide_ratio=1.05, wide_penalties=(0.075, 0.05))
    _, _, read = label_model_grid(image, result, SegmentConfig(labeling=wide))
    assert [anatomy.name_of(label) for label in read.labels] == ["T7", "T8", "T10", "T11"]
    _, _, plain = label_model_grid(image, result, SegmentConfig(labeling=replace(wide, wide_ratio=0.0)))
    assert [anatomy.name_of(label) for label in plain.labels] == ["T7", "T8", "T9", "T10"]
    # evenly spaced instances: no pair lies wide apart, the spacing changes nothing
    even = replace(result, vertebrae=tuple(replace(v, center_zyx=(float(15 * (3 - i)), 3.5, 3.5))
                                           for i, v in enumerate(found)))
    assert label_model_grid(image, even, SegmentConfig(labeling=wide))[2].labels == plain.labels


def test_a_report_records_the_models_spacing_reading_only_where_it_reads():
    from vertebra_traversal.label_calibration import gaussian_reading
    spacing = {"wide_ratio": 1.05, "wide_penalties": [0.075, 0.05]}
    reading = {**gaussian_reading(1.25).to_json(), "gaps": {"max_gaps": 2, "gap_penalty": 0.1}, "spacing": spacing}
    meta = replace(_meta(), label_calibration=reading)
    assert SegmentConfig().selection_record(meta)["label_wide_ratio"] == 1.05
    assert SegmentConfig().labeling_for(meta).wide_penalties == (0.075, 0.05)
    # no skipped level allowed in the run (or no spacing in the model): nothing read, nothing recorded
    assert "label_wide_ratio" not in SegmentConfig(max_gaps=0).selection_record(meta)
    assert "label_wide_ratio" not in SegmentConfig().selection_record(
        replace(meta, label_calibration={k: v for k, v in reading.items() if k != "spacing"}))
    assert not SegmentConfig(max_gaps=0).labels_as_model(meta) and SegmentConfig().labels_as_model(meta)


def test_a_report_records_the_models_reversal_reading_where_it_has_one():
    from vertebra_traversal.label_calibration import gaussian_reading
    reading = {**gaussian_reading(1.25).to_json(), "reversal": {"reversal_levels": 6.0, "reversal_penalty": 0.05}}
    meta = replace(_meta(), label_calibration=reading)
    assert SegmentConfig().selection_record(meta)["label_reversal_levels"] == 6.0
    assert SegmentConfig().labeling_for(meta).reversal_penalty == 0.05
    assert "label_reversal_levels" not in SegmentConfig().selection_record(
        replace(meta, label_calibration=gaussian_reading(1.25).to_json()))

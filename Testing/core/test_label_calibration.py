"""The label calibration table (beyond paper §3.4): fit, likelihood, JSON, and its use by the ML step."""
import math

import numpy as np
import pytest

from vertebra_traversal import anatomy
from vertebra_traversal.checkpoint import CheckpointError, ModelMetadata
from vertebra_traversal.label_calibration import (TABLE_VALUES, LabelCalibration, fit_calibration,
                                                  gaussian_reading)
from vertebra_traversal.labeling import LabelingConfig, provisional_label, refine_labels

L = anatomy.label_of


def _table(mean_of, sd=1.0):
    return LabelCalibration(tuple(mean_of(y) for y in TABLE_VALUES), (sd,) * len(TABLE_VALUES))


def test_fit_recovers_a_reversed_answer_and_floors_the_spread():
    pairs = [(y, 30.0 - y) for y in TABLE_VALUES for _ in range(3)]  # the network answers 30 - y, exactly
    table = fit_calibration(pairs, cases=7, smoothing=1.0, sd_floor=2.0)
    # symmetric kernel weights around an interior level average a linear answer to its value there
    assert table.mean(10.0) == pytest.approx(20.0) and table.mean(15.0) == pytest.approx(15.0)
    assert 28.0 < table.mean(1.0) < 29.0  # at the ends the kernel is one-sided: pulled inwards (28.48)
    assert all(s == 2.0 for s in table.sds)  # the smoothed spread (~1 level) is raised to the floor
    assert (table.vertebrae, table.cases) == (75, 7)


def test_spread_above_the_floor_is_measured():
    pairs = [(12.0, 10.0), (12.0, 16.0)] * 5  # only T5 seen: mean 13, sd 3 at every level (nearest fallback)
    table = fit_calibration(pairs, smoothing=1.0, sd_floor=0.5)
    assert table.mean(12.0) == pytest.approx(13.0) and table.sds[11] == pytest.approx(3.0)
    assert table.mean(24.0) == pytest.approx(13.0)  # far levels fall back to what was seen


@pytest.mark.parametrize("pairs, message", [([(3.0, 2.0)], "at least 2"), ([(3.0, math.nan), (4.0, 1.0)], "finite")])
def test_fit_refuses_too_little_or_bad_data(pairs, message):
    with pytest.raises(ValueError, match=message):
        fit_calibration(pairs)


def test_likelihood_is_a_gaussian_around_the_measured_mean():
    table = _table(lambda y: y + 5.0, sd=2.0)
    assert table.likelihood(15.0, (10.0,)) == pytest.approx(1.0)
    assert table.likelihood(17.0, (10.0,)) == pytest.approx(math.exp(-0.5))
    assert table.likelihood(17.0, (10.0, 12.0)) == pytest.approx(1.0)  # the best of the expected values
    assert table.mean(19.5) == pytest.approx(24.5)  # T13 between T12 and L1


def test_json_round_trip_and_malformed_tables():
    table = fit_calibration([(y, 2.0 * y) for y in TABLE_VALUES])
    again = LabelCalibration.from_json(table.to_json())
    assert again.means == pytest.approx(table.means, abs=1e-4) and again.vertebrae == 25
    with pytest.raises(ValueError, match="values"):
        LabelCalibration.from_json({**table.to_json(), "values": [1.0, 2.0]})
    with pytest.raises(ValueError, match="positive"):
        LabelCalibration(table.means, (0.0,) * 25)


def test_model_metadata_carries_the_table_and_names_a_bad_one():
    base = dict(modality="CT", target="vertebra", spacing_mm=(2.5,) * 3, patch_size=(48, 48, 48),
                normalization={"kind": "ct", "clip": [-1000, 2000], "scale": 0.001, "offset": 0.0})
    table = _table(lambda y: 12.0)
    meta = ModelMetadata(**base, label_calibration=table.to_json())
    assert ModelMetadata.from_json(meta.to_json()).calibration().means == table.means
    assert ModelMetadata(**base).calibration() is None
    with pytest.raises(CheckpointError, match="label_calibration"):
        ModelMetadata(**base, label_calibration={"values": list(TABLE_VALUES), "means": [1.0]})
    gaps = {"max_gaps": 1, "gap_penalty": 0.2}
    meta = ModelMetadata(**base, label_calibration={**table.to_json(), "gaps": gaps})
    assert ModelMetadata.from_json(meta.to_json()).label_gaps() == gaps and ModelMetadata(**base).label_gaps() == {}
    for bad in ({"max_gaps": 9, "gap_penalty": 0.2}, {"max_gaps": 1}, [1, 0.2]):
        with pytest.raises(CheckpointError, match="label_calibration.gaps"):
            ModelMetadata(**base, label_calibration={**table.to_json(), "gaps": bad})
    trim = {"max_trimmed": 3, "trim_penalty": 0.15}
    meta = ModelMetadata(**base, label_calibration=ModelMetadata.reading_record(table, {**gaps, **trim}))
    parsed = ModelMetadata.from_json(meta.to_json())
    assert (parsed.label_gaps(), parsed.label_trim(), ModelMetadata(**base).label_trim()) == (gaps, trim, {})
    assert "trim" not in ModelMetadata.reading_record(table, {**gaps, "max_trimmed": 0, "trim_penalty": 0.15})
    for bad in ({"max_trimmed": 4, "trim_penalty": 0.1}, {"max_trimmed": 1}, {"max_gaps": 1, "gap_penalty": 0.1}):
        with pytest.raises(CheckpointError, match="label_calibration.trim"):
            ModelMetadata(**base, label_calibration={**table.to_json(), "trim": bad})


def test_refinement_reads_values_through_the_table():
    # a network that answers 25 - y: C5, C6, C7 (y = 5, 6, 7) come out as 20, 19, 18
    table = _table(lambda y: 25.0 - y, sd=0.5)
    values = [20.0, 19.0, 18.0]
    calibrated = refine_labels(values, LabelingConfig(calibration=table))
    assert calibrated.labels == (L("C5"), L("C6"), L("C7"))
    assert all(p == pytest.approx(1.0) for p in calibrated.likelihoods)
    paper = refine_labels(values, LabelingConfig())
    assert paper.labels != calibrated.labels  # read as the paper does, 20/19/18 are no C5-C7
    assert provisional_label(20.0, table) == L("C5") and provisional_label(20.0) == L("L1")


def test_a_non_monotonic_answer_is_resolved_by_the_sequence():
    # rises to 24 at T8 and falls back to 16 at L5, as the bundled CT model does
    bump = np.interp(TABLE_VALUES, [1, 15, 24, 25], [8.0, 24.0, 16.0, 15.0])
    table = LabelCalibration(tuple(bump), (1.0,) * 25)
    names = ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    values = [table.mean(anatomy.vertebra(n).regression_value) for n in names]
    result = refine_labels(values, LabelingConfig(calibration=table))
    assert [anatomy.name_of(label) for label in result.labels] == names


def test_gaussian_reading_keeps_the_papers_values_and_forgives_a_level():
    from vertebra_traversal.labeling import likelihood
    table = gaussian_reading(1.5)
    assert table.likelihood(13.0, (13.0,)) == 1.0 and table.likelihood(14.5, (13.0,)) == pytest.approx(math.exp(-0.5))
    assert likelihood(14.5, (13.0,)) == 0.0  # the paper's triangle gives nothing one and a half levels off
    # T10..L2 (17..21) answered 0.6 too high, except T12 answered 1.2 too low. Triangle: one level lower
    # scores (0.6 * 4 + 0) / 5 = 0.48 against (0.4 * 4 + 0) / 5 = 0.32 for the truth, so it shifts all five;
    # the Gaussian scores the truth 0.884 against 0.840 and keeps it.
    values = [17.6, 18.6, 17.8, 20.6, 21.6]
    only = dict(allow_t13=False, allow_l6=False, allow_four_lumbar=False)
    truth = tuple(L(n) for n in ("T10", "T11", "T12", "L1", "L2"))
    assert refine_labels(values, LabelingConfig(calibration=table, **only)).labels == truth
    assert refine_labels(values, LabelingConfig(**only)).labels == tuple(L(n) for n in ("T11", "T12", "L1", "L2", "L3"))
    with pytest.raises(ValueError, match="positive"):
        gaussian_reading(0.0)

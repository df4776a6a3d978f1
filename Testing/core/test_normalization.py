"""Tests for vertebra_traversal.normalization (CT window, MR percentiles, paper §5)."""
import json

import numpy as np
import pytest

from vertebra_traversal.normalization import NormalizationSpec, normalize, pad_value


def test_ct_clips_then_scales():
    spec = NormalizationSpec("ct")
    hu = np.array([[-3024.0, -1000.0, 0.0], [500.0, 2000.0, 3000.0]])
    out = normalize(hu, spec)
    assert out.dtype == np.float32 and out.shape == hu.shape
    np.testing.assert_allclose(out, [[-1.0, -1.0, 0.0], [0.5, 2.0, 2.0]], atol=1e-6)


def test_ct_custom_window_and_offset():
    spec = NormalizationSpec("ct", clip=(-200.0, 800.0), scale=0.01, offset=1.0)
    out = normalize(np.array([-500.0, 100.0, 1000.0]), spec)
    np.testing.assert_allclose(out, [-1.0, 2.0, 9.0], atol=1e-5)
    # air (-1000 HU) is clipped to the window before scaling
    assert pad_value(spec) == pytest.approx(-200.0 * 0.01 + 1.0)


def test_percentile_maps_to_minus_one_plus_one():
    values = np.arange(101, dtype=np.float64).reshape(1, 1, 101)  # percentile p is exactly p
    out = normalize(values, NormalizationSpec("percentile"))
    assert out.dtype == np.float32
    assert out.min() == pytest.approx(-1.0) and out.max() == pytest.approx(1.0)
    assert np.all(out[..., :6] == pytest.approx(-1.0))  # 0..5 clipped to the 5th percentile
    assert np.all(out[..., 95:] == pytest.approx(1.0))  # 95..100 clipped to the 95th
    assert out[0, 0, 50] == pytest.approx(0.0, abs=1e-6)  # midpoint 50 -> 0
    assert out[0, 0, 20] == pytest.approx(2 * 15 / 90 - 1, abs=1e-6)


def test_percentile_is_invariant_to_affine_intensity_change():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 50.0, size=(6, 7, 8))
    spec = NormalizationSpec("percentile", low=5, high=95)
    np.testing.assert_allclose(normalize(image, spec), normalize(3.0 * image + 40.0, spec), atol=1e-5)


def test_percentile_degenerate_images():
    mostly_zero = np.zeros((10, 10, 10))
    mostly_zero[0, 0, :3] = [10.0, 20.0, 30.0]  # 5th and 95th percentiles are both 0
    out = normalize(mostly_zero, NormalizationSpec("percentile"))
    assert out[0, 0, 2] == pytest.approx(1.0) and out[5, 5, 5] == pytest.approx(-1.0)
    constant = normalize(np.full((3, 3, 3), 7.0), NormalizationSpec("percentile"))
    assert np.all(constant == -1.0)


def test_pad_values():
    assert pad_value(NormalizationSpec("ct")) == pytest.approx(-1.0)
    assert pad_value(NormalizationSpec("percentile")) == -1.0
    spec = NormalizationSpec("ct")
    assert normalize(np.array([-1000.0]), spec)[0] == pytest.approx(pad_value(spec))


@pytest.mark.parametrize("spec", [NormalizationSpec("ct"), NormalizationSpec("ct", (-500.0, 1500.0), 0.002, -0.5),
                                  NormalizationSpec("percentile"), NormalizationSpec("percentile", low=1, high=99)])
def test_json_round_trip(spec):
    data = json.loads(json.dumps(spec.to_json()))
    assert NormalizationSpec.from_json(data) == spec


def test_json_matches_architecture_document():
    ct = NormalizationSpec.from_json({"kind": "ct", "clip": [-1000, 2000], "scale": 0.001, "offset": 0.0})
    assert ct == NormalizationSpec("ct")
    mr = NormalizationSpec.from_json({"kind": "percentile", "low": 5, "high": 95})
    assert mr == NormalizationSpec("percentile")
    assert set(mr.to_json()) == {"kind", "low", "high"}


@pytest.mark.parametrize("data, words", [
    ({"kind": "zscore"}, "unknown kind"),
    ({}, "unknown kind"),
    ([1, 2], "JSON object"),
    ({"kind": "ct", "low": 5}, "unknown keys"),
    ({"kind": "ct", "clip": [2000, -1000]}, "clip low must be below high"),
    ({"kind": "ct", "clip": [0]}, "clip must be"),
    ({"kind": "ct", "clip": "ab"}, "clip must be"),
    ({"kind": "ct", "scale": 0}, "scale must be positive"),
    ({"kind": "ct", "scale": "big"}, "scale must be a number"),
    ({"kind": "percentile", "low": 95, "high": 5}, "low < high"),
    ({"kind": "percentile", "high": 101}, "low < high"),
    ({"kind": "percentile", "low": float("nan")}, "finite"),
])
def test_from_json_rejects_bad_specs(data, words):
    with pytest.raises(ValueError, match=words):
        NormalizationSpec.from_json(data)

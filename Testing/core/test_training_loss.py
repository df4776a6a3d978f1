"""Loss terms of paper §3.6 on tiny arrays with values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vertebra_traversal.training import loss as L


def test_lambda_schedule_end_points_and_midpoint():
    assert L.fp_weight(50, 100) == pytest.approx(0.55)                      # (1 + 0.1) / 2
    assert L.fp_weight(0, 100) == pytest.approx(0.1 + 0.9 / (1 + math.e ** 5))  # 0.10602
    assert L.fp_weight(100, 100) == pytest.approx(0.1 + 0.9 / (1 + math.e ** -5))  # 0.99398
    assert 0.1 < L.fp_weight(0, 100) < 0.107 and 0.993 < L.fp_weight(100, 100) < 1.0
    assert L.fp_weight(10**6, 100) == pytest.approx(1.0) and L.fp_weight(-10**6, 100) == pytest.approx(0.1)
    values = [L.fp_weight(n, 1000) for n in range(0, 1001, 50)]
    assert all(b > a for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError):
        L.fp_weight(0, 0)


def test_surface_weights_on_a_line_with_known_distances():
    mask = np.zeros((1, 1, 9), bool)
    mask[0, 0, 3:7] = True                       # surface voxels x = 3 and x = 6, interior 4, 5
    w = L.surface_weights(mask, spacing_mm=(1.0, 1.0, 2.0), gamma=8.0, sigma_mm=6.0)
    expected_d = np.array([6, 4, 2, 0, 2, 2, 0, 2, 4], float)   # mm, x spacing 2 mm
    assert w.dtype == np.float32 and w.shape == mask.shape
    assert np.allclose(w[0, 0], 8 * np.exp(-expected_d ** 2 / 36) + 1, atol=1e-5)
    assert w[0, 0, 3] == pytest.approx(9.0)
    assert np.all(L.surface_weights(np.zeros((3, 3, 3), bool), (1, 1, 1)) == 1.0)


def test_surface_weights_ignore_the_patch_border():
    mask = np.ones((5, 5, 5), bool)              # fills the patch: no surface inside it
    mask[2, 2, 2] = False                        # one hole: its 6 neighbours are the surface
    w = L.surface_weights(mask, (1, 1, 1), gamma=8.0, sigma_mm=6.0)
    assert w[2, 1, 2] == pytest.approx(9.0) and w[2, 2, 2] == pytest.approx(8 * math.exp(-1 / 36) + 1)
    assert w[0, 0, 0] == pytest.approx(8 * math.exp(-(2 ** 2 + 2 ** 2 + 1) / 36) + 1, rel=1e-5)


def test_segmentation_error_by_hand():
    p = torch.tensor([[0.2, 0.9, 0.5]])
    t = torch.tensor([[0.0, 1.0, 1.0]])
    w = torch.tensor([[1.0, 2.0, 3.0]])
    # FP = 1*1*0.2 = 0.2; FN = 2*0.1 + 3*0.5 = 1.7; lambda 0.5 -> 0.1 + 1.7
    assert float(L.segmentation_error(p, t, w, 0.5)) == pytest.approx(1.8)
    assert float(L.segmentation_error(t, t, w, 1.0)) == pytest.approx(0.0)


def test_label_and_completeness_errors_by_hand():
    assert float(L.label_error(torch.tensor([3.0, 0.5]), torch.tensor([5.0, 0.0]))) == pytest.approx(1.25)
    assert float(L.completeness_error(torch.tensor([0.0]), torch.tensor([1.0]))) == pytest.approx(math.log(2))
    # logit ln 3 -> p = 0.75; target 1 -> -ln 0.75, target 0 -> -ln 0.25
    logit = torch.tensor([math.log(3.0), math.log(3.0)])
    expected = (-math.log(0.75) - math.log(0.25)) / 2
    assert float(L.completeness_error(logit, torch.tensor([1.0, 0.0]))) == pytest.approx(expected)
    assert float(L.completeness_error(torch.tensor([80.0]), torch.tensor([1.0]))) < 1e-20


def test_total_loss_is_the_unweighted_sum_with_the_reference_divisor():
    seg_logits = torch.zeros(1, 1, 1, 1, 2)                      # p = 0.5 everywhere
    batch = {"target": torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 1, 2),
             "weights": torch.tensor([4.0, 2.0]).reshape(1, 1, 1, 1, 2),
             "label": torch.tensor([22.0]), "complete": torch.tensor([1.0])}
    terms = L.total_loss(seg_logits, torch.tensor([20.0]), torch.tensor([0.0]), batch, fp_lambda=0.5,
                         seg_divisor=2.0)
    seg = (0.5 * 2.0 * 0.5 + 4.0 * 0.5) / 2.0                    # (λ·FP + FN) / divisor = 1.25
    assert float(terms.segmentation) == pytest.approx(seg)
    assert float(terms.label) == pytest.approx(2.0)
    assert float(terms.completeness) == pytest.approx(math.log(2))
    assert float(terms.total) == pytest.approx(seg + 2.0 + math.log(2))
    assert set(terms.as_floats()) == {"loss", "seg", "label", "completeness"}


def test_reference_voxels():
    assert L.reference_voxels(L.LossConfig(), (2.0, 2.0, 2.0)) == pytest.approx(3750.0)
    assert L.reference_voxels(L.LossConfig(reference_volume_mm3=0.0), (1.0, 1.0, 1.0)) == 1.0


def test_surface_weights_cropping_matches_the_full_distance_transform():
    from scipy import ndimage
    z, y, x = np.indices((40, 36, 44))
    mask = ((z - 12) / 7.0) ** 2 + ((y - 11) / 6.0) ** 2 + ((x - 8) / 9.0) ** 2 <= 1.0   # reaches x = 0
    mask[8:12, 15:18, 10:16] = True                       # an attached bar
    assert mask[:, :, 0].any() and not mask[30:].any() and not mask[:, :, 40:].any()
    spacing = (2.0, 1.5, 1.0)
    surface = mask & ~ndimage.binary_erosion(mask, border_value=1)
    d = ndimage.distance_transform_edt(~surface, sampling=spacing)
    full = 8.0 * np.exp(-d ** 2 / 36.0) + 1.0
    assert np.allclose(L.surface_weights(mask, spacing, 8.0, 6.0), full, atol=1e-5)

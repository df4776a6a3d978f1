"""vertebra_stats on a volume with exactly known answers, and the phantom's calibration against real
lumbar CT masks (1.5-3 mm voxels): L1-L5 about 58-66 mL, HU p10 -20..90, median 140-210,
p90 320-750, 45-55 mm cranio-caudal and 80-100 mm across the transverse processes."""
import numpy as np
import pytest
import SimpleITK as sitk

from vertebra_traversal.phantom import PhantomConfig, format_stats, generate_case, vertebra_stats


def _volume(direction):
    values = np.arange(8 * 10 * 12, dtype=np.float32).reshape(8, 10, 12)  # (z, y, x)
    labels = np.zeros((8, 10, 12), np.uint8)
    labels[2:6, 1:4, 3:8] = 22  # L3: 4 x 3 x 5 voxels (k, j, i)
    labels[7, 9, 11] = 23
    image, lab = sitk.GetImageFromArray(values), sitk.GetImageFromArray(labels)
    for img in (image, lab):
        img.SetSpacing((0.5, 2.0, 3.0))
        img.SetOrigin((10.0, -5.0, 7.0))
        img.SetDirection(direction)
    return image, lab, values[labels == 22]


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, -1, 1, 0, 0, 0, -1, 0)])
def test_vertebra_stats_exact_on_a_known_box(direction):
    image, labels, inside = _volume(direction)
    rows = vertebra_stats(image, labels)
    assert [r["name"] for r in rows] == ["L3", "L4"]
    l3 = rows[0]
    assert l3["voxels"] == 60 and l3["volume_ml"] == pytest.approx(60 * 0.5 * 2.0 * 3.0 / 1000, abs=0.01)
    assert l3["p10"] == pytest.approx(np.percentile(inside, 10), abs=0.1)
    assert l3["median"] == pytest.approx(np.median(inside), abs=0.1)
    # index extents (i, j, k) = (5 * 0.5, 3 * 2, 4 * 3) mm; the direction says which patient axis each is
    extent_ijk = np.array([2.5, 6.0, 12.0])
    d = np.abs(np.array(direction, float).reshape(3, 3))
    expected_xyz = d @ extent_ijk
    got = [l3["extent_lr_mm"], l3["extent_ap_mm"], l3["extent_si_mm"]]
    np.testing.assert_allclose(got, expected_xyz, atol=1e-6)
    assert "L3" in format_stats(rows).splitlines()[1]


def test_vertebra_stats_refuses_mismatched_grids():
    image, labels, _ = _volume((1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(ValueError, match="differ"):
        vertebra_stats(image[:, :, :4], labels)


def test_lumbar_statistics_match_real_ct_calibration():
    """Mean over complete L1-L5 of several cases at 2-3 mm spacing lies in the real-CT ranges."""
    config = PhantomConfig(fov="lumbar", inplane_spacing_mm=(1.5, 2.0), slice_spacing_mm=(2.0, 3.0),
                           random_orientation=False, fracture_rate=0.0, low_density_rate=0.0, t13_rate=0.0,
                           l6_rate=0.0, four_lumbar_rate=0.0, scoliosis_rate=0.0)
    rows = []
    for seed in range(100, 106):
        case = generate_case(seed, config)
        complete = {r.label for r in case.info.vertebrae if r.complete}
        rows += [r for r in vertebra_stats(case.image, case.labels)
                 if r["label"] in complete and r["name"] in ("L1", "L2", "L3", "L4", "L5")]
    assert len(rows) >= 15
    mean = {k: float(np.mean([r[k] for r in rows])) for k in
            ("volume_ml", "p10", "median", "p90", "extent_si_mm", "extent_lr_mm")}
    assert 55.0 <= mean["volume_ml"] <= 68.0, mean
    assert -20.0 <= mean["p10"] <= 90.0, mean
    assert 140.0 <= mean["median"] <= 210.0, mean
    assert 320.0 <= mean["p90"] <= 750.0, mean
    assert 45.0 <= mean["extent_si_mm"] <= 55.0, mean
    assert 80.0 <= mean["extent_lr_mm"] <= 100.0, mean

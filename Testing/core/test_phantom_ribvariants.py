"""Rib anomalies of the generator (phantom/ribvariants.py): draws, the cut of a short rib, and what
switching each rate on changes in a case (the ribs it names, nothing else)."""
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from vertebra_traversal.phantom import PhantomConfig, generate_case
from vertebra_traversal.phantom.ribvariants import KINDS, LENGTH_MM, RibVariants, draw, shorten

FULL = dict(fov="full", inplane_spacing_mm=(3.0, 3.0), slice_spacing_mm=(3.0, 3.0), random_orientation=False,
            fracture_rate=0.0, t13_rate=0.0, l6_rate=0.0, four_lumbar_rate=0.0, scoliosis_rate=0.0)


def test_draws_keep_their_count_and_ranges_whatever_the_rates():
    for seed in range(20):
        none_rng, all_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        assert draw({}, none_rng) == RibVariants() and RibVariants().to_json() == {}
        every = draw({kind: 1.0 for kind in KINDS}, all_rng)
        assert none_rng.random() == all_rng.random()  # the same number of draws
        for kind in KINDS:
            sides = getattr(every, kind)
            assert set(sides) in ({1.0}, {-1.0}, {1.0, -1.0})
            assert all(LENGTH_MM[kind][0] <= v <= LENGTH_MM[kind][1] for v in sides.values())
    both = [len(draw({"lumbar": 1.0}, np.random.default_rng(s)).lumbar) == 2 for s in range(200)]
    assert 0.35 < np.mean(both) < 0.65  # bilateral about half the time


def test_shorten_cuts_a_polyline_at_its_arc_length():
    pts = [np.zeros(3), np.array([10.0, 0, 0]), np.array([10.0, 20, 0])]
    cut = shorten(pts, 25.0)
    np.testing.assert_allclose(cut[-1], [10.0, 15.0, 0.0])
    assert len(cut) == 3
    np.testing.assert_allclose(shorten(pts, 4.0)[-1], [4.0, 0, 0])
    assert len(shorten(pts, 100.0)) == 3  # longer than the line: the whole line
    np.testing.assert_allclose(shorten(pts, 10.0)[-1], [10.0, 0, 0])  # exactly at a vertex
    np.testing.assert_allclose(shorten(pts, 0.0)[-1], [0.0, 0, 0])
    with pytest.raises(ValueError, match="negative"):
        shorten(pts, -1.0)
    with pytest.raises(ValueError, match="unknown kinds"):
        draw({"thoracic": 1.0}, np.random.default_rng(0))


def _bone_change(kind_rates):
    """Masks of the bone voxels (> 250 HU) added and removed by the rates, and both cases (labels equal)."""
    plain = generate_case(1003, PhantomConfig(**FULL))
    varied = generate_case(1003, PhantomConfig(**FULL, **kind_rates))
    a, b = sitk.GetArrayFromImage(plain.image), sitk.GetArrayFromImage(varied.image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(plain.labels), sitk.GetArrayFromImage(varied.labels))
    return (b > 250) & (a <= 250), (a > 250) & (b <= 250), plain, varied


def _heights_mm(mask, case):
    """Superior (LPS z) extent of ``mask``'s voxels, mm (images are stored LPS here)."""
    z = np.nonzero(mask.any(axis=(1, 2)))[0]
    return case.image.GetOrigin()[2] + z.min() * 3.0, case.image.GetOrigin()[2] + z.max() * 3.0


@pytest.mark.parametrize("rate,level,change", [("lumbar_rib_rate", "L1", "added"),
                                               ("cervical_rib_rate", "C7", "added"),
                                               ("short_rib_rate", "T12", "removed")])
def test_each_rate_changes_only_its_ribs_beside_its_level(rate, level, change):
    added, removed, plain, varied = _bone_change({rate: 1.0})
    kind = {"lumbar_rib_rate": "lumbar", "cervical_rib_rate": "cervical", "short_rib_rate": "short_last"}[rate]
    sides = varied.info.source["rib_variants"][kind]
    assert list(varied.info.source["rib_variants"]) == [kind] and plain.info.source["rib_variants"] == {}
    changed, other = (added, removed) if change == "added" else (removed, added)
    assert other.sum() < 5
    pieces, count = ndimage.label(ndimage.binary_dilation(changed, iterations=1))
    sizes = ndimage.sum(changed, pieces, range(1, count + 1))
    assert (sizes >= 10).sum() == len(sides)  # one piece of rib per side named in the sidecar
    centres = {r.name: r.centroid_lps_mm for r in plain.info.vertebrae}
    centre = centres[level]
    lo, hi = _heights_mm(changed, plain)
    # the rib leaves its own vertebra: the top of the change lies nearer its centre than any other's
    assert min(centres, key=lambda name: abs(centres[name][2] - hi)) == level
    assert centre[2] - 60 < lo  # and runs down from there (a rib's course), not past the next vertebra but one
    x = plain.image.GetOrigin()[0] + np.nonzero(changed.any(axis=(0, 1)))[0] * 3.0
    assert np.abs(x - centre[0]).min() > 15  # lateral of the vertebra's body
    # on the sides the sidecar names: LPS x grows to the patient's left
    found = set()
    for piece in np.flatnonzero(sizes >= 10) + 1:
        xs = plain.image.GetOrigin()[0] + np.nonzero((pieces == piece).any(axis=(0, 1)))[0] * 3.0
        found.add("left" if xs.mean() > centre[0] else "right")
    assert found == set(sides)

"""Synthetic spine generator: determinism, labels, orientation, completeness, MR targets, variants,
fractures. Coarse grids (2-4 mm) keep every case well under a second."""
import numpy as np
import pytest
import SimpleITK as sitk

from vertebra_traversal import anatomy
from vertebra_traversal.phantom import PhantomConfig, generate_case
from vertebra_traversal.phantom.spine import GENANT_LOSS

COARSE = dict(inplane_spacing_mm=(3.0, 3.0), slice_spacing_mm=(3.0, 3.0), random_orientation=False)
NO_VARIANTS = dict(fracture_rate=0.0, t13_rate=0.0, l6_rate=0.0, four_lumbar_rate=0.0, scoliosis_rate=0.0)


def _arrays(case):
    return sitk.GetArrayFromImage(case.image), sitk.GetArrayFromImage(case.labels)


def _voxels(case, label):
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(case.labels) == label))


def test_same_seed_same_case_and_other_seed_differs():
    config = PhantomConfig(fov="lumbar", **COARSE)
    a, b, c = generate_case(11, config), generate_case(11, config), generate_case(12, config)
    ia, la = _arrays(a)
    ib, lb = _arrays(b)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(la, lb)
    assert a.info == b.info and a.image.GetOrigin() == b.image.GetOrigin()
    ic, _ = _arrays(c)
    assert ic.shape != ia.shape or not np.array_equal(ic, ia)
    assert a.info.case_id == "phantom00011" and a.info.source["seed"] == 11


def test_labels_are_verse_ids_ordered_cranio_caudally_along_s():
    case = generate_case(3, PhantomConfig(fov="full", inplane_spacing_mm=(4.0, 4.0), slice_spacing_mm=(4.0, 4.0),
                                          **NO_VARIANTS))
    _, labels = _arrays(case)
    present = sorted(set(np.unique(labels).tolist()) - {0})
    assert present and all(anatomy.is_valid_label(l) for l in present)
    records = case.info.vertebrae
    assert sorted(r.label for r in records) == present
    assert [r.name for r in records] == [anatomy.name_of(r.label) for r in records]
    z = [r.centroid_lps_mm[2] for r in records]  # LPS: +z is superior
    ranks = [anatomy.vertebra(r.label).rank for r in records]
    assert ranks == sorted(ranks) and all(z1 > z2 for z1, z2 in zip(z, z[1:]))
    assert {"C1", "L5"} <= {r.name for r in records}  # the full field shows the whole spine
    assert case.image.GetPixelID() == sitk.sitkFloat32 and case.labels.GetPixelID() == sitk.sitkUInt8
    assert case.labels.GetSize() == case.image.GetSize() and case.labels.GetOrigin() == case.image.GetOrigin()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neck_field_is_a_cervical_spine_scan(seed):
    """``fov="neck"``: the top lies at C1 or C2 and the scan ends within C7-T3 (sections C1-T1, C2-T2)."""
    case = generate_case(seed, PhantomConfig(fov="neck", **COARSE, **NO_VARIANTS))
    names = [r.name for r in case.info.vertebrae]
    assert case.info.source["fov"] == "neck"
    assert names[0] in ("C1", "C2") and {"C3", "C4", "C5", "C6", "C7"} <= set(names)
    assert names[-1] in ("C7", "T1", "T2", "T3") and not any(n.startswith("L") for n in names)


def test_each_vertebra_is_one_piece_and_neighbours_touch():
    """Facet joints and discs: adjacent labels touch (26-neighbourhood) but every vertebra is a single
    connected component of its own label."""
    from scipy import ndimage

    case = generate_case(4, PhantomConfig(fov="full", inplane_spacing_mm=(3.0, 3.0), slice_spacing_mm=(3.0, 3.0),
                                          random_orientation=False, **NO_VARIANTS))
    _, labels = _arrays(case)
    cube = np.ones((3, 3, 3), bool)
    records = case.info.vertebrae
    assert len(records) == 24
    boxes = ndimage.find_objects(labels)
    for upper, lower in zip(records, records[1:]):
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in boxes[upper.label - 1])
        mask = labels[box] == upper.label
        assert ndimage.label(mask, cube)[1] == 1, upper.name
        assert np.any(ndimage.binary_dilation(mask, cube) & (labels[box] == lower.label)), (upper.name, lower.name)


def test_storage_orientation_changes_array_but_not_physical_positions():
    base = dict(fov="lumbar", inplane_spacing_mm=(3.0, 3.0), slice_spacing_mm=(2.0, 2.0))
    for seed in range(20, 40):
        turned = generate_case(seed, PhantomConfig(random_orientation=True, **base))
        if turned.info.source["orientation"] not in ("LPS",):
            break
    plain = generate_case(seed, PhantomConfig(random_orientation=False, **base))
    assert plain.info.source["orientation"] == "LPS"
    assert turned.image.GetDirection() != plain.image.GetDirection()
    assert sorted(turned.image.GetSpacing()) == pytest.approx(sorted(plain.image.GetSpacing()))
    assert [r.label for r in turned.info.vertebrae] == [r.label for r in plain.info.vertebrae]
    for a, b in zip(turned.info.vertebrae, plain.info.vertebrae):
        np.testing.assert_allclose(a.centroid_lps_mm, b.centroid_lps_mm, atol=1e-3)
        assert a.complete == b.complete
    # the same voxel value sits at the same physical point
    k, j, i = (int(c[0]) for c in np.nonzero(sitk.GetArrayViewFromImage(plain.labels)))
    point = plain.image.TransformIndexToPhysicalPoint((i, j, k))
    i_turned = turned.image.TransformPhysicalPointToIndex(point)
    assert plain.image[i, j, k] == turned.image[i_turned]
    assert plain.labels[i, j, k] == turned.labels[i_turned] != 0


def test_completeness_follows_the_two_percent_rule_when_the_field_cuts_a_vertebra():
    """Visible fraction = labelled voxels in a cut field / in a field holding the whole spine."""
    grid = dict(inplane_spacing_mm=(2.5, 2.5), slice_spacing_mm=(2.5, 2.5), random_orientation=False, **NO_VARIANTS)
    checked_cut = checked_complete = 0
    for seed in range(40, 52):
        cut = generate_case(seed, PhantomConfig(fov="lumbar", **grid))
        whole = generate_case(seed, PhantomConfig(fov="full", **grid))
        for record in cut.info.vertebrae:
            fraction = _voxels(cut, record.label) / _voxels(whole, record.label)
            if fraction < 0.9:
                assert not record.complete, (seed, record.name, fraction)
                checked_cut += 1
            elif fraction > 0.995 and all(r.complete for r in whole.info.vertebrae if r.label == record.label):
                assert record.complete, (seed, record.name, fraction)
                checked_complete += 1
            reported = cut.info.source["visible_fraction"][record.name]
            assert record.complete == (reported >= 0.98)
            assert reported == pytest.approx(min(fraction, 1.0), abs=0.04)
        if checked_cut >= 2 and checked_complete >= 3:
            break
    assert checked_cut >= 2 and checked_complete >= 3


def test_mr_labels_are_vertebral_bodies_only():
    kw = dict(fov="lumbar", inplane_spacing_mm=(2.0, 2.0), slice_spacing_mm=(2.0, 2.0), random_orientation=False,
              **NO_VARIANTS)
    ct, mr = generate_case(5, PhantomConfig(modality="ct", **kw)), generate_case(5, PhantomConfig(modality="mr", **kw))
    assert (ct.info.target, mr.info.target, mr.info.modality) == ("vertebra", "body", "mr")
    common = [r.label for r in mr.info.vertebrae if r.complete and
              any(c.label == r.label and c.complete for c in ct.info.vertebrae)]
    assert common
    for label in common:
        assert _voxels(mr, label) < 0.75 * _voxels(ct, label)
        mask = sitk.GetArrayViewFromImage(mr.labels) == label
        width_mm = np.ptp(np.nonzero(mask)[2]) * mr.labels.GetSpacing()[0]
        assert width_mm < 65  # a body, not the transverse processes (80-100 mm)
    mr_values = sitk.GetArrayViewFromImage(mr.image)
    assert mr_values.min() >= 0  # magnitude image, arbitrary units


@pytest.mark.parametrize("variant,present,absent", [
    ("t13_rate", {19, 28, 20, 24}, {25}),
    ("l6_rate", {19, 20, 24, 25}, {28}),
    ("four_lumbar_rate", {19, 20, 23}, {24, 25, 28}),
])
def test_transitional_variants_produce_their_label_sets(variant, present, absent):
    config = PhantomConfig(fov="full", inplane_spacing_mm=(4.0, 4.0), slice_spacing_mm=(4.0, 4.0),
                           **{**NO_VARIANTS, variant: 1.0})
    case = generate_case(8, config)
    labels = {r.label for r in case.info.vertebrae}
    assert present <= labels and not (absent & labels)
    order = [r.label for r in case.info.vertebrae]  # cranio-caudal
    if variant == "t13_rate":
        assert order.index(19) < order.index(28) < order.index(20)
    if variant == "l6_rate":
        assert order.index(24) < order.index(25)
    assert case.info.source["variant"] == {"t13_rate": "t13", "l6_rate": "l6", "four_lumbar_rate": "four_lumbar"}[variant]


def test_fractures_reduce_the_body_height_by_their_grade():
    """Same seed with and without fractures (MR: labels are the bodies). The body volume shrinks by
    the height loss: fully for crush, by half on average for wedge (anterior only) and biconcave
    (centre only); Genant grade ranges hold for the reported loss."""
    kw = dict(modality="mr", fov="full", inplane_spacing_mm=(2.5, 2.5), slice_spacing_mm=(2.5, 2.5),
              random_orientation=False, scoliosis_rate=0.0)
    seen = set()
    for seed in range(0, 8):
        broken = generate_case(seed, PhantomConfig(fracture_rate=1.0, **kw))
        intact = generate_case(seed, PhantomConfig(fracture_rate=0.0, **kw))
        fractured = [r for r in broken.info.vertebrae if r.fracture]
        assert fractured and not any(r.fracture for r in intact.info.vertebrae)
        for record in fractured:
            fx = record.fracture
            lo, hi = GENANT_LOSS[fx["grade"]]
            assert lo <= fx["height_loss"] <= hi and fx["type"] in ("wedge", "biconcave", "crush")
            share = 1.0 if fx["type"] == "crush" else 0.5
            ratio = _voxels(broken, record.label) / _voxels(intact, record.label)
            assert ratio == pytest.approx(1.0 - share * fx["height_loss"], abs=0.05), (seed, record.name, fx)
            seen.add(fx["type"])
        if seen == {"wedge", "biconcave", "crush"}:
            break
    assert seen == {"wedge", "biconcave", "crush"}


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="modality"):
        PhantomConfig(modality="pet")
    with pytest.raises(ValueError, match="fov"):
        PhantomConfig(fov="knee")
    with pytest.raises(ValueError, match="slice_spacing_mm"):
        PhantomConfig(slice_spacing_mm=(2.0, 1.0))
    with pytest.raises(ValueError, match="fracture_rate"):
        PhantomConfig(fracture_rate=1.5)
    with pytest.raises(ValueError, match="max_voxels"):
        PhantomConfig(max_voxels=10)

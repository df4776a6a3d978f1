"""Phantom building blocks: signed distances, grid blocks, partial-volume painting, smooth noise and
the vertebral body (incl. fractured heights), each against exact geometric answers."""
import numpy as np
import pytest

from vertebra_traversal.phantom.compose import Canvas
from vertebra_traversal.phantom.sdf import (MARGIN, Grid, HalfSpace, Intersection, RoundBox, Subtraction, Union,
                                            capsule, sphere)
from vertebra_traversal.phantom.spine import Fracture
from vertebra_traversal.phantom.textures import smooth_noise
from vertebra_traversal.phantom.vertebra import VertebralBody


def _grid(spacing=(1.0, 1.0, 1.0), shape=(21, 21, 21), origin=(-10.0, -10.0, -10.0)):
    return Grid(origin, spacing, shape)


def _all(grid):
    return grid.block((0, 0, 0), grid.shape)


def test_grid_block_coordinates_and_clipping():
    grid = Grid((5.0, -2.0, 100.0), (0.5, 2.0, 3.0), (4, 6, 8))
    block = _all(grid)
    assert block.shape == (4, 6, 8)
    assert block.x.ravel()[[0, -1]].tolist() == [5.0, 8.5]
    assert block.y.ravel()[[0, -1]].tolist() == [-2.0, 8.0]
    assert block.z.ravel()[[0, -1]].tolist() == [100.0, 109.0]
    lo, hi = grid.index_box(np.array([6.0, 0.0, 103.0]), np.array([7.0, 100.0, 103.0]))
    assert lo == (1, 1, 2) and hi == (2, 6, 5)  # (k, j, i); clipped to the grid in y
    unclipped = grid.block_for((np.array([6.0, 0.0, 90.0]), np.array([7.0, 1.0, 95.0])), pad=0.0, clip=False)
    assert unclipped.lo[0] < 0 and unclipped.z.ravel()[0] <= 90.0


def test_primitive_distances_are_euclidean():
    grid = _grid()
    block = _all(grid)
    x, y, z = np.broadcast_arrays(block.x, block.y, block.z)
    d = sphere([1.0, 2.0, 3.0], 4.0).sdf(block)
    np.testing.assert_allclose(d, np.sqrt((x - 1) ** 2 + (y - 2) ** 2 + (z - 3) ** 2) - 4.0, atol=1e-4)
    d = capsule([-5.0, 0.0, 0.0], [5.0, 0.0, 0.0], 2.0).sdf(block)
    along = np.clip(x, -5, 5)
    np.testing.assert_allclose(d, np.sqrt((x - along) ** 2 + y ** 2 + z ** 2) - 2.0, atol=1e-4)
    box = RoundBox(np.zeros(3), np.eye(3), (3.0, 4.0, 5.0), 0.5).sdf(block)
    assert box[10, 10, 10] == pytest.approx(-3.0)         # centre: 3 mm from the nearest face
    assert box[10, 10, 10 + 6] == pytest.approx(3.0)      # x = 6: 3 mm outside the x face
    assert box[10 + 9, 10 + 8, 10 + 7] > 0


def test_csg_union_subtraction_intersection():
    block = _all(_grid())
    a, b = sphere([-3.0, 0.0, 0.0], 4.0), sphere([3.0, 0.0, 0.0], 4.0)
    union = Union((a, b)).sdf(block)
    np.testing.assert_allclose(union, np.minimum(np.minimum(a.sdf(block), b.sdf(block)), MARGIN), atol=1e-4)
    assert np.all(Union((a, b), smooth=2.0).sdf(block) <= union + 1e-5)
    cut = Subtraction(a, b).sdf(block)
    assert cut[10, 10, 10 + 1] > 0 and cut[10, 10, 10 - 5] < 0
    half = Intersection((a, HalfSpace(np.zeros(3), np.array([0.0, 0.0, 1.0])))).sdf(block)
    assert half[10 + 2, 10, 10 - 3] > 0 and half[10 - 2, 10, 10 - 3] < 0


def test_painting_a_plane_on_thick_slices_gives_exact_partial_volume():
    """Below z = 1.3 mm on 3 mm slices centred at z = 0, 3: fractions (1.3 + 1.5) / 3 and 0."""
    grid = Grid((0.0, 0.0, -6.0), (1.0, 1.0, 3.0), (5, 6, 6))
    canvas = Canvas.empty(grid, 0.0)
    slab = Intersection((RoundBox(np.array([2.5, 2.5, -20.0]), np.eye(3), (40.0, 40.0, 40.0), 0.1),
                         HalfSpace(np.array([0.0, 0.0, 1.3]), np.array([0.0, 0.0, 1.0]))))
    canvas.paint(slab, 1.0)
    column = canvas.image[:, 3, 3]  # z = -6, -3, 0, 3, 6
    np.testing.assert_allclose(column, [1.0, 1.0, 2.8 / 3.0, 0.0, 0.0], atol=1e-5)


def test_partial_volume_preserves_the_volume_of_a_sphere_on_an_anisotropic_grid():
    grid = Grid((-15.0, -15.0, -15.0), (1.2, 1.2, 2.7), (13, 27, 27))
    canvas = Canvas.empty(grid, 0.0)
    canvas.paint(sphere([0.3, -0.4, 0.9], 9.0), 1.0)
    volume = canvas.image.sum() * 1.2 * 1.2 * 2.7
    assert volume == pytest.approx(4 / 3 * np.pi * 9.0 ** 3, rel=0.02)
    assert 0 < np.count_nonzero((canvas.image > 0.05) & (canvas.image < 0.95))  # soft edges, not a staircase


def test_bone_painting_puts_cortex_in_a_thin_shell():
    grid = Grid((-12.0, -12.0, -12.0), (0.25, 0.25, 0.25), (97, 97, 97))
    canvas = Canvas.empty(grid, 0.0)
    canvas.paint(sphere([0.0, 0.0, 0.0], 10.0), 100.0, cortex=1000.0, thickness=1.0)
    profile = canvas.image[48, 48, 48:]  # x from 0 to 12 mm
    assert profile[0] == pytest.approx(100.0)                   # marrow at the centre
    assert profile[int(9.5 / 0.25)] == pytest.approx(1000.0)     # inside the 9-10 mm shell
    assert profile[int(11.0 / 0.25)] == pytest.approx(0.0)       # outside


def test_smooth_noise_is_deterministic_unit_variance_and_correlated():
    grid = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (40, 50, 60))
    block = _all(grid)
    a = smooth_noise(block, 6.0, np.random.default_rng(3))
    b = smooth_noise(block, 6.0, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (40, 50, 60) and 0.75 < a.std() < 1.25 and abs(a.mean()) < 0.3
    neighbour = np.corrcoef(a[:, :, :-1].ravel(), a[:, :, 1:].ravel())[0, 1]
    far = np.corrcoef(a[:, :, :-20].ravel(), a[:, :, 20:].ravel())[0, 1]
    assert neighbour > 0.9 and abs(far) < 0.2


def _height(body: VertebralBody, w: float, v: float) -> float:
    """Body height (mm) along the cranial axis at in-plane position (w, v), from the distance field."""
    zs = np.arange(-20.0, 20.0, 0.02)
    grid = Grid((w, v, float(zs[0])), (1.0, 1.0, 0.02), (len(zs), 1, 1))
    inside = body.sdf(_all(grid)).ravel() < 0
    return float(inside.sum() * 0.02)


@pytest.mark.parametrize("kind", ["wedge", "biconcave", "crush"])
def test_fractured_body_loses_height_where_its_type_says(kind):
    loss = 0.3
    kw = dict(origin=np.zeros(3), rot=np.eye(3), a=22.0, b=16.0, hp=26.0, ha=26.0, concavity=0.0, waist=0.0,
              rounding=0.5)
    intact = VertebralBody(**kw)
    broken = VertebralBody(**kw, fracture=Fracture(kind, 2, loss))
    points = {"anterior": (0.0, -12.0), "centre": (0.0, 0.0), "posterior": (0.0, 12.0)}
    h0 = {k: _height(intact, *p) for k, p in points.items()}
    h1 = {k: _height(broken, *p) for k, p in points.items()}
    assert h0["centre"] == pytest.approx(26.0, abs=0.05)
    if kind == "crush":
        expected = {k: 26.0 * (1 - loss) for k in points}
    elif kind == "biconcave":  # centre loses `loss`, falling off as 1 - r^2 towards the rim
        expected = {"centre": 26.0 * (1 - loss), "anterior": 26.0 * (1 - loss * (1 - (12 / 16) ** 2)),
                    "posterior": 26.0 * (1 - loss * (1 - (12 / 16) ** 2))}
    else:  # anterior height * (1 - loss) at v = -b, posterior unchanged, linear in between
        expected = {k: 26.0 * (1 - loss * (1 - v / 16.0) / 2) for k, (_, v) in points.items()}
    for k in points:
        assert h1[k] == pytest.approx(expected[k], abs=0.1), k


@pytest.mark.parametrize("code", ["LPS", "RAS", "PIR", "ASL", "IRP", "SAL", "LIP"])
def test_storage_orientation_matches_simpleitk_dicomorient(code):
    """The generator's permute/flip equals SimpleITK's DICOMOrient of the same LPS image."""
    import SimpleITK as sitk

    from vertebra_traversal.phantom.scanner import orient

    values = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    labels = (values * 20).astype(np.uint8)
    reference = sitk.GetImageFromArray(values)
    reference.SetSpacing((1.0, 2.0, 3.0))
    reference.SetOrigin((10.0, 20.0, 30.0))
    image, lab = orient(values, labels, (10.0, 20.0, 30.0), (1.0, 2.0, 3.0), code)
    expected = sitk.DICOMOrient(reference, code)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(expected))
    np.testing.assert_allclose(image.GetOrigin(), expected.GetOrigin())
    np.testing.assert_allclose(image.GetDirection(), expected.GetDirection())
    np.testing.assert_allclose(image.GetSpacing(), expected.GetSpacing())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(lab), (sitk.GetArrayFromImage(image) * 20).astype(np.uint8))

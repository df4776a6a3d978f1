"""Preview PNG: size from the isotropic display spacing, superior up whatever the storage
orientation, overlay in the anatomy colours where the labels are, names written."""
import io

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from vertebra_traversal import anatomy
from vertebra_traversal.render import GAP, PANEL_PIXELS, TAG_COLOUR, TITLE_HEIGHT, preview_png


def _case(code="LPS"):
    """60 x 80 x 120 voxels of 1 x 1 x 2 mm: extents (voxel centres) 59 x 79 x 238 mm; L1 cube high up,
    L5 cube low down, both centred in x and y."""
    values = np.full((120, 80, 60), -1000.0, np.float32)
    labels = np.zeros(values.shape, np.uint8)
    values[90:100, 30:50, 20:40] = 300.0
    labels[90:100, 30:50, 20:40] = 20
    values[20:30, 30:50, 20:40] = 300.0
    labels[20:30, 30:50, 20:40] = 24
    image, lab = sitk.GetImageFromArray(values), sitk.GetImageFromArray(labels)
    for img in (image, lab):
        img.SetSpacing((1.0, 1.0, 2.0))
        img.SetOrigin((-30.0, 10.0, 500.0))
    if code != "LPS":
        image, lab = sitk.DICOMOrient(image, code), sitk.DICOMOrient(lab, code)
    return image, lab


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_preview_has_the_documented_size():
    image, labels = _case()
    picture = _decode(preview_png(image, labels, title="test"))
    spacing = 238.0 / PANEL_PIXELS  # the longest extent maps to PANEL_PIXELS
    panel_h = int(round(238.0 / spacing)) + 1
    sag_w, cor_w = int(round(79.0 / spacing)) + 1, int(round(59.0 / spacing)) + 1
    assert picture.shape == (panel_h + TITLE_HEIGHT + GAP, sag_w + cor_w + 3 * GAP, 3)


@pytest.mark.parametrize("code", ["LPS", "PIR", "RAI"])
def test_superior_is_up_and_overlay_uses_anatomy_colours(code):
    image, labels = _case(code)
    picture = _decode(preview_png(image, labels, names={20: "L1", 24: "L5*"}))
    spacing = 238.0 / PANEL_PIXELS
    col = GAP + int(round(39.5 / spacing))  # sagittal panel, centre of the cubes in y
    row_of = lambda z_mm: TITLE_HEIGHT + int(round((738.0 - z_mm) / spacing))  # z = 500 + 2k, top row = 738
    upper, lower = picture[row_of(500 + 2 * 95)], picture[row_of(500 + 2 * 25)]
    for pixel, label in ((upper[col], 20), (lower[col], 24)):
        expected = 0.55 * np.array([550.0 / 1500.0 * 255.0] * 3) + 0.45 * 255 * np.array(anatomy.vertebra(label).color)
        np.testing.assert_allclose(pixel, expected, atol=6)  # 300 HU grey (window -250..1250) + colour
    background = picture[row_of(500 + 2 * 60)][col]
    assert background[0] == background[1] == background[2] == 0  # air: black, no overlay


def test_names_are_written_beside_each_vertebra():
    image, labels = _case()
    plain = _decode(preview_png(image, labels, names={20: "", 24: ""}))
    named = _decode(preview_png(image, labels, names={20: "L1", 24: "L5"}))
    diff = np.any(plain != named, axis=2)
    rows = np.nonzero(diff.any(axis=1))[0]
    assert rows.size > 0
    spacing = 238.0 / PANEL_PIXELS
    row_l1 = TITLE_HEIGHT + int(round((738.0 - (500 + 2 * 94.5)) / spacing))
    assert np.abs(rows - row_l1).min() <= 8  # text at the height of L1


def test_empty_labels_still_render():
    image, labels = _case()
    picture = _decode(preview_png(image, labels * 0))
    assert picture.shape[0] > TITLE_HEIGHT and picture.max() > 0


def test_the_panel_tags_sit_above_the_panels_where_they_hide_no_name():
    image, labels = _case()
    picture = _decode(preview_png(image, labels, title="test"))
    tag = np.all(picture == TAG_COLOUR, axis=2)
    assert tag[TITLE_HEIGHT - 16:TITLE_HEIGHT].any()  # both tags written in the title bar ...
    assert not tag[TITLE_HEIGHT:].any()  # ... and none on the panels, whose corners are black air here

"""Training data: both dataset layouts, the VerSe z-crop, the cache, and clear errors for bad input."""
from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk

from test_training_fixtures import spine_arrays, to_images, write_spine_case, write_verse_case
from vertebra_traversal.imageio import InputError
from vertebra_traversal.normalization import NormalizationSpec
from vertebra_traversal.training.data import (check_disjoint, describe_case, find_cases, prepare_case,
                                               prepare_cases)

CT = NormalizationSpec("ct")


def test_project_and_verse_layouts_are_found(tmp_path):
    write_spine_case(tmp_path, "case001", [24, 23])
    write_verse_case(tmp_path, "sub-gl003", "sub-gl003_dir-ax", [24, 23])
    cases = find_cases([tmp_path], "ct")
    assert [c.case_id for c in cases] == ["case001", "sub-gl003_dir-ax"]
    verse = cases[1]
    assert verse.labels == tmp_path / "derivatives" / "sub-gl003" / "sub-gl003_dir-ax_seg-vert_msk.nii.gz"
    assert verse.labels.exists() and not verse.files.sidecar.exists()


def test_verse_case_without_sidecar_is_cropped_to_its_labels(tmp_path):
    write_verse_case(tmp_path, "sub-verse004", "sub-verse004", [24, 23])  # labels on slices 4..18 of 40
    case = find_cases([tmp_path], "ct")[0]
    prepared = prepare_case(case, tmp_path / "cache", 2.0, CT, margin_mm=2.0)  # 1 slice margin
    image, labels = prepared.load()
    _, reference = spine_arrays([24, 23])
    assert labels.shape == (17, 24, 24)
    assert np.array_equal(labels, reference[3:20])
    assert prepared.index.complete == {23: True, 24: True}   # derived sidecar: labelled = complete
    assert image.dtype == np.float16
    assert abs(float(image[labels > 0].astype(np.float32).mean()) - 0.8) < 0.02  # 800 HU / 1000


def test_project_case_keeps_its_extent_and_completeness_flags(tmp_path):
    write_spine_case(tmp_path, "case001", [24, 23, 22], complete={22: False})
    prepared = prepare_case(find_cases([tmp_path])[0], tmp_path / "cache", 2.0, CT)
    assert prepared.index.shape == (40, 24, 24)
    assert prepared.index.complete == {22: False, 23: True, 24: True}
    assert prepared.index.volumes[23] == 600 and prepared.target == "vertebra"


def test_cache_is_reused_and_renewed_when_the_source_changes(tmp_path):
    write_spine_case(tmp_path, "case001", [24])
    case = find_cases([tmp_path])[0]
    first = prepare_case(case, tmp_path / "cache", 2.0, CT)
    stamp = first.image_path.stat().st_mtime_ns
    again = prepare_case(case, tmp_path / "cache", 2.0, CT)
    assert again.image_path == first.image_path and again.image_path.stat().st_mtime_ns == stamp
    coarser = prepare_case(case, tmp_path / "cache", 4.0, CT)
    assert coarser.image_path != first.image_path and coarser.spacing_mm == 4.0
    assert all(n / 2 <= m <= n / 2 + 1 for n, m in zip((40, 24, 24), coarser.index.shape))  # half the voxels
    os.utime(case.labels, ns=(1, 1))
    assert prepare_case(case, tmp_path / "cache", 2.0, CT).image_path != first.image_path


def test_missing_folder_empty_folder_and_missing_labels_are_named(tmp_path):
    with pytest.raises(InputError, match="not found"):
        find_cases([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no cases found"):
        find_cases([tmp_path / "empty"])
    write_spine_case(tmp_path / "d", "case001", [24])
    labels = tmp_path / "d" / "derivatives" / "case001" / "case001_seg-vert_msk.nii.gz"
    labels.unlink()
    with pytest.raises(InputError, match=f"{labels}.*label map missing"):
        find_cases([tmp_path / "d"])


def test_other_modality_is_refused(tmp_path):
    write_spine_case(tmp_path, "case001", [24])
    with pytest.raises(InputError, match="a CT image, but this run trains a MR model"):
        find_cases([tmp_path], "mr")


def test_label_map_on_another_grid_is_refused_naming_the_file(tmp_path):
    write_verse_case(tmp_path, "sub-x", "sub-x", [24])
    labels_path = tmp_path / "derivatives" / "sub-x" / "sub-x_seg-vert_msk.nii.gz"
    _, labels = to_images(*spine_arrays([24]))
    labels.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(labels, str(labels_path))
    with pytest.raises(InputError, match=f"{labels_path}.*differs from its image"):
        prepare_case(find_cases([tmp_path])[0], tmp_path / "cache", 2.0, CT)


def test_label_map_without_vertebrae_is_refused(tmp_path):
    write_verse_case(tmp_path, "sub-y", "sub-y", [])
    with pytest.raises(InputError, match="holds no vertebra"):
        prepare_case(find_cases([tmp_path])[0], tmp_path / "cache", 2.0, CT)
    assert not list((tmp_path / "cache").glob("*.npy"))


def test_held_out_cases_must_not_repeat_a_training_case_or_a_copy_of_one(tmp_path):
    def described(root):
        return [describe_case(c) for c in find_cases([root])]

    write_spine_case(tmp_path / "train", "case001", [24, 23])
    write_spine_case(tmp_path / "train", "case002", [23, 22], seed=1)
    write_spine_case(tmp_path / "held", "case009", [24, 23], seed=2)
    train, held = described(tmp_path / "train"), described(tmp_path / "held")
    check_disjoint(train, held)  # other scans: accepted
    check_disjoint(train, [])
    with pytest.raises(InputError, match=r"case002_ct\.nii\.gz: this held-out case .* training case .*case002_ct"):
        check_disjoint(train, described(tmp_path / "train")[1:])
    copy = tmp_path / "copy"
    write_spine_case(copy, "renamed", [23, 22], seed=1)  # the same scan under another id
    with pytest.raises(InputError, match=r"renamed_ct\.nii\.gz: .* is also a training case \(.*case002_ct"):
        check_disjoint(train, described(copy))


def test_worker_processes_prepare_the_same_cache_in_order_and_name_a_bad_case(tmp_path):
    for number, ids in enumerate(([24, 23], [23, 22], [22, 21])):
        write_spine_case(tmp_path / "data", f"case00{number}", ids, seed=number)
    cases = find_cases([tmp_path / "data"])
    seen = []
    parallel = prepare_cases(cases, tmp_path / "two", 2.0, CT, progress=lambda *a: seen.append(a), workers=2)
    serial = prepare_cases(cases, tmp_path / "one", 2.0, CT)
    assert seen == [(1, 3, "case000"), (2, 3, "case001"), (3, 3, "case002")]
    for a, b in zip(parallel, serial):
        assert a.case_id == b.case_id and a.index == b.index
        assert all(np.array_equal(x, y) for x, y in zip(a.load(), b.load()))
    labels_path = cases[1].labels
    _, labels = to_images(*spine_arrays([23, 22]))
    labels.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(labels, str(labels_path))
    with pytest.raises(InputError, match=f"{labels_path}.*differs from its image"):
        prepare_cases(find_cases([tmp_path / "data"]), tmp_path / "bad", 2.0, CT, workers=2)

"""``vertebra-traversal phantom``: writes cases in the dataset layout, case i of seed S equals case 0
of seed S + i, refuses to overwrite (exit 2), validates options, prints statistics."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from vertebra_traversal import dataset
from vertebra_traversal.cli.main import main
from vertebra_traversal.phantom import PhantomConfig, generate_case

FAST = ["--inplane-spacing", "3", "3", "--slice-spacing", "3", "3", "--fov", "lumbar"]


def test_writes_cases_in_the_dataset_layout(tmp_path, capsys):
    assert main(["phantom", "--out", str(tmp_path), "--count", "2", "--seed", "3", *FAST, "--stats"]) == 0
    cases = dataset.list_cases(tmp_path)
    assert [c.case_id for c in cases] == ["phantom00003", "phantom00004"]
    for files in cases:
        assert files.modality == "ct"
        for path in (files.image, files.labels, files.centroids, files.sidecar, files.preview):
            assert path.exists(), path
        info = dataset.read_case_info(files)
        assert info.source["generator"] == "phantom" and info.target == "vertebra"
        labels = sitk.ReadImage(str(files.labels))
        assert sorted(r.label for r in info.vertebrae) == sorted(set(np.unique(sitk.GetArrayViewFromImage(labels))) - {0})
        assert json.loads(files.centroids.read_text())[0]["direction"]
        assert Image.open(files.preview).size[0] > 100
    out = capsys.readouterr().out
    assert "phantom00003 (CT)" in out and "median" in out and "L3" in out
    # case 1 of seed 3 is case 0 of seed 4
    again = generate_case(4, PhantomConfig(fov="lumbar", inplane_spacing_mm=(3.0, 3.0), slice_spacing_mm=(3.0, 3.0)))
    written = sitk.ReadImage(str(cases[1].image))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(again.image))


def test_refuses_an_existing_case(tmp_path, capsys):
    assert main(["phantom", "--out", str(tmp_path), "--seed", "7", *FAST]) == 0
    files = dataset.list_cases(tmp_path)[0]
    before = files.image.read_bytes()
    assert main(["phantom", "--out", str(tmp_path), "--count", "2", "--seed", "6", *FAST]) == 2
    assert "already exists" in capsys.readouterr().err
    assert files.image.read_bytes() == before
    assert [c.case_id for c in dataset.list_cases(tmp_path)] == ["phantom00007"]  # nothing half-written


def test_bad_options_exit_2_naming_the_option(tmp_path, capsys):
    assert main(["phantom", "--out", str(tmp_path), "--fracture-rate", "1.5"]) == 2
    assert "--fracture-rate" in capsys.readouterr().err
    assert main(["phantom", "--out", str(tmp_path), "--slice-spacing", "3", "1"]) == 2
    assert "--slice-spacing" in capsys.readouterr().err
    assert main(["phantom", "--out", str(tmp_path), "--count", "0"]) == 2
    assert main(["phantom", "--out", str(tmp_path), "--lumbar-rib-rate", "-0.1"]) == 2
    assert "--lumbar-rib-rate: lumbar_rib_rate must be a probability" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse's own exit for an option it cannot parse
        main(["phantom", "--out", str(tmp_path), "--max-voxels", "2500.5"])
    assert stop.value.code == 2
    assert "--max-voxels: expected a whole number such as 2e6, got '2500.5'" in capsys.readouterr().err
    assert not (tmp_path / "rawdata").exists()


def test_rib_anomaly_rates_reach_the_generator_and_the_sidecar(tmp_path):
    assert main(["phantom", "--out", str(tmp_path), "--seed", "7", *FAST, "--lumbar-rib-rate", "1",
                 "--short-rib-rate", "1", "--cervical-rib-rate", "0"]) == 0
    info = dataset.read_case_info(dataset.list_cases(tmp_path)[0])
    assert list(info.source["rib_variants"]) == ["lumbar", "short_last"]
    assert info.source["config"]["lumbar_rib_rate"] == 1.0 and info.source["config"]["cervical_rib_rate"] == 0.0


def test_max_voxels_is_written_as_the_help_writes_its_default(tmp_path):
    assert main(["phantom", "--out", str(tmp_path), "--seed", "7", *FAST, "--max-voxels", "1e5"]) == 0
    image = sitk.ReadImage(str(dataset.list_cases(tmp_path)[0].image))
    uncapped = generate_case(7, PhantomConfig(fov="lumbar", inplane_spacing_mm=(3.0, 3.0), slice_spacing_mm=(3.0, 3.0)))
    assert np.prod(uncapped.image.GetSize()) > 2e5
    assert 0.9e5 < np.prod(image.GetSize()) < 1.1e5  # coarsened to the cap (rounded up to whole voxels)


def test_mr_cases(tmp_path):
    assert main(["phantom", "--out", str(tmp_path), "--modality", "mr", "--seed", "2", *FAST]) == 0
    files = dataset.list_cases(tmp_path)[0]
    assert files.modality == "mr" and files.image.name == "phantom00002_mr.nii.gz"
    assert dataset.read_case_info(files).target == "body"

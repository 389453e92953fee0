"""`napari-unet info` and `convert`: figures, files and exit codes, run in-process."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_unet.cli import main
from tests.conftest import AFFINES, write_nifti


def test_info_json_reports_the_geometry(tmp_path, capsys, rng):
    path = write_nifti(tmp_path / "s.nii.gz", rng.normal(size=(5, 6, 7)), AFFINES["LPS"])
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [5, 6, 7]
    assert info["spacing"] == pytest.approx([0.7, 0.7, 3.0])
    assert info["orientation"] == "LPS"
    assert info["frame"] == "RAS"
    np.testing.assert_allclose(info["affine"], AFFINES["LPS"])
    assert info["modality"] in ("CT", "MR", "other")


def test_info_text_is_readable(tmp_path, capsys, rng):
    path = write_nifti(tmp_path / "s.nii.gz", rng.normal(size=(5, 6, 7)), AFFINES["RAS"])
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "orientation: RAS" in out and "0.9 x 0.9 x 2.5 mm" in out


def test_convert_keeps_geometry_and_refuses_to_overwrite(tmp_path, capsys, rng):
    src = write_nifti(tmp_path / "in.nii", rng.normal(size=(4, 5, 6)), AFFINES["LIA_oblique"])
    out = tmp_path / "out.nii.gz"
    assert main(["convert", str(src), str(out)]) == 0
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(src).affine)
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["convert", str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "out.nii.gz: already exists" in err and len(err.splitlines()) == 1
    assert out.read_bytes() == before
    assert main(["convert", str(src), str(out), "--overwrite"]) == 0


def _fails_with_one_line(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_truncated_random_and_4d_files_exit_2_naming_the_file(tmp_path, capsys, rng):
    full = write_nifti(tmp_path / "full.nii.gz", rng.normal(size=(20, 20, 20)), np.eye(4))
    (tmp_path / "trunc.nii.gz").write_bytes(full.read_bytes()[:3000])
    (tmp_path / "random.nii").write_bytes(rng.bytes(1000))
    write_nifti(tmp_path / "four.nii.gz", rng.normal(size=(3, 3, 3, 2)), np.eye(4))
    _fails_with_one_line(capsys, ["info", str(tmp_path / "trunc.nii.gz")], "trunc.nii.gz")
    _fails_with_one_line(capsys, ["info", str(tmp_path / "random.nii")], "random.nii", "not a")
    _fails_with_one_line(capsys, ["info", str(tmp_path / "four.nii.gz")], "four.nii.gz", "4D")
    _fails_with_one_line(capsys, ["info", str(tmp_path / "nope.nii")], "nope.nii")


def test_unknown_file_type_and_usage_errors_exit_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    _fails_with_one_line(capsys, ["info", str(tmp_path / "notes.txt")], "notes.txt")
    _fails_with_one_line(capsys, ["frobnicate"], "invalid choice")
    _fails_with_one_line(capsys, ["convert", str(tmp_path / "notes.txt")], "required")


# --- DICOM inputs --------------------------------------------------------------------


def test_dicom_series_converts_to_nifti_with_its_affine(tmp_path, capsys):
    from tests.io.dicom_factory import ramp_kji, write_series

    expected = write_series(tmp_path / "ct", ramp_kji((6, 10, 12)), intercept=-1024.0)
    out = tmp_path / "ct.nii.gz"
    assert main(["convert", str(tmp_path / "ct"), str(out)]) == 0
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, expected["affine_ras"], atol=1e-4)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), expected["array"])  # in HU
    assert np.asanyarray(img.dataobj).min() < -900


def test_empty_folder_two_series_and_missing_slice_exit_2(tmp_path, capsys):
    from tests.io.dicom_factory import ramp_kji, write_series

    (tmp_path / "empty").mkdir()
    _fails_with_one_line(capsys, ["info", str(tmp_path / "empty")], "empty", "no DICOM")

    two = tmp_path / "two"
    a = write_series(two / "a", ramp_kji((4, 6, 6)), description="AX T1", series_number=3)
    write_series(two / "b", ramp_kji((5, 6, 6)), description="SAG T2", series_number=4)
    err = _fails_with_one_line(capsys, ["info", str(two)], "two", "AX T1", "SAG T2", "--series")
    assert "series" in err
    assert main(["info", str(two), "--series", a["series_uid"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [6, 6, 4]

    write_series(tmp_path / "gap", ramp_kji((8, 6, 6)), drop_slices=[4])
    _fails_with_one_line(
        capsys, ["convert", str(tmp_path / "gap"), str(tmp_path / "g.nii")], "gap", "missing"
    )
    assert not (tmp_path / "g.nii").exists()


# --- clinical formats (issue 13) ----------------------------------------------------------


def _main(argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture
def study(tmp_path):
    """study/ct (a DICOM series) and study/labels.nii.gz on its grid (written by nibabel)."""
    from napari_unet.io.dicom import load_dicom
    from tests.io.dicom_series import label_map, write_source_series

    write_source_series(tmp_path / "study" / "ct", "oblique", shape_kji=(5, 16, 18))
    scan = load_dicom(tmp_path / "study" / "ct")
    labels = label_map(scan.shape)
    nib.save(nib.Nifti1Image(labels, scan.affine), tmp_path / "study" / "labels.nii.gz")
    return tmp_path / "study", labels


def test_convert_labels_through_every_clinical_format_and_back(study, capsys):
    pytest.importorskip("highdicom")
    root, labels = study
    nifti, ct = root / "labels.nii.gz", root / "ct"
    names = ["--labels", "liver,kidney,tumour"]
    assert _main(["convert", nifti, root / "seg.dcm", "--format", "dicom-seg",
                 "--reference", ct, *names]) == 0  # fmt: skip
    assert _main(["convert", nifti, root / "lm.dcm", "--format", "dicom-seg", "--seg-type",
                 "labelmap", "--reference", ct, *names]) == 0  # fmt: skip
    assert _main(["convert", root / "seg.dcm", root / "rs.dcm", "--format", "rtstruct"]) == 0
    assert _main(["convert", root / "rs.dcm", root / "back.seg.nrrd"]) == 0
    assert _main(["convert", root / "back.seg.nrrd", root / "back.nrrd"]) == 0
    assert _main(["convert", root / "back.nrrd", root / "back.nii.gz"]) == 0
    capsys.readouterr()
    for name in ("seg.dcm", "lm.dcm", "rs.dcm", "back.seg.nrrd"):
        assert _main(["info", root / name, "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert [c["name"] for c in info["labels"]] == ["liver", "kidney", "tumour"], name
    back = nib.load(root / "back.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), labels)
    np.testing.assert_allclose(back.affine, nib.load(root / "labels.nii.gz").affine, atol=1e-5)


def test_info_on_a_seg_names_its_series_and_classes(study, capsys):
    pytest.importorskip("highdicom")
    root, _ = study
    assert _main(["convert", root / "labels.nii.gz", root / "seg.dcm", "--format", "dicom-seg",
                 "--reference", root / "ct"]) == 0  # fmt: skip
    capsys.readouterr()
    assert _main(["info", root / "seg.dcm"]) == 0
    out = capsys.readouterr().out
    assert f"DICOM SEG over {root / 'ct'}" in out and "1 label 1, 2 label 2" in out


def test_nrrd_image_converts_to_nifti_with_its_affine(tmp_path, rng):
    src = write_nifti(tmp_path / "in.nii.gz", rng.normal(size=(4, 5, 6)), AFFINES["PSR_oblique"])
    assert _main(["convert", src, tmp_path / "mid.nrrd"]) == 0
    assert _main(["convert", tmp_path / "mid.nrrd", tmp_path / "out.nii.gz"]) == 0
    np.testing.assert_allclose(
        nib.load(tmp_path / "out.nii.gz").affine, nib.load(src).affine, atol=1e-6
    )

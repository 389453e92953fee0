"""NIfTI → Volume → NIfTI keeps geometry, codes and values; bad files give clear errors."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from napari_unet.errors import VolumeReadError
from napari_unet.io.nifti import load_nifti, save_nifti
from tests.conftest import write_nifti


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64])
def test_round_trip_keeps_shape_dtype_affine_and_values(tmp_path, affine, rng, dtype):
    array = (rng.normal(100, 50, (6, 7, 5))).astype(dtype)
    src = write_nifti(tmp_path / "in.nii.gz", array, affine, qform_code=1, sform_code=2)
    volume = load_nifti(src)
    save_nifti(volume, tmp_path / "out.nii.gz")
    out = nib.load(tmp_path / "out.nii.gz")
    assert out.shape == array.shape
    assert out.get_data_dtype() == np.dtype(dtype)
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), array)
    np.testing.assert_array_equal(out.affine, nib.load(src).affine)
    assert int(out.header["qform_code"]) == 1
    assert int(out.header["sform_code"]) == 2
    np.testing.assert_array_equal(out.header.get_qform(), nib.load(src).header.get_qform())


def test_scaled_integers_are_read_in_physical_units_and_kept(tmp_path, rng):
    raw = rng.integers(-1000, 3000, (5, 6, 4)).astype(np.int16)
    src = write_nifti(tmp_path / "ct.nii", raw, np.eye(4), slope=0.5, inter=-1024)
    volume = load_nifti(src)
    np.testing.assert_array_equal(volume.array, raw * np.float32(0.5) - 1024)
    assert volume.array.dtype == np.float32
    save_nifti(volume, tmp_path / "again.nii")
    np.testing.assert_array_equal(load_nifti(tmp_path / "again.nii").array, volume.array)


def test_labels_exported_over_any_input_reproduce_its_affine(tmp_path, affine, rng):
    src = write_nifti(tmp_path / "img.nii.gz", rng.normal(size=(6, 7, 5)), affine)
    image = load_nifti(src)
    labels = image.with_array((image.array > 0).astype(np.uint8))
    save_nifti(labels, tmp_path / "labels.nii.gz")
    out = nib.load(tmp_path / "labels.nii.gz")
    np.testing.assert_array_equal(out.affine, nib.load(src).affine)
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), labels.array)


def test_sform_only_and_qform_only_files_follow_nibabel(tmp_path):
    q_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    s_aff = np.diag([-1.0, 1.0, 3.0, 1.0])
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), None)
    img.set_qform(q_aff, code=1)
    img.set_sform(s_aff, code=0)
    nib.save(img, tmp_path / "q.nii")
    np.testing.assert_array_equal(load_nifti(tmp_path / "q.nii").affine, q_aff)
    img.set_sform(s_aff, code=2)
    nib.save(img, tmp_path / "s.nii")
    volume = load_nifti(tmp_path / "s.nii")
    np.testing.assert_array_equal(volume.affine, s_aff)
    save_nifti(volume, tmp_path / "s_out.nii")
    out = nib.load(tmp_path / "s_out.nii")
    np.testing.assert_array_equal(out.header.get_qform(), q_aff)  # both forms kept
    np.testing.assert_array_equal(out.header.get_sform(), s_aff)


def test_truncated_gzip_names_the_file(tmp_path, rng):
    src = write_nifti(tmp_path / "full.nii.gz", rng.normal(size=(30, 30, 30)), np.eye(4))
    data = src.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeReadError, match=r"cut\.nii\.gz.*(truncated|corrupt)"):
        load_nifti(tmp_path / "cut.nii.gz")


def test_random_bytes_are_refused(tmp_path, rng):
    (tmp_path / "noise.nii").write_bytes(rng.bytes(2000))
    with pytest.raises(VolumeReadError, match=r"noise\.nii: not a"):
        load_nifti(tmp_path / "noise.nii")
    (tmp_path / "noise.nii.gz").write_bytes(gzip.compress(rng.bytes(2000)))
    with pytest.raises(VolumeReadError, match=r"noise\.nii\.gz"):
        load_nifti(tmp_path / "noise.nii.gz")


def test_4d_is_refused_with_its_volume_count_and_singleton_4d_is_accepted(tmp_path, rng):
    write_nifti(tmp_path / "fmri.nii.gz", rng.normal(size=(4, 4, 3, 5)), np.eye(4))
    with pytest.raises(VolumeReadError, match=r"fmri\.nii\.gz: 4D image with 5 volumes"):
        load_nifti(tmp_path / "fmri.nii.gz")
    write_nifti(tmp_path / "one.nii.gz", rng.normal(size=(4, 4, 3, 1)), np.eye(4))
    assert load_nifti(tmp_path / "one.nii.gz").shape == (4, 4, 3)


def test_writer_never_overwrites_unless_asked(tmp_path, rng):
    volume = load_nifti(write_nifti(tmp_path / "a.nii", rng.normal(size=(3, 3, 3)), np.eye(4)))
    target = tmp_path / "keep.nii"
    target.write_bytes(b"precious")
    with pytest.raises(VolumeReadError, match="already exists"):
        save_nifti(volume, target, overwrite=False)
    assert target.read_bytes() == b"precious"


def test_failed_write_leaves_the_previous_file_intact(tmp_path, rng, monkeypatch):
    volume = load_nifti(write_nifti(tmp_path / "a.nii", rng.normal(size=(3, 3, 3)), np.eye(4)))
    target = tmp_path / "labels.nii.gz"
    target.write_bytes(b"previous version")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_nifti(volume, target)
    assert target.read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii", "labels.nii.gz"]


def test_written_files_get_ordinary_permissions(tmp_path, rng):
    volume = load_nifti(write_nifti(tmp_path / "a.nii", rng.normal(size=(3, 3, 3)), np.eye(4)))
    old = os.umask(0o022)
    try:
        save_nifti(volume, tmp_path / "new.nii.gz")
    finally:
        os.umask(old)
    assert (tmp_path / "new.nii.gz").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    shared = tmp_path / "shared.nii.gz"
    shared.write_bytes(b"old")
    shared.chmod(0o664)
    save_nifti(volume, shared)
    assert shared.stat().st_mode & 0o777 == 0o664

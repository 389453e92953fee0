"""NIfTI → Volume → NIfTI keeps geometry, codes and values; bad files give clear errors."""

from __future__ import annotations

import gzip
import json
import os
import struct

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


# --- values exactly as stored (issue 11) ------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_voxels_are_kept_exactly(tmp_path, rng, suffix, dtype):
    array = rng.normal(-800, 300, (6, 5, 4)).astype(dtype)
    array[0, 0, 0], array[1, 2, 3], array[5, 4, 3] = np.nan, np.inf, -np.inf
    volume = load_nifti(write_nifti(tmp_path / f"f{suffix}", array, np.eye(4)))
    assert volume.array.dtype == dtype
    np.testing.assert_array_equal(volume.array, array)  # NaN where NaN was, ±Inf kept
    assert volume.modality == "CT"  # the finite values decide, not NaN or -Inf


def test_info_json_of_an_image_with_nan_still_reports_its_geometry(tmp_path, capsys):
    from napari_unet.cli import main

    array = np.zeros((4, 4, 3), np.float32)
    array[0, 0, 0] = np.nan
    path = write_nifti(tmp_path / "nan.nii.gz", array, np.diag([2.0, 2.0, 3.0, 1.0]))
    capsys.readouterr()
    assert main(["info", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # Python's json reads a bare NaN
    assert summary["shape"] == [4, 4, 3]
    assert summary["spacing"] == [2.0, 2.0, 3.0]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.float64]
)
def test_voxels_and_affine_equal_nibabels(tmp_path, rng, affine, suffix, dtype):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is None:
        array = rng.normal(size=(7, 6, 5)).astype(dtype)
    else:
        array = rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), (7, 6, 5), dtype=dtype)
    img = nib.Nifti1Image(array, affine, dtype=array.dtype)
    img.set_sform(affine, code=2)
    path = tmp_path / f"v{suffix}"
    nib.save(img, path)
    volume = load_nifti(path)
    expected = nib.load(path)
    np.testing.assert_array_equal(volume.array, np.asanyarray(expected.dataobj))
    assert volume.array.dtype == expected.get_data_dtype()
    np.testing.assert_array_equal(volume.affine, expected.affine)


def test_big_endian_files_load_in_native_byte_order(tmp_path, rng):
    array = rng.integers(-1000, 3000, (5, 4, 3)).astype(np.int16)
    img = nib.Nifti1Image(array, np.diag([0.5, 0.5, 2.0, 1.0]))
    img.header.set_slope_inter(1.0, 0.0)
    swapped = nib.Nifti1Image(array, img.affine, header=img.header.as_byteswapped(">"))
    nib.save(swapped, tmp_path / "be.nii.gz")
    assert nib.load(tmp_path / "be.nii.gz").header.endianness == ">"
    volume = load_nifti(tmp_path / "be.nii.gz")
    assert volume.array.dtype == np.int16 and volume.array.dtype.isnative
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_array_equal(volume.affine, img.affine)


def test_compression_is_recognised_by_content_and_multi_member_gzip_is_read(tmp_path, rng):
    array = rng.normal(size=(5, 4, 3)).astype(np.float32)
    raw = write_nifti(tmp_path / "plain.nii", array, np.eye(4)).read_bytes()
    (tmp_path / "plain_named.nii.gz").write_bytes(raw)
    (tmp_path / "gz_named.nii").write_bytes(gzip.compress(raw))
    half = len(raw) // 2
    (tmp_path / "members.nii.gz").write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    for name in ("plain_named.nii.gz", "gz_named.nii", "members.nii.gz"):
        np.testing.assert_array_equal(load_nifti(tmp_path / name).array, array)


def test_trailing_singleton_axes_and_nibabel_header_fixes_are_accepted(tmp_path, rng):
    array = rng.normal(size=(4, 3, 2, 1, 1)).astype(np.float32)
    path = write_nifti(tmp_path / "five.nii", array, np.diag([-2.0, 2.0, 2.0, 1.0]))
    assert load_nifti(path).shape == (4, 3, 2)
    data = bytearray(path.read_bytes())
    struct.pack_into("<2f", data, 76, 0.0, -2.0)  # qfac 0 (common) and a signed voxel size
    struct.pack_into("<h", data, 254, 0)  # no sform: the qform is used
    (tmp_path / "fixed.nii").write_bytes(data)
    volume = load_nifti(tmp_path / "fixed.nii")
    np.testing.assert_array_equal(volume.affine, nib.load(tmp_path / "fixed.nii").affine)


def test_header_extensions_are_kept(tmp_path, rng):
    img = nib.Nifti1Image(rng.normal(size=(4, 3, 2)).astype(np.float32), np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"kept for later"))
    nib.save(img, tmp_path / "ext.nii.gz")
    volume = load_nifti(tmp_path / "ext.nii.gz")
    np.testing.assert_array_equal(volume.array, img.get_fdata(dtype=np.float32))
    save_nifti(volume, tmp_path / "again.nii.gz")
    (ext,) = nib.load(tmp_path / "again.nii.gz").header.extensions
    assert ext.get_content() == b"kept for later"


def test_saving_leaves_no_temporary_file(tmp_path, rng):
    volume = load_nifti(write_nifti(tmp_path / "a.nii", rng.normal(size=(3, 3, 3)), np.eye(4)))
    save_nifti(volume, tmp_path / "b.nii.gz")
    save_nifti(volume, tmp_path / "b.nii.gz")  # replaced in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii", "b.nii.gz"]

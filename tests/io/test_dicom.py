"""DICOM reader: geometry, values, series selection, error messages, long-job protocol."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from napari_unet import jobs
from napari_unet.errors import MultipleSeriesError, VolumeReadError
from napari_unet.io.dicom import (
    SeriesInfo,
    is_dicom_path,
    list_series,
    load_dicom,
    load_dicom_steps,
)
from tests.io.dicom_factory import PATIENT_ID, PATIENT_NAME, oblique_dirs, ramp_kji, write_series

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _testdata(name: str) -> str:
    path = pydicom.data.get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not shipped with this pydicom")
    return str(path)


def _sitk_volume(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's reading of files: (values (i, j, k), RAS affine)."""
    sitk = pytest.importorskip("SimpleITK")
    if len(files) == 1:
        image = sitk.ReadImage(files[0])
    else:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        image = reader.Execute()
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), LPS_TO_RAS @ affine


# --- geometry and values ------------------------------------------------------------------


def test_axial_round_trip_with_shuffled_names(tmp_path: Path) -> None:
    stored = ramp_kji((8, 12, 16))
    exp = write_series(tmp_path, stored, spacing=(0.8, 0.9, 2.5), origin=(-10, 20, 30))
    vol = load_dicom(tmp_path)
    assert vol.shape == (16, 12, 8)  # (columns, rows, slices)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, exp["array"])
    # Axial LPS → RAS: x and y flip sign; translation is slice 0's IPP with x, y negated.
    np.testing.assert_allclose(
        vol.affine,
        [[-0.8, 0, 0, 10], [0, -0.9, 0, -20], [0, 0, 2.5, 30], [0, 0, 0, 1]],
        atol=1e-6,
    )
    assert vol.spacing == pytest.approx((0.8, 0.9, 2.5))
    assert vol.orientation == "LPS"
    assert vol.modality == "CT"
    assert vol.source == str(tmp_path)


@pytest.mark.parametrize("instance_order", ["ascending", "descending"])
@pytest.mark.parametrize("step", [2.0, -3.0])
@pytest.mark.parametrize("oblique", [False, True])
def test_geometry_oblique_and_reversed(
    tmp_path: Path, oblique: bool, step: float, instance_order: str
) -> None:
    row, col = oblique_dirs() if oblique else ((0, 1, 0), (0, 0, -1))  # oblique or sagittal
    stored = ramp_kji((6, 10, 14), seed=3)
    exp = write_series(
        tmp_path,
        stored,
        spacing=(0.7, 1.1, step),
        origin=(5.5, -12.25, 40),
        row_dir=row,
        col_dir=col,
        instance_order=instance_order,
    )
    vol = load_dicom(tmp_path)
    np.testing.assert_allclose(vol.affine, exp["affine_ras"], atol=1e-5)
    np.testing.assert_array_equal(vol.array, exp["array"])
    # Every voxel centre of slice k lands on the IPP that the file of slice k carries.
    for k, path in enumerate(exp["files"]):
        ipp = np.asarray(pydicom.dcmread(path).ImagePositionPatient, float)
        kk = k if step > 0 else len(exp["files"]) - 1 - k
        world = LPS_TO_RAS @ vol.affine @ [0, 0, kk, 1]
        np.testing.assert_allclose(world[:3], ipp, atol=1e-5)
    assert vol.spacing[2] == pytest.approx(abs(step))
    assert np.linalg.det(vol.affine[:3, :3]) > 0  # row × column = normal: right-handed


@pytest.mark.parametrize(
    ("slope", "intercept", "dtype", "stored_dtype"),
    [
        (1, -1024, np.int16, np.int16),
        (2, -1024, np.int16, np.int16),
        (1, -1024, np.int32, np.uint16),  # stored up to 65535 − 1024 does not fit int16
        (0.5, -10.25, np.float32, np.int16),
        (1, 0, np.uint16, np.uint16),  # no rescale: stored dtype kept
    ],
)
def test_rescale_slope_intercept(
    tmp_path: Path, slope: float, intercept: float, dtype: type, stored_dtype: type
) -> None:
    stored = ramp_kji((4, 6, 5)) + 3000
    if stored_dtype == np.uint16:
        stored = stored.astype(np.uint16)
        stored[0, 0, 0] = 65000
    exp = write_series(tmp_path, stored.astype(stored_dtype), slope=slope, intercept=intercept)
    vol = load_dicom(tmp_path)
    assert vol.array.dtype == dtype
    np.testing.assert_array_equal(vol.array, exp["array"])
    assert vol.metadata["rescale_slope"] == slope
    assert vol.metadata["rescale_intercept"] == intercept


@pytest.mark.parametrize("case", ["oblique_rescaled", "sagittal_reversed"])
def test_agrees_with_simpleitk(tmp_path: Path, case: str) -> None:
    if case == "oblique_rescaled":
        row, col = oblique_dirs((10, 25, -40))
        kwargs = {"spacing": (0.6, 0.75, 1.5), "slope": 1, "intercept": -1024}
    else:
        row, col = (0, 1, 0), (0, 0, -1)
        kwargs = {"spacing": (1.2, 0.8, -2.0), "instance_order": "descending"}
    write_series(tmp_path, ramp_kji((7, 9, 11), seed=5), row_dir=row, col_dir=col, **kwargs)
    vol = load_dicom(tmp_path)
    sitk = pytest.importorskip("SimpleITK")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path)))
    values, affine = _sitk_volume(files)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(vol.array, values)


def test_metadata_has_geometry_and_no_identity(tmp_path: Path) -> None:
    exp = write_series(tmp_path, ramp_kji((5, 4, 3)), window=(50, 350), description="T1 AX")
    meta = load_dicom(tmp_path).metadata
    assert meta["series_uid"] == exp["series_uid"]
    assert meta["series_description"] == "T1 AX"
    assert (meta["window_center"], meta["window_width"]) == (50.0, 350.0)
    np.testing.assert_allclose(meta["slice_positions_lps"], exp["positions"], atol=1e-6)
    assert meta["files"] == [str(p) for p in exp["files"]]
    assert meta["gantry_tilt_deg"] == 0.0
    assert meta["slice_spacing_assumed"] is False
    text = repr(meta)
    assert PATIENT_NAME not in text and PATIENT_ID not in text and "Doe" not in text


# --- multi-frame and tilt -----------------------------------------------------------------


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_enhanced_multiframe(tmp_path: Path, modality: str) -> None:
    row, col = oblique_dirs((0, 30, 10))
    exp = write_series(
        tmp_path,
        ramp_kji((9, 6, 7), seed=1),
        multiframe=True,
        modality=modality,
        row_dir=row,
        col_dir=col,
        spacing=(0.5, 0.6, -1.25),
        slope=0.5,
        intercept=-100,
    )
    assert len(list(tmp_path.iterdir())) == 1
    (info,) = list_series(tmp_path)
    assert (info.number_of_files, info.number_of_slices) == (1, 9)
    vol = load_dicom(tmp_path)
    assert vol.modality == modality
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.affine, exp["affine_ras"], atol=1e-5)
    np.testing.assert_array_equal(vol.array, exp["array"].astype(np.float32))


def test_gantry_tilt_gives_sheared_affine(tmp_path: Path) -> None:
    exp = write_series(tmp_path, ramp_kji((6, 8, 10)), spacing=(0.7, 0.7, 3.0), gantry_tilt_deg=15)
    vol = load_dicom(tmp_path)
    np.testing.assert_allclose(vol.affine, exp["affine_ras"], atol=1e-5)
    # The third column is the actual step: 3 mm along z plus 3·tan(15°) mm along y (P → -A).
    np.testing.assert_allclose(vol.affine[:3, 2], [0, -3 * np.tan(np.radians(15)), 3], atol=1e-6)
    assert vol.metadata["gantry_tilt_deg"] == pytest.approx(15, abs=1e-4)
    np.testing.assert_array_equal(vol.array, exp["array"])
    for k, path in enumerate(exp["files"]):
        ipp = np.asarray(pydicom.dcmread(path).ImagePositionPatient, float)
        np.testing.assert_allclose((LPS_TO_RAS @ vol.affine @ [0, 0, k, 1])[:3], ipp, atol=1e-5)


# --- irregular series ---------------------------------------------------------------------


def test_missing_slices_are_reported(tmp_path: Path) -> None:
    exp = write_series(tmp_path, ramp_kji((10, 4, 5)), spacing=(1, 1, 2.0), origin=(0, 0, 0),
                       drop_slices=(4, 5))  # fmt: skip
    with pytest.raises(VolumeReadError) as err:
        load_dicom(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg
    assert "2 slice(s) missing" in msg
    assert "between slice 3 at 6.000 mm and slice 4 at 12.000 mm" in msg
    assert "(expected at 8.000, 10.000 mm)" in msg
    assert "usual step is 2 mm" in msg
    names = {Path(p).name for k, p in enumerate(exp["files"]) if k in (3, 6)}  # either side
    assert all(name in msg for name in names)


def test_non_uniform_spacing_is_reported(tmp_path: Path) -> None:
    exp = write_series(tmp_path, ramp_kji((6, 4, 5)), spacing=(1, 1, 2.0), origin=(0, 0, 0))
    moved = exp["files"][3]
    ds = pydicom.dcmread(moved)
    ds.ImagePositionPatient = [0, 0, 6.7]  # 6 → 6.7: steps 2.7 and 1.3 around slice 3
    ds.save_as(moved)
    with pytest.raises(VolumeReadError, match="non-uniform slice spacing") as err:
        load_dicom(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg
    assert "slices 2→3: 2.7 mm (4.000 → 6.700)" in msg
    assert "slices 3→4: 1.3 mm" in msg
    assert Path(moved).name in msg


def test_duplicate_positions_are_reported(tmp_path: Path) -> None:
    exp = write_series(tmp_path, ramp_kji((4, 4, 5)), spacing=(1, 1, 2.0), origin=(0, 0, 0))
    ds = pydicom.dcmread(exp["files"][2])
    ds.ImagePositionPatient = [0, 0, 2]
    ds.save_as(exp["files"][2])
    with pytest.raises(VolumeReadError, match="share a position"):
        load_dicom(tmp_path)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda ds: delattr(ds, "ImageOrientationPatient"), "ImageOrientationPatient is missing"),
        (lambda ds: delattr(ds, "ImagePositionPatient"), "ImagePositionPatient is missing"),
        (lambda ds: delattr(ds, "PixelSpacing"), "PixelSpacing is missing"),
        (lambda ds: setattr(ds, "ImageOrientationPatient", [0, 1, 0, 0, 0, -1]), "differs"),
        (lambda ds: delattr(ds, "PixelData"), "has no pixel data"),
    ],
)
def test_bad_tags_name_the_file(tmp_path: Path, edit, problem: str) -> None:
    exp = write_series(tmp_path, ramp_kji((4, 4, 5)))
    bad = exp["files"][2]
    ds = pydicom.dcmread(bad)
    edit(ds)
    ds.save_as(bad)
    with pytest.raises(VolumeReadError, match=re.escape(problem)) as err:
        load_dicom(tmp_path)
    assert str(bad) in str(err.value)


def test_differing_image_sizes_name_the_file(tmp_path: Path) -> None:
    write_series(tmp_path, ramp_kji((3, 4, 5)), shuffle_names=False, series_uid="1.2.3.4")
    other = write_series(tmp_path / "sub", ramp_kji((1, 6, 5)), series_uid="1.2.3.4",
                         origin=(-10, 20, 37.5))  # fmt: skip
    with pytest.raises(VolumeReadError, match="Rows is 6 but 4") as err:
        load_dicom(tmp_path)
    assert str(other["files"][0]) in str(err.value)


# --- series selection ---------------------------------------------------------------------


def test_two_series_need_a_choice(tmp_path: Path) -> None:
    ct = write_series(tmp_path / "a", ramp_kji((5, 4, 3)), description="CT AX",
                      series_number=2)  # fmt: skip
    mr = write_series(tmp_path / "b" / "deep", ramp_kji((3, 6, 7)), modality="MR",
                      description="T2 SAG", series_number=7)  # fmt: skip
    infos = list_series(tmp_path)
    assert [s.uid for s in infos] == [ct["series_uid"], mr["series_uid"]]
    assert [s.label for s in infos] == ["2: CT AX (CT, 5 slices)", "7: T2 SAG (MR, 3 slices)"]
    assert isinstance(infos[0], SeriesInfo)
    assert (infos[1].rows, infos[1].columns, infos[1].number_of_files) == (6, 7, 3)
    assert sorted(infos[1].files) == sorted(str(p) for p in mr["files"])
    with pytest.raises(MultipleSeriesError) as err:
        load_dicom(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "2: CT AX (CT, 5 slices)" in msg and "7: T2 SAG" in msg
    assert [s.uid for s in err.value.series] == [ct["series_uid"], mr["series_uid"]]
    vol = load_dicom(tmp_path, series_uid=mr["series_uid"])
    assert vol.shape == (7, 6, 3) and vol.modality == "MR"
    np.testing.assert_array_equal(vol.array, mr["array"])
    with pytest.raises(VolumeReadError, match=r"no DICOM series with uid 9\.9\.9"):
        load_dicom(tmp_path, series_uid="9.9.9")


def test_non_dicom_files_are_skipped(tmp_path: Path) -> None:
    exp = write_series(tmp_path / "s", ramp_kji((3, 4, 5)))
    (tmp_path / "README.txt").write_text("not DICOM")
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 50)
    (tmp_path / ".DS_Store").write_bytes(b"\0" * 300)
    (tmp_path / "noise.bin").write_bytes(np.random.default_rng(0).bytes(500))
    vol = load_dicom(tmp_path)
    np.testing.assert_array_equal(vol.array, exp["array"])
    assert vol.metadata["skipped_files"] == []  # non-DICOM files are skipped silently


def test_unreadable_dcm_file_is_refused_unless_skipped(tmp_path: Path) -> None:
    # Issue 11: a file named .dcm (or with the DICM marker) that cannot be read used to be
    # skipped without a word; now it stops the reading, or is skipped on request and noted.
    exp = write_series(tmp_path / "s", ramp_kji((3, 4, 5)))
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(VolumeReadError, match=r"noise\.dcm: not a readable DICOM file"):
        load_dicom(tmp_path)
    with pytest.raises(VolumeReadError, match=r"noise\.dcm"):
        list_series(tmp_path)
    vol = load_dicom(tmp_path, skip_unreadable=True)
    np.testing.assert_array_equal(vol.array, exp["array"])
    (skipped,) = vol.metadata["skipped_files"]
    assert skipped["path"] == str(tmp_path / "noise.dcm")
    assert "DICM" in skipped["reason"]
    assert len(list_series(tmp_path, skip_unreadable=True)) == 1


def test_empty_and_non_dicom_folders(tmp_path: Path) -> None:
    with pytest.raises(
        VolumeReadError, match=f"no DICOM files found in {re.escape(str(tmp_path))}"
    ):
        load_dicom(tmp_path)
    (tmp_path / "noise.bin").write_bytes(np.random.default_rng(0).bytes(2000))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(VolumeReadError, match="no DICOM files found in"):
        list_series(tmp_path)
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(VolumeReadError, match=r"noise\.dcm: not a readable DICOM file"):
        load_dicom(tmp_path / "noise.dcm")
    with pytest.raises(VolumeReadError, match="no such file or folder"):
        load_dicom(tmp_path / "absent")


def test_is_dicom_path(tmp_path: Path) -> None:
    exp = write_series(tmp_path / "series" / "nested", ramp_kji((2, 4, 5)))
    assert is_dicom_path(tmp_path / "series")
    assert is_dicom_path(exp["files"][0])
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("x")
    (plain / "IM0001").write_bytes(b"\0" * 200)
    assert not is_dicom_path(plain)
    assert not is_dicom_path(plain / "IM0001")
    assert is_dicom_path(plain / "a.txt") is False
    assert not is_dicom_path(tmp_path / "absent")


# --- single files, pydicom's test files ---------------------------------------------------


def test_single_slice_file(tmp_path: Path) -> None:
    exp = write_series(tmp_path, ramp_kji((1, 4, 5)), spacing=(0.5, 0.6, 3.0))
    vol = load_dicom(exp["files"][0])
    assert vol.shape == (5, 4, 1)
    assert vol.spacing == pytest.approx((0.5, 0.6, 3.0))  # SliceThickness as third spacing
    assert vol.metadata["slice_spacing_assumed"] is True
    ds = pydicom.dcmread(exp["files"][0])
    del ds.SliceThickness
    ds.save_as(exp["files"][0])
    assert load_dicom(exp["files"][0]).spacing[2] == pytest.approx(1.0)


@pytest.mark.parametrize(("name", "modality"), [("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")])
def test_pydicom_single_files_agree_with_simpleitk(name: str, modality: str) -> None:
    path = _testdata(name)
    vol = load_dicom(path)
    ds = pydicom.dcmread(path)
    assert vol.shape == (ds.Columns, ds.Rows, 1)
    assert vol.modality == modality
    expected = ds.pixel_array.T * float(ds.get("RescaleSlope", 1)) + float(
        ds.get("RescaleIntercept", 0)
    )
    np.testing.assert_array_equal(vol.array[:, :, 0], expected)
    values, affine = _sitk_volume([path])
    np.testing.assert_allclose(vol.affine[:, [0, 1, 3]], affine[:, [0, 1, 3]], atol=1e-4)
    np.testing.assert_array_equal(vol.array, values)
    col_spacing = float(ds.PixelSpacing[1])
    np.testing.assert_allclose(
        vol.affine[:3, 0], [-1, -1, 1] * np.asarray(ds.ImageOrientationPatient[:3]) * col_spacing
    )


def test_pydicom_legacy_multiframe_rtdose() -> None:
    vol = load_dicom(_testdata("rtdose.dcm"))
    assert vol.shape == (10, 10, 15) and vol.modality == "other"
    assert vol.spacing == pytest.approx((10, 10, 5))


def test_compressed_file_loads_or_names_the_decoder() -> None:
    from pydicom.pixels import get_decoder

    reference = load_dicom(_testdata("MR_small.dcm")).array
    for name in ("MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"):
        path = _testdata(name)
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        if get_decoder(syntax).is_available:
            np.testing.assert_array_equal(load_dicom(path).array, reference)
        else:
            with pytest.raises(VolumeReadError) as err:
                load_dicom(path)
            msg = str(err.value)
            assert name in msg and syntax.name in msg
            assert "pylibjpeg" in msg and "pip install" in msg


def test_colour_file_is_refused_clearly() -> None:
    with pytest.raises(VolumeReadError, match="3 samples per pixel"):
        load_dicom(_testdata("SC_rgb_jpeg_dcmd.dcm"))


# --- long-job protocol --------------------------------------------------------------------


def test_progress_events_and_stop(tmp_path: Path) -> None:
    exp = write_series(tmp_path, ramp_kji((5, 4, 3)))
    (tmp_path / "notes.txt").write_text("x")
    job = load_dicom_steps(tmp_path)
    events = []
    while True:
        try:
            events.append(next(job))
        except StopIteration as done:
            vol = done.value
            break
    headers = [(e.done, e.total) for e in events if e.message == "reading DICOM headers"]
    pixels = [(e.done, e.total) for e in events if e.message == "reading DICOM pixel data"]
    assert headers == [(n, 6) for n in range(1, 7)]
    assert pixels == [(n, 5) for n in range(1, 6)]
    np.testing.assert_array_equal(vol.array, exp["array"])

    def stop_at(n: int):
        calls = iter(range(1000))
        return lambda: next(calls) >= n

    # stop is asked before each of the 6 header files, then before each of 5 image files.
    for after, phase, seen in ((2, "reading DICOM headers", 2), (8, "reading the DICOM", 8)):
        job = load_dicom_steps(tmp_path, stop=stop_at(after))
        events = []
        with pytest.raises(jobs.Cancelled, match=phase):
            for event in job:
                events.append(event)
        assert len(events) == seen
    with pytest.raises(jobs.Cancelled):
        load_dicom(tmp_path, stop=lambda: True)


def test_modality_lut_sequence_is_applied(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    stored = (np.arange(3 * 4 * 5).reshape(3, 4, 5) % 10).astype(np.int16)
    exp = write_series(tmp_path, stored)
    for path in exp["files"]:
        ds = pydicom.dcmread(path)
        del ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType
        lut = Dataset()
        lut.LUTDescriptor = [10, 0, 16]
        lut.add_new("LUTData", "US", [100 + 3 * v for v in range(10)])
        ds.ModalityLUTSequence = Sequence([lut])
        ds.save_as(path)
    vol = load_dicom(tmp_path)
    np.testing.assert_array_equal(vol.array, 100 + 3 * exp["array"])


def test_pixel_data_is_read_only_for_the_chosen_series(tmp_path: Path, monkeypatch) -> None:
    import napari_unet.io.dicom as dicom_module

    a = write_series(tmp_path / "a", ramp_kji((3, 4, 5)), series_number=1)
    b = write_series(tmp_path / "b", ramp_kji((4, 4, 5)), series_number=2)
    calls: list[tuple[str, bool]] = []
    real = pydicom.dcmread

    def spy(path, *args, **kwargs):
        calls.append((str(path), bool(kwargs.get("stop_before_pixels"))))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(dicom_module.pydicom, "dcmread", spy)
    list_series(tmp_path)
    assert len(calls) == 7 and all(headers_only for _, headers_only in calls)
    calls.clear()
    load_dicom(tmp_path, series_uid=b["series_uid"])
    full = sorted(p for p, headers_only in calls if not headers_only)
    assert full == sorted(str(p) for p in b["files"])
    assert not set(full) & {str(p) for p in a["files"]}

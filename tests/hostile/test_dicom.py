"""Hostile and malformed DICOM input (issue 11): every case is refused with one clean line.

Each case builds a real file or folder in ``tmp_path`` with `tests.io.dicom_factory` and
runs ``napari-unet info PATH`` in-process through `refuse`: exit status 2, one line on
stderr naming the file or folder and the problem, no traceback, no control characters.
Cases that must *load* (special files skipped with a note, symlink loops) are below them,
then a property test that damages one file of a valid series.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import uid as uids

from napari_unet.errors import MultipleSeriesError, VolumeReadError
from napari_unet.io import _dicom_scan, _dicom_series
from napari_unet.io.dicom import is_dicom_path, list_series, load_dicom
from napari_unet.io.reader import load_volume
from napari_unet.text import printable
from tests.hostile.contract import PeakMemory, refuse
from tests.io.dicom_factory import (
    edit_file,
    file_meta_end,
    make_rgb,
    ramp_kji,
    set_raw,
    truncate,
    write_encapsulated,
    write_series,
)

pytestmark = pytest.mark.timeout(120)

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
ESCAPES = "\x1b[2J\x1b[31mEVIL\x1b]0;owned\x07 \x9b1m\x00\r\nSERIES\x7f"

Case = Callable[[Path, pytest.MonkeyPatch], tuple[Path, tuple[str, ...]]]


def _series(tmp: Path, n: int = 4, **kwargs) -> dict:
    kwargs.setdefault("spacing", (1.0, 1.0, 2.0))
    kwargs.setdefault("origin", (0.0, 0.0, 0.0))
    return write_series(tmp / "series", ramp_kji((n, 4, 5)), shuffle_names=False, **kwargs)


def _one(tmp: Path, edit: Callable[[pydicom.Dataset], object], k: int = 1, n: int = 4):
    """A series of ``n`` slices with slice ``k`` edited; (folder, (file name, …))."""
    exp = _series(tmp, n)
    bad = edit_file(exp["files"][k], edit)
    return bad.parent, (bad.name,)


def _raw(keyword: str, vr: str, value: bytes) -> Callable[[pydicom.Dataset], None]:
    return lambda ds: set_raw(ds, keyword, vr, value)


def _set(keyword: str, value: object) -> Callable[[pydicom.Dataset], None]:
    return lambda ds: setattr(ds, keyword, value)


def _del(keyword: str) -> Callable[[pydicom.Dataset], None]:
    return lambda ds: delattr(ds, keyword)


# --- the cases ----------------------------------------------------------------------------


def fifo_only(tmp, mp):
    folder = tmp / "pipes"
    folder.mkdir()
    os.mkfifo(folder / "IM1.dcm")
    return folder, (str(folder), "FIFO")


def fifo_path(tmp, mp):
    os.mkfifo(tmp / "IM1.dcm")
    return tmp / "IM1.dcm", ("IM1.dcm",)


def deep_folders(tmp, mp):
    deepest = tmp / "deep"
    for _ in range(1100):
        deepest = deepest / "d"
    _make_chain(tmp / "deep", 1100)
    write_series(deepest, ramp_kji((2, 4, 5)))
    return tmp / "deep", (str(tmp / "deep"), "32 levels")


def too_many_entries(tmp, mp):
    mp.setattr(_dicom_scan, "MAX_ENTRIES", 5)
    exp = _series(tmp, 8)
    return exp["files"][0].parent, ("series", "more than 5 files and folders")


def frames_negative(tmp, mp):
    return _one(tmp, _raw("NumberOfFrames", "IS", b"-3"), k=0, n=1)


def frames_zero(tmp, mp):
    return _one(tmp, _raw("NumberOfFrames", "IS", b"0"), k=0, n=1)


def frames_text(tmp, mp):
    return _one(tmp, _raw("NumberOfFrames", "IS", b"abc"), k=0, n=1)


def frames_fraction(tmp, mp):
    return _one(tmp, _raw("NumberOfFrames", "IS", b"2.5"), k=0, n=1)


def frames_beyond_data(tmp, mp):
    folder, names = _one(tmp, _set("NumberOfFrames", 5000), k=0, n=1)
    return folder, (*names, "shorter than its header says")


def fragments_fewer_than_frames(tmp, mp):
    path = write_encapsulated(tmp / "c.dcm", uids.JPEGLSLossless, frames=50, fragments=[b"xy"])
    return path, ("c.dcm", "only 1 fragment")


def truncated_middle(tmp, mp):
    exp = _series(tmp, 6)
    bad = exp["files"][3]
    truncate(bad, bad.stat().st_size * 6 // 10)
    return bad.parent, (bad.name, "truncated")


def truncated_pixels(tmp, mp):
    exp = _series(tmp, 6)
    bad = truncate(exp["files"][2], -10)
    return bad.parent, (bad.name, "truncated (pixel data 30 of 40 bytes")


def truncated_after_meta(tmp, mp):
    exp = _series(tmp, 4)
    bad = truncate(exp["files"][3], file_meta_end(exp["files"][3]))
    return bad.parent, (bad.name, "before its data set")


def truncated_before_rows(tmp, mp):
    exp = _series(tmp, 4)
    rows_at = exp["files"][0].read_bytes().index(b"\x28\x00\x10\x00US")
    bad = truncate(exp["files"][0], rows_at)  # ends cleanly after an element
    return bad.parent, (bad.name, "without Rows")


def garbage_after_preamble(tmp, mp):
    exp = _series(tmp, 3)
    bad = tmp / "series" / "IM9.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(1).bytes(3000))
    del exp
    return bad.parent, ("IM9.dcm",)


def garbage_without_marker(tmp, mp):
    _series(tmp, 3)
    bad = tmp / "series" / "noise.dcm"
    bad.write_bytes(np.random.default_rng(2).bytes(700))
    return bad.parent, ("noise.dcm", "not a readable DICOM file")


def pixels_short(tmp, mp):
    folder, names = _one(tmp, _set("PixelData", b"\0" * 20))
    return folder, (*names, "pixel data is shorter")


def pixels_long(tmp, mp):
    folder, names = _one(tmp, _set("PixelData", b"\0" * 80))
    return folder, (*names, "pixel data is longer")


def rows_zero(tmp, mp):
    folder, names = _one(tmp, _set("Rows", 0))
    return folder, (*names, "Rows is 0")


def rows_text(tmp, mp):
    folder, names = _one(tmp, _raw("Rows", "IS", b"abc"))
    return folder, (*names, "Rows is 'abc'")


def columns_huge(tmp, mp):
    folder, names = _one(tmp, _set("Columns", 65535))
    return folder, (*names, "pixel data is shorter")


def bits_12(tmp, mp):
    folder, names = _one(tmp, _set("BitsAllocated", 12))
    return folder, (*names, "BitsAllocated is 12")


def bits_0(tmp, mp):
    folder, names = _one(tmp, _set("BitsAllocated", 0))
    return folder, (*names, "BitsAllocated is 0")


def rgb(tmp, mp):
    exp = _series(tmp, 1)
    bad = make_rgb(exp["files"][0])
    return bad, (bad.name, "3 samples per pixel")


def iop_parallel(tmp, mp):
    folder, names = _one(tmp, _set("ImageOrientationPatient", [1, 0, 0, 1, 0, 0]))
    return folder, (*names, "parallel")


def iop_zero(tmp, mp):
    folder, names = _one(tmp, _set("ImageOrientationPatient", [0, 0, 0, 0, 0, 0]))
    return folder, (*names, "zero row direction")


def iop_nan(tmp, mp):
    folder, names = _one(tmp, _raw("ImageOrientationPatient", "DS", b"1\\0\\0\\0\\nan\\0"))
    return folder, (*names, "ImageOrientationPatient")


def iop_not_unit(tmp, mp):
    folder, names = _one(tmp, _set("ImageOrientationPatient", [2, 0, 0, 0, 1, 0]))
    return folder, (*names, "length 2")


def ipp_missing(tmp, mp):
    folder, names = _one(tmp, _del("ImagePositionPatient"))
    return folder, (*names, "ImagePositionPatient is missing")


def ipp_two_values(tmp, mp):
    folder, names = _one(tmp, _set("ImagePositionPatient", [0, 0]))
    return folder, (*names, "ImagePositionPatient")


def duplicate_positions(tmp, mp):
    folder, _ = _one(tmp, _set("ImagePositionPatient", [0, 0, 4]), k=1)
    return folder, (str(folder), "share a position")


def missing_slice(tmp, mp):
    exp = write_series(tmp / "gap", ramp_kji((6, 4, 5)), drop_slices=(3,))
    return tmp / "gap", (str(tmp / "gap"), "1 slice(s) missing")
    del exp


def uneven_spacing(tmp, mp):
    folder, names = _one(tmp, _set("ImagePositionPatient", [0, 0, 2.9]), k=1)
    return folder, (str(folder), "non-uniform slice spacing", *names)


def mixed_rows(tmp, mp):
    exp = _series(tmp, 3, series_uid="1.2.3.4")
    other = write_series(tmp / "series" / "sub", ramp_kji((1, 6, 5)), series_uid="1.2.3.4",
                         spacing=(1, 1, 2), origin=(0, 0, 6))  # fmt: skip
    del exp
    return tmp / "series", (other["files"][0].name, "mixes image sizes")


def spacing_zero(tmp, mp):
    folder, names = _one(tmp, _set("PixelSpacing", [0, 1]))
    return folder, (*names, "PixelSpacing must be positive")


def spacing_negative(tmp, mp):
    folder, names = _one(tmp, _set("PixelSpacing", [1, -0.5]))
    return folder, (*names, "PixelSpacing must be positive")


def spacing_nan(tmp, mp):
    folder, names = _one(tmp, _raw("PixelSpacing", "DS", b"nan\\1"))
    return folder, (*names, "PixelSpacing")


def slope_nan(tmp, mp):
    folder, names = _one(tmp, _raw("RescaleSlope", "DS", b"nan"))
    return folder, (*names, "RescaleSlope")


def escape_codes_in_description(tmp, mp):
    write_series(tmp / "two" / "a", ramp_kji((3, 4, 5)), description="plain", series_number=1)
    write_series(tmp / "two" / "b", ramp_kji((3, 4, 5)), description=ESCAPES, series_number=2)
    return tmp / "two", (str(tmp / "two"), "2 DICOM series", "2: EVIL", "SERIES (CT")


def dicomdir_only(tmp, mp):
    folder = tmp / "index"
    folder.mkdir()
    (folder / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    return folder, (str(folder), "DICOMDIR")


def empty_folder(tmp, mp):
    (tmp / "empty").mkdir()
    return tmp / "empty", (str(tmp / "empty"), "no DICOM files found")


def non_dicom_folder(tmp, mp):
    folder = tmp / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    return folder, (str(folder), "no DICOM files found")


def symlink_loop_only(tmp, mp):
    folder = tmp / "loop"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "back").symlink_to(folder, target_is_directory=True)
    (folder / "self").symlink_to(".", target_is_directory=True)
    return folder, (str(folder), "no DICOM files found", "loop")


def unsupported_syntax(tmp, mp):
    path = write_encapsulated(tmp / "video.dcm", uids.MPEG2MPML, frames=1, fragments=[b"ab"])
    return path, ("video.dcm", "cannot decode", "MPEG2")


def missing_decoder(tmp, mp):
    from pydicom.pixels import get_decoder

    for syntax in (uids.JPEGLSLossless, uids.JPEGLosslessSV1, uids.HTJ2KLossless):
        if not get_decoder(syntax).is_available:
            path = write_encapsulated(tmp / "ls.dcm", syntax, frames=1, fragments=[b"ab"])
            return path, ("ls.dcm", "no decoder for it is installed", "pip install")
    pytest.skip("every candidate compressed syntax has a decoder here")


def series_too_big(tmp, mp):
    mp.setattr(_dicom_series, "MAX_SERIES_BYTES", 100)
    _series(tmp, 4)
    return tmp / "series", (str(tmp / "series"), "160 bytes", "this reader allows")


def per_frame_items_short(tmp, mp):
    exp = write_series(tmp / "mf", ramp_kji((4, 4, 5)), multiframe=True)

    def drop(ds):
        del ds.PerFrameFunctionalGroupsSequence[-1]

    bad = edit_file(exp["files"][0], drop)
    return bad, (bad.name, "PerFrameFunctionalGroupsSequence has 3 items")


def broken_symlink_only(tmp, mp):
    folder = tmp / "links"
    folder.mkdir()
    (folder / "IM1.dcm").symlink_to(tmp / "nowhere.dcm")
    return folder, (str(folder), "broken symbolic link")


CASES: dict[str, Case] = {
    f.__name__: f
    for f in (
        fifo_only, fifo_path, deep_folders, too_many_entries, frames_negative, frames_zero,
        frames_text, frames_fraction, frames_beyond_data, fragments_fewer_than_frames,
        truncated_middle, truncated_pixels, truncated_after_meta, truncated_before_rows,
        garbage_after_preamble, garbage_without_marker, pixels_short, pixels_long, rows_zero,
        rows_text, columns_huge, bits_12, bits_0, rgb, iop_parallel, iop_zero, iop_nan,
        iop_not_unit, ipp_missing, ipp_two_values, duplicate_positions, missing_slice,
        uneven_spacing, mixed_rows, spacing_zero, spacing_negative, spacing_nan, slope_nan,
        escape_codes_in_description, dicomdir_only, empty_folder, non_dicom_folder,
        symlink_loop_only, unsupported_syntax, missing_decoder, series_too_big,
        per_frame_items_short, broken_symlink_only,
    )
}  # fmt: skip
_POSIX_ONLY = {"fifo_only", "fifo_path", "symlink_loop_only", "broken_symlink_only"}


def _make_chain(top: Path, depth: int) -> None:
    """``top/d/d/…`` ``depth`` levels deep, built without recursion (os.makedirs recurses)."""
    path = top
    path.mkdir()
    for _ in range(depth):
        path = path / "d"
        path.mkdir()


def _remove_chain(top: Path) -> None:
    chain = [top]
    while (chain[-1] / "d").is_dir():
        chain.append(chain[-1] / "d")
    for folder in reversed(chain):
        for entry in folder.iterdir():
            if not entry.is_dir():
                entry.unlink()
        folder.rmdir()


def test_the_corpus_keeps_its_size() -> None:
    assert len(CASES) >= 28


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_dicom_is_refused(name: str, tmp_path: Path, capsys, monkeypatch) -> None:
    if name in _POSIX_ONLY and not hasattr(os, "mkfifo"):
        pytest.skip("FIFOs and symlinks need a POSIX system")
    path, fragments = CASES[name](tmp_path, monkeypatch)
    try:
        err = refuse(capsys, ["info", path], *fragments)
    finally:
        if name == "deep_folders":
            _remove_chain(tmp_path / "deep")
    assert "\x1b" not in err and "error:" in err


@pytest.mark.timeout(20)
def test_three_million_frames_are_refused_at_once(tmp_path: Path, capsys) -> None:
    exp = _series(tmp_path, 1)
    bad = edit_file(exp["files"][0], _set("NumberOfFrames", 3_000_000))
    assert bad.stat().st_size < 2000
    start = time.perf_counter()
    with PeakMemory() as memory:
        refuse(capsys, ["info", bad], bad.name, "NumberOfFrames is 3000000")
        refuse(capsys, ["info", bad.parent], bad.name, "NumberOfFrames")
    assert time.perf_counter() - start < 2.0
    assert memory.peak < 100 * 2**20
    # The frame cap is not the only guard: under it, the pixel-data length refuses too.
    edit_file(bad, _set("NumberOfFrames", 90_000))
    start = time.perf_counter()
    with PeakMemory() as memory:
        refuse(capsys, ["info", bad], bad.name, "90000 frames of 4×5", "shorter")
    assert time.perf_counter() - start < 2.0 and memory.peak < 100 * 2**20


@pytest.mark.parametrize("name", ["frames_text", "escape_codes_in_description"])
def test_a_real_run_prints_one_line(name: str, tmp_path: Path, monkeypatch) -> None:
    """Out of process, so that pydicom's warnings would reach stderr if not silenced."""
    path, fragments = CASES[name](tmp_path, monkeypatch)
    run = subprocess.run(
        [sys.executable, "-m", "napari_unet.cli", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )
    assert run.returncode == 2, run.stderr
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert fragments[0] in run.stderr


# --- special files are skipped with a note; loops are not followed ------------------------


@needs_fifo
@pytest.mark.timeout(20)
def test_fifo_next_to_a_series_is_skipped_with_a_note(tmp_path: Path) -> None:
    exp = _series(tmp_path, 3)
    os.mkfifo(tmp_path / "series" / "A_pipe.dcm")  # sorted first
    assert is_dicom_path(tmp_path / "series")
    assert not is_dicom_path(tmp_path / "series" / "A_pipe.dcm")
    vol = load_dicom(tmp_path / "series")
    np.testing.assert_array_equal(vol.array, exp["array"])
    (note,) = vol.metadata["skipped_files"]
    assert note["path"].endswith("A_pipe.dcm") and "FIFO" in note["reason"]


@needs_fifo
@pytest.mark.timeout(20)
def test_symlinks_loops_and_links_to_files(tmp_path: Path) -> None:
    exp = _series(tmp_path, 3)
    folder = tmp_path / "series"
    elsewhere = tmp_path / "IM_elsewhere.dcm"
    exp["files"][1].rename(elsewhere)
    exp["files"][1].symlink_to(elsewhere)  # a link to a regular file is read
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)
    vol = load_dicom(folder)
    np.testing.assert_array_equal(vol.array, exp["array"])
    reasons = [s["reason"] for s in vol.metadata["skipped_files"]]
    assert any("loop" in r for r in reasons)
    assert any("the same file as" in r for r in reasons)  # up/IM_elsewhere.dcm
    assert len(vol.metadata["files"]) == 3


def test_skip_unreadable_loads_the_rest_and_says_so(tmp_path: Path) -> None:
    exp = _series(tmp_path, 7)
    last = truncate(exp["files"][6], -7)
    with pytest.raises(VolumeReadError, match="truncated") as err:
        load_dicom(tmp_path / "series")
    assert last.name in str(err.value)
    vol = load_dicom(tmp_path / "series", skip_unreadable=True)
    assert vol.shape == (5, 4, 6)
    np.testing.assert_array_equal(vol.array, exp["array"][:, :, :6])
    (note,) = vol.metadata["skipped_files"]
    assert note["path"] == str(last) and note["reason"].startswith("truncated")
    # A skipped slice in the middle is not hidden: the gap is reported.
    truncate(exp["files"][3], -7)
    with pytest.raises(VolumeReadError, match=r"1 slice\(s\) missing"):
        load_dicom(tmp_path / "series", skip_unreadable=True)


def test_text_from_files_is_printable(tmp_path: Path) -> None:
    exp = _series(tmp_path, 2, description=ESCAPES)
    for path in exp["files"]:
        edit_file(path, _set("Manufacturer", "ACME\x1b[5m\nblink"))
    (info,) = list_series(tmp_path / "series")
    assert info.description.startswith("EVIL") and info.description.endswith("SERIES")
    assert all(c.isprintable() for c in info.label)
    meta = load_dicom(tmp_path / "series").metadata
    for key in ("series_description", "manufacturer", "dicom_modality", "series_uid"):
        assert all(c.isprintable() for c in meta[key]), (key, meta[key])
    assert meta["manufacturer"] == "ACME blink"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("T1\x1b[2J\x1b[31m AX", "T1 AX"),
        ("a\nb\r\nc\td", "a b c d"),
        ("x\x1b]0;title\x07y", "xy"),
        ("x\x1b]8;;http://evil\x1b\\y", "xy"),
        ("x\x9b31my\x85z", "xy z"),
        ("nul\x00del\x7fbell\x07", "nuldelbell"),
        ("bidi \u202egnp.exe", "bidi gnp.exe"),
        ("\x1bc reset", "reset"),
        ("plain text, ünïcode", "plain text, ünïcode"),
    ],
)
def test_printable(raw: str, clean: str) -> None:
    assert printable(raw) == clean
    assert printable("abcdef", limit=4) == "abc…"


# --- damaging one file of a valid series --------------------------------------------------


@pytest.fixture(scope="module")
def small_series(tmp_path_factory) -> tuple[Path, dict, dict[Path, bytes]]:
    folder = tmp_path_factory.mktemp("valid") / "series"
    exp = write_series(folder, ramp_kji((4, 4, 5)), shuffle_names=False)
    return folder, exp, {p: p.read_bytes() for p in exp["files"]}


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    which=st.integers(0, 3),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_damaged_file_loads_correctly_or_is_refused(small_series, which, flips, cut) -> None:
    folder, exp, originals = small_series
    path = exp["files"][which]
    data = bytearray(originals[path])
    for offset, mask in flips:
        data[offset % len(data)] ^= mask
    if cut is not None:
        data = data[: cut % len(data)]
    try:
        path.write_bytes(bytes(data))
        try:
            vol = load_volume(folder)
        except (VolumeReadError, MultipleSeriesError) as e:
            assert "\n" not in str(e) and all(c.isprintable() for c in str(e))
        else:
            assert vol.shape == (5, 4, 4)
    finally:
        path.write_bytes(originals[path])

"""Hostile NIfTI files (issue 11): each is refused with exit 2 and one line naming it.

Every case is a real file built in ``tmp_path``, by nibabel or by editing the bytes of a
valid file (NIfTI-1 header: 348 bytes, little-endian as nibabel writes it here).
"""

from __future__ import annotations

import gzip
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_unet.errors import VolumeReadError
from napari_unet.io.reader import load_volume
from tests.hostile.contract import PeakMemory, refuse

pytestmark = pytest.mark.timeout(120)

# Byte offsets of NIfTI-1 header fields.
SIZEOF_HDR, DIM, INTENT, DATATYPE, BITPIX, PIXDIM, VOX_OFFSET = 0, 40, 68, 70, 72, 76, 108
SCL_SLOPE, SCL_INTER, QFORM_CODE, SFORM_CODE = 112, 116, 252, 254
QUATERN_B, QOFFSET_X, SROW_X, SROW_Y, SROW_Z, MAGIC = 256, 268, 280, 296, 312, 344
SHAPE = (8, 7, 6)


def valid_bytes(shape=SHAPE, dtype=np.int16, affine=None) -> bytearray:
    """The bytes of a valid single-file NIfTI-1 image with qform and sform set."""
    affine = np.diag([0.8, 0.9, 2.5, 1.0]) if affine is None else affine
    rng = np.random.default_rng(7)
    img = nib.Nifti1Image((rng.normal(0, 100, shape)).astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return bytearray(img.to_bytes())


def patch(data: bytearray, offset: int, fmt: str, *values) -> bytearray:
    struct.pack_into("<" + fmt, data, offset, *values)
    return data


def write(path: Path, data: bytes, *, compress: bool | None = None) -> Path:
    if compress is None:
        compress = path.name.endswith(".gz")
    path.write_bytes(gzip.compress(bytes(data), mtime=0) if compress else bytes(data))
    return path


def huge_header() -> bytearray:
    """A header alone that declares 2000³ int16 voxels (16 GB)."""
    return patch(valid_bytes()[:352], DIM, "4h", 3, 2000, 2000, 2000)


def flip(data: bytes, position: int, mask: int = 0x10) -> bytes:
    out = bytearray(data)
    out[position] ^= mask
    return bytes(out)


def _gz() -> bytes:
    return gzip.compress(bytes(valid_bytes()), mtime=0)


def _nifti2_garbage(tmp: Path) -> Path:
    block = bytearray(np.random.default_rng(3).bytes(540 + 4 + 400))
    patch(block, 0, "i", 540)
    block[4:12] = b"n+2\0\r\n\x1a\n"
    return write(tmp / "garbage2.nii", block)


def _nifti2_huge(tmp: Path) -> Path:
    img = nib.Nifti2Image(np.zeros(SHAPE, np.int16), np.eye(4))
    data = bytearray(img.to_bytes())
    patch(data, 16, "8q", 3, 2**40, 2**40, 2**20, 1, 1, 1, 1)  # NIfTI-2 dim at 16
    return write(tmp / "huge2.nii", data)


def _rgb(tmp: Path, channels: str) -> Path:
    dtype = [(c, "u1") for c in channels]
    img = nib.Nifti1Image(np.zeros(SHAPE, dtype=dtype), np.eye(4))
    return write(tmp / f"{channels.lower()}.nii", img.to_bytes())


def _image(tmp: Path, name: str, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp / name)
    return tmp / name


def _pair(tmp: Path) -> Path:
    nib.save(nib.Nifti1Pair(np.zeros(SHAPE, np.int16), np.eye(4)), tmp / "pair.hdr")
    return tmp / "pair.hdr"


def _loop(tmp: Path) -> Path:
    os.symlink(tmp / "b.nii.gz", tmp / "a.nii.gz")
    os.symlink(tmp / "a.nii.gz", tmp / "b.nii.gz")
    return tmp / "a.nii.gz"


def _folder(tmp: Path) -> Path:
    (tmp / "x.nii.gz").mkdir()
    return tmp / "x.nii.gz"


def _unreadable(tmp: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = write(tmp / "locked.nii", valid_bytes())
    path.chmod(0)
    return path


def _extensions(tmp: Path) -> Path:
    data = valid_bytes()
    data[348:352] = b"\x01\0\0\0"  # an extension follows …
    data[352:352] = struct.pack("<ii", 24, 2) + b"\xff" * 16  # … a bogus DICOM one
    patch(data, VOX_OFFSET, "f", 352 + 24)
    return write(tmp / "ext.nii", data)


def _edit(name: str, *edits: tuple[int, str, tuple]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        data = valid_bytes()
        for offset, fmt, values in edits:
            patch(data, offset, fmt, *values)
        return write(tmp / name, data)

    return build


def _bytes(name: str, make: Callable[[], bytes]) -> Callable[[Path], Path]:
    return lambda tmp: write(tmp / name, make(), compress=False)


NAN, INF = float("nan"), float("inf")
#: name → (builder(tmp_path) → path, a word the message must hold or "").
CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    # truncation, at several offsets
    "nii-cut-3": (_bytes("cut3.nii", lambda: valid_bytes()[:3]), "truncated"),
    "nii-cut-200": (_bytes("cut200.nii", lambda: valid_bytes()[:200]), "truncated"),
    "nii-cut-348": (_bytes("cut348.nii", lambda: valid_bytes()[:348]), "truncated"),
    "nii-cut-half": (_bytes("half.nii", lambda: valid_bytes()[:700]), "truncated"),
    "nii-cut-1": (_bytes("minus1.nii", lambda: valid_bytes()[:-1]), "truncated"),
    "gz-cut-5": (_bytes("cut5.nii.gz", lambda: _gz()[:5]), "truncated"),
    "gz-cut-half": (_bytes("half.nii.gz", lambda: _gz()[: len(_gz()) // 2]), "truncated"),
    "gz-no-isize": (_bytes("noisize.nii.gz", lambda: _gz()[:-4]), "truncated"),
    "gz-no-trailer": (_bytes("notrailer.nii.gz", lambda: _gz()[:-8]), "truncated"),
    # gzip integrity
    "gz-flipped-deflate": (_bytes("flip.nii.gz", lambda: flip(_gz(), len(_gz()) // 2)), ""),
    "gz-flipped-crc": (_bytes("crc.nii.gz", lambda: flip(_gz(), len(_gz()) - 7)), "CRC"),
    "gz-wrong-isize": (_bytes("isize.nii.gz", lambda: flip(_gz(), len(_gz()) - 3)), "length"),
    "gz-trailing-garbage": (_bytes("tail.nii.gz", lambda: _gz() + b"garbage!" * 4), ""),
    "gz-more-than-declared": (
        _bytes("bomb.nii.gz", lambda: gzip.compress(bytes(valid_bytes()) + bytes(10**6))),
        "more data",
    ),
    # declared sizes the file cannot hold
    "huge-70-byte-gz": (lambda tmp: write(tmp / "huge.nii.gz", huge_header()), "2000×2000"),
    "huge-tiny-nii": (lambda tmp: write(tmp / "huge.nii", huge_header()), "2000×2000"),
    "huge-nifti2": (_nifti2_huge, "huge2.nii"),
    "vox-offset-beyond-file": (_edit("far.nii", (VOX_OFFSET, "f", (1e9,))), "truncated"),
    # header fields out of range
    "negative-dim": (_edit("neg.nii", (DIM, "4h", (3, 8, -7, 6))), "shape"),
    "zero-dim": (_edit("zero.nii", (DIM, "4h", (3, 8, 0, 6))), "shape"),
    "dim0-0": (_edit("dim0.nii", (DIM, "h", (0,))), "dim[0]"),
    "dim0-8": (_edit("dim8.nii", (DIM, "h", (8,))), "dim[0]"),
    "datatype-0": (_edit("dt0.nii", (DATATYPE, "h", (0,))), "datatype"),
    "datatype-9999": (_edit("dt9999.nii", (DATATYPE, "h", (9999,))), "9999"),
    "bitpix-mismatch": (_edit("bitpix.nii", (BITPIX, "h", (8,))), "bitpix"),
    "sizeof-hdr-wrong": (_edit("sizeof.nii", (SIZEOF_HDR, "i", (347,))), "not a NIfTI"),
    "bad-magic": (_edit("magic.nii", (MAGIC, "4s", (b"xyz\0",))), "magic"),
    "pair-magic-in-nii": (_edit("ni1.nii", (MAGIC, "4s", (b"ni1\0",))), ".img"),
    "vox-offset-in-header": (_edit("off0.nii", (VOX_OFFSET, "f", (0.0,))), "vox_offset"),
    "vox-offset-nan": (_edit("offnan.nii", (VOX_OFFSET, "f", (NAN,))), "vox_offset"),
    "inf-slope": (_edit("slope.nii", (SCL_SLOPE, "2f", (INF, 0.0))), "scl_slope"),
    "nan-intercept": (_edit("inter.nii", (SCL_SLOPE, "2f", (2.0, NAN))), "scl_inter"),
    "sform-code-7": (_edit("code7.nii", (SFORM_CODE, "h", (7,))), "sform_code"),
    # geometry
    "nan-pixdim": (_edit("pixnan.nii", (PIXDIM + 8, "f", (NAN,))), "pixdim"),
    "nan-sform": (_edit("sformnan.nii", (SROW_Y, "f", (NAN,))), "sform"),
    "inf-qform": (_edit("qinf.nii", (QOFFSET_X, "f", (INF,))), "qform"),
    "singular-sform": (
        _edit("sing.nii", (SROW_X + 4, "f", (0.0,)), (SROW_Y + 4, "f", (0.0,))),
        "singular",
    ),
    "huge-sform": (_edit("big.nii", (SROW_X, "4f", (3e38, 3e38, 3e38, 0.0))), "singular"),
    "zero-qform-and-sform": (
        _edit(
            "zeros.nii",
            (PIXDIM, "4f", (1.0, 0.0, 0.0, 0.0)),
            (QUATERN_B, "6f", (0.0,) * 6),
            (SROW_X, "12f", (0.0,) * 12),
        ),
        "singular",
    ),
    "zero-pixdim-qform": (
        _edit("qzero.nii", (SFORM_CODE, "h", (0,)), (PIXDIM + 8, "f", (0.0,))),
        "singular",
    ),
    "bad-quaternion": (
        _edit("quat.nii", (SFORM_CODE, "h", (0,)), (QUATERN_B, "3f", (0.9, 0.9, 0.9))),
        "qform",
    ),
    # voxel types that would lose information
    "complex64": (lambda tmp: _image(tmp, "c64.nii", np.ones(SHAPE, np.complex64)), "complex"),
    "complex128": (lambda tmp: _image(tmp, "c128.nii.gz", np.ones(SHAPE, np.complex128)), "comp"),
    "rgb24": (lambda tmp: _rgb(tmp, "RGB"), "RGB"),
    "rgba32": (lambda tmp: _rgb(tmp, "RGBA"), "RGBA"),
    # not one 3D volume
    "4d-five-volumes": (lambda tmp: _image(tmp, "fmri.nii.gz", np.zeros((4, 4, 3, 5))), "4D"),
    "5d-vectors": (lambda tmp: _image(tmp, "vec.nii", np.zeros((4, 4, 3, 1, 3))), "5D"),
    "1d": (lambda tmp: _image(tmp, "line.nii", np.zeros(10, np.float32)), "1D"),
    # not a NIfTI file at all
    "empty-nii": (_bytes("empty.nii", lambda: b""), "empty"),
    "empty-gz": (_bytes("empty.nii.gz", lambda: b""), "empty"),
    "random-gz": (_bytes("noise.nii.gz", lambda: np.random.default_rng(1).bytes(3000)), ""),
    "gzip-of-random": (
        _bytes("gnoise.nii.gz", lambda: gzip.compress(np.random.default_rng(2).bytes(3000))),
        "not a NIfTI",
    ),
    "nifti2-garbage": (_nifti2_garbage, ""),
    "bad-extension": (_extensions, "extension"),
    # the file system
    "folder-named-nii-gz": (_folder, ""),
    "symlink-loop": (_loop, ""),
    "unreadable": (_unreadable, "ermission"),
    "hdr-img-pair": (_pair, ""),
}
HUGE = ("huge-70-byte-gz", "huge-tiny-nii", "huge-nifti2")


def test_the_corpus_keeps_its_size():
    assert len(CASES) >= 28


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_nifti_is_refused_with_one_line(case, tmp_path, capsys):
    build, word = CASES[case]
    path = build(tmp_path)
    err = refuse(capsys, ["info", path], path.name)
    assert word in err


@pytest.mark.parametrize("case", HUGE)
def test_huge_declared_sizes_are_refused_before_any_allocation(case, tmp_path, capsys):
    path = CASES[case][0](tmp_path)
    if path.name.endswith(".gz"):
        assert path.stat().st_size < 100
    refuse(capsys, ["info", path], path.name)
    start = time.perf_counter()
    with PeakMemory() as memory, pytest.raises(VolumeReadError):
        load_volume(path)
    assert time.perf_counter() - start < 2.0
    assert memory.peak < 100e6


def test_a_size_above_the_memory_budget_is_refused_with_shape_and_size(
    tmp_path, capsys, monkeypatch
):
    from napari_unet.io import _nifti_stream

    path = write(tmp_path / "big.nii.gz", valid_bytes())
    monkeypatch.setattr(_nifti_stream, "_memory_budget", lambda: 500)
    err = refuse(capsys, ["info", path], "big.nii.gz", "8×7×6 int16", "memory")
    assert "672 bytes" in err


def test_multiline_library_messages_become_one_line(tmp_path, capsys):
    name = "two\nlines\x1b[31m.nii"
    path = write(tmp_path / name, valid_bytes()[:100])
    err = refuse(capsys, ["info", path], "two lines")
    assert "\x1b" not in err


# --- mutated files: a clean refusal or a faithful load, never anything else --------------

_BASE = bytes(valid_bytes((6, 5, 4)))
_FIELDS = [
    (SIZEOF_HDR, "i"),
    *[(DIM + 2 * i, "h") for i in range(8)],
    (INTENT, "h"),
    (DATATYPE, "h"),
    (BITPIX, "h"),
    *[(PIXDIM + 4 * i, "f") for i in range(8)],
    (VOX_OFFSET, "f"),
    (SCL_SLOPE, "f"),
    (SCL_INTER, "f"),
    (QFORM_CODE, "h"),
    (SFORM_CODE, "h"),
    *[(QUATERN_B + 4 * i, "f") for i in range(6)],
    *[(SROW_X + 4 * i, "f") for i in range(12)],
]
_VALUES = {
    "h": st.one_of(
        st.sampled_from([-1, 0, 1, 2, 3, 4, 5, 7, 8, 16, 32, 128]), st.integers(-(2**15), 2**15 - 1)
    ),
    "i": st.one_of(st.sampled_from([0, 348, 540, -348]), st.integers(-(2**31), 2**31 - 1)),
    "f": st.one_of(
        st.sampled_from([0.0, -1.0, 1.0, 352.0, 1e9, float("nan"), float("inf")]),
        st.floats(width=32, allow_nan=True, allow_infinity=True),
    ),
}


@st.composite
def mutated(draw) -> tuple[bool, bytes]:
    compressed = draw(st.booleans())
    raw = bytearray(_BASE)
    for _ in range(draw(st.integers(0, 3))):
        offset, fmt = draw(st.sampled_from(_FIELDS))
        patch(raw, offset, fmt, draw(_VALUES[fmt]))
    data = bytearray(gzip.compress(bytes(raw), mtime=0) if compressed else raw)
    for _ in range(draw(st.integers(0, 3))):
        data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return compressed, bytes(data)


def _declared_shape(data: bytes) -> tuple[int, ...]:
    """The 3D shape nibabel reads from a header (trailing singleton axes dropped)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    sizes = struct.unpack("<i", data[:4]) + struct.unpack(">i", data[:4])
    klass = nib.Nifti1Header if 348 in sizes else nib.Nifti2Header
    header = klass(binaryblock=data[: klass.sizeof_hdr], check=False)
    shape = list(header.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    return tuple(shape + [1] * (3 - len(shape)))


@settings(
    max_examples=80,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=mutated())
def test_mutated_files_load_faithfully_or_raise_volume_read_error(case, tmp_path):
    compressed, data = case
    path = tmp_path / ("m.nii.gz" if compressed else "m.nii")
    path.write_bytes(data)
    try:
        volume = load_volume(path)
    except VolumeReadError as e:
        message = str(e)
        assert "\n" not in message and str(path) in message
        return
    assert volume.shape == _declared_shape(data)
    assert volume.array.dtype.isnative
    assert np.isfinite(volume.affine).all()

"""Reading one DICOM file's header and checking it against its pixel data, without pixels.

`read_header` opens a regular file (never a FIFO), reads the header up to the pixel data
with pydicom (``stop_before_pixels``) through a reader that treats a short read as
truncation, validates the image tags (Rows, Columns, NumberOfFrames, BitsAllocated,
SamplesPerPixel) and then looks at the pixel-data *element header* where pydicom stopped:

* native (uncompressed) data must hold exactly Rows × Columns × frames × samples ×
  BitsAllocated / 8 bytes (one pad byte allowed), and the file must be that long;
* encapsulated (compressed) data must have at least one fragment per frame.

NumberOfFrames above `MAX_FRAMES` is refused outright, and any smaller claim must match
the pixel data, so a 1 kB file that claims 3,000,000 frames is refused at once, before
anything iterates over its frames. A file that looks like DICOM (``DICM`` marker or a
``.dcm`` name) but fails any of this raises `UnreadableFile`; anything else is "not
DICOM" (None).

`open_regular` opens a file without ever blocking on a FIFO (``O_NONBLOCK``, then
``fstat``); `has_preamble` and `read_header` use it.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from napari_unet.errors import VolumeReadError
from napari_unet.text import printable

#: Frames in one file, at most (a 3D series has hundreds; a 4D one some thousands).
MAX_FRAMES = 100_000
_BITS = (1, 8, 16, 32, 64)
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, Double…
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD
#: Fragments counted in encapsulated pixel data before giving up counting (no error).
_MAX_FRAGMENTS = 1_000_000


_O_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


class NotRegularFile(OSError):
    """`open_regular` was given a FIFO, socket, device or folder."""


def kind_of(mode: int) -> str:
    """A few words for a file type that is not read (``st_mode`` of ``stat``)."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def _opener(path: str, flags: int) -> int:
    fd = os.open(path, _O_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"{path}: {kind_of(mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: str | os.PathLike[str]) -> io.FileIO:
    """Open a regular file (following symlinks) for binary reading, never blocking.

    Raises:
        NotRegularFile: ``path`` is a FIFO, socket, device or folder.
        OSError: it cannot be opened.
    """
    return io.FileIO(os.fspath(path), "rb", opener=_opener)


def has_preamble(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a regular file with ``DICM`` at byte 128."""
    try:
        with open_regular(path) as f:
            head = f.read(132)
    except OSError:
        return False
    return head is not None and len(head) == 132 and head[128:132] == b"DICM"


class UnreadableFile(VolumeReadError):
    """A file that looks like DICOM but is truncated, malformed or inconsistent."""


class _ShortRead(Exception):
    pass


class _StrictReader(io.BufferedReader):
    """A reader on which a short read (the file ends inside an element) is an error.

    pydicom reads a truncated value silently; here it raises. A read that returns nothing
    for ≤ 8 bytes is the normal end of a dataset (pydicom asks for the next tag).
    """

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if size is not None and size > 0 and len(data) < size and (data or size > 8):
            raise _ShortRead
        return data


@dataclass
class Header:
    """What the reader needs from one image file (all values checked, text printable).

    Attributes:
        path: the file.
        ds: its header (no pixel data).
        uid: SeriesInstanceUID ("" when absent).
        rows, columns, frames, bits, samples: Rows, Columns, NumberOfFrames (1 when
            absent), BitsAllocated and SamplesPerPixel.
        instance: InstanceNumber (0 when absent or malformed), for a stable file order.
        series_number: SeriesNumber, None when absent.
        description, modality: SeriesDescription and Modality, printable.
    """

    path: Path
    ds: Dataset
    uid: str
    rows: int
    columns: int
    frames: int
    bits: int
    samples: int
    instance: float
    series_number: int | None
    description: str
    modality: str

    @property
    def stored_bytes(self) -> int:
        """Bytes of the decoded stored values (at least one byte a sample)."""
        return self.rows * self.columns * self.frames * self.samples * max(self.bits // 8, 1)


def text(ds: Dataset, keyword: str) -> str:
    """A string tag, printable; "" when absent or unreadable."""
    try:
        value = ds.get(keyword, "")
    except Exception:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        value = "\\".join(str(v) for v in value)
    return printable("" if value is None else value, limit=200)


def number(value: Any) -> float | None:
    """``float(value)`` if finite, else None (for optional tags such as InstanceNumber)."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return v if math.isfinite(v) else None


def whole(ds: Dataset, keyword: str, path: Path, lo: int, hi: int, default: int | None) -> int:
    """A tag that must be one whole number in ``[lo, hi]``; ``default`` when absent."""
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise UnreadableFile(f"{path}: {keyword} is missing")
        return default
    if isinstance(value, (list, tuple, MultiValue)):
        if len(value) != 1:
            raise UnreadableFile(f"{path}: {keyword} holds {len(value)} values, expected one")
        value = value[0]
    v = number(str(value).strip())
    if v is None or v != int(v) or not lo <= v <= hi:
        shown = printable(repr(value) if isinstance(value, (str, bytes)) else value, limit=40)
        raise UnreadableFile(
            f"{path}: {keyword} is {shown}, expected a whole number from {lo} to {hi}"
        )
    return int(v)


def _sop_class(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = (meta.get("MediaStorageSOPClassUID") if meta is not None else None) or ds.get(
        "SOPClassUID"
    )
    return UID(str(uid)).name if uid else ""


_IMAGE_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")


def _looks_like_image(ds: Dataset) -> bool:
    """An image SOP class (in the file meta or the data set), or image geometry tags."""
    meta = getattr(ds, "file_meta", None)
    for uid in (meta.get("MediaStorageSOPClassUID") if meta is not None else None,
                ds.get("SOPClassUID")):  # fmt: skip
        name = UID(str(uid)).name if uid else ""
        if "Image Storage" in name or name in ("RT Dose Storage", "Parametric Map Storage"):
            return True
    return any(tag in ds for tag in _IMAGE_TAGS)


def _meta_end(head: bytes) -> int:
    """Where the file meta information ends, from its group length (0 if not stated)."""
    if head[132:138] != b"\x02\x00\x00\x00UL":
        return 0
    return 144 + int.from_bytes(head[140:144], "little")


@contextmanager
def quiet() -> Iterator[None]:
    """Silence warnings (pydicom warns on stderr about every odd value it converts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def read_header(path: Path, *, single: bool) -> Header | None:
    """The checked header of an image file (pydicom's warnings silenced).

    Returns:
        None for a file that is not DICOM (no ``DICM`` marker, not named ``.dcm``) or a
        DICOM file without an image (a report, RT plan, presentation state …).

    Raises:
        UnreadableFile: naming the file and the problem, when it looks like DICOM but is
            truncated, malformed or its pixel data disagrees with its header; with
            ``single``, also for non-DICOM and non-image files.
    """
    with quiet():
        return _read_header(path, single)


def _read_header(path: Path, single: bool) -> Header | None:
    try:
        raw = open_regular(path)
    except NotRegularFile as e:
        raise UnreadableFile(str(e)) from e
    except OSError as e:
        raise UnreadableFile(f"{path}: cannot open the file ({e.strerror})") from e
    try:
        head = raw.read(144) or b""
        raw.seek(0)
    except OSError as e:
        raw.close()
        raise UnreadableFile(f"{path}: cannot read the file ({e.strerror})") from e
    if len(head) < 132 or head[128:132] != b"DICM":
        raw.close()
        if single or path.suffix.lower() == ".dcm":
            raise UnreadableFile(
                f"{path}: not a readable DICOM file (no 'DICM' marker at byte 128)"
            )
        return None  # not DICOM: skipped silently
    with _StrictReader(raw) as fp:
        size = os.fstat(fp.fileno()).st_size
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
        except _ShortRead:
            raise UnreadableFile(
                f"{path}: truncated or corrupt (a header element runs past the end of the "
                f"file, at byte {size})"
            ) from None
        except Exception as e:  # pydicom raises many kinds on garbage
            raise UnreadableFile(
                f"{path}: not a readable DICOM file ({type(e).__name__}: {printable(e)})"
            ) from e
        if len(ds) == 0 or size < _meta_end(head):
            raise UnreadableFile(
                f"{path}: truncated (the file ends at byte {size}, before its data set)"
            )
        try:
            if "Rows" not in ds and "PerFrameFunctionalGroupsSequence" not in ds:
                if _looks_like_image(ds):
                    raise UnreadableFile(
                        f"{path}: an image file ({_sop_class(ds) or '?'}) without Rows; it "
                        "is truncated or malformed"
                    )
                if single:
                    what = text(ds, "Modality") or _sop_class(ds) or "?"
                    raise UnreadableFile(f"{path}: a DICOM file without an image ({what})")
                return None  # a report, RT plan …: not an image
            header = _header(path, ds)
            _check_pixel_data(fp, ds, header, size)
        except VolumeReadError:
            raise
        except _ShortRead:
            raise UnreadableFile(f"{path}: truncated (the file ends at byte {size})") from None
        except Exception as e:  # a tag pydicom cannot convert
            raise UnreadableFile(
                f"{path}: malformed DICOM header ({type(e).__name__}: {printable(e)})"
            ) from e
    return header


def _header(path: Path, ds: Dataset) -> Header:
    series = number(ds.get("SeriesNumber"))
    return Header(
        path=path,
        ds=ds,
        uid=text(ds, "SeriesInstanceUID"),
        rows=whole(ds, "Rows", path, 1, 65535, None),
        columns=whole(ds, "Columns", path, 1, 65535, None),
        frames=whole(ds, "NumberOfFrames", path, 1, MAX_FRAMES, 1),
        bits=_bits(ds, path),
        samples=whole(ds, "SamplesPerPixel", path, 1, 4, 1),
        instance=number(ds.get("InstanceNumber")) or 0.0,
        series_number=int(series) if series is not None and abs(series) < 2**31 else None,
        description=text(ds, "SeriesDescription"),
        modality=text(ds, "Modality"),
    )


def _bits(ds: Dataset, path: Path) -> int:
    bits = whole(ds, "BitsAllocated", path, 0, 64, None)
    if bits not in _BITS:
        raise UnreadableFile(f"{path}: BitsAllocated is {bits}, expected 1, 8, 16, 32 or 64")
    return bits


def _check_pixel_data(fp: io.BufferedReader, ds: Dataset, h: Header, size: int) -> None:
    """Compare the pixel-data element (where pydicom stopped) with the image tags."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax == DeflatedExplicitVRLittleEndian:
        return  # the dataset was inflated into memory: no element header to look at here
    implicit, little = ds.original_encoding
    if implicit is None:
        return
    end = "<" if little else ">"
    start = fp.tell()
    head = fp.read(8) if start < size else b""
    if not head:
        raise UnreadableFile(f"{h.path}: the file has no pixel data")
    group, element = struct.unpack(end + "HH", head[:4])
    if (group << 16 | element) not in _PIXEL_TAGS:
        return  # not where pydicom stops: leave the check to the decoder
    if implicit:
        (length,) = struct.unpack(end + "L", head[4:])
    elif head[4:6] in _LONG_VRS:
        (length,) = struct.unpack(end + "L", fp.read(4))
    else:
        (length,) = struct.unpack(end + "H", head[6:])
    value_start = fp.tell()
    frames = f"{h.frames} frame{'s' * (h.frames != 1)} of " if h.frames != 1 else ""
    if length == 0xFFFFFFFF:
        fragments = _count_fragments(fp, end, size, h)
        if fragments < h.frames:
            raise UnreadableFile(
                f"{h.path}: NumberOfFrames is {h.frames} but the compressed pixel data has "
                f"only {fragments} fragment{'s' * (fragments != 1)}"
            )
        return
    encapsulated = syntax is not None and UID(str(syntax)).is_encapsulated
    samples = h.samples
    if samples == 3 and text(ds, "PhotometricInterpretation") == "YBR_FULL_422":
        samples = 2  # two chroma samples shared by two pixels
    expected = math.ceil(h.rows * h.columns * h.frames * samples * h.bits / 8)
    what = f"{frames}{h.rows}×{h.columns}, {h.bits} bits" + (
        f", {h.samples} samples" if h.samples != 1 else ""
    )
    available = size - value_start
    if length > available:
        claim = (
            f"; {expected} expected for {what}" if length not in (expected, expected + 1) else ""
        )
        raise UnreadableFile(
            f"{h.path}: truncated (pixel data {available} of {length} bytes{claim})"
        )
    if length not in (expected, expected + 1) and not encapsulated:
        short = "shorter" if length < expected else "longer"
        raise UnreadableFile(
            f"{h.path}: pixel data is {short} than its header says ({length} bytes, "
            f"{expected} expected for {what})"
        )


def _count_fragments(fp: io.BufferedReader, end: str, size: int, h: Header) -> int:
    """Fragments of encapsulated pixel data (the offset table not counted)."""
    items = 0
    while items <= _MAX_FRAGMENTS:
        pos = fp.tell()
        head = fp.read(8) if size - pos >= 8 else b""
        if len(head) < 8:
            raise UnreadableFile(
                f"{h.path}: truncated (compressed pixel data ends without its delimiter "
                f"at byte {size})"
            )
        group, element, length = struct.unpack(end + "HHL", head)
        tag = group << 16 | element
        if tag == _SEQ_END:
            break
        if tag != _ITEM:
            raise UnreadableFile(
                f"{h.path}: malformed compressed pixel data (item {items} at byte {pos})"
            )
        if pos + 8 + length > size:
            raise UnreadableFile(
                f"{h.path}: truncated (compressed pixel data fragment {items} needs "
                f"{length} bytes, {size - pos - 8} left)"
            )
        fp.seek(length, io.SEEK_CUR)
        items += 1
    return max(items - 1, 0)

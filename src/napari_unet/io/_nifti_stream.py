"""A NIfTI file's header and voxel bytes, read with every size checked first.

`read_nifti_bytes` opens regular files only (never a folder, device, pipe or socket),
decides by the first bytes whether the file is gzip-compressed (not by its name), and
reads the header (`_nifti_header.read_header`). Before any voxel is read, the declared
data size must fit in the file (``.nii``), in what a gzip stream of that size can
possibly inflate to, and in half of this machine's RAM. A ``.nii.gz`` file is inflated
once, into a buffer of exactly the declared size; more or fewer bytes than declared, a
bad CRC-32 or a wrong length in the gzip trailer are refused. Every refusal is one
`VolumeReadError` line that names the file.
"""

from __future__ import annotations

import errno
import gzip
import os
import stat
import zlib
from pathlib import Path

import numpy as np

from napari_unet.errors import VolumeReadError
from napari_unet.io._nifti_header import (
    Layout,
    describe,
    error,
    read_exact,
    read_extensions,
    read_header,
)

#: Inflating cannot multiply a size by more than this (the limit of deflate).
_MAX_DEFLATE_RATIO = 1032
#: Bytes inflated per step into the voxel buffer (bounds the temporary copies).
_GZIP_STEP = 16 * 2**20
_GZIP_MAGIC = b"\x1f\x8b"


def read_nifti_bytes(path: Path) -> tuple[Layout, np.ndarray]:
    """The checked header and the raw voxel bytes (uint8, as stored) of a NIfTI file.

    Raises:
        VolumeReadError: one line naming the file: missing, unreadable, truncated,
            corrupt (incl. a gzip CRC or length mismatch), larger than the memory
            allows, or a header that `_nifti_header.read_header` refuses.
    """
    try:
        with _open_regular(path) as f:
            compressed = f.read(2) == _GZIP_MAGIC
            f.seek(0)
            if compressed:
                return _read_gzip(path, f)
            return _read_plain(path, f)
    except VolumeReadError:
        raise
    except EOFError as e:
        raise error(path, f"is truncated (the gzip stream ends early: {describe(e)})") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise error(path, f"is corrupt (gzip: {describe(e)})") from None
    except OSError as e:
        raise error(path, f"cannot be read ({describe(e)})") from None


def _open_regular(path: Path):
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise error(path, "is a loop of symbolic links") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise error(path, "file not found") from None
        raise error(path, f"cannot be read ({describe(e)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(path, "is a folder, not a NIfTI file")
    if not stat.S_ISREG(st.st_mode):
        raise error(path, "is not a regular file (a device, pipe or socket)")
    try:
        return open(path, "rb")  # the caller's with-block closes it
    except OSError as e:
        raise error(path, f"cannot be read ({describe(e)})") from None


def _read_into(stream, buffer: np.ndarray, step: int) -> int:
    view = memoryview(buffer).cast("B")
    got = 0
    while got < len(view):
        n = stream.readinto(view[got : got + step])
        if not n:
            break
        got += n
    return got


def _read_plain(path: Path, f) -> tuple[Layout, np.ndarray]:
    layout, block = read_header(path, f)
    size = os.fstat(f.fileno()).st_size
    if size < layout.total:
        raise error(
            path,
            f"is truncated: its header declares {_what(layout)} of voxel data from byte "
            f"{layout.offset}, but the file holds only {size} bytes",
        )
    _check_budget(path, layout)
    head = block + read_exact(f, layout.offset - len(block))
    read_extensions(path, layout, head)
    data = np.empty(layout.nbytes, np.uint8)
    got = _read_into(f, data, max(layout.nbytes, 1))
    if got != layout.nbytes:  # the file shrank while being read
        raise error(path, f"is truncated: {got} of {layout.nbytes} bytes of voxel data")
    return layout, data


def _read_gzip(path: Path, f) -> tuple[Layout, np.ndarray]:
    size = os.fstat(f.fileno()).st_size
    stream = gzip.GzipFile(fileobj=f, mode="rb")
    layout, block = read_header(path, stream)
    if layout.total > _MAX_DEFLATE_RATIO * size + 1024:
        raise error(
            path,
            f"is truncated or corrupt: its header declares {_what(layout)}, which a gzip "
            f"file of {size} bytes cannot hold",
        )
    _check_budget(path, layout)
    head = block + read_exact(stream, layout.offset - len(block))
    if len(head) < layout.offset:
        raise error(path, f"is truncated: it ends inside the header ({len(head)} bytes)")
    read_extensions(path, layout, head)
    data = np.empty(layout.nbytes, np.uint8)
    got = _read_into(stream, data, _GZIP_STEP)
    if got != layout.nbytes:
        raise error(
            path,
            f"is truncated: it holds {got} of the {layout.nbytes} bytes of voxel data its "
            f"header declares ({_what(layout)})",
        )
    if stream.read(1):  # also reaches the end: the CRC-32 and length are checked there
        raise error(
            path,
            f"is corrupt: it holds more data than its header declares ({_what(layout)})",
        )
    return layout, data


def _what(layout: Layout) -> str:
    shape = "×".join(map(str, layout.shape))
    return f"{shape} {layout.dtype.name} ({_size(layout.nbytes)})"


def _size(n: int) -> str:
    if n >= 1e15:
        return f"{n:.3g} bytes"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _memory_budget() -> int:
    """Most bytes of voxel data a file may declare: half of the machine's RAM."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 2**33


def _check_budget(path: Path, layout: Layout) -> None:
    budget = _memory_budget()
    if layout.total > budget:
        raise error(
            path,
            f"declares {_what(layout)} of voxel data, more than half of this machine's "
            f"memory ({_size(budget)} allowed): refused before reading",
        )

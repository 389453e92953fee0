"""NRRD images and 3D Slicer segmentations (``.seg.nrrd``) with their exact geometry.

The header is parsed by `pynrrd` (its field parsers) and written by it; the voxel data
are read here, because pynrrd reads whatever a header points at: a detached data file
anywhere on disk (or a FIFO), and compressed data without bound. Here the header is at
most `MAX_HEADER_BYTES`, the data must be attached (``.nrrd``, not ``.nhdr``), their size
(sizes × type) is bounded by `MAX_BYTES` before anything is allocated, a raw file must
hold them, and gzip/bzip2 streams are decompressed to that size and no further. Every
refusal is one `VolumeReadError` line naming the file.

Geometry: ``space directions`` are the voxel axes in ``space`` (LPS, RAS or LAS are
accepted, and converted to RAS+), ``space origin`` the centre of the first voxel;
without them, ``spacings`` (or 1 mm) on LPS axes from the origin, flagged in
``metadata["geometry_assumed"]``. The array is ``(i, j, k)`` in the file's axis order
(NRRD's first axis varies fastest), as `Volume` expects. Written images use LPS (what
Slicer writes), gzip, little endian.

Slicer segmentations (the ``Segment{N}_*`` and ``Segmentation_*`` fields, see
`napari_unet.io._slicer_segments`) are label maps. Read: one label value per segment
(the file's own when they are distinct on one layer, else 1…n in the file's order, where
a later segment wins on overlap); names and colours in ``metadata["segments"]``.
Written: one layer, the label values as they are.
"""

from __future__ import annotations

import bz2
import math
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.errors import InputError, VolumeReadError
from napari_unet.io._dicom_header import NotRegularFile, open_regular
from napari_unet.io._slicer_segments import has_segment_fields, segment_fields, segmentation_labels
from napari_unet.io.labelmap import segments_of, set_segments
from napari_unet.io.volume import Volume
from napari_unet.outputs import atomic_output, check_output
from napari_unet.text import printable

__all__ = [
    "NRRD_SUFFIXES",
    "is_nrrd_path",
    "is_seg_nrrd_path",
    "load_nrrd",
    "save_nrrd",
    "save_seg_nrrd",
]

NRRD_SUFFIXES = (".nrrd",)
SEG_NRRD_SUFFIX = ".seg.nrrd"
#: Header bytes read at most (Slicer's segmentation headers are a few kB a segment).
MAX_HEADER_BYTES = 4 * 2**20
#: Voxel bytes a file may declare, at most (8 GiB, as the DICOM reader).
MAX_BYTES = 2**33

#: numpy kind+size → the NRRD type names (the first is the one written).
_TYPES = {
    "i1": ("signed char", "int8", "int8_t"),
    "u1": ("uchar", "unsigned char", "uint8", "uint8_t"),
    "i2": ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    "u2": ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    "i4": ("int", "signed int", "int32", "int32_t"),
    "u4": ("uint", "unsigned int", "uint32", "uint32_t"),
    "i8": (
        "longlong",
        "long long",
        "long long int",
        "signed long long",
        "signed long long int",
        "int64",
        "int64_t",
    ),
    "u8": ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    "f4": ("float",),
    "f8": ("double",),
}
_DTYPE_OF = {name: np.dtype(code) for code, names in _TYPES.items() for name in names}


def _type_name(dtype: np.dtype) -> str | None:
    names = _TYPES.get(f"{dtype.kind}{dtype.itemsize}")
    return names[0] if names else None


_SPACES = {
    "left-posterior-superior": np.diag([-1.0, -1.0, 1.0]),
    "lps": np.diag([-1.0, -1.0, 1.0]),
    "right-anterior-superior": np.eye(3),
    "ras": np.eye(3),
    "left-anterior-superior": np.diag([-1.0, 1.0, 1.0]),
    "las": np.diag([-1.0, 1.0, 1.0]),
}


def is_nrrd_path(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(NRRD_SUFFIXES)


def is_seg_nrrd_path(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(SEG_NRRD_SUFFIX)


# --- reading ------------------------------------------------------------------------------


def load_nrrd(path: str | os.PathLike[str]) -> Volume:
    """Read a 3D NRRD image or a Slicer segmentation (3D, or 4D layers).

    Returns:
        A Volume: array ``(i, j, k)``, RAS affine (mm). A segmentation (Segment fields,
        or a ``.seg.nrrd`` name) is a label map with ``metadata["segments"]``.

    Raises:
        VolumeReadError: one line naming the file: unreadable, not NRRD, a bad or
            unsupported header field, detached data, truncated or corrupt data, too large.
    """
    path = Path(path)
    try:
        with open_regular(path) as f:
            header, offset = _read_header(path, f)
            dtype, sizes = _layout(path, header)
            data = _read_data(path, f, header, offset, dtype, sizes)
    except NotRegularFile as e:
        raise VolumeReadError(str(e)) from None
    except OSError as e:
        reason = "no such file" if not path.exists() else e.strerror or str(e)
        raise VolumeReadError(f"{path}: cannot read the file ({reason})") from None
    array = data.reshape(sizes, order="F")
    segmentation = has_segment_fields(header) or is_seg_nrrd_path(path)
    affine, assumed = _affine(path, header, len(sizes))
    meta: dict[str, Any] = {
        "nrrd_space": str(header.get("space", "")),
        "geometry_assumed": assumed,
        "description": printable(header.get("content", ""), limit=200),
    }
    if segmentation:
        array, segments, overlaps = segmentation_labels(path, header, array)
        set_segments(meta, segments)
        meta["overlapping_voxels"] = overlaps
        offset_text = header.get("Segmentation_ReferenceImageExtentOffset")
        if offset_text:
            meta["reference_extent_offset"] = printable(offset_text, limit=60)
    elif array.ndim != 3:
        raise VolumeReadError(
            f"{path}: a {array.ndim}D image ({' x '.join(map(str, sizes))}); "
            "one 3D volume is needed"
        )
    modality = "other"
    if not segmentation and array.dtype.kind in "if" and array.size:
        low = float(np.nanmin(array)) if array.dtype.kind == "f" else float(array.min())
        modality = "CT" if low <= -500 else "other"
    return Volume(array, affine, modality, meta, str(path))


def _read_header(path: Path, f) -> tuple[dict[str, Any], int]:
    import nrrd

    head = f.read(MAX_HEADER_BYTES) or b""
    if not head.startswith(b"NRRD000"):
        raise VolumeReadError(f"{path}: not an NRRD file (no 'NRRD000' magic line)")
    end = re.search(rb"\r?\n\r?\n", head)
    if end is None:
        if len(head) >= MAX_HEADER_BYTES:
            raise VolumeReadError(
                f"{path}: the header is longer than {MAX_HEADER_BYTES // 2**20} MiB "
                "(no blank line ends it)"
            )
        raise VolumeReadError(f"{path}: truncated (the header has no blank line, no data)")
    lines = head[: end.start() + 1].splitlines(keepends=True)
    try:
        header = dict(nrrd.read_header(lines))
    except Exception as e:  # pynrrd's parsers raise NRRDError, ValueError, IndexError …
        raise VolumeReadError(
            f"{path}: bad NRRD header ({type(e).__name__}: {printable(e, limit=200)})"
        ) from None
    return header, end.end()


def _layout(path: Path, header: dict[str, Any]) -> tuple[np.dtype, tuple[int, ...]]:
    for field in ("dimension", "type", "encoding", "sizes"):
        if field not in header:
            raise VolumeReadError(f"{path}: bad NRRD header (no '{field}' field)")
    if "data file" in header or "datafile" in header:
        raise VolumeReadError(
            f"{path}: a detached NRRD header (its data are in another file); "
            "save the volume as one .nrrd file"
        )
    dimension = int(header["dimension"])
    sizes = tuple(int(s) for s in np.atleast_1d(header["sizes"]))
    if not 1 <= dimension <= 16 or len(sizes) != dimension:
        raise VolumeReadError(
            f"{path}: bad NRRD header (dimension {dimension} but {len(sizes)} sizes)"
        )
    if any(s < 1 for s in sizes):
        raise VolumeReadError(f"{path}: bad NRRD header (sizes {list(sizes)} must be positive)")
    if dimension not in (3, 4):
        raise VolumeReadError(
            f"{path}: a {dimension}D NRRD ({' x '.join(map(str, sizes))}); "
            "one 3D volume (or a 4D Slicer segmentation) is needed"
        )
    name = str(header["type"]).strip().lower()
    if name not in _DTYPE_OF:
        raise VolumeReadError(f"{path}: unsupported NRRD type {printable(repr(name), limit=40)}")
    dtype = _DTYPE_OF[name]
    encoding = str(header["encoding"]).lower()
    if encoding not in ("raw", "gzip", "gz", "bzip2", "bz2", "ascii", "text", "txt"):
        raise VolumeReadError(
            f"{path}: unsupported NRRD encoding {printable(repr(encoding), limit=40)} "
            "(raw, gzip, bzip2 and text are read)"
        )
    nbytes = math.prod(sizes) * dtype.itemsize
    if nbytes > MAX_BYTES:
        raise VolumeReadError(
            f"{path}: declares {' x '.join(map(str, sizes))} {dtype.name} voxels "
            f"({nbytes / 2**30:.3g} GiB), more than the {MAX_BYTES // 2**30} GiB allowed"
        )
    if dtype.itemsize > 1 and encoding not in ("ascii", "text", "txt"):
        endian = str(header.get("endian", "")).lower()
        if endian not in ("little", "big"):
            raise VolumeReadError(f"{path}: bad NRRD header (endian must be little or big)")
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    for field in ("lineskip", "line skip"):
        if int(header.get(field, 0)) != 0:
            raise VolumeReadError(f"{path}: unsupported NRRD header field '{field}'")
    skip = int(header.get("byteskip", header.get("byte skip", 0)))
    if skip not in (0, -1) or (skip == -1 and encoding != "raw"):
        raise VolumeReadError(f"{path}: unsupported NRRD byte skip {skip}")
    return dtype, sizes


def _read_data(
    path: Path, f, header: dict[str, Any], offset: int, dtype: np.dtype, sizes: tuple[int, ...]
) -> np.ndarray:
    count = math.prod(sizes)
    nbytes = count * dtype.itemsize
    encoding = str(header["encoding"]).lower()
    size = os.fstat(f.fileno()).st_size
    if encoding == "raw":
        start = (
            size - nbytes
            if int(header.get("byteskip", header.get("byte skip", 0))) == -1
            else offset
        )
        if start < offset or size - start < nbytes:
            raise VolumeReadError(
                f"{path}: truncated (the data need {nbytes} bytes, the file holds "
                f"{max(size - offset, 0)} after its header)"
            )
        f.seek(start)
        buffer = bytearray(nbytes)
        view = memoryview(buffer)
        done = 0
        while done < nbytes:
            n = f.readinto(view[done:])
            if not n:
                raise VolumeReadError(f"{path}: truncated while reading its data")
            done += n
        data = np.frombuffer(buffer, dtype=dtype)
    elif encoding in ("ascii", "text", "txt"):
        if size - offset > 64 * nbytes + 2**20:
            raise VolumeReadError(f"{path}: text data far longer than {count} numbers")
        f.seek(offset)
        words = f.read().split()
        if len(words) < count:
            raise VolumeReadError(f"{path}: truncated ({len(words)} of {count} numbers)")
        try:
            data = np.asarray(words[:count], dtype=np.float64).astype(dtype.newbyteorder("="))
        except ValueError:
            raise VolumeReadError(f"{path}: corrupt text data (a value is not a number)") from None
    else:
        f.seek(offset)
        data = np.frombuffer(_decompress(path, f, encoding, nbytes), dtype=dtype)
    if not data.dtype.isnative:
        data = data.byteswap().view(data.dtype.newbyteorder("="))
    return data


def _decompress(path: Path, f, encoding: str, nbytes: int) -> bytearray:
    gz = encoding in ("gzip", "gz")
    engine = zlib.decompressobj(zlib.MAX_WBITS | 32) if gz else bz2.BZ2Decompressor()
    out = bytearray()
    try:
        while len(out) < nbytes:
            if gz and engine.unconsumed_tail:
                chunk = engine.unconsumed_tail
            else:
                chunk = f.read(2**20)
                if not chunk:
                    break
            if gz:
                out += engine.decompress(chunk, nbytes - len(out))
                if engine.eof:
                    break
            else:
                out += engine.decompress(chunk, nbytes - len(out))
                if engine.eof:
                    break
                while not engine.needs_input and len(out) < nbytes and not engine.eof:
                    out += engine.decompress(b"", nbytes - len(out))
    except (zlib.error, OSError, EOFError, ValueError) as e:
        kind = "gzip" if gz else "bzip2"
        raise VolumeReadError(f"{path}: corrupt {kind} data ({printable(e, limit=120)})") from None
    if len(out) < nbytes:
        raise VolumeReadError(
            f"{path}: truncated (the compressed data give {len(out)} of {nbytes} bytes)"
        )
    if gz:
        _check_gzip_end(path, f, engine)
    return out


def _check_gzip_end(path: Path, f, engine) -> None:
    """Decompress what is left (a byte at most) so that the gzip CRC and length are
    checked: a stream with more data than the sizes declare, or a bad CRC, is refused."""
    try:
        while not engine.eof:
            chunk = engine.unconsumed_tail or f.read(2**16)
            if not chunk:
                raise VolumeReadError(f"{path}: truncated (the gzip stream has no end)")
            if engine.decompress(chunk, 1):
                raise VolumeReadError(
                    f"{path}: the compressed data hold more voxels than its sizes declare"
                )
    except zlib.error as e:
        raise VolumeReadError(f"{path}: corrupt gzip data ({printable(e, limit=120)})") from None


def _affine(path: Path, header: dict[str, Any], ndim: int) -> tuple[np.ndarray, bool]:
    """Voxel → RAS affine of the spatial axes, and whether it was assumed."""
    space = str(header.get("space", "")).strip().lower()
    directions = header.get("space directions")
    affine = np.eye(4)
    if directions is None:
        spacings = np.atleast_1d(np.asarray(header.get("spacings", [1.0] * ndim), float))
        spatial = spacings[-3:] if spacings.size >= 3 else np.ones(3)
        if not np.all(np.isfinite(spatial)) or np.any(spatial <= 0):
            spatial = np.ones(3)
        affine[:3, :3] = _SPACES["lps"] @ np.diag(spatial)
        return affine, True
    if space not in _SPACES:
        shown = printable(repr(header.get("space", header.get("space dimension", "?"))), limit=40)
        raise VolumeReadError(
            f"{path}: unsupported NRRD space {shown} (LPS, RAS or LAS patient spaces are read)"
        )
    matrix = np.asarray(directions, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != 3:
        raise VolumeReadError(f"{path}: bad NRRD header (space directions are not 3D vectors)")
    spatial = matrix[~np.all(np.isnan(matrix), axis=1)]
    if matrix.shape[0] != ndim or spatial.shape[0] != 3:
        raise VolumeReadError(
            f"{path}: bad NRRD header ({spatial.shape[0]} spatial axes of {ndim}; 3 are needed)"
        )
    if ndim == 4 and not np.all(np.isnan(matrix[0])):
        raise VolumeReadError(f"{path}: a 4D NRRD whose first axis is spatial (a time series?)")
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(spatial)) or origin.shape != (3,) or not np.all(np.isfinite(origin)):
        raise VolumeReadError(f"{path}: bad NRRD header (non-finite space directions or origin)")
    to_ras = _SPACES[space]
    affine[:3, :3] = to_ras @ spatial.T  # pynrrd rows are the axes' vectors
    affine[:3, 3] = to_ras @ origin
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeReadError(f"{path}: bad NRRD header (space directions are singular)")
    return affine, False


# --- writing ------------------------------------------------------------------------------


def _lps_header(volume: Volume, dtype: np.dtype) -> dict[str, Any]:
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    return {
        "type": _type_name(np.dtype(dtype)),
        "dimension": 3,
        "space": "left-posterior-superior",
        "sizes": np.asarray(volume.shape),
        "space directions": lps[:3, :3].T,
        "kinds": ["domain", "domain", "domain"],
        "endian": "little",
        "encoding": "gzip",
        "space origin": lps[:3, 3],
    }


def save_nrrd(volume: Volume, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write an image as NRRD (LPS space, gzip) in its exact geometry.

    Raises:
        InputError: ``path`` exists (and not ``overwrite``), is not ``.nrrd``, or cannot
            be written; the dtype has no NRRD type.
    """
    import nrrd

    out = check_output(path, overwrite=overwrite, inputs=[volume.source], suffixes=NRRD_SUFFIXES)
    data = np.asarray(volume.array)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if _type_name(data.dtype) is None:
        raise InputError(f"{out}: cannot write {data.dtype} voxels as NRRD")
    data = data.astype(data.dtype.newbyteorder("<"), copy=False)
    header = _lps_header(volume, data.dtype)
    with atomic_output(out, suffix=".nrrd") as tmp:
        nrrd.write(str(tmp), data, header, index_order="F", compression_level=6)
    return out


def save_seg_nrrd(labels: Volume, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a label map as a 3D Slicer segmentation (``.seg.nrrd``): one layer, the label
    values as they are, one segment per class with Slicer's header fields.

    Names are written in ASCII (other characters become "?"), as NRRD headers are.

    Raises:
        InputError: ``path`` exists (and not ``overwrite``), does not end in .seg.nrrd,
            cannot be written, or the values are not labels.
    """
    import nrrd

    from napari_unet.io.labelmap import as_label_array

    out = check_output(
        path, overwrite=overwrite, inputs=[labels.source], suffixes=(SEG_NRRD_SUFFIX,)
    )
    array = as_label_array(labels, what=str(labels.source or out))
    header = _lps_header(labels, array.dtype)
    header.update(segment_fields(array, segments_of(labels)))
    data = array.astype(array.dtype.newbyteorder("<"), copy=False)
    with atomic_output(out, suffix=".nrrd") as tmp:
        nrrd.write(str(tmp), data, header, index_order="F", compression_level=6)
    return out

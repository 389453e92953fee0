"""NIfTI (.nii, .nii.gz) reading and writing with nibabel, geometry kept exactly.

Reading follows nibabel: the affine is the sform when its code is set, else the qform,
else the fall-back from pixdims (`header.get_best_affine()`). ``scl_slope``/``scl_inter``
are applied (the array is float then). The header travels in
``Volume.metadata["nifti_header"]`` so that writing the same volume (or labels drawn on
it) keeps qform/sform and their codes.

Reading is defensive (issue 11): the header is parsed and checked field by field before
any voxel is read, so a hostile or corrupt file is refused in milliseconds with one line
that names it, never with a traceback, a silent change of values, or gigabytes of RAM:

* the declared data size must fit in the file (``.nii``), in what a gzip stream of that
  size can possibly inflate to, and in half of this machine's RAM;
* ``.nii.gz`` files are inflated once, into a buffer of exactly the declared size; more
  or fewer bytes than declared, a bad CRC-32 or a wrong length in the gzip trailer are
  refused (nibabel alone would load altered voxels);
* values are never changed: NaN and ±Inf stay as stored; complex and RGB/RGBA data are
  refused rather than cut to one channel;
* the geometry must be finite and non-singular.

Whether a file is gzip-compressed is decided by its first bytes, not its name.
"""

from __future__ import annotations

import errno
import gzip
import io
import math
import os
import re
import stat
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling

from napari_unet.errors import VolumeReadError
from napari_unet.io.volume import Volume
from napari_unet.outputs import atomic_output

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: NIfTI qform/sform code for coordinates from the scanner (DICOM-derived data).
SCANNER_ANAT = 1

#: Datatype codes read as they are (real-valued scalars).
_DTYPES = {
    2: np.uint8,
    4: np.int16,
    8: np.int32,
    16: np.float32,
    64: np.float64,
    256: np.int8,
    512: np.uint16,
    768: np.uint32,
    1024: np.int64,
    1280: np.uint64,
}
_SCALAR_ONLY = "napari-unet reads scalar (grey-level) images only"
#: Known datatype codes that are refused, with what they hold and what to do.
_REFUSED_DTYPES = {
    0: "an unknown datatype (DT_UNKNOWN, code 0)",
    1: "1-bit binary data (DT_BINARY, code 1), which are not supported",
    32: f"complex64 data (code 32); {_SCALAR_ONLY}: save the magnitude or real part first",
    1792: f"complex128 data (code 1792); {_SCALAR_ONLY}: save the magnitude or real part first",
    2048: f"complex256 data (code 2048); {_SCALAR_ONLY}: save the magnitude or real part first",
    128: f"RGB colour data (RGB24, code 128); {_SCALAR_ONLY}: convert to grey first",
    2304: f"RGBA colour data (RGBA32, code 2304); {_SCALAR_ONLY}: convert to grey first",
    1536: "float128 data (code 1536), which are not supported: save as float64",
    255: "datatype DT_ALL (code 255), which is not a voxel type",
}
#: Valid qform/sform codes (unknown, scanner, aligned, Talairach, MNI152, template).
_XFORM_CODES = range(6)
#: Inflating cannot multiply a size by more than this (the limit of deflate).
_MAX_DEFLATE_RATIO = 1032
#: Bytes inflated per step into the voxel buffer (bounds the temporary copies).
_GZIP_STEP = 16 * 2**20
_GZIP_MAGIC = b"\x1f\x8b"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass
class _Layout:
    """What the header promises, checked before any voxel is read."""

    klass: type[nib.Nifti1Image]
    header: nib.Nifti1Header
    shape: tuple[int, ...]  # as stored (1 to 7 axes)
    shape3: tuple[int, int, int]  # as returned
    dtype: np.dtype  # with the file's byte order
    offset: int
    nbytes: int  # voxel data

    @property
    def total(self) -> int:
        return self.offset + self.nbytes


def is_nifti_path(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def load_nifti(path: str | os.PathLike, *, modality: str | None = None) -> Volume:
    """Read a 3D NIfTI-1 or NIfTI-2 file.

    Args:
        path: a .nii or .nii.gz file.
        modality: "CT", "MR" or "other"; guessed from the header and values when None.

    Returns:
        A Volume, array layout ``(i, j, k)`` as stored, RAS affine in mm, values exactly
        as stored (scaled by ``scl_slope``/``scl_inter`` when set; NaN and Inf kept).

    Raises:
        VolumeReadError: one line naming the file and the problem: missing, unreadable,
            truncated, corrupt (incl. a gzip CRC or length mismatch), larger than the
            memory allows, a header field out of range, a singular or non-finite
            geometry, complex or RGB data, or not one 3D volume.
    """
    path = Path(path)
    try:
        with _open_regular(path) as f:
            compressed = f.read(2) == _GZIP_MAGIC
            f.seek(0)
            if compressed:
                header, data = _read_gzip(path, f)
            else:
                header, data = _read_plain(path, f)
    except VolumeReadError:
        raise
    except EOFError as e:
        raise _error(path, f"is truncated (the gzip stream ends early: {_describe(e)})") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise _error(path, f"is corrupt (gzip: {_describe(e)})") from None
    except OSError as e:
        raise _error(path, f"cannot be read ({_describe(e)})") from None
    array = _voxels(header, data)
    metadata = {
        "nifti_header": header.header,
        "qform_code": int(header.header["qform_code"]),
        "sform_code": int(header.header["sform_code"]),
        "description": header.header["descrip"].tobytes().split(b"\0")[0].decode("latin-1"),
    }
    return Volume(
        array=array,
        affine=header.header.get_best_affine(),
        modality=modality or _guess_modality(array, metadata["description"]),
        metadata=metadata,
        source=str(path),
    )


def _error(path: Path, problem: str) -> VolumeReadError:
    """A VolumeReadError of one printable line: ``PATH: PROBLEM``."""
    text = _CONTROL.sub(" ", f"{path}: {problem}")
    return VolumeReadError(text.strip())


def _describe(e: BaseException) -> str:
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return " ".join(_CONTROL.sub(" ", text or type(e).__name__).split())


def _open_regular(path: Path):
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _error(path, "is a loop of symbolic links") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise _error(path, "file not found") from None
        raise _error(path, f"cannot be read ({_describe(e)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _error(path, "is a folder, not a NIfTI file")
    if not stat.S_ISREG(st.st_mode):
        raise _error(path, "is not a regular file (a device, pipe or socket)")
    try:
        return open(path, "rb")  # the caller's with-block closes it
    except OSError as e:
        raise _error(path, f"cannot be read ({_describe(e)})") from None


def _read_exact(stream, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_into(stream, buffer: np.ndarray, step: int) -> int:
    view = memoryview(buffer).cast("B")
    got = 0
    while got < len(view):
        n = stream.readinto(view[got : got + step])
        if not n:
            break
        got += n
    return got


def _read_plain(path: Path, f) -> tuple[_Layout, np.ndarray]:
    layout, block = _read_header(path, f)
    size = os.fstat(f.fileno()).st_size
    if size < layout.total:
        raise _error(
            path,
            f"is truncated: its header declares {_what(layout)} of voxel data from byte "
            f"{layout.offset}, but the file holds only {size} bytes",
        )
    _check_budget(path, layout)
    head = block + _read_exact(f, layout.offset - len(block))
    _read_extensions(path, layout, head)
    data = np.empty(layout.nbytes, np.uint8)
    got = _read_into(f, data, max(layout.nbytes, 1))
    if got != layout.nbytes:  # the file shrank while being read
        raise _error(path, f"is truncated: {got} of {layout.nbytes} bytes of voxel data")
    return layout, data


def _read_gzip(path: Path, f) -> tuple[_Layout, np.ndarray]:
    size = os.fstat(f.fileno()).st_size
    stream = gzip.GzipFile(fileobj=f, mode="rb")
    layout, block = _read_header(path, stream)
    if layout.total > _MAX_DEFLATE_RATIO * size + 1024:
        raise _error(
            path,
            f"is truncated or corrupt: its header declares {_what(layout)}, which a gzip "
            f"file of {size} bytes cannot hold",
        )
    _check_budget(path, layout)
    head = block + _read_exact(stream, layout.offset - len(block))
    if len(head) < layout.offset:
        raise _error(path, f"is truncated: it ends inside the header ({len(head)} bytes)")
    _read_extensions(path, layout, head)
    data = np.empty(layout.nbytes, np.uint8)
    got = _read_into(stream, data, _GZIP_STEP)
    if got != layout.nbytes:
        raise _error(
            path,
            f"is truncated: it holds {got} of the {layout.nbytes} bytes of voxel data its "
            f"header declares ({_what(layout)})",
        )
    if stream.read(1):  # also reaches the end: the CRC-32 and length are checked there
        raise _error(
            path,
            f"is corrupt: it holds more data than its header declares ({_what(layout)})",
        )
    return layout, data


def _what(layout: _Layout) -> str:
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


def _check_budget(path: Path, layout: _Layout) -> None:
    budget = _memory_budget()
    if layout.total > budget:
        raise _error(
            path,
            f"declares {_what(layout)} of voxel data, more than half of this machine's "
            f"memory ({_size(budget)} allowed): refused before reading",
        )


def _read_header(path: Path, stream) -> tuple[_Layout, bytes]:
    """Parse and check the fixed header (NIfTI-1: 348 bytes, NIfTI-2: 540); its bytes."""
    first = _read_exact(stream, 4)
    if len(first) < 4:
        raise _error(
            path,
            "is empty" if not first else f"is truncated: {len(first)} byte(s), not a header",
        )
    sizes = {int.from_bytes(first, "little"): "<", int.from_bytes(first, "big"): ">"}
    if 348 in sizes:
        klass, endian = nib.Nifti1Image, sizes[348]
    elif 540 in sizes:
        klass, endian = nib.Nifti2Image, sizes[540]
    else:
        raise _error(
            path,
            f"not a NIfTI file (it starts with bytes {first.hex(' ')}; a NIfTI-1 or NIfTI-2 "
            "header starts with its size, 348 or 540)",
        )
    hsize = klass.header_class.sizeof_hdr
    block = first + _read_exact(stream, hsize - 4)
    if len(block) < hsize:
        raise _error(path, f"is truncated: it ends inside the header ({len(block)} bytes)")
    _check_magic(path, klass, block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = klass.header_class(binaryblock=block, endianness=endian, check=False)
    return _check_header(path, klass, header), block


def _check_magic(path: Path, klass: type, block: bytes) -> None:
    if klass is nib.Nifti1Image:
        magic, rest = block[344:348], b""
        single, pair = b"n+1\0", b"ni1\0"
    else:
        magic, rest = block[4:8], block[8:12]
        single, pair = b"n+2\0", b"ni2\0"
    name = "NIfTI-1" if klass is nib.Nifti1Image else "NIfTI-2"
    if magic == pair:
        raise _error(
            path,
            f"is a {name} header whose voxels are in a separate .img file (magic "
            f"{magic[:3].decode()!r}); napari-unet reads single .nii/.nii.gz files: "
            "convert the .hdr/.img pair first",
        )
    if magic != single:
        raise _error(
            path,
            f"not a NIfTI file: a {name} header needs the magic {single[:3].decode()!r}, "
            f"this one has {magic!r}",
        )
    if rest not in (b"", b"\r\n\x1a\n", b"\0\0\0\0"):
        raise _error(path, f"is corrupt: the NIfTI-2 magic is followed by {rest!r}")


def _check_header(path: Path, klass: type, header: nib.Nifti1Header) -> _Layout:
    dim = [int(d) for d in header["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise _error(path, f"header dim[0] (the number of axes) is {ndim}; it must be 1 to 7")
    shape = tuple(dim[1 : ndim + 1])
    if any(d < 1 for d in shape):
        raise _error(path, f"header declares the shape {shape}: every axis needs at least 1 voxel")
    code = int(header["datatype"])
    if code in _REFUSED_DTYPES:
        raise _error(path, f"holds {_REFUSED_DTYPES[code]}")
    if code not in _DTYPES:
        raise _error(path, f"header datatype {code} is not a NIfTI datatype code")
    dtype = np.dtype(_DTYPES[code]).newbyteorder(header.endianness)
    if int(header["bitpix"]) != dtype.itemsize * 8:
        raise _error(
            path,
            f"is corrupt: bitpix is {int(header['bitpix'])} but datatype {dtype.name} has "
            f"{dtype.itemsize * 8} bits a voxel",
        )
    shape3 = _shape_3d(path, shape)
    offset = _check_offset(path, klass, header)
    _check_scaling(path, header)
    _check_geometry(path, header)
    nbytes = math.prod(shape) * dtype.itemsize
    return _Layout(klass, header, shape, shape3, dtype, offset, nbytes)


def _shape_3d(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3D shape of one volume (trailing singleton axes dropped), or a refusal."""
    core = list(shape)
    while len(core) > 3 and core[-1] == 1:
        core.pop()
    if len(core) == 2:
        core.append(1)
    if len(core) == 4:
        raise _error(
            path,
            f"4D image with {core[3]} volumes; napari-unet segments one 3D "
            "volume: split it first (e.g. nibabel.funcs.four_to_three or fslsplit)",
        )
    if len(core) != 3:
        text = "×".join(map(str, shape))
        raise _error(path, f"{len(shape)}D image ({text}); napari-unet needs one 3D volume")
    return tuple(core)  # type: ignore[return-value]


def _check_offset(path: Path, klass: type, header: nib.Nifti1Header) -> int:
    value = float(header["vox_offset"])
    least = klass.header_class.single_vox_offset
    if not math.isfinite(value) or value != int(value):
        raise _error(path, f"is corrupt: vox_offset (where the voxels start) is {value:g}")
    if value < least:
        raise _error(
            path,
            f"is corrupt: vox_offset {value:g} puts the voxels inside the header (it must "
            f"be at least {least})",
        )
    return int(value)


def _check_scaling(path: Path, header: nib.Nifti1Header) -> None:
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    if math.isinf(slope):
        raise _error(path, f"is corrupt: scl_slope (the value scaling) is {slope}")
    if slope != 0 and math.isfinite(slope) and not math.isfinite(inter):
        raise _error(path, f"is corrupt: scl_inter (the value offset) is {inter}")


def _check_geometry(path: Path, header: nib.Nifti1Header) -> None:
    """Refuse non-finite or singular geometry; apply nibabel's harmless fixes."""
    pixdim = header["pixdim"]
    if not np.isfinite(pixdim[:4]).all():
        values = ", ".join(f"{v:g}" for v in pixdim[:4])
        raise _error(path, f"is corrupt: pixdim (qfac and voxel sizes) holds {values}")
    for name in ("qform_code", "sform_code"):
        code = int(header[name])
        if code not in _XFORM_CODES:
            raise _error(path, f"is corrupt: {name} is {code}; NIfTI codes are 0 to 5")
    # As nibabel does on loading: qfac other than ±1 means 1, voxel sizes are unsigned.
    if pixdim[0] not in (-1, 1):
        pixdim[0] = 1
    pixdim[1:4] = np.abs(pixdim[1:4])
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code:
        rows = np.stack([header["srow_x"], header["srow_y"], header["srow_z"]])
        if not np.isfinite(rows).all():
            raise _error(path, f"is corrupt: the sform (code {sform_code}) is not finite")
    if qform_code:
        quat = [float(header[k]) for k in ("quatern_b", "quatern_c", "quatern_d")]
        offs = [float(header[k]) for k in ("qoffset_x", "qoffset_y", "qoffset_z")]
        if not np.isfinite(quat + offs).all():
            raise _error(path, f"is corrupt: the qform (code {qform_code}) is not finite")
    if sform_code:
        used = f"sform (code {sform_code})"
    elif qform_code:
        used = f"qform (code {qform_code})"
    else:
        used = "affine from pixdim (no qform or sform)"
    if not sform_code and np.any(pixdim[1:4] == 0):
        raise _error(
            path,
            f"has a singular geometry: the {used} has a zero voxel size in pixdim "
            f"({', '.join(f'{v:g}' for v in pixdim[1:4])})",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            affine = header.get_best_affine()
    except (ValueError, nib.spatialimages.HeaderDataError) as e:
        raise _error(path, f"is corrupt: the {used} is invalid ({_describe(e)})") from None
    if sform_code:
        zero = pixdim[1:4] == 0
        pixdim[1:4][zero] = 1  # unused voxel sizes: as nibabel fixes them
    _check_affine(path, affine, used)


def _check_affine(path: Path, affine: np.ndarray, used: str) -> None:
    matrix = affine[:3, :3]
    if not np.isfinite(affine).all():
        raise _error(path, f"is corrupt: the {used} is not finite")
    with np.errstate(all="ignore"):
        singular = np.linalg.svd(matrix, compute_uv=False)
    if not np.isfinite(singular).all() or not singular[0] > 0 or singular[-1] <= 1e-6 * singular[0]:
        columns = "; ".join(", ".join(f"{v:g}" for v in matrix[:, i]) for i in range(3))
        raise _error(
            path,
            f"has a singular geometry: the {used} has a zero or dependent column "
            f"({columns}), so voxel sizes and orientation cannot be trusted",
        )


def _read_extensions(path: Path, layout: _Layout, head: bytes) -> None:
    """Attach the header extensions (between the header and the voxels), if any."""
    hsize = layout.klass.header_class.sizeof_hdr
    if len(head) <= hsize or head[hsize] == 0:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = layout.klass.header_class.from_fileobj(io.BytesIO(head), check=False)
    except Exception as e:  # third-party parsers of untrusted bytes (DICOM, AFNI XML …)
        problem = f"is corrupt: its header extensions are unreadable ({_describe(e)})"
        raise _error(path, problem) from None
    layout.header.extensions = full.extensions


def _voxels(layout: _Layout, data: np.ndarray) -> np.ndarray:
    """The voxel array in native byte order, 3D, scaled like nibabel; values unchanged."""
    array = np.ndarray(layout.shape, dtype=layout.dtype, buffer=data, order="F")
    if not layout.dtype.isnative:
        native = layout.dtype.newbyteorder("=")
        array = array.byteswap(inplace=True).view(native)
    array = array.reshape(layout.shape3, order="F")
    slope, inter = layout.header.get_slope_inter()
    if slope is not None:
        array = apply_read_scaling(array, np.asarray(slope), np.asarray(inter))
    raw = layout.dtype
    if array.dtype == np.float64 and raw.kind in "iu" and raw.itemsize <= 2:
        array = array.astype(np.float32)  # scaled 8/16-bit data: float32 is exact, half the RAM
    return array


def _guess_modality(array: np.ndarray, description: str) -> str:
    words = description.upper()
    if "CT" in words.split() or "HU" in words.split():
        return "CT"
    if any(w in words for w in ("MR", "T1", "T2", "FLAIR", "DWI")):
        return "MR"
    if not array.size:
        return "other"
    if array.dtype.kind == "f":  # NaN and ±Inf say nothing about the modality
        lowest = float(np.min(array, where=np.isfinite(array), initial=np.inf))
    else:
        lowest = float(array.min())
    if lowest <= -500:  # air at about -1000 HU
        return "CT"
    return "other"


def save_nifti(volume: Volume, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write a Volume (image or labels) as NIfTI in its exact geometry.

    The file gets ``volume.affine``. NIfTI stores it as float32: a float64 affine from
    DICOM is kept to about 1e-6 mm, one read from NIfTI bit for bit. When the volume
    came from a NIfTI file and its affine is unchanged, the original qform and sform
    (and their codes) are kept byte for byte; otherwise both are set to the affine with
    code 1 (scanner). The data are written in the array's dtype with no scaling
    (bool → uint8). The file appears atomically (`napari_unet.outputs.atomic_output`):
    a temporary file in the same folder is flushed to disk and renamed over ``path``,
    and gets the replaced file's mode (or the umask's).

    Raises:
        InputError: ``path`` exists and ``overwrite`` is False, has a wrong suffix, or
            cannot be written (folder missing or read-only, disk full).
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise VolumeReadError(f"{path}: output must end in .nii or .nii.gz")
    if path.exists() and not overwrite:
        raise VolumeReadError(f"{path}: already exists (choose another name or overwrite)")
    img = to_nifti_image(volume)
    suffix = ".nii.gz" if str(path).lower().endswith(".gz") else ".nii"
    with atomic_output(path, suffix=suffix) as tmp:
        nib.save(img, tmp)
    return path


def to_nifti_image(volume: Volume) -> nib.Nifti1Image:
    """The nibabel image for a Volume (see `save_nifti`)."""
    data = np.asarray(volume.array)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif data.dtype == np.int64 and data.size and _fits(data, np.int32):
        data = data.astype(np.int32)
    header = volume.metadata.get("nifti_header")
    keep_header = isinstance(header, nib.Nifti1Header) and np.allclose(
        header.get_best_affine(), volume.affine, rtol=0, atol=1e-6
    )
    if keep_header:
        hdr = header.copy()
        hdr.set_data_dtype(data.dtype)
        hdr.set_data_shape(data.shape)
        img = nib.Nifti1Image(data, None, header=hdr)
    else:
        img = nib.Nifti1Image(data, volume.affine)
        img.set_qform(volume.affine, code=SCANNER_ANAT)
        img.set_sform(volume.affine, code=SCANNER_ANAT)
        img.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header.set_xyzt_units("mm", "sec")
    return img


def _fits(data: np.ndarray, dtype: type) -> bool:
    info = np.iinfo(dtype)
    return info.min <= int(data.min()) and int(data.max()) <= info.max

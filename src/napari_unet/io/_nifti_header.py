"""The NIfTI-1/NIfTI-2 fixed header, parsed and checked field by field before any voxel.

`read_header` reads the 348- or 540-byte header from a stream (plain or gzip) and refuses,
with one line that names the file (`error`), what `napari_unet.io.nifti.load_nifti` must
not read: a wrong size or magic, a .hdr/.img pair, a datatype that is not a real-valued
scalar (complex, RGB/RGBA, binary, float128), a dim or bitpix out of range, more than one
3D volume, a vox_offset inside the header, non-finite scaling, and a non-finite or
singular geometry (pixdim, qform, sform). What it accepts is a `Layout`: what the header
promises (shape, dtype with byte order, where the voxels start and how many bytes they
take). `read_extensions` attaches the header extensions once the bytes up to the voxels
are read.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_unet.errors import VolumeReadError

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
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass
class Layout:
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


def error(path: Path, problem: str) -> VolumeReadError:
    """A VolumeReadError of one printable line: ``PATH: PROBLEM``."""
    text = _CONTROL.sub(" ", f"{path}: {problem}")
    return VolumeReadError(text.strip())


def describe(e: BaseException) -> str:
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return " ".join(_CONTROL.sub(" ", text or type(e).__name__).split())


def read_exact(stream, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_header(path: Path, stream) -> tuple[Layout, bytes]:
    """Parse and check the fixed header (NIfTI-1: 348 bytes, NIfTI-2: 540); its bytes."""
    first = read_exact(stream, 4)
    if len(first) < 4:
        raise error(
            path,
            "is empty" if not first else f"is truncated: {len(first)} byte(s), not a header",
        )
    sizes = {int.from_bytes(first, "little"): "<", int.from_bytes(first, "big"): ">"}
    if 348 in sizes:
        klass, endian = nib.Nifti1Image, sizes[348]
    elif 540 in sizes:
        klass, endian = nib.Nifti2Image, sizes[540]
    else:
        raise error(
            path,
            f"not a NIfTI file (it starts with bytes {first.hex(' ')}; a NIfTI-1 or NIfTI-2 "
            "header starts with its size, 348 or 540)",
        )
    hsize = klass.header_class.sizeof_hdr
    block = first + read_exact(stream, hsize - 4)
    if len(block) < hsize:
        raise error(path, f"is truncated: it ends inside the header ({len(block)} bytes)")
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
        raise error(
            path,
            f"is a {name} header whose voxels are in a separate .img file (magic "
            f"{magic[:3].decode()!r}); napari-unet reads single .nii/.nii.gz files: "
            "convert the .hdr/.img pair first",
        )
    if magic != single:
        raise error(
            path,
            f"not a NIfTI file: a {name} header needs the magic {single[:3].decode()!r}, "
            f"this one has {magic!r}",
        )
    if rest not in (b"", b"\r\n\x1a\n", b"\0\0\0\0"):
        raise error(path, f"is corrupt: the NIfTI-2 magic is followed by {rest!r}")


def _check_header(path: Path, klass: type, header: nib.Nifti1Header) -> Layout:
    dim = [int(d) for d in header["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise error(path, f"header dim[0] (the number of axes) is {ndim}; it must be 1 to 7")
    shape = tuple(dim[1 : ndim + 1])
    if any(d < 1 for d in shape):
        raise error(path, f"header declares the shape {shape}: every axis needs at least 1 voxel")
    code = int(header["datatype"])
    if code in _REFUSED_DTYPES:
        raise error(path, f"holds {_REFUSED_DTYPES[code]}")
    if code not in _DTYPES:
        raise error(path, f"header datatype {code} is not a NIfTI datatype code")
    dtype = np.dtype(_DTYPES[code]).newbyteorder(header.endianness)
    if int(header["bitpix"]) != dtype.itemsize * 8:
        raise error(
            path,
            f"is corrupt: bitpix is {int(header['bitpix'])} but datatype {dtype.name} has "
            f"{dtype.itemsize * 8} bits a voxel",
        )
    shape3 = _shape_3d(path, shape)
    offset = _check_offset(path, klass, header)
    _check_scaling(path, header)
    _check_geometry(path, header)
    nbytes = math.prod(shape) * dtype.itemsize
    return Layout(klass, header, shape, shape3, dtype, offset, nbytes)


def _shape_3d(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3D shape of one volume (trailing singleton axes dropped), or a refusal."""
    core = list(shape)
    while len(core) > 3 and core[-1] == 1:
        core.pop()
    if len(core) == 2:
        core.append(1)
    if len(core) == 4:
        raise error(
            path,
            f"4D image with {core[3]} volumes; napari-unet segments one 3D "
            "volume: split it first (e.g. nibabel.funcs.four_to_three or fslsplit)",
        )
    if len(core) != 3:
        text = "×".join(map(str, shape))
        raise error(path, f"{len(shape)}D image ({text}); napari-unet needs one 3D volume")
    return tuple(core)  # type: ignore[return-value]


def _check_offset(path: Path, klass: type, header: nib.Nifti1Header) -> int:
    value = float(header["vox_offset"])
    least = klass.header_class.single_vox_offset
    if not math.isfinite(value) or value != int(value):
        raise error(path, f"is corrupt: vox_offset (where the voxels start) is {value:g}")
    if value < least:
        raise error(
            path,
            f"is corrupt: vox_offset {value:g} puts the voxels inside the header (it must "
            f"be at least {least})",
        )
    return int(value)


def _check_scaling(path: Path, header: nib.Nifti1Header) -> None:
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    if math.isinf(slope):
        raise error(path, f"is corrupt: scl_slope (the value scaling) is {slope}")
    if slope != 0 and math.isfinite(slope) and not math.isfinite(inter):
        raise error(path, f"is corrupt: scl_inter (the value offset) is {inter}")


def _check_geometry(path: Path, header: nib.Nifti1Header) -> None:
    """Refuse non-finite or singular geometry; apply nibabel's harmless fixes."""
    pixdim = header["pixdim"]
    if not np.isfinite(pixdim[:4]).all():
        values = ", ".join(f"{v:g}" for v in pixdim[:4])
        raise error(path, f"is corrupt: pixdim (qfac and voxel sizes) holds {values}")
    for name in ("qform_code", "sform_code"):
        code = int(header[name])
        if code not in _XFORM_CODES:
            raise error(path, f"is corrupt: {name} is {code}; NIfTI codes are 0 to 5")
    # As nibabel does on loading: qfac other than ±1 means 1, voxel sizes are unsigned.
    if pixdim[0] not in (-1, 1):
        pixdim[0] = 1
    pixdim[1:4] = np.abs(pixdim[1:4])
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code:
        rows = np.stack([header["srow_x"], header["srow_y"], header["srow_z"]])
        if not np.isfinite(rows).all():
            raise error(path, f"is corrupt: the sform (code {sform_code}) is not finite")
    if qform_code:
        quat = [float(header[k]) for k in ("quatern_b", "quatern_c", "quatern_d")]
        offs = [float(header[k]) for k in ("qoffset_x", "qoffset_y", "qoffset_z")]
        if not np.isfinite(quat + offs).all():
            raise error(path, f"is corrupt: the qform (code {qform_code}) is not finite")
    if sform_code:
        used = f"sform (code {sform_code})"
    elif qform_code:
        used = f"qform (code {qform_code})"
    else:
        used = "affine from pixdim (no qform or sform)"
    if not sform_code and np.any(pixdim[1:4] == 0):
        raise error(
            path,
            f"has a singular geometry: the {used} has a zero voxel size in pixdim "
            f"({', '.join(f'{v:g}' for v in pixdim[1:4])})",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            affine = header.get_best_affine()
    except (ValueError, nib.spatialimages.HeaderDataError) as e:
        raise error(path, f"is corrupt: the {used} is invalid ({describe(e)})") from None
    if sform_code:
        zero = pixdim[1:4] == 0
        pixdim[1:4][zero] = 1  # unused voxel sizes: as nibabel fixes them
    _check_affine(path, affine, used)


def _check_affine(path: Path, affine: np.ndarray, used: str) -> None:
    matrix = affine[:3, :3]
    if not np.isfinite(affine).all():
        raise error(path, f"is corrupt: the {used} is not finite")
    with np.errstate(all="ignore"):
        singular = np.linalg.svd(matrix, compute_uv=False)
    if not np.isfinite(singular).all() or not singular[0] > 0 or singular[-1] <= 1e-6 * singular[0]:
        columns = "; ".join(", ".join(f"{v:g}" for v in matrix[:, i]) for i in range(3))
        raise error(
            path,
            f"has a singular geometry: the {used} has a zero or dependent column "
            f"({columns}), so voxel sizes and orientation cannot be trusted",
        )


def read_extensions(path: Path, layout: Layout, head: bytes) -> None:
    """Attach the header extensions (between the header and the voxels), if any."""
    hsize = layout.klass.header_class.sizeof_hdr
    if len(head) <= hsize or head[hsize] == 0:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = layout.klass.header_class.from_fileobj(io.BytesIO(head), check=False)
    except Exception as e:  # third-party parsers of untrusted bytes (DICOM, AFNI XML …)
        problem = f"is corrupt: its header extensions are unreadable ({describe(e)})"
        raise error(path, problem) from None
    layout.header.extensions = full.extensions

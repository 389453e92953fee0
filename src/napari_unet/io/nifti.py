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

Where: `_nifti_header` parses and checks the header (datatype, shape, offset, scaling,
geometry); `_nifti_stream` opens the file and reads its bytes with every size checked;
this module turns them into a `Volume` and writes volumes back.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling

from napari_unet.errors import VolumeReadError
from napari_unet.io._nifti_header import Layout
from napari_unet.io._nifti_stream import read_nifti_bytes
from napari_unet.io.volume import Volume
from napari_unet.outputs import atomic_output

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: NIfTI qform/sform code for coordinates from the scanner (DICOM-derived data).
SCANNER_ANAT = 1


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
    layout, data = read_nifti_bytes(path)
    array = _voxels(layout, data)
    metadata = {
        "nifti_header": layout.header,
        "qform_code": int(layout.header["qform_code"]),
        "sform_code": int(layout.header["sform_code"]),
        "description": layout.header["descrip"].tobytes().split(b"\0")[0].decode("latin-1"),
    }
    return Volume(
        array=array,
        affine=layout.header.get_best_affine(),
        modality=modality or _guess_modality(array, metadata["description"]),
        metadata=metadata,
        source=str(path),
    )


def _voxels(layout: Layout, data: np.ndarray) -> np.ndarray:
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

"""NIfTI (.nii, .nii.gz) reading and writing with nibabel, geometry kept exactly.

Reading follows nibabel: the affine is the sform when its code is set, else the qform,
else the fall-back from pixdims (`img.affine`). ``scl_slope``/``scl_inter`` are applied
(the array is float then). The header travels in ``Volume.metadata["nifti_header"]`` so
that writing the same volume (or labels drawn on it) keeps qform/sform and their codes.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_unet.errors import VolumeReadError
from napari_unet.io.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: NIfTI qform/sform code for coordinates from the scanner (DICOM-derived data).
SCANNER_ANAT = 1


def is_nifti_path(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def load_nifti(path: str | os.PathLike, *, modality: str | None = None) -> Volume:
    """Read a 3D NIfTI file.

    Args:
        path: a .nii or .nii.gz file.
        modality: "CT", "MR" or "other"; guessed from the header and values when None.

    Returns:
        A Volume, array layout ``(i, j, k)`` as stored, RAS affine in mm.

    Raises:
        VolumeReadError: missing, unreadable, truncated or corrupt file, or not 3D.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeReadError(f"{path}: file not found")
    try:
        img = nib.load(path)
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise VolumeReadError(f"{path}: not a NIfTI image ({type(img).__name__})")
        array = np.asanyarray(img.dataobj)
    except VolumeReadError:
        raise
    except (EOFError, zlib.error, OSError) as e:
        raise VolumeReadError(f"{path}: file is truncated or corrupt ({e})") from e
    except (nib.filebasedimages.ImageFileError, ValueError, TypeError) as e:
        raise VolumeReadError(f"{path}: not a readable NIfTI file ({e})") from e
    array = _as_3d(array, path)
    raw_dtype = img.header.get_data_dtype()
    if array.dtype == np.float64 and raw_dtype.kind in "iu" and raw_dtype.itemsize <= 2:
        array = array.astype(np.float32)  # scaled 8/16-bit data: float32 is exact, half the RAM
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        array = np.nan_to_num(array, copy=False)
    header = img.header.copy()
    metadata = {
        "nifti_header": header,
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "description": header["descrip"].tobytes().rstrip(b"\0").decode("latin-1"),
    }
    return Volume(
        array=array,
        affine=img.affine,
        modality=modality or _guess_modality(array, metadata["description"]),
        metadata=metadata,
        source=str(path),
    )


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 2:
        return array[:, :, np.newaxis]
    if array.ndim == 4 and array.shape[3] == 1:
        return array[..., 0]
    if array.ndim == 4:
        raise VolumeReadError(
            f"{path}: 4D image with {array.shape[3]} volumes; napari-unet segments one 3D "
            "volume: split it first (e.g. nibabel.funcs.four_to_three or fslsplit)"
        )
    if array.ndim != 3:
        raise VolumeReadError(f"{path}: {array.ndim}D image; napari-unet needs a 3D volume")
    return array


def _guess_modality(array: np.ndarray, description: str) -> str:
    words = description.upper()
    if "CT" in words.split() or "HU" in words.split():
        return "CT"
    if any(w in words for w in ("MR", "T1", "T2", "FLAIR", "DWI")):
        return "MR"
    if array.size and float(array.min()) <= -500:  # air at about -1000 HU
        return "CT"
    return "other"


def save_nifti(volume: Volume, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write a Volume (image or labels) as NIfTI in its exact geometry.

    The file gets ``volume.affine``. NIfTI stores it as float32: a float64 affine from
    DICOM is kept to about 1e-6 mm, one read from NIfTI bit for bit. When the volume
    came from a NIfTI file and its affine is unchanged, the original qform and sform
    (and their codes) are kept byte for byte; otherwise both are set to the affine with
    code 1 (scanner). The data are written in the array's dtype with no scaling
    (bool → uint8). The file appears atomically: a temporary file in the same folder is
    renamed over ``path``, and gets the replaced file's mode (or the umask's).

    Raises:
        InputError: ``path`` exists and ``overwrite`` is False, or has a wrong suffix.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise VolumeReadError(f"{path}: output must end in .nii or .nii.gz")
    if path.exists() and not overwrite:
        raise VolumeReadError(f"{path}: already exists (choose another name or overwrite)")
    img = to_nifti_image(volume)
    suffix = ".nii.gz" if str(path).lower().endswith(".gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent or ".")
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _file_mode(path: Path) -> int:
    """The mode a new file gets (umask honoured), or the replaced file's own mode."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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

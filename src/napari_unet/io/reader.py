"""`load_volume`: one entry point for every image the package accepts."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from napari_unet.errors import VolumeReadError
from napari_unet.io.nifti import is_nifti_path, load_nifti
from napari_unet.io.volume import Volume


def load_volume(path: str | os.PathLike, *, series_uid: str | None = None) -> Volume:
    """Read a NIfTI file, a DICOM file or a DICOM folder (searched recursively).

    Args:
        path: the file or folder.
        series_uid: for DICOM folders holding several series, the one to load.

    Raises:
        VolumeReadError: the path is missing, of an unknown type or unreadable.
        MultipleSeriesError: a DICOM folder holds several series and none was chosen.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as e:
        reason = "no such file or folder" if e.errno == errno.ENOENT else e.strerror or str(e)
        raise VolumeReadError(f"{path}: {reason}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise VolumeReadError(f"{path}: not a regular file or folder (a pipe, socket or device)")
    if is_nifti_path(path):
        if stat.S_ISDIR(mode):
            raise VolumeReadError(f"{path}: is a folder, not a NIfTI file")
        return load_nifti(path)
    from napari_unet.io import dicom

    if path.is_dir() or dicom.is_dicom_path(path):
        return dicom.load_dicom(path, series_uid=series_uid)
    raise VolumeReadError(
        f"{path}: not a NIfTI (.nii, .nii.gz) or DICOM file, nor a folder of DICOM files"
    )

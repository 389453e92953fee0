"""`load_volume`: one entry point for every image or label map the package accepts."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from napari_unet.errors import VolumeReadError
from napari_unet.io.nifti import is_nifti_path, load_nifti
from napari_unet.io.volume import Volume

#: What `load_volume` reads, for messages.
ACCEPTED = (
    "a NIfTI (.nii, .nii.gz) or NRRD (.nrrd, .seg.nrrd) file, a DICOM file (image, SEG or "
    "RTSTRUCT) or a folder of DICOM files"
)


def load_volume(
    path: str | os.PathLike,
    *,
    series_uid: str | None = None,
    reference: str | os.PathLike | None = None,
) -> Volume:
    """Read a NIfTI or NRRD file, a DICOM file or folder, or a DICOM SEG / RTSTRUCT.

    Args:
        path: the file or folder.
        series_uid: for DICOM folders holding several series, the one to load.
        reference: for a DICOM SEG or RTSTRUCT, the folder of the series it was drawn
            on (found beside it when None); ignored for other inputs.

    Returns:
        The volume; a SEG, RTSTRUCT or Slicer segmentation is a label map on its grid,
        with ``metadata["segments"]`` (see `napari_unet.io.labelmap`).

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
    from napari_unet.io import nrrd

    if nrrd.is_nrrd_path(path):
        if stat.S_ISDIR(mode):
            raise VolumeReadError(f"{path}: is a folder, not an NRRD file")
        return nrrd.load_nrrd(path)
    from napari_unet.io import dicom
    from napari_unet.io._dicom_reference import object_kind

    if stat.S_ISREG(mode):
        kind = object_kind(path)
        if kind == "SEG":
            from napari_unet.io.dicom_seg import read_dicom_seg

            return read_dicom_seg(path, reference=reference)
        if kind == "RTSTRUCT":
            from napari_unet.io.rtstruct import read_rtstruct

            return read_rtstruct(path, reference=reference)
    if path.is_dir() and series_uid is not None:
        chosen = _object_file(path, series_uid)
        if chosen is not None:  # a SEG chosen among a folder's series: on its series' grid
            return load_volume(chosen, reference=reference or path)
    if path.is_dir() or dicom.is_dicom_path(path):
        return dicom.load_dicom(path, series_uid=series_uid)
    raise VolumeReadError(f"{path}: not {ACCEPTED}")


def _object_file(folder: Path, series_uid: str) -> Path | None:
    """The file of a DICOM SEG series ``series_uid`` in ``folder``, None for an image series."""
    from napari_unet.io.dicom import list_series

    for info in list_series(folder, skip_unreadable=True):
        if info.uid == series_uid and info.modality == "SEG" and info.number_of_files == 1:
            return Path(info.files[0])
    return None

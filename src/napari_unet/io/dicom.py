"""DICOM series reader: folder or file → `Volume` (RAS+ affine, array ``(i, j, k)``).

How a folder is read:

1. Every regular file under it (recursively, at most 32 folders deep and 100,000 entries;
   see `_dicom_scan`) is examined. Hidden files, ``DICOMDIR`` and files that are neither
   named ``.dcm`` nor have the ``DICM`` marker are skipped silently; FIFOs, sockets,
   devices, broken links and symbolic-link loops are skipped and listed in
   ``metadata["skipped_files"]``. The others are read with pydicom, headers only, and
   checked against the length of their pixel data (see `_dicom_header`): a truncated,
   malformed or inconsistent file stops the reading with its name, unless
   ``skip_unreadable=True``, which leaves it out and lists it in ``skipped_files``.
   Image files are grouped by SeriesInstanceUID; files without Rows (reports, RT plans,
   …) are not images and are left out.
2. One series is chosen: the only one, or ``series_uid``; several and no choice raises
   `MultipleSeriesError` listing them (`list_series` gives the same list up front).
3. Slices are sorted by ImagePositionPatient projected on the slice normal
   (row cosine × column cosine), never by InstanceNumber or file name. The step between
   slices comes from those positions, not SliceThickness; duplicates, missing slices and
   uneven steps raise `VolumeReadError` naming the folder, the slices and their positions.
4. Pixel data is read for that series only, and RescaleSlope/Intercept applied (CT in HU):
   float32 when they are not integers, else the stored dtype (no rescale) or the smallest
   of int16/int32/int64 that holds the values.

Geometry (see `_dicom_geometry`): ``array[i, j, k]`` is column ``i``, row ``j`` of slice
``k``; the affine maps ``(i, j, k, 1)`` to RAS+ mm (DICOM LPS with x and y negated). Its
third column is the measured step between slice positions, so a **gantry-tilted** series
gets an exactly sheared affine rather than an error; ``metadata["gantry_tilt_deg"]`` says
by how much. A single 2D image gives shape ``(columns, rows, 1)`` with SliceThickness (or
1 mm, flagged by ``metadata["slice_spacing_assumed"]``) as the third spacing.

A path to one file reads that file alone (one slice, or all frames of a multi-frame file).
Metadata holds no patient name, ID or dates; every text taken from the files (series
descriptions, modality, manufacturer, UIDs, error messages) goes through
`napari_unet.text.printable`, so no escape sequence reaches a terminal. Every refusal is
a one-line `VolumeReadError` naming the file or folder. A series whose stored values
would need more than `MAX_SERIES_BYTES` (8 GiB) is refused before any pixel is read.

Where: `_dicom_series` finds, chooses and checks the series (`SeriesInfo`,
`SeriesHeaders`, geometry); this module holds the entry points and reads the pixels.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from napari_unet import jobs
from napari_unet.errors import InputError, VolumeReadError
from napari_unet.io import _dicom_frames as fr
from napari_unet.io._dicom_header import has_preamble
from napari_unet.io._dicom_scan import Walk, scan_steps, walk_files
from napari_unet.io._dicom_series import (
    MAX_SERIES_BYTES,
    SeriesHeaders,
    SeriesInfo,
    headers_steps,
    malformed_file,
    sorted_series,
)
from napari_unet.io.volume import Volume
from napari_unet.text import printable
from napari_unet.typing import StopFn

__all__ = [
    "MAX_SERIES_BYTES",
    "SeriesHeaders",
    "SeriesInfo",
    "has_preamble",
    "is_dicom_path",
    "list_series",
    "load_dicom",
    "load_dicom_steps",
    "read_series_headers",
]

#: `is_dicom_path` looks at this many files of a folder at most.
_SNIFF_LIMIT = 256


def _printable_errors(job: jobs.Job) -> jobs.Job:
    """Run ``job``; an InputError leaves it as one printable line (paths and tags included)."""
    try:
        return (yield from job)
    except InputError as e:
        e.args = (printable(str(e)),)
        raise


def is_dicom_path(path: str | os.PathLike[str]) -> bool:
    """Cheap guess whether ``path`` is DICOM (for the napari reader); reads ≤ 132 bytes a file.

    A file counts when it is named ``*.dcm`` or has the ``DICM`` preamble; a folder when one
    of its first regular files (recursively, at most 256 looked at) has the preamble.
    FIFOs, sockets and devices are never opened.
    """
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except (OSError, ValueError):
        return False
    if stat.S_ISREG(mode):
        return p.suffix.lower() == ".dcm" or has_preamble(p)
    if stat.S_ISDIR(mode):
        try:
            for n, file in enumerate(walk_files(p, Walk(), max_entries=8 * _SNIFF_LIMIT)):
                if n >= _SNIFF_LIMIT:
                    break
                if has_preamble(file):
                    return True
        except VolumeReadError:
            return False
    return False


def list_series(path: str | os.PathLike[str], *, skip_unreadable: bool = False) -> list[SeriesInfo]:
    """The DICOM image series under ``path`` (a folder, searched recursively, or a file).

    Reads headers only. Series are ordered by SeriesNumber, then UID.
    ``skip_unreadable`` as in `load_dicom`.

    Raises:
        VolumeReadError: the path does not exist, holds no DICOM image, or holds a
            truncated or malformed DICOM file (unless ``skip_unreadable``).
    """
    job = scan_steps(Path(path), jobs.never, skip_unreadable)
    return sorted_series(jobs.run_job(_printable_errors(job)))


def load_dicom(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    stop: StopFn | None = None,
    skip_unreadable: bool = False,
) -> Volume:
    """Read one DICOM series into a Volume (drains `load_dicom_steps`).

    Args:
        path: a folder (searched recursively) or a single DICOM file.
        series_uid: the SeriesInstanceUID to read when the folder holds several.
        stop: returns True to cancel between files.
        skip_unreadable: leave out files of a folder that look like DICOM but are
            truncated, malformed or inconsistent with their pixel data (found while
            reading headers), listing them in ``metadata["skipped_files"]``, instead of
            refusing the folder. The rest must still form a regular series: a skipped
            slice in the middle is then reported as missing.

    Returns:
        The volume: array ``(i, j, k)`` = (column, row, slice along the normal), values
        after RescaleSlope/Intercept (HU for CT); affine voxel → RAS+ mm.

    Raises:
        MultipleSeriesError: several series and no ``series_uid``.
        VolumeReadError: anything that stops a faithful reading, with the file or folder.
        jobs.Cancelled: ``stop`` returned True.
    """
    job = load_dicom_steps(
        path, series_uid=series_uid, stop=stop or jobs.never, skip_unreadable=skip_unreadable
    )
    return jobs.run_job(job)


def load_dicom_steps(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    stop: StopFn = jobs.never,
    skip_unreadable: bool = False,
) -> jobs.Job[Volume]:
    """`load_dicom` as a long job: yields `jobs.Progress` (files done, files in all).

    Header reading yields ``message="reading DICOM headers"`` over all candidate files,
    then pixel reading ``message="reading DICOM pixel data"`` over the series' files.
    ``stop`` is checked before every file; when it returns True, `jobs.Cancelled` is
    raised. See `load_dicom` for arguments, result and errors.
    """
    return (
        yield from _printable_errors(_load_steps(Path(path), series_uid, stop, skip_unreadable))
    )


def read_series_headers(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    stop: StopFn | None = None,
    skip_unreadable: bool = False,
) -> SeriesHeaders:
    """Read one series' headers and geometry without its pixel data.

    Same arguments, checks and errors as `load_dicom` (less those of the pixel data).
    """
    job = _printable_errors(
        headers_steps(Path(path), series_uid, stop or jobs.never, skip_unreadable, pixels=False)
    )
    return jobs.run_job(job)


def _load_steps(
    root: Path, series_uid: str | None, stop: StopFn, skip_unreadable: bool
) -> jobs.Job[Volume]:
    series = yield from headers_steps(root, series_uid, stop, skip_unreadable, pixels=True)
    info, headers, sorted_frames = series.info, series.headers, series.frames
    frames, geo = sorted_frames, series.geometry
    slot = {(f.file_index, f.frame_index): k for k, f in enumerate(sorted_frames)}

    slopes = np.array([f.slope for f in sorted_frames])
    intercepts = np.array([f.intercept for f in sorted_frames])
    raw: np.ndarray | None = None
    for n, h in enumerate(headers):
        if stop():
            raise jobs.Cancelled(f"reading the DICOM series in {root} was cancelled")
        with malformed_file(h.path):
            try:
                ds = pydicom.dcmread(h.path)
            except Exception as e:
                raise VolumeReadError(f"{h.path}: cannot read the file: {e}") from e
            planes = fr.pixel_frames(ds, h.path)
            expected, multi = h.frames, fr.is_multiframe(h.ds)
            if planes.shape[0] != expected:
                raise VolumeReadError(f"{h.path}: {planes.shape[0]} frames, expected {expected}")
            ks = [slot[(n, f if multi else None)] for f in range(expected)]
            if ds.get("ModalityLUTSequence"):  # a lookup table instead of slope/intercept
                planes = apply_modality_lut(planes, ds)
                slopes[ks], intercepts[ks] = 1.0, 0.0
        if raw is None:
            raw = np.empty((len(frames), *planes.shape[1:]), dtype=planes.dtype)
        elif planes.dtype != raw.dtype:
            raw = raw.astype(np.result_type(raw, planes))
        raw[ks] = planes
        del ds
        yield jobs.Progress(n + 1, len(headers), "reading DICOM pixel data")
    assert raw is not None
    values = fr.apply_rescale(raw, slopes, intercepts)

    modality = info.modality if info.modality in ("CT", "MR") else "other"
    with malformed_file(headers[0].path):
        meta = fr.basic_metadata(headers[0].ds)
    uniform = np.all(slopes == slopes[0]) and np.all(intercepts == intercepts[0])
    meta.update(
        {
            "rescale_slope": float(slopes[0]) if uniform else slopes.tolist(),
            "rescale_intercept": float(intercepts[0]) if uniform else intercepts.tolist(),
            "slice_thickness": frames[0].thickness,
            "pixel_spacing": list(frames[0].pixel_spacing),
            "slice_positions_lps": [f.position.tolist() for f in sorted_frames],
            "slice_locations_mm": geo.normal_positions.tolist(),
            "gantry_tilt_deg": geo.tilt_deg,
            "slice_spacing_assumed": geo.assumed_spacing,
            "files": list(dict.fromkeys(str(headers[f.file_index].path) for f in sorted_frames)),
            "skipped_files": series.skipped,
        }
    )
    # (k, rows, columns) → (i, j, k): a transposed view, Fortran-ordered, no copy.
    return Volume(values.transpose(2, 1, 0), series.affine, modality, meta, str(root))

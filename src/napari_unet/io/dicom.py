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
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from napari_unet import jobs
from napari_unet.errors import InputError, MultipleSeriesError, VolumeReadError
from napari_unet.io import _dicom_frames as fr
from napari_unet.io._dicom_geometry import (
    ORIENTATION_ATOL,
    GeometryError,
    StackGeometry,
    lps_to_ras,
    slice_normal,
    stack_geometry,
)
from napari_unet.io._dicom_header import Header, has_preamble, quiet
from napari_unet.io._dicom_scan import Scan, Walk, scan_steps, walk_files
from napari_unet.io.volume import Volume
from napari_unet.text import printable
from napari_unet.typing import StopFn

__all__ = [
    "SeriesHeaders",
    "SeriesInfo",
    "is_dicom_path",
    "list_series",
    "load_dicom",
    "load_dicom_steps",
    "read_series_headers",
]

#: `is_dicom_path` looks at this many files of a folder at most.
_SNIFF_LIMIT = 256
#: A series whose stored values need more bytes than this is refused (8 GiB).
MAX_SERIES_BYTES = 2**33


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found by `list_series`.

    Attributes:
        uid: SeriesInstanceUID ("" when the files have none).
        description: SeriesDescription ("" when absent).
        modality: the DICOM Modality tag as written (e.g. "CT", "MR", "RTDOSE").
        number_of_files: files in the series.
        rows: Rows of the first file (image height, pixels).
        columns: Columns of the first file (image width, pixels).
        files: the files, ordered by InstanceNumber then name (not the slice order).
        series_number: SeriesNumber, None when absent.
        number_of_slices: image planes in all (files × frames).
    """

    uid: str
    description: str
    modality: str
    number_of_files: int
    rows: int
    columns: int
    files: tuple[str, ...] = field(repr=False)
    series_number: int | None = None
    number_of_slices: int = 0

    @property
    def label(self) -> str:
        """A line for a series picker, e.g. ``"3: T1 AX (MR, 120 slices)"``."""
        number = f"{self.series_number}: " if self.series_number is not None else ""
        description = self.description or "(no description)"
        n = self.number_of_slices or self.number_of_files
        return f"{number}{description} ({self.modality or '?'}, {n} slice{'s' * (n != 1)})"


@contextmanager
def _malformed(path: Path) -> Iterator[None]:
    """Turn an unexpected error while interpreting ``path``'s tags into a VolumeReadError.

    pydicom's warnings are silenced meanwhile: they would reach stderr, and the refusal
    (or nothing, for a value we can use) says what matters. Never spans a ``yield``.
    """
    try:
        with quiet():
            yield
    except (InputError, jobs.Cancelled):
        raise
    except Exception as e:  # pydicom converts values lazily: bad bytes surface anywhere
        raise VolumeReadError(
            f"{path}: malformed DICOM data ({type(e).__name__}: {printable(e, limit=300)})"
        ) from e


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


def _info(uid: str, headers: list[Header]) -> SeriesInfo:
    h = headers[0]
    return SeriesInfo(
        uid=uid,
        description=h.description,
        modality=h.modality,
        number_of_files=len(headers),
        rows=h.rows,
        columns=h.columns,
        files=tuple(str(h.path) for h in headers),
        series_number=h.series_number,
        number_of_slices=sum(h.frames for h in headers),
    )


def _sorted_series(scan: Scan) -> list[SeriesInfo]:
    for headers in scan.series.values():
        headers.sort(key=lambda h: (h.instance, str(h.path)))
    infos = [_info(uid, headers) for uid, headers in scan.series.items()]
    big = float("inf")
    return sorted(infos, key=lambda s: (big if s.series_number is None else s.series_number, s.uid))


def list_series(path: str | os.PathLike[str], *, skip_unreadable: bool = False) -> list[SeriesInfo]:
    """The DICOM image series under ``path`` (a folder, searched recursively, or a file).

    Reads headers only. Series are ordered by SeriesNumber, then UID.
    ``skip_unreadable`` as in `load_dicom`.

    Raises:
        VolumeReadError: the path does not exist, holds no DICOM image, or holds a
            truncated or malformed DICOM file (unless ``skip_unreadable``).
    """
    job = scan_steps(Path(path), jobs.never, skip_unreadable)
    return _sorted_series(jobs.run_job(_printable_errors(job)))


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


def _choose(scan: Scan, series_uid: str | None) -> tuple[SeriesInfo, list[Header]]:
    infos = _sorted_series(scan)
    if series_uid is None:
        if len(infos) > 1:
            labels = "; ".join(f"{s.label} [uid {s.uid}]" for s in infos)
            raise MultipleSeriesError(
                f"{scan.root} holds {len(infos)} DICOM series, choose one: {labels}",
                path=str(scan.root),
                series=infos,
            )
        return infos[0], scan.series[infos[0].uid]
    if series_uid not in scan.series:
        labels = "; ".join(f"{s.label} [uid {s.uid}]" for s in infos)
        raise VolumeReadError(f"{scan.root}: no DICOM series with uid {series_uid}; found {labels}")
    info = next(s for s in infos if s.uid == series_uid)
    return info, scan.series[series_uid]


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def _check_size(root: Path, info: SeriesInfo, headers: list[Header]) -> None:
    need = sum(h.stored_bytes for h in headers)
    if need > MAX_SERIES_BYTES:
        raise VolumeReadError(
            f"{root}: series {info.label} needs {_size(need)} for its pixel values, more "
            f"than the {_size(MAX_SERIES_BYTES)} this reader allows"
        )


def _check_consistent(headers: list[Header], frames: list[fr.Frame]) -> None:
    first = headers[0]
    for h in headers[1:]:
        for tag, mine, theirs in (
            ("Rows", h.rows, first.rows),
            ("Columns", h.columns, first.columns),
        ):
            if mine != theirs:
                raise VolumeReadError(
                    f"{h.path}: {tag} is {mine} but {theirs} in {first.path}; "
                    "the series mixes image sizes"
                )
    ref = frames[0]
    for f in frames[1:]:
        if not np.allclose(f.orientation, ref.orientation, atol=ORIENTATION_ATOL):
            raise VolumeReadError(
                f"{headers[f.file_index].path}: ImageOrientationPatient "
                f"{np.round(f.orientation, 5).tolist()} differs from "
                f"{np.round(ref.orientation, 5).tolist()} in {headers[ref.file_index].path}; "
                "the series mixes slice orientations (e.g. a localizer)"
            )
        if not np.allclose(f.pixel_spacing, ref.pixel_spacing, rtol=1e-4, atol=1e-6):
            raise VolumeReadError(
                f"{headers[f.file_index].path}: PixelSpacing {list(f.pixel_spacing)} differs "
                f"from {list(ref.pixel_spacing)} in {headers[ref.file_index].path}"
            )


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


@dataclass(frozen=True)
class SeriesHeaders:
    """One series' headers (no pixel data) in slice order, with its geometry.

    What DICOM SEG and RTSTRUCT writers and readers need from the source series, read
    again from its files at export time (`read_series_headers`).

    Attributes:
        info: the series (files, UID, description).
        headers: its files' headers, in the order of ``info.files``.
        frames: one per slice ``k`` (sorted along the normal); ``frames[k].file_index``
            indexes ``headers``, ``frames[k].frame_index`` the frame of a multi-frame file.
        affine: voxel ``(i, j, k)`` → RAS+ mm, as `load_dicom` gives it.
        shape: ``(columns, rows, slices)``, the shape of `load_dicom`'s array.
        geometry: the slice order, LPS affine, tilt … (`_dicom_geometry.StackGeometry`).
        skipped: files left out while scanning (see `load_dicom`).
    """

    info: SeriesInfo
    headers: list[Header]
    frames: list[fr.Frame]
    affine: np.ndarray
    shape: tuple[int, int, int]
    geometry: StackGeometry
    skipped: list[dict[str, str]] = field(default_factory=list)


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
        _headers_steps(Path(path), series_uid, stop or jobs.never, skip_unreadable, pixels=False)
    )
    return jobs.run_job(job)


def _headers_steps(
    root: Path, series_uid: str | None, stop: StopFn, skip_unreadable: bool, *, pixels: bool
) -> jobs.Job[SeriesHeaders]:
    scan = yield from scan_steps(root, stop, skip_unreadable)
    info, headers = _choose(scan, series_uid)
    if pixels:
        _check_size(root, info, headers)
    frames = []
    for n, h in enumerate(headers):
        with _malformed(h.path):
            frames.extend(fr.frames_of(h.ds, h.path, n))
            if pixels:
                fr.check_decoder(h.ds, h.path)  # fail before reading any pixels
    _check_consistent(headers, frames)
    try:
        geo = stack_geometry(
            np.stack([f.position for f in frames]),
            frames[0].orientation,
            frames[0].pixel_spacing,
            single_slice_spacing=frames[0].thickness,
        )
    except GeometryError as e:
        normal = slice_normal(frames[0].orientation)
        order = np.argsort([f.position @ normal for f in frames], kind="stable")
        names = sorted({headers[frames[order[k]].file_index].path.name for k in e.slices})
        which = f" (files: {', '.join(names)})" if names else ""
        raise VolumeReadError(f"cannot read the DICOM series in {root}: {e}{which}") from e
    sorted_frames = [frames[k] for k in geo.order]
    first = headers[0]
    shape = (first.columns, first.rows, len(sorted_frames))
    affine = lps_to_ras(geo.affine_lps)
    return SeriesHeaders(info, headers, sorted_frames, affine, shape, geo, scan.skipped)


def _load_steps(
    root: Path, series_uid: str | None, stop: StopFn, skip_unreadable: bool
) -> jobs.Job[Volume]:
    series = yield from _headers_steps(root, series_uid, stop, skip_unreadable, pixels=True)
    info, headers, sorted_frames = series.info, series.headers, series.frames
    frames, geo = sorted_frames, series.geometry
    slot = {(f.file_index, f.frame_index): k for k, f in enumerate(sorted_frames)}

    slopes = np.array([f.slope for f in sorted_frames])
    intercepts = np.array([f.intercept for f in sorted_frames])
    raw: np.ndarray | None = None
    for n, h in enumerate(headers):
        if stop():
            raise jobs.Cancelled(f"reading the DICOM series in {root} was cancelled")
        with _malformed(h.path):
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
    with _malformed(headers[0].path):
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

"""DICOM series reader: folder or file → `Volume` (RAS+ affine, array ``(i, j, k)``).

How a folder is read:

1. Every file under it (recursively; hidden files, ``DICOMDIR`` and files without the
   ``DICM`` preamble are skipped silently) is opened with pydicom, headers only
   (``stop_before_pixels``), and grouped by SeriesInstanceUID. Files without Rows (reports,
   RT plans, …) are not images and are left out.
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
Metadata holds no patient name, ID or dates.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from napari_unet import jobs
from napari_unet.errors import MultipleSeriesError, VolumeReadError
from napari_unet.io import _dicom_frames as fr
from napari_unet.io._dicom_geometry import (
    ORIENTATION_ATOL,
    GeometryError,
    lps_to_ras,
    slice_normal,
    stack_geometry,
)
from napari_unet.io.volume import Volume
from napari_unet.typing import StopFn

__all__ = ["SeriesInfo", "is_dicom_path", "list_series", "load_dicom", "load_dicom_steps"]

#: `is_dicom_path` looks at this many files of a folder at most.
_SNIFF_LIMIT = 256


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


@dataclass
class _Header:
    path: Path
    ds: Dataset  # header only, no pixel data

    @property
    def frames(self) -> int:
        return int(fr.to_float(self.ds.get("NumberOfFrames"), 1) or 1)


@dataclass
class _Scan:
    root: Path
    series: dict[str, list[_Header]]
    candidates: int


def _has_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _candidate_files(root: Path) -> Iterator[Path]:
    """Files under ``root`` in a stable order, skipping hidden entries and DICOMDIR."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            yield Path(dirpath) / name


def is_dicom_path(path: str | os.PathLike[str]) -> bool:
    """Cheap guess whether ``path`` is DICOM (for the napari reader); reads ≤ 132 bytes a file.

    A file counts when it is named ``*.dcm`` or has the ``DICM`` preamble; a folder when one
    of its first files (recursively, at most 256 looked at) has the preamble.
    """
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() == ".dcm" or _has_preamble(p)
    if p.is_dir():
        for n, file in enumerate(_candidate_files(p)):
            if n >= _SNIFF_LIMIT:
                break
            if _has_preamble(file):
                return True
    return False


def _read_header(file: Path, *, single: bool) -> _Header | None:
    """The header of an image file; None (or an error when ``single``) for anything else."""
    try:
        ds = pydicom.dcmread(file, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as e:
        if single:
            raise VolumeReadError(f"{file}: not a readable DICOM file ({e})") from e
        return None  # not DICOM: skipped silently
    if "Rows" not in ds and "PerFrameFunctionalGroupsSequence" not in ds:
        if single:
            what = ds.get("Modality") or ds.get("SOPClassUID", "?")
            raise VolumeReadError(f"{file}: a DICOM file without an image ({what})")
        return None  # a report, RT plan, presentation state …: not an image
    return _Header(file, ds)


def _scan_steps(path: Path, stop: StopFn) -> jobs.Job[_Scan]:
    """Read the headers under ``path`` and group image files by SeriesInstanceUID."""
    if not path.exists():
        raise VolumeReadError(f"{path}: no such file or folder")
    single = path.is_file()
    files = [path] if single else list(_candidate_files(path))
    series: dict[str, list[_Header]] = {}
    for n, file in enumerate(files):
        if stop():
            raise jobs.Cancelled(f"reading DICOM headers in {path} was cancelled")
        header = _read_header(file, single=single)
        if header is not None:
            uid = str(header.ds.get("SeriesInstanceUID", ""))
            series.setdefault(uid, []).append(header)
        yield jobs.Progress(n + 1, len(files), "reading DICOM headers")
    if not series:
        raise VolumeReadError(f"no DICOM files found in {path}")
    return _Scan(path, series, len(files))


def _info(uid: str, headers: list[_Header]) -> SeriesInfo:
    ds = headers[0].ds
    number = fr.to_float(ds.get("SeriesNumber"), None)
    return SeriesInfo(
        uid=uid,
        description=str(ds.get("SeriesDescription", "")),
        modality=str(ds.get("Modality", "")),
        number_of_files=len(headers),
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        files=tuple(str(h.path) for h in headers),
        series_number=int(number) if number is not None else None,
        number_of_slices=sum(h.frames for h in headers),
    )


def _sorted_series(scan: _Scan) -> list[SeriesInfo]:
    for headers in scan.series.values():
        headers.sort(key=lambda h: (fr.to_float(h.ds.get("InstanceNumber"), 0), str(h.path)))
    infos = [_info(uid, headers) for uid, headers in scan.series.items()]
    big = float("inf")
    return sorted(infos, key=lambda s: (big if s.series_number is None else s.series_number, s.uid))


def list_series(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """The DICOM image series under ``path`` (a folder, searched recursively, or a file).

    Reads headers only. Series are ordered by SeriesNumber, then UID.

    Raises:
        VolumeReadError: the path does not exist, or holds no DICOM image.
    """
    return _sorted_series(jobs.run_job(_scan_steps(Path(path), jobs.never)))


def load_dicom(
    path: str | os.PathLike[str], *, series_uid: str | None = None, stop: StopFn | None = None
) -> Volume:
    """Read one DICOM series into a Volume (drains `load_dicom_steps`).

    Args:
        path: a folder (searched recursively) or a single DICOM file.
        series_uid: the SeriesInstanceUID to read when the folder holds several.
        stop: returns True to cancel between files.

    Returns:
        The volume: array ``(i, j, k)`` = (column, row, slice along the normal), values
        after RescaleSlope/Intercept (HU for CT); affine voxel → RAS+ mm.

    Raises:
        MultipleSeriesError: several series and no ``series_uid``.
        VolumeReadError: anything that stops a faithful reading, with the file or folder.
        jobs.Cancelled: ``stop`` returned True.
    """
    return jobs.run_job(load_dicom_steps(path, series_uid=series_uid, stop=stop or jobs.never))


def _choose(scan: _Scan, series_uid: str | None) -> tuple[SeriesInfo, list[_Header]]:
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


def _check_consistent(headers: list[_Header], frames: list[fr.Frame]) -> None:
    first = headers[0].ds
    for h in headers[1:]:
        for tag in ("Rows", "Columns"):
            if h.ds.get(tag) != first.get(tag):
                raise VolumeReadError(
                    f"{h.path}: {tag} is {h.ds.get(tag)} but {first.get(tag)} in "
                    f"{headers[0].path}; the series mixes image sizes"
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
    path: str | os.PathLike[str], *, series_uid: str | None = None, stop: StopFn = jobs.never
) -> jobs.Job[Volume]:
    """`load_dicom` as a long job: yields `jobs.Progress` (files done, files in all).

    Header reading yields ``message="reading DICOM headers"`` over all candidate files,
    then pixel reading ``message="reading DICOM pixel data"`` over the series' files.
    ``stop`` is checked before every file; when it returns True, `jobs.Cancelled` is
    raised. See `load_dicom` for arguments, result and errors.
    """
    root = Path(path)
    scan = yield from _scan_steps(root, stop)
    info, headers = _choose(scan, series_uid)
    frames = [f for n, h in enumerate(headers) for f in fr.frames_of(h.ds, h.path, n)]
    _check_consistent(headers, frames)
    for h in headers:
        fr.check_decoder(h.ds, h.path)  # fail before reading any pixels
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
    slot = {(f.file_index, f.frame_index): k for k, f in enumerate(sorted_frames)}

    slopes = np.array([f.slope for f in sorted_frames])
    intercepts = np.array([f.intercept for f in sorted_frames])
    raw: np.ndarray | None = None
    for n, h in enumerate(headers):
        if stop():
            raise jobs.Cancelled(f"reading the DICOM series in {root} was cancelled")
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
        }
    )
    # (k, rows, columns) → (i, j, k): a transposed view, Fortran-ordered, no copy.
    return Volume(values.transpose(2, 1, 0), lps_to_ras(geo.affine_lps), modality, meta, str(root))

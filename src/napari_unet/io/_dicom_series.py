"""One DICOM series: found, chosen, its headers checked and its geometry computed.

`sorted_series` lists the series of a folder scan (`_dicom_scan`) as `SeriesInfo`s,
`_choose_series` picks one, and `headers_steps` reads its headers' frames, checks that they
agree (image size, orientation, pixel spacing) and sorts the slices along the normal into
a `SeriesHeaders` (`_dicom_geometry.stack_geometry`), with no pixel data read. The public
names are re-exported by `napari_unet.io.dicom`, which reads the pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
from napari_unet.io._dicom_header import Header, quiet
from napari_unet.io._dicom_scan import Scan, scan_steps
from napari_unet.text import printable
from napari_unet.typing import StopFn

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


@contextmanager
def malformed_file(path: Path) -> Iterator[None]:
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


def sorted_series(scan: Scan) -> list[SeriesInfo]:
    for headers in scan.series.values():
        headers.sort(key=lambda h: (h.instance, str(h.path)))
    infos = [_info(uid, headers) for uid, headers in scan.series.items()]
    big = float("inf")
    return sorted(infos, key=lambda s: (big if s.series_number is None else s.series_number, s.uid))


def _choose_series(scan: Scan, series_uid: str | None) -> tuple[SeriesInfo, list[Header]]:
    infos = sorted_series(scan)
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


def headers_steps(
    root: Path, series_uid: str | None, stop: StopFn, skip_unreadable: bool, *, pixels: bool
) -> jobs.Job[SeriesHeaders]:
    scan = yield from scan_steps(root, stop, skip_unreadable)
    info, headers = _choose_series(scan, series_uid)
    if pixels:
        _check_size(root, info, headers)
    frames = []
    for n, h in enumerate(headers):
        with malformed_file(h.path):
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

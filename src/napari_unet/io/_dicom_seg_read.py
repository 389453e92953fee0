"""DICOM SEG → label map on the grid of the series it refers to (`read_dicom_seg`).

Every frame is placed by its ImagePositionPatient on the referenced series' grid, after
checking the Frame of Reference, orientation, pixel spacing and size; anything that does
not fit is refused with one line naming the file. Frames are decoded one at a time;
where binary segments overlap, the higher segment number wins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from napari_unet.errors import VolumeReadError
from napari_unet.io._dicom_header import read_header, text
from napari_unet.io._dicom_reference import (
    VOXEL_TOL,
    check_frame_of_reference,
    find_series,
    malformed,
    to_voxels,
    uid_text,
)
from napari_unet.io._dicom_seg_segments import (
    LABELMAP_SOP_CLASS,
    algorithm_text,
    is_dicom_seg,
    read_segments,
)
from napari_unet.io.dicom import SeriesHeaders
from napari_unet.io.labelmap import Segment, set_segments
from napari_unet.io.volume import Volume


def _malformed(path: Path):
    return malformed(path, "DICOM SEG")


def read_dicom_seg(
    path: str | os.PathLike[str], *, reference: str | os.PathLike[str] | None = None
) -> Volume:
    """Read a DICOM SEG as a label map on the grid of the series it refers to.

    Args:
        path: the SEG file.
        reference: the referenced series' folder (or file); found beside the SEG if None.

    Returns:
        A Volume: labels ``(i, j, k)`` (uint8, or uint16 beyond 255 segments) on the
        series' grid, its affine (RAS), ``metadata["segments"]`` with names and colours
        (label value = segment number), ``"dicom_seg"`` (SOP instance, series, algorithm).

    Raises:
        VolumeReadError: one line naming the file: not a SEG, truncated or malformed, its
            series missing or another one, another Frame of Reference, frames missing, off
            the series' slices or outside its grid, unknown segment numbers.
    """
    path = Path(path)
    read_header(path, single=True)  # regular file, not truncated, pixel data as declared
    with _malformed(path):
        ds = pydicom.dcmread(path)
    if not is_dicom_seg(ds):
        what = text(ds, "Modality") or str(ds.get("SOPClassUID", "?"))
        raise VolumeReadError(f"{path}: not a DICOM SEG ({what})")
    with _malformed(path):
        segments = read_segments(path, ds)
        ref_uid = _referenced_series(ds)
    series = find_series(path, ref_uid, reference)
    with _malformed(path):
        check_frame_of_reference(path, str(ds.get("FrameOfReferenceUID", "") or ""), series)
        n_frames = _frame_count(path, ds)
        slices, numbers = _place_frames(path, ds, series, n_frames, segments)
        out, overlaps = _fill(path, ds, series, slices, numbers, max(segments))
    meta: dict[str, Any] = {
        "dicom_seg": {
            "sop_instance_uid": uid_text(ds.get("SOPInstanceUID")),
            "referenced_series_uid": series.info.uid,
            "reference": str(Path(series.info.files[0]).parent),
            "segmentation_type": text(ds, "SegmentationType"),
            "algorithms": sorted({a for a in (algorithm_text(s) for s in ds.SegmentSequence) if a}),
        },
        "series_uid": series.info.uid,
        "overlapping_voxels": overlaps,
    }
    set_segments(meta, list(segments.values()))
    return Volume(out.transpose(2, 1, 0), series.affine, "other", meta, str(path))


def _referenced_series(ds: Dataset) -> str | None:
    for item in ds.get("ReferencedSeriesSequence") or []:
        uid = item.get("SeriesInstanceUID")
        if uid:
            return str(uid)
    return None


def _frame_count(path: Path, ds: Dataset) -> int:
    n = int(ds.get("NumberOfFrames", 1) or 1)
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is None or len(per) != n:
        got = 0 if per is None else len(per)
        raise VolumeReadError(
            f"{path}: NumberOfFrames is {n} but {got} frames are described "
            "(PerFrameFunctionalGroupsSequence); frames are missing"
        )
    return n


def _fill(
    path: Path,
    ds: Dataset,
    series: SeriesHeaders,
    slices: np.ndarray,
    numbers: np.ndarray,
    top: int,
) -> tuple[np.ndarray, int]:
    """The label map ``(k, j, i)`` from the frames, decoded one at a time (a SEG of many
    segments would not fit in memory unpacked at once), and the overlapping voxels."""
    from pydicom.pixels import iter_pixels

    labelmap = str(ds.SOPClassUID) == LABELMAP_SOP_CLASS
    threshold = _threshold(ds)
    dtype = np.uint8 if top < 256 else np.uint16
    out = np.zeros((series.shape[2], series.shape[1], series.shape[0]), dtype=dtype)  # k, j, i
    overlaps = decoded = 0
    for f, plane in enumerate(iter_pixels(ds)):
        if f >= len(slices):
            break
        decoded += 1
        target = out[slices[f]]
        if labelmap:
            if plane.size and int(plane.max()) > top:
                raise VolumeReadError(
                    f"{path}: a pixel of frame {f + 1} holds segment {int(plane.max())}, but "
                    f"the SEG describes segments up to {top}"
                )
            np.copyto(target, plane.astype(dtype, copy=False), where=plane > 0)
            continue
        mask = plane >= threshold
        overlaps += int(np.count_nonzero(target[mask]))
        # where binary segments overlap, the higher segment number wins (in any frame order)
        np.copyto(target, np.maximum(target, numbers[f]).astype(dtype), where=mask)
    if decoded != len(slices):
        raise VolumeReadError(f"{path}: {decoded} frames of pixel data, expected {len(slices)}")
    return out, overlaps


def _threshold(ds: Dataset) -> float:
    if text(ds, "SegmentationType") == "FRACTIONAL":
        return max(float(ds.get("MaximumFractionalValue", 255) or 255) / 2.0, 1.0)
    return 1.0


def _functional(ds: Dataset, frame: Dataset, sequence: str) -> Dataset | None:
    for group in (frame, *(ds.get("SharedFunctionalGroupsSequence") or [])):
        items = group.get(sequence)
        if items:
            return items[0]
    return None


def _place_frames(
    path: Path,
    ds: Dataset,
    series: SeriesHeaders,
    n_frames: int,
    segments: dict[int, Segment],
) -> tuple[np.ndarray, np.ndarray]:
    """Slice index ``k`` and segment number of every frame (checked against the grid)."""
    columns, rows, n_slices = series.shape
    if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
        raise VolumeReadError(
            f"{path}: frames of {int(ds.Rows)}×{int(ds.Columns)} pixels, but the series "
            f"{series.info.label} has {rows}×{columns}"
        )
    ref = series.frames[0]
    labelmap = str(ds.SOPClassUID) == LABELMAP_SOP_CLASS
    positions = np.empty((n_frames, 3))
    numbers = np.zeros(n_frames, dtype=np.int64)
    for f, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        orientation = _functional(ds, frame, "PlaneOrientationSequence")
        measures = _functional(ds, frame, "PixelMeasuresSequence")
        position = _functional(ds, frame, "PlanePositionSequence")
        if orientation is None or measures is None or position is None:
            raise VolumeReadError(
                f"{path}: frame {f + 1} has no plane position, orientation or pixel spacing"
            )
        iop = np.asarray([float(v) for v in orientation.ImageOrientationPatient])
        if iop.shape != (6,) or not np.allclose(iop, ref.orientation, atol=1e-4):
            raise VolumeReadError(
                f"{path}: frame {f + 1} has orientation {np.round(iop, 5).tolist()}, the "
                f"series {np.round(ref.orientation, 5).tolist()}; it is on another grid"
            )
        spacing = [float(v) for v in measures.PixelSpacing]
        if not np.allclose(spacing, ref.pixel_spacing, rtol=1e-4, atol=1e-6):
            raise VolumeReadError(
                f"{path}: frame {f + 1} has pixel spacing {spacing}, the series "
                f"{list(ref.pixel_spacing)}; it is on another grid"
            )
        positions[f] = [float(v) for v in position.ImagePositionPatient]
        if not labelmap:
            ident = frame.get("SegmentIdentificationSequence")
            number = int(ident[0].ReferencedSegmentNumber) if ident else 0
            if number not in segments:
                raise VolumeReadError(
                    f"{path}: frame {f + 1} belongs to segment {number}, which the SEG "
                    "does not describe"
                )
            numbers[f] = number
    if not np.all(np.isfinite(positions)):
        raise VolumeReadError(f"{path}: a frame position is not a finite number")
    ijk = to_voxels(series, positions)
    k = np.rint(ijk[:, 2])
    off_plane = np.abs(ijk[:, :2]).max(axis=1) > VOXEL_TOL
    off_slice = np.abs(ijk[:, 2] - k) > VOXEL_TOL
    outside = (k < 0) | (k >= n_slices)
    for problem, bad in (
        ("is not on a slice of", off_plane | off_slice),
        ("lies outside", outside),
    ):
        if np.any(bad):
            f = int(np.flatnonzero(bad)[0])
            where = ", ".join(f"{v:.2f}" for v in positions[f])
            raise VolumeReadError(
                f"{path}: frame {f + 1} at ({where}) mm {problem} the series "
                f"{series.info.label} ({int(np.count_nonzero(bad))} frame(s) in all)"
            )
    return k.astype(np.intp), numbers

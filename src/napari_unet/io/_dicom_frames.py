"""Per-file DICOM details: one `Frame` per image plane, decoders, pixel values, metadata.

Single-frame files give one frame; multi-frame files give one per frame, with geometry from
the enhanced functional groups (PerFrame/Shared PlanePositionSequence, PlaneOrientation-
Sequence, PixelMeasuresSequence, PixelValueTransformationSequence) or, for legacy
multi-frame objects such as RT dose, from ImagePositionPatient + GridFrameOffsetVector.
Positions and directions are DICOM LPS, in mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from napari_unet.errors import VolumeReadError
from napari_unet.io._dicom_geometry import orientation_problem, slice_normal
from napari_unet.io._dicom_header import text

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

#: pip commands for pydicom's pixel-data plugins (names as pydicom reports them).
_PIP_HINTS = {
    "pylibjpeg": "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg",
    "gdcm": "pip install python-gdcm",
    "pyjpegls": "pip install pyjpegls",
    "pillow": "pip install pillow",
}


@dataclass(frozen=True)
class Frame:
    """One image plane of a series.

    Attributes:
        file_index: index of its file in the series' file list.
        frame_index: index of the frame inside a multi-frame file, None for single-frame.
        position: ImagePositionPatient (LPS mm) of the first transmitted pixel.
        orientation: the six ImageOrientationPatient direction cosines.
        pixel_spacing: PixelSpacing ``(row spacing, column spacing)`` in mm.
        thickness: SliceThickness in mm, None if absent.
        slope: RescaleSlope (1 if absent).
        intercept: RescaleIntercept (0 if absent).
    """

    file_index: int
    frame_index: int | None
    position: NDArray[np.float64]
    orientation: NDArray[np.float64]
    pixel_spacing: tuple[float, float]
    thickness: float | None
    slope: float
    intercept: float


def _item(ds: Dataset, frame: int | None, sequence: str, *, per_frame: bool = True) -> Any:
    """First item of a functional-group macro: per-frame first, then shared, else None."""
    groups = []
    if per_frame and frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        per = ds.PerFrameFunctionalGroupsSequence
        if frame < len(per):
            groups.append(per[frame])
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for group in groups:
        seq = group.get(sequence)
        if seq:
            return seq[0]
    return None


def _floats(value: Any, n: int, what: str, path: Path) -> NDArray[np.float64]:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise VolumeReadError(f"{path}: {what} is not numeric ({value!r})") from e
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise VolumeReadError(f"{path}: {what} should hold {n} numbers, got {value!r}")
    return arr


def to_float(value: Any, default: float | None) -> float | None:
    """``float(value)``, or ``default`` for a missing, empty or malformed value."""
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError, OverflowError):
        return default


def check_greyscale(ds: Dataset, path: Path) -> None:
    """Raise a VolumeReadError naming the file unless it has one sample per pixel."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise VolumeReadError(
            f"{path}: {samples} samples per pixel ({ds.get('PhotometricInterpretation')}); "
            "only greyscale images can be read as a volume"
        )


def is_multiframe(ds: Dataset) -> bool:
    """True for a multi-frame file (frames are then indexed 0…n-1, else None)."""
    n_frames = int(to_float(ds.get("NumberOfFrames"), 1) or 1)
    return n_frames > 1 or "PerFrameFunctionalGroupsSequence" in ds


def frames_of(ds: Dataset, path: Path, file_index: int) -> list[Frame]:
    """The image planes of one file (header only, no pixel data needed).

    Raises:
        VolumeReadError: naming the file, when orientation, position or pixel spacing
            is missing or malformed.
    """
    check_greyscale(ds, path)
    n_frames = int(to_float(ds.get("NumberOfFrames"), 1) or 1)
    multi = is_multiframe(ds)
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and len(per) != n_frames:
        raise VolumeReadError(
            f"{path}: PerFrameFunctionalGroupsSequence has {len(per)} items but "
            f"NumberOfFrames is {n_frames}"
        )
    frames = []
    checked: list[NDArray[np.float64]] = []
    for f in range(n_frames):
        fi = f if multi else None
        iop = _orientation(ds, fi, path, checked)
        ipp = _position(ds, fi, f, n_frames, iop, path)
        spacing, thickness = _spacing(ds, fi, path)
        slope, intercept = _rescale(ds, fi, path)
        frames.append(
            Frame(
                file_index=file_index,
                frame_index=fi,
                position=ipp,
                orientation=iop,
                pixel_spacing=(float(spacing[0]), float(spacing[1])),
                thickness=thickness,
                slope=slope,
                intercept=intercept,
            )
        )
    return frames


def _orientation(
    ds: Dataset, fi: int | None, path: Path, checked: list[NDArray[np.float64]]
) -> NDArray[np.float64]:
    """ImageOrientationPatient of frame ``fi``, checked once per new value (``checked``
    holds the ones already checked and is appended to)."""
    plane = _item(ds, fi, "PlaneOrientationSequence")
    iop = (
        ds.get("ImageOrientationPatient") if plane is None else plane.get("ImageOrientationPatient")
    )
    if iop is None:
        raise VolumeReadError(f"{path}: ImageOrientationPatient is missing")
    iop = _floats(iop, 6, "ImageOrientationPatient", path)
    if not any(np.array_equal(iop, seen) for seen in checked[-2:]):
        problem = orientation_problem(iop)
        if problem:
            raise VolumeReadError(
                f"{path}: ImageOrientationPatient {np.round(iop, 6).tolist()} {problem}"
            )
        checked.append(iop)
    return iop


def _position(
    ds: Dataset, fi: int | None, f: int, n_frames: int, iop: NDArray[np.float64], path: Path
) -> NDArray[np.float64]:
    """ImagePositionPatient of frame ``f`` (LPS mm): its PlanePositionSequence, else the
    file's, moved along the slice normal by GridFrameOffsetVector for a multi-frame file."""
    offsets = ds.get("GridFrameOffsetVector")
    pos_item = _item(ds, fi, "PlanePositionSequence")
    if pos_item is not None and "ImagePositionPatient" in pos_item:
        return _floats(pos_item.ImagePositionPatient, 3, "ImagePositionPatient", path)
    if "ImagePositionPatient" in ds and (n_frames == 1 or offsets is not None):
        ipp = _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", path)
        if offsets is not None and n_frames > 1:
            off = _floats(offsets, n_frames, "GridFrameOffsetVector", path)
            ipp = ipp + off[f] * slice_normal(iop)
        return ipp
    if n_frames > 1:
        raise VolumeReadError(
            f"{path}: multi-frame file without a position for frame {f + 1} "
            "(no PlanePositionSequence, no GridFrameOffsetVector)"
        )
    raise VolumeReadError(f"{path}: ImagePositionPatient is missing")


def _spacing(ds: Dataset, fi: int | None, path: Path) -> tuple[NDArray[np.float64], float | None]:
    """(PixelSpacing, SliceThickness or None when absent or not positive) of frame ``fi``, mm."""
    measures = _item(ds, fi, "PixelMeasuresSequence")
    source = measures if measures is not None and "PixelSpacing" in measures else ds
    if "PixelSpacing" not in source:
        raise VolumeReadError(f"{path}: PixelSpacing is missing")
    spacing = _floats(source.PixelSpacing, 2, "PixelSpacing", path)
    if np.any(spacing <= 0):
        raise VolumeReadError(f"{path}: PixelSpacing must be positive, got {spacing.tolist()}")
    thickness = to_float(source.get("SliceThickness", ds.get("SliceThickness")), None)
    if thickness is not None and not (np.isfinite(thickness) and thickness > 0):
        thickness = None
    return spacing, thickness


def _rescale(ds: Dataset, fi: int | None, path: Path) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of frame ``fi``; 1 and 0 when absent."""
    value = _item(ds, fi, "PixelValueTransformationSequence")
    value = ds if value is None else value
    slope = float(to_float(value.get("RescaleSlope"), 1.0))  # type: ignore[arg-type]
    intercept = float(to_float(value.get("RescaleIntercept"), 0.0))  # type: ignore[arg-type]
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise VolumeReadError(
            f"{path}: RescaleSlope {slope:g} / RescaleIntercept {intercept:g} cannot be "
            "used (the slope must be finite and non-zero, the intercept finite)"
        )
    return slope, intercept


def check_decoder(ds: Dataset, path: Path) -> None:
    """Raise a VolumeReadError naming the file, the syntax and what to install, if needed."""
    from pydicom.pixels import get_decoder

    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if uid is None:
        return  # pydicom guesses the syntax of files without meta information
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as e:
        raise VolumeReadError(
            f"{path}: pydicom cannot decode pixel data in transfer syntax {uid.name} ({uid})"
        ) from e
    if decoder.is_available:
        return
    missing = list(decoder.missing_dependencies)
    plugins = [m.split(" - ")[0].strip() for m in missing]
    pips = [_PIP_HINTS[p] for p in plugins if p in _PIP_HINTS]
    hint = f" (e.g. `{pips[0]}`" + (f" or `{pips[1]}`" if len(pips) > 1 else "") + ")"
    raise VolumeReadError(
        f"{path}: pixel data is compressed as {uid.name} ({uid}) and no decoder for it is "
        f"installed; install one of: {'; '.join(missing)}{hint if pips else ''}"
    )


def pixel_frames(ds: Dataset, path: Path) -> NDArray[Any]:
    """Decoded stored values of a full dataset, shape ``(frames, rows, columns)``."""
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise VolumeReadError(f"{path}: the file has no pixel data")
    check_greyscale(ds, path)
    check_decoder(ds, path)
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises many kinds; keep the file and the reason
        raise VolumeReadError(f"{path}: cannot decode the pixel data: {e}") from e
    return arr.reshape((-1, int(ds.Rows), int(ds.Columns)))


def rescaled_dtype(
    raw: NDArray[Any], slopes: NDArray[np.float64], intercepts: NDArray[np.float64]
) -> np.dtype[Any]:
    """The output dtype: the stored one without rescale, else int16/32/64 or float32.

    Args:
        raw: stored values ``(k, rows, columns)``.
        slopes: RescaleSlope per slice ``k``.
        intercepts: RescaleIntercept per slice ``k``.
    """
    if np.all(slopes == 1) and np.all(intercepts == 0):
        return raw.dtype
    if not (np.all(slopes == np.rint(slopes)) and np.all(intercepts == np.rint(intercepts))):
        return np.dtype(np.float32)
    if not np.issubdtype(raw.dtype, np.integer):
        return np.dtype(np.float32)
    lo = raw.min(axis=(1, 2)).astype(np.float64) * slopes + intercepts
    hi = raw.max(axis=(1, 2)).astype(np.float64) * slopes + intercepts
    lo, hi = min(lo.min(), hi.min()), max(lo.max(), hi.max())
    for dtype in (np.int16, np.int32, np.int64):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.float64)


def apply_rescale(
    raw: NDArray[Any], slopes: NDArray[np.float64], intercepts: NDArray[np.float64]
) -> NDArray[Any]:
    """``raw * slope + intercept`` slice by slice (modality LUT: CT → HU), see `rescaled_dtype`."""
    dtype = rescaled_dtype(raw, slopes, intercepts)
    if dtype == raw.dtype and np.all(slopes == 1) and np.all(intercepts == 0):
        return raw
    out = np.empty(raw.shape, dtype=dtype)
    for k in range(raw.shape[0]):
        out[k] = raw[k] * slopes[k] + intercepts[k]  # computed in float64, then cast
    return out


def _first(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    v = to_float(value, None)
    return v if v is not None and np.isfinite(v) else None


def basic_metadata(ds: Dataset) -> dict[str, Any]:
    """PHI-free descriptive tags of a series' first file (no names, IDs, dates)."""
    voi = _item(ds, 0, "FrameVOILUTSequence") if "SharedFunctionalGroupsSequence" in ds else None
    voi = ds if voi is None else voi
    meta: dict[str, Any] = {
        "format": "DICOM",
        "series_uid": text(ds, "SeriesInstanceUID"),
        "series_description": text(ds, "SeriesDescription"),
        "series_number": to_float(ds.get("SeriesNumber"), None),
        "dicom_modality": text(ds, "Modality"),
        "manufacturer": text(ds, "Manufacturer"),
        "body_part_examined": text(ds, "BodyPartExamined"),
        "photometric_interpretation": text(ds, "PhotometricInterpretation"),
        "window_center": _first(voi.get("WindowCenter")),
        "window_width": _first(voi.get("WindowWidth")),
    }
    number = meta["series_number"]
    meta["series_number"] = int(number) if number is not None and abs(number) < 2**31 else None
    return meta

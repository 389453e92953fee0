"""DICOM Segmentation (SEG) objects: labels → SEG with highdicom, SEG → labels.

Writing (`write_dicom_seg`) needs the source series' headers only (no pixel data); they
are read again from its files (`dicom.read_series_headers`), so a SEG can be written after
a napari session as long as the series is still where it was opened. The SEG

* has one segment per class, with the class name (SegmentLabel), its colour
  (RecommendedDisplayCIELabValue, converted with highdicom's CIELab helpers), a coded
  property (SNOMED CT "Liver", "Kidney" … where the name is a known structure, else
  "Tissue"), and algorithm type SEMIAUTOMATIC with the model's name and version hash
  when a model made the labels, MANUAL otherwise;
* references every source instance (frame by frame, found by position), and carries the
  source's Frame of Reference and its patient, study and equipment context (highdicom
  copies the patient and study modules from the source headers);
* is BINARY (one bit a pixel, one frame per segment and slice, empty frames left out:
  DICOM's most widely read form) or LABELMAP (the Label Map Segmentation SOP class of
  DICOM 2024, one frame per slice holding segment numbers);
* describes empty classes too (a segment without frames), so that the class list
  survives; an entirely empty label map still gets one frame per slice.

Segment numbers run 1…n in the order of the label values; when the values are 1…n (the
loop's labels) segment number = label value, so labels → SEG → labels is the identity.

Reading (`read_dicom_seg`) places every frame by its ImagePositionPatient on the grid of
the referenced series (found beside the SEG or given), after checking the Frame of
Reference, orientation, pixel spacing and size; anything that does not fit is refused
with one line naming the file. Where binary segments overlap, the higher segment number
wins (``metadata["overlapping_voxels"]`` counts such voxels).

Array layout: labels ``(i, j, k)`` = (column, row, slice along the normal), as the DICOM
reader's images; a SEG frame is ``(row, column)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from napari_unet import __version__
from napari_unet.errors import InputError, VolumeReadError
from napari_unet.io._dicom_header import quiet, read_header, text
from napari_unet.io._dicom_reference import (
    VOXEL_TOL,
    check_frame_of_reference,
    check_grid,
    find_series,
    malformed,
    source_datasets,
    to_voxels,
    uid_text,
)
from napari_unet.io.dicom import SeriesHeaders
from napari_unet.io.labelmap import (
    Algorithm,
    Segment,
    clean_name,
    default_color,
    rgb_to_hex,
    segments_of,
    set_segments,
)
from napari_unet.io.volume import Volume
from napari_unet.outputs import atomic_output, check_output
from napari_unet.text import printable

__all__ = ["SEG_SOP_CLASSES", "read_dicom_seg", "write_dicom_seg"]

#: Segmentation Storage (binary, fractional) and Label Map Segmentation Storage.
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
SEG_SOP_CLASSES = (SEG_SOP_CLASS, LABELMAP_SOP_CLASS)
SEGMENTATION_TYPES = ("binary", "labelmap")
#: At most this many segments (DICOM allows 65535; 255 keeps the label map in uint8 … uint16).
MAX_SEGMENTS = 65535


# --- writing ------------------------------------------------------------------------------


def write_dicom_seg(
    labels: Volume,
    reference: SeriesHeaders | str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    algorithm: Algorithm | None = None,
    segmentation_type: str = "binary",
    overwrite: bool = False,
) -> Path:
    """Write ``labels`` as a DICOM SEG over its source series.

    Args:
        labels: the label map ``(i, j, k)`` on the series' grid; its segments (names,
            colours) come from its metadata (`labelmap.segments_of`).
        reference: the source series' headers, or its folder (or file).
        path: the output file (``.dcm``).
        series_uid: the series to take from ``reference`` when it holds several.
        algorithm: the model that made the labels (SEMIAUTOMATIC), None for MANUAL.
        segmentation_type: "binary" or "labelmap".
        overwrite: replace an existing ``path``.

    Returns:
        ``path``.

    Raises:
        InputError: the labels are not on the series' grid, have too many classes, the
            series cannot be read, or ``path`` cannot be written.
    """
    hd = _highdicom()
    if segmentation_type not in SEGMENTATION_TYPES:
        raise ValueError(
            f"segmentation_type must be one of {SEGMENTATION_TYPES}, got {segmentation_type!r}"
        )
    series = _series(reference, series_uid)
    out = check_output(path, overwrite=overwrite, inputs=[labels.source, series.info.files[0]])
    check_grid(str(labels.source or "the labels"), labels.affine, labels.shape, series)
    array = np.asarray(labels.array)
    segments = segments_of(labels)
    if not segments:
        segments = [Segment(1, "label 1", default_color(1))]
    if len(segments) > MAX_SEGMENTS:
        raise InputError(f"{out}: {len(segments)} classes; a DICOM SEG holds at most 65535")
    lut = np.zeros(max(int(array.max(initial=0)), segments[-1].value) + 1, dtype=np.uint16)
    for number, segment in enumerate(segments, start=1):
        lut[segment.value] = number
    dtype = np.uint8 if len(segments) < 256 else np.uint16
    # (i, j, k) → frames (k, row j, column i), values → segment numbers
    frames = lut[array].astype(dtype).transpose(2, 1, 0)
    descriptions = [
        _description(hd, number, segment, algorithm)
        for number, segment in enumerate(segments, start=1)
    ]
    sources = source_datasets(series)
    positions = [
        hd.PlanePositionSequence("PATIENT", [float(v) for v in f.position]) for f in series.frames
    ]
    seg_type = (
        hd.seg.SegmentationTypeValues.LABELMAP
        if segmentation_type == "labelmap"
        else hd.seg.SegmentationTypeValues.BINARY
    )
    first = sources[0]
    number = first.get("SeriesNumber")
    try:
        with quiet():
            seg = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=np.ascontiguousarray(frames),
                segmentation_type=seg_type,
                segment_descriptions=descriptions,
                series_instance_uid=hd.UID(),
                series_number=int(number) + 1000 if _small_int(number) else 1000,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="napari-unet",
                manufacturer_model_name="napari-unet",
                software_versions=__version__,
                device_serial_number="none",
                content_description=_content(algorithm),
                content_label="SEGMENTATION",
                plane_positions=positions,
                omit_empty_frames=bool(np.any(frames)),
                series_description=f"{_series_description(first)}segmentation (napari-unet)"[:64],
            )
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise InputError(
            f"{out}: cannot build a DICOM SEG over {series.info.label} "
            f"({type(e).__name__}: {printable(e, limit=300)})"
        ) from e
    with atomic_output(out) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return out


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError:
        raise InputError(
            "writing DICOM SEG needs highdicom: pip install 'napari-unet[dicom]'"
        ) from None
    return highdicom


def _series(reference: SeriesHeaders | str | os.PathLike[str], uid: str | None) -> SeriesHeaders:
    from napari_unet.io.dicom import read_series_headers

    if isinstance(reference, SeriesHeaders):
        return reference
    return read_series_headers(reference, series_uid=uid)


def _small_int(value: Any) -> bool:
    try:
        return 0 <= int(value) < 2**31 - 1001
    except (TypeError, ValueError):
        return False


def _series_description(ds: Dataset) -> str:
    description = text(ds, "SeriesDescription")
    return f"{description} " if description else ""


def _content(algorithm: Algorithm | None) -> str:
    if algorithm is None:
        return "drawn or corrected by hand in napari-unet"
    return f"{algorithm.name} {algorithm.version[:12]}, corrected in napari-unet"[:64]


def property_codes(name: str) -> tuple[Any, Any]:
    """(category, type) codes for a class name: a SNOMED CT structure if known, else Tissue."""
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    key = "".join(word.capitalize() for word in name.replace("-", " ").split())
    if key.isidentifier() and key not in ("Tissue",):
        try:
            code = getattr(codes.SCT, key)
        except AttributeError:
            code = None
        if code is not None:
            return Code("123037004", "SCT", "Anatomical Structure"), code
    tissue = Code("85756007", "SCT", "Tissue")
    return tissue, tissue


def _description(hd: Any, number: int, segment: Segment, algorithm: Algorithm | None) -> Any:
    from pydicom.sr.codedict import codes

    category, kind = property_codes(segment.name)
    r, g, b = (int(segment.color[i : i + 2], 16) for i in (1, 3, 5))
    if algorithm is None:
        kwargs: dict[str, Any] = {"algorithm_type": hd.seg.SegmentAlgorithmTypeValues.MANUAL}
    else:
        kwargs = {
            "algorithm_type": hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            "algorithm_identification": hd.AlgorithmIdentificationSequence(
                name=algorithm.name[:64] or "napari-unet model",
                family=codes.cid7162.ArtificialIntelligence,
                version=algorithm.version[:64] or "unknown",
                source="napari-unet",
            ),
        }
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.name[:64],
        segmented_property_category=category,
        segmented_property_type=kind,
        tracking_uid=hd.UID(),
        tracking_id=f"label {segment.value}",
        display_color=hd.color.CIELabColor.from_rgb(r, g, b),
        **kwargs,
    )


# --- reading ------------------------------------------------------------------------------


def _malformed(path: Path):
    return malformed(path, "DICOM SEG")


def is_dicom_seg(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES


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
        segments = _segments(path, ds)
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
            "algorithms": sorted({a for a in (_algorithm(s) for s in ds.SegmentSequence) if a}),
        },
        "series_uid": series.info.uid,
        "overlapping_voxels": overlaps,
    }
    set_segments(meta, list(segments.values()))
    return Volume(out.transpose(2, 1, 0), series.affine, "other", meta, str(path))


def _segments(path: Path, ds: Dataset) -> dict[int, Segment]:
    try:
        import highdicom as hd
    except ImportError:  # colours are then the default ones
        hd = None
    items = ds.get("SegmentSequence")
    if not items:
        raise VolumeReadError(f"{path}: a DICOM SEG without segments (no SegmentSequence)")
    labelmap = str(ds.SOPClassUID) == LABELMAP_SOP_CLASS
    segments: dict[int, Segment] = {}
    for item in items:
        number = item.get("SegmentNumber")
        if number is None or not 0 <= int(number) <= MAX_SEGMENTS:
            raise VolumeReadError(f"{path}: a segment has no valid SegmentNumber ({number!r})")
        number = int(number)
        if number == 0:
            if labelmap:
                continue  # a label map may describe its background as segment 0
            raise VolumeReadError(f"{path}: segment number 0 (numbers start at 1)")
        if number in segments:
            raise VolumeReadError(f"{path}: segment number {number} is described twice")
        lab = item.get("RecommendedDisplayCIELabValue")
        color = default_color(number)
        if hd is not None and lab is not None and len(lab) == 3:
            lab_color = hd.color.CIELabColor.from_dicom_value([int(v) for v in lab])
            color = rgb_to_hex(lab_color.to_rgb())
        segments[number] = Segment(number, clean_name(item.get("SegmentLabel"), number), color)
    if not segments:
        raise VolumeReadError(f"{path}: a DICOM SEG that describes no segment")
    return dict(sorted(segments.items()))


def _algorithm(item: Dataset) -> str:
    kind = text(item, "SegmentAlgorithmType")
    name = text(item, "SegmentAlgorithmName")
    return f"{kind} {name}".strip()


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

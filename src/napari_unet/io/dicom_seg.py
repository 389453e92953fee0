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

Where: this module writes; `_dicom_seg_read` reads; `_dicom_seg_segments` turns segment
descriptions into `labelmap.Segment`s and back. `read_dicom_seg`, `is_dicom_seg` and
`property_codes` are re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from napari_unet import __version__
from napari_unet.errors import InputError
from napari_unet.io._dicom_header import quiet, text
from napari_unet.io._dicom_reference import check_grid, source_datasets
from napari_unet.io._dicom_seg_read import read_dicom_seg
from napari_unet.io._dicom_seg_segments import (
    LABELMAP_SOP_CLASS,
    MAX_SEGMENTS,
    SEG_SOP_CLASS,
    SEG_SOP_CLASSES,
    is_dicom_seg,
    property_codes,
    segment_description,
)
from napari_unet.io.dicom import SeriesHeaders
from napari_unet.io.labelmap import Algorithm, Segment, default_color, segments_of
from napari_unet.io.volume import Volume
from napari_unet.outputs import atomic_output, check_output
from napari_unet.text import printable

__all__ = [
    "LABELMAP_SOP_CLASS",
    "MAX_SEGMENTS",
    "SEG_SOP_CLASS",
    "SEG_SOP_CLASSES",
    "is_dicom_seg",
    "property_codes",
    "read_dicom_seg",
    "write_dicom_seg",
]

SEGMENTATION_TYPES = ("binary", "labelmap")


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
    segments, frames = _segment_frames(labels, out)
    descriptions = [
        segment_description(hd, number, segment, algorithm)
        for number, segment in enumerate(segments, start=1)
    ]
    seg = _segmentation(hd, series, frames, descriptions, algorithm, segmentation_type, out)
    with atomic_output(out) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return out


def _segment_frames(labels: Volume, out: Path) -> tuple[list[Segment], np.ndarray]:
    """The segments (at least one) and the frames ``(k, row j, column i)`` of segment
    numbers 1…n, from the label map ``(i, j, k)`` and its values."""
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
    return segments, lut[array].astype(dtype).transpose(2, 1, 0)


def _segmentation(
    hd: Any,
    series: SeriesHeaders,
    frames: np.ndarray,
    descriptions: list[Any],
    algorithm: Algorithm | None,
    segmentation_type: str,
    out: Path,
) -> Any:
    """The highdicom Segmentation over ``series``'s instances (see `write_dicom_seg`)."""
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
    return seg


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

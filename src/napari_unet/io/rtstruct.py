"""DICOM RT Structure Sets (RTSTRUCT): labels → closed planar contours, and back.

Written with pydicom and scikit-image rather than `rt-utils`: rt-utils needs
``opencv-python``, whose wheel bundles its own Qt plugins (74 MB) and is known to clash
with the Qt napari runs on; `skimage.measure.find_contours` (already a dependency) gives
the same polygons. highdicom has no RTSTRUCT writer.

Writing (`write_rtstruct`): one ROI per class (ROIName = the class name, ROIDisplayColor
its colour, ROIGenerationAlgorithm SEMIAUTOMATIC with the model's name and version hash,
or MANUAL), one CLOSED_PLANAR contour per boundary of the class on each slice, in
patient coordinates (LPS mm) through the midpoints between voxel centres, so that filling
the polygons gives back exactly the voxels whose centres are inside (holes are contours
of their own, combined by parity as most planning systems read them). Each contour
references its source image; the structure set references the series, its study and
Frame of Reference; patient and study attributes are copied from the source headers.
A class without voxels gets an ROI without contours.

Reading (`read_rtstruct`; the filling is `_rtstruct_fill`'s): the referenced series
(beside the file or given) gives the grid; each contour must lie on one of its slices and
inside its grid (half a voxel of margin), else the file is refused with one line. Polygons
are filled by voxel centre (`skimage.draw.polygon2mask`) and combined by parity within an
ROI; a later ROI wins where ROIs overlap. POINT and OPEN_PLANAR contours enclose nothing
and are skipped (counted in ``metadata["skipped_contours"]``).

Array layout: labels ``(i, j, k)`` = (column, row, slice along the normal).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from napari_unet import __version__
from napari_unet.errors import VolumeReadError
from napari_unet.io._dicom_header import text
from napari_unet.io._dicom_reference import (
    check_frame_of_reference,
    check_grid,
    find_series,
    frame_of_reference,
    malformed,
    read_dataset,
    source_datasets,
    to_world,
    uid_text,
)
from napari_unet.io._rtstruct_fill import rasterise
from napari_unet.io.dicom import SeriesHeaders
from napari_unet.io.labelmap import (
    Algorithm,
    clean_name,
    hex_to_rgb,
    segments_of,
    set_segments,
)
from napari_unet.io.volume import Volume
from napari_unet.outputs import atomic_output, check_output

__all__ = ["RTSTRUCT_SOP_CLASS", "read_rtstruct", "write_rtstruct"]

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: The study reference class RT structure sets use (Detached Study Management, retired
#: but what every planning system writes and expects).
_STUDY_CLASS = "1.2.840.10008.3.1.2.3.1"
MAX_ROIS = 65535


# --- writing ------------------------------------------------------------------------------


def write_rtstruct(
    labels: Volume,
    reference: SeriesHeaders | str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    algorithm: Algorithm | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``labels`` as an RT Structure Set over its source series.

    Args:
        labels: the label map ``(i, j, k)`` on the series' grid; names and colours from
            its metadata (`labelmap.segments_of`).
        reference: the source series' headers, or its folder (or file).
        path: the output file (``.dcm``).
        series_uid: the series to take from ``reference`` when it holds several.
        algorithm: the model that made the labels (SEMIAUTOMATIC), None for MANUAL.
        overwrite: replace an existing ``path``.

    Returns:
        ``path``.

    Raises:
        InputError: the labels are not on the series' grid, the series cannot be read,
            or ``path`` cannot be written.
    """
    from napari_unet.io.dicom import read_series_headers

    series = (
        reference
        if isinstance(reference, SeriesHeaders)
        else read_series_headers(reference, series_uid=series_uid)
    )
    out = check_output(path, overwrite=overwrite, inputs=[labels.source, series.info.files[0]])
    check_grid(str(labels.source or "the labels"), labels.affine, labels.shape, series)
    sources = source_datasets(series)
    ds = _skeleton(sources[0], series, algorithm)
    refs = _image_refs(series)
    array = np.asarray(labels.array)
    rois, contours, observations = [], [], []
    for number, segment in enumerate(segments_of(labels), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_of_reference(series)
        roi.ROIName = segment.name[:64]
        roi.ROIGenerationAlgorithm = "MANUAL" if algorithm is None else "SEMIAUTOMATIC"
        if algorithm is not None:
            roi.ROIGenerationDescription = f"{algorithm.name} {algorithm.version}"[:64]
        rois.append(roi)
        item = Dataset()
        item.ROIDisplayColor = list(hex_to_rgb(segment.color))
        item.ReferencedROINumber = number
        polygons = list(_contours(array == segment.value, series, refs))
        if polygons:
            item.ContourSequence = DicomSequence(polygons)
        contours.append(item)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = "ORGAN"
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    with atomic_output(out) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return out


def _skeleton(source: Dataset, series: SeriesHeaders, algorithm: Algorithm | None) -> Dataset:
    """Patient, study, series, equipment, structure set and SOP common modules."""
    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    if "SpecificCharacterSet" in source:
        ds.SpecificCharacterSet = source.SpecificCharacterSet
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, uid
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
        "StudyDescription",
    ):
        if keyword in source:
            ds[keyword] = source[keyword]
    ds.FrameOfReferenceUID = frame_of_reference(series)
    ds.PositionReferenceIndicator = source.get("PositionReferenceIndicator", "")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    number = source.get("SeriesNumber")
    try:
        ds.SeriesNumber = int(number) + 2000 if 0 <= int(number) < 2**31 - 2001 else 2000
    except (TypeError, ValueError):
        ds.SeriesNumber = 2000
    description = text(source, "SeriesDescription")
    ds.SeriesDescription = f"{description} structures (napari-unet)".strip()[:64]
    ds.OperatorsName = ""
    ds.Manufacturer = "napari-unet"
    ds.ManufacturerModelName = "napari-unet"
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "napari-unet"
    ds.StructureSetName = "segmentation"
    ds.StructureSetDescription = (
        "drawn or corrected by hand in napari-unet"
        if algorithm is None
        else f"{algorithm.name} {algorithm.version[:12]}, corrected in napari-unet"[:64]
    )
    ds.StructureSetDate, ds.StructureSetTime = date, time
    series_item = Dataset()
    series_item.SeriesInstanceUID = series.info.uid
    series_item.ContourImageSequence = DicomSequence(
        [_image_ref(ref) for ref in _image_refs(series).values()]
    )
    study = Dataset()
    study.ReferencedSOPClassUID = _STUDY_CLASS
    study.ReferencedSOPInstanceUID = source.StudyInstanceUID
    study.RTReferencedSeriesSequence = DicomSequence([series_item])
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_of_reference(series)
    frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])
    return ds


def _image_ref(ref: tuple[str, str, int | None]) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ref[0], ref[1]
    if ref[2] is not None:
        item.ReferencedFrameNumber = ref[2]
    return item


def _image_refs(series: SeriesHeaders) -> dict[int, tuple]:
    """(SOP class, SOP instance, frame number or None) of each slice ``k``."""
    refs = {}
    for k, frame in enumerate(series.frames):
        ds = series.headers[frame.file_index].ds
        number = None if frame.frame_index is None else frame.frame_index + 1
        refs[k] = (str(ds.SOPClassUID), str(ds.SOPInstanceUID), number)
    return refs


def _decimal(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) as exact as it fits."""
    for digits in (10, 9, 8, 7, 6):
        s = f"{value:.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{value:.5e}"


def _contours(mask: np.ndarray, series: SeriesHeaders, refs: dict[int, tuple]) -> Iterator[Dataset]:
    from skimage.measure import approximate_polygon, find_contours

    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        plane = np.pad(mask[:, :, k], 1).astype(np.uint8)
        for polygon in find_contours(plane, 0.5):
            ij = approximate_polygon(polygon[:-1] - 1.0, tolerance=1e-3)
            if len(ij) > 1 and np.allclose(ij[0], ij[-1]):
                ij = ij[:-1]
            if len(ij) < 3:
                continue
            points = to_world(series, np.column_stack([ij, np.full(len(ij), float(k))]))
            item = Dataset()
            item.ContourImageSequence = DicomSequence([_image_ref(refs[int(k)])])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(points)
            item.ContourData = [_decimal(v) for v in points.reshape(-1)]
            yield item


# --- reading ------------------------------------------------------------------------------


def _malformed(path: Path):
    return malformed(path, "RTSTRUCT")


def is_rtstruct(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) == RTSTRUCT_SOP_CLASS


def read_rtstruct(
    path: str | os.PathLike[str], *, reference: str | os.PathLike[str] | None = None
) -> Volume:
    """Read an RT Structure Set as a label map on its series' grid.

    Args:
        path: the RTSTRUCT file.
        reference: the referenced series' folder (or file); found beside it if None.

    Returns:
        A Volume: labels ``(i, j, k)`` (value n = the n-th ROI of StructureSetROISequence)
        on the series' grid and affine (RAS), ``metadata["segments"]`` with ROI names and
        colours, ``"rtstruct"`` (SOP instance, series, ROI numbers).

    Raises:
        VolumeReadError: one line naming the file: not an RTSTRUCT, truncated or
            malformed, its series missing or another one, another Frame of Reference, a
            contour off the series' slices or outside its grid.
    """
    path = Path(path)
    ds = read_dataset(path, "RTSTRUCT")
    if not is_rtstruct(ds):
        what = text(ds, "Modality") or str(ds.get("SOPClassUID", "?"))
        raise VolumeReadError(f"{path}: not an RTSTRUCT ({what})")
    with _malformed(path):
        frame_uid, series_uid = _references(ds)
        rois = _rois(path, ds)
    series = find_series(path, series_uid, reference)
    with _malformed(path):
        check_frame_of_reference(path, frame_uid, series)
        theirs = frame_of_reference(series)
        for number, (name, roi_frame) in rois.items():
            if roi_frame and theirs and roi_frame != theirs:
                raise VolumeReadError(
                    f"{path}: ROI {number} ({name}) is in frame of reference "
                    f"{uid_text(roi_frame)}, its series in {uid_text(theirs)}"
                )
        out, segments, skipped = rasterise(path, ds, series, rois)
    meta: dict[str, Any] = {
        "rtstruct": {
            "sop_instance_uid": uid_text(ds.get("SOPInstanceUID")),
            "referenced_series_uid": series.info.uid,
            "reference": str(Path(series.info.files[0]).parent),
            "roi_numbers": list(rois),
        },
        "series_uid": series.info.uid,
        "skipped_contours": skipped,
    }
    set_segments(meta, segments)
    return Volume(out.transpose(2, 1, 0), series.affine, "other", meta, str(path))


def _references(ds: Dataset) -> tuple[str | None, str | None]:
    frame_uid = series_uid = None
    for frame in ds.get("ReferencedFrameOfReferenceSequence") or []:
        frame_uid = frame_uid or (str(frame.get("FrameOfReferenceUID") or "") or None)
        for study in frame.get("RTReferencedStudySequence") or []:
            for series in study.get("RTReferencedSeriesSequence") or []:
                series_uid = series_uid or (str(series.get("SeriesInstanceUID") or "") or None)
    return frame_uid, series_uid


def _rois(path: Path, ds: Dataset) -> dict[int, tuple[str, str]]:
    """ROI number → (name, frame of reference UID), in the file's order."""
    rois: dict[int, tuple[str, str]] = {}
    for item in ds.get("StructureSetROISequence") or []:
        number = int(item.ROINumber)
        if number in rois:
            raise VolumeReadError(f"{path}: ROI number {number} is used twice")
        name = clean_name(item.get("ROIName"), len(rois) + 1)
        rois[number] = (name, str(item.get("ReferencedFrameOfReferenceUID") or ""))
    if not rois:
        raise VolumeReadError(f"{path}: an RTSTRUCT without ROIs (no StructureSetROISequence)")
    if len(rois) > MAX_ROIS:
        raise VolumeReadError(f"{path}: {len(rois)} ROIs, more than {MAX_ROIS}")
    return rois

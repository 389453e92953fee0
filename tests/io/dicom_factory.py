"""Write small synthetic DICOM series with known geometry (test data for readers and CLI).

Usage from any test (``tests`` and ``tests/io`` are packages)::

    from tests.io.dicom_factory import ramp_kji, write_series

    expected = write_series(tmp_path / "ct", stored_kji, spacing=(0.8, 0.9, 2.5))
    vol = load_dicom(tmp_path / "ct")
    np.testing.assert_allclose(vol.affine, expected["affine_ras"])
    np.testing.assert_array_equal(vol.array, expected["array"])

Geometry is written, and expected, in DICOM's LPS frame; ``affine_ras`` is the same matrix
with its x and y rows negated. The expectations are computed analytically from the
arguments (not by sorting what was written), so a reader cannot agree with them by sharing
a bug with the factory.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "OT": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
}
ENHANCED_SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
}
#: Fake identity written into every file; readers must not copy it into metadata.
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PHI-12345"


def _ds(s: Sequence[float]) -> list[str]:
    """Numbers as DICOM decimal strings (≤ 16 characters, exact enough for 1e-6 mm)."""
    return [f"{v:.10g}" for v in s]


def _base(modality: str, sop_class: str, series_uid: str, study_uid: str, fe_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = fe_uid
    ds.Modality = modality
    return ds


def _set_pixels(ds: Dataset, stored: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[-2]), int(stored.shape[-1])
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<")).tobytes()


def write_series(
    folder: str | Path,
    array_kji: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (0.8, 0.9, 2.5),
    origin: Sequence[float] = (-10.0, 20.0, 30.0),
    row_dir: Sequence[float] = (1.0, 0.0, 0.0),
    col_dir: Sequence[float] = (0.0, 1.0, 0.0),
    slope: float = 1.0,
    intercept: float = 0.0,
    modality: str = "CT",
    description: str = "synthetic",
    series_number: int = 1,
    series_uid: str | None = None,
    study_uid: str | None = None,
    shuffle_names: bool = True,
    instance_order: str = "ascending",
    drop_slices: Sequence[int] = (),
    multiframe: bool = False,
    gantry_tilt_deg: float = 0.0,
    slice_thickness: float | None = None,
    window: tuple[float, float] | None = (40.0, 400.0),
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``array_kji`` as a DICOM series (one file per slice, or one enhanced file).

    Args:
        folder: created if needed; files are named ``IM<n>.dcm``.
        array_kji: **stored** values ``(k, j, i)`` = (slice, row, column), int16 or uint16.
            Slice ``k`` is written at ``origin + k * step``.
        spacing: ``(column spacing, row spacing, slice step)`` in mm, i.e. PixelSpacing[1],
            PixelSpacing[0] and the signed distance between consecutive slices along the
            normal ``row_dir × col_dir``. A negative step makes positions run against the
            normal, so readers must reverse the slices.
        origin: ImagePositionPatient of slice ``k = 0`` (LPS mm).
        row_dir: unit direction (LPS) along a row (increasing column ``i``).
        col_dir: unit direction (LPS) down a column (increasing row ``j``).
        slope: RescaleSlope (real value = stored × slope + intercept).
        intercept: RescaleIntercept.
        modality: "CT", "MR" or "OT".
        description: SeriesDescription.
        series_number: SeriesNumber.
        series_uid: SeriesInstanceUID (a new one if None).
        study_uid: StudyInstanceUID (a new one if None).
        shuffle_names: name files in a random order unrelated to position.
        instance_order: "ascending" (InstanceNumber grows with ``k``) or "descending".
        drop_slices: slice indices ``k`` not written (to make gaps).
        multiframe: write one Enhanced CT/MR file with functional groups; per-frame
            groups are stored in a shuffled order (with the pixel frames to match).
        gantry_tilt_deg: shift each slice along ``col_dir`` by ``step × tan(tilt)`` so that
            positions leave the normal, as on a tilted CT gantry.
        slice_thickness: SliceThickness written (defaults to ``|step|``).
        window: (WindowCenter, WindowWidth) or None.
        seed: for the shuffles.

    Returns:
        ``{"affine_lps", "affine_ras"}``: expected 4×4 voxel → world matrices;
        ``"array"``: expected values ``(i, j, k)`` in reader order (all slices, including
        dropped ones); ``"positions"``: ``(n, 3)`` IPP per input slice ``k``;
        ``"files"``: the written paths by input ``k`` (None for dropped);
        ``"series_uid"``, ``"normal"``, ``"step"`` (LPS mm).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stored = np.asarray(array_kji)
    if stored.dtype not in (np.int16, np.uint16):
        raise ValueError(f"array_kji must be int16 or uint16, got {stored.dtype}")
    n = stored.shape[0]
    row, col = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row, col)
    sx, sy, sz = spacing
    step = sz * normal + abs(sz) * np.tan(np.radians(gantry_tilt_deg)) * col
    origin = np.asarray(origin, float)
    positions = origin + np.outer(np.arange(n), step)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    fe_uid = generate_uid()
    rng = random.Random(seed)
    keep = [k for k in range(n) if k not in set(drop_slices)]
    iop = _ds([*row, *col])
    thickness = abs(sz) if slice_thickness is None else slice_thickness

    def common(ds: Dataset) -> None:
        ds.SeriesDescription = description
        ds.SeriesNumber = series_number
        ds.Manufacturer = "napari_unet tests"
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"

    files: list[Path | None] = [None] * n
    if multiframe:
        sop = ENHANCED_SOP_CLASS[modality]
        ds = _base(modality, sop, series_uid, study_uid, fe_uid)
        common(ds)
        frame_order = keep[:]
        if shuffle_names:
            rng.shuffle(frame_order)
        ds.NumberOfFrames = len(frame_order)
        shared = Dataset()
        measures = Dataset()
        measures.PixelSpacing = _ds([sy, sx])
        measures.SliceThickness = f"{thickness:g}"
        shared.PixelMeasuresSequence = DicomSequence([measures])
        orient = Dataset()
        orient.ImageOrientationPatient = iop
        shared.PlaneOrientationSequence = DicomSequence([orient])
        value = Dataset()
        value.RescaleSlope, value.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        value.RescaleType = "HU" if modality == "CT" else "US"
        shared.PixelValueTransformationSequence = DicomSequence([value])
        ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
        per = []
        for k in frame_order:
            item, pos = Dataset(), Dataset()
            pos.ImagePositionPatient = _ds(positions[k])
            item.PlanePositionSequence = DicomSequence([pos])
            per.append(item)
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(per)
        _set_pixels(ds, stored[frame_order])
        path = folder / "IM1.dcm"
        ds.save_as(path, enforce_file_format=True)
        for k in keep:
            files[k] = path
    else:
        names = list(range(1, len(keep) + 1))
        if shuffle_names:
            rng.shuffle(names)
        for number, (k, name) in enumerate(zip(keep, names, strict=True), start=1):
            ds = _base(modality, SOP_CLASS[modality], series_uid, study_uid, fe_uid)
            common(ds)
            ds.InstanceNumber = number if instance_order == "ascending" else len(keep) + 1 - number
            ds.ImagePositionPatient = _ds(positions[k])
            ds.ImageOrientationPatient = iop
            ds.PixelSpacing = _ds([sy, sx])
            ds.SliceThickness = f"{thickness:g}"
            ds.SliceLocation = f"{positions[k] @ normal:.6g}"
            if gantry_tilt_deg:
                ds.GantryDetectorTilt = f"{gantry_tilt_deg:g}"
            ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
            ds.RescaleType = "HU" if modality == "CT" else "US"
            _set_pixels(ds, stored[k])
            path = folder / f"IM{name}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files[k] = path

    values = stored.astype(np.float64) * slope + intercept
    first, kstep = origin, step
    if sz < 0:  # readers order slices along the normal: reverse
        values, first, kstep = values[::-1], positions[-1], -step
    affine = np.eye(4)
    affine[:3, 0] = row * sx
    affine[:3, 1] = col * sy
    affine[:3, 2] = kstep
    affine[:3, 3] = first
    return {
        "affine_lps": affine,
        "affine_ras": np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine,
        "array": values.transpose(2, 1, 0),
        "positions": positions,
        "files": files,
        "series_uid": series_uid,
        "normal": normal,
        "step": kstep,
    }


def ramp_kji(shape: tuple[int, int, int] = (8, 12, 16), seed: int = 0) -> np.ndarray:
    """Stored int16 test values ``(k, j, i)``: distinct per slice, row and column + noise."""
    k, j, i = np.indices(shape)
    noise = np.random.default_rng(seed).integers(0, 7, size=shape)
    return (1000 * k + 37 * j + i + noise - 2000).astype(np.int16)


def oblique_dirs(
    angles_deg: tuple[float, float, float] = (20.0, -15.0, 35.0),
) -> tuple[np.ndarray, np.ndarray]:
    """A (row_dir, col_dir) pair: the LPS axes rotated about x, y then z."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    return rot[:, 0], rot[:, 1]


# --- damaging files (hostile cases) -------------------------------------------------------


def edit_file(path: str | Path, edit: Callable[[Dataset], Any]) -> Path:
    """Read ``path``, apply ``edit(ds)`` and write it back (pydicom's value checks off)."""
    ds = pydicom.dcmread(path)
    with pydicom.config.disable_value_validation():
        edit(ds)
        ds.save_as(path)
    return Path(path)


def set_raw(ds: Dataset, keyword: str, vr: str, value: bytes) -> None:
    """Store ``value`` as the raw bytes of tag ``keyword`` with ``vr`` (any garbage goes)."""
    tag = Tag(keyword)
    if len(value) % 2:
        value += b" " if vr in ("IS", "DS", "CS", "LO", "SH", "UI", "ST", "LT") else b"\0"
    ds._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


def truncate(path: str | Path, keep: int) -> Path:
    """Cut ``path`` to its first ``keep`` bytes (a negative ``keep`` drops that many)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:keep])
    return Path(path)


def file_meta_end(path: str | Path) -> int:
    """Byte offset where the dataset starts, after the preamble and the file meta group."""
    data = Path(path).read_bytes()
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    return 132 + 12 + int.from_bytes(data[140:144], "little")


def write_encapsulated(
    path: str | Path, syntax: str, *, frames: int, fragments: Sequence[bytes], rows: int = 4
) -> Path:
    """One file with ``syntax`` (a compressed transfer syntax UID) and the given fragments.

    The fragments need not be valid compressed data: readers must refuse the file before
    (or when) decoding it. Geometry is a plain axial slice stack.
    """
    ds = _base("CT", SOP_CLASS["CT"], generate_uid(), generate_uid(), generate_uid())
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = "compressed", 1, 1
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = rows
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    if frames != 1:
        ds.NumberOfFrames = frames
        ds.GridFrameOffsetVector = [float(k) for k in range(frames)]
    ds.PixelData = encapsulate([bytes(f) + b"\0" * (len(f) % 2) for f in fragments])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def make_rgb(path: str | Path) -> Path:
    """Turn a written slice into an 8-bit RGB one (SamplesPerPixel 3) of the same size."""

    def edit(ds: Dataset) -> None:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = bytes(range(256))[: ds.Rows * ds.Columns * 3].ljust(
            ds.Rows * ds.Columns * 3, b"\1"
        )

    return edit_file(path, edit)

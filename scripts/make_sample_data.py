"""Regenerate ``sample_data/``: the CT-like phantom as NIfTI and as a small DICOM CT series.

Usage::

    python scripts/make_sample_data.py [--out sample_data]

Writes, from `napari_unet.samples.phantom.make_ct_abdomen` (seed 7, no download):

* ``ct_abdomen.nii.gz``: the image, int16 HU, 192 × 144 × 48 voxels (i → L, j → P,
  k → S), 1.6 × 1.6 × 3.0 mm;
* ``ct_abdomen_labels.nii.gz``: its label map on the same grid, uint8 (1 liver,
  2 kidney, 3 spleen);
* ``ct_abdomen_dicom/``: a CT series (CT Image Storage, one file per slice) of the same
  phantom, every second voxel in-plane (96 × 72, 3.2 × 3.2 mm) and the 16 middle slices
  (k = 16 … 31, 3.0 mm apart): voxel ``(i, j, k)`` of the series is voxel
  ``(2 i, 2 j, 16 + k)`` of the NIfTI image, at the same point in space, with the same HU.

The output is deterministic: the phantom is seeded, gzip headers carry no time stamp,
DICOM UIDs are derived from fixed names (UUID-derived ``2.25.`` UIDs, version 5) and the
DICOM dates are fixed. The same library versions give the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian

from napari_unet.io.volume import Volume
from napari_unet.samples.phantom import make_ct_abdomen

REPO = Path(__file__).resolve().parents[1]
SEED = 7
#: The DICOM series: every ``STRIDE``-th voxel in-plane, slices ``FIRST_SLICE`` onwards.
STRIDE = 2
FIRST_SLICE = 16
N_SLICES = 16
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Fixed so that the files are reproducible (not the date they were made).
DICOM_DATE, DICOM_TIME = "20250101", "120000"
#: The series' pixels are stored unsigned: stored = HU - RESCALE_INTERCEPT.
RESCALE_INTERCEPT = -1024


def uid(name: str) -> str:
    """A UUID-derived DICOM UID (``2.25.<decimal UUID>``, PS3.5 B.2), stable for ``name``."""
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, f"napari-unet:sample_data/{name}").int)


def write_nifti(volume: Volume, path: Path, description: str) -> Path:
    """Write ``volume`` as gzipped NIfTI-1 with its affine as qform and sform (code 1,
    scanner), no scaling, and a gzip header without time stamp or file name."""
    img = nib.Nifti1Image(np.asarray(volume.array), volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    img.set_data_dtype(volume.array.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = description.encode("ascii")[:79]
    data = gzip.compress(img.to_bytes(), compresslevel=9, mtime=0)
    path.write_bytes(data)
    return path


def series_geometry(image: Volume) -> tuple[np.ndarray, np.ndarray]:
    """(the series' voxel array ``(i, j, k)`` in HU, its RAS affine) taken from ``image``."""
    sub = image.array[::STRIDE, ::STRIDE, FIRST_SLICE : FIRST_SLICE + N_SLICES]
    pick = np.diag([STRIDE, STRIDE, 1, 1]).astype(np.float64)
    pick[2, 3] = FIRST_SLICE
    return np.ascontiguousarray(sub), image.affine @ pick


def _common_dataset() -> Dataset:
    """Patient, study, series, frame of reference, equipment: the same in every file."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Phantom^CT Abdomen"
    ds.PatientID = "NAPARI-UNET-PHANTOM"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = uid("ct_abdomen/study")
    ds.StudyDate, ds.StudyTime = DICOM_DATE, DICOM_TIME
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "napari-unet sample data"
    ds.Modality = "CT"
    ds.SeriesInstanceUID = uid("ct_abdomen/series")
    ds.SeriesNumber = 1
    ds.SeriesDate, ds.SeriesTime = DICOM_DATE, DICOM_TIME
    ds.SeriesDescription = f"CT-like abdomen phantom (seed {SEED}), 3.2 mm in-plane"
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = uid("ct_abdomen/frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "napari-unet"
    ds.ManufacturerModelName = "scripts/make_sample_data.py"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.KVP = ""
    ds.AcquisitionNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = RESCALE_INTERCEPT, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    return ds


def slice_dataset(common: Dataset, hu: np.ndarray, affine_ras: np.ndarray, k: int) -> Dataset:
    """The CT Image Storage dataset of slice ``k`` of the series.

    Args:
        common: from `_common_dataset` (copied, not changed).
        hu: the series' voxels ``(i, j, k)`` in HU.
        affine_ras: the series' voxel → world (RAS, mm) matrix.
        k: the slice index.
    """
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras  # DICOM's patient frame is LPS
    row_dir = lps[:3, 0] / np.linalg.norm(lps[:3, 0])  # along a row: increasing i
    col_dir = lps[:3, 1] / np.linalg.norm(lps[:3, 1])  # down a column: increasing j
    position = lps[:3, :3] @ [0.0, 0.0, float(k)] + lps[:3, 3]
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    ds = Dataset()
    ds.update(common)
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = uid(f"ct_abdomen/slice/{k}")
    ds.InstanceNumber = k + 1
    ds.ContentDate, ds.ContentTime = DICOM_DATE, DICOM_TIME
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
    ds.SliceLocation = _ds(position[2])
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (j), column (i)
    ds.SliceThickness = _ds(spacing[2])
    ds.SpacingBetweenSlices = _ds(spacing[2])
    ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
    stored = hu[:, :, k].T.astype(np.int32) - RESCALE_INTERCEPT  # (rows = j, columns = i)
    if stored.min() < 0 or stored.max() >= 2**ds.BitsStored:
        raise ValueError(f"slice {k}: HU outside [-1024, 3071] do not fit 12 stored bits")
    ds.PixelData = stored.astype("<u2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = uid("implementation")
    meta.ImplementationVersionName = "NAPARI_UNET"
    ds.file_meta = meta
    return ds


def _ds(value: float) -> str:
    """A DICOM decimal string (≤ 16 characters) exact to 1e-6 mm for these numbers."""
    text = f"{float(value):.8g}"
    return "0" if text == "-0" else text


def write_dicom_series(image: Volume, folder: Path) -> list[Path]:
    """Write the series (see module docstring) as ``IM0001.dcm`` … into ``folder``."""
    hu, affine = series_geometry(image)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.dcm"):
        old.unlink()
    common = _common_dataset()
    paths = []
    for k in range(hu.shape[2]):
        path = folder / f"IM{k + 1:04d}.dcm"
        dcmwrite(path, slice_dataset(common, hu, affine, k), enforce_file_format=True)
        paths.append(path)
    return paths


def make_sample_data(out: Path) -> list[Path]:
    """Write every sample file into ``out`` (created if missing); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    sample = make_ct_abdomen(seed=SEED)
    what = f"napari-unet CT-like abdominal phantom (seed {SEED})"
    labels_what = f"{what}: 1 liver, 2 kidney, 3 spleen"
    paths = [
        write_nifti(sample.image, out / "ct_abdomen.nii.gz", what),
        write_nifti(sample.labels, out / "ct_abdomen_labels.nii.gz", labels_what),
    ]
    paths += write_dicom_series(sample.image, out / "ct_abdomen_dicom")
    return paths


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--out FOLDER`` (default: the repository's ``sample_data``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "sample_data")
    args = parser.parse_args(argv)
    paths = make_sample_data(args.out)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files, {total / 2**20:.2f} MiB, into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

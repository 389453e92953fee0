"""Source series for SEG / RTSTRUCT tests: orientations, full study context, label maps.

Builds on `tests.io.dicom_factory.write_series` (not edited): the series here also carry
the patient and study attributes a real scanner writes (study date, time, ID …), so that
`dciodvfy` judges our objects, not the synthetic source.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from tests.io.dicom_factory import edit_file, oblique_dirs, ramp_kji, write_series

#: Geometries of the source series: keyword arguments of `write_series`.
ORIENTATIONS: dict[str, dict[str, Any]] = {
    "axial": {"spacing": (0.8, 0.9, 2.5)},
    "oblique": dict(
        zip(("row_dir", "col_dir"), oblique_dirs(), strict=True), spacing=(0.7, 0.8, 2.0)
    ),
    "lps_negative_step": {"spacing": (0.8, 0.9, -2.5), "origin": (40.0, -30.0, 12.0)},
    "coronal": {
        "row_dir": (1.0, 0.0, 0.0),
        "col_dir": (0.0, 0.0, -1.0),
        "spacing": (1.0, 1.2, 3.0),
    },
    "multiframe": {"multiframe": True, "spacing": (0.8, 0.9, 2.5)},
}

STUDY = {
    "StudyDate": "20240102",
    "StudyTime": "101500",
    "StudyID": "S1",
    "AccessionNumber": "A1",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "ReferringPhysicianName": "",
    "PositionReferenceIndicator": "",
}


def write_source_series(
    folder: str | Path, orientation: str = "axial", *, shape_kji=(7, 18, 20), **kwargs: Any
) -> dict[str, Any]:
    """A CT series with full study context; returns `write_series`'s expectations."""
    args = {**ORIENTATIONS[orientation], **kwargs}
    exp = write_series(folder, ramp_kji(shape_kji), **args)
    for path in {p for p in exp["files"] if p is not None}:
        edit_file(path, lambda ds: [setattr(ds, k, v) for k, v in STUDY.items()])
    return exp


def shipped_ct_series(folder: str | Path) -> Path | None:
    """pydicom's shipped 5-slice CT series (dicomdirtests/98892001/CT5N) copied into
    ``folder``, or None when this pydicom does not ship it."""
    import pydicom.data

    files = pydicom.data.get_testdata_files("dicomdirtests/98892001/CT5N/*")
    if len(files) != 5:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, folder / f"{Path(f).name}.dcm")
    return folder


def shipped_ct_slice(folder: str | Path) -> Path | None:
    """pydicom's CT_small.dcm (one 128×128 slice) copied into ``folder``."""
    import pydicom.data

    path = pydicom.data.get_testdata_file("CT_small.dcm", download=False)
    if path is None:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(path, folder / "CT_small.dcm")).parent


def label_map(shape_ijk: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Classes 1–3 (a ball with a hole, a box with a notch, a small blob) on ``shape``.

    Class 4 is described by the callers but left empty.
    """
    i, j, k = np.indices(shape_ijk)
    ni, nj, nk = shape_ijk
    out = np.zeros(shape_ijk, np.uint8)
    ball = (i - ni * 0.35) ** 2 + (j - nj * 0.45) ** 2 + ((k - nk / 2) * 2.5) ** 2 < (ni / 4) ** 2
    out[ball] = 1
    out[((i - ni * 0.35) ** 2 + (j - nj * 0.45) ** 2) < 2.5] = 0  # a hole through the ball
    out[int(ni * 0.7) : ni - 1, 1 : nj // 2, 1 : nk - 1] = 2
    out[int(ni * 0.8), 2 : nj // 4, :] = 0  # a notch
    rng = np.random.default_rng(seed)
    ci, cj = int(ni * 0.3), int(nj * 0.8)
    blob = (np.abs(i - ci) <= 1) & (np.abs(j - cj) <= 1) & (k == nk // 2)
    out[blob & (rng.random(shape_ijk) < 0.9)] = 3
    return out


NAMES = ["liver", "kidney", "tumour", "spleen"]
COLORS = ["#ff4b4b", "#4bd14b", "#4b8bff", "#ffd24b"]


def sitk_index(files: list[str], points_lps: np.ndarray) -> np.ndarray:
    """Continuous (i, j, k) of LPS points in SimpleITK's reading of the series."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    folder = str(Path(files[0]).parent)
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    image = reader.Execute()
    return np.array(
        [image.TransformPhysicalPointToContinuousIndex([float(v) for v in p]) for p in points_lps]
    )


def dataset(path: str | Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)

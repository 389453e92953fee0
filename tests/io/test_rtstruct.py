"""RTSTRUCT: labels → contours in patient space → labels, Dice ≥ 0.98 per class."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from napari_unet.evaluation.metrics import dice_per_class
from napari_unet.io.dicom import load_dicom
from napari_unet.io.labelmap import Algorithm, segments_of
from napari_unet.io.reader import load_volume
from napari_unet.io.rtstruct import read_rtstruct, write_rtstruct
from tests.io.dicom_series import (
    COLORS,
    NAMES,
    ORIENTATIONS,
    label_map,
    shipped_ct_series,
    sitk_index,
    write_source_series,
)


def _write(tmp_path, orientation="axial", algorithm=None, **kwargs):
    series = tmp_path / "study" / "ct"
    exp = write_source_series(series, orientation, **kwargs)
    scan = load_dicom(series)
    labels = scan.with_array(label_map(scan.shape))
    labels.metadata = {"label_names": list(NAMES), "label_colors": list(COLORS)}
    out = tmp_path / "study" / "rs" / "rtstruct.dcm"
    out.parent.mkdir()
    write_rtstruct(labels, series, out, algorithm=algorithm)
    return exp, labels, out


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_rtstruct_round_trip_dice_per_class(tmp_path, orientation):
    _exp, labels, out = _write(tmp_path, orientation)
    back = load_volume(out)  # the series is found in the folder above
    scores = dice_per_class(back.array, labels.array, 4)
    assert all(score >= 0.98 for score in scores), scores
    np.testing.assert_array_equal(back.array, labels.array)  # in fact exact
    assert [s.name for s in segments_of(back)] == NAMES
    assert [s.color for s in segments_of(back)] == COLORS


@pytest.mark.parametrize("orientation", ["axial", "oblique", "lps_negative_step"])
def test_contour_points_lie_between_voxel_centres_in_simpleitk_space(tmp_path, orientation):
    exp, labels, out = _write(tmp_path, orientation)
    files = [str(f) for f in exp["files"]]
    ds = pydicom.dcmread(out)
    for value, roi in enumerate(ds.ROIContourSequence, start=1):
        mask = labels.array == value
        for contour in getattr(roi, "ContourSequence", []):
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            ijk = sitk_index(files, points)
            k = np.round(ijk[:, 2])
            assert np.allclose(ijk[:, 2], k, atol=1e-4) and len(set(k)) == 1
            plane = np.pad(mask[:, :, int(k[0])], 1)
            # every vertex is half a voxel from an inside and from an outside voxel centre
            for i, j in ijk[:, :2] + 1:
                near = plane[
                    int(np.floor(i)) : int(np.ceil(i)) + 1, int(np.floor(j)) : int(np.ceil(j)) + 1
                ]
                assert near.any() and not near.all()


def test_rtstruct_structure_and_provenance(tmp_path):
    exp, _labels, out = _write(tmp_path, "oblique", algorithm=Algorithm("unet-2d", "feedbeef"))
    ds = pydicom.dcmread(out)
    src = pydicom.dcmread(exp["files"][0])
    assert ds.Modality == "RTSTRUCT" and ds.PatientID == src.PatientID
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == src.FrameOfReferenceUID
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == exp["series_uid"]
    assert len(series.ContourImageSequence) == len(exp["files"])
    rois = ds.StructureSetROISequence
    assert [r.ROIName for r in rois] == NAMES
    assert {r.ROIGenerationAlgorithm for r in rois} == {"SEMIAUTOMATIC"}
    assert "feedbeef" in rois[0].ROIGenerationDescription
    assert list(ds.ROIContourSequence[0].ROIDisplayColor) == [255, 75, 75]
    assert "ContourSequence" not in ds.ROIContourSequence[3]  # the empty class
    instances = {pydicom.dcmread(f).SOPInstanceUID for f in exp["files"]}
    for roi in ds.ROIContourSequence[:3]:
        for contour in roi.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID in instances


def test_rtstruct_over_pydicoms_shipped_ct_series(tmp_path):
    series = shipped_ct_series(tmp_path / "ct5n")
    if series is None:
        pytest.skip("this pydicom does not ship dicomdirtests/98892001/CT5N")
    scan = load_dicom(series)
    labels = scan.with_array(label_map(scan.shape))
    out = write_rtstruct(labels, series, tmp_path / "rs.dcm")
    back = read_rtstruct(out, reference=series)
    scores = dice_per_class(back.array, labels.array, 4)
    assert all(score is None or score >= 0.98 for score in scores), scores


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_dciodvfy_finds_no_error_in_our_rtstruct(tmp_path):
    _, _, out = _write(tmp_path, "axial", algorithm=Algorithm("unet-2d", "feedbeef"))
    report = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True)
    lines = (report.stdout + report.stderr).splitlines()
    assert "RTStructureSet" in lines
    assert not [line for line in lines if line.startswith("Error")], lines

"""DICOM SEG: labels → SEG → labels is the identity, in world space, valid DICOM."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from napari_unet.io.dicom import load_dicom
from napari_unet.io.dicom_seg import read_dicom_seg, write_dicom_seg
from napari_unet.io.labelmap import Algorithm, segments_of
from napari_unet.io.reader import load_volume
from tests.io.dicom_series import (
    COLORS,
    NAMES,
    ORIENTATIONS,
    label_map,
    shipped_ct_series,
    shipped_ct_slice,
    sitk_index,
    write_source_series,
)

hd = pytest.importorskip("highdicom")

MODEL = Algorithm("unet-2d", "0123456789abcdef")


def _labels(scan, array=None):
    labels = scan.with_array(label_map(scan.shape) if array is None else array)
    labels.metadata = {"label_names": list(NAMES), "label_colors": list(COLORS)}
    return labels


def _round_trip(tmp_path: Path, series: Path, kind: str = "binary", algorithm=MODEL):
    scan = load_dicom(series)
    labels = _labels(scan)
    out = tmp_path / "seg" / "seg.dcm"
    out.parent.mkdir(exist_ok=True)
    write_dicom_seg(labels, series, out, algorithm=algorithm, segmentation_type=kind)
    return scan, labels, out, read_dicom_seg(out)


def _world_check(seg_path: Path, labels: np.ndarray, files: list[str]) -> None:
    """highdicom's reading of the SEG, placed in world space, against SimpleITK's reading
    of the source series: every labelled voxel lands on the same voxel with the same class."""
    volume = hd.seg.segread(seg_path).get_volume(combine_segments=True)
    s, r, c = np.nonzero(volume.array)
    world = np.column_stack([s, r, c, np.ones_like(s)]) @ volume.affine.T
    ijk = sitk_index(files, world[:, :3])
    np.testing.assert_allclose(ijk, np.round(ijk), atol=1e-3)
    i, j, k = np.round(ijk).astype(int).T
    np.testing.assert_array_equal(labels[i, j, k], volume.array[s, r, c])
    assert len(s) == np.count_nonzero(labels)


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_seg_round_trip_is_identity_in_every_orientation(tmp_path, orientation):
    series = tmp_path / "ct"
    exp = write_source_series(series, orientation)
    scan, labels, out, back = _round_trip(tmp_path, series)
    np.testing.assert_array_equal(back.array, labels.array)
    np.testing.assert_allclose(back.affine, scan.affine, atol=1e-9)
    np.testing.assert_allclose(back.affine, exp["affine_ras"], atol=1e-6)
    assert [s.name for s in segments_of(back)] == NAMES  # the empty class survives
    assert [s.color for s in segments_of(back)] == COLORS
    if orientation != "multiframe":  # SimpleITK reads a multi-frame file in stored order
        _world_check(out, labels.array, [str(f) for f in exp["files"]])


def test_seg_carries_the_source_references_and_context(tmp_path):
    series = tmp_path / "ct"
    exp = write_source_series(series, "lps_negative_step")
    *_, out, _ = _round_trip(tmp_path, series)
    ds = pydicom.dcmread(out)
    src = pydicom.dcmread(exp["files"][0])
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyID"):
        assert ds[keyword].value == src[keyword].value
    (ref_series,) = ds.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == exp["series_uid"]
    sources = {pydicom.dcmread(f).SOPInstanceUID for f in exp["files"]}
    assert {i.ReferencedSOPInstanceUID for i in ref_series.ReferencedInstanceSequence} == sources
    for frame in ds.PerFrameFunctionalGroupsSequence:  # each frame names its source slice
        (derivation,) = frame.DerivationImageSequence
        (source,) = derivation.SourceImageSequence
        assert source.ReferencedSOPInstanceUID in sources
    segment = ds.SegmentSequence[0]
    assert segment.SegmentLabel == "liver"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Liver"
    assert segment.SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert segment.SegmentAlgorithmName == "unet-2d"
    assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == MODEL.version
    rgb = hd.color.CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue).to_rgb()
    assert rgb == (0xFF, 0x4B, 0x4B)
    assert len(ds.SegmentSequence) == 4  # spleen is empty but described


def test_manual_labels_are_marked_manual(tmp_path):
    series = tmp_path / "ct"
    write_source_series(series)
    _, _, out, _ = _round_trip(tmp_path, series, algorithm=None)
    ds = pydicom.dcmread(out)
    assert {s.SegmentAlgorithmType for s in ds.SegmentSequence} == {"MANUAL"}
    assert "SegmentationAlgorithmIdentificationSequence" not in ds.SegmentSequence[0]


def test_labelmap_seg_round_trip(tmp_path):
    series = tmp_path / "ct"
    write_source_series(series, "oblique")
    _, labels, out, back = _round_trip(tmp_path, series, kind="labelmap")
    assert pydicom.dcmread(out).SegmentationType == "LABELMAP"
    np.testing.assert_array_equal(back.array, labels.array)
    # highdicom reads our label map SEG back
    seg = hd.seg.segread(out)
    assert [seg.get_segment_description(n).segment_label for n in (1, 2, 3)] == NAMES[:3]


def test_empty_labels_give_a_readable_seg(tmp_path):
    series = tmp_path / "ct"
    write_source_series(series)
    scan = load_dicom(series)
    labels = _labels(scan, np.zeros(scan.shape, np.uint8))
    out = write_dicom_seg(labels, series, tmp_path / "empty.dcm")
    back = read_dicom_seg(out, reference=series)
    assert not back.array.any() and [s.name for s in segments_of(back)] == NAMES


def test_seg_over_pydicoms_shipped_ct_series(tmp_path):
    series = shipped_ct_series(tmp_path / "study" / "ct5n")
    if series is None:
        pytest.skip("this pydicom does not ship dicomdirtests/98892001/CT5N")
    scan = load_dicom(series)
    labels = _labels(scan, label_map(scan.shape))
    out = tmp_path / "study" / "seg.dcm"
    write_dicom_seg(labels, series, out, algorithm=MODEL)
    back = load_volume(out)  # the series is found beside the SEG
    np.testing.assert_array_equal(back.array, labels.array)
    _world_check(out, labels.array, sorted(str(p) for p in series.iterdir()))


def test_seg_over_pydicoms_single_ct_slice(tmp_path):
    series = shipped_ct_slice(tmp_path / "ct1")
    if series is None:
        pytest.skip("CT_small.dcm is not shipped with this pydicom")
    scan = load_dicom(series)
    array = np.zeros(scan.shape, np.uint8)
    array[30:90, 40:70, 0] = 1
    labels = _labels(scan, array)
    out = write_dicom_seg(labels, series, tmp_path / "seg1.dcm")
    np.testing.assert_array_equal(read_dicom_seg(out, reference=series).array, array)


def test_seg_refuses_labels_on_another_grid(tmp_path):
    series = tmp_path / "ct"
    write_source_series(series)
    scan = load_dicom(series)
    shifted = _labels(scan)
    shifted.affine = scan.affine.copy()
    shifted.affine[0, 3] += 1.0
    with pytest.raises(Exception, match="not on the grid of the DICOM series"):
        write_dicom_seg(shifted, series, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
@pytest.mark.parametrize("orientation", ["axial", "oblique", "multiframe"])
def test_dciodvfy_finds_no_error_in_our_binary_seg(tmp_path, orientation):
    series = tmp_path / "ct"
    write_source_series(series, orientation)
    _, _, out, _ = _round_trip(tmp_path, series)
    report = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True)
    lines = (report.stdout + report.stderr).splitlines()
    assert "Segmentation" in lines
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, errors


def test_a_seg_chosen_among_a_folders_series_opens_on_its_series(tmp_path):
    from napari_unet.errors import MultipleSeriesError

    series = tmp_path / "study" / "ct"
    write_source_series(series)
    scan, labels, out, _ = _round_trip(tmp_path, series)
    shutil.copy(out, tmp_path / "study" / "seg.dcm")
    with pytest.raises(MultipleSeriesError) as error:
        load_volume(tmp_path / "study")
    seg_uid = next(s.uid for s in error.value.series if s.modality == "SEG")
    back = load_volume(tmp_path / "study", series_uid=seg_uid)
    np.testing.assert_array_equal(back.array, labels.array)
    np.testing.assert_allclose(back.affine, scan.affine)


def test_overlapping_segments_of_another_tool_keep_the_higher_number(tmp_path):
    from pydicom.sr.codedict import codes

    series = tmp_path / "ct"
    exp = write_source_series(series, shape_kji=(3, 8, 8))
    sources = [pydicom.dcmread(f) for f in exp["files"]]
    stacked = np.zeros((3, 8, 8, 2), np.uint8)  # (frame, row, column, segment)
    stacked[1, 2:6, 2:6, 0] = 1
    stacked[1, 4:8, 4:8, 1] = 1  # overlaps segment 1 on 2×2 pixels
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n, name in ((1, "a"), (2, "b"))
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stacked,
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=5,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="another tool",
        manufacturer_model_name="x",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(tmp_path / "other.dcm")
    back = read_dicom_seg(tmp_path / "other.dcm", reference=series)
    assert back.metadata["overlapping_voxels"] == 4
    k = np.flatnonzero(back.array.any(axis=(0, 1)))
    assert len(k) == 1
    plane = back.array[:, :, k[0]].T  # (row, column)
    assert (plane == 2).sum() == 16 and (plane == 1).sum() == 12

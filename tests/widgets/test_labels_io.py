"""Label maps in napari: open as labels the loop can use, save as .seg.nrrd, export to DICOM."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest

import napari_unet._reader as reader
from napari_unet.io.display import METADATA_KEY
from napari_unet.io.labelmap import segments_of
from napari_unet.io.nrrd import load_nrrd, save_seg_nrrd
from napari_unet.io.reader import load_volume
from napari_unet.io.volume import Volume
from napari_unet.loop import Loop
from tests.io.dicom_series import label_map, write_source_series

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def errors(monkeypatch):
    found: list[str] = []
    monkeypatch.setattr(reader, "_notify_error", found.append)
    return found


def _truth(scan_path) -> np.ndarray:
    return label_map(nib.load(scan_path).shape)


def _ours(scan_path, out) -> None:
    loop = Loop(load_volume(scan_path))
    loop.labels[...] = _truth(scan_path)
    loop.export(out)


def _other_tool(scan_path, out) -> None:
    """As another tool writes it: int16, its own float32 copy of the affine, qform only."""
    affine = nib.load(scan_path).affine.astype(np.float32)
    img = nib.Nifti1Image(_truth(scan_path).astype(np.int16), affine)
    img.set_qform(affine, code=1)
    img.set_sform(None, code=0)
    nib.save(img, out)


def _choose(panel, layer):
    combo = panel.segment_section.labels_combo
    combo.setCurrentIndex(combo.findText(layer.name))
    combo.activated.emit(combo.findText(layer.name))


@pytest.mark.parametrize("writer", [_ours, _other_tool], ids=["exported-by-us", "nibabel"])
def test_a_label_nifti_reopens_as_labels_that_the_loop_uses(panel, tiny_scan, tmp_path, writer):
    scan_path = tiny_scan[0]
    labels_path = tmp_path / "seg.nii.gz"
    writer(scan_path, labels_path)
    (image,) = panel.viewer.open(str(scan_path), plugin="napari-unet")
    panel.session.require_image()
    (layer,) = panel.viewer.open(str(labels_path), plugin="napari-unet")
    assert type(layer).__name__ == "Labels" and layer.name == "seg"
    assert tuple(layer.scale) == tuple(image.scale)
    assert tuple(layer.translate) == tuple(image.translate)
    assert layer.metadata[METADATA_KEY]["native_shape"] == list(nib.load(scan_path).shape)
    _choose(panel, layer)
    assert panel.session.labels_layer is layer
    np.testing.assert_array_equal(panel.session.loop.labels, _truth(scan_path))
    layer.paint((5, 10, 10), 2, refresh=True)  # painting writes into the loop's labels
    assert panel.session.loop.labels.sum() != _truth(scan_path).sum()


def test_open_labels_forces_labels_for_a_float_label_map(panel, tiny_scan, tmp_path):
    from napari_unet._widgets.open_labels import open_labels

    scan_path = tiny_scan[0]
    path = tmp_path / "float_labels.nii.gz"
    nib.save(
        nib.Nifti1Image(_truth(scan_path).astype(np.float32), nib.load(scan_path).affine), path
    )
    panel.viewer.open(str(scan_path), plugin="napari-unet")
    (auto,) = panel.viewer.open(str(path), plugin="napari-unet")
    assert type(auto).__name__ == "Image"  # float voxels: not unambiguously labels
    layer = open_labels(panel.viewer, path, session=panel.session)
    assert type(layer).__name__ == "Labels" and panel.session.labels_layer is layer
    np.testing.assert_array_equal(panel.session.loop.labels, _truth(scan_path))


def test_labels_on_another_grid_are_refused_with_the_reason(
    make_napari_viewer, tiny_scan, tmp_path, errors
):
    scan_path = tiny_scan[0]
    viewer = make_napari_viewer()
    viewer.open(str(scan_path), plugin="napari-unet")
    affine = nib.load(scan_path).affine.copy()
    affine[0, 3] += 4.0
    path = tmp_path / "moved.nii.gz"
    nib.save(nib.Nifti1Image(_truth(scan_path), affine), path)
    assert viewer.open(str(path), plugin="napari-unet") == []
    assert len(errors) == 1 and "moved.nii.gz" in errors[0]
    assert "another grid than the open scan" in errors[0] and "mm away" in errors[0]


def test_a_cropped_slicer_segmentation_is_placed_on_its_scan(
    make_napari_viewer, tiny_scan, tmp_path
):
    scan_path = tiny_scan[0]
    viewer = make_napari_viewer()
    viewer.open(str(scan_path), plugin="napari-unet")
    scan = load_volume(scan_path)
    crop = np.zeros((10, 8, 4), np.uint8)
    crop[2:6, 2:5, 1:3] = 1
    affine = scan.affine.copy()
    affine[:3, 3] = scan.affine[:3, :3] @ [15, 12, 3] + scan.affine[:3, 3]
    cropped = Volume(crop, affine, metadata={"label_names": ["lesion"]})
    path = save_seg_nrrd(cropped, tmp_path / "crop.seg.nrrd")
    (layer,) = viewer.open(str(path), plugin="napari-unet")
    native = layer.metadata[METADATA_KEY]
    assert native["native_shape"] == list(scan.shape)
    assert native["label_names"] == ["lesion"]
    assert layer.features["name"].tolist() == ["background", "lesion"]


def test_file_save_writes_a_slicer_segmentation_with_names(panel, tiny_scan, tmp_path):
    panel.viewer.open(str(tiny_scan[0]), plugin="napari-unet")
    panel.model_section.new_model(["tumour", "oedema"], spatial_dims=2)
    layer = panel.session.labels_layer
    layer.paint((5, 10, 10), 2, refresh=True)
    out = tmp_path / "saved.seg.nrrd"
    layer.save(str(out), plugin="napari-unet")
    back = load_nrrd(out)
    assert [s.name for s in segments_of(back)] == ["tumour", "oedema"]
    np.testing.assert_array_equal(back.array, panel.session.loop.labels)
    np.testing.assert_allclose(back.affine, nib.load(tiny_scan[0]).affine, atol=1e-6)
    assert b"Segment1_Name:=oedema" in out.read_bytes()[:4000]


@pytest.fixture
def dicom_scan(tmp_path):
    series = tmp_path / "study" / "ct"
    write_source_series(series, "lps_negative_step", shape_kji=(6, 24, 26))
    return series


def test_export_step_writes_every_format_over_the_dicom_series(panel, dicom_scan, tmp_path):
    pytest.importorskip("highdicom")
    panel.viewer.open(str(dicom_scan), plugin="napari-unet")
    panel.model_section.new_model(["liver", "kidney"], spatial_dims=2)
    truth = label_map(load_volume(dicom_scan).shape)
    truth[truth > 2] = 0
    panel.session.loop.labels[...] = truth
    section = panel.export_section
    assert [section.format_combo.itemData(i) for i in range(section.format_combo.count())] == [
        "nifti",
        "seg-nrrd",
        "dicom-seg",
        "rtstruct",
    ]
    out = tmp_path / "out"
    out.mkdir()
    for fmt, name in (
        ("nifti", "l.nii.gz"),
        ("seg-nrrd", "l.seg.nrrd"),
        ("dicom-seg", "seg.dcm"),
        ("rtstruct", "rs.dcm"),
    ):
        section.format_combo.setCurrentIndex(section.format_combo.findData(fmt))
        written = section.save_labels(out / name)
        back = load_volume(written, reference=dicom_scan)
        np.testing.assert_array_equal(back.array, truth)
        if fmt != "nifti":
            assert [s.name for s in segments_of(back)] == ["liver", "kidney"]
    seg = pydicom.dcmread(out / "seg.dcm")
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert seg.SegmentSequence[0].SegmentAlgorithmName == panel.session.model.spec.name
    version = panel.session.loop.current.hash
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmVersion == version


def test_dicom_export_of_a_nifti_scan_is_refused_with_a_reason(panel, tiny_scan, tmp_path):
    from napari_unet.errors import InputError

    panel.viewer.open(str(tiny_scan[0]), plugin="napari-unet")
    panel.model_section.new_model(["ball"], spatial_dims=2)
    with pytest.raises(InputError, match="not a DICOM series"):
        panel.export_section.save_labels(tmp_path / "x.dcm", "dicom-seg")


def test_a_seg_opens_on_its_series_with_names_and_the_loop_uses_it(panel, dicom_scan, tmp_path):
    pytest.importorskip("highdicom")
    from napari_unet.io.dicom_seg import write_dicom_seg

    scan = load_volume(dicom_scan)
    labels = scan.with_array(label_map(scan.shape))
    labels.metadata = {"label_names": ["liver", "kidney", "tumour"]}
    seg = tmp_path / "study" / "seg" / "seg.dcm"
    seg.parent.mkdir()
    write_dicom_seg(labels, dicom_scan, seg)
    (image,) = panel.viewer.open(str(dicom_scan), plugin="napari-unet")
    (layer,) = panel.viewer.open(str(seg), plugin="napari-unet")
    assert type(layer).__name__ == "Labels"
    assert layer.metadata[METADATA_KEY]["label_names"] == ["liver", "kidney", "tumour"]
    assert tuple(layer.translate) == tuple(image.translate)
    _choose(panel, layer)
    np.testing.assert_array_equal(panel.session.loop.labels, labels.array)


def _seg_over_another_frame(tmp_path, series):
    from napari_unet.io.dicom_seg import write_dicom_seg

    scan = load_volume(series)
    labels = scan.with_array(label_map(scan.shape))
    path = write_dicom_seg(labels, series, tmp_path / "study" / "bad_for.dcm")
    ds = pydicom.dcmread(path)
    ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
    ds.save_as(path)
    return path


def _bad_nrrd_header(tmp_path, series):
    path = tmp_path / "bad.nrrd"
    path.write_bytes(
        b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 4\nencoding: raw\n\n" + b"\0" * 64
    )
    return path


@pytest.mark.parametrize(
    ("make", "fragment"),
    [(_seg_over_another_frame, "frame of reference"), (_bad_nrrd_header, "bad NRRD header")],
    ids=["seg-other-frame-of-reference", "nrrd-bad-header"],
)
def test_malformed_label_files_give_a_notification_naming_them(
    make_napari_viewer, dicom_scan, tmp_path, errors, make, fragment
):
    pytest.importorskip("highdicom")
    path = make(tmp_path, dicom_scan)
    viewer = make_napari_viewer()
    viewer.open(str(dicom_scan), plugin="napari-unet")
    from napari_unet._widgets.open_labels import open_labels

    assert viewer.open(str(path), plugin="napari-unet") == []
    assert open_labels(viewer, path) is None
    assert len(errors) == 2
    assert all(str(path) in e and fragment in e and "\n" not in e for e in errors)
    assert len(viewer.layers) == 1


def test_open_labels_button_makes_the_file_the_loops_labels(
    panel, tiny_scan, tmp_path, monkeypatch
):
    from qtpy.QtWidgets import QFileDialog

    scan_path = tiny_scan[0]
    labels_path = tmp_path / "colleague.nii.gz"
    truth = tiny_scan[1]
    img = nib.load(scan_path)
    nib.save(nib.Nifti1Image(truth.astype(np.uint8), img.affine), labels_path)
    panel.viewer.open(str(scan_path), plugin="napari-unet")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(labels_path), ""))
    panel.segment_section.open_labels_button.click()
    layer = panel.session.labels_layer
    assert layer is not None and layer.name == "colleague"
    np.testing.assert_array_equal(panel.session.loop.labels, truth)
    assert panel.segment_section.labels_combo.currentText() == "colleague"

"""In napari: open a scan through the plugin, paint, save, and get the scan's geometry back."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_unet._writer import LayerWriteError
from napari_unet.io.display import METADATA_KEY
from tests.conftest import AFFINES, write_nifti

SHAPE = (12, 10, 6)


@pytest.fixture
def scan(tmp_path, rng):
    affine = AFFINES["LPS"]
    return write_nifti(tmp_path / "scan.nii.gz", rng.normal(size=SHAPE).astype(np.float32), affine)


def _open(viewer, path):
    return viewer.open(str(path), plugin="napari-unet")


def test_opened_scan_has_the_world_extent_of_the_scan_in_mm(make_napari_viewer, scan):
    viewer = make_napari_viewer()
    (layer,) = _open(viewer, scan)
    spacing = np.linalg.norm(AFFINES["LPS"][:3, :3], axis=0)
    extent = layer.extent.world[1] - layer.extent.world[0] + layer.scale  # corner to corner
    np.testing.assert_allclose(sorted(extent), sorted(np.asarray(SHAPE) * spacing))
    assert layer.metadata[METADATA_KEY]["orientation"] == "LPS"
    assert tuple(layer.scale) == pytest.approx((3.0, 0.7, 0.7))


def test_painted_label_is_saved_in_the_scan_geometry(make_napari_viewer, scan, tmp_path):
    viewer = make_napari_viewer()
    (image,) = _open(viewer, scan)
    labels = viewer.add_labels(
        np.zeros(image.data.shape, np.uint8), scale=image.scale, translate=image.translate
    )  # as napari's "new labels layer" button makes it: no plugin metadata
    labels.paint((2, 3, 4), new_label=3, refresh=True)  # brush size 10 → a few voxels
    painted_world = np.asarray(labels.data_to_world((2, 3, 4)))
    out = tmp_path / "labels.nii.gz"
    labels.save(str(out), plugin="napari-unet")

    saved = nib.load(out)
    np.testing.assert_array_equal(saved.affine, nib.load(scan).affine)
    assert saved.shape == SHAPE
    data = np.asanyarray(saved.dataobj)
    assert data.dtype == np.uint8
    assert (data == 3).sum() == (labels.data == 3).sum() > 0
    # the painted centre voxel sits at the same world position in the saved file
    ijk = np.argwhere(data == 3)
    world = nib.affines.apply_affine(saved.affine, ijk)  # RAS
    display_world = world @ np.array([[0, 0, -1], [0, -1, 0], [-1, 0, 0]]).T
    assert np.min(np.linalg.norm(display_world - painted_world, axis=1)) < 1e-6


def test_labels_on_another_grid_are_refused_with_a_clear_message(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = viewer.add_labels(np.zeros((4, 5, 6), np.uint8), name="stray")
    with pytest.raises(LayerWriteError, match=r"labels layer .stray. has no scan geometry"):
        labels.save(str(tmp_path / "x.nii.gz"), plugin="napari-unet")
    assert not (tmp_path / "x.nii.gz").exists()


def test_bad_file_is_a_notification_not_a_crash(make_napari_viewer, tmp_path, rng, monkeypatch):
    import napari_unet._reader as reader

    shown = []
    monkeypatch.setattr(reader, "_notify_error", shown.append)
    viewer = make_napari_viewer()
    bad = tmp_path / "broken.nii"
    bad.write_bytes(rng.bytes(500))
    assert _open(viewer, bad) == []
    assert len(viewer.layers) == 0
    assert shown and "broken.nii" in shown[0]


def test_samples_open_with_matching_reference_masks(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "ct_abdomen")
    image, reference = viewer.layers
    assert image.data.shape == reference.data.shape
    assert reference.metadata[METADATA_KEY]["label_names"] == ["liver", "kidney", "spleen"]
    assert image.metadata[METADATA_KEY]["modality"] == "CT"
    assert tuple(image.contrast_limits) == (-160.0, 240.0)  # soft-tissue window


def test_scan_widget_shows_geometry_and_applies_ct_windows(make_napari_viewer, scan):
    from napari_unet._widgets.data_widget import DataWidget

    viewer = make_napari_viewer()
    widget = DataWidget(viewer)
    _open(viewer, scan)
    viewer.layers.selection.active = viewer.layers[0]
    assert widget.info_labels["orientation"].text() == "LPS"
    assert widget.info_labels["spacing"].text() == "0.7 × 0.7 × 3 mm"
    widget.apply_contrast("bone")
    assert tuple(viewer.layers[0].contrast_limits) == (-500.0, 1300.0)


def test_scan_widget_loads_in_a_worker(make_napari_viewer, scan, qtbot):
    from napari_unet._widgets.data_widget import DataWidget

    viewer = make_napari_viewer()
    widget = DataWidget(viewer)
    widget.open_path(str(scan))
    assert not widget.open_file_button.isEnabled()  # busy while the worker runs
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=20000)
    qtbot.waitUntil(widget.open_file_button.isEnabled, timeout=5000)
    assert viewer.layers[0].metadata[METADATA_KEY]["native_shape"] == list(SHAPE)


def test_folder_with_two_series_asks_which_one(make_napari_viewer, tmp_path, monkeypatch):
    import napari_unet._widgets.series_picker as picker
    from tests.io.dicom_factory import ramp_kji, write_series

    write_series(tmp_path / "s" / "a", ramp_kji((4, 6, 6)), description="AX", series_number=1)
    b = write_series(tmp_path / "s" / "b", ramp_kji((5, 7, 6)), description="COR", series_number=2)
    offered = []

    def choose_second(error, parent=None):
        offered.extend(s.label for s in error.series)
        return error.series[1].uid

    monkeypatch.setattr(picker, "ask_series", choose_second)
    viewer = make_napari_viewer()
    (layer,) = _open(viewer, tmp_path / "s")
    assert len(offered) == 2 and "AX" in offered[0] and "COR" in offered[1]
    assert sorted(layer.data.shape) == sorted(b["array"].shape)

    monkeypatch.setattr(picker, "ask_series", lambda error, parent=None: None)  # cancel
    assert _open(viewer, tmp_path / "s") == []
    assert len(viewer.layers) == 1


def test_dicom_folder_with_a_missing_slice_is_a_notification(
    make_napari_viewer, tmp_path, monkeypatch
):
    import napari_unet._reader as reader
    from tests.io.dicom_factory import ramp_kji, write_series

    shown = []
    monkeypatch.setattr(reader, "_notify_error", shown.append)
    write_series(tmp_path / "gap", ramp_kji((8, 6, 6)), drop_slices=[3])
    viewer = make_napari_viewer()
    assert _open(viewer, tmp_path / "gap") == []
    assert shown and "missing" in shown[0] and "gap" in shown[0]


def test_cancelling_a_dicom_load_adds_nothing_and_frees_the_buttons(
    make_napari_viewer, tmp_path, qtbot, monkeypatch
):
    import time

    from napari_unet._widgets.data_widget import DataWidget
    from napari_unet.io import dicom
    from napari_unet.jobs import Progress
    from tests.io.dicom_factory import ramp_kji, write_series

    folder = tmp_path / "series"
    write_series(folder, ramp_kji((4, 6, 6)))  # would open fine if not cancelled
    real = dicom.load_dicom_steps

    def slow_steps(path, series_uid=None):  # a big series: one step per file
        for i in range(200):
            time.sleep(0.02)
            yield Progress(i + 1, 200, "reading")
        return (yield from real(path, series_uid=series_uid))

    monkeypatch.setattr(dicom, "load_dicom_steps", slow_steps)
    viewer = make_napari_viewer()
    widget = DataWidget(viewer)
    worker = widget.open_path(str(folder))
    qtbot.waitUntil(widget.cancel_button.isEnabled, timeout=5000)
    qtbot.wait(100)
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=1000)  # not the 4 s to the end
    qtbot.waitUntil(widget.open_file_button.isEnabled, timeout=1000)
    qtbot.wait(200)
    assert len(viewer.layers) == 0
    assert not widget.cancel_button.isEnabled()

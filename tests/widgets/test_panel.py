"""The U-Net panel: model, segment, review and export steps in a real viewer."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_unet.errors import InputError


def _open(panel, path):
    (layer,) = panel.viewer.open(str(path), plugin="napari-unet")
    return layer


def _wait_idle(qtbot, section, timeout=60000):
    qtbot.waitUntil(lambda: section.run_button.isEnabled(), timeout=timeout)


def test_opening_a_scan_attaches_it_and_new_model_makes_a_named_labels_layer(panel, tiny_scan):
    image = _open(panel, tiny_scan[0])
    assert panel.session.image_layer is image
    panel.model_section.new_model(["tumour", "oedema"], spatial_dims=2)
    labels = panel.session.labels_layer
    assert labels.data.shape == image.data.shape
    assert tuple(labels.scale) == tuple(image.scale)
    assert labels.metadata["napari_unet"]["label_names"] == ["tumour", "oedema"]
    assert panel.model_section.versions.count() == 1
    assert "tumour" in panel.scan_label.text()


def test_new_model_without_labels_or_scan_is_refused(panel, tiny_scan):
    with pytest.raises(InputError, match="open a scan first"):
        panel.model_section.new_model(["x"])
    _open(panel, tiny_scan[0])
    with pytest.raises(InputError, match="at least one label name"):
        panel.model_section.new_model([])


def test_prediction_fills_the_labels_layer_and_never_touches_reviewed_slices(
    panel, tiny_scan, qtbot
):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    session = panel.session
    labels = session.labels_layer
    labels.data[:] = 0
    labels.paint((4, 18, 18), 1, refresh=True)  # paint on display slice 4
    assert session.reviewed_display() == [4]
    painted = labels.data[4].copy()

    panel.segment_section.run()
    _wait_idle(qtbot, panel.segment_section)
    np.testing.assert_array_equal(labels.data[4], painted)  # the user's slice is intact
    assert session.last_uncertainty is not None
    name = f"{session.image_layer.name} uncertainty"
    assert name not in panel.viewer.layers  # made only on request
    assert "s on cpu" in panel.segment_section.status.text()
    panel.segment_section.show_uncertainty_button.click()
    layer = panel.viewer.layers[name]
    assert layer.visible and layer.data.shape == labels.data.shape
    assert float(layer.data.min()) >= 0.0 and float(layer.data.max()) <= 1.0


def test_model_with_fewer_labels_than_the_layer_is_refused(panel, tiny_scan):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    panel.session.labels_layer.data[0, 0, 0] = 3
    with pytest.raises(InputError, match="hold label 3, but the model knows 1 label"):
        panel.segment_section.run()


def test_cancel_in_the_middle_of_a_prediction_keeps_the_viewer_alive(panel, tiny_scan, qtbot):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    before = panel.session.labels_layer.data.copy()
    worker = panel.segment_section.run()
    worker.quit()
    _wait_idle(qtbot, panel.segment_section)
    # either it finished before the cancel arrived, or the labels were left as they were
    after = panel.session.labels_layer.data
    assert after.shape == before.shape
    assert panel.segment_section.run_button.isEnabled()


def test_accept_and_next_slice_to_review(panel, tiny_scan, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)  # Accept needs labels to accept
    session = panel.session
    panel.viewer.dims.set_current_step(0, 7)
    # the model is untrained: Accept asks first (tests/widgets/test_trust_review.py)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    panel.review_section.accept_button.click()
    assert session.reviewed_display() == [7]
    k = int(session.geometry.to_native_index(session.workspace.slice_axis, 7))
    assert f"Reviewed 1 of 10 slices (k in the file): {k}" in panel.review_section.summary.text()
    session.loop.last_uncertainty = np.zeros(session.workspace.image.shape, np.float32)
    native = int(session.geometry.to_native_index(session.workspace.slice_axis, 2))
    session.last_uncertainty[:, :, native] = 0.9  # display slice 2 is the most uncertain
    panel.review_section.next_button.click()
    assert panel.viewer.dims.current_step[0] == 2


def test_saved_labels_have_the_scan_geometry_and_painted_voxels(panel, tiny_scan, tmp_path):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    labels = panel.session.labels_layer
    labels.data[:] = 0
    labels.paint((3, 10, 12), 1, refresh=True)
    out = panel.export_section.save_labels(tmp_path / "seg.nii.gz")
    saved = nib.load(out)
    np.testing.assert_array_equal(saved.affine, nib.load(tiny_scan[0]).affine)
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), panel.session.labels_native())


def test_workspace_round_trip_and_crash_recovery(panel, tiny_scan, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    session = panel.session
    session.labels_layer.data[:] = 0
    session.labels_layer.paint((5, 20, 20), 1, refresh=True)
    panel.export_section.save_workspace(tmp_path / "ws")
    assert panel.export_section.autosave(wait=True)  # what a crash would leave behind
    expected = session.labels_layer.data.copy()

    # a new session on the same scan finds the autosave and restores it on "Yes"
    from napari_unet._widgets.panel import UNetPanel

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    viewer2 = panel.viewer.__class__(show=False)
    try:
        panel2 = UNetPanel(viewer2)
        viewer2.open(str(tiny_scan[0]), plugin="napari-unet")
        np.testing.assert_array_equal(panel2.session.labels_layer.data, expected)
        assert panel2.session.reviewed_display() == [5]
        panel2.export_section.open_workspace(tmp_path / "ws")
        assert panel2.session.reviewed_display() == [5]
        assert panel2.session.model is not None
        np.testing.assert_array_equal(panel2.session.labels_layer.data, expected)
    finally:
        viewer2.close()


def test_the_dock_never_clips_the_sections(panel, tiny_scan, qtbot):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["white matter"], spatial_dims=2)
    panel.viewer.window._qt_window.resize(900, 700)  # napari would like a narrow dock
    qtbot.wait(50)
    viewport = panel._scroll.viewport().width()
    for section in (panel.model_section, panel.segment_section, panel.export_section):
        assert section.minimumSizeHint().width() <= viewport, type(section).__name__


def test_labels_layer_on_another_grid_is_refused_with_a_notification(panel, tiny_scan, monkeypatch):
    from napari_unet._widgets import segment_section

    errors = []
    monkeypatch.setattr(segment_section, "show_error", errors.append)
    image = _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    own = panel.session.labels_layer
    viewer = panel.viewer
    viewer.add_labels(np.zeros((5, 6, 7), np.uint8), name="small")
    viewer.add_labels(np.zeros(image.data.shape, np.uint8), name="shifted",
                      scale=image.scale, translate=np.asarray(image.translate) + 5)  # fmt: skip
    same = viewer.add_labels(np.zeros(image.data.shape, np.uint8), name="same",
                             scale=image.scale, translate=image.translate)  # fmt: skip
    combo = panel.segment_section.labels_combo
    for name, problem in (("small", "shape (5, 6, 7)"), ("shifted", "position")):
        combo.activated.emit(combo.findText(name))
        assert f"labels layer '{name}' is on another grid" in errors[-1]
        assert problem in errors[-1]
        assert panel.session.labels_layer is own
        assert combo.currentText() == own.name
    combo.activated.emit(combo.findText("same"))
    assert panel.session.labels_layer is same and len(errors) == 2


def test_a_new_labels_layer_never_shares_memory_with_another(panel, tiny_scan):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    first = panel.session.labels_layer
    combo = panel.segment_section.labels_combo
    combo.activated.emit(combo.findText("(new layer)"))
    second = panel.session.ensure_labels_layer()
    assert second is not first
    assert not np.shares_memory(first.data, second.data)
    assert not np.shares_memory(first.data, panel.session.workspace.labels)


@pytest.mark.slow
def test_stopping_a_fine_tune_keeps_the_best_model_so_far(panel, tiny_scan, qtbot):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    session = panel.session
    session.labels_layer.paint((4, 18, 18), 1, refresh=True)
    section = panel.finetune_section
    section.start(seconds=120, repredict=False)
    qtbot.waitUntil(lambda: len(section.plot.points["loss"]) >= 2, timeout=60000)
    section.stop_button.click()
    qtbot.waitUntil(lambda: section.start_button.isEnabled(), timeout=60000)
    ws = session.workspace
    assert len(ws.models) == 2 and ws.models[1].metrics["stopped"]
    assert ws.models[1].metrics["seconds"] < 60
    assert session.model.spec.labels == ["ball"]  # the stopped version is the one in use
    assert "new version" in section.status.text()


def test_autosave_writes_a_snapshot_in_the_background_and_reports_failures(
    panel, tiny_scan, monkeypatch
):
    from napari_unet.workspace import Recovery

    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    session, export = panel.session, panel.export_section
    session.labels_layer.paint((5, 20, 20), 1, refresh=True)
    before = session.labels_layer.data.copy()
    real_write = Recovery.write
    go = __import__("threading").Event()

    def slow_write(self, labels, reviewed, axis):
        go.wait(10)
        real_write(self, labels, reviewed, axis)

    monkeypatch.setattr(Recovery, "write", slow_write)
    assert export.autosave()  # returns at once: the write waits in its thread
    session.labels_layer.data[7] = 1  # the user paints on while it writes
    go.set()
    session.wait_for_autosave()
    saved, reviewed, _ = session.recovery.load()
    np.testing.assert_array_equal(session.geometry.to_display(saved), before)
    axis = session.workspace.slice_axis
    assert {int(session.geometry.to_display_index(axis, i)) for i in reviewed} == {5}

    def failing_write(self, labels, reviewed, axis):
        raise OSError("No space left on device")

    monkeypatch.setattr(Recovery, "write", failing_write)
    session.dirty = True
    assert export.autosave(wait=True)
    assert session.dirty  # nothing was saved: try again next time
    export.autosave()
    assert "autosave failed: No space left on device" in export.autosave_label.text()

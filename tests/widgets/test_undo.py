"""Undo in the panel: a merged prediction is one undo step that restores the labels bit
for bit (including what the user painted); rolling back a model never touches labels;
the labels layer shows the loop's own labels (one buffer)."""

from __future__ import annotations

import numpy as np


def _open(panel, path):
    (layer,) = panel.viewer.open(str(path), plugin="napari-unet")
    return layer


def _predict(panel, qtbot):
    panel.segment_section.run()
    qtbot.waitUntil(lambda: panel.segment_section.run_button.isEnabled(), timeout=60000)


def test_the_labels_layer_is_the_loops_labels(panel, tiny_scan):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    session = panel.session
    session.labels_layer.paint((3, 10, 12), 1, refresh=True)
    assert np.shares_memory(session.labels_layer.data, session.loop.labels)
    np.testing.assert_array_equal(
        session.geometry.to_display(session.loop.labels), session.labels_layer.data
    )
    assert session.loop.reviewed == {int(session.geometry.to_native_index(2, 3))}


def test_ctrl_z_after_a_merge_restores_the_labels_exactly(panel, tiny_scan, qtbot, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    # slice 8's content was not made by this model: Run asks, the user says "Replace"
    asked = []
    replace = QMessageBox.StandardButton.Yes
    monkeypatch.setattr(QMessageBox, "exec", lambda box: asked.append(box) or replace)
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    labels = panel.session.labels_layer
    labels.paint((2, 18, 18), 1, refresh=True)  # a correction on display slice 2
    labels.paint((6, 5, 5), 1, refresh=True)  # and one on slice 6
    labels.data[8, 30:33, 30:33] = 1  # content on an unreviewed slice, e.g. from a file
    before = labels.data.copy()
    reviewed = panel.session.reviewed_display()
    _predict(panel, qtbot)
    assert len(asked) == 1
    assert not np.array_equal(labels.data, before)  # the untrained net changed something
    np.testing.assert_array_equal(labels.data[[2, 6]], before[[2, 6]])
    assert panel.session.reviewed_display() == reviewed  # the merge reviews nothing
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)  # bit for bit
    assert panel.session.reviewed_display() == reviewed
    labels.undo()  # the step before the merge: the user's last stroke
    assert labels.data[6, 5, 5] == 0 and labels.data[2, 18, 18] == 1
    assert panel.session.reviewed_display() == [2]  # its slice is no longer reviewed
    labels.redo()
    labels.redo()
    assert panel.session.reviewed_display() == reviewed
    np.testing.assert_array_equal(labels.data[[2, 6]], before[[2, 6]])
    assert not np.array_equal(labels.data, before)  # the merge is back


def test_rolling_back_a_model_version_does_not_touch_the_labels(panel, tiny_scan, qtbot):
    _open(panel, tiny_scan[0])
    first = panel.model_section.new_model(["ball"], spatial_dims=2)
    second = panel.model_section.new_model(["ball"], spatial_dims=2)
    assert first != second
    _predict(panel, qtbot)
    labels = panel.session.labels_layer
    before = labels.data.copy()
    history = len(labels._undo_history)
    first_hash = panel.session.loop.versions[0].hash
    panel.model_section.roll_back(first_hash)
    assert panel.session.model.hash == first_hash
    np.testing.assert_array_equal(labels.data, before)
    assert len(labels._undo_history) == history


def test_a_merge_is_drawn_on_the_slice_in_view(panel, tiny_scan, qtbot):
    """The merge writes the layer's array directly (`write_changes`): the canvas must
    show it on the slice in view, and show the undo too."""
    from napari_unet._widgets._labels_write import write_changes

    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    viewer, labels = panel.viewer, panel.session.labels_layer
    viewer.window.show()  # a hidden canvas draws nothing
    z = int(viewer.dims.current_step[0])
    rows, cols = np.nonzero(np.ones(labels.data.shape[1:], bool))
    index = (np.full(rows.size, z), rows, cols)  # every voxel of the slice in view

    def canvas():
        return viewer.screenshot(canvas_only=True, flash=False)

    before = canvas()
    write_changes(labels, index, np.ones(rows.size, labels.data.dtype))
    assert (labels.data[z] == 1).all()
    assert np.abs(canvas().astype(int) - before).mean() > 5  # the slice turned colour
    labels.undo()
    assert np.abs(canvas().astype(int) - before).mean() < 1


def test_a_merge_prepared_in_the_worker_writes_and_undoes_like_the_plain_one():
    """`write_changes` with the flat index of `display_edit` (computed off the GUI
    thread) writes the same voxels and records the same undo step as the per-axis
    index; a layer array that is not C-contiguous takes the per-axis path."""
    import napari

    from napari_unet._widgets._labels_write import display_edit, write_changes
    from napari_unet.io.display import display_geometry
    from napari_unet.loop.merge import merge_unreviewed

    rng = np.random.default_rng(0)
    native = (6, 7, 5)
    affine = np.array([[-1.0, 0, 0, 0], [0, 0, 2.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
    geometry = display_geometry(affine, native)  # axes permuted and flipped
    prediction = rng.integers(0, 3, native).astype(np.uint8)
    edit = merge_unreviewed(np.zeros(native, np.uint8), prediction, reviewed=[2],
                            slice_axis=2, write=False)  # fmt: skip
    shown = display_edit(edit, geometry)
    assert shown.shape == geometry.display_shape != native
    expected = geometry.to_display(np.where(np.arange(5) == 2, 0, prediction))
    for data in (np.zeros(shown.shape, np.uint8), np.zeros(shown.shape[::-1], np.uint8).T):
        layer = napari.layers.Labels(data)
        write_changes(layer, shown.index, edit.new, flat=shown.flat)
        np.testing.assert_array_equal(layer.data, expected)
        (atom,) = layer._undo_history[-1]
        assert atom[0] is shown.index and not atom[1].any()
        layer.undo()
        assert not layer.data.any()

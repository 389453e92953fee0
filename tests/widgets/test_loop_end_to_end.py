"""End to end in the GUI: open → new model → paint two slices → fine-tune → re-predict → export."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # every test here trains a network


def test_the_whole_loop_keeps_painted_voxels_and_the_scan_geometry(panel, tiny_scan, qtbot,
                                                                   tmp_path):  # fmt: skip
    path, truth = tiny_scan
    panel.viewer.open(str(path), plugin="napari-unet")
    panel.model_section.new_model(["ball"], spatial_dims=2)
    session = panel.session
    labels = session.labels_layer
    truth_display = session.geometry.to_display(truth)

    for index in (3, 6):  # the user paints two slices: ball = 1, the rest background
        labels.data[index] = 0
        labels.paint((index, 18, 18), 1, refresh=True)
        labels.data[index] = truth_display[index]
    labels.refresh()
    assert session.reviewed_display() == [3, 6]
    painted = {i: labels.data[i].copy() for i in (3, 6)}

    with qtbot.waitSignal(panel.model_section.versions.model().rowsInserted, timeout=120000):
        panel.finetune_section.start(steps=15)
    qtbot.waitUntil(lambda: panel.finetune_section.start_button.isEnabled(), timeout=120000)
    qtbot.waitUntil(lambda: panel.segment_section.run_button.isEnabled(), timeout=120000)
    qtbot.waitUntil(lambda: "voxels changed" in panel.segment_section.status.text(), timeout=60000)

    ws = session.workspace
    assert len(ws.models) == 2 and ws.models[1].parent == ws.models[0].hash
    assert ws.models[1].metrics["trained_slices"] == sorted(ws.reviewed)
    assert "new version" in panel.finetune_section.status.text()
    assert panel.finetune_section.plot.points["loss"]  # the live curve got points
    for index, before in painted.items():
        np.testing.assert_array_equal(labels.data[index], before)

    out = panel.export_section.save_labels(tmp_path / "final.nii.gz")
    saved = nib.load(out)
    np.testing.assert_array_equal(saved.affine, nib.load(path).affine)
    assert saved.shape == truth.shape
    native = np.asanyarray(saved.dataobj)
    np.testing.assert_array_equal(native, session.geometry.to_native(labels.data))
    for index, before in painted.items():  # the painted voxels, found in the file
        only_painted = np.zeros_like(labels.data)
        only_painted[index] = before
        native_painted = session.geometry.to_native(only_painted)
        native_index = int(session.geometry.to_native_index(ws.slice_axis, index))
        np.testing.assert_array_equal(
            np.take(native, native_index, axis=ws.slice_axis),
            np.take(native_painted, native_index, axis=ws.slice_axis),
        )
        assert np.take(native_painted, native_index, axis=ws.slice_axis).any()

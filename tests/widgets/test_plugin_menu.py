"""The panel opened the way a user opens it (Plugins > napari U-Net > U-Net), where napari
hands the widget a public-only proxy of the viewer."""

from __future__ import annotations

import numpy as np


def test_panel_from_the_plugins_menu_runs_the_loop(make_napari_viewer, tiny_scan, qtbot):
    viewer = make_napari_viewer()
    _, panel = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net")
    viewer.open(str(tiny_scan[0]), plugin="napari-unet")
    panel.model_section.new_model(["ball"], spatial_dims=2)
    labels = panel.session.labels_layer
    labels.paint((4, 18, 18), 1, refresh=True)
    assert panel.session.reviewed_display() == [4]
    labels.undo()  # our undo tracking works on the real layer
    assert panel.session.reviewed_display() == []
    assert np.shares_memory(labels.data, panel.session.loop.labels)

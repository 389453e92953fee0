"""Issue 15, a panel a radiologist can trust: explicit scan, modality and label identity,
progress in the panel, scanner coordinates. Each test is a user's action and what they
must see."""

from __future__ import annotations

import re

import numpy as np
import pytest

from napari_unet.io.display import METADATA_KEY
from tests.conftest import AFFINES, write_nifti


def _open(viewer, path):
    (layer,) = viewer.open(str(path), plugin="napari-unet")
    return layer


def _t1(tmp_path, name="t1.nii.gz", affine=None):
    """An MR-like T1 (no air, values 50–900) with a bright ball."""
    shape = (30, 28, 12)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    ball = ((i - 15) ** 2 + (j - 14) ** 2 + ((k - 6) * 2.5) ** 2) < 8**2
    rng = np.random.default_rng(3)
    image = (300 + 400 * ball + rng.normal(0, 30, shape)).clip(50, 900).astype(np.float32)
    affine = AFFINES["LPS"] if affine is None else affine
    return write_nifti(tmp_path / name, image, affine), ball


def _ct(tmp_path):
    """A CT in HU: air (-1000) around a soft-tissue body (40) with a denser organ (60)."""
    shape = (32, 30, 10)
    i, j, _ = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    body = ((i - 16) ** 2 + (j - 15) ** 2) < 12**2
    organ = ((i - 14) ** 2 + (j - 12) ** 2) < 5**2
    rng = np.random.default_rng(4)
    image = np.where(body, 40.0, -1000.0) + 20.0 * organ + rng.normal(0, 5, shape)
    return write_nifti(tmp_path / "abdomen_ct.nii.gz", image.astype(np.int16), AFFINES["RAS"])


# --- 3: explicit identity -----------------------------------------------------------------
def test_opening_a_t1_then_a_label_map_keeps_the_t1_as_the_scan(panel, tmp_path):
    t1_path, ball = _t1(tmp_path)
    tissue = write_nifti(
        tmp_path / "sub01_t1w_fast.nii.gz", (ball * 2 + 1).astype(np.uint8), AFFINES["LPS"]
    )  # fmt: skip  (integer, three values: a label map)
    mask = write_nifti(tmp_path / "brain_mask.nii.gz", ball.astype(np.float32), AFFINES["LPS"])
    viewer = panel.viewer
    t1 = _open(viewer, t1_path)
    label_map = _open(viewer, tissue)
    _open(viewer, mask)
    viewer.layers.selection.active = label_map  # the user looks at the tissue map
    panel.model_section.new_model(["brain"], spatial_dims=2)

    assert panel.session.image_layer is t1
    combo = panel.scan_combo
    assert [combo.itemText(i) for i in range(combo.count())] == [t1.name]


def test_a_second_scan_is_used_only_when_the_user_chooses_it(panel, tmp_path):
    first = _open(panel.viewer, _t1(tmp_path, "t1.nii.gz")[0])
    second = _open(panel.viewer, _t1(tmp_path, "ct_brain_atlas.nii.gz")[0])  # a scan too
    assert panel.session.image_layer is first
    combo = panel.scan_combo
    combo.setCurrentIndex(1)
    combo.activated.emit(1)
    assert panel.session.image_layer is second
    assert combo.currentText() == second.name


def test_a_ct_nifti_in_hu_gives_a_ct_model_with_a_hu_window(panel, tmp_path):
    from napari_unet._widgets.data_widget import DataWidget

    scan_dock = DataWidget(panel.viewer)
    image = _open(panel.viewer, _ct(tmp_path))
    assert panel.modality_combo.currentText() == "CT"
    assert "detected" in panel.modality_note.text() and "HU" in panel.modality_note.text()
    assert scan_dock.contrast_combo.currentText() == "CT soft tissue (W 400, L 40 HU)"
    assert tuple(image.contrast_limits) == (-160.0, 240.0)

    panel.model_section.new_model(["organ"], spatial_dims=2)
    normalization = panel.session.model.spec.normalization
    assert normalization.mode == "ct"
    assert "HU window" in panel.scan_label.text()


def test_an_mr_nifti_gives_an_mr_model_and_says_why(panel, tmp_path, monkeypatch):
    from napari_unet._widgets import model_section
    from napari_unet._widgets.data_widget import DataWidget

    infos = []
    monkeypatch.setattr(model_section, "show_info", infos.append)
    scan_dock = DataWidget(panel.viewer)
    _open(panel.viewer, _t1(tmp_path)[0])
    assert "not stated" in panel.modality_note.text()  # NIfTI does not say: asked
    assert scan_dock.contrast_combo.currentText() == "auto (0.5–99.5 %)"  # not "brain"
    panel.model_section.new_model(["brain"], spatial_dims=2)
    assert panel.session.model.spec.normalization.mode == "mr"
    assert any("MR normalisation" in m for m in infos)  # never silently

    scan_dock.modality_combo.textActivated.emit("MR")  # the user says what it is
    assert panel.modality_combo.currentText() == "MR"
    assert "chosen by you" in panel.modality_note.text()
    infos.clear()
    panel.model_section.new_model(["brain"], spatial_dims=2)
    assert panel.session.model.spec.normalization.mode == "mr" and not infos

    panel.modality_combo.textActivated.emit("other")  # neither: MR's z-score, said so
    assert scan_dock.modality_combo.currentText() == "other"
    panel.model_section.new_model(["brain"], spatial_dims=2)
    assert panel.session.model.spec.normalization.mode == "mr"
    assert any("modality 'other'" in m for m in infos)


def test_choosing_ct_in_the_scan_dock_makes_the_next_model_a_ct_model(panel, tmp_path):
    from napari_unet._widgets.data_widget import DataWidget

    scan_dock = DataWidget(panel.viewer)
    _open(panel.viewer, _t1(tmp_path)[0])
    scan_dock.set_modality("CT")
    panel.model_section.new_model(["brain"], spatial_dims=2)
    assert panel.session.model.spec.normalization.mode == "ct"
    assert scan_dock.contrast_combo.itemText(0).startswith("CT ")  # CT windows first


# --- 6: coordinates like Slicer and ITK-SNAP ------------------------------------------------
def _status_at(viewer, layer, display_point):
    viewer.layers.selection.active = layer
    viewer.cursor.position = tuple(layer.data_to_world(display_point))
    viewer.mouse_over_canvas = True
    viewer.update_status_from_cursor()
    status = viewer.status
    return status["coordinates"] if isinstance(status, dict) else str(status)


def _numbers(text: str, tag: str) -> np.ndarray:
    match = re.search(tag + r" \(([^)]*)\)", text)
    assert match, text
    return np.array([float(v) for v in match.group(1).split(",")])


@pytest.mark.parametrize("name", ["LIA_oblique", "PSR_oblique"])
def test_status_bar_shows_scanner_mm_and_file_voxels_on_an_oblique_scan(panel, tmp_path, name):
    from napari_unet._widgets.data_widget import DataWidget

    affine = AFFINES[name]
    path, _ = _t1(tmp_path, affine=affine)
    image = _open(panel.viewer, path)
    geometry = panel.session.geometry
    for ijk in [(0, 0, 0), (7, 21, 3), (29, 27, 11)]:
        text = _status_at(panel.viewer, image, geometry.to_display_point(ijk))
        expected = (affine @ [*ijk, 1.0])[:3]  # nibabel's voxel → RAS
        np.testing.assert_allclose(_numbers(text, "RAS"), expected, atol=0.01)
        assert tuple(_numbers(text, r"voxel \(i, j, k\)").astype(int)) == ijk
    inside = np.array([7.3, 20.8, 3.0])  # a point inside a voxel: the exact mm
    text = _status_at(panel.viewer, image, geometry.to_display_point(inside))
    np.testing.assert_allclose(_numbers(text, "RAS"), (affine @ [*inside, 1])[:3], atol=0.01)

    DataWidget(panel.viewer).frame_combo.textActivated.emit("LPS")  # the DICOM convention
    text = _status_at(panel.viewer, image, geometry.to_display_point((7, 21, 3)))
    ras = (affine @ [7, 21, 3, 1.0])[:3]
    np.testing.assert_allclose(_numbers(text, "LPS"), ras * [-1, -1, 1], atol=0.01)


def test_the_panel_names_the_slice_on_screen_by_its_index_in_the_file(panel, tiny_scan):
    _open(panel.viewer, tiny_scan[0])  # k runs inferior → superior; napari's rows top → down
    session = panel.session
    axis = session.workspace.slice_axis
    panel.viewer.dims.set_current_step(session.review_display_axis, 2)
    native = int(session.geometry.to_native_index(axis, 2))
    assert native == 7  # display row 2 of 10 is file slice 7
    assert f"{'ijk'[axis]} = 7 in the file" in panel.slice_label.text()


# --- 4: labels that speak ----------------------------------------------------------------
def test_label_names_appear_in_the_legend_the_status_bar_and_an_adopted_layer(panel, tmp_path):
    from qtpy.QtWidgets import QLabel

    image = _open(panel.viewer, _t1(tmp_path)[0])
    names = ["liver", "kidney", "spleen"]
    panel.model_section.new_model(names, spatial_dims=2)
    colors = panel.session.model.spec.colors
    labels = panel.session.labels_layer
    assert [b.text().split(maxsplit=1)[1] for b in panel.legend.buttons] == names
    assert panel.legend.isVisibleTo(panel)

    labels.paint((5, 14, 14), 2, refresh=True)
    text = _status_at(panel.viewer, labels, (5, 14, 14))
    assert "name: kidney" in text

    panel.legend.buttons[2].click()  # the legend is the named label picker
    assert labels.selected_label == 3
    labels.selected_label = 2  # napari's own picker names the class beside its number
    (shown,) = [w for w in panel.window().findChildren(QLabel)
                if w.objectName() == "napari_unet_label_name"]  # fmt: skip
    assert shown.text() == "kidney"

    adopted = panel.viewer.add_labels(np.zeros(image.data.shape, np.uint8), name="from file",
                                      scale=image.scale, translate=image.translate)  # fmt: skip
    combo = panel.segment_section.labels_combo
    combo.activated.emit(combo.findText("from file"))
    assert panel.session.labels_layer is adopted
    for value, color in enumerate(colors, start=1):
        np.testing.assert_allclose(adopted.colormap.map(value)[:3], _rgb(color), atol=0.01)
    assert list(adopted.features["name"]) == ["background", *names]
    adopted.paint((5, 14, 14), 1, refresh=True)
    text = _status_at(panel.viewer, adopted, (5, 14, 14))
    assert "name: liver" in text and "RAS (" in text  # scanner mm on an adopted layer too


def _rgb(color: str) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(color)[0][:3]


# --- 5: progress where the eye is -------------------------------------------------------
def _fine_tune_ready(panel, tmp_path):
    _open(panel.viewer, _t1(tmp_path)[0])
    panel.model_section.new_model(["brain"], spatial_dims=2)
    labels = panel.session.labels_layer
    labels.paint((6, 14, 14), 1, refresh=True)
    labels.paint((4, 10, 10), 1, refresh=True)


def test_the_panels_own_progress_bar_moves_during_a_fine_tune(panel, tmp_path, qtbot):
    _fine_tune_ready(panel, tmp_path)
    section = panel.finetune_section
    bar = panel.progress.bar
    section.start(seconds=6, repredict=False)
    qtbot.waitUntil(lambda: bar.maximum() > 0 and bar.value() > 0, timeout=60000)
    assert "s of 6 s" in bar.format()  # a time budget counts seconds
    assert "left" in panel.progress.text.text()  # and an ETA
    assert "/" not in section.status.text().split("·")[0]  # no step total that changes
    qtbot.waitUntil(lambda: section.start_button.isEnabled(), timeout=60000)
    qtbot.waitUntil(lambda: panel.progress.active is None, timeout=5000)
    assert bar.value() == bar.maximum()

    version = panel.session.workspace.models[-1]
    dice = version.metrics["val_dice"]
    steps = version.metrics["steps"]
    assert f"after {steps} steps" in section.status.text()
    if dice is not None:  # one Dice: status, curve and version list say the same
        assert f"{dice:.3f}" in section.status.text()
        assert section.plot.kept == (float(version.metrics["best_step"]), float(dice))
        assert f"Dice {dice:.3f}" in panel.model_section.versions.item(1).text()


def test_at_1280x800_the_fine_tune_curve_is_in_view(panel, tmp_path, qtbot):
    from qtpy.QtCore import QPoint, QRect

    viewer = panel.viewer
    viewer.window.add_plugin_dock_widget("napari-unet", "Scan")  # both docks, as the demo
    viewer.window.show()
    viewer.window._qt_window.resize(1280, 800)
    _fine_tune_ready(panel, tmp_path)
    panel.finetune_section.start(seconds=3, repredict=False)
    qtbot.wait(100)
    plot = panel.finetune_section.plot
    qtbot.waitUntil(lambda: not plot.visibleRegion().isEmpty(), timeout=5000)
    viewport = panel._scroll.viewport()
    top_left = plot.mapTo(viewport, QPoint(0, 0))
    assert QRect(viewport.rect()).contains(QRect(top_left, plot.size()))
    assert panel.progress.isVisible()
    assert panel.sections["finetune"].expanded and not panel.sections["model"].expanded
    qtbot.waitUntil(lambda: panel.finetune_section.start_button.isEnabled(), timeout=60000)


def test_opened_layers_keep_the_modality_of_the_file(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    image = _open(viewer, _ct(tmp_path))
    meta = image.metadata[METADATA_KEY]
    assert meta["modality"] == "CT" and meta["modality_source"] == "detected"

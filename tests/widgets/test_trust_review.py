"""A panel a radiologist can trust (issue 15, items 1, 2 and 7), as the user meets it:
undo follows the review, a careless Accept or a Run into someone else's segmentation
asks first, controls are enabled only when their action makes sense."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.key_bindings import KeyBinding
from qtpy.QtCore import QPoint, Qt
from qtpy.QtWidgets import QMenu, QMessageBox

from napari_unet._widgets.review_section import UNREVIEW_KEY

Button = QMessageBox.StandardButton


def _open(panel, path):
    (layer,) = panel.viewer.open(str(path), plugin="napari-unet")
    return layer


def _press(viewer, key: str) -> None:
    """The viewer's key binding for ``key``, as a key press runs it."""
    viewer.keymap[KeyBinding.from_str(key)](viewer)


def _stroke(labels, index: int, y: int = 10, x: int = 12) -> None:
    """The user paints one voxel of display slice ``index`` (changing its value)."""
    labels.paint((index, y, x), 1 - int(labels.data[index, y, x]), refresh=True)


def _wait_run(panel, qtbot) -> None:
    qtbot.waitUntil(lambda: not panel.segment_section.cancel_button.isEnabled(), timeout=60000)


def _questions(monkeypatch, answer):
    """Answer every QMessageBox.question with ``answer``; returns the questions asked."""
    asked: list[str] = []

    def question(parent, title, text, *args, **kwargs):
        asked.append(f"{title}\n{text}")
        return answer

    monkeypatch.setattr(QMessageBox, "question", question)
    return asked


def _run_answers(monkeypatch, answer):
    """Answer the Run dialog (Replace = Yes, Only empty slices = No, Cancel)."""
    asked: list[str] = []

    def exec_(box):
        asked.append(box.text())
        return answer

    monkeypatch.setattr(QMessageBox, "exec", exec_)
    return asked


# --- 1. undo the user can reason about ---------------------------------------------------------
def test_undo_of_a_stroke_unreviews_its_slice_and_redo_reviews_it_again(panel, tiny_scan):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    session, labels = panel.session, panel.session.labels_layer
    labels.paint((3, 10, 12), 1, refresh=True)
    labels.paint((5, 10, 12), 1, refresh=True)
    labels.paint((5, 20, 20), 1, refresh=True)  # a second stroke on slice 5
    assert session.reviewed_display() == [3, 5]

    labels.undo()  # the second stroke: slice 5 stays reviewed (the first one made it)
    assert session.reviewed_display() == [3, 5]
    labels.undo()  # the stroke that made slice 5 reviewed
    assert session.reviewed_display() == [3] and labels.data[5, 10, 12] == 0
    k = sorted(session.loop.reviewed)[0]  # listed by the file's slice index, as Slicer does
    assert k == int(session.geometry.to_native_index(session.workspace.slice_axis, 3))
    assert f"Reviewed 1 of 10 slices (k in the file): {k}" in panel.review_section.summary.text()
    labels.redo()
    assert session.reviewed_display() == [3, 5]
    labels.redo()
    assert session.reviewed_display() == [3, 5] and labels.data[5, 20, 20] == 1


def test_undo_keeps_a_slice_the_user_accepted_explicitly(panel, tiny_scan, monkeypatch):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    labels = panel.session.labels_layer
    labels.paint((4, 10, 12), 1, refresh=True)
    panel.viewer.dims.set_current_step(0, 4)
    asked = _questions(monkeypatch, Button.Yes)
    panel.review_section.accept_button.click()  # "this slice is right": edited, no question
    assert not asked
    labels.undo()
    assert panel.session.reviewed_display() == [4]


def test_undo_after_a_merge_restores_the_labels_bit_for_bit_and_the_review(panel, tiny_scan, qtbot):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    session, labels = panel.session, panel.session.labels_layer
    labels.paint((2, 18, 18), 1, refresh=True)
    labels.paint((6, 5, 5), 1, refresh=True)
    before = labels.data.copy()
    panel.segment_section.run_button.click()
    _wait_run(panel, qtbot)
    assert not np.array_equal(labels.data, before)  # the untrained net changed something
    assert session.reviewed_display() == [2, 6]

    labels.undo()  # the merge
    np.testing.assert_array_equal(labels.data, before)
    assert session.reviewed_display() == [2, 6]
    labels.undo()  # the stroke before it: its slice is no longer reviewed
    assert session.reviewed_display() == [2]
    labels.redo()
    labels.redo()
    assert session.reviewed_display() == [2, 6]
    np.testing.assert_array_equal(labels.data[[2, 6]], before[[2, 6]])
    assert not np.array_equal(labels.data, before)  # the merge is back


def test_unreview_from_the_strip_and_with_the_shortcut(panel, tiny_scan, monkeypatch, qtbot):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    session, labels = panel.session, panel.session.labels_layer
    for index in (4, 7):
        labels.paint((index, 10, 12), 1, refresh=True)
    assert session.reviewed_display() == [4, 7]

    # a right click on slice 4 in the strip, then "Un-review slice 4" in its menu
    offered = []

    def choose_unreview(menu, *args):
        offered.extend(a.text() for a in menu.actions() if a.isEnabled())
        return next(a for a in menu.actions() if a.text().startswith("Un-review"))

    monkeypatch.setattr(QMenu, "exec", choose_unreview)
    strip = panel.review_section.strip
    strip.resize(200, 22)
    x = int((4 + 0.5) * strip.width() / strip.n)
    qtbot.mouseClick(strip, Qt.MouseButton.RightButton, pos=QPoint(x, 10))
    k = int(session.geometry.to_native_index(session.workspace.slice_axis, 4))  # file index
    assert offered == [f"Go to slice {k}", f"Un-review slice {k}"]
    assert session.reviewed_display() == [7]
    assert labels.data[4, 10, 12] == 1  # the labels stay; the next Run may predict it

    panel.viewer.dims.set_current_step(0, 7)  # Shift-U on the slice on screen
    _press(panel.viewer, UNREVIEW_KEY)
    assert session.reviewed_display() == []
    assert not session.loop.reviewed
    labels.undo()  # undoing the stroke of an un-reviewed slice changes nothing more
    assert session.reviewed_display() == []


# --- 2. guards that ask ----------------------------------------------------------------------
def test_a_careless_accept_asks_and_cancel_leaves_the_slice_unreviewed(
    panel, tiny_scan, qtbot, monkeypatch
):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    panel.segment_section.run_button.click()
    _wait_run(panel, qtbot)
    panel.viewer.dims.set_current_step(0, 5)

    asked = _questions(monkeypatch, Button.No)
    panel.review_section.accept_button.click()
    assert len(asked) == 1 and "Accept slice anyway?" in asked[0]
    assert "untrained" in asked[0] and "uncertain" in asked[0]  # both reasons, one question
    assert panel.session.reviewed_display() == []

    asked = _questions(monkeypatch, Button.Yes)
    _press(panel.viewer, "Shift-A")  # the shortcut asks the same
    assert len(asked) == 1
    assert panel.session.reviewed_display() == [5]

    _stroke(panel.session.labels_layer, 3)  # an edited slice
    panel.viewer.dims.set_current_step(0, 3)
    asked = _questions(monkeypatch, Button.No)
    panel.review_section.accept_button.click()
    assert not asked and panel.session.reviewed_display() == [3, 5]


def test_accept_does_not_ask_about_a_trained_confident_model(panel, tiny_scan, monkeypatch):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    loop = panel.session.loop
    loop.workspace.models[-1].metrics.update(steps=50, trained_slices=[1])  # fine-tuned
    loop.last_uncertainty = np.full(loop.image.shape, 0.05, np.float32)
    panel.viewer.dims.set_current_step(0, 6)
    asked = _questions(monkeypatch, Button.No)
    panel.review_section.accept_button.click()
    assert not asked and panel.session.reviewed_display() == [6]

    loop.last_uncertainty = np.full(loop.image.shape, 0.9, np.float32)  # unsure here
    panel.viewer.dims.set_current_step(0, 2)
    panel.review_section.accept_button.click()
    assert len(asked) == 1 and "uncertain" in asked[0] and "untrained" not in asked[0]
    assert panel.session.reviewed_display() == [6]


def _adopt(panel, adopted: np.ndarray):
    """The user opens an existing segmentation and chooses it as the loop's labels."""
    image = panel.session.image_layer
    layer = panel.viewer.add_labels(
        adopted.copy(),
        name="expert segmentation",
        scale=image.scale,
        translate=image.translate,
        affine=image.affine.affine_matrix,
    )
    combo = panel.segment_section.labels_combo
    index = combo.findText(layer.name)
    combo.setCurrentIndex(index)
    combo.activated.emit(index)
    assert panel.session.labels_layer is layer
    return layer


def test_run_into_an_adopted_segmentation_asks_and_only_empty_slices_keeps_it(
    panel, tiny_scan, qtbot, monkeypatch
):
    image = _open(panel, tiny_scan[0])
    adopted = np.zeros(image.data.shape, np.uint8)
    adopted[3:7, 10:25, 10:25] = 1  # the expert's ball on display slices 3..6
    layer = _adopt(panel, adopted)
    panel.model_section.new_model(["ball"], spatial_dims=2)
    assert panel.session.labels_layer is layer

    asked = _run_answers(monkeypatch, Button.Cancel)
    assert panel.segment_section.run() is None
    assert len(asked) == 1 and "did not predict" in asked[0] and "4 unreviewed" in asked[0]
    np.testing.assert_array_equal(layer.data, adopted)
    assert "cancelled" in panel.segment_section.status.text()

    asked = _run_answers(monkeypatch, Button.No)  # "Only empty slices"
    panel.segment_section.run_button.click()
    _wait_run(panel, qtbot)
    assert len(asked) == 1
    np.testing.assert_array_equal(layer.data[3:7], adopted[3:7])  # the expert's slices
    assert not np.array_equal(layer.data, adopted)  # the empty ones got the prediction
    layer.undo()
    np.testing.assert_array_equal(layer.data, adopted)

    asked = _run_answers(monkeypatch, Button.Yes)  # "Replace"
    panel.segment_section.run_button.click()
    _wait_run(panel, qtbot)
    assert len(asked) == 1 and not np.array_equal(layer.data[3:7], adopted[3:7])
    assert panel.session.loop.foreign_content() == 0  # its own prediction: no more question
    layer.undo()  # the replacing merge: the adopted content is back, and so is the question
    np.testing.assert_array_equal(layer.data, adopted)
    asked = _run_answers(monkeypatch, Button.Cancel)
    assert panel.segment_section.run() is None and len(asked) == 1


def test_run_after_a_fine_tune_does_not_ask_about_its_own_prediction(panel, tiny_scan, qtbot,
                                                                      monkeypatch):  # fmt: skip
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    panel.segment_section.run_button.click()
    _wait_run(panel, qtbot)
    _stroke(panel.session.labels_layer, 5)
    asked = _run_answers(monkeypatch, Button.Cancel)
    panel.finetune_section.start(steps=2, repredict=True)
    qtbot.waitUntil(lambda: panel.segment_section.run_button.isEnabled(), timeout=120000)
    qtbot.waitUntil(lambda: "voxels changed" in panel.segment_section.status.text(), timeout=60000)
    assert not asked  # the parent version wrote the labels: the same model's line


# --- controls follow the state -----------------------------------------------------------------
def test_controls_are_enabled_only_when_their_action_makes_sense(panel, tiny_scan, qtbot):
    model, segment = panel.model_section, panel.segment_section
    review, finetune, export = panel.review_section, panel.finetune_section, panel.export_section
    off_before_a_scan = (model.new_button, segment.run_button, review.accept_button,
                         review.next_button, finetune.start_button, model.rollback_button,
                         export.save_labels_button, export.save_model_button)  # fmt: skip
    assert not any(b.isEnabled() for b in off_before_a_scan)
    assert export.open_ws_button.isEnabled()

    _open(panel, tiny_scan[0])
    assert model.new_button.isEnabled() and model.open_button.isEnabled()
    for button in (segment.run_button, review.accept_button, finetune.start_button,
                   export.save_model_button, model.rollback_button):  # fmt: skip
        assert not button.isEnabled(), button.text()

    panel.model_section.new_model(["ball"], spatial_dims=2)
    assert segment.run_button.isEnabled() and review.accept_button.isEnabled()
    assert review.next_button.isEnabled() and export.save_model_button.isEnabled()
    assert not finetune.start_button.isEnabled()  # nothing reviewed yet
    assert not model.rollback_button.isEnabled()  # one version
    panel.session.labels_layer.paint((4, 10, 12), 1, refresh=True)
    assert finetune.start_button.isEnabled()

    panel.model_section.new_model(["ball"], spatial_dims=2, arch="unet")
    assert len(panel.session.loop.versions) == 2
    assert not model.rollback_button.isEnabled()  # two versions, none selected
    model.versions.setCurrentRow(0)
    assert model.rollback_button.isEnabled()

    segment.run_button.click()  # during a job the loop's mutating actions are locked
    for button in (segment.run_button, model.new_button, model.open_button,
                   model.rollback_button, finetune.start_button,
                   export.open_ws_button):  # fmt: skip
        assert not button.isEnabled(), button.text()
    assert not segment.labels_combo.isEnabled()
    assert review.accept_button.isEnabled()  # a merge keeps slices reviewed meanwhile
    assert segment.cancel_button.isEnabled()
    _wait_run(panel, qtbot)
    assert segment.run_button.isEnabled() and model.new_button.isEnabled()
    assert finetune.start_button.isEnabled() and segment.labels_combo.isEnabled()

    finetune.start(steps=2, repredict=True)
    assert not finetune.start_button.isEnabled() and not segment.run_button.isEnabled()
    qtbot.waitUntil(lambda: "voxels changed" in segment.status.text(), timeout=120000)
    qtbot.waitUntil(lambda: finetune.start_button.isEnabled(), timeout=60000)
    assert segment.run_button.isEnabled() and model.new_button.isEnabled()


# --- 7. next to review ------------------------------------------------------------------------
def test_next_to_review_goes_to_much_uncertain_tissue_not_an_edge_slice(panel, tiny_scan):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    session = panel.session
    loop, geometry, axis = session.loop, session.geometry, session.workspace.slice_axis
    native = {d: int(geometry.to_native_index(axis, d)) for d in range(10)}
    unc = np.zeros(loop.image.shape, np.float32)
    loop.labels[...] = 0
    for d in range(1, 9):  # a ball in slices 1..8, medium uncertainty; most in slice 4
        k = native[d]
        loop.labels[10:30, 8:28, k] = 1
        unc[10:30, 8:28, k] = 0.3 + (0.2 if d == 4 else 0.0)
    for d in (0, 9):  # edge slices: a few voxels, very uncertain all around
        loop.labels[0:3, 0:3, native[d]] = 1
        unc[..., native[d]] = 0.8
    loop.last_uncertainty = unc
    loop.labels_edited()
    panel.review_section.next_button.click()
    assert panel.viewer.dims.current_step[0] == 4
    order = [int(geometry.to_display_index(axis, k)) for k in loop.review_order()]
    assert set(order[-2:]) == {0, 9}


@pytest.mark.parametrize("trained", [False, True])
def test_the_uncertainty_overlay_keeps_the_anatomy_readable(panel, tiny_scan, trained):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    loop = panel.session.loop
    loop.last_uncertainty = np.full(loop.image.shape, 0.9 if not trained else 0.05, np.float32)
    panel.segment_section.show_uncertainty()
    layer = panel.viewer.layers[f"{panel.session.image_layer.name} uncertainty"]
    assert layer.blending == "translucent"
    rgba = layer.colormap.map(np.array([0.05, 0.9]))
    assert rgba[0, 3] == 0  # where the model is sure, the scan shows as it is
    assert rgba[1, 3] * layer.opacity < 0.6  # and never hidden where it is not

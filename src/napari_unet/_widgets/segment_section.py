"""Segment step: run the model on the scan in a worker; reviewed slices are kept.

Before a Run would replace unreviewed content that this model's line did not write
(an adopted segmentation, labels from a file or another model: `Loop.foreign_content`),
the user is asked: replace it, predict only into empty slices, or cancel.
"""

from __future__ import annotations

import numpy as np
from napari.utils.colormaps import Colormap
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

from napari_unet._widgets._session import LoopSession
from napari_unet._widgets._worker import start_job
from napari_unet.errors import InputError

NEW_LAYER = "(new layer)"
REPLACE, ONLY_EMPTY = "replace", "empty"

#: The uncertainty overlay: transparent where the model is sure (below 0.15), then
#: orange to yellow with growing opacity, blended translucently, so the anatomy and the
#: labels stay readable under it and only the doubtful voxels are coloured. Limits are
#: fixed at [0, 1] (normalised entropy) so overlays of successive predictions compare.
UNCERTAINTY_COLORMAP = Colormap(
    colors=[[1.0, 0.5, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0], [1.0, 0.7, 0.0, 0.65],
            [1.0, 1.0, 0.3, 0.75]],
    controls=[0.0, 0.15, 0.5, 1.0],
    name="napari-unet uncertainty",
)  # fmt: skip


class SegmentSection(QGroupBox):
    """Device choice, Run with progress and Cancel, optional uncertainty layer."""

    def __init__(self, session: LoopSession) -> None:
        super().__init__("2 · Segment")
        self.session = session
        self.worker = None
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        self.uncertainty_check = QCheckBox("uncertainty")
        self.uncertainty_check.setChecked(True)
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.show_uncertainty_button = QPushButton("Show uncertainty")
        self.show_uncertainty_button.setToolTip(
            "Add the last prediction's per-voxel uncertainty (softmax entropy) as a layer"
        )
        self.show_uncertainty_button.setEnabled(False)
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip(
            "The labels layer predictions go into and corrections are read from"
        )
        self.status = QLabel("")
        self.status.setWordWrap(True)
        target = QHBoxLayout()
        target.addWidget(QLabel("Labels"))
        target.addWidget(self.labels_combo, 1)
        self.open_labels_button = QPushButton("Open labels…")
        self.open_labels_button.setToolTip(
            "An existing segmentation (NIfTI, NRRD, .seg.nrrd, DICOM SEG, RTSTRUCT) on this "
            "scan's grid becomes the loop's labels"
        )
        target.addWidget(self.open_labels_button)
        row = QHBoxLayout()
        for widget in (QLabel("Device"), self.device_combo, self.uncertainty_check):
            row.addWidget(widget)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.show_uncertainty_button)
        layout = QVBoxLayout(self)
        layout.addLayout(target)
        layout.addLayout(row)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        self.run_button.clicked.connect(self._run_clicked)
        self.cancel_button.clicked.connect(self.cancel)
        self.show_uncertainty_button.clicked.connect(self.show_uncertainty)
        self.labels_combo.activated.connect(self._labels_chosen)
        self.open_labels_button.clicked.connect(self._open_labels_clicked)
        self.device_combo.currentTextChanged.connect(self._device_chosen)
        session.changed.connect(self.refresh_labels_choices)
        layers = session.viewer.layers.events
        for event in (layers.inserted, layers.removed):
            event.connect(self.refresh_labels_choices)
        self.refresh_labels_choices()

    def refresh_labels_choices(self, event=None) -> None:
        """List the viewer's labels layers; the loop's own one is selected."""
        from napari.layers import Labels

        names = [layer.name for layer in self.session.viewer.layers if isinstance(layer, Labels)]
        current = self.session.labels_layer
        self.labels_combo.blockSignals(True)
        self.labels_combo.clear()
        self.labels_combo.addItems([NEW_LAYER, *names])
        if current is not None and current.name in names:
            self.labels_combo.setCurrentIndex(names.index(current.name) + 1)
        self.labels_combo.blockSignals(False)

    def _device_chosen(self, device: str) -> None:
        self.session.device = device
        if self.session.loop is not None:
            self.session.loop.device = device

    def _open_labels_clicked(self) -> None:
        from napari_unet._widgets.open_labels import open_labels_dialog

        try:
            self.session.require_image()
        except InputError as e:
            show_error(str(e))
            return
        if open_labels_dialog(self.session.viewer, self, session=self.session) is not None:
            self.refresh_labels_choices()

    def _labels_chosen(self, index: int) -> None:
        session = self.session
        name = self.labels_combo.itemText(index)
        try:
            if name == NEW_LAYER:
                session.start_new_labels()  # the next prediction makes its layer
            else:
                session.use_labels_layer(session.viewer.layers[name])
        except InputError as e:
            show_error(str(e))
        self.refresh_labels_choices()

    def run(self, *, only_unreviewed: bool = True, into: str | None = None, on_done=None):
        """Predict (the unreviewed slices of a 2D model) and merge into the labels layer.

        Args:
            only_unreviewed: a 2D model predicts only the unreviewed slices.
            into: what to do with unreviewed content this model's line did not write:
                "replace" it, write only into "empty" slices, or None: ask the user
                (only if there is such content; cancelling returns None).
            on_done: called with the prediction once it is merged.

        Returns the worker (None when nothing runs). Reviewed slices are never
        overwritten; the merge is one step of the labels layer's undo history.
        """
        session = self.session
        session.require_image()
        loop = session.loop
        if loop.model is None:
            raise InputError("create or open a model first (step 1)")
        session.ensure_labels_layer(loop.model.spec.labels, loop.model.spec.colors)
        if (
            only_unreviewed
            and loop.model.spec.spatial_dims == 2
            and (len(loop.reviewed) == loop.workspace.n_slices)
        ):
            show_info("every slice is reviewed: nothing to predict")
            return None
        predict = loop.predict(only_unreviewed=only_unreviewed,
                               uncertainty=self.uncertainty_check.isChecked())  # fmt: skip
        if into is None:  # asked once the loop has accepted the job (and is busy)
            foreign = loop.foreign_content()
            into = REPLACE if not foreign else ask_run_into(self, foreign, loop)
            if into is None:
                predict.close()  # not run: the loop is free again
                self.status.setText("Run cancelled: the labels were left as they are.")
                return None

        def job():
            prediction = yield from predict
            only = loop.empty_slices() if into == ONLY_EMPTY else None
            # the comparison over the whole volume, here in the worker: on the GUI
            # thread it froze the window for ~2 s (benchmarks/bench_gui_stall.py)
            planned = loop.plan_merge(prediction, only=only)
            return prediction, only, planned, session.display_edit(planned)

        def done(result) -> None:
            prediction, only, planned, shown = result
            changed = session.merge_prediction(prediction, only=only, planned=planned,
                                               shown=shown)  # fmt: skip
            if prediction.uncertainty is not None:
                self._keep_uncertainty(loop.last_uncertainty)
            for message in prediction.messages:
                show_info(message)
            self.status.setText(
                f"{prediction.seconds:.1f} s on {prediction.device}; {changed:,} voxels changed"
            )
            session.changed.emit()
            if on_done is not None:
                on_done(prediction)

        def finished() -> None:
            predict.close()  # a cancelled job is left suspended: free the loop now
            self._busy(False)

        self._busy(True)
        self.worker = start_job(job, description="Segmenting", on_result=done,
                                on_finished=finished, activity=False)  # fmt: skip
        return self.worker

    def _uncertainty_name(self) -> str:
        return f"{self.session.image_layer.name} uncertainty"

    def _keep_uncertainty(self, native: np.ndarray) -> None:
        """Keep the uncertainty for "next slice to review"; refresh its layer if shown.

        The layer is only made on request (`show_uncertainty`): adding a layer takes
        napari a few hundred milliseconds on the GUI thread, too long to do unasked at
        the end of every prediction.
        """
        session = self.session
        self.show_uncertainty_button.setEnabled(True)
        name = self._uncertainty_name()
        if name in session.viewer.layers:
            session.viewer.layers[name].data = session.geometry.to_display(native)

    def show_uncertainty(self) -> None:
        """Add (or bring back) the uncertainty layer of the last prediction."""
        session = self.session
        if session.last_uncertainty is None:
            show_info("run a prediction with uncertainty first")
            return
        name = self._uncertainty_name()
        data = session.geometry.to_display(session.last_uncertainty)
        if name in session.viewer.layers:
            session.viewer.layers[name].data = data
            session.viewer.layers[name].visible = True
            return
        session.viewer.add_image(
            data,
            name=name,
            scale=session.image_layer.scale,
            translate=session.image_layer.translate,
            colormap=UNCERTAINTY_COLORMAP,
            blending="translucent",
            opacity=0.7,
            contrast_limits=(0.0, 1.0),
            units="mm",
        )
        session.viewer.layers.selection.active = session.labels_layer

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()

    def _busy(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _run_clicked(self) -> None:
        try:
            self.run()
        except InputError as e:
            show_error(str(e))


def ask_run_into(parent, voxels: int, loop) -> str | None:
    """Ask what a Run does with unreviewed content the model did not write.

    Returns "replace", "empty" (only slices without foreground) or None (cancel).
    """
    reviewed = len(loop.reviewed)
    holding = loop.workspace.n_slices - reviewed - len(loop.empty_slices())
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Replace the segmentation?")
    box.setText(
        f"The labels hold {voxels:,} voxels on {holding} unreviewed slice(s) that this "
        "model did not predict (e.g. an adopted segmentation, or another model's)."
    )
    box.setInformativeText(
        "Replace them with this model's prediction, predict only into the empty slices, "
        "or cancel? Reviewed slices are never changed; Ctrl-Z undoes the whole merge."
    )
    buttons = QMessageBox.StandardButton
    box.setStandardButtons(buttons.Yes | buttons.No | buttons.Cancel)
    box.button(buttons.Yes).setText("Replace")
    box.button(buttons.No).setText("Only empty slices")
    box.setDefaultButton(buttons.Cancel)
    answer = buttons(box.exec())
    return {buttons.Yes: REPLACE, buttons.No: ONLY_EMPTY}.get(answer)

"""The Cohort dock: review a cohort run case by case, most uncertain first, in the U-Net panel.

It drives `napari_unet.cohort.review.CohortReview` (no logic of its own) and the U-Net
panel's session: *Open next to review* opens the case's scan with the plugin's reader,
hands it to the panel (`LoopSession.attach_image`), puts the run's prediction into the
panel's labels layer and its model into the loop; corrections are made with the
panel's tools. The reviewed slices and labels are saved back as the case's workspace
(`Loop.save` into ``review/<id>/``) when the next case opens or on *Save review*.
*Fine-tune on reviewed cases* trains one new version on all of them in the background;
the next cases open with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_unet._widgets._worker import start_job
from napari_unet.errors import InputError

COLUMNS = ("Case", "Status", "Uncertainty", "Reviewed")


class CohortWidget(QWidget):
    """Open a cohort run (or manifest), review its cases, fine-tune on the reviewed ones."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.review: Any = None  # cohort.review.CohortReview
        self.current: Any = None  # the ReviewEntry open in the panel
        self.worker: Any = None
        self._layers: list[Any] = []
        self._model: Any = None  # (path, LoadedModel): loaded once, shared by the cases

        self.info = QLabel("Open a cohort run's output folder, or a manifest (.csv/.tsv).")
        self.info.setWordWrap(True)
        self.open_folder_button = QPushButton("Open run folder…")
        self.open_manifest_button = QPushButton("Open manifest…")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.next_button = QPushButton("Open next to review")
        self.open_selected_button = QPushButton("Open selected")
        self.save_button = QPushButton("Save review")
        self.steps = QSpinBox()
        self.steps.setRange(1, 100_000)
        self.steps.setValue(300)
        self.steps.setPrefix("steps: ")
        self.finetune_button = QPushButton("Fine-tune on reviewed cases")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(self.info)
        layout.addLayout(_row(self.open_folder_button, self.open_manifest_button))
        layout.addWidget(self.table)
        layout.addLayout(_row(self.next_button, self.open_selected_button, self.save_button))
        layout.addLayout(_row(self.steps, self.finetune_button, self.cancel_button))
        layout.addWidget(self.model_label)

        self.open_folder_button.clicked.connect(self._open_folder_dialog)
        self.open_manifest_button.clicked.connect(self._open_manifest_dialog)
        self.next_button.clicked.connect(lambda: self._guard(self.open_next))
        self.open_selected_button.clicked.connect(lambda: self._guard(self.open_selected))
        self.table.cellDoubleClicked.connect(lambda *_: self._guard(self.open_selected))
        self.save_button.clicked.connect(lambda: self._guard(self.save_current))
        self.finetune_button.clicked.connect(lambda: self._guard(self.finetune))
        self.cancel_button.clicked.connect(self.cancel)
        self._update_buttons()

    # --- cohort -------------------------------------------------------------------------
    def open_cohort(self, path: str | Path) -> None:
        """Open a cohort run's output folder or a CSV/TSV manifest."""
        from napari_unet.cohort.review import CohortReview

        self.review = CohortReview.open(path)
        self.current = None
        self.info.setText(f"Cohort: {Path(path).name} ({len(self.review.entries)} cases)")
        self.refresh()

    def refresh(self) -> None:
        """Fill the table (queue order first, then reviewed and failed cases)."""
        review = self.review
        if review is None:
            return
        review.refresh()
        queue = review.queue()
        rest = [e for e in review.entries if e not in queue]
        self.table.setRowCount(0)
        for entry in queue + rest:
            row = self.table.rowCount()
            self.table.insertRow(row)
            unc = "" if entry.uncertainty is None else f"{entry.uncertainty:.3f}"
            if entry.uncertainty is None and entry.status in ("done", "skipped"):
                unc = "nothing found"
            reviewed = f"yes ({entry.reviewed_slices})" if entry.reviewed else "no"
            for col, text in enumerate((entry.id, entry.status, unc, reviewed)):
                item = QTableWidgetItem(text)
                if entry.error:
                    item.setToolTip(entry.error)
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        model = review.model_path
        self.model_label.setText(f"Model: {Path(model).name}" if model else "Model: none yet")
        self._update_buttons()

    def rows(self) -> list[tuple[str, str, str, str]]:
        """The table's text, row by row (for tests and scripts)."""
        return [
            tuple(self.table.item(r, c).text() for c in range(len(COLUMNS)))  # type: ignore[misc]
            for r in range(self.table.rowCount())
        ]

    # --- cases --------------------------------------------------------------------------
    def open_next(self) -> Any:
        """Open the most uncertain unreviewed case; returns its entry (None: all done)."""
        self._require_review()
        self._save_if_reviewed()
        entry = self.review.next_to_review()
        if entry is None:
            show_info("every case of the cohort is reviewed")
            return None
        self.open_case(entry)
        return entry

    def open_selected(self) -> Any:
        self._require_review()
        row = self.table.currentRow()
        if row < 0:
            raise InputError("select a case in the table first")
        entry = self.review.entry(self.table.item(row, 0).text())
        if not entry.openable:
            raise InputError(f"case {entry.id} failed in the run: {entry.error}")
        self._save_if_reviewed()
        self.open_case(entry)
        return entry

    def open_case(self, entry: Any) -> None:
        """Show ``entry`` in the U-Net panel: its scan, its labels, the cohort's model."""
        from napari_unet.cohort.review import load_review_labels

        panel = self.panel()
        session = panel.session
        labels, reviewed, axis = load_review_labels(entry)
        for layer in self._layers:  # the previous case leaves the viewer
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._layers = []
        layers = self.viewer.open(entry.image, plugin="napari-unet")
        image = next((lay for lay in layers if isinstance(lay, napari.layers.Image)), None)
        if image is None:
            raise InputError(f"case {entry.id}: {entry.image} could not be opened")
        session.attach_image(image)
        loop = session.loop
        if axis is not None:
            loop.workspace.slice_axis = int(axis)
        model = self._loaded_model()
        if model is not None:
            loop.set_model(model)
        layer = session.ensure_labels_layer()
        if labels is not None:
            if tuple(labels.shape) != loop.image.shape:
                raise InputError(f"case {entry.id}: its labels are not on the scan's grid")
            np.copyto(loop.labels, labels, casting="unsafe")
            layer.refresh()
        loop.mark_reviewed(sorted(reviewed))
        self._layers = [image, layer]
        self.current = entry
        self.info.setText(f"Reviewing {entry.id}: correct slices in the U-Net panel, then "
                          "open the next case (this one is saved).")  # fmt: skip
        self.refresh()

    def save_current(self) -> Path | None:
        """Save the open case's labels and reviewed slices into its workspace."""
        if self.current is None or self.review is None:
            raise InputError("open a case first")
        loop = self.panel().session.loop
        if loop is None:
            raise InputError("the case is no longer open in the U-Net panel")
        folder = self.review.save(self.current, loop)
        self.refresh()
        return folder

    def _save_if_reviewed(self) -> None:
        if self.current is None:
            return
        session = self._find_panel()
        loop = session.session.loop if session is not None else None
        if loop is not None and loop.reviewed and not loop.busy:
            self.save_current()

    # --- fine-tuning ----------------------------------------------------------------------
    def finetune(self) -> Any:
        """Train one new version on every reviewed case, in the background."""
        self._require_review()
        self._save_if_reviewed()
        review, steps = self.review, int(self.steps.value())
        if not review.training_cases():
            raise InputError("no reviewed case yet: correct slices of a case and save it first")
        self.worker = start_job(lambda: review.finetune(steps=steps),
                                description="fine-tuning on reviewed cases",
                                on_result=self._adopt, on_finished=self._job_ended)  # fmt: skip
        self._update_buttons()
        return self.worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()

    def _adopt(self, version: Any) -> None:
        self.review.adopt(version)
        self._model = (str(Path(version.path).absolute()), version.model)
        panel = self._find_panel()
        loop = panel.session.loop if panel is not None else None
        if loop is not None and not loop.busy and version.model is not None:
            loop.set_model(version.model)
        val = version.metrics.get("val_dice")
        show_info(f"new version {Path(version.path).name} from {len(version.cases)} cases"
                  + ("" if val is None else f" (validation Dice {val:.3f})"))  # fmt: skip
        self.refresh()

    def _job_ended(self) -> None:
        self.worker = None
        self._update_buttons()

    # --- the panel ------------------------------------------------------------------------
    def _find_panel(self) -> Any:
        from napari_unet._widgets.panel import UNetPanel

        for widget in self.viewer.window.dock_widgets.values():
            if isinstance(widget, UNetPanel):
                return widget
        return None

    def panel(self) -> Any:
        """The U-Net panel of this viewer (docked now if it was not)."""
        panel = self._find_panel()
        if panel is not None:
            return panel
        try:
            _, panel = self.viewer.window.add_plugin_dock_widget("napari-unet", "U-Net")
        except (KeyError, ValueError, LookupError):
            from napari_unet._widgets.panel import UNetPanel

            panel = UNetPanel(self.viewer)
            self.viewer.window.add_dock_widget(panel, name="U-Net")
        return panel

    def _loaded_model(self) -> Any:
        from napari_unet.models.files import load_model

        path = self.review.model_path
        if path is None:
            return None
        path = str(Path(path).absolute())
        if self._model is None or self._model[0] != path:
            self._model = (path, load_model(path))
        return self._model[1]

    # --- helpers --------------------------------------------------------------------------
    def _require_review(self) -> None:
        if self.review is None:
            raise InputError("open a cohort first (its run folder or its manifest)")

    def _guard(self, action) -> Any:
        try:
            return action()
        except InputError as e:
            show_error(str(e))
            return None

    def _update_buttons(self) -> None:
        opened, idle = self.review is not None, self.worker is None
        for button in (self.next_button, self.open_selected_button, self.finetune_button):
            button.setEnabled(opened and idle)
        self.save_button.setEnabled(opened and self.current is not None)
        self.cancel_button.setEnabled(not idle)

    def _open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a cohort run's output folder")
        if folder:
            self._guard(lambda: self.open_cohort(folder))

    def _open_manifest_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a cohort manifest", "",
                                              "Manifests (*.csv *.tsv)")  # fmt: skip
        if path:
            self._guard(lambda: self.open_cohort(path))


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row

"""Export and safety: save labels/model/workspace, reopen a workspace, autosave."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QGridLayout, QGroupBox, QLabel, QMessageBox, QPushButton

from napari_unet._layers import image_layer_data
from napari_unet._widgets._session import LoopSession
from napari_unet.errors import InputError, NapariUnetError
from napari_unet.outputs import atomic_output, check_output

AUTOSAVE_MS = 5000


class ExportSection(QGroupBox):
    """Save the labels (NIfTI, scan geometry), the model, the workspace; autosave."""

    def __init__(self, session: LoopSession, *, autosave_ms: int = AUTOSAVE_MS) -> None:
        super().__init__("5 · Export")
        self.session = session
        self.save_labels_button = QPushButton("Save labels (NIfTI)…")
        self.save_model_button = QPushButton("Save model as…")
        self.save_ws_button = QPushButton("Save workspace…")
        self.open_ws_button = QPushButton("Open workspace…")
        self.autosave_label = QLabel("autosave: on")
        layout = QGridLayout(self)
        layout.addWidget(self.save_labels_button, 0, 0)
        layout.addWidget(self.save_model_button, 0, 1)
        layout.addWidget(self.save_ws_button, 1, 0)
        layout.addWidget(self.open_ws_button, 1, 1)
        layout.addWidget(self.autosave_label, 2, 0, 1, 2)

        self.save_labels_button.clicked.connect(lambda: self._guard(self._save_labels_dialog))
        self.save_model_button.clicked.connect(lambda: self._guard(self._save_model_dialog))
        self.save_ws_button.clicked.connect(lambda: self._guard(self._save_ws_dialog))
        self.open_ws_button.clicked.connect(lambda: self._guard(self._open_ws_dialog))
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.autosave)
        self.timer.start(autosave_ms)
        session.reviewed_changed.connect(self._mark_dirty)

    # --- actions -------------------------------------------------------------------------
    def save_labels(self, path: str | Path) -> Path:
        """The labels as NIfTI in the scan's geometry (the file dialog asked before
        replacing a file; the scan itself is never replaced)."""
        layer = self.session.labels_layer
        if layer is None or layer not in self.session.viewer.layers:
            raise InputError("there is no segmentation to save yet")
        out = self.session.loop.export(path, overwrite=True)
        show_info(f"labels saved to {out} in the scan's geometry")
        return out

    def save_model(self, path: str | Path) -> Path:
        source = self.session.workspace.model_path() if self.session.workspace else None
        if source is None or not source.exists():
            raise InputError("there is no model to save yet")
        check_output(path, overwrite=True, inputs=[source, self._scan_source()])
        with atomic_output(path) as tmp:
            shutil.copyfile(source, tmp)
        return Path(path)

    def save_workspace(self, folder: str | Path) -> Path:
        if self.session.loop is None:
            raise InputError("open a scan first")
        saved = self.session.loop.save(folder)
        show_info(f"workspace saved to {saved}")
        return saved

    def open_workspace(self, folder: str | Path) -> None:
        from napari_unet.loop import Loop

        session = self.session
        loop = Loop.open(folder, device=session.device)
        data, kwargs, _ = image_layer_data(loop.image, Path(folder).name)
        session.attach_image(session.viewer.add_image(data, **kwargs))
        # the reopened loop takes over the session's buffer: one array, as always
        np.copyto(session.loop.labels, loop.labels, casting="unsafe")
        loop.workspace.labels = session.loop.labels
        session.set_loop(loop)
        ws = loop.workspace
        session.ensure_labels_layer(ws.label_names, ws.label_colors)
        session.labels_layer.refresh()
        session.changed.emit()
        session.reviewed_changed.emit()

    def autosave(self, *, wait: bool = False) -> bool:
        """Start writing the recovery file (in a thread) if the labels changed; report
        the previous write's failure, if any. Returns whether a write started."""
        session = self.session
        error, session.autosave_error = session.autosave_error, None
        if error is not None:
            self.autosave_label.setText(f"autosave failed: {error}")
        try:
            wrote = session.autosave(wait=wait)
        except (OSError, NapariUnetError) as e:
            self.autosave_label.setText(f"autosave failed: {e}")
            return False
        if wrote and error is None:
            self.autosave_label.setText("autosave: saved")
        return wrote

    def offer_restore(self) -> bool:
        """Ask whether to restore an autosave of this scan from an earlier session."""
        found = self.session.pending_recovery()
        if found is None:
            return False
        _, reviewed, _ = found
        answer = QMessageBox.question(
            self,
            "Restore corrections?",
            f"Unsaved corrections of this scan from an earlier session were found "
            f"({len(reviewed)} reviewed slices). Restore them?",
        )
        if answer == QMessageBox.StandardButton.Yes:
            return self.session.restore_recovery()
        return False

    def _scan_source(self) -> str | None:
        ws = self.session.workspace
        return ws.image.source if ws is not None else None

    # --- Qt slots ----------------------------------------------------------------------------
    def _mark_dirty(self) -> None:
        self.session.dirty = True

    def _guard(self, action) -> None:
        try:
            action()
        except (InputError, NapariUnetError) as e:
            show_error(str(e))
        except OSError as e:
            show_error(f"could not write: {e}")

    def _save_labels_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save labels", "", "NIfTI (*.nii.gz *.nii)")
        if path:
            self.save_labels(path if path.endswith((".nii", ".nii.gz")) else path + ".nii.gz")

    def _save_model_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "", "Model (*.safetensors)")
        if path:
            self.save_model(path if path.endswith(".safetensors") else path + ".safetensors")

    def _save_ws_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save workspace in folder")
        if folder:
            self.save_workspace(folder)

    def _open_ws_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open workspace folder")
        if folder:
            self.open_workspace(folder)

"""Export and safety: save labels/model/workspace, reopen a workspace, autosave."""

from __future__ import annotations

import shutil
from pathlib import Path

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QGridLayout, QGroupBox, QLabel, QMessageBox, QPushButton

from napari_unet._layers import image_layer_data
from napari_unet._widgets._session import LoopSession
from napari_unet.errors import InputError, NapariUnetError
from napari_unet.outputs import atomic_output, check_output

AUTOSAVE_MS = 5000


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_output(target) as tmp:
        shutil.copyfile(source, tmp)


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
        layer = self.session.labels_layer
        if layer is None or layer not in self.session.viewer.layers:
            raise InputError("there is no segmentation to save yet")
        # The file dialog has asked before replacing a file; the scan itself never is.
        check_output(path, overwrite=True, inputs=[self._scan_source()])
        layer.save(str(path), plugin="napari-unet")
        show_info(f"labels saved to {path} in the scan's geometry")
        return Path(path)

    def save_model(self, path: str | Path) -> Path:
        source = self.session.workspace.model_path() if self.session.workspace else None
        if source is None or not source.exists():
            raise InputError("there is no model to save yet")
        check_output(path, overwrite=True, inputs=[source, self._scan_source()])
        _copy_atomic(source, Path(path))
        return Path(path)

    def save_workspace(self, folder: str | Path) -> Path:
        session = self.session
        ws = session.workspace
        if ws is None:
            raise InputError("open a scan first")
        ws.check_target(Path(folder))  # before anything is written into it
        if session.labels_layer is not None:
            ws.labels = session.labels_native().copy()
        models = Path(folder) / "models"
        models.mkdir(parents=True, exist_ok=True)
        for version in ws.models:  # bring model files into the workspace
            source = ws.model_path(version.hash)
            if source is not None and source.exists() and source.parent != models:
                _copy_atomic(source, models / source.name)
                version.file = source.name
        ws.save(folder, checked=True)
        show_info(f"workspace saved to {folder}")
        return Path(folder)

    def open_workspace(self, folder: str | Path) -> None:
        from napari_unet.models.files import load_model
        from napari_unet.workspace import Workspace

        session = self.session
        ws = Workspace.open(folder)
        data, kwargs, _ = image_layer_data(ws.image, Path(folder).name)
        session.attach_image(session.viewer.add_image(data, **kwargs))
        session.workspace = ws
        session.ensure_labels_layer(ws.label_names, ws.label_colors)
        session.labels_layer.data = session.geometry.to_display(ws.labels).copy()
        if ws.current is not None and ws.model_path() is not None:
            session.model = load_model(ws.model_path())
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

"""Export and safety: save labels/model/workspace, reopen a workspace, autosave.

Labels are saved in the format chosen next to *Save labels…*: NIfTI, a 3D Slicer
segmentation (.seg.nrrd), a DICOM SEG or an RTSTRUCT (`LABEL_FORMATS`); the DICOM objects
are written over the DICOM series the scan was opened from (its headers are read again
from its folder), as SEMIAUTOMATIC with the live model's name and version hash when the
loop has a model, MANUAL otherwise.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QLabel,
    QMessageBox,
    QPushButton,
)

from napari_unet._layers import image_layer_data
from napari_unet._widgets._session import LoopSession
from napari_unet.errors import InputError, NapariUnetError
from napari_unet.outputs import atomic_output, check_output

AUTOSAVE_MS = 5000
#: format → (combo text, file-dialog filter, default ending)
LABEL_FORMATS = {
    "nifti": ("NIfTI", "NIfTI (*.nii.gz *.nii)", ".nii.gz"),
    "seg-nrrd": ("Slicer .seg.nrrd", "3D Slicer segmentation (*.seg.nrrd)", ".seg.nrrd"),
    "dicom-seg": ("DICOM SEG", "DICOM SEG (*.dcm)", ".dcm"),
    "rtstruct": ("RTSTRUCT", "DICOM RT Structure Set (*.dcm)", ".dcm"),
}


class ExportSection(QGroupBox):
    """Save the labels (NIfTI, scan geometry), the model, the workspace; autosave."""

    def __init__(self, session: LoopSession, *, autosave_ms: int = AUTOSAVE_MS) -> None:
        super().__init__("5 · Export")
        self.session = session
        self.save_labels_button = QPushButton("Save labels…")
        self.format_combo = QComboBox()
        for key, (text, _, _) in LABEL_FORMATS.items():
            self.format_combo.addItem(text, key)
        self.format_combo.setToolTip("Format of Save labels…, in the scan's geometry")
        self.save_model_button = QPushButton("Save model as…")
        self.save_ws_button = QPushButton("Save workspace…")
        self.open_ws_button = QPushButton("Open workspace…")
        self.autosave_label = QLabel("autosave: on")
        layout = QGridLayout(self)
        layout.addWidget(self.save_labels_button, 0, 0)
        layout.addWidget(self.format_combo, 0, 1)
        layout.addWidget(self.save_model_button, 1, 0)
        layout.addWidget(self.save_ws_button, 1, 1)
        layout.addWidget(self.open_ws_button, 2, 0)
        layout.addWidget(self.autosave_label, 3, 0, 1, 2)

        self.save_labels_button.clicked.connect(lambda: self._guard(self._save_labels_dialog))
        self.save_model_button.clicked.connect(lambda: self._guard(self._save_model_dialog))
        self.save_ws_button.clicked.connect(lambda: self._guard(self._save_ws_dialog))
        self.open_ws_button.clicked.connect(lambda: self._guard(self._open_ws_dialog))
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.autosave)
        self.timer.start(autosave_ms)
        session.reviewed_changed.connect(self._mark_dirty)

    # --- actions -------------------------------------------------------------------------
    def save_labels(self, path: str | Path, fmt: str | None = None) -> Path:
        """The labels in the scan's geometry, as ``fmt`` (a `LABEL_FORMATS` key; default:
        from the name, else the chosen format). The file dialog asked before replacing a
        file; the scan itself is never replaced."""
        layer = self.session.labels_layer
        if layer is None or layer not in self.session.viewer.layers:
            raise InputError("there is no segmentation to save yet")
        fmt = fmt or _format_of(path) or self.format_combo.currentData()
        if fmt == "nifti":
            out = self.session.loop.export(path, overwrite=True)
        else:
            out = self._export(Path(path), fmt)
        show_info(f"labels saved to {out} ({LABEL_FORMATS[fmt][0]}) in the scan's geometry")
        return out

    def _export(self, path: Path, fmt: str) -> Path:
        from napari_unet.io.volume import smallest_label_dtype

        loop = self.session.loop
        ws = loop.workspace
        array = loop.labels.astype(smallest_label_dtype(loop.labels), copy=False)
        labels = loop.image.with_array(array)
        labels.metadata = {
            "label_names": list(ws.label_names),
            "label_colors": list(ws.label_colors),
        }
        if fmt == "seg-nrrd":
            from napari_unet.io.nrrd import save_seg_nrrd

            check_output(path, overwrite=True, inputs=[loop.image.source])
            return save_seg_nrrd(labels, path, overwrite=True)
        from napari_unet.io.labelmap import Algorithm

        folder, uid = self._dicom_series()
        model, version = loop.model, loop.current
        algorithm = (
            Algorithm(model.spec.name or "napari-unet model", version.hash)
            if model is not None and version is not None
            else None
        )
        if fmt == "dicom-seg":
            from napari_unet.io.dicom_seg import write_dicom_seg

            return write_dicom_seg(
                labels, folder, path, series_uid=uid, algorithm=algorithm, overwrite=True
            )
        from napari_unet.io.rtstruct import write_rtstruct

        return write_rtstruct(
            labels, folder, path, series_uid=uid, algorithm=algorithm, overwrite=True
        )

    def _dicom_series(self) -> tuple[str, str]:
        """The folder and SeriesInstanceUID of the DICOM series the scan came from."""
        from napari_unet.io.display import METADATA_KEY

        layer = self.session.image_layer
        meta = (layer.metadata or {}).get(METADATA_KEY, {}) if layer is not None else {}
        if not meta.get("series_uid") or not meta.get("source"):
            raise InputError(
                "DICOM SEG and RTSTRUCT are written over the DICOM series the scan was "
                f"opened from; {meta.get('source') or 'this scan'} is not a DICOM series "
                "(save as NIfTI or .seg.nrrd, or convert with napari-unet convert --reference)"
            )
        return str(meta["source"]), str(meta["series_uid"])

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
        fmt = self.format_combo.currentData()
        text, pattern, ending = LABEL_FORMATS[fmt]
        path, _ = QFileDialog.getSaveFileName(self, f"Save labels ({text})", "", pattern)
        if path:
            named = _format_of(path) == fmt or path.lower().endswith(ending)
            self.save_labels(path if named else path + ending, fmt)

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


def _format_of(path: str | Path) -> str | None:
    """The format a file name implies (``.dcm`` says DICOM, not which object)."""
    name = str(path).lower()
    if name.endswith(".seg.nrrd"):
        return "seg-nrrd"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    return None

"""The Scan dock: open a NIfTI file or DICOM folder, set contrast, see the geometry."""

from __future__ import annotations

from pathlib import Path

import napari
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_unet._layers import (
    CT_WINDOWS,
    auto_contrast,
    image_layer_data,
    scan_name,
    window_limits,
)
from napari_unet._widgets._worker import start_job
from napari_unet.errors import InputError, MultipleSeriesError
from napari_unet.io.display import METADATA_KEY

MR_AUTO = "auto (MR)"


class DataWidget(QWidget):
    """Open scans, pick a CT window or MR auto-contrast, show orientation and spacing."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._worker = None

        self.open_file_button = QPushButton("Open NIfTI…")
        self.open_folder_button = QPushButton("Open DICOM folder…")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.contrast_combo = QComboBox()
        self.contrast_combo.addItems([*CT_WINDOWS, MR_AUTO])
        self.info_labels = {
            key: QLabel("–") for key in ("layer", "shape", "spacing", "orientation", "modality")
        }

        buttons = QHBoxLayout()
        for button in (self.open_file_button, self.open_folder_button, self.cancel_button):
            buttons.addWidget(button)
        form = QFormLayout()
        form.addRow("Contrast", self.contrast_combo)
        for key, label in self.info_labels.items():
            label.setWordWrap(True)
            form.addRow(key.capitalize(), label)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addLayout(form)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

        self.open_file_button.clicked.connect(self._choose_file)
        self.open_folder_button.clicked.connect(self._choose_folder)
        self.cancel_button.clicked.connect(self.cancel)
        self.contrast_combo.textActivated.connect(self.apply_contrast)
        self.viewer.layers.selection.events.active.connect(self._refresh)
        self._refresh()

    # --- opening -----------------------------------------------------------------
    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open NIfTI", "", "NIfTI (*.nii *.nii.gz);;DICOM (*.dcm *.ima);;All files (*)"
        )
        if path:
            self.open_path(path)

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open DICOM folder")
        if path:
            self.open_path(path)

    def open_path(self, path: str, series_uid: str | None = None):
        """Load ``path`` in a worker and add it as an image layer. Returns the worker."""
        from napari_unet.io import dicom
        from napari_unet.io.reader import load_volume

        def job():
            if Path(path).is_dir() or dicom.is_dicom_path(path):
                return (yield from dicom.load_dicom_steps(path, series_uid=series_uid))
            return load_volume(path)
            yield  # pragma: no cover - makes this a generator

        self._set_busy(True)
        self._worker = start_job(
            job,
            description=f"Loading {Path(path).name}",
            on_result=lambda volume: self._add_volume(volume, path),
            on_finished=lambda: self._set_busy(False),
            on_error=lambda exc: self._maybe_pick_series(exc, path),
        )
        return self._worker

    def _maybe_pick_series(self, exc: Exception, path: str) -> bool:
        if not isinstance(exc, MultipleSeriesError):
            return False
        from napari_unet._widgets.series_picker import ask_series

        uid = ask_series(exc, self)
        if uid is not None:
            self.open_path(path, series_uid=uid)
        return True

    def _add_volume(self, volume, path: str) -> None:
        data, kwargs, _ = image_layer_data(volume, scan_name(path))
        self.viewer.add_image(data, **kwargs)

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.quit()

    def _set_busy(self, busy: bool) -> None:
        self.cancel_button.setEnabled(busy)
        self.open_file_button.setEnabled(not busy)
        self.open_folder_button.setEnabled(not busy)

    # --- contrast and geometry --------------------------------------------------------
    def _image_layer(self):
        """The selected scan, else the last scan opened through the plugin."""

        def is_scan(layer) -> bool:
            return isinstance(layer, napari.layers.Image) and METADATA_KEY in layer.metadata

        layer = self.viewer.layers.selection.active
        if layer is not None and is_scan(layer):
            return layer
        scans = [lyr for lyr in self.viewer.layers if is_scan(lyr)]
        return scans[-1] if scans else None

    def apply_contrast(self, name: str) -> None:
        layer = self._image_layer()
        if layer is None:
            show_error("Open a scan first: no image layer to set the contrast of")
            return
        try:
            limits = auto_contrast(layer.data) if name == MR_AUTO else window_limits(name)
        except (InputError, ValueError) as e:
            show_error(str(e))
            return
        layer.contrast_limits_range = (
            min(limits[0], layer.contrast_limits_range[0]),
            max(limits[1], layer.contrast_limits_range[1]),
        )
        layer.contrast_limits = limits

    def _refresh(self, event=None) -> None:
        layer = self._image_layer()
        meta = (layer.metadata or {}).get(METADATA_KEY, {}) if layer is not None else {}
        values = {
            "layer": layer.name if layer is not None else "–",
            "shape": " × ".join(map(str, meta.get("native_shape", []))) or "–",
            "spacing": " × ".join(f"{s:.3g}" for s in meta.get("spacing", [])) + " mm"
            if meta.get("spacing")
            else "–",
            "orientation": meta.get("orientation", "–"),
            "modality": meta.get("modality", "–"),
        }
        for key, value in values.items():
            self.info_labels[key].setText(str(value))
        if meta.get("modality") == "MR":
            self.contrast_combo.setCurrentText(MR_AUTO)
        elif meta.get("modality") == "CT":
            self.contrast_combo.setCurrentText("soft tissue")

"""The Scan dock: open a NIfTI file or DICOM folder, set contrast and modality, see the
geometry; choose the frame (RAS or LPS) of the status bar's coordinates."""

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
    contrast_presets,
    image_layer_data,
    is_scan_layer,
    preset_limits,
    scan_name,
)
from napari_unet._widgets import _status
from napari_unet._widgets._modality import (
    choose_modality,
    describe_modality,
    layer_modality,
    modality_choice,
)
from napari_unet._widgets._worker import start_job
from napari_unet.errors import InputError, MultipleSeriesError
from napari_unet.io.display import METADATA_KEY

#: Shown in the contrast box when the limits match no preset (set by hand).
CUSTOM = "custom"


class DataWidget(QWidget):
    """Open scans, pick a CT window or a percentile auto-contrast, say the modality, show
    orientation and spacing."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._worker = None

        self.open_file_button = QPushButton("Open NIfTI…")
        self.open_folder_button = QPushButton("Open DICOM folder…")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.contrast_combo = QComboBox()
        self.contrast_combo.setToolTip("CT windows in HU, or percentiles of the non-zero voxels")
        self.modality_combo, self.modality_note = modality_choice()
        self.frame_combo = QComboBox()
        self.frame_combo.addItems(list(_status.FRAMES))
        self.frame_combo.setMinimumContentsLength(5)
        self.frame_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.frame_combo.setToolTip(
            "Coordinates in the status bar: RAS (NIfTI, 3D Slicer) or LPS (DICOM, ITK), mm"
        )
        self.info_labels = {
            key: QLabel("–") for key in ("layer", "shape", "spacing", "orientation")
        }

        buttons = QHBoxLayout()
        for button in (self.open_file_button, self.open_folder_button, self.cancel_button):
            buttons.addWidget(button)
        # compact: at 1280×800 this dock shares the right side with the U-Net panel
        modality_row = QHBoxLayout()
        modality_row.addWidget(self.modality_combo)
        modality_row.addWidget(self.modality_note, 1)
        self.modality_combo.setMinimumContentsLength(5)
        self.modality_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        frame_row = QHBoxLayout()
        frame_row.addWidget(self.frame_combo)
        frame_row.addWidget(QLabel("mm, status bar"), 1)
        geometry_row = QHBoxLayout()
        for i, key in enumerate(("shape", "spacing", "orientation")):
            if i:
                geometry_row.addWidget(QLabel("·"))
            geometry_row.addWidget(self.info_labels[key])
        geometry_row.addStretch()
        self.info_labels["layer"].setWordWrap(True)
        form = QFormLayout()
        form.setVerticalSpacing(3)
        form.addRow("Layer", self.info_labels["layer"])
        form.addRow("Grid", geometry_row)
        form.addRow("Contrast", self.contrast_combo)
        form.addRow("Modality", modality_row)
        form.addRow("Coordinates", frame_row)
        layout = QVBoxLayout(self)
        layout.setSpacing(4)
        layout.addLayout(buttons)
        layout.addLayout(form)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

        self.open_file_button.clicked.connect(self._choose_file)
        self.open_folder_button.clicked.connect(self._choose_folder)
        self.cancel_button.clicked.connect(self.cancel)
        self.contrast_combo.textActivated.connect(self.apply_contrast)
        self.modality_combo.textActivated.connect(self.set_modality)
        self.frame_combo.textActivated.connect(lambda frame: _status.set_frame(self.viewer, frame))
        self._shown = None  # the layer whose metadata events we follow
        self._limits: dict[tuple[int, str], tuple[float, float]] = {}
        self.viewer.layers.selection.events.active.connect(self._refresh)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        _status.install(self.viewer)
        self.frame_combo.setCurrentText(_status.frame_of(self.viewer))
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
        """The selected plugin image, else the last scan opened through the plugin (label
        maps opened as images are not scans: `is_scan_layer`)."""

        def is_plugin_image(layer) -> bool:
            return isinstance(layer, napari.layers.Image) and METADATA_KEY in layer.metadata

        layer = self.viewer.layers.selection.active
        if layer is not None and is_plugin_image(layer):
            return layer
        scans = [
            lyr
            for lyr in self.viewer.layers
            if is_plugin_image(lyr) and is_scan_layer(lyr.name, lyr.data, lyr.metadata)
        ]
        return scans[-1] if scans else None

    def apply_contrast(self, name: str) -> None:
        """Apply a preset: a CT window (by `CT_WINDOWS` key or its title) or a
        percentile auto-contrast."""
        layer = self._image_layer()
        if layer is None:
            show_error("Open a scan first: no image layer to set the contrast of")
            return
        if name == CUSTOM:
            return
        try:
            limits = preset_limits(name, layer.data)
        except (InputError, ValueError) as e:
            show_error(str(e))
            return
        layer.contrast_limits_range = (
            min(limits[0], layer.contrast_limits_range[0]),
            max(limits[1], layer.contrast_limits_range[1]),
        )
        layer.contrast_limits = limits
        self._show_contrast(layer)

    def set_modality(self, modality: str) -> None:
        """Say what the scan is (CT, MR, other): new models follow it."""
        choose_modality(self._image_layer(), modality, missing="image layer")

    def _follow(self, layer) -> None:
        """Refresh when the shown layer's metadata (modality) or contrast changes."""
        if layer is self._shown:
            return
        self._limits.clear()
        for event_name in ("metadata", "contrast_limits"):
            if self._shown is not None:
                getattr(self._shown.events, event_name).disconnect(self._refresh)
            if layer is not None:
                getattr(layer.events, event_name).connect(self._refresh)
        self._shown = layer

    def _refresh(self, event=None) -> None:
        layer = self._image_layer()
        self._follow(layer)
        meta = (layer.metadata or {}).get(METADATA_KEY, {}) if layer is not None else {}
        values = {
            "layer": layer.name if layer is not None else "–",
            "shape": " × ".join(map(str, meta.get("native_shape", []))) or "–",
            "spacing": " × ".join(f"{s:.3g}" for s in meta.get("spacing", [])) + " mm"
            if meta.get("spacing")
            else "–",
            "orientation": meta.get("orientation", "–"),
        }
        for key, value in values.items():
            self.info_labels[key].setText(str(value))
        self.modality_combo.setEnabled(layer is not None)
        self.contrast_combo.setEnabled(layer is not None)
        if layer is None:
            self.modality_note.setText("")
            return
        modality, source = layer_modality(layer)
        self.modality_combo.setCurrentText(modality)
        self.modality_note.setText(describe_modality(modality, source))
        self._show_contrast(layer)

    def _show_contrast(self, layer) -> None:
        """List the presets for the scan's modality and show the one in effect (or
        "custom" when the limits were set by hand)."""
        modality, _ = layer_modality(layer)
        presets = contrast_presets(modality)
        current = tuple(float(v) for v in layer.contrast_limits)
        shown = CUSTOM
        for name in presets:
            key = (id(layer.data), name)
            if key not in self._limits:  # percentiles cost tens of ms: once per scan
                self._limits[key] = preset_limits(name, layer.data)
            limits = self._limits[key]
            if all(
                abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(current, limits, strict=True)
            ):
                shown = name
                break
        combo = self.contrast_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItems(presets + ([CUSTOM] if shown == CUSTOM else []))
        combo.setCurrentText(shown)
        combo.blockSignals(False)

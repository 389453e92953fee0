"""The top of the panel: which scan the loop works on, what it is, and the model's classes.

The scan is chosen by the user among the plugin's scans (`_layers.is_scan_layer`: label
maps, masks, tissue and uncertainty maps never qualify); the first one opened is used
until then, and opening another image never changes it. The modality is read (DICOM),
detected (air at −1000 HU) or chosen here or in the Scan dock (`_modality`). The legend
names the model's classes in their colours and is also the named label picker.
"""

from __future__ import annotations

import napari
import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QVBoxLayout,
    QWidget,
)

from napari_unet._layers import is_scan_layer
from napari_unet._widgets import _status
from napari_unet._widgets._legend import LabelLegend, apply_label_identity, name_napari_picker
from napari_unet._widgets._modality import (
    choose_modality,
    describe_modality,
    describe_normalization,
    layer_modality,
    modality_choice,
)
from napari_unet._widgets._session import LoopSession
from napari_unet.errors import InputError

NO_SCAN = "(open a scan)"


class ScanIdentity(QWidget):
    """Scan and modality choices, the scan and model in words, the slice on screen by its
    file index, and the legend of the model's classes.

    The session's `find_image` becomes `chosen_scan`: the loop never guesses its scan.

    Signals:
        attached(): a scan became the loop's scan (the panel offers to restore an autosave).
        listed(): the scans on offer or the chosen one changed (controls follow).
    """

    attached = Signal()
    listed = Signal()

    def __init__(self, session: LoopSession, parent=None) -> None:
        super().__init__(parent)
        self.session = session
        self.viewer = session.viewer
        session.find_image = self.chosen_scan
        self.scan_combo = QComboBox()
        self.scan_combo.setToolTip(
            "The scan the loop segments and trains on: images opened with napari-unet "
            "(label maps and uncertainty maps are not offered)"
        )
        self.modality_combo, self.modality_note = modality_choice()
        self.scan_label = QLabel("Open a scan (File > Open or the Scan dock).")
        self.scan_label.setWordWrap(True)
        self.slice_label = QLabel("")  # the file's slice index, as other viewers count
        self.slice_label.setToolTip(
            "The slice on screen as the file numbers it (0-based index along the reviewed "
            "axis), as 3D Slicer and ITK-SNAP show it; napari's slider counts display rows"
        )
        self.legend = LabelLegend()
        self.legend.setVisible(False)

        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setVerticalSpacing(3)
        form.addRow("Scan", self.scan_combo)
        modality_row = QHBoxLayout()
        modality_row.addWidget(self.modality_combo)
        modality_row.addWidget(self.modality_note, 1)
        form.addRow("Modality", modality_row)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(form)
        for widget in (self.scan_label, self.slice_label, self.legend):
            layout.addWidget(widget)

        self._scan_layers: list = []
        self._followed = None  # the scan whose metadata (modality) we follow
        self._label_maps: dict[tuple[int, int, str], bool] = {}
        self.scan_combo.activated.connect(self._scan_chosen)
        self.modality_combo.textActivated.connect(self._modality_chosen)
        session.changed.connect(self.refresh)
        layers = self.viewer.layers.events
        layers.inserted.connect(self.layers_changed)
        layers.removed.connect(self.layers_changed)
        self.viewer.dims.events.current_step.connect(self._show_slice)

    # --- the scan: chosen, never guessed ------------------------------------------------------
    def scan_candidates(self) -> list:
        """Image layers that can be the scan: opened or made by the plugin with scan
        geometry, not label maps (`_layers.is_scan_layer`), in the viewer's order."""
        found = []
        for layer in self.viewer.layers:
            if not isinstance(layer, napari.layers.Image):
                continue
            key = (id(layer), id(layer.data), layer.name)
            if key not in self._label_maps:  # a sample's distinct values: once per layer
                self._label_maps[key] = is_scan_layer(layer.name, layer.data, layer.metadata)
            if self._label_maps[key]:
                found.append(layer)
        return found

    def chosen_scan(self):
        """The scan chosen in the combo (the first one opened until the user chooses)."""
        index = self.scan_combo.currentIndex()
        if 0 <= index < len(self._scan_layers) and self._scan_layers[index] in self.viewer.layers:
            return self._scan_layers[index]
        candidates = self.scan_candidates()
        return candidates[0] if candidates else None

    def choose_scan(self, layer) -> None:
        """Make ``layer`` (a scan candidate) the loop's scan, as if chosen in the combo."""
        if layer not in self._scan_layers:
            raise InputError(f"{layer.name!r} cannot be the scan: it is not a scan opened "
                             "with napari-unet, or it looks like a label map")  # fmt: skip
        self.scan_combo.setCurrentIndex(self._scan_layers.index(layer))
        self._attach(layer)

    def set_locked(self, locked: bool) -> None:
        """The scan and its modality stay as they are while a job works on them."""
        self.scan_combo.setEnabled(bool(self._scan_layers) and not locked)
        self.modality_combo.setEnabled(self.session.image_layer is not None and not locked)

    def layers_changed(self, event=None) -> None:
        """List the scans again; the first one becomes the scan if there is none yet."""
        if event is not None and getattr(event, "type", "") == "inserted":
            event.value.events.name.connect(self._list_scans)
            self._coordinates_for(event.value)
        self._list_scans()
        current = self.session.image_layer
        if current is None or current not in self.viewer.layers:
            first = self.chosen_scan()
            if first is not None:
                self._attach(first)
        self._refresh_modality()

    def _list_scans(self, event=None) -> None:
        self._scan_layers = self.scan_candidates()
        combo = self.scan_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItems([layer.name for layer in self._scan_layers] or [NO_SCAN])
        current = self.session.image_layer
        if current in self._scan_layers:
            combo.setCurrentIndex(self._scan_layers.index(current))
        combo.blockSignals(False)
        self.listed.emit()

    def _scan_chosen(self, index: int) -> None:
        if not 0 <= index < len(self._scan_layers):
            return
        layer = self._scan_layers[index]
        session = self.session
        if layer is session.image_layer:
            return
        if session.loop is not None and session.loop.busy:
            show_error("wait for the running job (or cancel it) before changing the scan")
            self._list_scans()
            return
        if session.loop is not None and session.loop.reviewed:
            answer = QMessageBox.question(
                self,
                "Change the scan?",
                f"Work on {layer.name!r} from now on? The corrections of "
                f"{session.image_layer.name!r} stay in their layer and its autosave, "
                "but the loop starts over on the new scan.",
            )
            if answer != QMessageBox.StandardButton.Yes:
                self._list_scans()
                return
        self._attach(layer)

    def _attach(self, layer) -> None:
        try:
            self.session.attach_image(layer)
        except InputError as e:
            show_error(str(e))
            return
        self._list_scans()
        self._refresh_modality()
        self.attached.emit()

    def _coordinates_for(self, layer) -> None:
        """Scanner coordinates in the status bar also for layers made on the scan's grid
        without its geometry (an uncertainty map, a labels layer added by hand)."""
        scan, geometry = self.session.image_layer, self.session.geometry
        if scan is None or geometry is None or layer is scan:
            return
        same_place = tuple(layer.data.shape) == geometry.display_shape and all(
            np.allclose(getattr(layer, a), getattr(scan, a), atol=1e-4)
            for a in ("scale", "translate")
        )
        if same_place:
            _status.wrap_layer(layer, _status.install(self.viewer), geometry)

    # --- modality -------------------------------------------------------------------------
    def _modality_chosen(self, modality: str) -> None:
        choose_modality(self.session.image_layer, modality, missing="scan")

    def _follow_scan(self, layer) -> None:
        if layer is self._followed:
            return
        if self._followed is not None:
            self._followed.events.metadata.disconnect(self._scan_metadata_changed)
        if layer is not None:
            layer.events.metadata.connect(self._scan_metadata_changed)
        self._followed = layer

    def _scan_metadata_changed(self, event=None) -> None:
        session = self.session
        if session.loop is not None and session.image_layer is not None:
            session.loop.image.modality = layer_modality(session.image_layer)[0]
        self._refresh_modality()

    def _refresh_modality(self) -> None:
        layer = self.session.image_layer
        self._follow_scan(layer)
        self.listed.emit()
        if layer is None:
            self.modality_note.setText("")
            return
        modality, source = layer_modality(layer)
        self.modality_combo.setCurrentText(modality)
        note = describe_modality(modality, source)
        if modality not in ("CT", "MR"):
            note += "; new models use MR's percentile z-score"
        self.modality_note.setText(note)
        self.refresh()

    # --- state shown ----------------------------------------------------------------------
    def refresh(self) -> None:
        """Show the scan, the model and its classes as the session has them now."""
        session = self.session
        if self.scan_combo.currentText() != getattr(session.image_layer, "name", NO_SCAN):
            self._list_scans()  # the scan was attached elsewhere (e.g. a reopened workspace)
            self._follow_scan(session.image_layer)
        if session.image_layer is None:
            return
        ws = session.workspace
        model = session.model
        text = f"{ws.image.orientation} · {' × '.join(map(str, ws.image.shape))} voxels"
        if model is not None:
            spec = model.spec
            text += (f"\nModel: {spec.name} ({spec.spatial_dims}D), normalisation: "
                     f"{describe_normalization(spec.normalization)}; labels: "
                     f"{', '.join(spec.labels)}")  # fmt: skip
        self.scan_label.setText(text)
        self._show_slice()
        self._show_classes()

    def _show_slice(self, event=None) -> None:
        """The slice on screen by its index in the file (not napari's display row)."""
        session = self.session
        if session.geometry is None or session.workspace is None:
            self.slice_label.setText("")
            return
        axis = session.workspace.slice_axis
        display = session.current_display_slice()
        native = int(session.geometry.to_native_index(axis, display))
        last = session.workspace.n_slices - 1
        self.slice_label.setText(
            f"Slice on screen: {'ijk'[axis]} = {native} in the file (0–{last})"
        )

    def _show_classes(self) -> None:
        """The model's class names and colours on the loop's labels layer and in the legend."""
        session = self.session
        names: list[str] = []
        colors: list[str] = []
        if session.model is not None:
            names, colors = list(session.model.spec.labels), list(session.model.spec.colors)
        elif session.workspace is not None:
            names = list(session.workspace.label_names)
            colors = list(session.workspace.label_colors)
        layer = session.labels_layer
        shown = layer is not None and layer in self.viewer.layers
        if shown:
            self._coordinates_for(layer)
            if names:
                apply_label_identity(layer, names, colors)
                name_napari_picker(self, layer)
        self.legend.set_classes(names, colors, layer if shown else None)

"""The napari U-Net panel: model → segment → review → fine-tune → export, one dock.

At the top, always in view: the running job's progress bar and ETA, then the scan the
loop works on (chosen by the user among the plugin's scans; label maps and uncertainty
maps never qualify), its modality, and the model's classes (a legend that is also the
named label picker). The five steps below fold to their titles; the step in use is
unfolded and scrolled into view (a fine-tune's live curve fits a 1280×800 screen).
"""

from __future__ import annotations

import threading

import napari
import numpy as np
from napari.utils.notifications import show_error
from qtpy.compat import isalive
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from napari_unet._layers import is_scan_layer
from napari_unet._widgets import _status
from napari_unet._widgets._collapsible import CollapsibleSection
from napari_unet._widgets._legend import LabelLegend, apply_label_identity, name_napari_picker
from napari_unet._widgets._modality import (
    MODALITIES,
    describe_modality,
    describe_normalization,
    layer_modality,
    set_layer_modality,
)
from napari_unet._widgets._progress_bar import JobProgressBar
from napari_unet._widgets._session import LoopSession
from napari_unet._widgets._warmup import start_warm_up
from napari_unet._widgets.export_section import ExportSection
from napari_unet._widgets.finetune_section import FinetuneSection
from napari_unet._widgets.model_section import ModelSection
from napari_unet._widgets.review_section import ReviewSection
from napari_unet._widgets.segment_section import SegmentSection
from napari_unet.errors import InputError

NO_SCAN = "(open a scan)"


class UNetPanel(QWidget):
    """The whole correct-and-fine-tune loop in one dock widget."""

    def __init__(self, napari_viewer: napari.Viewer, *, recovery_root: str | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.session = LoopSession(napari_viewer, recovery_root=recovery_root)
        # the scan is the one chosen here, never "the last image opened"
        self.session.find_image = self.chosen_scan
        self.scan_combo = QComboBox()
        self.scan_combo.setToolTip(
            "The scan the loop segments and trains on: images opened with napari-unet "
            "(label maps and uncertainty maps are not offered)"
        )
        self.modality_combo = QComboBox()
        self.modality_combo.addItems(list(MODALITIES))
        self.modality_combo.setToolTip(
            "What the scan is; a new model normalises CT with a HU window, MR and other "
            "with a percentile clip and z-score"
        )
        self.modality_note = QLabel("")
        self.modality_note.setWordWrap(True)
        self.scan_label = QLabel("Open a scan (File > Open or the Scan dock).")
        self.scan_label.setWordWrap(True)
        self.slice_label = QLabel("")  # the file's slice index, as other viewers count
        self.slice_label.setToolTip(
            "The slice on screen as the file numbers it (0-based index along the reviewed "
            "axis), as 3D Slicer and ITK-SNAP show it; napari's slider counts display rows"
        )
        self.legend = LabelLegend()
        self.legend.setVisible(False)
        self.model_section = ModelSection(self.session)
        self.segment_section = SegmentSection(self.session)
        self.review_section = ReviewSection(self.session)
        self.finetune_section = FinetuneSection(self.session, self.segment_section)
        self.export_section = ExportSection(self.session)
        self.progress = JobProgressBar(
            is_busy=lambda: self.session.loop is not None and self.session.loop.busy,
            budget_for=self._budget_for,
            on_start=self._job_started,
        )
        self.sections = {
            name: CollapsibleSection(section)
            for name, section in (
                ("model", self.model_section),
                ("segment", self.segment_section),
                ("review", self.review_section),
                ("finetune", self.finetune_section),
                ("export", self.export_section),
            )
        }
        self.sections["export"].set_expanded(False)
        self.sections["export"].set_summary("save labels, model, workspace")

        inner = QWidget()
        layout = QVBoxLayout(inner)
        layout.setSpacing(4)
        identity = QFormLayout()
        identity.setContentsMargins(0, 0, 0, 0)
        identity.setVerticalSpacing(3)
        identity.addRow("Scan", self.scan_combo)
        modality_row = QHBoxLayout()
        modality_row.addWidget(self.modality_combo)
        modality_row.addWidget(self.modality_note, 1)
        identity.addRow("Modality", modality_row)
        layout.addLayout(identity)
        layout.addWidget(self.scan_label)
        layout.addWidget(self.slice_label)
        layout.addWidget(self.legend)
        for section in self.sections.values():
            layout.addWidget(section)
        layout.addStretch()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        for combo in inner.findChildren(QComboBox):  # long entries elide, not widen the dock
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(5 if combo is self.modality_combo else 8)
        self._scroll, self._inner = scroll, inner
        inner.installEventFilter(self)
        scroll.viewport().installEventFilter(self)
        self._fit_width()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(2)
        outer.addWidget(self.progress)  # outside the scroll area: always in view
        outer.addWidget(scroll)

        self._scan_layers: list = []
        self._followed = None  # the scan whose metadata (modality) we follow
        self._had_model = False
        self._label_maps: dict[tuple[int, int, str], bool] = {}
        self.session.changed.connect(self._session_changed)
        self.scan_combo.activated.connect(self._scan_chosen)
        self.modality_combo.textActivated.connect(self._modality_chosen)
        self.finetune_section.started.connect(lambda: self.focus_step("finetune"))
        self.finetune_section.finished.connect(
            lambda: QTimer.singleShot(0, lambda: self._bring_into_view("finetune"))
        )
        layers = self.viewer.layers.events
        layers.inserted.connect(self._layers_changed)
        layers.removed.connect(self._layers_changed)
        self.viewer.dims.events.current_step.connect(self._show_slice)
        _status.install(self.viewer)
        self._layers_changed()
        self._follow_state()  # each control enabled only when its action makes sense
        self.warmed_up = start_warm_up()  # after building: the GUI thread goes first

    def eventFilter(self, watched, event) -> bool:  # Qt override
        if watched is self._inner and event.type() == QEvent.Type.LayoutRequest:
            self._fit_width()
        elif (
            watched is self._scroll.viewport()
            and event.type() == QEvent.Type.Resize
            and self.progress.active == "Fine-tuning"
        ):  # the live curve stays in view
            QTimer.singleShot(0, lambda: self._bring_into_view("finetune"))
        return super().eventFilter(watched, event)

    def _fit_width(self) -> None:
        """No horizontal scrolling: the dock may not get narrower than the sections."""
        bar = self._scroll.verticalScrollBar().sizeHint().width()
        self.setMinimumWidth(self._inner.minimumSizeHint().width() + bar + 4)

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

    def _layers_changed(self, event=None) -> None:
        if event is not None and getattr(event, "type", "") == "inserted":
            event.value.events.name.connect(self._list_scans)
            self._coordinates_for(event.value)
        self._list_scans()
        session = self.session
        current = session.image_layer
        if current is None or current not in self.viewer.layers:
            first = self.chosen_scan()
            if first is not None:
                self._attach(first)
        self._refresh_identity()

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
        self._controls_follow()

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
        self._refresh_identity()
        self.export_section.offer_restore()

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
        layer = self.session.image_layer
        if layer is None:
            show_error("Open a scan first: no scan to set the modality of")
            return
        set_layer_modality(layer, modality)  # the metadata event refreshes every widget

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
        self._refresh_identity()

    def _refresh_identity(self) -> None:
        layer = self.session.image_layer
        self._follow_scan(layer)
        self._controls_follow()
        if layer is None:
            self.modality_note.setText("")
            return
        modality, source = layer_modality(layer)
        self.modality_combo.setCurrentText(modality)
        note = describe_modality(modality, source)
        if modality not in ("CT", "MR"):
            note += "; new models use MR's percentile z-score"
        self.modality_note.setText(note)
        self._refresh_scan()

    # --- state shown ----------------------------------------------------------------------
    def _session_changed(self) -> None:
        if self.scan_combo.currentText() != getattr(self.session.image_layer, "name", NO_SCAN):
            self._list_scans()  # the scan was attached elsewhere (e.g. a reopened workspace)
            self._follow_scan(self.session.image_layer)
        self._refresh_scan()

    def _refresh_scan(self) -> None:
        session = self.session
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
        if model is not None and not self._had_model:
            self._had_model = True
            self.sections["model"].set_expanded(False)
        self.sections["model"].set_summary(self._model_summary())

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
        text = f"Slice on screen: {'ijk'[axis]} = {native} in the file (0–{last})"
        self.slice_label.setText(text)

    def _model_summary(self) -> str:
        session = self.session
        if session.model is None:
            return "no model yet"
        versions = session.workspace.models
        index = next((i for i, v in enumerate(versions) if v.hash == session.workspace.current), 0)
        dice = versions[index].metrics.get("val_dice") if versions else None
        text = f"v{index} of {len(versions)}"
        return text + (f", Dice {dice:.3f}" if dice is not None else ", untrained")

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
        if layer is not None and layer in self.viewer.layers:
            self._coordinates_for(layer)
            if names:
                apply_label_identity(layer, names, colors)
                name_napari_picker(self, layer)
        self.legend.set_classes(names, colors, layer if layer in self.viewer.layers else None)

    # --- progress and focus ---------------------------------------------------------------
    def _budget_for(self, description: str):
        return self.finetune_section.budget if description == "Fine-tuning" else None

    def _job_started(self, description: str, previous: str | None = None) -> None:
        if description == "Fine-tuning":
            self.focus_step("finetune")
        elif previous != "Fine-tuning":  # a re-prediction keeps the fine-tune result in view
            self.focus_step("segment")

    def focus_step(self, name: str) -> None:
        """Unfold step ``name`` and bring it into view. A fine-tune folds the steps not
        in use (model, segment, export: their state is in their folded titles), so its
        live curve fits a 1280×800 screen; a click on a title unfolds any of them."""
        self.sections[name].set_expanded(True)
        folded = {"finetune": ("model", "segment", "export"), "segment": ("model", "export")}
        for other in folded.get(name, ()):
            self.sections[other].set_expanded(False)
        QTimer.singleShot(0, lambda: self._bring_into_view(name))

    def _bring_into_view(self, name: str) -> None:
        self._inner.layout().activate()  # the folds' new sizes first
        self._scroll.ensureWidgetVisible(self.sections[name], 0, 4)
        if name == "finetune":  # the live curve above all
            self._scroll.ensureWidgetVisible(self.finetune_section.plot, 0, 4)

    def _controls_follow(self) -> None:
        """`update_controls` once it is wired (the scan list changes before that)."""
        if hasattr(self, "_job_watch"):
            self.update_controls()

    # --- controls follow the state ----------------------------------------------------------
    def update_controls(self, *_) -> None:
        """Enable each control only when its action makes sense (`LoopSession.control_state`):
        the one place that does; the loop's mutating actions wait while a job runs."""
        if not isalive(self):  # the viewer is closing: its layer events outlive the panel
            return
        running = self.segment_section.cancel_button.isEnabled() or (
            self.finetune_section.stop_button.isEnabled()
        )  # a section's job runs until its result is applied (Cancel/Stop enabled till then)
        state = self.session.control_state(running=running)
        model, segment = self.model_section, self.segment_section
        review, export = self.review_section, self.export_section
        for widget, action in (
            (model.new_button, "new_model"),
            (model.open_button, "new_model"),
            (segment.run_button, "run"),
            (segment.labels_combo, "labels_choice"),
            (review.accept_button, "accept"),
            (review.next_button, "next"),
            (self.finetune_section.start_button, "finetune"),
            (export.save_labels_button, "save_labels"),
            (export.save_model_button, "save_model"),
            (export.save_ws_button, "save_workspace"),
            (export.open_ws_button, "open_workspace"),
        ):
            widget.setEnabled(state[action])
        selected = model.versions.currentItem() is not None
        model.rollback_button.setEnabled(state["rollback"] and selected)
        # the scan and its modality stay as they are while a job works on them
        self.scan_combo.setEnabled(bool(self._scan_layers) and not running)
        self.modality_combo.setEnabled(self.session.image_layer is not None and not running)

    def _follow_state(self) -> None:
        session = self.session
        session.changed.connect(self.update_controls)
        session.reviewed_changed.connect(self.update_controls)
        session.busy_changed.connect(self._busy_changed)
        self.model_section.versions.currentItemChanged.connect(self.update_controls)
        self.viewer.layers.events.inserted.connect(self.update_controls)
        self.viewer.layers.events.removed.connect(self.update_controls)
        # a section re-enables its own buttons when its job ends: state wins right after
        self._job_watch = _EnabledWatch(self.update_controls, self)
        for button in (self.segment_section.cancel_button, self.finetune_section.stop_button):
            button.installEventFilter(self._job_watch)
        self.update_controls()

    def _busy_changed(self, busy: bool) -> None:
        # a job ends in its worker thread: there the section's Cancel/Stop (watched)
        # tells when its result is applied; a job starts on the GUI thread
        if threading.current_thread() is threading.main_thread():
            self.update_controls()


class _EnabledWatch(QObject):
    """Calls ``callback`` when a watched widget is enabled or disabled."""

    def __init__(self, callback, parent=None) -> None:
        super().__init__(parent)
        self.callback = callback

    def eventFilter(self, watched, event) -> bool:  # Qt override
        if event.type() == QEvent.Type.EnabledChange:
            self.callback()
        return False

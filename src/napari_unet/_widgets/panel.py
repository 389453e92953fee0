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
from qtpy.compat import isalive
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import QComboBox, QScrollArea, QVBoxLayout, QWidget

from napari_unet._widgets import _gc_freeze, _status
from napari_unet._widgets._collapsible import CollapsibleSection
from napari_unet._widgets._identity import ScanIdentity
from napari_unet._widgets._progress_bar import JobProgressBar
from napari_unet._widgets._session import LoopSession
from napari_unet._widgets._warmup import done_event, start_warm_up
from napari_unet._widgets.export_section import ExportSection
from napari_unet._widgets.finetune_section import FinetuneSection
from napari_unet._widgets.model_section import ModelSection
from napari_unet._widgets.review_section import ReviewSection
from napari_unet._widgets.segment_section import SegmentSection

#: The engine's imports start this long after the panel is built (it is docked and drawn
#: by then); a job started sooner imports what it needs itself.
WARM_UP_DELAY_MS = 500


class UNetPanel(QWidget):
    """The whole correct-and-fine-tune loop in one dock widget."""

    def __init__(self, napari_viewer: napari.Viewer, *, recovery_root: str | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.session = LoopSession(napari_viewer, recovery_root=recovery_root)
        # the scan, its modality and the model's classes: chosen, never guessed
        self.identity = ScanIdentity(self.session)
        identity = self.identity
        self.scan_combo, self.modality_combo = identity.scan_combo, identity.modality_combo
        self.modality_note, self.scan_label = identity.modality_note, identity.scan_label
        self.slice_label, self.legend = identity.slice_label, identity.legend
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
        layout.addWidget(self.identity)
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

        self._had_model = False
        self.session.changed.connect(self._show_model_step)
        identity.attached.connect(self.export_section.offer_restore)
        identity.listed.connect(self._controls_follow)
        self.finetune_section.started.connect(lambda: self.focus_step("finetune"))
        self.finetune_section.finished.connect(
            lambda: QTimer.singleShot(0, lambda: self._bring_into_view("finetune"))
        )
        _status.install(self.viewer)
        identity.layers_changed()  # the scan already open, if any
        self._follow_state()  # each control enabled only when its action makes sense
        # started once the panel is docked and drawn: torch's C extension holds the GIL
        # for ~0.2 s while it initialises, and docking (which calls back into Python for
        # every event) waited for it: 290 ms to open the panel (bench_gui_stall.py)
        self.warmed_up = done_event()
        # full garbage collections wait for a pause in the user's input (_gc_freeze)
        self.idle_collector = _gc_freeze.install(self)
        self.viewer.layers.events.removed.connect(_request_collection)
        QTimer.singleShot(WARM_UP_DELAY_MS, start_warm_up)

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

    # --- state shown ----------------------------------------------------------------------
    def scan_candidates(self) -> list:
        """The image layers that may be the scan (see `ScanIdentity.scan_candidates`)."""
        return self.identity.scan_candidates()

    def chosen_scan(self):
        return self.identity.chosen_scan()

    def choose_scan(self, layer) -> None:
        """Make ``layer`` the loop's scan, as if chosen in the combo."""
        self.identity.choose_scan(layer)

    def _show_model_step(self) -> None:
        """The model step folds once a model exists; its title tells the version in use."""
        if self.session.model is not None and not self._had_model:
            self._had_model = True
            self.sections["model"].set_expanded(False)
        self.sections["model"].set_summary(self._model_summary())

    def _model_summary(self) -> str:
        session = self.session
        if session.model is None:
            return "no model yet"
        versions = session.workspace.models
        index = next((i for i, v in enumerate(versions) if v.hash == session.workspace.current), 0)
        dice = versions[index].metrics.get("val_dice") if versions else None
        text = f"v{index} of {len(versions)}"
        return text + (f", Dice {dice:.3f}" if dice is not None else ", untrained")

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
        self.identity.set_locked(running)  # the scan and its modality, while a job runs

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


def _request_collection(_event=None) -> None:
    """A removed layer's array is freed only by a full collection (see `_gc_freeze`)."""
    _gc_freeze.request_collection()

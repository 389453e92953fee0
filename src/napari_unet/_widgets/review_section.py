"""Review step: painted slices become reviewed; accept a slice; jump to the next one."""

from __future__ import annotations

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from napari_unet._widgets._plots import SliceStrip
from napari_unet._widgets._session import LoopSession
from napari_unet.errors import InputError

ACCEPT_KEY = "Shift-A"
NEXT_KEY = "Shift-N"


class ReviewSection(QGroupBox):
    """Reviewed slices at a glance, accept the slice on screen, next slice to review."""

    def __init__(self, session: LoopSession) -> None:
        super().__init__("3 · Review")
        self.session = session
        self.strip = SliceStrip(on_click=self._strip_clicked)
        self.summary = QLabel("Paint on a slice, or accept it, to mark it reviewed.")
        self.summary.setWordWrap(True)
        self.accept_button = QPushButton(f"Accept slice ({ACCEPT_KEY})")
        self.next_button = QPushButton(f"Next to review ({NEXT_KEY})")
        buttons = QHBoxLayout()
        buttons.addWidget(self.accept_button)
        buttons.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.strip)
        layout.addWidget(self.summary)
        layout.addLayout(buttons)

        self.accept_button.clicked.connect(self._accept)
        self.next_button.clicked.connect(self._next)
        session.reviewed_changed.connect(self.refresh)
        session.changed.connect(self.refresh)
        session.viewer.dims.events.current_step.connect(self.refresh)
        session.viewer.bind_key(ACCEPT_KEY, lambda viewer: self._accept(), overwrite=True)
        session.viewer.bind_key(NEXT_KEY, lambda viewer: self._next(), overwrite=True)

    def refresh(self, event=None) -> None:
        session = self.session
        ws = session.workspace
        if ws is None or session.geometry is None:
            self.strip.set_state(0, (), -1)
            return
        reviewed = session.reviewed_display()
        per_slice = None
        if session.last_uncertainty is not None:
            axes = tuple(a for a in range(3) if a != ws.slice_axis)
            native = session.last_uncertainty.mean(axis=axes)
            per_slice = [native[int(session.geometry.to_native_index(ws.slice_axis, d))]
                         for d in range(ws.n_slices)]  # fmt: skip
        self.strip.set_state(ws.n_slices, reviewed, session.current_display_slice(), per_slice)
        shown = ", ".join(map(str, reviewed[:12])) + (" …" if len(reviewed) > 12 else "")
        self.summary.setText(
            f"Reviewed {len(reviewed)} of {ws.n_slices} slices" + (f": {shown}" if shown else "")
        )

    def _accept(self) -> None:
        try:
            index = self.session.accept_current_slice()
        except InputError as e:
            show_error(str(e))
            return
        show_info(f"slice {index} accepted as reviewed")

    def _next(self) -> None:
        try:
            self.session.require_image()
        except InputError as e:
            show_error(str(e))
            return
        index = self.session.next_slice_to_review()
        if index is None:
            show_info("every slice is reviewed")
            return
        self.session.go_to_display_slice(index)

    def _strip_clicked(self, index: int) -> None:
        self.session.go_to_display_slice(index)

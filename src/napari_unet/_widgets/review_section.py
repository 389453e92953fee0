"""Review step: painted slices become reviewed; accept a slice; jump to the next one.

Accepting a slice the user has not edited asks first ("accept anyway?") while the model
is untrained, there is no segmentation yet, or the last prediction is uncertain on it
(`LoopSession.accept_doubts`): one careless Accept taught the model noise. A slice is
un-reviewed from the strip (right click) or with Shift-U on the slice on screen; Ctrl-Z
of the stroke that made a slice reviewed un-reviews it too (see `_session`).
"""

from __future__ import annotations

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

from napari_unet._widgets._plots import SliceStrip
from napari_unet._widgets._session import LoopSession
from napari_unet.errors import InputError

ACCEPT_KEY = "Shift-A"
NEXT_KEY = "Shift-N"
UNREVIEW_KEY = "Shift-U"


class ReviewSection(QGroupBox):
    """Reviewed slices at a glance, accept the slice on screen, next slice to review."""

    def __init__(self, session: LoopSession) -> None:
        super().__init__("3 · Review")
        self.session = session
        self.strip = SliceStrip(on_click=self._strip_clicked, on_unreview=self.unreview)
        self.summary = QLabel("Paint on a slice, or accept it, to mark it reviewed.")
        self.summary.setWordWrap(True)
        self.summary.setToolTip(
            f"Ctrl-Z of a stroke un-reviews the slice it reviewed; {UNREVIEW_KEY} or a right "
            "click on the strip un-reviews a slice"
        )
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
        session.viewer.bind_key(UNREVIEW_KEY, lambda viewer: self._unreview_current(),
                                overwrite=True)  # fmt: skip

    def refresh(self, event=None) -> None:
        session = self.session
        ws = session.workspace
        if ws is None or session.geometry is None:
            self.strip.set_state(0, (), -1)
            return
        reviewed = session.reviewed_display()
        per_slice = None
        if session.last_uncertainty is not None:  # what Next ranks by
            native = session.loop.slice_information().information
            per_slice = [native[int(session.geometry.to_native_index(ws.slice_axis, d))]
                         for d in range(ws.n_slices)]  # fmt: skip
        self.strip.set_state(ws.n_slices, reviewed, session.current_display_slice(), per_slice)
        self.strip.label_for = self._file_index
        in_file = sorted(ws.reviewed)  # the file's own slice indices, as other viewers show
        shown = ", ".join(map(str, in_file[:12])) + (" …" if len(in_file) > 12 else "")
        self.summary.setText(
            f"Reviewed {len(in_file)} of {ws.n_slices} slices"
            + (f" (k in the file): {shown}" if shown else "")
        )

    def _file_index(self, display_index: int) -> int:
        """The file's slice index (native, along the slice axis) of a display slice."""
        session = self.session
        return int(session.geometry.to_native_index(session.workspace.slice_axis, display_index))

    def _accept(self) -> None:
        """Accept the slice on screen as correct; ask first if it may not be."""
        session = self.session
        try:
            session.require_image()
        except InputError as e:
            show_error(str(e))
            return
        index = session.current_display_slice()
        doubts = session.accept_doubts(index)
        if doubts and not self._confirm_accept(index, doubts):
            show_info(f"slice k = {self._file_index(index)} left unreviewed")
            return
        session.accept_display_slice(index)
        show_info(f"slice k = {self._file_index(index)} accepted as reviewed")

    def _confirm_accept(self, index: int, doubts: list[str]) -> bool:
        reasons = "\n".join(f"• {doubt}" for doubt in doubts)
        answer = QMessageBox.question(
            self,
            "Accept slice anyway?",
            f"You have not edited slice k = {self._file_index(index)}, and\n{reasons}\n\n"
            "Accepting it teaches "
            "the model these labels as they are. Accept anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def unreview(self, index: int) -> None:
        """Slice ``index`` (display) is not reviewed any more: fine-tuning ignores it and
        the next Run predicts it again."""
        self.session.unreview_display([index])
        show_info(f"slice k = {self._file_index(index)} is not reviewed any more")

    def _unreview_current(self) -> None:
        session = self.session
        if session.workspace is None or session.geometry is None:
            return
        index = session.current_display_slice()
        if index not in session.reviewed_display():
            show_info(f"slice k = {self._file_index(index)} is not reviewed")
            return
        self.unreview(index)

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

"""A section of the panel that folds to its title, so the step in use stays in view."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QSizePolicy, QToolButton, QVBoxLayout, QWidget


class CollapsibleSection(QWidget):
    """A header button (arrow and title) above a section; clicking it folds the section.

    The section (a QGroupBox of the panel) keeps its widgets and state while folded;
    its own title moves to the header, and ``summary`` text is shown after the title
    while it is folded (e.g. the model version in use).

    Signals:
        toggled(bool): expanded (True) or folded (False), by the user or the panel.
    """

    toggled = Signal(bool)

    def __init__(self, section: QWidget, parent=None) -> None:
        super().__init__(parent)
        self.section = section
        self.title = section.title() if hasattr(section, "title") else ""
        if hasattr(section, "setTitle"):
            section.setTitle("")
            # no room kept for the title the header now shows
            section.setStyleSheet("QGroupBox { margin-top: 0px; padding-top: 2px; }")
        self.summary = ""
        self.header = QToolButton()
        self.header.setCheckable(True)
        self.header.setChecked(True)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.header.setStyleSheet("QToolButton { border: none; font-weight: bold; }")
        self.header.clicked.connect(self.set_expanded)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.header)
        layout.addWidget(section)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self._show_header()

    @property
    def expanded(self) -> bool:
        return self.header.isChecked()

    def set_expanded(self, expanded: bool) -> None:
        expanded = bool(expanded)
        changed = expanded != self.section.isVisibleTo(self) or expanded != self.expanded
        self.header.setChecked(expanded)
        self.section.setVisible(expanded)
        self._show_header()
        if changed:
            self.toggled.emit(expanded)

    def set_summary(self, text: str) -> None:
        """A short state shown after the title while folded."""
        self.summary = text
        self._show_header()

    def _show_header(self) -> None:
        expanded = self.header.isChecked()
        self.header.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        text = self.title
        if not expanded and self.summary:
            text += f"  —  {self.summary}"
        self.header.setText(text)
        self.header.setToolTip("fold" if expanded else "unfold")

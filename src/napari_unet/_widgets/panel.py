"""The napari U-Net panel: model → segment → review → fine-tune → export, one dock."""

from __future__ import annotations

import napari
from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import QComboBox, QLabel, QScrollArea, QVBoxLayout, QWidget

from napari_unet._widgets._session import LoopSession
from napari_unet._widgets._warmup import start_warm_up
from napari_unet._widgets.export_section import ExportSection
from napari_unet._widgets.finetune_section import FinetuneSection
from napari_unet._widgets.model_section import ModelSection
from napari_unet._widgets.review_section import ReviewSection
from napari_unet._widgets.segment_section import SegmentSection
from napari_unet.errors import InputError


class UNetPanel(QWidget):
    """The whole correct-and-fine-tune loop in one dock widget."""

    def __init__(self, napari_viewer: napari.Viewer, *, recovery_root: str | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.session = LoopSession(napari_viewer, recovery_root=recovery_root)
        self.scan_label = QLabel("Open a scan (File > Open or the Scan dock).")
        self.scan_label.setWordWrap(True)
        self.model_section = ModelSection(self.session)
        self.segment_section = SegmentSection(self.session)
        self.review_section = ReviewSection(self.session)
        self.finetune_section = FinetuneSection(self.session, self.segment_section)
        self.export_section = ExportSection(self.session)

        inner = QWidget()
        layout = QVBoxLayout(inner)
        layout.addWidget(self.scan_label)
        for section in (self.model_section, self.segment_section, self.review_section,
                        self.finetune_section, self.export_section):  # fmt: skip
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
            combo.setMinimumContentsLength(8)
        self._scroll, self._inner = scroll, inner
        inner.installEventFilter(self)
        self._fit_width()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self.session.changed.connect(self._refresh_scan)
        self.viewer.layers.events.inserted.connect(self._layer_added)
        self._layer_added()
        self.warmed_up = start_warm_up()  # after building: the GUI thread goes first

    def eventFilter(self, watched, event) -> bool:  # Qt override
        if watched is self._inner and event.type() == QEvent.Type.LayoutRequest:
            self._fit_width()
        return super().eventFilter(watched, event)

    def _fit_width(self) -> None:
        """No horizontal scrolling: the dock may not get narrower than the sections."""
        bar = self._scroll.verticalScrollBar().sizeHint().width()
        self.setMinimumWidth(self._inner.minimumSizeHint().width() + bar + 4)

    def _layer_added(self, event=None) -> None:
        if self.session.image_layer is not None and self.session.image_layer in self.viewer.layers:
            return
        layer = self.session.find_image()
        if layer is None:
            return
        try:
            self.session.attach_image(layer)
        except InputError:
            return
        self.export_section.offer_restore()

    def _refresh_scan(self) -> None:
        session = self.session
        if session.image_layer is None:
            return
        ws = session.workspace
        model = session.model
        text = f"Scan: {session.image_layer.name} ({ws.image.modality}, {ws.image.orientation})"
        if model is not None:
            text += f" · model: {model.spec.name}, labels: {', '.join(model.spec.labels)}"
        self.scan_label.setText(text)

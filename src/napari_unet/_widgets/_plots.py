"""Two small painted widgets: a live curve plot and a strip of slices."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QMenu, QSizePolicy, QWidget

REVIEWED = QColor("#3cb371")
CURRENT = QColor("#ffcc00")


class CurvePlot(QWidget):
    """Curves (e.g. loss and validation Dice) against steps, redrawn as points arrive."""

    def __init__(self, names: dict[str, str], parent=None) -> None:
        super().__init__(parent)
        self.colors = {name: QColor(color) for name, color in names.items()}
        self.points: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def clear(self) -> None:
        for values in self.points.values():
            values.clear()
        self.update()

    def add(self, name: str, x: float, y: float) -> None:
        if y is not None and np.isfinite(y):
            self.points[name].append((float(x), float(y)))
            self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#262930"))
        w, h = self.width() - 8, self.height() - 8
        xs = [x for values in self.points.values() for x, _ in values]
        if not xs:
            painter.setPen(QColor("#888888"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no training yet")
            return
        x0, x1 = min(xs), max(max(xs), min(xs) + 1)
        legend_y = 14
        for name, values in self.points.items():
            if not values:
                continue
            ys = [y for _, y in values]
            y0, y1 = min(min(ys), 0.0), max(max(ys), 1.0)
            poly = QPolygonF(
                [QPointF(4 + w * (x - x0) / (x1 - x0), 4 + h * (1 - (y - y0) / (y1 - y0)))
                 for x, y in values]
            )  # fmt: skip
            painter.setPen(QPen(self.colors[name], 1.5))
            painter.drawPolyline(poly)
            painter.drawText(8, legend_y, f"{name} {ys[-1]:.3f}")
            legend_y += 14


class SliceStrip(QWidget):
    """One mark per slice: reviewed (green), information (brightness), current (yellow).

    A left click calls ``on_click(slice_index)``; a right click opens a menu to go to
    the slice or, if it is reviewed, to un-review it (``on_unreview(slice_index)``).
    """

    def __init__(
        self,
        on_click: Callable[[int], None] | None = None,
        parent=None,
        *,
        on_unreview: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(parent)
        self.n = 0
        self.reviewed: set[int] = set()
        self.current = -1
        self.uncertainty: np.ndarray | None = None
        self.on_click = on_click
        self.on_unreview = on_unreview
        self.setMinimumHeight(22)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(
            "Slices: green = reviewed, brighter = more to learn from reviewing it; "
            "click to go, right-click to un-review"
        )

    def set_state(self, n: int, reviewed, current: int, uncertainty=None) -> None:
        self.n, self.reviewed, self.current = n, set(reviewed), current
        self.uncertainty = uncertainty
        self.update()

    def _width(self) -> float:
        return self.width() / max(self.n, 1)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#262930"))
        if self.n == 0:
            return
        bar, h = self._width(), self.height()
        if self.uncertainty is not None and len(self.uncertainty) == self.n:
            top = float(np.max(self.uncertainty)) or 1.0
            for i, u in enumerate(self.uncertainty):
                level = int(40 + 160 * float(u) / top)
                painter.fillRect(QRectF(i * bar, 0, bar + 0.5, h), QColor(level, level, level))
        for i in self.reviewed:
            painter.fillRect(QRectF(i * bar, 0, max(bar, 2.0), h), REVIEWED)
        if 0 <= self.current < self.n:
            painter.fillRect(QRectF(self.current * bar, 0, max(bar, 2.0), h), CURRENT)

    def index_at(self, x: float) -> int:
        return int(min(self.n - 1, max(0, x // self._width())))

    def mousePressEvent(self, event) -> None:
        if not self.n:
            return
        x = event.position().x() if hasattr(event, "position") else event.x()
        index = self.index_at(x)
        if event.button() == Qt.MouseButton.RightButton:
            self.show_menu(index, event.globalPosition().toPoint())
        elif self.on_click is not None:
            self.on_click(index)

    def show_menu(self, index: int, where=None) -> None:
        """The slice's menu: go to it; un-review it (when reviewed)."""
        menu = QMenu(self)
        name = self.label_for(index) if getattr(self, "label_for", None) else index
        go = menu.addAction(f"Go to slice {name}")
        unreview = menu.addAction(f"Un-review slice {name}")
        unreview.setEnabled(index in self.reviewed and self.on_unreview is not None)
        chosen = menu.exec(where if where is not None else self.mapToGlobal(self.rect().center()))
        if chosen is go and self.on_click is not None:
            self.on_click(index)
        elif chosen is unreview and unreview.isEnabled():
            self.on_unreview(index)

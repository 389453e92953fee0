"""The fine-tune curve: loss and validation Dice by step, with the kept state marked.

The trainer validates every few steps and keeps the BEST state (or the final one unless
clearly beaten), scored once more at the end: that score is the version's ``val_dice``,
the one figure the version list, the status line and this curve all show. While
training the legend shows the latest validation; at the end (`mark_kept`) it shows the
kept state's Dice and a ring marks its step on the curve.
"""

from __future__ import annotations

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF

from napari_unet._widgets._plots import CurvePlot

BACKGROUND = QColor("#262930")
TEXT = QColor("#d0d0d0")


class FinetuneCurve(CurvePlot):
    """Loss and val Dice against steps; `mark_kept` rings the state that was kept."""

    def __init__(self, parent=None) -> None:
        super().__init__({"loss": "#ff7f50", "val Dice": "#3cb371"}, parent)
        self.kept: tuple[float, float] | None = None
        self.setMinimumHeight(120)

    def clear(self) -> None:
        self.kept = None
        super().clear()

    def mark_kept(self, step: float | None, dice: float | None) -> None:
        """Ring the kept state (``best_step``, ``val_dice``) and show its Dice."""
        self.kept = None if step is None or dice is None else (float(step), float(dice))
        self.update()

    def paintEvent(self, event) -> None:  # Qt override
        painter = QPainter(self)
        painter.fillRect(self.rect(), BACKGROUND)
        xs = [x for values in self.points.values() for x, _ in values]
        if not xs:
            painter.setPen(QColor("#888888"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no training yet")
            return
        x0, x1 = min(xs), max(max(xs), min(xs) + 1)
        if self.kept is not None:
            x1 = max(x1, self.kept[0])
        # the legend above the curves and the step labels below: no text over a line
        legend = self._legend()
        metrics = painter.fontMetrics()
        rows, x = 1, 8
        for text, _ in legend:
            width = metrics.horizontalAdvance(text)
            if x > 8 and x + width > self.width() - 4:
                rows, x = rows + 1, 8
            x += width + 16
        top = 6 + 14 * rows
        w, h = self.width() - 8, self.height() - top - 18

        def to_screen(x: float, y: float, y0: float, y1: float) -> QPointF:
            return QPointF(4 + w * (x - x0) / (x1 - x0), top + h * (1 - (y - y0) / (y1 - y0)))

        for name, values in self.points.items():
            kept = self.kept if name == "val Dice" else None
            ys = [y for _, y in values] + ([kept[1]] if kept else [])
            if not ys:
                continue
            y0, y1 = min(min(ys), 0.0), max(max(ys), 1.0)
            if values:
                painter.setPen(QPen(self.colors[name], 1.5))
                painter.drawPolyline(QPolygonF([to_screen(x, y, y0, y1) for x, y in values]))
            if kept is not None:  # the version's Dice, where its state was kept
                painter.setPen(QPen(QColor("#ffffff"), 2))
                painter.drawEllipse(to_screen(*kept, y0, y1), 5, 5)
        x, y = 8, 14
        for text, color in legend:
            width = metrics.horizontalAdvance(text)
            if x > 8 and x + width > self.width() - 4:
                x, y = 8, y + 14
            painter.setPen(color)
            painter.drawText(x, y, text)
            x += width + 16
        painter.setPen(TEXT)
        painter.drawText(8, self.height() - 4, f"step {x0:.0f}")
        right = f"step {x1:.0f}"
        painter.drawText(self.width() - 8 - metrics.horizontalAdvance(right),
                         self.height() - 4, right)  # fmt: skip

    def _legend(self) -> list[tuple[str, QColor]]:
        """``(text, colour)`` per curve: the latest value, or the kept state's Dice."""
        entries = []
        for name, values in self.points.items():
            kept = self.kept if name == "val Dice" else None
            if kept is not None:
                entries.append(
                    (f"{name} {kept[1]:.3f}, kept (step {kept[0]:.0f})", self.colors[name])
                )
            elif values:
                latest = " (latest)" if name == "val Dice" else ""
                entries.append((f"{name} {values[-1][1]:.3f}{latest}", self.colors[name]))
        return entries

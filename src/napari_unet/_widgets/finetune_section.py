"""Fine-tune step: train on the reviewed slices in a worker, live curves, re-predict."""

from __future__ import annotations

from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from napari_unet._widgets._plots import CurvePlot
from napari_unet._widgets._session import LoopSession
from napari_unet._widgets._worker import start_job
from napari_unet.errors import InputError

DEFAULT_SECONDS = 60


class FinetuneSection(QGroupBox):
    """Start/Stop fine-tuning with a time budget; then re-predict unreviewed slices."""

    def __init__(self, session: LoopSession, segment_section) -> None:
        super().__init__("4 · Fine-tune")
        self.session = session
        self.segment = segment_section
        self.worker = None
        self.seconds_spin = QSpinBox()
        self.seconds_spin.setRange(5, 3600)
        self.seconds_spin.setValue(DEFAULT_SECONDS)
        self.seconds_spin.setSuffix(" s")
        self.start_button = QPushButton("Fine-tune")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.plot = CurvePlot({"loss": "#ff7f50", "val Dice": "#3cb371"})
        self.status = QLabel("Review a few slices, then fine-tune.")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(QLabel("Budget"))
        row.addWidget(self.seconds_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(buttons)
        layout.addWidget(self.plot)
        layout.addWidget(self.status)
        self.start_button.clicked.connect(self._start_clicked)
        self.stop_button.clicked.connect(self.stop)

    def start(self, *, seconds: float | None = None, steps: int | None = None,
              repredict: bool = True, on_done=None):  # fmt: skip
        """Fine-tune the current model on the reviewed slices; returns the worker."""
        session = self.session
        session.require_image()
        loop = session.loop
        parent = loop.current
        parent_dice = parent.metrics.get("val_dice") if parent else None
        budget = float(seconds if seconds is not None else self.seconds_spin.value())
        self._stop_requested = False
        # the loop snapshots the labels now (painting may go on meanwhile)
        finetune = loop.finetune(seconds=None if steps else budget, steps=steps,
                                 note="fine-tuned in napari",
                                 stop=lambda: self._stop_requested)  # fmt: skip

        def job():
            return (yield from finetune)

        def progress(events) -> None:
            for event in events:
                step = event.data.get("step", event.done)
                self.plot.add("loss", step, event.data.get("loss"))
                self.plot.add("val Dice", step, event.data.get("val_dice"))
            self.status.setText(events[-1].message or f"step {step}")

        def done(trained) -> None:
            version = loop.add_version(trained)
            self.status.setText(describe_result(version.hash, version.metrics, parent_dice))
            if repredict:
                self.segment.run(only_unreviewed=True, on_done=on_done)
            elif on_done is not None:
                on_done(None)

        self.plot.clear()
        self._busy(True)
        self.worker = start_job(job, description="Fine-tuning", on_result=done,
                                on_progress=progress,
                                on_finished=lambda: self._busy(False))  # fmt: skip
        return self.worker

    def stop(self) -> None:
        """Stop at the next step; the best model so far is kept as a new version."""
        self._stop_requested = True

    def _busy(self, busy: bool) -> None:
        self.start_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)

    def _start_clicked(self) -> None:
        try:
            self.start()
        except InputError as e:
            show_error(str(e))


def describe_result(digest: str, metrics: dict, parent_dice: float | None) -> str:
    """One line for the user: the new version, its Dice, and the change."""
    text = f"new version {digest[:8]} after {metrics.get('steps')} steps"
    dice = metrics.get("val_dice")
    if dice is not None:
        text += f"; Dice on held-out reviewed voxels {dice:.3f}"
        if parent_dice is not None:
            text += f" (was {parent_dice:.3f}, {dice - parent_dice:+.3f})"
    earlier = metrics.get("earlier_slices_dice")
    if earlier and None not in earlier:
        text += f"; on earlier slices {earlier[0]:.3f} → {earlier[1]:.3f}"
    if metrics.get("drift"):
        text += " — flagged: worse on earlier slices; roll back in step 1 if needed"
    return text

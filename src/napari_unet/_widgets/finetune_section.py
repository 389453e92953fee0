"""Fine-tune step: train on the reviewed slices in a worker, live curves, re-predict.

One count and one Dice: a time budget is shown in seconds ("step 56 · 23 s of 60 s"),
as its number of steps is only an estimate that changes while it runs; a step budget
as "step 56/90". The Dice shown at the end, on the curve and in the version list is the
new version's ``val_dice``: the validation Dice of the state that was kept.
"""

from __future__ import annotations

from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from napari_unet._widgets._curve import FinetuneCurve
from napari_unet._widgets._session import LoopSession
from napari_unet._widgets._worker import start_job
from napari_unet.errors import InputError
from napari_unet.loop.steps import VersionMetrics

DEFAULT_SECONDS = 60


class FinetuneSection(QGroupBox):
    """Start/Stop fine-tuning with a time budget; then re-predict unreviewed slices.

    Signals:
        started(): a fine-tune started (the panel brings this section into view).
        finished(): its result is shown (the panel keeps it in view).
    """

    started = Signal()
    finished = Signal()

    def __init__(self, session: LoopSession, segment_section) -> None:
        super().__init__("4 · Fine-tune")
        self.session = session
        self.segment = segment_section
        self.worker = None
        self.budget: tuple[str, float] | None = None  # ("seconds", s) or ("steps", n)
        self.seconds_spin = QSpinBox()
        self.seconds_spin.setRange(5, 3600)
        self.seconds_spin.setValue(DEFAULT_SECONDS)
        self.seconds_spin.setSuffix(" s")
        self.start_button = QPushButton("Fine-tune")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.plot = FinetuneCurve()
        self.status = QLabel("Review a few slices, then fine-tune.")
        self.status.setWordWrap(True)
        self.seconds_spin.setToolTip("Time budget of the fine-tune (wall clock)")
        row = QHBoxLayout()  # one row: the curve gets the height
        row.addWidget(QLabel("Budget"))
        row.addWidget(self.seconds_spin)
        row.addWidget(self.start_button, 1)
        row.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
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
        if seconds is not None and not steps:  # the box shows the budget that runs
            self.seconds_spin.setValue(round(budget))
        self._stop_requested = False
        self.budget = ("steps", float(steps)) if steps else ("seconds", budget)
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
            self.status.setText(describe_progress(events[-1], self.budget))

        def done(trained) -> None:
            version = loop.add_version(trained)
            metrics = VersionMetrics.from_dict(version.metrics)
            self.plot.mark_kept(metrics.best_step, metrics.val_dice)
            self.status.setText(describe_result(version.hash, metrics, parent_dice))
            self.finished.emit()
            if repredict:
                self.segment.run(only_unreviewed=True, on_done=on_done)
            elif on_done is not None:
                on_done(None)

        self.plot.clear()
        self.status.setText("Fine-tuning: preparing the reviewed slices …")
        self._busy(True)
        self.worker = start_job(job, description="Fine-tuning", on_result=done,
                                on_progress=progress, activity=False,
                                on_finished=lambda: self._busy(False))  # fmt: skip
        self.started.emit()
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


def describe_progress(event, budget: tuple[str, float] | None) -> str:
    """The running fine-tune in one line: steps so far, seconds of a time budget (its
    step total is an estimate that changes), or step/total of a step budget."""
    data = event.data or {}
    step = data.get("step", event.done)
    if budget is not None and budget[0] == "steps":
        text = f"step {step}/{int(budget[1])}"
    else:
        text = f"step {step}"
        if data.get("elapsed") is not None and budget is not None:
            text += f" · {data['elapsed']:.0f} s of {budget[1]:.0f} s"
    if data.get("loss") is not None:
        text += f" · loss {data['loss']:.3f}"
    if data.get("val_dice") is not None:
        text += f" · val Dice {data['val_dice']:.3f} (latest)"
    return text


def describe_result(digest: str, metrics: VersionMetrics | dict, parent_dice: float | None) -> str:
    """One line for the user: the new version, its Dice, and the change.

    Args:
        digest: the new version's hash.
        metrics: its `loop.steps.VersionMetrics` (or their ``to_dict``, as a
            `ModelVersion` keeps them).
        parent_dice: the parent's validation Dice, None if unknown.
    """
    m = metrics if isinstance(metrics, VersionMetrics) else VersionMetrics.from_dict(metrics)
    text = f"new version {digest[:8]} after {m.steps} steps ({m.seconds:.0f} s)"
    if m.val_dice is not None:
        kept = f", kept from step {m.best_step}" if m.best_step != m.steps else ""
        text += f"; Dice on held-out reviewed voxels {m.val_dice:.3f}{kept}"
        if parent_dice is not None:
            text += f" (was {parent_dice:.3f}, {m.val_dice - parent_dice:+.3f})"
    earlier = m.earlier_slices_dice
    if earlier and None not in earlier:
        text += f"; on earlier slices {earlier[0]:.3f} → {earlier[1]:.3f}"
    if m.drift:
        text += " — flagged: worse on earlier slices; roll back in step 1 if needed"
    return text

"""The panel's own progress bar: the running job, how far it is and its ETA, in view.

napari's progress bars live in its activity dock, collapsed by default: a user watching
the panel did not see Segment move. This bar sits at the top of the panel and follows
every job of the panel's loop through `_worker.add_progress_listener`.

A fine-tune with a time budget re-estimates its number of steps as it learns how fast a
step is, so the bar and the text count seconds for a time budget ("23 s of 60 s") and
steps only for a step budget ("step 56/90"); the step reached is shown as a plain
count. A prediction counts slices (2D) or tiles (3D), its ETA from the rate so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QSizePolicy, QVBoxLayout, QWidget

from napari_unet._widgets._worker import add_progress_listener

#: Jobs of the loop shown here (their `start_job` descriptions; started with
#: ``activity=False``: napari's activity dock does not show them a second time).
LOOP_JOBS = ("Segmenting", "Fine-tuning")
IDLE_TEXT = "No job running."


class JobProgressBar(QWidget):
    """A title line and a bar for the loop job that runs now.

    Args:
        is_busy: whether the panel's loop runs a job (polled to see the end).
        budget_for: ``description → ("seconds", s) | ("steps", n) | None``.
        on_start: called with a job's description when it is first seen, and the
            description of the job before it (None if none).
    """

    def __init__(
        self,
        is_busy: Callable[[], bool],
        budget_for: Callable[[str], tuple[str, float] | None] = lambda description: None,
        on_start: Callable[[str, str | None], None] | None = None,
        parent=None,
    ) -> None:
        super().__init__(parent)
        self.is_busy = is_busy
        self.budget_for = budget_for
        self.on_start = on_start
        self.active: str | None = None
        self.last: str | None = None  # the job before (e.g. "Fine-tuning" → re-predict)
        self.started = 0.0
        self.text = QLabel(IDLE_TEXT)
        self.text.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.bar.setMaximumHeight(16)
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setFormat("")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 0)
        layout.setSpacing(2)
        layout.addWidget(self.text)
        layout.addWidget(self.bar)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self._timer = QTimer(self)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._poll)
        self._remove = add_progress_listener(self._listen)
        self.destroyed.connect(lambda *_, remove=self._remove: remove())

    # --- listener --------------------------------------------------------------------------
    def _listen(self, description: str, events) -> None:
        try:
            self.on_events(description, events)
        except RuntimeError:  # the panel was deleted with its viewer
            self._remove()

    def on_events(self, description: str, events) -> None:
        """Show the latest of ``events`` of job ``description`` (if it is the loop's)."""
        if description not in LOOP_JOBS or not events:
            return
        if self.active != description:
            if not self.is_busy():
                return  # another viewer's job, or a late event of a finished one
            self.start(description)
        event = events[-1]
        elapsed = time.monotonic() - self.started
        budget = self.budget_for(description)
        data = event.data or {}
        parts = [description]
        if budget is not None and budget[0] == "seconds":
            seconds = float(data.get("elapsed", elapsed))
            self.bar.setRange(0, int(budget[1] * 10))
            self.bar.setValue(min(int(seconds * 10), int(budget[1] * 10)))
            self.bar.setFormat(f"{seconds:.0f} s of {budget[1]:.0f} s")
            parts.append(f"step {event.done}")
            eta = max(0.0, budget[1] - seconds)
        else:
            total = int(budget[1]) if budget is not None else int(event.total or 0)
            if total:
                self.bar.setRange(0, total)
                self.bar.setValue(min(event.done, total))
                unit = "step" if description == "Fine-tuning" else "batch"
                self.bar.setFormat(f"{unit} {event.done}/{total}")
            else:
                self.bar.setRange(0, 0)  # busy indicator
            eta = data.get("eta")
            if eta is None and total and event.done:
                eta = elapsed * (total - event.done) / event.done
        if data.get("loss") is not None:
            parts.append(f"loss {data['loss']:.3f}")
        if eta is not None:
            parts.append(f"about {format_seconds(eta)} left")
        self.text.setText(" · ".join(parts))

    # --- state -----------------------------------------------------------------------------
    def start(self, description: str) -> None:
        previous = self.active or self.last
        self.active = description
        self.started = time.monotonic()
        self.bar.setRange(0, 0)
        self.bar.setFormat("")
        self.text.setText(f"{description} …")
        self._timer.start()
        if self.on_start is not None:
            self.on_start(description, previous)

    def _poll(self) -> None:
        if self.active is not None and not self.is_busy():
            self.finish()

    def finish(self) -> None:
        """The job ended: a full bar and how long it took."""
        self._timer.stop()
        seconds = time.monotonic() - self.started
        self.bar.setRange(0, 1)
        self.bar.setValue(1)
        self.bar.setFormat("done")
        self.text.setText(f"{self.active}: ended after {format_seconds(seconds)}")
        self.last, self.active = self.active, None


def format_seconds(seconds: float) -> str:
    """``"0.4 s"``, ``"42 s"``, ``"3 min 05 s"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"

"""Run a long job (see `napari_unet.jobs`) off the GUI thread with progress and Cancel.

Progress reaches the GUI at most every `REFRESH_S` seconds (the events in between are
handed over together): a job yields many events per second, and each refresh repaints
the window, which with napari's OpenGL canvas costs tens of milliseconds where OpenGL
is rendered in software (measured with benchmarks/bench_gui_stall.py under Xvfb).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer

from napari_unet._widgets import _gc_freeze
from napari_unet.errors import InputError
from napari_unet.jobs import Cancelled, Progress

REFRESH_S = 0.25


#: Called with (description, events) whenever a job's progress is shown; the headless
#: demo prints a terminal progress line from it.
_listeners: list[Callable[[str, list[Progress]], None]] = []


def add_progress_listener(listener: Callable[[str, list[Progress]], None]) -> Callable[[], None]:
    """Also send every job's progress to ``listener``; returns a function removing it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


class _ActivityBar:
    """The job's entry in napari's activity dock, or nothing (``shown`` False).

    While an entry exists napari animates an "in progress" GIF in the status bar, and
    each frame repaints the main window: measured 379 repaints during a first
    prediction of the MR sample, which took 11.9 s with the entry and 9.0 s without
    (Xvfb, software OpenGL, 2 cores). The panel shows its loop's jobs in its own bar.
    """

    def __init__(self, description: str, shown: bool) -> None:
        self.bar = napari_progress(total=0, desc=description) if shown else None

    def show(self, event: Progress, text: str | None) -> None:
        if self.bar is None:
            return
        if event.total and self.bar.total != event.total:
            self.bar.total = event.total
        self.bar.n = event.done
        if text:
            self.bar.set_description(text)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Throttle:
    """Hands a job's progress events to the GUI at most every `REFRESH_S` seconds, and
    within `REFRESH_S` of the last one even when the job goes quiet."""

    def __init__(self, show: Callable[[list[Progress]], None]) -> None:
        self._show = show
        self._pending: list[Progress] = []
        self._last = 0.0
        self._scheduled = False

    def add(self, event: Progress) -> None:
        self._pending.append(event)
        wait_s = REFRESH_S - (time.monotonic() - self._last)
        if wait_s <= 0:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            QTimer.singleShot(int(wait_s * 1000) + 1, self._timed_flush)

    def flush(self) -> None:
        # take the events first: showing them can run the event loop and re-enter
        events = self._pending.copy()
        self._pending.clear()
        if not events:
            return
        self._last = time.monotonic()
        self._show(events)

    def _timed_flush(self) -> None:
        self._scheduled = False
        self.flush()


def start_job(
    job_factory: Callable[[], Generator[Progress, None, Any]],
    *,
    description: str,
    on_result: Callable[[Any], None],
    on_progress: Callable[[list[Progress]], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    on_error: Callable[[Exception], bool] | None = None,
    activity: bool = True,
):
    """Start ``job_factory()`` in a napari thread worker.

    Progress events drive napari's activity progress bar (with ``activity``; the panel
    passes False for the jobs its own bar shows), ``on_progress`` (which gets the events
    since its last call, at most every `REFRESH_S` seconds) and the progress listeners;
    the result goes to ``on_result`` on the GUI thread; `InputError` and `Cancelled`
    become notifications (unless ``on_error`` returns True); other exceptions go to
    napari's error handler. Returns the worker (``worker.quit()`` cancels between steps).
    """
    bar = _ActivityBar(description, activity)

    def show(events: list[Progress]) -> None:
        message = events[-1].message
        bar.show(events[-1], f"{description}: {message}" if message else None)
        if on_progress is not None:
            on_progress(events)
        for listener in list(_listeners):
            listener(description, events)

    throttle = _Throttle(show)

    def generator():
        return (yield from job_factory())

    worker = create_worker(generator, _start_thread=False)

    def errored(exc: Exception) -> None:
        if on_error is not None and on_error(exc):
            return
        if isinstance(exc, Cancelled):
            show_info(f"{description}: cancelled")
        elif isinstance(exc, InputError):
            show_error(str(exc))
        else:
            raise exc

    def finished() -> None:
        _gc_freeze.job_ended()
        throttle.flush()
        bar.close()
        if on_finished is not None:
            on_finished()

    def returned(result: Any) -> None:
        throttle.flush()
        on_result(result)

    worker.yielded.connect(throttle.add)
    worker.returned.connect(returned)
    worker.errored.connect(errored)
    worker.finished.connect(finished)
    _gc_freeze.job_started()
    worker.start()
    return worker

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


def start_job(
    job_factory: Callable[[], Generator[Progress, None, Any]],
    *,
    description: str,
    on_result: Callable[[Any], None],
    on_progress: Callable[[list[Progress]], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    on_error: Callable[[Exception], bool] | None = None,
):
    """Start ``job_factory()`` in a napari thread worker.

    Progress events drive a napari progress bar (and ``on_progress``, which gets the
    events since its last call, at most every `REFRESH_S` seconds); the result goes
    to ``on_result`` on the GUI thread; `InputError` and `Cancelled` become
    notifications (unless ``on_error`` returns True); other exceptions go to napari's
    error handler. Returns the worker
    (``worker.quit()`` cancels between steps).
    """
    bar = napari_progress(total=0, desc=description)

    def generator():
        return (yield from job_factory())

    worker = create_worker(generator, _start_thread=False)

    pending: list[Progress] = []
    last_refresh = [0.0]

    def refresh() -> None:
        # take the events first: updating the bar can run the event loop and re-enter
        events = pending.copy()
        pending.clear()
        if not events:
            return
        last_refresh[0] = time.monotonic()
        event = events[-1]
        if event.total and bar.total != event.total:
            bar.total = event.total
        bar.n = event.done
        if event.message:
            bar.set_description(f"{description}: {event.message}")
        bar.refresh()
        if on_progress is not None:
            on_progress(events)
        for listener in list(_listeners):
            listener(description, events)

    flush_scheduled = [False]

    def flush() -> None:
        flush_scheduled[0] = False
        refresh()

    def yielded(event: Progress) -> None:
        pending.append(event)
        wait_s = REFRESH_S - (time.monotonic() - last_refresh[0])
        if wait_s <= 0:
            refresh()
        elif not flush_scheduled[0]:  # shown within REFRESH_S even if the job goes quiet
            flush_scheduled[0] = True
            QTimer.singleShot(int(wait_s * 1000) + 1, flush)

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
        refresh()
        bar.close()
        if on_finished is not None:
            on_finished()

    worker.yielded.connect(yielded)

    def returned(result: Any) -> None:
        refresh()
        on_result(result)

    worker.returned.connect(returned)
    worker.errored.connect(errored)
    worker.finished.connect(finished)
    _gc_freeze.job_started()
    worker.start()
    return worker

"""Keep Python's full garbage collections where nobody is waiting on the window.

A full collection walks every tracked object of the process (~600 000 with napari,
torch and MONAI loaded) in ~400 ms, holding the GIL: whichever thread triggers it, the
GUI cannot repaint or react that long (measured 410 ms gaps during fine-tuning,
benchmarks/bench_gui_stall.py). So:

* `job_started`: `gc.freeze` moves every object alive into a generation the collector
  skips; collections during the job only walk what the job made.
* `job_ended`, with an `IdleCollector` installed (the panel installs one): the objects
  stay frozen and a full collection is *requested*. Unfreezing here (what this module
  did before) handed all 600 000 back at once; the next full collection then ran on the
  GUI thread right after the job, while the user looked at its result (0.38–0.45 s,
  inside the inference window in 2 of 4 benchmark runs).
* A removed layer also requests one: its array is freed only by the cyclic collector,
  and the layer may be frozen.
* The collector runs a request as ``unfreeze → collect → freeze`` on the GUI thread once
  the application has had no mouse, key, wheel or touch input for `IDLE_MS` and no job
  runs (a job's end requests again). Garbage made before a job is therefore freed at
  the next idle moment after it, never lost for good.
* Without a collector (no panel: tests, scripts) `job_ended` unfreezes after the last
  job, as before.

`freeze`/`unfreeze` are constant-time list splices.
"""

from __future__ import annotations

import gc
import threading
import time

from qtpy.QtCore import QEvent, QObject, QTimer, Signal
from qtpy.QtWidgets import QApplication

#: Quiet time (no user input) before a requested full collection runs.
IDLE_MS = 2000

_lock = threading.RLock()  # a finaliser run by a collection may end a job
_active = 0
_collector: IdleCollector | None = None


def job_started() -> None:
    global _active
    with _lock:
        gc.freeze()
        _active += 1


def job_ended() -> None:
    global _active
    with _lock:
        _active = max(0, _active - 1)
        last = _active == 0
        collector = _collector
    if collector is not None:
        _emit(collector)
    elif last:
        with _lock:
            if _active == 0:
                gc.unfreeze()


def jobs_running() -> bool:
    with _lock:
        return _active > 0


def request_collection() -> None:
    """Ask for a full collection at the next idle moment (no-op without a collector)."""
    collector = _collector
    if collector is not None:
        _emit(collector)


def _emit(collector: IdleCollector) -> None:
    try:
        collector.requested.emit()  # queued to the GUI thread when called elsewhere
    except RuntimeError:  # the panel (its parent) was deleted meanwhile
        _forget()


def installed() -> IdleCollector | None:
    return _collector


def install(parent: QObject | None = None, idle_ms: int = IDLE_MS) -> IdleCollector:
    """The process's `IdleCollector` (made once; later calls return it)."""
    global _collector
    if _collector is None:
        _collector = IdleCollector(parent, idle_ms=idle_ms)
        _collector.destroyed.connect(_forget)
    return _collector


def uninstall() -> None:
    """Back to unfreezing after the last job; frozen objects are handed back now if no
    job runs."""
    global _collector
    collector, _collector = _collector, None
    if collector is not None:
        collector.stop()
    with _lock:
        if _active == 0:
            gc.unfreeze()


def _forget(*_args) -> None:
    global _collector
    _collector = None
    with _lock:
        if _active == 0:
            gc.unfreeze()


_INPUT = frozenset(
    {
        QEvent.Type.MouseButtonPress,
        QEvent.Type.MouseButtonRelease,
        QEvent.Type.MouseButtonDblClick,
        QEvent.Type.MouseMove,
        QEvent.Type.Wheel,
        QEvent.Type.KeyPress,
        QEvent.Type.KeyRelease,
        QEvent.Type.TouchBegin,
        QEvent.Type.TouchUpdate,
    }
)


class IdleCollector(QObject):
    """Runs requested full collections once the user has paused (see the module).

    Attributes:
        collections: ``(when, seconds)`` of each collection run (``time.monotonic``).
    """

    requested = Signal()

    def __init__(self, parent: QObject | None = None, *, idle_ms: int = IDLE_MS) -> None:
        super().__init__(parent)
        self.idle_ms = int(idle_ms)
        self.collections: list[tuple[float, float]] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._collect)
        self._watching = False
        self.requested.connect(self._arm)

    @property
    def pending(self) -> bool:
        return self._watching

    def _arm(self) -> None:
        if not self._watching and (app := QApplication.instance()) is not None:
            app.installEventFilter(self)  # only while a request waits
            self._watching = True
        self._timer.start(self.idle_ms)

    def eventFilter(self, watched, event) -> bool:  # Qt override
        if event.type() in _INPUT:
            self._timer.start(self.idle_ms)  # the user is active: wait again
        return False

    def stop(self) -> None:
        self._timer.stop()
        if self._watching and (app := QApplication.instance()) is not None:
            app.removeEventFilter(self)
        self._watching = False

    def _collect(self) -> None:
        self.stop()
        with _lock:
            if _active:  # a job started meanwhile: its end requests again
                return
            t = time.perf_counter()
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        self.collections.append((time.monotonic(), time.perf_counter() - t))

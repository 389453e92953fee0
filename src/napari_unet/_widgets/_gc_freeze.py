"""Keep Python's cyclic garbage collector off napari's objects while a job runs.

A full collection walks every tracked object of the process (~600 000 with napari,
torch and MONAI loaded) in ~400 ms, holding the GIL: when a worker thread's
allocations trigger one, the GUI thread cannot run that long (measured 410 ms gaps
during fine-tuning, benchmarks/bench_gui_stall.py). `gc.freeze` moves every object
that exists when the first job starts into a generation the collector skips, so
collections during the job only look at objects the job made; `gc.unfreeze` after the
last job hands them back, so garbage made before the job is still collected. Both are
constant-time list splices.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_active = 0


def job_started() -> None:
    global _active
    with _lock:
        if _active == 0:
            gc.freeze()
        _active += 1


def job_ended() -> None:
    global _active
    with _lock:
        _active = max(0, _active - 1)
        if _active == 0:
            gc.unfreeze()

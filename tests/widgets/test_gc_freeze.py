"""Jobs keep the cyclic collector off older objects, and hand them back afterwards."""

from __future__ import annotations

import gc
import weakref

from napari_unet._widgets import _gc_freeze


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_objects_older_than_the_jobs_are_skipped_then_collected_again() -> None:
    gc.collect()
    old = _Node()
    dead = weakref.ref(old)
    _gc_freeze.job_started()
    _gc_freeze.job_started()  # a second job (e.g. re-predict after fine-tune)
    try:
        assert gc.get_freeze_count() > 0
        del old
        gc.collect()
        assert dead() is not None  # frozen: a collection during the job skips it
        _gc_freeze.job_ended()
        assert gc.get_freeze_count() > 0  # one job still runs
    finally:
        _gc_freeze.job_ended()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert dead() is None  # after the last job the garbage is collected


def test_a_job_in_the_panel_thaws_when_it_ends(make_napari_viewer, qtbot) -> None:
    from napari_unet._widgets._worker import start_job
    from napari_unet.jobs import Progress

    make_napari_viewer()
    seen = []

    def job():
        seen.append(gc.get_freeze_count())
        yield Progress(1, 1, "")
        return 42

    results = []
    worker = start_job(job, description="test", on_result=results.append)
    qtbot.waitUntil(lambda: results == [42], timeout=10000)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10000)
    assert seen[0] > 0 and gc.get_freeze_count() == 0

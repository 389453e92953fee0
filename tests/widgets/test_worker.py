"""Jobs in thread workers: progress batching, and the cyclic collector kept off older objects."""

from __future__ import annotations

import gc
import weakref

import pytest

from napari_unet._widgets import _gc_freeze


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_objects_older_than_the_jobs_are_skipped_then_collected_again() -> None:
    _gc_freeze.uninstall()  # no panel: the last job's end unfreezes
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
    _gc_freeze.uninstall()  # no panel, no idle collector
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


def test_progress_is_batched_and_the_last_event_always_arrives(make_napari_viewer, qtbot):
    import time

    from napari_unet._widgets._worker import start_job
    from napari_unet.jobs import Progress

    make_napari_viewer()
    calls: list[list[int]] = []

    def job():
        for i in range(1, 41):  # 40 events in ~0.4 s, then a 2 s quiet step
            time.sleep(0.01)
            yield Progress(i, 41, "")
        time.sleep(2.0)
        yield Progress(41, 41, "")
        return "done"

    results = []
    start_job(job, description="test", on_result=results.append,
              on_progress=lambda events: calls.append([e.done for e in events]))  # fmt: skip
    qtbot.waitUntil(lambda: bool(calls) and calls[-1][-1] == 40, timeout=1500)  # before 2 s
    qtbot.waitUntil(lambda: results == ["done"], timeout=10000)
    assert [d for batch in calls for d in batch] == list(range(1, 42))  # none lost
    assert len(calls) <= 6  # at most ~4 refreshes a second


@pytest.mark.parametrize("activity", [True, False])
def test_activity_dock_entry_only_when_asked(make_napari_viewer, qtbot, activity):
    """napari's activity entry animates a GIF that repaints the whole window; the
    panel's loop jobs (shown in its own bar) start without one."""
    from napari.utils import progress

    from napari_unet._widgets._worker import start_job
    from napari_unet.jobs import Progress

    make_napari_viewer()
    seen: list[int] = []

    def job():
        seen.append(len(progress._all_instances))  # while the job runs
        yield Progress(1, 1, "")
        return "done"

    before = len(progress._all_instances)
    results: list[str] = []
    start_job(job, description="test", on_result=results.append, activity=activity)
    qtbot.waitUntil(lambda: results == ["done"], timeout=5000)
    assert seen == [before + (1 if activity else 0)]
    qtbot.waitUntil(lambda: len(progress._all_instances) == before, timeout=5000)


@pytest.fixture
def collector(qtbot):
    _gc_freeze.uninstall()
    c = _gc_freeze.install(idle_ms=150)
    yield c
    _gc_freeze.uninstall()


def test_with_an_idle_collector_garbage_stays_frozen_until_the_user_pauses(collector, qtbot):
    old = _Node()
    dead = weakref.ref(old)
    _gc_freeze.job_started()
    del old
    _gc_freeze.job_ended()
    assert gc.get_freeze_count() > 0 and collector.pending  # no full collection at the end
    gc.collect()
    assert dead() is not None
    qtbot.waitUntil(lambda: dead() is None, timeout=5000)  # collected once idle
    assert not collector.pending and len(collector.collections) == 1
    assert gc.get_freeze_count() > 0  # and everything alive frozen again


def test_user_input_postpones_the_collection(collector, qtbot):
    from qtpy.QtCore import QEvent, QPointF, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication, QWidget

    widget = QWidget()
    qtbot.addWidget(widget)
    _gc_freeze.job_started()
    _gc_freeze.job_ended()
    for _ in range(8):  # 8 × 50 ms of mouse moves: longer than the 150 ms idle time
        move = QMouseEvent(QEvent.Type.MouseMove, QPointF(5, 5), QPointF(5, 5),
                           Qt.MouseButton.NoButton, Qt.MouseButton.NoButton,
                           Qt.KeyboardModifier.NoModifier)  # fmt: skip
        QApplication.sendEvent(widget, move)
        qtbot.wait(50)
        assert collector.collections == []
    qtbot.waitUntil(lambda: len(collector.collections) == 1, timeout=5000)


def test_a_running_job_defers_the_collection_to_its_end(collector, qtbot):
    _gc_freeze.job_started()
    _gc_freeze.job_ended()  # requests one
    _gc_freeze.job_started()  # a new job before the user paused
    try:
        qtbot.wait(400)
        assert collector.collections == [] and not collector.pending
    finally:
        _gc_freeze.job_ended()  # requests again
    qtbot.waitUntil(lambda: len(collector.collections) == 1, timeout=5000)


def test_a_removed_layer_is_freed_at_the_next_pause(panel, qtbot):
    import numpy as np

    collector = panel.idle_collector
    assert _gc_freeze.installed() is collector
    collector.idle_ms = 150
    layer = panel.viewer.add_image(np.zeros((4, 32, 32), np.float32), name="to remove")
    data = weakref.ref(layer.data)
    _gc_freeze.job_started()  # the layer is frozen by a job that starts while it is open
    _gc_freeze.job_ended()
    qtbot.waitUntil(lambda: not collector.pending, timeout=5000)
    del layer
    panel.viewer.layers.remove("to remove")
    assert collector.pending
    qtbot.waitUntil(lambda: data() is None, timeout=5000)

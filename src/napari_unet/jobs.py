"""The long-job protocol shared by DICOM loading, inference and training.

A long job is a generator that yields `Progress` events and *returns* its result
(``StopIteration.value``). It takes a ``stop`` callable and checks it between steps;
when it returns True the job ends early and returns what it has (or raises `Cancelled`
when it has nothing useful). `run_job` drains a job for the CLI and the tests; widgets
run the same generator in a napari ``thread_worker``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from napari_unet.errors import NapariUnetError
from napari_unet.typing import ProgressFn

T = TypeVar("T")


@dataclass
class Progress:
    """One progress event.

    Attributes:
        done: units finished (slices, windows, steps, files).
        total: units in all (0 when unknown).
        message: a short human-readable line.
        data: job-specific figures (e.g. ``{"loss": 0.3, "dice": 0.8}`` while training).
    """

    done: int
    total: int
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


Job = Generator[Progress, None, T]


class Cancelled(NapariUnetError):
    """A job was stopped before it had any result to return."""


def never() -> bool:
    """The default stop flag: never stop."""
    return False


def run_job(job: Job[T], progress: ProgressFn | None = None) -> T:
    """Drain a job, forwarding (done, total) to ``progress``, and return its result."""
    while True:
        try:
            event = next(job)
        except StopIteration as finished:
            return finished.value
        if progress is not None:
            progress(event.done, event.total)

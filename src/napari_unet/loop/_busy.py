"""`BusyJob`: a loop job that keeps the loop busy until it is over (see `Loop._guarded`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari_unet.jobs import Job


class BusyJob:
    """A generator wrapper that calls ``release`` once when the job is over.

    Over means: it returned, raised, was closed, or was dropped without being run.
    """

    def __init__(self, job: Job[Any], release: Callable[[], None]) -> None:
        self._job, self._release = job, release

    def __iter__(self) -> BusyJob:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        try:
            return self._job.send(value)
        except BaseException:
            self._done()
            raise

    def throw(self, *args: Any) -> Any:
        try:
            return self._job.throw(*args)
        except BaseException:
            self._done()
            raise

    def close(self) -> None:
        try:
            self._job.close()
        finally:
            self._done()

    def __del__(self) -> None:
        self._done()

    def _done(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

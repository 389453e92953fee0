"""A progress line with ETA on the terminal (tqdm) for the loop's jobs.

Every terminal front end (`train`, `simulate`, `predict`, the headless demo) drains its
jobs through `drain`, which shows ``done/total``, the rate and the remaining time on
stderr, plus the job's figures (loss, validation Dice, round). Quiet with ``--json``
(pass ``enabled=False``) so that stdout stays one JSON object and stderr stays clean.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar

from napari_unet.jobs import Job, Progress

T = TypeVar("T")


def _postfix(event: Progress) -> str:
    data = event.data or {}
    parts = []
    if data.get("loss") is not None:
        parts.append(f"loss {data['loss']:.3f}")
    if data.get("val_dice") is not None:
        parts.append(f"val Dice {data['val_dice']:.3f}")
    return ", ".join(parts)


def drain(job: Job[T], description: str, *, enabled: bool = True) -> T:
    """Run ``job`` to its end, showing a progress line on stderr; return its result.

    Args:
        job: a long job (see `napari_unet.jobs`).
        description: what runs, e.g. "fine-tuning".
        enabled: False runs it silently.
    """
    if not enabled:
        while True:
            try:
                next(job)
            except StopIteration as done:
                return done.value
    from tqdm import tqdm

    bar: Any = None
    phase = None
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as done:
                return done.value
            # a new bar when a new phase starts: another round, or the count restarts
            key = (event.data or {}).get("round")
            if bar is None or key != phase or event.done < bar.n:
                if bar is not None:
                    bar.close()
                phase = key
                label = description if key is None else f"{description}, round {key}"
                bar = tqdm(total=event.total or None, desc=label, file=sys.stderr,
                           mininterval=0.5, dynamic_ncols=True)  # fmt: skip
            if event.total and bar.total != event.total:
                bar.total = event.total
            bar.set_postfix_str(_postfix(event), refresh=False)
            bar.update(max(0, event.done - bar.n))
    finally:
        if bar is not None:
            bar.close()

"""Merging a prediction into the user's labels: reviewed slices are never written.

The merge is recorded as an `Edit` (the voxels it changed, their old and new values)
so that a front end can put it on its undo stack as ONE step and undo restores the
labels exactly as they were, including what the user painted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Edit:
    """A change of a labels array, enough to undo and redo it exactly.

    Attributes:
        index: fancy index ``(i, j, k)`` of the changed voxels (native order).
        old: their values before.
        new: their values after.
    """

    index: tuple[np.ndarray, np.ndarray, np.ndarray]
    old: np.ndarray
    new: np.ndarray

    @property
    def voxels(self) -> int:
        return int(self.old.size)

    def undo(self, labels: np.ndarray) -> None:
        labels[self.index] = self.old

    def redo(self, labels: np.ndarray) -> None:
        labels[self.index] = self.new


def slice_runs(indices: Iterable[int]) -> list[tuple[int, int]]:
    """Indices → sorted ``[(start, stop), ...]`` of consecutive runs."""
    runs: list[tuple[int, int]] = []
    for i in sorted(set(int(i) for i in indices)):
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def merge_unreviewed(
    labels: np.ndarray,
    prediction: np.ndarray,
    *,
    reviewed: Iterable[int],
    slice_axis: int,
    only: Iterable[int] | None = None,
    write: bool = True,
) -> Edit:
    """Copy ``prediction`` into ``labels`` in place, on unreviewed slices only.

    Works run by run of consecutive unreviewed slices, so no whole-volume temporary is
    made (the merge runs on the GUI thread in the panel).

    Args:
        labels: the labels array ``(i, j, k)``, written in place.
        prediction: a label map on the same grid.
        reviewed: slice indices along ``slice_axis`` that are never written.
        slice_axis: the axis slices are reviewed along.
        only: if given, only these slices are written (e.g. the empty ones).
        write: False computes the Edit without writing (the caller applies it).

    Returns:
        The Edit (voxels changed, old and new values).
    """
    if prediction.shape != labels.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from {labels.shape}")
    todo = set(range(labels.shape[slice_axis])) - {int(i) for i in reviewed}
    if only is not None:
        todo &= {int(i) for i in only}
    parts: list[tuple[np.ndarray, ...]] = []
    olds, news = [], []
    for lo, hi in slice_runs(todo):
        block = tuple(slice(lo, hi) if a == slice_axis else slice(None) for a in range(3))
        current, wanted = labels[block], prediction[block]
        changed = np.nonzero(current != wanted)
        if not changed[0].size:
            continue
        olds.append(current[changed].copy())
        news.append(wanted[changed].astype(labels.dtype, copy=False))
        if write:
            current[changed] = news[-1]
        offset = [lo if a == slice_axis else 0 for a in range(3)]
        parts.append(tuple(c + o for c, o in zip(changed, offset, strict=True)))
    if not parts:
        empty = np.zeros(0, dtype=np.intp)
        return Edit((empty, empty, empty), labels[:0, 0, 0].copy(), labels[:0, 0, 0].copy())
    index = tuple(np.concatenate([p[a] for p in parts]) for a in range(3))
    return Edit(index, np.concatenate(olds), np.concatenate(news))  # type: ignore[arg-type]


def unreviewed_content(labels: np.ndarray, *, reviewed: Iterable[int], slice_axis: int) -> int:
    """Foreground voxels on unreviewed slices (what a re-prediction would replace)."""
    keep = np.ones(labels.shape[slice_axis], dtype=bool)
    keep[[int(i) for i in reviewed]] = False
    return int(np.count_nonzero(np.compress(keep, labels, axis=slice_axis)))

"""Merging a prediction into the user's labels: reviewed slices are never written.

The merge is recorded as an `Edit` (the voxels it changed, their old and new values)
so that a front end can put it on its undo stack as ONE step and undo restores the
labels exactly as they were, including what the user painted. Also here: what a merge
would replace (`unreviewed_content`, `empty_slices`) and how much a slice's review
would teach the model (`slice_information`).
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

    def without_slices(self, slices: Iterable[int], axis: int) -> Edit:
        """The same Edit less its voxels on ``slices`` along ``axis``."""
        drop = [int(i) for i in slices]
        if not drop or not self.voxels:
            return self
        keep = ~np.isin(self.index[axis], drop)
        if keep.all():
            return self
        index = tuple(a[keep] for a in self.index)
        return Edit(index, self.old[keep], self.new[keep])  # type: ignore[arg-type]

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


def empty_slices(labels: np.ndarray, *, reviewed: Iterable[int], slice_axis: int) -> list[int]:
    """Unreviewed slices without any foreground (what "only empty slices" may write)."""
    others = tuple(a for a in range(labels.ndim) if a != slice_axis)
    filled = np.any(labels, axis=others)
    done = {int(i) for i in reviewed}
    return [int(i) for i in np.flatnonzero(~filled) if int(i) not in done]


#: Uncertainty (softmax entropy / log(classes)) from which a voxel counts as "near the
#: foreground" even where the prediction is background: the runner-up class has about
#: 11 % probability or more (two classes), i.e. the model almost called it foreground.
NEAR_FOREGROUND = 0.5


@dataclass(frozen=True)
class SliceInformation:
    """Per-slice figures of a prediction, one value per index along the slice axis.

    Attributes:
        information: uncertainty summed over the slice's *region*: voxels predicted
            foreground or uncertain (>= `NEAR_FOREGROUND`). Big where there is much
            tissue the model is unsure about, small on near-empty edge slices.
        region: voxels in the region.
        foreground: voxels with a label.
    """

    information: np.ndarray
    region: np.ndarray
    foreground: np.ndarray

    @property
    def mean_uncertainty(self) -> np.ndarray:
        """Mean uncertainty over each slice's region (0 where the region is empty)."""
        return np.divide(self.information, self.region,
                         out=np.zeros_like(self.information), where=self.region > 0)  # fmt: skip


def slice_information(
    labels: np.ndarray, uncertainty: np.ndarray | None, *, slice_axis: int, block: int = 16
) -> SliceInformation:
    """How much reviewing each slice would teach the model.

    Works block by block of ``block`` slices, so no whole-volume temporary is made.

    Args:
        labels: the labels ``(i, j, k)`` (a prediction merged into the user's labels).
        uncertainty: per-voxel uncertainty in [0, 1] on the same grid, or None (then
            only ``foreground`` is filled in; the rest is zero).
        slice_axis: the axis slices are reviewed along.
        block: slices per block.

    Returns:
        A `SliceInformation` (float64 information, int64 counts).
    """
    n = labels.shape[slice_axis]
    others = tuple(a for a in range(labels.ndim) if a != slice_axis)
    info = np.zeros(n, dtype=np.float64)
    region = np.zeros(n, dtype=np.int64)
    foreground = np.zeros(n, dtype=np.int64)
    if uncertainty is not None and uncertainty.shape != labels.shape:
        raise ValueError(f"uncertainty shape {uncertainty.shape} differs from {labels.shape}")
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        index = tuple(slice(lo, hi) if a == slice_axis else slice(None) for a in range(3))
        filled = labels[index] != 0
        foreground[lo:hi] = filled.sum(axis=others)
        if uncertainty is None:
            continue
        unc = uncertainty[index]
        near = filled | (unc >= NEAR_FOREGROUND)
        region[lo:hi] = near.sum(axis=others)
        info[lo:hi] = np.where(near, unc, 0).sum(axis=others, dtype=np.float64)
    return SliceInformation(info, region, foreground)

"""Predictions as the loop merges them: signed by their model version, read as labels.

A prediction is a `Prediction` (of `Loop.predict`), a label `Volume` or an array on the
scan's grid. Merging one never writes a reviewed slice (`merge.merge_unreviewed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from napari_unet.jobs import Job
from napari_unet.loop.merge import Edit, merge_unreviewed


def signed(job: Job[Any], model_hash: str) -> Job[Any]:
    """The prediction job, its result signed with the model version that made it."""
    prediction = yield from job
    if isinstance(getattr(prediction, "info", None), dict):
        prediction.info.setdefault("model", model_hash)
    return prediction


def label_array(prediction: Any) -> np.ndarray:
    """The label array of a `Prediction`, a label `Volume` or an array."""
    labels = getattr(prediction, "labels", prediction)
    return np.asarray(getattr(labels, "array", labels))


def writer_of(prediction: Any) -> str | None:
    """The model version that signed ``prediction`` (see `signed`), else None."""
    info = getattr(prediction, "info", None)
    return info.get("model") if isinstance(info, dict) else None


def merge_edit(
    labels: np.ndarray,
    prediction: Any,
    *,
    reviewed: set[int],
    slice_axis: int,
    only: Iterable[int] | None,
    writer: Callable[[Edit], None] | None,
    planned: Edit | None,
) -> Edit:
    """Merge ``prediction`` into ``labels`` (``(i, j, k)``) on the unreviewed slices.

    Args:
        labels: the loop's labels, written in place unless ``writer`` is given.
        prediction: what to merge (see the module docstring).
        reviewed: the slices reviewed now (native indices along ``slice_axis``).
        slice_axis: the axis of the slices.
        only: merge only these slices.
        writer: applies the Edit itself; None writes it here.
        planned: an Edit computed earlier (`Loop.plan_merge`); slices reviewed since
            are dropped from it.

    Returns:
        The Edit (one undo step), already applied.
    """
    if planned is None:
        edit = merge_unreviewed(labels, label_array(prediction), reviewed=reviewed,
                                slice_axis=slice_axis, only=only,
                                write=writer is None)  # fmt: skip
    else:
        edit = planned.without_slices(reviewed, slice_axis)
        if writer is None:
            edit.redo(labels)
    if writer is not None:
        writer(edit)
    return edit

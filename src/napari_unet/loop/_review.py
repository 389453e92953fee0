"""Review bookkeeping: which slice to review next, and what a fine-tune learns from.

Slices are native indices along the loop's ``slice_axis``; the figures per slice come
from `merge.slice_information`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from napari_unet.errors import InputError
from napari_unet.loop.merge import SliceInformation, slice_information
from napari_unet.loop.steps import TrainingData, split_slices
from napari_unet.workspace import ModelVersion

#: A slice's prediction is "uncertain" when the mean uncertainty (softmax entropy /
#: log(classes), in [0, 1]) over its foreground and the voxels near it is above this.
#: Measured on the CT phantom (sample_data, 3 organs, 2D): an untrained model scores 0.99
#: on every slice; after a 45 s CPU fine-tune on 6 slices, 0.03-0.31, and the only three
#: slices above 0.2 were the worst predicted (mean Dice 0.18-0.32; the rest 0.29-1.0).
#: 0.2 is about the entropy of 97 : 3 between two classes.
UNCERTAIN_SLICE = 0.2

#: Slices with less foreground than this fraction of the median foreground of the
#: slices that have any are "almost empty" (edge slices): reviewed last.
ALMOST_EMPTY = 0.05

#: `Loop.slice_information`'s cache: (uncertainty, labels, labels epoch, the figures).
InformationCache = tuple[Any, Any, int, SliceInformation]


def review_order(
    reviewed: set[int], n_slices: int, information: Callable[[], SliceInformation]
) -> list[int]:
    """The unreviewed slices, the most informative first (the rule: `Loop.review_order`).

    Args:
        reviewed: the reviewed slices.
        n_slices: the number of slices along the slice axis.
        information: returns the figures per slice (of all ``n_slices``); called only
            when a slice is unreviewed.

    Returns:
        The unreviewed slices in review order; empty when all are reviewed.
    """
    unreviewed = np.array(sorted(set(range(n_slices)) - reviewed), dtype=np.int64)
    if unreviewed.size == 0:
        return []
    info = information()
    filled = info.foreground[info.foreground > 0]
    if filled.size:
        almost_empty = info.foreground < ALMOST_EMPTY * float(np.median(filled))
    else:
        almost_empty = np.zeros(n_slices, dtype=bool)
    walls = np.array(sorted(reviewed | {-1, n_slices}), dtype=np.int64)
    gap = np.min(np.abs(unreviewed[:, None] - walls[None, :]), axis=1)
    order = np.lexsort((-gap, -info.information[unreviewed], almost_empty[unreviewed]))
    return [int(i) for i in unreviewed[order]]


def cached_information(
    cached: InformationCache | None,
    uncertainty: np.ndarray | None,
    labels: np.ndarray,
    epoch: int,
    *,
    slice_axis: int,
) -> InformationCache:
    """``cached`` if it was computed for this uncertainty, labels array and labels epoch;
    else the figures computed anew (`merge.slice_information`) with their key."""
    if (
        cached is not None
        and cached[0] is uncertainty
        and cached[1] is labels
        and cached[2] == epoch
    ):
        return cached
    info = slice_information(labels, uncertainty, slice_axis=slice_axis)
    return (uncertainty, labels, epoch, info)


def slices_to_predict(reviewed: set[int], n_slices: int, only_unreviewed: bool) -> list[int] | None:
    """The slices a prediction runs on: the unreviewed ones, or None for every slice."""
    if only_unreviewed and reviewed:
        return sorted(set(range(n_slices)) - reviewed)
    return None


def training_data(
    reviewed: set[int],
    *,
    previous: Iterable[int] | None,
    parent: ModelVersion | None,
    all_voxels: bool,
    ignore_label: int | None,
) -> TrainingData:
    """What a fine-tune learns from (the rule: `Loop.finetune`).

    Args:
        reviewed: the reviewed slices.
        previous: slices reviewed for earlier versions; None: the parent's
            ``trained_slices``.
        parent: the current version (the fine-tune's parent), or None.
        all_voxels: every labelled voxel counts, not only reviewed slices.
        ignore_label: label value meaning "not labelled" (then every voxel counts).

    Raises:
        InputError: only reviewed slices count and there are none.
    """
    if all_voxels or ignore_label is not None:
        return TrainingData(None, [], ignore_label)
    if not reviewed:
        raise InputError("no reviewed slices yet: correct or accept a slice first")
    if previous is None:
        previous = parent.metrics.get("trained_slices", []) if parent else []
    return split_slices(sorted(reviewed), sorted(previous))

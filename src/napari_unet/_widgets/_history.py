"""The labels layer's undo history, followed by the review.

Each undo item of the labels layer remembers what it did besides the voxels (the slices
a stroke newly made reviewed, the labels' writer before and after a merge), so Ctrl-Z of
the stroke that made a slice reviewed un-reviews it (unless the user accepted it
explicitly), redo reviews it again, and undoing a merge leaves the reviewed slices as
they were. `LoopSession` records the items (`ReviewHistory.remember`) and replays them
when `track_undo` reports that napari moved one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari_unet.loop import Loop


@dataclass
class _HistoryStep:
    """What one undo item of the labels layer did besides changing voxels.

    Attributes:
        atoms: the item's history atoms (held, so that their ids identify the item).
        reviewed: native slices the item newly made reviewed (a stroke).
        writer: the loop's `labels_writer` before and after (a merge).
    """

    atoms: list
    reviewed: frozenset[int] = frozenset()
    writer: tuple[str | None, str | None] | None = None


def _history_key(item) -> frozenset[int]:
    """An undo item's identity: napari moves the same atoms between its undo and redo
    queues (in reversed, new lists)."""
    return frozenset(id(atom) for atom in item)


class ReviewHistory:
    """What the undo items of one labels layer did to the review.

    Attributes:
        accepted: native slices accepted explicitly: undoing the stroke that made one
            reviewed keeps it reviewed.
    """

    def __init__(self) -> None:
        self._steps: dict[frozenset[int], _HistoryStep] = {}
        self.accepted: set[int] = set()

    def remember(self, layer, item, **fields) -> None:
        """Keep what undo item ``item`` of ``layer`` did (forgetting items napari has
        dropped); ``fields`` are `_HistoryStep`'s ``reviewed`` or ``writer``."""
        live = {_history_key(i) for i in (*layer._undo_history, *layer._redo_history)}
        self._steps = {key: step for key, step in self._steps.items() if key in live}
        self._steps[_history_key(item)] = _HistoryStep(list(item), **fields)

    def replay(self, loop: Loop, item, *, undone: bool) -> None:
        """Undo (``undone``) or redo on ``loop`` what ``item`` did to the review."""
        step = self._steps.get(_history_key(item))
        if step is None:
            return
        if step.writer is not None:
            loop.labels_writer = step.writer[0 if undone else 1]
        if step.reviewed and undone:
            loop.unmark_reviewed(step.reviewed - self.accepted)
        elif step.reviewed:
            loop.mark_reviewed(step.reviewed)


def track_undo(layer, moved: Callable[[Any, Any, bool], None]) -> None:
    """Call ``moved(layer, item, undone)`` after each undo or redo of ``layer``.

    napari 0.9 emits no event on undo or redo, so the layer's own ``undo`` and ``redo``
    (which its Ctrl-Z / Shift-Ctrl-Z key bindings call) are wrapped; ``item`` is the
    undo item that moved (recognised by its atoms, `_history_key`). A layer is wrapped
    once: later calls do nothing.
    """
    if getattr(layer, "_napari_unet_tracked", False):
        return
    layer._napari_unet_tracked = True

    def tracked(method, queue: str, undone: bool):
        def run() -> None:
            history = getattr(layer, queue)
            item = history[-1] if history else None
            method(layer)
            if item is not None:
                moved(layer, item, undone)

        return run

    layer.undo = tracked(type(layer).undo, "_undo_history", True)
    layer.redo = tracked(type(layer).redo, "_redo_history", False)


def touched_slices(atom: Any, axis: int) -> set[int]:
    """Slice indices along ``axis`` changed by one napari paint-history atom.

    napari records either ``(indices, old_values, new_values)`` (fancy indices) or, for
    brush strokes and fills, a masked atom with a bounding box ``slice_key`` and a
    ``mask`` of the changed voxels inside it (None: all of them).
    """
    slice_key = getattr(atom, "slice_key", None)
    if slice_key is not None:
        box = slice_key[axis]
        start = box.start or 0
        mask = getattr(atom, "mask", None)
        if mask is None:
            return set(range(start, box.stop))
        others = tuple(a for a in range(mask.ndim) if a != axis)
        return {start + int(i) for i in np.flatnonzero(mask.any(axis=others))}
    indices = atom[0]
    if len(indices) > axis and len(indices[axis]):
        return {int(i) for i in np.unique(indices[axis])}
    return set()

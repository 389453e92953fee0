"""`write_changes(layer, index, values)`: napari's ``Labels.data_setitem`` for an edit
whose every voxel changes, at a fraction of its cost on the GUI thread.

A merged prediction can change millions of voxels at once (8.7 M on the MR sample).
``data_setitem`` compares the new values with the old ones, filters the index by that,
copies the old values, writes, then maps every written voxel onto the displayed slice:
six passes of fancy indexing over millions of voxels, ~300–600 ms with the window frozen
(benchmarks/bench_gui_stall.py). A planned merge (`Loop.plan_merge`, computed in the
worker) already holds only changed voxels, so here the old values are read once (undo
restores them), the new ones written once, and the displayed slice redrawn. The undo
step is the one ``data_setitem`` records (``(index, old, new)``, one item, a ``paint``
event), so undo and redo behave exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DisplayEdit:
    """An Edit's voxels in a layer's array order, computed off the GUI thread.

    Attributes:
        source: the Edit (native order) it was made from; it applies to that Edit only.
        index: the display fancy index (what napari's undo history records).
        flat: the same voxels as a C-order flat index into an array of ``shape``.
        shape: the display shape.
    """

    source: Any
    index: tuple[np.ndarray, ...]
    flat: np.ndarray
    shape: tuple[int, ...]


def display_edit(edit: Any, geometry: Any) -> DisplayEdit:
    """`DisplayEdit` of a native ``edit`` for a layer shown with ``geometry`` (run in a
    worker: for every voxel of the MR sample it takes ~0.1 s)."""
    index = geometry.to_display_indices(edit.index)
    shape = tuple(geometry.display_shape)
    return DisplayEdit(edit, index, np.ravel_multi_index(index, shape), shape)


def write_changes(
    layer: Any, index: tuple[np.ndarray, ...], values: np.ndarray, *, flat: np.ndarray | None = None
) -> None:
    """Write ``values`` at the fancy ``index`` of a Labels layer as one undo step.

    ``flat``: the same voxels as a C-order flat index (`display_edit`), used when the
    layer's array is C-contiguous: one 1-D index instead of one per axis. For all 8.7 M
    voxels of the MR sample the read and the write took 81–91 and 96–106 ms with the
    per-axis index (in the panel, bench_gui_stall.py).

    Falls back to ``layer.data_setitem`` where the layer's data is not a NumPy array or
    napari lacks the history call this relies on.
    """
    data = layer.data
    if not isinstance(data, np.ndarray) or not callable(getattr(layer, "_save_history", None)):
        layer.data_setitem(index, values)
        return
    values = np.asarray(values, dtype=data.dtype)
    view = data.reshape(-1) if flat is not None and data.flags.c_contiguous else None
    old = data[index] if view is None else view[flat]  # a copy: fancy indexing
    layer._save_history((index, old, values))
    if view is None:
        data[index] = values
    else:
        view[flat] = values
    layer.refresh()

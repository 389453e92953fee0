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

from typing import Any

import numpy as np


def write_changes(layer: Any, index: tuple[np.ndarray, ...], values: np.ndarray) -> None:
    """Write ``values`` at the fancy ``index`` of a Labels layer as one undo step.

    Falls back to ``layer.data_setitem`` where the layer's data is not a NumPy array or
    napari lacks the history call this relies on.
    """
    data = layer.data
    if not isinstance(data, np.ndarray) or not callable(getattr(layer, "_save_history", None)):
        layer.data_setitem(index, values)
        return
    old = data[index]  # a copy: fancy indexing
    values = np.asarray(values, dtype=data.dtype)
    layer._save_history((index, old, values))
    data[index] = values
    layer.refresh()

"""The state behind the napari-unet panel: one scan, its labels layer, the workspace.

Plain glue between napari layers and the core: it converts the labels layer (display
orientation) to the scan's native grid and back, records reviewed slices from paint
events, merges predictions without touching reviewed slices, and autosaves.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import napari
import numpy as np
from psygnal import Signal

from napari_unet._layers import labels_layer_data, volume_from_layer
from napari_unet.errors import InputError, NapariUnetError
from napari_unet.io.display import METADATA_KEY, DisplayGeometry
from napari_unet.workspace import Recovery, Workspace


class LoopSession:
    """Shared state of the panel's sections.

    Signals:
        changed: the image, labels layer, model or reviewed slices changed.
        reviewed_changed: the set of reviewed slices changed.
    """

    changed = Signal()
    reviewed_changed = Signal()

    def __init__(self, viewer: napari.Viewer, *, recovery_root: str | None = None) -> None:
        self.viewer = viewer
        self.image_layer = None
        self.labels_layer = None
        self.workspace: Workspace | None = None
        self.geometry: DisplayGeometry | None = None
        self.model = None  # a models.files.LoadedModel
        self.last_uncertainty: np.ndarray | None = None  # native (i, j, k), float32
        self.recovery: Recovery | None = None
        self.recovery_root = recovery_root
        self.dirty = False
        self.autosave_error: Exception | None = None
        self._autosave_thread: threading.Thread | None = None

    # --- image and labels -------------------------------------------------------------
    def attach_image(self, layer) -> None:
        """Make ``layer`` (an image opened by the plugin) the scan of the loop."""
        if layer is self.image_layer:
            return
        volume = volume_from_layer(layer.data, layer.metadata, what=f"image {layer.name!r}")
        volume.source = layer.metadata[METADATA_KEY].get("source")
        self.image_layer = layer
        self.geometry = DisplayGeometry.from_metadata(layer.metadata[METADATA_KEY])
        self.workspace = Workspace(volume)
        self.labels_layer = None
        self.last_uncertainty = None
        self.recovery = Recovery(volume, root=self.recovery_root)
        self.changed.emit()

    def find_image(self):
        """The selected plugin image, else the last one in the viewer."""
        active = self.viewer.layers.selection.active
        candidates = [active] if active is not None else []
        candidates += list(reversed(self.viewer.layers))
        for layer in candidates:
            if isinstance(layer, napari.layers.Image) and METADATA_KEY in (layer.metadata or {}):
                return layer
        return None

    def require_image(self):
        if self.image_layer is None or self.image_layer not in self.viewer.layers:
            layer = self.find_image()
            if layer is None:
                raise InputError("open a scan first (File > Open, or the Scan dock)")
            self.attach_image(layer)
        return self.image_layer

    def ensure_labels_layer(self, label_names=None, label_colors=None):
        """The labels layer of the loop, created on the scan's grid if needed."""
        self.require_image()
        if self.labels_layer is not None and self.labels_layer in self.viewer.layers:
            return self.labels_layer
        ws = self.workspace
        ws.label_names = list(label_names or ws.label_names)
        ws.label_colors = list(label_colors or ws.label_colors)
        data, kwargs, _ = labels_layer_data(
            ws.image.with_array(ws.labels),
            f"{self.image_layer.name} segmentation",
            ws.label_names,
            ws.label_colors,
        )
        # its own C-ordered array: never a view of the workspace's (or another layer's)
        self.labels_layer = self.viewer.add_labels(np.ascontiguousarray(data).copy(), **kwargs)
        self.labels_layer.events.paint.connect(self._on_paint)
        self.changed.emit()
        return self.labels_layer

    def use_labels_layer(self, layer) -> None:
        """Adopt an existing labels layer on the scan's grid (e.g. reopened from disk)."""
        image = self.require_image()
        if tuple(layer.data.shape) != self.geometry.display_shape:
            raise InputError(
                f"labels layer {layer.name!r} is on another grid: shape "
                f"{tuple(layer.data.shape)}, the scan {image.name!r} has "
                f"{self.geometry.display_shape}"
            )
        same_place = all(
            np.allclose(getattr(layer, a), getattr(image, a), atol=1e-4)
            for a in ("scale", "translate")
        ) and np.allclose(layer.affine.affine_matrix, image.affine.affine_matrix, atol=1e-6)
        if not same_place:
            raise InputError(
                f"labels layer {layer.name!r} is on another grid: its voxel size, position "
                f"or orientation differs from the scan {image.name!r}"
            )
        self.labels_layer = layer
        layer.events.paint.connect(self._on_paint)
        self.changed.emit()

    def labels_native(self) -> np.ndarray:
        """The labels layer's data on the scan's native grid (a view)."""
        return self.geometry.to_native(np.asarray(self.labels_layer.data))

    # --- reviewed slices ----------------------------------------------------------------
    @property
    def review_display_axis(self) -> int:
        return self.geometry.display_axis(self.workspace.slice_axis)

    def _on_paint(self, event) -> None:
        axis = self.review_display_axis
        touched: set[int] = set()
        for atom in event.value:
            touched |= touched_slices(atom, axis)
        if touched:
            self.mark_reviewed_display(sorted(touched))

    def mark_reviewed_display(self, display_indices) -> None:
        native = self.geometry.to_native_index(self.workspace.slice_axis, display_indices)
        self.workspace.mark_reviewed(np.atleast_1d(native))
        self.dirty = True
        self.reviewed_changed.emit()

    def current_display_slice(self) -> int:
        return int(self.viewer.dims.current_step[self.review_display_axis])

    def accept_current_slice(self) -> int:
        """Mark the slice on screen as reviewed (correct as it is). Returns its index."""
        self.require_image()
        index = self.current_display_slice()
        self.mark_reviewed_display([index])
        return index

    def reviewed_display(self) -> list[int]:
        ws = self.workspace
        if ws is None:
            return []
        return sorted(int(self.geometry.to_display_index(ws.slice_axis, i)) for i in ws.reviewed)

    def go_to_display_slice(self, index: int) -> None:
        self.viewer.dims.set_current_step(self.review_display_axis, int(index))

    def next_slice_to_review(self) -> int | None:
        """Display index of the most uncertain unreviewed slice (or the one farthest
        from every reviewed slice when no uncertainty is known)."""
        ws = self.workspace
        n = ws.n_slices
        unreviewed = np.array(sorted(set(range(n)) - ws.reviewed))
        if unreviewed.size == 0:
            return None
        if self.last_uncertainty is not None:
            axes = tuple(a for a in range(3) if a != ws.slice_axis)
            per_slice = self.last_uncertainty.mean(axis=axes)
            best = int(unreviewed[np.argmax(per_slice[unreviewed])])
        elif ws.reviewed:
            reviewed = np.array(sorted(ws.reviewed))
            distance = np.min(np.abs(unreviewed[:, None] - reviewed[None, :]), axis=1)
            best = int(unreviewed[np.argmax(distance)])
        else:
            best = int(unreviewed[len(unreviewed) // 2])
        return int(self.geometry.to_display_index(ws.slice_axis, best))

    # --- predictions ----------------------------------------------------------------------
    def merge_prediction(self, display: np.ndarray) -> int:
        """Write a prediction into the labels layer on unreviewed slices only.

        The reviewed set is read now (not when the prediction started), so slices the
        user painted while it ran are kept. Runs of unreviewed slices are copied into the
        layer's array in place (on the GUI thread, so no whole-volume temporary: a
        ``np.where`` over the volume plus a new layer array took several times longer).
        ``display`` is the prediction in the layer's (display) order, reoriented by the
        caller off the GUI thread. Returns the number of voxels changed.
        """
        layer = self.ensure_labels_layer()
        data = layer.data
        if not (isinstance(data, np.ndarray) and data.flags.writeable):
            data = np.array(data)
        axis = self.review_display_axis
        todo = sorted(set(range(data.shape[axis])) - set(self.reviewed_display()))
        changed = 0
        for lo, hi in _runs(todo):
            block = tuple(slice(lo, hi) if a == axis else slice(None) for a in range(data.ndim))
            changed += int(np.count_nonzero(data[block] != display[block]))
            np.copyto(data[block], display[block], casting="unsafe")
        if data is layer.data:
            layer.refresh()
        else:
            layer.data = data
        self.dirty = True
        return changed

    # --- autosave -----------------------------------------------------------------------
    def autosave(self, *, wait: bool = False) -> bool:
        """Write the recovery file if anything changed since the last one.

        The labels are copied here (a memcpy; painting may go on) and written by a
        background thread: on the GUI thread the write froze the window for up to
        0.7 s while a fine-tune kept both cores busy (benchmarks/bench_gui_stall.py).
        Returns whether a write was started; a failure is kept in `autosave_error`
        (and the labels stay dirty). ``wait`` joins the write.
        """
        busy = self._autosave_thread is not None and self._autosave_thread.is_alive()
        if busy or not self.dirty or self.recovery is None or self.labels_layer is None:
            return False
        snapshot = np.array(self.labels_layer.data)
        geometry, recovery = self.geometry, self.recovery
        reviewed, axis = set(self.workspace.reviewed), self.workspace.slice_axis
        self.dirty = False

        def write() -> None:
            try:
                native = np.ascontiguousarray(geometry.to_native(snapshot))
                recovery.write(native, reviewed, axis)
            except (OSError, NapariUnetError) as e:
                self.autosave_error = e
                self.dirty = True

        self._autosave_thread = threading.Thread(target=write, name="napari-unet autosave")
        self._autosave_thread.start()
        if wait:
            self.wait_for_autosave()
        return True

    def wait_for_autosave(self) -> None:
        if self._autosave_thread is not None:
            self._autosave_thread.join()

    def pending_recovery(self) -> Any:
        return None if self.recovery is None else self.recovery.load()

    def restore_recovery(self) -> bool:
        found = self.pending_recovery()
        if found is None:
            return False
        labels, reviewed, axis = found
        if tuple(labels.shape) != self.workspace.image.shape:
            return False
        self.workspace.slice_axis = axis
        layer = self.ensure_labels_layer()
        layer.data = self.geometry.to_display(labels).copy()
        self.workspace.reviewed = set(reviewed)
        self.reviewed_changed.emit()
        return True

    def models_folder(self) -> Path:
        """Where new model versions are written: the workspace's, else a cache folder."""
        ws = self.workspace
        if ws is not None and ws.folder is not None:
            return ws.folder / "models"
        root = self.recovery.folder if self.recovery is not None else Path.cwd()
        return root / "models"


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted indices → ``[(start, stop), ...]`` of consecutive runs."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


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

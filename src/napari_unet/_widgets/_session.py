"""The panel's view of the `Loop`: the scan layer, the labels layer, autosave.

The loop (`napari_unet.loop.Loop`) holds the state; this adapter only maps it to napari.
The labels layer's data is ONE C-ordered, display-ordered buffer and the loop's labels
array is a native-ordered *view* of it (`DisplayGeometry.to_native`), so what the user
paints is what the loop trains on, with no copy to keep in step. Paint events become
reviewed slices; a merged prediction goes onto napari's undo history as one step.
Undo and redo take the review along (`_history`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import napari
import numpy as np
from psygnal import Signal

from napari_unet._layers import labels_layer_data, volume_from_layer
from napari_unet._widgets._history import ReviewHistory, touched_slices, track_undo
from napari_unet._widgets._labels_write import DisplayEdit, display_edit, write_changes
from napari_unet.errors import InputError, NapariUnetError
from napari_unet.io.display import METADATA_KEY, DisplayGeometry
from napari_unet.loop import Edit, Loop
from napari_unet.loop.core import UNCERTAIN_SLICE
from napari_unet.workspace import Recovery, Workspace


class LoopSession:
    """Shared state of the panel's sections.

    Signals:
        changed: the image, labels layer, model or reviewed slices changed.
        reviewed_changed: the set of reviewed slices changed.
        busy_changed(bool): the loop started or ended a job (emitted in the thread
            where that happened: a job ends in its worker thread).
    """

    changed = Signal()
    reviewed_changed = Signal()
    busy_changed = Signal(bool)

    def __init__(self, viewer: napari.Viewer, *, recovery_root: str | None = None) -> None:
        # napari hands plugin widgets a public-only proxy of the viewer; the session needs
        # the layers themselves (the labels layer's undo history), so it keeps the viewer
        self.viewer = getattr(viewer, "__wrapped__", viewer)
        self.image_layer = None
        self.labels_layer = None
        self.loop: Loop | None = None
        self.geometry: DisplayGeometry | None = None
        self.device = "auto"
        self._buffer: np.ndarray | None = None  # display-ordered labels; loop.labels views it
        self._merging = False
        self._merge_item: list | None = None  # the undo item of the merge being written
        self._history = ReviewHistory()  # what undo does to the review; accepted slices
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
        self._buffer = np.zeros(self.geometry.display_shape, dtype=np.uint8)
        self.set_loop(Loop(volume, self.geometry.to_native(self._buffer), device=self.device))
        self.labels_layer = None
        self.recovery = Recovery(volume, root=self.recovery_root)
        self.changed.emit()

    def set_loop(self, loop: Loop) -> None:
        """Drive ``loop`` (its labels must view `_buffer`); relay its events."""
        self.loop = loop
        self._history = ReviewHistory()
        loop.reviewed_changed.connect(self.reviewed_changed.emit)
        loop.model_changed.connect(self.changed.emit)
        loop.busy_changed.connect(self.busy_changed.emit)

    @property
    def workspace(self) -> Workspace | None:
        return self.loop.workspace if self.loop is not None else None

    @property
    def model(self):
        """The live model (`LoadedModel`) of the loop, None before one is made or opened."""
        return self.loop.model if self.loop is not None else None

    @property
    def last_uncertainty(self) -> np.ndarray | None:
        return self.loop.last_uncertainty if self.loop is not None else None

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
        _, kwargs, _ = labels_layer_data(
            ws.image.with_array(ws.labels),
            f"{self.image_layer.name} segmentation",
            ws.label_names,
            ws.label_colors,
        )
        # the layer shows the loop's own buffer: painting writes into the loop's labels
        self.labels_layer = self.viewer.add_labels(self._buffer, **kwargs)
        self.labels_layer.events.paint.connect(self._on_paint)
        track_undo(self.labels_layer, self._undo_moved)
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
        data = layer.data
        if not (isinstance(data, np.ndarray) and data.flags.c_contiguous and data.flags.writeable):
            data = np.ascontiguousarray(np.array(data))
        self.loop.use_labels(self.geometry.to_native(data))
        if data is not layer.data:
            layer.data = data  # once, on adoption
        self._buffer = data
        self.labels_layer = layer
        self._history = ReviewHistory()
        layer.events.paint.connect(self._on_paint)
        track_undo(layer, self._undo_moved)
        self.changed.emit()

    def start_new_labels(self) -> None:
        """The next prediction goes into a new, empty labels layer (nothing reviewed)."""
        self.require_image()
        buffer = np.zeros(self.geometry.display_shape, dtype=np.uint8)
        self.loop.use_labels(self.geometry.to_native(buffer))
        self._buffer, self.labels_layer = buffer, None
        self._history = ReviewHistory()
        self.changed.emit()

    def labels_native(self) -> np.ndarray:
        """The loop's labels on the scan's native grid (a view of the layer's data)."""
        return self.loop.labels

    # --- reviewed slices ----------------------------------------------------------------
    @property
    def review_display_axis(self) -> int:
        return self.geometry.display_axis(self.workspace.slice_axis)

    def _on_paint(self, event) -> None:
        if event.source is not self.labels_layer:  # a layer the loop no longer uses
            return
        if self._merging:  # our own merge, recorded for undo: not the user's review
            self._merge_item = event.value
            return
        axis = self.review_display_axis
        touched: set[int] = set()
        for atom in event.value:
            touched |= touched_slices(atom, axis)
        if touched:
            new = self.mark_reviewed_display(sorted(touched))
            if new:
                self._history.remember(self.labels_layer, event.value, reviewed=frozenset(new))

    def mark_reviewed_display(self, display_indices) -> set[int]:
        """Mark slices (display indices) reviewed; returns the native ones that were new."""
        self.dirty = True
        return self.loop.mark_reviewed(self._native(display_indices))

    def unreview_display(self, display_indices) -> None:
        """The slices (display indices) are not reviewed any more (not even accepted)."""
        native = set(self._native(display_indices))
        self._history.accepted -= native
        self.dirty = True
        self.loop.unmark_reviewed(native)

    def _native(self, display_indices) -> list[int]:
        native = self.geometry.to_native_index(self.workspace.slice_axis, display_indices)
        return [int(i) for i in np.atleast_1d(native)]

    def current_display_slice(self) -> int:
        return int(self.viewer.dims.current_step[self.review_display_axis])

    def accept_current_slice(self) -> int:
        """Mark the slice on screen as reviewed (correct as it is). Returns its index."""
        self.require_image()
        index = self.current_display_slice()
        self.accept_display_slice(index)
        return index

    def accept_display_slice(self, index: int) -> None:
        """Accept a slice (display index) as correct: reviewed, and kept so by undo."""
        self._history.accepted.update(self._native([index]))
        self.mark_reviewed_display([index])

    def accept_doubts(self, index: int) -> list[str]:
        """Why accepting slice ``index`` (display) as it is might teach the model wrong
        labels; empty when nothing speaks against it (e.g. the user edited it)."""
        loop = self.loop
        (native,) = self._native([index])
        if native in loop.reviewed:
            return []
        doubts = []
        if self.labels_layer is None or self.labels_layer not in self.viewer.layers:
            doubts.append("there is no segmentation yet: the slice would count as background")
        elif loop.model is None:
            doubts.append("no model has predicted it yet")
        elif not loop.trained:
            doubts.append("the model is untrained (not fine-tuned yet): its prediction is a guess")
        uncertainty = loop.slice_uncertainty(native)
        if uncertainty is not None and uncertainty > UNCERTAIN_SLICE:
            doubts.append(
                f"the last prediction is uncertain on it (mean uncertainty {uncertainty:.2f} "
                f"over its foreground, above {UNCERTAIN_SLICE})"
            )
        return doubts

    # --- undo and redo ------------------------------------------------------------------
    def _undo_moved(self, layer, item, undone: bool) -> None:
        """Undo/redo of ``layer`` (`track_undo`) also undo/redo what ``item`` did to the
        review, when ``layer`` is still the loop's."""
        if layer is not self.labels_layer:
            return
        loop = self.loop
        loop.labels_edited()  # the labels changed behind the loop's back
        self.dirty = True
        self._history.replay(loop, item, undone=undone)

    def reviewed_display(self) -> list[int]:
        ws = self.workspace
        if ws is None:
            return []
        return sorted(int(self.geometry.to_display_index(ws.slice_axis, i)) for i in ws.reviewed)

    def go_to_display_slice(self, index: int) -> None:
        self.viewer.dims.set_current_step(self.review_display_axis, int(index))

    def next_slice_to_review(self) -> int | None:
        """Display index of the loop's next slice to review (None: all reviewed)."""
        native = self.loop.next_to_review()
        if native is None:
            return None
        return int(self.geometry.to_display_index(self.workspace.slice_axis, native))

    # --- predictions ----------------------------------------------------------------------
    def display_edit(self, planned: Edit) -> DisplayEdit:
        """`planned` in the labels layer's order (for `merge_prediction`; safe in a
        worker thread: it only reads the geometry)."""
        return display_edit(planned, self.geometry)

    def merge_prediction(self, prediction, *, only=None, planned=None, shown=None) -> int:
        """Merge a `Prediction` into the labels layer as ONE undo step; returns voxels changed.

        The loop decides what to write (unreviewed slices only, the reviewed set read
        now, so slices painted while it ran are kept; ``only``: these native slices
        at most); `write_changes` writes it and records the old values as
        ``data_setitem`` does, so Ctrl-Z restores the labels exactly as they were before the merge,
        including what the user painted, and the loop's `labels_writer` with them.
        ``shown``: `display_edit(planned)` from the worker, used when nothing was dropped
        from ``planned`` since (no slice reviewed meanwhile).
        """
        layer = self.ensure_labels_layer()
        writer_before, self._merge_item = self.loop.labels_writer, None

        def write(edit: Edit) -> None:
            if not edit.voxels:
                return
            ready = shown is not None and shown.source is edit  # nothing dropped since
            if ready and tuple(layer.data.shape) == shown.shape:
                index, flat = shown.index, shown.flat
            else:
                index, flat = self.geometry.to_display_indices(edit.index), None
            self._merging = True
            try:
                write_changes(layer, index, edit.new, flat=flat)
            finally:
                self._merging = False

        edit = self.loop.merge(prediction, only=only, writer=write, planned=planned)
        if self._merge_item is not None:
            writer = (writer_before, self.loop.labels_writer)
            self._history.remember(self.labels_layer, self._merge_item, writer=writer)
        self.dirty = True
        return edit.voxels

    def has_labels_layer(self) -> bool:
        return self.labels_layer is not None and self.labels_layer in self.viewer.layers

    def control_state(self, *, running: bool = False) -> dict[str, bool]:
        """Which of the panel's actions make sense now (the panel enables its controls
        from this, in one place).

        Args:
            running: a section's job has not finished yet (its result may not be
                applied yet although the loop is no longer busy).

        Returns:
            ``action → enabled`` for: new_model (and open), run, labels_choice,
            accept, next, finetune, rollback (a version must also be selected),
            save_labels, save_model, save_workspace, open_workspace. The loop's
            mutating actions are off while a job runs; accepting and painting are not
            (a merge reads the reviewed slices when it writes).
        """
        loop = self.loop
        scan = (
            loop is not None
            and self.image_layer is not None
            and self.image_layer in self.viewer.layers
        )
        labels = scan and self.has_labels_layer()
        model = scan and loop.model is not None
        idle = not running and not (loop is not None and loop.busy)
        return {
            "new_model": scan and idle,
            "run": model and idle,
            "labels_choice": scan and idle,
            "accept": labels,
            "next": labels,
            "finetune": model and idle and bool(loop.reviewed),
            "rollback": scan and idle and len(loop.versions) >= 2,
            "save_labels": labels,
            "save_model": model,
            "save_workspace": model or labels,
            "open_workspace": idle,
        }

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
        np.copyto(self.loop.labels, labels, casting="unsafe")
        layer.refresh()
        self.loop.mark_reviewed(sorted(reviewed))
        return True

    def models_folder(self) -> Path:
        """Where new model versions are written (the loop's choice)."""
        return self.loop.models_folder

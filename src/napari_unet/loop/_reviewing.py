"""`ReviewMixin`: the `Loop`'s review methods (reviewed slices, what to review next,
what a merge would replace), kept apart from its models, jobs and files.

`Loop` is the only class that uses it; the mixin reads the loop's ``workspace``,
``labels``, ``slice_axis``, ``last_uncertainty`` and ``labels_writer`` and emits its
signals. The rules themselves live in `_review`, `_versions` and `merge`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

import napari_unet.loop._review as _review
import napari_unet.loop._versions as _versions
from napari_unet.loop.merge import SliceInformation, unreviewed_content
from napari_unet.loop.merge import empty_slices as _empty_slices

if TYPE_CHECKING:
    from psygnal import SignalInstance

    from napari_unet.workspace import Workspace


class ReviewMixin:
    """`Loop`'s review methods (see `Loop`; their state is the loop's)."""

    _information: _review.InformationCache | None = None

    if TYPE_CHECKING:  # the loop's state and signals that these methods use
        workspace: Workspace
        last_uncertainty: np.ndarray | None
        labels_writer: str | None
        _labels_epoch: int
        labels_changed: SignalInstance
        reviewed_changed: SignalInstance

        @property
        def labels(self) -> np.ndarray: ...

        @property
        def slice_axis(self) -> int: ...

    def mark_reviewed(self, slices: Iterable[int]) -> set[int]:
        """Mark slices (native indices along `slice_axis`) as reviewed; returns the new ones."""
        new = self.workspace.mark_reviewed(list(slices))
        if new:
            self.reviewed_changed.emit()
        return new

    def unmark_reviewed(self, slices: Iterable[int]) -> None:
        before = set(self.workspace.reviewed)
        self.workspace.unmark_reviewed(list(slices))
        if self.workspace.reviewed != before:
            self.reviewed_changed.emit()

    def accept(self, index: int) -> None:
        """The slice is correct as it is: it becomes reviewed."""
        self.mark_reviewed([index])

    def next_to_review(self) -> int | None:
        """The unreviewed slice worth reviewing most (see `review_order`); None when all
        are reviewed."""
        order = self.review_order()
        return order[0] if order else None

    def review_order(self) -> list[int]:
        """The unreviewed slices (native indices), the most informative first.

        With the last prediction's uncertainty, slices rank by their information: the
        uncertainty summed over the voxels predicted foreground or near it
        (`merge.slice_information`), so much tissue of medium uncertainty comes before
        a few very uncertain voxels. Slices with almost no foreground (`ALMOST_EMPTY`
        of the median foreground; edge slices) come last. Ties, and no uncertainty:
        the middle of the widest run of unreviewed slices first (the scan's ends count
        as reviewed), which spreads the reviews out and leaves the edges for last.
        """
        ws = self.workspace
        return _review.review_order(ws.reviewed, ws.n_slices, self.slice_information)

    def slice_information(self) -> SliceInformation:
        """Per-slice information, uncertainty and foreground of the labels and the last
        prediction's uncertainty (`merge.slice_information`).

        Kept until a merge, `use_labels`, `labels_edited` or a new uncertainty; painting
        (which only changes slices it makes reviewed) does not recompute it.
        """
        self._information = _review.cached_information(
            self._information, self.last_uncertainty, self.labels, self._labels_epoch,
            slice_axis=self.slice_axis,
        )  # fmt: skip
        return self._information[3]

    def slice_uncertainty(self, index: int) -> float | None:
        """Mean uncertainty of the last prediction over a slice's foreground and the
        voxels near it (compare with `UNCERTAIN_SLICE`); None without an uncertainty."""
        if self.last_uncertainty is None:
            return None
        return float(self.slice_information().mean_uncertainty[int(index)])

    def labels_edited(self) -> None:
        """The labels were changed in place from outside (an undo in the viewer): figures
        derived from them are recomputed; `labels_changed(None)` is emitted."""
        self._labels_epoch += 1
        self.labels_changed.emit(None)

    def foreign_content(self) -> int:
        """Foreground voxels on unreviewed slices that the live model's line did not write.

        Content is the model's own when the last merge over every unreviewed slice came
        from the current version, an ancestor or a descendant of it (a fine-tune's
        re-prediction, a roll back). Anything else (an adopted segmentation, labels
        from a file or an earlier session, another model's prediction) is foreign: a
        merge would replace it, so a front end asks first. Returns its voxel count.
        """
        ws = self.workspace
        if _versions.same_line(ws.models, self.labels_writer, ws.current):
            return 0
        return unreviewed_content(self.labels, reviewed=self.workspace.reviewed,
                                  slice_axis=self.slice_axis)  # fmt: skip

    def empty_slices(self) -> list[int]:
        """Unreviewed slices without foreground (for ``merge(..., only=...)``)."""
        return _empty_slices(self.labels, reviewed=self.workspace.reviewed,
                             slice_axis=self.slice_axis)  # fmt: skip

"""*Open labels…*: a label file as a Labels layer on the open scan, for the panel to call.

`open_labels` opens a label NIfTI/NRRD, a Slicer ``.seg.nrrd``, a DICOM SEG or RTSTRUCT
through the plugin's "labels" reader (`napari_unet._reader.read_labels`): names and
colours from the file, placed exactly on the open scan's grid, refused with a
notification when it is on another grid. Given the panel's `LoopSession`, the new layer
also becomes the loop's labels (the Segment step's labels layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LABELS_READER = "napari-unet.get_labels_reader"
FILE_FILTER = (
    "Labels (*.nii.gz *.nii *.seg.nrrd *.nrrd *.dcm);;NIfTI (*.nii.gz *.nii);;"
    "3D Slicer segmentation (*.seg.nrrd);;DICOM SEG or RTSTRUCT (*.dcm);;All files (*)"
)


def open_labels(viewer: Any, path: str | Path, *, session: Any = None) -> Any | None:
    """Open ``path`` as labels in ``viewer``; returns the Labels layer, or None when it
    was refused (the reason is shown as a notification).

    Args:
        viewer: the napari viewer.
        path: the label file.
        session: the panel's `LoopSession`; when given, the loop adopts the new layer
            (an `InputError` from it, e.g. another grid, propagates).
    """
    from napari_unet._reader import asking_for_labels

    with asking_for_labels():
        layers = viewer.open(str(path), plugin=LABELS_READER)
    layer = next((la for la in layers if type(la).__name__ == "Labels"), None)
    if layer is not None and session is not None:
        session.use_labels_layer(layer)
    return layer


def open_labels_dialog(viewer: Any, parent: Any = None, *, session: Any = None) -> Any | None:
    """Ask for a label file, then `open_labels` it (None when cancelled or refused)."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getOpenFileName(parent, "Open labels", "", FILE_FILTER)
    if not path:
        return None
    return open_labels(viewer, path, session=session)

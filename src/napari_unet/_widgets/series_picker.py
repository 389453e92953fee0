"""Ask the user which DICOM series to open when a folder holds several."""

from __future__ import annotations

from qtpy.QtWidgets import QApplication, QInputDialog

from napari_unet.errors import MultipleSeriesError


def ask_series(error: MultipleSeriesError, parent=None) -> str | None:
    """Show a list of the series found; return the chosen SeriesInstanceUID or None."""
    if QApplication.instance() is None:
        return None
    labels = [s.label for s in error.series]
    choice, ok = QInputDialog.getItem(
        parent,
        "Choose a DICOM series",
        f"{error.path} holds {len(labels)} series. Open which one?",
        labels,
        0,
        False,
    )
    if not ok:
        return None
    return error.series[labels.index(choice)].uid

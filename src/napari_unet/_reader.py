"""npe2 reader: NIfTI files, DICOM files and DICOM folders → an image layer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari_unet._layers import LayerData, image_layer_data, scan_name
from napari_unet.errors import InputError, MultipleSeriesError

READABLE_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".ima")


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list] | None:
    """Return the reader for ``path`` or None when the plugin does not handle it."""
    if isinstance(path, list):
        if len(path) != 1:
            return None  # several files: open the folder instead
        path = path[0]
    p = Path(path)
    if p.is_dir():
        from napari_unet.io.dicom import is_dicom_path

        return read_volume if is_dicom_path(p) else None
    if str(p).lower().endswith(READABLE_SUFFIXES):
        return read_volume
    return None


def read_volume(path: str | list[str], *, series_uid: str | None = None) -> list[LayerData]:
    """Read one volume as a napari image layer (errors become a notification)."""
    if isinstance(path, list):
        path = path[0]
    from napari_unet.io.reader import load_volume

    try:
        volume = load_volume(path, series_uid=series_uid)
    except MultipleSeriesError as e:
        uid = _ask_series(e)
        if uid is None:
            return [(None,)]  # the user cancelled the choice: no layer, no error
        return read_volume(path, series_uid=uid)
    except InputError as e:
        _notify_error(str(e))
        return [(None,)]
    return [image_layer_data(volume, scan_name(path))]


def _ask_series(error: MultipleSeriesError) -> str | None:
    """Let the user pick one series (a dialog in the GUI; an error without one)."""
    try:
        from napari_unet._widgets.series_picker import ask_series
    except ImportError:
        _notify_error(str(error))
        return None
    return ask_series(error)


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)

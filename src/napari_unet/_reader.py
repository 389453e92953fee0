"""npe2 readers: scans → Image layers, label maps → Labels layers.

Two reader contributions (napari.yaml):

* ``napari-unet.get_reader`` opens NIfTI, NRRD and DICOM (files and folders). A file
  that is a label map opens as a Labels layer: a DICOM SEG or RTSTRUCT (on the grid of
  the series it refers to), a Slicer ``.seg.nrrd``, or voxels that are unambiguously
  labels (a NIfTI with intent "label", or NIfTI/NRRD voxels that
  `napari_unet.io.labelmap.looks_like_label_map` accepts: integers 0…255, few values).
  Everything else, and every DICOM image series, opens as an Image.
* ``napari-unet.get_labels_reader`` ("Open labels…") opens the same files as labels,
  whatever their values look like (whole numbers 0…65535 only). npe2 tries the readers
  of one plugin in no fixed order, so on its own this contribution takes only files that
  are labels whatever reads them (``.seg.nrrd``, DICOM SEG, RTSTRUCT); any other file it
  takes inside `asking_for_labels` (what the *Open labels…* action,
  `napari_unet._widgets.open_labels.open_labels`, does), so that File > Open of a scan
  never depends on which of the two readers npe2 happens to try first.

A label map opened while a scan of the plugin is open must fit that scan's grid (it is
then placed exactly on it, padded when it is a crop of it); otherwise it is refused with
the reason, as a notification. A SEG or RTSTRUCT whose series is not beside it is also
looked for in the folders of the DICOM scans open in the viewer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from napari_unet._layers import LayerData, image_layer_data, scan_name
from napari_unet.errors import InputError, MultipleSeriesError, VolumeReadError

READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".dcm", ".ima")
#: NIfTI's intent code for label maps (NIFTI_INTENT_LABEL).
NIFTI_INTENT_LABEL = 1002
#: Name endings dropped from layer names of label files.
_LABEL_SUFFIXES = (".seg.nrrd", ".nrrd", ".nii.gz", ".nii", ".dcm", ".ima")


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list] | None:
    """Return the reader for ``path`` or None when the plugin does not handle it."""
    path = _one(path)
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        from napari_unet.io.dicom import is_dicom_path

        return read_volume if is_dicom_path(p) else None
    if str(p).lower().endswith(READABLE_SUFFIXES):
        return read_volume
    return None


_LABELS_ASKED: ContextVar[bool] = ContextVar("napari_unet_labels_asked", default=False)


@contextmanager
def asking_for_labels() -> Iterator[None]:
    """Within this block the "labels" reader takes every file it can read (see above)."""
    token = _LABELS_ASKED.set(True)
    try:
        yield
    finally:
        _LABELS_ASKED.reset(token)


def get_labels_reader(path: str | list[str]) -> Callable[[str | list[str]], list] | None:
    """The "Open labels…" reader: label files of every kind the plugin reads."""
    path = _one(path)
    if path is None or Path(path).is_dir():
        return None
    if not str(path).lower().endswith(READABLE_SUFFIXES):
        return None
    return read_labels if _LABELS_ASKED.get() or _labels_whatever_reads_it(path) else None


def _labels_whatever_reads_it(path: str) -> bool:
    from napari_unet.io._dicom_reference import object_kind

    return str(path).lower().endswith(".seg.nrrd") or object_kind(path) is not None


def _one(path: str | list[str]) -> str | None:
    if isinstance(path, list):
        if len(path) != 1:
            return None  # several files: open the folder instead
        return path[0]
    return path


def read_volume(path: str | list[str], *, series_uid: str | None = None) -> list[LayerData]:
    """Read one volume as an Image layer, or a Labels layer when it is a label map
    (errors become a notification)."""
    if isinstance(path, list):
        path = path[0]
    try:
        volume = _load(path, series_uid)
        if is_label_file(volume):
            return [_labels_layer(volume, path)]
    except MultipleSeriesError as e:
        uid = _ask_series(e)
        if uid is None:
            return [(None,)]  # the user cancelled the choice: no layer, no error
        return read_volume(path, series_uid=uid)
    except InputError as e:
        _notify_error(str(e))
        return [(None,)]
    layer = image_layer_data(volume, scan_name(path))
    uid = volume.metadata.get("series_uid")
    if uid:  # lets DICOM SEG / RTSTRUCT export find the series again after the session
        layer[1]["metadata"]["napari_unet"]["series_uid"] = uid
    return [layer]


def is_label_file(volume) -> bool:
    """A SEG, RTSTRUCT or Slicer segmentation, a NIfTI whose intent is "label", or a NIfTI
    or NRRD file of unambiguous label values; never a DICOM image series."""
    from napari_unet.io.labelmap import looks_like_label_map

    meta = volume.metadata
    if "segments" in meta:
        return True
    if "series_uid" in meta or "slice_positions_lps" in meta:  # a DICOM image series
        return False
    header = meta.get("nifti_header")
    if header is not None and int(header.get("intent_code", 0)) == NIFTI_INTENT_LABEL:
        return True
    return looks_like_label_map(volume.array)


def read_labels(path: str | list[str]) -> list[LayerData]:
    """Read a label map as a Labels layer (errors become a notification)."""
    if isinstance(path, list):
        path = path[0]
    try:
        return [_labels_layer(_load(path, None), path)]
    except MultipleSeriesError as e:
        _notify_error(f"{e.path}: holds several series; open one DICOM SEG or label file")
    except InputError as e:
        _notify_error(str(e))
    return [(None,)]


def _load(path: str, series_uid: str | None):
    from napari_unet.io._dicom_reference import object_kind
    from napari_unet.io.reader import load_volume

    try:
        return load_volume(path, series_uid=series_uid)
    except VolumeReadError as first:
        if Path(path).is_dir() or object_kind(path) is None:
            raise
        for folder in _open_dicom_folders():  # the series may be open in the viewer
            try:
                return load_volume(path, reference=folder)
            except InputError:
                continue
        raise first from None


def _labels_layer(volume, path: str) -> LayerData:
    from napari_unet._label_layers import fit_to_scans, labels_layer_from_volume, plugin_scans

    viewer = _viewer()
    scans = plugin_scans(viewer.layers) if viewer is not None else []
    volume = fit_to_scans(volume, scans, str(path))
    return labels_layer_from_volume(volume, label_name(path))


def label_name(path: str) -> str:
    """A layer name for a label file: its name without .seg.nrrd/.nii.gz/…"""
    name = Path(path).name
    for suffix in _LABEL_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _viewer():
    try:
        import napari
    except ImportError:
        return None
    return napari.current_viewer()


def _open_dicom_folders() -> list[str]:
    from napari_unet._label_layers import plugin_scans

    viewer = _viewer()
    folders = []
    for layer in plugin_scans(viewer.layers) if viewer is not None else []:
        meta = layer.metadata["napari_unet"]
        if meta.get("series_uid") and meta.get("source"):
            folders.append(str(meta["source"]))
    return folders


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

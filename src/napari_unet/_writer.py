"""npe2 writers: a Labels or Image layer → NIfTI or NRRD in the exact geometry of its scan.

Labels go to NIfTI (``.nii.gz``, ``.nii``) or to a 3D Slicer segmentation (``.seg.nrrd``,
with the class names and colours the layer carries); images to NIfTI or ``.nrrd``.

Errors are raised as `LayerWriteError` with one clear sentence; napari shows them as a
notification (File > Save never crashes the viewer). It is deliberately not a
ValueError: npe2 takes a ValueError from a writer to mean "no writer for this file" and
would swallow the message.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_unet._layers import volume_from_layer
from napari_unet.errors import InputError, NapariUnetError
from napari_unet.io.display import METADATA_KEY
from napari_unet.io.nifti import save_nifti
from napari_unet.io.volume import smallest_label_dtype


class LayerWriteError(NapariUnetError):
    """A layer could not be saved (no scan geometry, wrong grid, unwritable path)."""


def write_labels(path: str, data: Any, attributes: dict) -> list[str]:
    """Save a Labels layer as NIfTI on the voxel grid and affine of its scan."""
    try:
        volume = _volume(data, attributes, kind="labels layer")
        array = volume.array.astype(smallest_label_dtype(volume.array), copy=False)
        return _save(volume.with_array(array), path)
    except InputError as e:
        raise LayerWriteError(str(e)) from None


def write_image(path: str, data: Any, attributes: dict) -> list[str]:
    """Save an Image layer as NIfTI in its scan's geometry."""
    try:
        return _save(_volume(data, attributes, kind="image layer"), path)
    except InputError as e:
        raise LayerWriteError(str(e)) from None


def write_seg_nrrd(path: str, data: Any, attributes: dict) -> list[str]:
    """Save a Labels layer as a 3D Slicer segmentation on its scan's grid."""
    from napari_unet.io.nrrd import save_seg_nrrd

    try:
        volume = _volume(data, attributes, kind="labels layer")
        volume.metadata.update(_label_description(attributes))
        return [str(save_seg_nrrd(volume, path, overwrite=True))]
    except InputError as e:
        raise LayerWriteError(str(e)) from None


def write_nrrd_image(path: str, data: Any, attributes: dict) -> list[str]:
    """Save an Image layer as NRRD in its scan's geometry."""
    from napari_unet.io.nrrd import save_nrrd

    try:
        volume = _volume(data, attributes, kind="image layer")
        return [str(save_nrrd(volume, path, overwrite=True))]
    except InputError as e:
        raise LayerWriteError(str(e)) from None


def _label_description(attributes: dict) -> dict:
    """Class names and colours a Labels layer carries: those read from its file, those
    the panel gave it, else the layer's own colours for the values it holds."""
    meta = (attributes.get("metadata") or {}).get(METADATA_KEY) or {}
    out = {key: meta[key] for key in ("segments", "label_names", "label_colors") if meta.get(key)}
    if "label_colors" not in out and "segments" not in out:
        colormap = attributes.get("colormap")
        names = list(out.get("label_names", []))
        colors = []
        for value in range(1, len(names) + 1):
            try:
                rgba = np.asarray(colormap.map(value), float).reshape(-1)[:3]
                colors.append("#" + "".join(f"{round(c * 255):02x}" for c in rgba))
            except Exception:  # no colormap, or one that cannot map a value
                colors = []
                break
        if colors:
            out["label_colors"] = colors
    return out


def _volume(data: Any, attributes: dict, *, kind: str):
    name = attributes.get("name", kind)
    metadata = attributes.get("metadata") or {}
    if METADATA_KEY not in metadata:
        metadata = _geometry_from_viewer(np.shape(data), attributes) or metadata
    return volume_from_layer(np.asarray(data), metadata, what=f"{kind} {name!r}")


def _geometry_from_viewer(shape: tuple[int, ...], attributes: dict) -> dict | None:
    """For a layer napari made (e.g. "New labels layer"): borrow the geometry of the
    plugin image in the current viewer that has the same grid (shape, scale, translate)."""
    try:
        import napari
    except ImportError:
        return None
    viewer = napari.current_viewer()
    if viewer is None:
        return None
    scale = np.asarray(attributes.get("scale", np.ones(len(shape))), float)
    translate = np.asarray(attributes.get("translate", np.zeros(len(shape))), float)
    for layer in viewer.layers:
        meta = getattr(layer, "metadata", {}) or {}
        if METADATA_KEY not in meta or tuple(np.shape(layer.data)) != tuple(shape):
            continue
        if np.allclose(layer.scale, scale) and np.allclose(layer.translate, translate):
            return meta
    return None


def _save(volume, path: str) -> list[str]:
    try:
        save_nifti(volume, path)
    except OSError as e:
        raise InputError(f"{path}: could not write ({e.strerror or e})") from e
    return [str(path)]

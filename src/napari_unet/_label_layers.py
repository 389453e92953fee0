"""Labels layers for label maps read from files, and the scan they belong to. No napari import.

A label map opened through the plugin (a label NIfTI, a Slicer ``.seg.nrrd``, a DICOM SEG
or RTSTRUCT) becomes an editable Labels layer that carries the scan geometry (so the
writers put it back on the scan's grid and the panel's loop can adopt it), the class
names and colours from the file (``metadata["napari_unet"]["segments"]``,
``label_names``, ``label_colors``; a ``features`` table names the label under the
cursor), and a colour for every label value (classes without a colour from the file get
the package's palette, so painting a new value is never invisible).

`fit_to_scans` decides where the labels go when scans are open in the viewer: on a scan
with the same grid (within float32 rounding; the scan's exact affine is then adopted, so
the layer sits exactly on it), or padded into a scan whose grid contains it (3D Slicer
writes segmentations cropped to their extent), else refused with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_unet._layers import LayerData, geometry_metadata
from napari_unet.errors import InputError
from napari_unet.io.display import METADATA_KEY, DisplayGeometry, volume_geometry
from napari_unet.io.labelmap import (
    as_label_array,
    default_color,
    embed_in_grid,
    grid_difference,
    segments_of,
    set_segments,
)
from napari_unet.io.volume import Volume

#: Colour of label values the file and the palette leave out.
OTHER_COLOR = "#c8c8c8"
#: Label values given a palette colour beyond the described ones …
PALETTE_VALUES = 32
#: … up to this value (higher undescribed values get `OTHER_COLOR`).
MAX_PALETTE_VALUE = 1024


def labels_layer_from_volume(volume: Volume, name: str) -> LayerData:
    """A Labels layer tuple for a label map (see the module docstring).

    Raises:
        InputError: the voxels are not labels (fractional, negative, > 65535).
    """
    array = as_label_array(volume, what=str(volume.source or name))
    segments = segments_of(volume.with_array(array))
    described = set_segments({}, segments)
    geometry = volume_geometry(volume)
    meta = geometry_metadata(
        volume,
        label_names=described.get("label_names", []),
        label_colors=described.get("label_colors", []),
        segments=described["segments"],
    )
    for key in ("series_uid", "dicom_seg", "rtstruct"):
        if key in volume.metadata:
            meta[METADATA_KEY][key] = volume.metadata[key]
    colors: dict[int | None, str] = {None: OTHER_COLOR, 0: "transparent"}
    top = max([s.value for s in segments] + [0]) + PALETTE_VALUES
    colors.update({v: default_color(v) for v in range(1, min(top, MAX_PALETTE_VALUE) + 1)})
    colors.update({s.value: s.color for s in segments})
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": geometry.scale,
        "translate": geometry.translate,
        "metadata": meta,
        "units": "mm",
        "opacity": 0.5,
        "colormap": colors,
        "features": {
            "index": [0, *(s.value for s in segments)],
            "name": ["background", *(s.name for s in segments)],
        },
    }
    return np.ascontiguousarray(geometry.to_display(array)), kwargs, "labels"


def plugin_scans(layers) -> list[Any]:
    """The image layers opened by the plugin (they carry scan geometry), last first."""
    found = []
    for layer in reversed(list(layers)):
        meta = getattr(layer, "metadata", None) or {}
        if type(layer).__name__ == "Image" and METADATA_KEY in meta:
            found.append(layer)
    return found


def fit_to_scans(volume: Volume, scans: list[Any], what: str) -> Volume:
    """The label map on the grid of one of the open ``scans`` (see the module docstring).

    Args:
        volume: the label map as read.
        scans: plugin image layers (`plugin_scans`); none: the volume as it is.
        what: the file, for messages.

    Raises:
        InputError: the labels fit no open scan; the message gives the reason for the
            most recent one.
    """
    if not scans:
        return volume
    geometries = [DisplayGeometry.from_metadata(s.metadata[METADATA_KEY]) for s in scans]
    for geometry in geometries:
        if grid_difference(volume.affine, volume.shape, geometry.affine, geometry.native_shape):
            continue
        out = volume.with_array(volume.array)
        out.affine = geometry.affine.copy()  # exactly the scan's, not a float32 copy of it
        return out
    for geometry in geometries:
        embedded = embed_in_grid(volume, geometry.affine, geometry.native_shape)
        if embedded is not None:
            return embedded
    geometry = geometries[0]
    reason = grid_difference(volume.affine, volume.shape, geometry.affine, geometry.native_shape)
    raise InputError(
        f"{what}: is on another grid than the open scan {scans[0].name!r} ({reason}); "
        "open the labels with the scan they were drawn on"
    )

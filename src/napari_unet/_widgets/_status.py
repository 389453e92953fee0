"""Status-bar coordinates like 3D Slicer and ITK-SNAP: scanner mm and file voxel indices.

napari's status bar shows a layer's world coordinates, which for our layers are display
axes (``-S, -A, -R``) of the nearest orthogonal grid: on an oblique scan they are
neither the scanner's coordinates nor in a familiar order. For every layer that carries
the scan geometry (``metadata["napari_unet"]``) the status instead reads::

    RAS (12.30, -4.50, 8.90) mm · voxel (i, j, k) (10, 20, 3): 412

— the point under the mouse through the file's exact affine (``affine @ [i, j, k, 1]``,
also oblique) in RAS or LPS (a setting: `set_frame`), and the voxel of the file's own
array, in the file's axis order. napari computes the status in a thread by calling
``layer.get_status``, and napari 0.9 offers no hook for its coordinate text, so each
such layer's ``get_status`` is wrapped (`install`); the value part (with a labels
layer's class ``name``) is napari's own.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from napari_unet.io.display import METADATA_KEY, DisplayGeometry

FRAMES = ("RAS", "LPS")
_MARK = "_napari_unet_status"


class CoordinateStatus:
    """The coordinate setting of one viewer and the layers it has wrapped."""

    def __init__(self, viewer) -> None:
        self.frame = "RAS"
        self._viewer = weakref.ref(viewer)
        viewer.layers.events.inserted.connect(self._inserted)
        for layer in viewer.layers:
            wrap_layer(layer, self)

    def _inserted(self, event) -> None:
        wrap_layer(event.value, self)


_installed: dict[int, tuple[weakref.ref, CoordinateStatus]] = {}


def install(viewer) -> CoordinateStatus:
    """Show scanner coordinates for the plugin's layers in ``viewer`` (idempotent)."""
    key = id(viewer)
    found = _installed.get(key)
    if found is not None and found[0]() is viewer:
        return found[1]
    status = CoordinateStatus(viewer)
    _installed[key] = (weakref.ref(viewer, lambda _: _installed.pop(key, None)), status)
    return status


def set_frame(viewer, frame: str) -> None:
    """Show "RAS" (NIfTI, 3D Slicer) or "LPS" (DICOM, ITK) coordinates in ``viewer``."""
    frame = str(frame).upper()
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    install(viewer).frame = frame


def frame_of(viewer) -> str:
    return install(viewer).frame


def wrap_layer(layer, status: CoordinateStatus, geometry: DisplayGeometry | None = None) -> bool:
    """Wrap ``layer.get_status`` if the layer carries the scan geometry (or ``geometry``
    is given: a layer on the scan's grid made elsewhere); returns whether."""
    if getattr(layer.get_status, _MARK, False):
        return True
    if getattr(layer, "ndim", 0) != 3:
        return False
    if geometry is None:
        meta = (getattr(layer, "metadata", None) or {}).get(METADATA_KEY)
        if not meta or "affine" not in meta:
            return False
        try:
            geometry = DisplayGeometry.from_metadata(meta)
        except (KeyError, TypeError, ValueError):
            return False
    if tuple(layer.data.shape) != geometry.display_shape:
        return False
    napari_status = layer.get_status

    def get_status(position=None, *, view_direction=None, dims_displayed=None, world=False,
                   value=None) -> dict[str, Any]:  # fmt: skip
        result = napari_status(position, view_direction=view_direction,
                               dims_displayed=dims_displayed, world=world, value=value)  # fmt: skip
        if position is None:
            return result
        data_point = layer.world_to_data(position) if world else position
        coords = describe_point(geometry, data_point, status.frame)
        result["coords"] = coords
        result["coordinates"] = f"{coords}: {result.get('value', '')}"
        return result

    setattr(get_status, _MARK, True)
    layer.get_status = get_status
    return True


def describe_point(geometry: DisplayGeometry, data_point, frame: str = "RAS") -> str:
    """``"RAS (x, y, z) mm · voxel (i, j, k) (a, b, c)"`` for a layer's data coordinates.

    Args:
        geometry: the layer's display geometry.
        data_point: display voxel coordinates (the layer's data coordinates; the last
            three are used), fractional inside a voxel.
        frame: "RAS" or "LPS".
    """
    point = np.asarray(data_point, dtype=np.float64)[-3:]
    mm = geometry.world_mm(point, frame)
    native = geometry.to_native_point(point)
    voxel = np.round(native).astype(int)
    inside = all(0 <= v < n for v, n in zip(voxel, geometry.native_shape, strict=True))
    where = f"({', '.join(map(str, voxel))})" if inside else "outside the scan"
    return f"{frame} ({', '.join(f'{v:.2f}' for v in mm)}) mm · voxel (i, j, k) {where}"

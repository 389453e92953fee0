"""How a Volume is shown in napari, and how a layer's data maps back to the scan.

napari draws a 3D array as (slider, row, column). We reorder and flip the voxel axes
(no resampling: the nearest orthogonal orientation, as nibabel's ``io_orientation``
gives it) so that every view matches 3D Slicer's radiological convention:

* axis 0 runs Superior → Inferior, axis 1 Anterior → Posterior, axis 2 Right → Left
  (display axis codes "I", "P", "L").
* Axial (napari's default view of axes 1, 2): anterior at the top, patient right on the
  screen's left. Coronal (axes 0, 2): superior at the top, right on the left. Sagittal
  (axes 0, 1): superior at the top, anterior on the left.

World coordinates in napari are mm along those display axes: ``(-z, -y, -x)`` of RAS
(of the nearest orthogonal grid, so not the scanner's coordinates on an oblique scan).
What a user reads (the status bar) goes through `DisplayGeometry.world_mm`, which uses
the file's exact affine, as 3D Slicer and ITK-SNAP do.
Scale is the true voxel spacing, so anisotropic scans keep their aspect and the world
extent equals the scan's. For oblique scans the display is the acquisition grid (as a
radiologist reads it); the exact oblique affine stays in the layer metadata and is what
the writer uses, so nothing is lost on export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations as ornts

from napari_unet.io.volume import Volume

DISPLAY_AXCODES = ("I", "P", "L")
#: Rows map RAS (x, y, z) to display world (I, P, L) = (-z, -y, -x).
RAS_TO_DISPLAY = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])
#: Key under which layers carry the scan geometry in ``layer.metadata``.
METADATA_KEY = "napari_unet"


@dataclass(frozen=True)
class DisplayGeometry:
    """The map between a volume's voxel grid and its napari layer.

    Attributes:
        affine: the native voxel → RAS affine (4×4, mm).
        native_shape: the native array shape ``(i, j, k)``.
        to_display_ornt: nibabel orientation transform native → display.
        scale: mm per display voxel, one per display axis.
        translate: display-world position (mm) of display voxel (0, 0, 0).
    """

    affine: np.ndarray
    native_shape: tuple[int, int, int]
    to_display_ornt: np.ndarray
    scale: tuple[float, float, float]
    translate: tuple[float, float, float]

    @property
    def display_shape(self) -> tuple[int, int, int]:
        order = self.to_display_ornt[:, 0].astype(int)
        shape = [0, 0, 0]
        for src_axis, dst_axis in enumerate(order):
            shape[dst_axis] = self.native_shape[src_axis]
        return tuple(shape)  # type: ignore[return-value]

    def to_display(self, array: np.ndarray) -> np.ndarray:
        """Native ``(i, j, k)`` array → display array (a view, no copy)."""
        if tuple(array.shape[:3]) != self.native_shape:
            raise ValueError(f"array shape {array.shape} is not the scan's {self.native_shape}")
        return ornts.apply_orientation(array, self.to_display_ornt)

    def to_native(self, array: np.ndarray) -> np.ndarray:
        """Display array → native ``(i, j, k)`` array (a view, no copy)."""
        if tuple(array.shape[:3]) != self.display_shape:
            raise ValueError(
                f"layer shape {tuple(array.shape)} does not match the scan's display shape "
                f"{self.display_shape}"
            )
        back = ornts.ornt_transform(ornts.axcodes2ornt(DISPLAY_AXCODES), self._native_ornt)
        return ornts.apply_orientation(array, back)

    @property
    def _native_ornt(self) -> np.ndarray:
        return ornts.io_orientation(self.affine)

    def display_axis(self, native_axis: int) -> int:
        """The display (napari) axis showing native array axis ``native_axis``."""
        return int(self.to_display_ornt[native_axis, 0])

    def native_axis(self, display_axis: int) -> int:
        """The native array axis shown on display axis ``display_axis``."""
        return int(np.flatnonzero(self.to_display_ornt[:, 0] == display_axis)[0])

    def to_native_index(self, native_axis: int, display_index):
        """Slice index (or array of them) along ``native_axis`` for a display index."""
        flipped = self.to_display_ornt[native_axis, 1] < 0
        n = self.native_shape[native_axis]
        return (n - 1 - np.asarray(display_index)) if flipped else np.asarray(display_index)

    def to_display_index(self, native_axis: int, native_index):
        """Display index along the axis showing ``native_axis`` (the inverse map)."""
        return self.to_native_index(native_axis, native_index)  # a flip is its own inverse

    def to_display_indices(self, index: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """A native fancy index ``(i, j, k)`` → the same voxels' display fancy index."""
        out: list[np.ndarray] = [np.empty(0, np.intp)] * 3
        for axis, values in enumerate(index):
            out[self.display_axis(axis)] = np.asarray(self.to_display_index(axis, values))
        return tuple(out)

    def to_native_point(self, display_point) -> np.ndarray:
        """Continuous display voxel coordinates → native ``(i, j, k)`` coordinates.

        Args:
            display_point: a layer's data coordinates (display voxels, ``(3,)``); may be
                fractional (a mouse position inside a voxel).

        Returns:
            ``(3,)`` float native voxel coordinates: integer at voxel centres.
        """
        display_point = np.asarray(display_point, dtype=np.float64)[-3:]
        native = np.empty(3)
        for axis in range(3):
            value = display_point[self.display_axis(axis)]
            flipped = self.to_display_ornt[axis, 1] < 0
            native[axis] = (self.native_shape[axis] - 1 - value) if flipped else value
        return native

    def to_display_point(self, native_point) -> np.ndarray:
        """Native ``(i, j, k)`` coordinates → display voxel coordinates (the inverse)."""
        native_point = np.asarray(native_point, dtype=np.float64)[:3]
        display = np.empty(3)
        for axis in range(3):
            flipped = self.to_display_ornt[axis, 1] < 0
            value = native_point[axis]
            n = self.native_shape[axis]
            display[self.display_axis(axis)] = (n - 1 - value) if flipped else value
        return display

    def world_mm(self, display_point, frame: str = "RAS") -> np.ndarray:
        """Scanner coordinates (mm) of a display voxel position, with the file's exact
        (also oblique) affine: ``affine @ [i, j, k, 1]``.

        Args:
            display_point: display voxel coordinates ``(3,)`` (fractional allowed).
            frame: "RAS" (NIfTI, 3D Slicer) or "LPS" (DICOM, ITK): x and y negated.
        """
        native = self.to_native_point(display_point)
        ras = self.affine[:3, :3] @ native + self.affine[:3, 3]
        return ras_to_frame(ras, frame)

    def to_metadata(self) -> dict[str, Any]:
        """Plain values for ``layer.metadata[METADATA_KEY]``."""
        return {
            "affine": self.affine.tolist(),
            "native_shape": list(self.native_shape),
            "display_axcodes": "".join(DISPLAY_AXCODES),
            "orientation": "".join(nib.aff2axcodes(self.affine)),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> DisplayGeometry:
        return display_geometry(np.asarray(meta["affine"], float), tuple(meta["native_shape"]))


def ras_to_frame(ras, frame: str = "RAS") -> np.ndarray:
    """RAS mm → the same point in ``frame`` ("RAS" or "LPS": x and y negated)."""
    frame = str(frame).upper()
    if frame not in ("RAS", "LPS"):
        raise ValueError(f"frame must be 'RAS' or 'LPS', got {frame!r}")
    point = np.asarray(ras, dtype=np.float64).copy()
    if frame == "LPS":
        point[:2] *= -1.0
    return point


def display_geometry(affine: np.ndarray, native_shape: tuple[int, ...]) -> DisplayGeometry:
    """Compute how a grid of ``native_shape`` voxels with ``affine`` is shown in napari."""
    affine = np.asarray(affine, dtype=np.float64)
    shape = tuple(int(s) for s in native_shape[:3])
    transform = ornts.ornt_transform(
        ornts.io_orientation(affine), ornts.axcodes2ornt(DISPLAY_AXCODES)
    )
    display_affine = affine @ ornts.inv_ornt_aff(transform, shape)
    scale = tuple(float(s) for s in np.linalg.norm(display_affine[:3, :3], axis=0))
    translate = tuple(float(t) for t in RAS_TO_DISPLAY @ display_affine[:3, 3])
    return DisplayGeometry(affine, shape, transform, scale, translate)  # type: ignore[arg-type]


def volume_geometry(volume: Volume) -> DisplayGeometry:
    return display_geometry(volume.affine, volume.shape)

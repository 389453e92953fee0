"""The Volume: a voxel array with the geometry of the scan it came from.

Conventions (used by every reader and writer of the package):

* ``array`` is indexed ``(i, j, k)`` in the order the voxels are stored in the source:
  NIfTI's own axis order; for DICOM, ``i`` runs along a row (columns), ``j`` down the
  columns (rows) and ``k`` across slices, in the order of slice positions along the normal.
* ``affine`` maps a voxel index ``(i, j, k, 1)`` to world coordinates in mm in the
  **RAS+** frame (x → patient Right, y → Anterior, z → Superior), like nibabel and
  NIfTI. DICOM's LPS is converted on reading. ``Volume.frame`` says "RAS".
* Labels exported over a volume reuse its shape and affine exactly (``with_array``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from napari_unet.typing import Affine, Metadata, Spacing

MODALITIES = ("CT", "MR", "other")


@dataclass(eq=False)
class Volume:
    """A 3D scan (or label map) with its geometry.

    Args:
        array: voxel values, layout ``(i, j, k)`` (see module docstring). CT in HU.
        affine: 4×4 voxel → world matrix in mm, RAS+.
        modality: "CT", "MR" or "other".
        metadata: source metadata (e.g. ``nifti_header``, DICOM tags, series UID).
        source: the file or folder it was read from, if any.
    """

    array: np.ndarray
    affine: Affine
    modality: str = "other"
    metadata: Metadata = field(default_factory=dict)
    source: str | None = None

    frame = "RAS"

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4×4, got shape {self.affine.shape}")
        if self.array.ndim != 3:
            raise ValueError(f"array must be 3D (i, j, k), got shape {self.array.shape}")
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> Spacing:
        """Voxel size in mm along each array axis (norms of the affine's columns)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def orientation(self) -> str:
        """Axis codes of the array axes, e.g. "RAS" or "LPS" (nibabel's aff2axcodes)."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    @property
    def through_plane_axis(self) -> int:
        """The array axis with the largest spacing (slice axis of most scans); k on ties."""
        spacing = np.asarray(self.spacing)
        candidates = np.flatnonzero(np.isclose(spacing, spacing.max(), rtol=1e-3))
        return int(candidates[-1])

    def with_array(self, array: np.ndarray, **changes: Any) -> Volume:
        """A new Volume with the same geometry and another array of the same shape."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} differs from the volume's {self.shape}")
        return replace(self, array=array, metadata=dict(self.metadata), **changes)

    def describe(self) -> dict[str, Any]:
        """Plain-JSON summary (the `napari-unet info --json` contract)."""
        return {
            "path": self.source,
            "shape": list(self.shape),
            "dtype": str(self.array.dtype),
            "spacing": [round(s, 6) for s in self.spacing],
            "orientation": self.orientation,
            "modality": self.modality,
            "frame": self.frame,
            "affine": [[float(v) for v in row] for row in self.affine],
            "through_plane_axis": self.through_plane_axis,
            "value_range": _finite_range(self.array),
            "nonfinite_voxels": int(self.array.size - np.count_nonzero(np.isfinite(self.array)))
            if self.array.dtype.kind == "f"
            else 0,
        }


def smallest_label_dtype(array: np.ndarray) -> np.dtype:
    """The smallest unsigned dtype holding every label (signed if any label is negative)."""
    if array.size == 0:
        return np.dtype(np.uint8)
    low, high = int(array.min()), int(array.max())
    if low < 0:
        return np.result_type(np.min_scalar_type(low), np.min_scalar_type(high))
    return np.min_scalar_type(high)


def _finite_range(array: np.ndarray) -> list[float] | None:
    """[min, max] over the finite voxels (JSON has no NaN), None when there are none."""
    if array.dtype.kind == "f":
        finite = array[np.isfinite(array)]
        return [float(finite.min()), float(finite.max())] if finite.size else None
    return [float(array.min()), float(array.max())] if array.size else None

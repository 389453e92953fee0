"""RTSTRUCT contours → voxels: the reading half of `rtstruct`.

Each CLOSED_PLANAR contour must lie on one slice of the referenced series (within
`PLANE_TOL` of the slice step) and inside its grid (half a voxel of margin), else the
file is refused with one line. Polygons are filled by voxel centre
(`skimage.draw.polygon2mask`) and combined by parity within an ROI; a later ROI wins
where ROIs overlap. POINT and OPEN_PLANAR contours enclose nothing and are skipped
(counted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from napari_unet.errors import VolumeReadError
from napari_unet.io._dicom_header import text
from napari_unet.io._dicom_reference import to_voxels
from napari_unet.io.dicom import SeriesHeaders
from napari_unet.io.labelmap import Segment, default_color, rgb_to_hex

#: A contour is on a slice when within this fraction of the slice step of it.
PLANE_TOL = 0.05
#: Contour points read from one file, at most (a whole-body structure set has ~10⁶).
MAX_POINTS = 50_000_000


def rasterise(
    path: Path, ds: Dataset, series: SeriesHeaders, rois: dict[int, tuple[str, str]]
) -> tuple[np.ndarray, list[Segment], int]:
    """Fill the closed planar contours of an RTSTRUCT on its series' grid.

    Args:
        path: the file (named in errors).
        ds: the RTSTRUCT dataset.
        series: the referenced series (its grid).
        rois: ROI number → (name, frame of reference UID), in the file's order; the
            n-th ROI gets label value n.

    Returns:
        (labels ``(k, j, i)`` = (slice, row, column), one `Segment` per ROI, the number
        of contours skipped: not closed planar, or fewer than 3 vertices).

    Raises:
        VolumeReadError: contours of an unknown ROI, malformed contour data, too many
            points, a contour off the series' slices or outside its grid.
    """
    from skimage.draw import polygon2mask

    columns, rows, n_slices = series.shape
    value_of = {number: n for n, number in enumerate(rois, start=1)}
    colors = {}
    dtype = np.uint8 if len(rois) < 256 else np.uint16
    out = np.zeros((n_slices, columns, rows), dtype=dtype)  # k, i, j while filling
    skipped = points_read = 0
    for item in ds.get("ROIContourSequence") or []:
        number = int(item.ReferencedROINumber)
        if number not in value_of:
            raise VolumeReadError(
                f"{path}: contours for ROI {number}, which StructureSetROISequence lacks"
            )
        value = value_of[number]
        color = item.get("ROIDisplayColor")
        if color is not None and len(color) == 3:
            colors[value] = rgb_to_hex([float(c) for c in color])
        roi_mask: dict[int, np.ndarray] = {}
        for n, contour in enumerate(item.get("ContourSequence") or [], start=1):
            kind = text(contour, "ContourGeometricType").upper()
            if kind not in ("CLOSED_PLANAR", ""):
                skipped += 1
                continue
            points = _points(path, contour, rois[number][0], n)
            points_read += len(points)
            if points_read > MAX_POINTS:
                raise VolumeReadError(f"{path}: more than {MAX_POINTS} contour points")
            k, ij = _on_grid(path, series, points, rois[number][0], n)
            if len(ij) < 3:
                skipped += 1
                continue
            mask = polygon2mask((columns, rows), ij)
            roi_mask[k] = mask ^ roi_mask[k] if k in roi_mask else mask
        for k, mask in roi_mask.items():
            out[k][mask] = value
    segments = [
        Segment(v, name, colors.get(v, default_color(v)))
        for v, (name, _) in enumerate(rois.values(), start=1)
    ]
    return out.transpose(0, 2, 1), segments, skipped


def _points(path: Path, contour: Dataset, name: str, n: int) -> np.ndarray:
    data = contour.get("ContourData")
    if data is None:
        raise VolumeReadError(f"{path}: contour {n} of ROI {name!r} has no ContourData")
    values = np.asarray([float(v) for v in data], dtype=np.float64)
    declared = contour.get("NumberOfContourPoints")
    if values.size % 3 or (declared is not None and int(declared) * 3 != values.size):
        raise VolumeReadError(
            f"{path}: contour {n} of ROI {name!r} has {values.size} coordinates for "
            f"{declared if declared is not None else '?'} points"
        )
    if not np.all(np.isfinite(values)):
        raise VolumeReadError(f"{path}: contour {n} of ROI {name!r} has non-finite points")
    return values.reshape(-1, 3)


def _on_grid(
    path: Path, series: SeriesHeaders, points: np.ndarray, name: str, n: int
) -> tuple[int, np.ndarray]:
    """The slice a contour lies on and its (i, j) vertices, checked against the grid."""
    columns, rows, n_slices = series.shape
    ijk = to_voxels(series, points)
    k = float(np.median(ijk[:, 2]))
    slice_k = round(k)
    if np.max(np.abs(ijk[:, 2] - slice_k)) > PLANE_TOL:
        raise VolumeReadError(
            f"{path}: contour {n} of ROI {name!r} is not on a slice of the series "
            f"{series.info.label} (at slice position {k:.3f})"
        )
    margin = 0.5 + PLANE_TOL
    low, high = ijk[:, :2].min(axis=0), ijk[:, :2].max(axis=0)
    outside = (
        not 0 <= slice_k < n_slices
        or low[0] < -margin
        or low[1] < -margin
        or high[0] > columns - 1 + margin
        or high[1] > rows - 1 + margin
    )
    if outside:
        raise VolumeReadError(
            f"{path}: contour {n} of ROI {name!r} lies outside the grid of the series "
            f"{series.info.label} ({columns}×{rows}×{n_slices} voxels; the contour spans "
            f"i {low[0]:.1f}…{high[0]:.1f}, j {low[1]:.1f}…{high[1]:.1f}, slice {k:.1f})"
        )
    return slice_k, ijk[:, :2]

"""Slice geometry of a DICOM series: sorting, spacing checks and the voxel → world affine.

Pure numpy, no file access, so that it can be tested on numbers alone. All positions and
directions here are in DICOM's patient frame **LPS** (x → patient Left, y → Posterior,
z → Superior), in mm; `lps_to_ras` converts an affine to the package's RAS+ convention.

Layout (see `napari_unet.io.volume`): voxel ``(i, j, k)`` is column ``i``, row ``j`` of
the ``k``-th slice, slices ordered by increasing position along the slice normal
``n = row_cosine × column_cosine``. Hence::

    affine[:3, 0] = row_cosine    * PixelSpacing[1]   (column spacing, mm)
    affine[:3, 1] = column_cosine * PixelSpacing[0]   (row spacing, mm)
    affine[:3, 2] = position[k+1] - position[k]       (the actual step, mm)
    affine[:3, 3] = ImagePositionPatient of slice 0

The third column is the measured step between consecutive slice positions, *not*
``n × SliceThickness``: with a gantry tilt the step leaves the normal, the affine is
sheared, and every voxel still lands where the scanner put it (Slicer instead resamples;
SimpleITK ignores the shear). The tilt angle is reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Two slice steps are "the same" within this many mm …
SPACING_ATOL_MM = 1e-2
#: … or within this fraction of the median step, whichever is larger.
SPACING_RTOL = 1e-2
#: Direction cosines of different slices must agree to this (≈ 0.006°).
ORIENTATION_ATOL = 1e-4
#: Row and column directions must be unit vectors, and perpendicular, to this.
UNIT_ATOL = 1e-3


class GeometryError(ValueError):
    """The slice positions do not form a regular grid (message says why and where).

    Attributes:
        slices: the sorted slice indices involved, so that callers can name their files.
    """

    def __init__(self, message: str, slices: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.slices = slices


@dataclass(frozen=True)
class StackGeometry:
    """The result of `stack_geometry`.

    Attributes:
        order: indices into the input positions, in slice order ``k`` (increasing along
            the normal).
        affine_lps: 4×4 voxel ``(i, j, k)`` → LPS mm matrix.
        normal_positions: position of each sorted slice along the normal, mm.
        step: the mean step between consecutive slices (third affine column), LPS mm.
        tilt_deg: angle between ``step`` and the normal (0 for ordinary series).
        assumed_spacing: True when there is a single slice and the third column came from
            the slice thickness or a 1 mm default.
    """

    order: NDArray[np.intp]
    affine_lps: NDArray[np.float64]
    normal_positions: NDArray[np.float64]
    step: NDArray[np.float64]
    tilt_deg: float
    assumed_spacing: bool


def slice_normal(orientation: NDArray[np.float64]) -> NDArray[np.float64]:
    """Unit normal ``row × column`` of an ImageOrientationPatient (6 values, LPS)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise GeometryError(f"ImageOrientationPatient {list(orientation)} has parallel axes")
    return normal / norm


def orientation_problem(orientation: NDArray[np.float64]) -> str | None:
    """Why six direction cosines are not a valid ImageOrientationPatient, or None.

    Both directions must be finite unit vectors (within `UNIT_ATOL`) and perpendicular
    (their dot product within `UNIT_ATOL` of 0).
    """
    values = np.asarray(orientation, dtype=np.float64).reshape(-1)
    if values.shape != (6,) or not np.all(np.isfinite(values)):
        return "must hold six finite numbers"
    row, col = values[:3], values[3:]
    for name, vector in (("row", row), ("column", col)):
        norm = float(np.linalg.norm(vector))
        if norm < 1e-6:
            return f"has a zero {name} direction"
        if abs(norm - 1.0) > UNIT_ATOL:
            return f"has a {name} direction of length {norm:.4g}, not 1"
    dot = float(row @ col)
    if abs(dot) > 1 - 1e-6:
        return "has parallel row and column directions"
    if abs(dot) > UNIT_ATOL:
        angle = float(np.degrees(np.arccos(np.clip(dot, -1.0, 1.0))))
        return f"has row and column directions {angle:.3g}° apart, not perpendicular"
    return None


def spacing_tolerance(step: float) -> float:
    """How far (mm) a slice step may differ from ``step`` and still count as equal."""
    return max(SPACING_ATOL_MM, SPACING_RTOL * abs(step))


def stack_geometry(
    positions: NDArray[np.float64],
    orientation: NDArray[np.float64],
    pixel_spacing: tuple[float, float],
    *,
    single_slice_spacing: float | None = None,
) -> StackGeometry:
    """Sort slices along the normal, check that they form a regular grid, build the affine.

    Args:
        positions: ``(n, 3)`` ImagePositionPatient of each slice (LPS mm), any order.
        orientation: the six ImageOrientationPatient direction cosines (row, then column).
        pixel_spacing: DICOM PixelSpacing ``(row spacing, column spacing)`` in mm.
        single_slice_spacing: third-axis spacing (mm) to use when ``n == 1``; 1 mm if None.

    Returns:
        The slice order, the LPS affine and the figures behind it.

    Raises:
        GeometryError: two slices at one position, missing slices (a gap of about a whole
            multiple of the usual step), uneven steps, or positions off a straight line.
            The message lists the slice indices (in sorted order) and positions involved.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    orientation = np.asarray(orientation, dtype=np.float64)
    row, col = orientation[:3], orientation[3:]
    normal = slice_normal(orientation)
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    dist, positions = dist[order], positions[order]
    n = len(positions)

    affine = np.eye(4)
    affine[:3, 0] = row * pixel_spacing[1]
    affine[:3, 1] = col * pixel_spacing[0]
    affine[:3, 3] = positions[0]
    if n == 1:
        spacing = single_slice_spacing if single_slice_spacing else 1.0
        affine[:3, 2] = normal * spacing
        return StackGeometry(order, affine, dist, normal * spacing, 0.0, True)

    _check_steps(dist, positions)
    step = (positions[-1] - positions[0]) / (n - 1)
    # Every slice must lie on the line first + k·step (catches tilts that vary, or
    # in-plane jumps that the projection on the normal cannot see).
    residual = np.linalg.norm(positions - (positions[0] + np.outer(np.arange(n), step)), axis=1)
    worst = int(np.argmax(residual))
    if residual[worst] > spacing_tolerance(float(np.linalg.norm(step))):
        raise GeometryError(
            f"slice positions are not on a straight line: slice {worst} at "
            f"{_fmt(positions[worst])} is {residual[worst]:.3g} mm off the line from "
            f"{_fmt(positions[0])} to {_fmt(positions[-1])}",
            (worst,),
        )
    affine[:3, 2] = step
    cos_tilt = float(np.clip(step @ normal / np.linalg.norm(step), -1.0, 1.0))
    tilt = float(np.degrees(np.arccos(cos_tilt)))
    return StackGeometry(order, affine, dist, step, tilt if tilt > 1e-3 else 0.0, False)


def _check_steps(dist: NDArray[np.float64], positions: NDArray[np.float64]) -> None:
    """Raise GeometryError on duplicate, missing or unevenly spaced slices (sorted input).

    Positions in messages are distances along the normal (mm), indices count the slices
    present, in sorted order.
    """
    steps = np.diff(dist)
    dup = np.flatnonzero(steps < SPACING_ATOL_MM)
    if dup.size:
        k = int(dup[0])
        raise GeometryError(
            f"{dup.size} pair(s) of slices share a position, e.g. slices {k} and {k + 1} "
            f"at {dist[k]:.3f} mm along the normal ({_fmt(positions[k])}); the series may "
            "hold several echoes, phases or acquisitions",
            (k, k + 1),
        )
    median = float(np.median(steps))
    tol = spacing_tolerance(median)
    bad = np.flatnonzero(np.abs(steps - median) > tol)
    if not bad.size:
        return
    multiples = np.rint(steps[bad] / median)
    gaps = (multiples >= 2) & (np.abs(steps[bad] - multiples * median) <= tol)
    if gaps.all():
        missing = int(np.sum(multiples - 1))
        where = "; ".join(
            f"{int(m) - 1} between slice {k} at {dist[k]:.3f} mm and slice {k + 1} at "
            f"{dist[k + 1]:.3f} mm (expected at "
            + ", ".join(f"{dist[k] + q * steps[k] / m:.3f}" for q in range(1, int(m)))
            + " mm)"
            for k, m in zip(bad, multiples, strict=True)
        )
        raise GeometryError(
            f"{missing} slice(s) missing (the usual step is {median:.4g} mm): {where}",
            tuple(int(v) for k in bad for v in (k, k + 1)),
        )
    where = ", ".join(
        f"slices {k}→{k + 1}: {steps[k]:.4g} mm ({dist[k]:.3f} → {dist[k + 1]:.3f})"
        for k in bad[:5]
    )
    more = f" and {bad.size - 5} more" if bad.size > 5 else ""
    raise GeometryError(
        f"non-uniform slice spacing: the median step is {median:.4g} mm but {where}{more}",
        tuple(int(v) for k in bad[:5] for v in (k, k + 1)),
    )


def lps_to_ras(affine_lps: NDArray[np.float64]) -> NDArray[np.float64]:
    """Convert a voxel → LPS affine to voxel → RAS+ (negate the x and y rows)."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine_lps, dtype=np.float64)


def _fmt(point: NDArray[np.float64]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in point) + ")"

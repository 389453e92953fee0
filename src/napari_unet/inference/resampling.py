"""Resampling as nnU-Net does it: cubic splines in, logits back linearly.

nnU-Net v2 (``preprocessing/resampling/default_resampling.py``, default plans) brings a
normalised scan to the model's spacing with order-3 splines (``skimage.transform.resize``:
``scipy.ndimage.zoom`` with ``grid_mode=True``, edge values repeated, the result clipped
to the input's range) and brings the network's *logits* back to the scan's grid with
linear interpolation, before the argmax. When either spacing is anisotropic (largest /
smallest > 3, one coarsest axis) it works slice by slice along that axis: splines
(or linear) within each slice, nearest neighbour across slices.

Written here with scipy (splines in, as nnU-Net) and torch (linear back: separable 1D
interpolation with the same voxel-centre mapping as ``zoom(grid_mode=True)``, which is
``F.interpolate(align_corners=False)``), so that models imported from nnU-Net need no
nnunetv2 at run time. ``tests/models/importers`` compares both with nnunetv2's functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Spacing ratio above which nnU-Net resamples slice by slice (nnunetv2.configuration).
ANISO_THRESHOLD = 3.0


def separate_axis(current: Sequence[float], new: Sequence[float]) -> int | None:
    """The axis resampled by nearest neighbour (slice by slice), or None.

    nnU-Net's rule (``determine_do_sep_z_and_axis`` without forcing): the current
    spacing decides when it is anisotropic, else the new one; the axis is the single
    coarsest one (two equally coarse axes: no separate axis).

    Args:
        current: mm per axis of the grid resampled from.
        new: mm per axis of the grid resampled to.
    """
    for spacing in (current, new):
        s = np.asarray(spacing, dtype=np.float64)
        if s.max() / s.min() > ANISO_THRESHOLD:
            coarsest = np.where(s.max() / s == 1)[0]
            return int(coarsest[0]) if len(coarsest) == 1 else None
    return None


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` voxels along an axis of ``n_in`` (nearest
    neighbour, voxel centres aligned), rounded exactly as ``scipy.ndimage.map_coordinates``
    rounds nnU-Net's coordinates."""
    from scipy import ndimage

    coords = float(n_in) / n_out * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5
    src = np.arange(n_in, dtype=np.float64)
    return ndimage.map_coordinates(src, [coords], order=0, mode="nearest").astype(np.int64)


def _spline(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Order-3 spline resize of a float64 array, clipped to its range (skimage ``resize``
    with ``mode="edge"``, ``anti_aliasing=False``)."""
    from scipy import ndimage

    if tuple(x.shape) == tuple(shape):
        return x
    zoom = [o / i for o, i in zip(shape, x.shape, strict=True)]
    out = ndimage.zoom(x, zoom, order=3, mode="nearest", grid_mode=True)
    return np.clip(out, x.min(), x.max(), out=out)


def resample_image(array: np.ndarray, shape: Sequence[int], axis: int | None) -> np.ndarray:
    """A normalised scan on another grid over the same field of view (nnU-Net's data
    resampling: order 3, order 0 along a separate ``axis``).

    Args:
        array: ``(i, j, k)`` intensities (normalised first, as nnU-Net does).
        shape: the new shape.
        axis: the axis resampled slice by slice (`separate_axis`), or None.

    Returns:
        float32 array of ``shape``.
    """
    shape = tuple(int(n) for n in shape)
    if tuple(array.shape) == shape:
        return np.asarray(array, dtype=np.float32)
    x = np.asarray(array, dtype=np.float64)
    if axis is None:
        return _spline(x, shape).astype(np.float32)
    plane = tuple(n for a, n in enumerate(shape) if a != axis)
    out = np.empty(tuple(x.shape[axis] if a == axis else n for a, n in enumerate(shape)))
    for s in range(x.shape[axis]):
        index = tuple(s if a == axis else slice(None) for a in range(x.ndim))
        out[index] = _spline(x[index], plane)
    if x.shape[axis] != shape[axis]:
        out = np.take(out, nearest_indices(x.shape[axis], shape[axis]), axis=axis)
    return out.astype(np.float32)


def _linear_axis(t: torch.Tensor, dim: int, n_out: int, rows: np.ndarray | None) -> torch.Tensor:
    """Linear interpolation along ``dim`` to ``n_out`` voxels (only ``rows`` of them when
    given), voxel centres aligned and edges repeated."""
    n_in = t.shape[dim]
    if n_in == n_out and rows is None:
        return t
    o = np.arange(n_out, dtype=np.float64) if rows is None else np.asarray(rows, np.float64)
    src = np.maximum((o + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = torch.from_numpy((src - i0).astype(np.float32)).to(t.device)
    w = w.reshape([-1 if d == dim else 1 for d in range(t.ndim)])
    a = t.index_select(dim, torch.from_numpy(i0).to(t.device))
    b = t.index_select(dim, torch.from_numpy(i1).to(t.device))
    return a.add_((b - a).mul_(w))


def resample_logits(
    logits: torch.Tensor,
    shape: Sequence[int],
    axis: int | None,
    *,
    rows: tuple[int, Sequence[int]] | None = None,
) -> torch.Tensor:
    """Logits back on the scan's grid (nnU-Net's probabilities resampling: linear, nearest
    along a separate ``axis``).

    Args:
        logits: ``(C, i, j, k)`` float tensor on the model grid.
        shape: the scan's ``(i, j, k)`` shape.
        axis: the spatial axis resampled by nearest neighbour (`separate_axis`), or None.
        rows: ``(spatial axis, indices)``: compute only these output indices along that
            axis (the result has ``len(indices)`` there).

    Returns:
        ``(C, *shape)`` float32 (``rows`` axis shortened).
    """
    t = logits.float()
    order = list(range(3))
    if rows is not None:  # the axis with few rows first: less work after it
        order.remove(rows[0])
        order.insert(0, rows[0])
    for a in order:
        wanted = np.asarray(rows[1], dtype=np.int64) if rows and rows[0] == a else None
        n_in, n_out = t.shape[1 + a], int(shape[a])
        if a == axis:
            index = nearest_indices(n_in, n_out)
            index = index if wanted is None else index[wanted]
            if wanted is not None or n_in != n_out:
                t = t.index_select(1 + a, torch.from_numpy(index).to(t.device))
        else:
            t = _linear_axis(t, 1 + a, n_out, wanted)
    return t

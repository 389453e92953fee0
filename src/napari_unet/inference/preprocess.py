"""Preprocessing from a `ModelSpec`: intensity normalisation, resampling, 2D context stacks.

Normalisation is split in two: `normalization_params` computes the whole-volume
statistics once (cheap, no copy of the volume), and `apply_normalization` is a pointwise
``clip(x, lo, hi) * scale + offset`` applied tile by tile, so that inference never holds a
normalised float copy of a large scan. Training code calls the same two functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from napari_unet.models.spec import ModelSpec, Normalization

#: Percentiles and moments are computed on at most this many voxels (an even stride).
_STATS_SAMPLE = 4_000_000


@dataclass(frozen=True)
class NormParams:
    """``y = clip(x, lo, hi) * scale + offset`` (float32)."""

    lo: float
    hi: float
    scale: float
    offset: float


def normalization_params(array: np.ndarray, norm: Normalization) -> NormParams:
    """Statistics of a volume for its normalisation.

    Args:
        array: the scan, any shape (CT in HU).
        norm: the spec's normalisation.

    Returns:
        NormParams. CT: clip to ``window`` and map it linearly onto ``output_range``.
        MR: clip to the ``percentiles`` of the (nonzero) voxels, then z-score with the
        mean and standard deviation of the clipped (nonzero) voxels. "none": identity.
    """
    if norm.mode == "none":
        return NormParams(-np.inf, np.inf, 1.0, 0.0)
    if norm.mode == "ct":
        lo, hi = norm.window
        r0, r1 = norm.output_range
        scale = (r1 - r0) / (hi - lo)
        return NormParams(lo, hi, scale, r0 - lo * scale)
    flat = np.asarray(array).reshape(-1)
    if flat.size > _STATS_SAMPLE:
        flat = flat[:: -(-flat.size // _STATS_SAMPLE)]
    flat = flat.astype(np.float64)
    if norm.nonzero and np.any(flat != 0):
        flat = flat[flat != 0]
    if flat.size == 0:
        return NormParams(0.0, 0.0, 1.0, 0.0)
    lo, hi = (float(v) for v in np.percentile(flat, norm.percentiles))
    clipped = np.clip(flat, lo, hi)
    mean, std = float(clipped.mean()), float(clipped.std())
    scale = 1.0 / std if std > 1e-8 else 1.0
    return NormParams(lo, hi, scale, -mean * scale)


def apply_normalization(x: torch.Tensor | np.ndarray, params: NormParams) -> torch.Tensor:
    """Pointwise normalisation of any array or tensor (returns float32 torch)."""
    t = torch.as_tensor(x).to(torch.float32)
    if np.isfinite(params.lo) or np.isfinite(params.hi):
        t = t.clamp(params.lo, params.hi)
    if params.scale != 1.0 or params.offset != 0.0:
        t = t * params.scale + params.offset
    return t


def as_contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous array (``a`` itself if it is one already), a strided view
    copied by torch, which uses every core (numpy copies it on one: ~0.1 s for a
    512×512×128 transpose on 2 cores)."""
    if a.flags.c_contiguous:
        return a
    odd_uint = a.dtype.kind == "u" and a.dtype.itemsize > 1  # few torch kernels
    if min(a.strides) < 0 or a.dtype.kind not in "fiub" or odd_uint or not a.dtype.isnative:
        return np.ascontiguousarray(a)
    return torch.from_numpy(a).contiguous().numpy()


def model_grid_shape(
    shape: Sequence[int],
    spacing: Sequence[float],
    target_spacing: Sequence[float | None] | None,
    *,
    keep_axes: Sequence[int] = (),
) -> tuple[int, ...]:
    """Shape of a volume resampled to ``target_spacing`` (same field of view).

    Args:
        shape: voxels per array axis.
        spacing: mm per array axis.
        target_spacing: mm per array axis (None entries or None: native).
        keep_axes: axes never resampled (a 2D model's slice axis).
    """
    if target_spacing is None:
        return tuple(int(s) for s in shape)
    out = []
    for ax, (n, s, t) in enumerate(zip(shape, spacing, target_spacing, strict=True)):
        out.append(int(n) if t is None or ax in keep_axes else max(1, round(n * s / t)))
    return tuple(out)


def resample(array: np.ndarray | torch.Tensor, shape: Sequence[int], *, labels: bool = False):
    """Resample a 3D array onto another grid over the same field of view.

    Voxel centres map as in ``torch.nn.functional.interpolate(align_corners=False)``, so
    resampling to a shape and back returns exactly the original grid.

    Args:
        array: ``(i, j, k)`` array or tensor.
        shape: the new ``(i, j, k)`` shape.
        labels: nearest neighbour (label maps) instead of trilinear.

    Returns:
        Same kind as the input (numpy in, numpy out); labels keep their dtype,
        intensities become float32.
    """
    is_numpy = isinstance(array, np.ndarray)
    t = torch.as_tensor(array)
    if tuple(t.shape) == tuple(shape):
        return array
    dtype = t.dtype
    if labels:
        src = t if dtype in (torch.uint8, torch.float32) else t.to(torch.float32)
        out = F.interpolate(src[None, None], size=tuple(shape), mode="nearest-exact")[0, 0]
        out = out.to(dtype)
    else:
        src = t.to(torch.float32)[None, None]
        out = F.interpolate(src, size=tuple(shape), mode="trilinear", align_corners=False)[0, 0]
    return out.numpy() if is_numpy else out


def slice_stack(array: np.ndarray, index: int, context: int, axis: int = 0) -> np.ndarray:
    """One 2D model input: slice ``index`` along ``axis`` and ``context`` neighbours each side.

    Neighbours beyond the ends repeat the edge slice. The result is ``(C, H, W)`` with
    ``C = 1 + 2 * context`` ordered by slice index (centre at ``context``) and ``H, W``
    the remaining array axes in increasing order.
    """
    n = array.shape[axis]
    idx = np.clip(np.arange(index - context, index + context + 1), 0, n - 1)
    return np.moveaxis(np.take(array, idx, axis=axis), axis, 0)


def spec_slice_axis(spec: ModelSpec, through_plane_axis: int, slice_axis: int | None) -> int:
    """The slice axis of a 2D model: the argument, else the spec's, else the scan's."""
    if slice_axis is not None:
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}")
        return int(slice_axis)
    return spec.slice_axis if spec.slice_axis is not None else int(through_plane_axis)

"""Tile layout for sliding-window inference: tile sizes, positions, blending weights.

Where the speed comes from (measured against MONAI's ``sliding_window_inference`` in
benchmarks/bench_inference.py): MONAI slides the *training patch* with a fixed overlap
fraction, so with a 64³ patch and overlap 0.25 every voxel of a large scan is computed
about 2.4–2.8 times. For a network whose eval-mode output is a local function of its input
(batch norm, no instance/group/layer norm; see `models.build.has_sample_dependent_norm`)
the tile size does not change the answer away from tile borders, so we pick the largest
tiles that fit a voxel budget and keep the *absolute* overlap MONAI would use (a quarter of
the patch), which brings redundancy down to ~1.1–1.5×. Networks with per-tile statistics
keep patch-sized tiles, like MONAI.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch


def axis_positions(length: int, tile: int, min_overlap: int, divisor: int = 1) -> list[int]:
    """Start positions of tiles of size ``tile`` covering ``[0, length)``.

    The fewest tiles whose neighbours share at least ``min_overlap`` voxels, spread evenly
    (first at 0, last ending at ``length``). ``length <= tile`` gives ``[0]``.

    When ``length`` and ``tile`` are multiples of ``divisor`` (the network's total stride)
    every start is one too, so all tiles see the same pooling grid as a single pass over
    the whole frame; a tile shifted off that grid changes the answer everywhere in the
    tile, not only at its borders (ours vs tile-free Dice 0.965 → 0.996 on a 512×192×128
    CT crop, benchmarks/results/inference_cpu.json).
    """
    if length <= tile:
        return [0]
    if length % divisor or tile % divisor:
        divisor = 1
    step = max(divisor, (tile - min_overlap) // divisor * divisor)
    span = length - tile
    n = math.ceil(span / step) + 1
    return [round(p / divisor) * divisor for p in np.linspace(0, span, n)]


def aligned_frame(extent: int, tile: int, divisor: int) -> int:
    """Padded length an axis is tiled over: at least ``tile``, and a multiple of ``divisor``
    when the tile is (so that `axis_positions` can align every tile)."""
    frame = max(extent, tile)
    if tile % divisor == 0:
        frame = math.ceil(frame / divisor) * divisor
    return frame


def choose_tile(
    extent: Sequence[int],
    patch: Sequence[int],
    *,
    divisor: int,
    max_voxels: int,
    min_overlap: Sequence[int],
    grow: bool,
) -> tuple[int, ...]:
    """The tile size that computes the fewest voxels over a volume.

    Args:
        extent: voxels per spatial axis of the (padded) volume.
        patch: the model's patch size (the tile when ``grow`` is False).
        divisor: tile sizes are multiples of it (the network's total stride).
        max_voxels: upper bound of a tile's voxel count (memory).
        min_overlap: voxels shared by neighbouring tiles, per axis.
        grow: whether tiles may be larger than ``patch`` (tile-size independent networks).

    Returns:
        Tile size per axis, each a multiple of ``divisor``, at least ``patch`` or the
        (rounded-up) extent, whichever is smaller.
    """
    if not grow:
        return tuple(int(p) for p in patch)
    return _cheapest_tile(tuple(extent), tuple(patch), divisor, max_voxels, tuple(min_overlap))


@functools.lru_cache(maxsize=64)
def _cheapest_tile(extent, patch, divisor, max_voxels, min_overlap) -> tuple[int, ...]:
    """A search every >= 16 voxels per axis, then finer steps (multiples of ``divisor``)
    around its best (512×512×128, patch 64, 2²⁰ voxels: 80×80×128 → 88×88×128, 64 → 49
    tiles, 9 % faster on the CPU)."""
    rounded = [math.ceil(e / divisor) * divisor for e in extent]
    low = [min(math.ceil(p / divisor) * divisor, r) for p, r in zip(patch, rounded, strict=True)]
    step = math.ceil(16 / divisor) * divisor
    candidates = [
        sorted(set(range(lo, r + 1, step)) | {lo, r}) for lo, r in zip(low, rounded, strict=True)
    ]
    coarse = _fewest_voxels(candidates, extent, low, divisor, max_voxels, min_overlap)
    inc = divisor * max(1, step // (4 * divisor))  # at most ~8 sizes per axis
    near = [
        sorted({min(max(t + d, lo), r) for d in range(-step + inc, step, inc)})
        for t, lo, r in zip(coarse, low, rounded, strict=True)
    ]
    return _fewest_voxels(near, extent, low, divisor, max_voxels, min_overlap)


def _fewest_voxels(candidates, extent, low, divisor, max_voxels, min_overlap) -> tuple[int, ...]:
    """The candidate tile (one size per axis from ``candidates``) whose tiles, with a
    fixed cost per forward pass, compute the fewest voxels."""
    best, best_cost = tuple(low), math.inf
    tile_overhead = 16_384  # voxels' worth of fixed cost per forward pass
    for tile in itertools.product(*candidates):
        if math.prod(tile) > max_voxels and tile != tuple(low):
            continue
        n = [
            len(axis_positions(aligned_frame(e, t, divisor), t, o, divisor))
            for e, t, o in zip(extent, tile, min_overlap, strict=True)
        ]
        cost = math.prod(n) * (math.prod(tile) + tile_overhead)
        if cost < best_cost:
            best, best_cost = tile, cost
    return tuple(int(t) for t in best)


def importance_map(
    tile: Sequence[int], device: torch.device, *, sigma_scale: float = 0.125
) -> torch.Tensor:
    """Gaussian blending weights of a tile (MONAI ``compute_importance_map``), float32.

    Layout ``tile`` (spatial only). Smallest weight clamped above 0 by MONAI.
    """
    from monai.data.utils import compute_importance_map

    w = compute_importance_map(tuple(tile), mode="gaussian", sigma_scale=sigma_scale, device=device)
    return w.to(torch.float32)


def sliding_steps(length: int, tile: int, step: float = 0.5) -> list[int]:
    """Tile starts along one axis as nnU-Net places them (``tile_step_size`` ``step``).

    nnU-Net's ``compute_steps_for_sliding_window``: the fewest tiles whose starts are at
    most ``step * tile`` apart, spread evenly from 0 to ``length - tile`` and rounded
    (half to even). ``length`` is the padded extent (at least ``tile``).
    """
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / (tile * step)) + 1
    gap = (length - tile) / (n - 1)
    return [int(np.round(gap * i)) for i in range(n)]


@functools.lru_cache(maxsize=8)
def _nnunet_gaussian(tile: tuple[int, ...]) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros(tile)
    impulse[tuple(n // 2 for n in tile)] = 1
    g = gaussian_filter(impulse, [n / 8 for n in tile], 0, mode="constant", cval=0)
    g = torch.from_numpy(g / (g.max() / 10)).to(torch.float16)  # nnU-Net keeps it in fp16
    g[g == 0] = g[g != 0].min()
    return g.float().numpy()


def nnunet_importance_map(tile: Sequence[int], device: torch.device) -> torch.Tensor:
    """nnU-Net's gaussian blending weights of a tile, float32, layout ``tile``.

    As ``compute_gaussian(tile, sigma_scale=1/8, value_scaling_factor=10)``: an impulse
    at ``n // 2`` per axis blurred with sigma ``n / 8`` (zero outside), peak scaled to 10,
    rounded to float16 as nnU-Net stores it, zeros raised to the smallest weight.
    """
    return torch.from_numpy(_nnunet_gaussian(tuple(int(n) for n in tile))).to(device)


def read_tile(
    source: np.ndarray,
    start: Sequence[int],
    tile: Sequence[int],
    pad_before: Sequence[int],
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The part of ``source`` under a tile, and where it goes inside the tile.

    Args:
        source: array whose trailing ``len(tile)`` axes are spatial.
        start: tile start in the padded frame (source index + ``pad_before``).
        tile: tile size.
        pad_before: zeros before the source along each spatial axis (volumes smaller than
            the tile sit in its middle, like MONAI's padding).

    Returns:
        (view of source, slices of the tile it fills).
    """
    lead = source.ndim - len(tile)
    src, dst = [slice(None)] * lead, [slice(None)] * lead
    for s, t, p, n in zip(start, tile, pad_before, source.shape[lead:], strict=True):
        a, b = max(s - p, 0), min(s - p + t, n)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a + p - s, a + p - s + max(0, b - a)))
    return source[tuple(src)], tuple(dst)

"""The two inference loops: 3D sliding window over slabs, 2D slice batches.

Both are generators (see `napari_unet.jobs`) that check ``stop`` before every batch and
write into preallocated output arrays. Logits are blended with gaussian weights in float32
accumulators that cover only the part of the scan still being computed: for 3D a slab one
tile thick along the axis with the most tile positions (finalised and shifted as the
window moves on), for 2D the slices in flight. So memory does not grow with the length
of the scan, and no float copy of the whole scan is ever made: tiles are read from the
raw array and normalised one by one. A label is the argmax of the blended logits (the
division by the weight sum is skipped: it does not change the argmax); the uncertainty is
the softmax entropy of the blended logits divided by log(number of classes), in [0, 1].

The accumulators live where the `Runner` says (`Runner.acc_device`: with the network on
CUDA and the CPU). Every step on them — blending a tile, argmax and entropy, moving the
slab on — runs through `Runner.guarded`: an out-of-memory error moves the network and
the accumulators to the CPU and the step is redone there, so a fallback never mixes
devices and never loses or doubles a tile.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch

from napari_unet.inference.preprocess import NormParams, apply_normalization, as_contiguous
from napari_unet.inference.runner import Runner
from napari_unet.inference.tiling import (
    aligned_frame,
    axis_positions,
    importance_map,
    read_tile,
)
from napari_unet.jobs import Cancelled, Job, Progress

R = TypeVar("R")


@dataclass
class Layout:
    """Tiles over a volume (3D) or over a slice (2D).

    Attributes:
        tile: tile size per spatial axis.
        pad_before: zeros before the data per axis (data smaller than a tile is centred).
        frame: padded extent per axis, ``max(data, tile)`` rounded up to the divisor.
        positions: tile starts per axis, in the padded frame.
    """

    tile: tuple[int, ...]
    pad_before: tuple[int, ...]
    frame: tuple[int, ...]
    positions: list[list[int]]

    @classmethod
    def over(
        cls,
        extent: Sequence[int],
        tile: Sequence[int],
        min_overlap: Sequence[int],
        divisor: int = 1,
    ) -> Layout:
        """Tiles over ``extent``; with ``divisor`` (the network's total stride) every tile
        start is a multiple of it, as in one pass over the whole padded frame."""
        frame = tuple(aligned_frame(e, t, divisor) for e, t in zip(extent, tile, strict=True))
        pad = tuple((f - e) // 2 for f, e in zip(frame, extent, strict=True))
        pos = [
            axis_positions(f, t, o, divisor)
            for f, t, o in zip(frame, tile, min_overlap, strict=True)
        ]
        return cls(tuple(tile), pad, frame, pos)

    @property
    def n_tiles(self) -> int:
        return math.prod(len(p) for p in self.positions)


def argmax0(acc: torch.Tensor) -> torch.Tensor:
    """Index of the largest channel, ``(C, *S)`` → ``(*S)`` uint8 (int32 above 256 classes);
    ties go to the lower index, as ``argmax``.

    A running max over the few channels: ``torch.argmax(dim=0)`` on a strided crop of the
    accumulator measured ~10× slower on CPU (0.27 s for 3 × 1 M voxels).
    """
    dtype = torch.uint8 if acc.shape[0] <= 256 else torch.int32
    best = acc[0].clone()
    index = torch.zeros(best.shape, dtype=dtype, device=acc.device)
    for c in range(1, acc.shape[0]):
        better = acc[c] > best
        index.masked_fill_(better, c)
        best = torch.maximum(best, acc[c])
    return index


def _finalize(acc: torch.Tensor, wsum: torch.Tensor, want_unc: bool):
    """Labels (uint8/uint16 numpy) and optional normalised entropy (float32 numpy)."""
    labels = argmax0(acc).cpu().numpy()
    if not want_unc:
        return labels, None
    p = torch.softmax(acc / wsum.clamp_min(1e-12), dim=0)
    ent = -(p * torch.log(p.clamp_min(1e-12))).sum(0) / math.log(acc.shape[0])
    return labels, ent.clamp_(0, 1).cpu().numpy()


def _check(stop: Callable[[], bool]) -> None:
    if stop():
        raise Cancelled("prediction stopped")


class _Buffers:
    """The blending buffers (weights, accumulators), kept on the runner's accumulator
    device: after an out-of-memory fallback they follow the network to the CPU.

    Keys: ``"weight"`` (the tile's blending weights), ``("acc", k)`` and ``("wsum", k)``
    (logits and weight sums of slab ``k`` = 0 in 3D, of slice ``k`` in 2D).
    """

    def __init__(self, run: Runner) -> None:
        self.run = run
        self.device = run.acc_device
        self.t: dict[Any, torch.Tensor] = {}

    def follow(self) -> None:
        """Move every buffer to the runner's accumulator device if it changed."""
        dev = self.run.acc_device
        if dev != self.device:
            self.t = {k: v.to(dev) for k, v in self.t.items()}
            self.device = dev

    def guarded(self, step: Callable[[], R], what: str) -> R:
        """``step()`` in inference mode with the buffers where the runner wants them;
        after an out-of-memory error everything moves to the CPU and it is redone."""

        def on_device() -> R:
            with torch.inference_mode():
                self.follow()
                return step()

        return self.run.guarded(on_device, what)

    def drop(self, key: Any) -> None:
        self.t.pop(("acc", key), None)
        self.t.pop(("wsum", key), None)


def _add_tile(
    bufs: _Buffers,
    key: Any,
    logits: torch.Tensor,
    region: tuple[slice, ...],
    frame: Sequence[int],
) -> None:
    """Blend one tile's logits ``(C, *tile)`` into the buffers of ``key`` at ``region``
    (allocated as zeros of ``frame`` on first use). Allocates before it writes, so a
    failed call changes nothing and can be redone."""
    t, dev = bufs.t, bufs.device
    if "weight" not in t:
        t["weight"] = importance_map(tuple(s.stop - s.start for s in region), dev)
    if ("acc", key) not in t:
        acc = torch.zeros((logits.shape[0], *frame), dtype=torch.float32, device=dev)
        wsum = torch.zeros(tuple(frame), dtype=torch.float32, device=dev)
        t[("acc", key)], t[("wsum", key)] = acc, wsum
    weight = t["weight"]
    contrib = logits.to(dev) * weight
    t[("acc", key)][(slice(None), *region)].add_(contrib)
    t[("wsum", key)][region].add_(weight)


def _labels_of(bufs: _Buffers, key: Any, crop: tuple[slice, ...], want_unc: bool):
    """Labels (and uncertainty) of the ``crop`` of ``key``'s buffers: argmax and entropy
    on the buffers' device, results as numpy arrays."""
    acc = bufs.t[("acc", key)][(slice(None), *crop)]
    return _finalize(acc, bufs.t[("wsum", key)][crop], want_unc)


def sliding_window_3d(
    run: Runner,
    source: np.ndarray,
    params: NormParams,
    layout: Layout,
    n_classes: int,
    out_labels: np.ndarray,
    out_unc: np.ndarray | None,
    *,
    wanted: tuple[int, int, int] | None,
    stop: Callable[[], bool],
) -> Job[None]:
    """Sliding-window prediction of a 3D volume into ``out_labels`` (and ``out_unc``).

    Args:
        run: the batched network; the slab buffers live on its `Runner.acc_device`.
        source: ``(i, j, k)`` raw intensities on the model grid.
        params: normalisation, applied per tile.
        layout: tiles over ``source.shape``.
        n_classes: output channels.
        out_labels, out_unc: ``(i, j, k)`` outputs, filled in place.
        wanted: (axis, first, stop) — only tiles meeting that range of slices are run.
        stop: checked before each batch.
    """
    tiles = list(itertools.product(*layout.positions))
    if wanted is not None:
        ax, lo, hi = wanted
        p = layout.pad_before[ax]
        tiles = [t for t in tiles if t[ax] - p < hi and t[ax] - p + layout.tile[ax] > lo]
    sa = int(np.argmax([len(p) for p in layout.positions]))  # slab axis
    tiles.sort(key=lambda t: (t[sa], t))
    starts = sorted({t[sa] for t in tiles})
    T, frame, pad = layout.tile, layout.frame, layout.pad_before
    buf_shape = tuple(T[a] if a == sa else frame[a] for a in range(3))
    bufs = _Buffers(run)
    batch_size = run.batch_size  # fixed here: the runner splits a batch it cannot fit
    done, total = 0, len(tiles)
    for gi, g in enumerate(starts):
        group = [t for t in tiles if t[sa] == g]
        for b0 in range(0, len(group), batch_size):
            _check(stop)
            batch = group[b0 : b0 + batch_size]
            x = torch.zeros((len(batch), 1, *T), dtype=torch.float32)
            for n, start in enumerate(batch):
                view, dst = read_tile(source, start, T, pad)
                x[(n, 0, *dst)] = apply_normalization(view, params)
            logits = run(x)
            for n, start in enumerate(batch):
                region = tuple(
                    slice(s - g, s - g + t) if a == sa else slice(s, s + t)
                    for a, (s, t) in enumerate(zip(start, T, strict=True))
                )
                bufs.guarded(partial(_add_tile, bufs, 0, logits[n], region, buf_shape),
                             "blending a tile")  # fmt: skip
            del logits
            done += len(batch)
            yield Progress(done, total, run.messages[-1] if run.messages else "")
        nxt = starts[gi + 1] if gi + 1 < len(starts) else None
        rows = min(T[sa], (nxt - g) if nxt is not None else T[sa], frame[sa] - g)
        _emit(bufs, sa, g, rows, pad, out_labels, out_unc)
        shift = T[sa] if nxt is None else min(nxt - g, T[sa])
        bufs.guarded(partial(_shift, bufs, sa, shift, T[sa]), "moving the slab on")


def _shift(bufs: _Buffers, sa: int, shift: int, length: int) -> None:
    """Move the slab buffers ``shift`` rows back along ``sa`` and zero the rows freed
    (copies first, so a failed call changes nothing)."""
    acc, wsum = bufs.t[("acc", 0)], bufs.t[("wsum", 0)]
    keep = length - shift
    if keep > 0:
        a = acc[(slice(None), *_along(sa, slice(shift, None)))].clone()
        w = wsum[_along(sa, slice(shift, None))].clone()
        acc[(slice(None), *_along(sa, slice(0, keep)))] = a
        wsum[_along(sa, slice(0, keep))] = w
    acc[(slice(None), *_along(sa, slice(max(keep, 0), None)))] = 0
    wsum[_along(sa, slice(max(keep, 0), None))] = 0


def _along(axis: int, s: slice) -> tuple[slice, ...]:
    return tuple(s if a == axis else slice(None) for a in range(3))


def _emit(bufs, sa, g, rows, pad, out_labels, out_unc) -> None:
    """Write the first ``rows`` buffer rows (frame rows ``g …``) into the outputs."""
    lo = max(g, pad[sa])
    hi = min(g + rows, pad[sa] + out_labels.shape[sa])
    if hi <= lo:
        return
    crop = tuple(
        slice(lo - g, hi - g) if a == sa else slice(pad[a], pad[a] + out_labels.shape[a])
        for a in range(3)
    )
    labels, unc = bufs.guarded(partial(_labels_of, bufs, 0, crop, out_unc is not None),
                               "computing labels (argmax)")  # fmt: skip
    dst = _along(sa, slice(lo - pad[sa], hi - pad[sa]))
    out_labels[dst] = labels
    if out_unc is not None:
        out_unc[dst] = unc


def _slice_block(source: np.ndarray, needed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A C-contiguous copy of the slices a batch needs; returns (block, needed indices).

    ``source`` is usually a slice-first *view* of a C-ordered ``(i, j, k)`` scan sliced
    along k; gathering single slices from it is very slow (0.5 s per 512² slice of a
    128-slice scan: stride 512 bytes), copying a block of consecutive slices at once is
    ~100× faster. Row ``r`` of the block is slice ``needed[r]``.
    """
    lo, hi = int(needed[0]), int(needed[-1])
    if hi - lo + 1 <= 2 * len(needed):
        return as_contiguous(source[lo : hi + 1]), np.arange(lo, hi + 1)
    return np.stack([source[i] for i in needed]), needed


def slices_2d(
    run: Runner,
    source: np.ndarray,
    params: NormParams,
    layout: Layout,
    n_classes: int,
    out_labels: np.ndarray,
    out_unc: np.ndarray | None,
    *,
    slices: Sequence[int],
    context: int,
    stop: Callable[[], bool],
) -> Job[None]:
    """Slice-by-slice prediction; ``source``/outputs are ``(slice, H, W)`` views.

    Args:
        source: raw intensities with the slice axis first (a view is fine).
        layout: tiles over one slice ``(H, W)``.
        out_labels, out_unc: slice-first views of the outputs, filled in place.
        slices: slice indices to predict, in order.
        context: neighbouring slices on each side fed as channels.
        (others as in `sliding_window_3d`)
    """
    tiles = list(itertools.product(*layout.positions))
    T, pad = layout.tile, layout.pad_before
    hw = out_labels.shape[1:]
    crop = tuple(slice(p, p + n) for p, n in zip(pad, hw, strict=True))
    if len(tiles) == 1:  # whole slices: no blending, one argmax per batch
        return (
            yield from _whole_slices(run, source, params, layout, out_labels, out_unc,
                                     slices=slices, context=context, crop=crop, stop=stop)
        )  # fmt: skip
    items = [(s, t) for s in slices for t in tiles]
    bufs = _Buffers(run)
    remaining: dict[int, int] = {}  # tiles still to come per slice in flight
    done = 0
    batch_size = run.batch_size  # fixed here: the runner splits a batch it cannot fit
    for b0 in range(0, len(items), batch_size):
        _check(stop)
        batch = items[b0 : b0 + batch_size]
        x = torch.zeros((len(batch), 1 + 2 * context, *T), dtype=torch.float32)
        offsets = np.arange(-context, context + 1)
        idx = {s: np.clip(s + offsets, 0, source.shape[0] - 1) for s, _ in batch}
        block, rows = _slice_block(source, np.unique(np.concatenate(list(idx.values()))))
        for n, (s, start) in enumerate(batch):
            view, dst = read_tile(block[np.searchsorted(rows, idx[s])], start, T, pad)
            x[(n, *dst)] = apply_normalization(view, params)
        logits = run(x)
        for n, (s, start) in enumerate(batch):
            remaining.setdefault(s, len(tiles))
            region = tuple(slice(p, p + t) for p, t in zip(start, T, strict=True))
            bufs.guarded(partial(_add_tile, bufs, s, logits[n], region, layout.frame),
                         "blending a tile")  # fmt: skip
            remaining[s] -= 1
            if remaining[s] == 0:
                labels, unc = bufs.guarded(
                    partial(_labels_of, bufs, s, crop, out_unc is not None),
                    "computing labels (argmax)",
                )
                out_labels[s] = labels
                if out_unc is not None:
                    out_unc[s] = unc
                bufs.drop(s)
                del remaining[s]
                done += 1
        del logits
        yield Progress(done, len(slices), run.messages[-1] if run.messages else "")


def _whole_slices(
    run: Runner,
    source: np.ndarray,
    params: NormParams,
    layout: Layout,
    out_labels: np.ndarray,
    out_unc: np.ndarray | None,
    *,
    slices: Sequence[int],
    context: int,
    crop: tuple[slice, ...],
    stop: Callable[[], bool],
) -> Job[None]:
    """`slices_2d` when one tile covers a whole slice: a batch of slices is read and
    normalised in one step, and its labels come back in one argmax and one copy to the
    host. Blending a single tile with positive weights changes neither the argmax nor
    the softmax, so the result is the blended one; per slice, the GPU did ~10 small
    kernels and a host sync each (177 slices/s at 512² on an H100, bf16)."""
    batch_size = run.batch_size  # fixed here: the runner splits a batch it cannot fit
    for b0 in range(0, len(slices), batch_size):
        _check(stop)
        batch = np.asarray(slices[b0 : b0 + batch_size])
        x = run.guarded(partial(_batch_input, run, source, params, layout, batch, context),
                        "reading a batch of slices")  # fmt: skip
        logits = run(x)
        del x
        labels, unc = run.guarded(partial(_batch_labels, run, logits, crop, out_unc is not None),
                                  "computing labels (argmax)")  # fmt: skip
        del logits
        _write_rows(out_labels, batch, labels)
        if out_unc is not None:
            _write_rows(out_unc, batch, unc)
        yield Progress(b0 + len(batch), len(slices), run.messages[-1] if run.messages else "")


def _batch_input(
    run: Runner,
    source: np.ndarray,
    params: NormParams,
    layout: Layout,
    batch: np.ndarray,
    context: int,
) -> torch.Tensor:
    """The network input ``(N, 1 + 2 context, *tile)`` of whole slices ``batch``, built on
    the runner's device: only the raw slices cross to a GPU, where they are stacked with
    their neighbours, normalised and padded."""
    idx = np.clip(batch[:, None] + np.arange(-context, context + 1), 0, source.shape[0] - 1)
    block, rows = _slice_block(source, np.unique(idx))
    if block.dtype.kind == "u" and block.dtype.itemsize > 1:  # torch lacks most uint16 ops
        block = block.astype(np.int64 if block.dtype.itemsize > 2 else np.int32)
    elif block.dtype == np.float64:  # normalised in float32 anyway; MPS has no float64
        block = block.astype(np.float32)
    raw = torch.from_numpy(block).to(run.device)
    picked = raw[torch.from_numpy(np.searchsorted(rows, idx)).to(run.device)]
    x = torch.zeros((*idx.shape, *layout.tile), dtype=torch.float32, device=run.device)
    pad = layout.pad_before
    x[(..., *(slice(p, p + n) for p, n in zip(pad, source.shape[1:], strict=True)))] = (
        apply_normalization(picked, params)
    )
    return x


def _write_rows(out: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``out[rows] = values``; a run of consecutive rows is written as one block."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
        out[rows[0] : rows[-1] + 1] = values
    else:
        out[rows] = values


def _batch_labels(run: Runner, logits: torch.Tensor, crop: tuple[slice, ...], want_unc: bool):
    """Labels (and normalised entropy) of a batch of whole-slice logits ``(N, C, H, W)``,
    cropped to the slice; computed where the runner's accumulators live now."""
    with torch.inference_mode():
        acc = logits[(slice(None), slice(None), *crop)].to(run.acc_device).transpose(0, 1)
        return _finalize(acc, torch.ones((), device=acc.device), want_unc)

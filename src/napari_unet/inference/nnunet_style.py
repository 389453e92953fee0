"""`predict_nnunet_steps`: prediction the way nnU-Net v2's ``nnUNetPredictor`` makes it.

Used by `predict_steps` for specs with ``inference_style == "nnunet"`` (models imported
from nnU-Net): an nnU-Net network has instance normalisation, so its answer depends on
where the tiles lie, and it was trained on scans resampled nnU-Net's way. Learned from
nnunetv2 2.x (``DefaultPreprocessor.run_case_npy``, ``nnUNetPredictor
.predict_sliding_window_return_logits``, ``export_prediction``), rewritten with numpy,
scipy and torch so that no nnunetv2 is needed at run time:

1. crop to the bounding box of the nonzero voxels (``crop_to_nonzero``; label 0 outside);
2. normalise the crop, then resample it to the model's spacing with order-3 splines
   (`resampling.resample_image`; slice by slice along an anisotropic axis);
3. pad to at least the patch (centred, zeros after normalisation), tiles of the patch
   size at nnU-Net's positions (`tiling.sliding_steps`, step 0.5), blended with its
   gaussian (`tiling.nnunet_importance_map`), divided by the weight sum;
4. the logits back to the crop's grid linearly (`resampling.resample_logits`), argmax
   (and the softmax entropy for the uncertainty), into the scan's grid.

2D models run every slice along their slice axis with 2D tiles, as nnU-Net's ``2d``
configuration does. Not reproduced: test-time mirroring, fold ensembles, and nnU-Net's
float16 accumulators (float32 here). Memory: the logits of the whole crop on the model
grid, ``classes × voxels`` float32, as nnU-Net holds them.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from napari_unet.inference.device import autocast_dtype
from napari_unet.inference.predict import Prediction, voxel_budgets
from napari_unet.inference.preprocess import apply_normalization, normalization_params
from napari_unet.inference.resampling import resample_image, resample_logits, separate_axis
from napari_unet.inference.runner import Runner, eval_on
from napari_unet.inference.stitch import argmax0
from napari_unet.inference.tiling import nnunet_importance_map, read_tile, sliding_steps
from napari_unet.io.volume import Volume
from napari_unet.jobs import Cancelled, Job, Progress
from napari_unet.models.spec import ModelSpec
from napari_unet.typing import Precision


def nonzero_box(array: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the nonzero voxels (the whole array when there are none), as
    nnU-Net's ``crop_to_nonzero`` crops (filling holes does not change the box)."""
    box = []
    for a in range(array.ndim):
        other = tuple(b for b in range(array.ndim) if b != a)
        hit = np.flatnonzero(np.any(array != 0, axis=other))
        if hit.size == 0:
            return tuple(slice(0, n) for n in array.shape)
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def model_spacing(spec: ModelSpec, spacing: Sequence[float], ax: int) -> list[float]:
    """mm per axis of the model grid: the target spacing, the scan's where it is None
    (and along a 2D model's slice axis)."""
    target = spec.target_spacing or (None,) * 3
    keep = spec.spatial_dims == 2
    return [
        float(s) if t is None or (keep and a == ax) else float(t)
        for a, (s, t) in enumerate(zip(spacing, target, strict=True))
    ]


def predict_nnunet_steps(
    net: torch.nn.Module,
    spec: ModelSpec,
    volume: Volume,
    *,
    dev: torch.device,
    ax: int,
    slices: list[int] | None,
    batch_size: int | None,
    uncertainty: bool,
    precision: Precision,
    stop: Callable[[], bool],
) -> Job[Prediction]:
    """`predict_steps` for an nnU-Net style spec (see module docstring); the options are
    checked already (``ax``: a 2D model's slice axis, else the axis of ``slices``)."""
    t0 = time.perf_counter()
    box = nonzero_box(volume.array)
    crop = volume.array[box]
    new = model_spacing(spec, volume.spacing, ax)
    sizes = zip(volume.spacing, new, crop.shape, strict=True)  # nnU-Net's compute_new_shape
    grid = tuple(max(1, round(float(s) / t * int(n))) for s, t, n in sizes)
    params = normalization_params(crop, spec.normalization)
    data = resample_image(apply_normalization(crop, params).numpy(), grid,
                          separate_axis(volume.spacing, new))  # fmt: skip
    flat = spec.spatial_dims == 2
    lo, hi = box[ax].start, box[ax].stop
    rows = None if slices is None else [s - lo for s in slices if lo <= s < hi]
    tile = (1, *spec.patch_size) if flat else tuple(spec.patch_size)
    source = np.moveaxis(data, ax, 0) if flat else data
    tiles, layout = _tiles(source.shape, tile, flat=flat, ax=ax, rows=rows, crop_n=crop.shape)
    if batch_size is None:
        batch_size = max(1, voxel_budgets(dev, spec)[1] // math.prod(tile))
    amp = autocast_dtype(dev, precision, net=net)
    with eval_on(net, dev, False) as ready:
        run = Runner(ready, dev, amp, batch_size)
        logits = yield from _slide(run, source, tiles, tile, layout, spec.out_channels,
                                   flat=flat, stop=stop)  # fmt: skip
    if flat:
        logits = torch.movedim(logits, 1, 1 + ax)
    labels, unc = _back(logits, volume.shape, box, separate_axis(new, volume.spacing),
                        ax=ax, rows=rows, uncertainty=uncertainty)  # fmt: skip
    label_vol = volume.with_array(labels)
    label_vol.metadata.update(label_names=list(spec.labels), label_colors=list(spec.colors))
    info = {
        "tile": list(spec.patch_size),
        "batch_size": run.batch_size,
        "n_tiles": len(tiles),
        "precision": str(amp).replace("torch.", "") if amp else "float32",
        "model_grid": list(grid),
        "slice_axis": ax,
        "channels_last": False,
        "inference_style": "nnunet",
        "crop": [[b.start, b.stop] for b in box],
    }
    unc_vol = None if unc is None else volume.with_array(unc)
    return Prediction(label_vol, unc_vol, time.perf_counter() - t0, str(run.device),
                      run.messages, info)  # fmt: skip


def _tiles(
    shape: Sequence[int],
    tile: Sequence[int],
    *,
    flat: bool,
    ax: int,
    rows: list[int] | None,
    crop_n: Sequence[int],
) -> tuple[list[tuple[int, ...]], tuple[tuple[int, ...], tuple[int, ...]]]:
    """Tile starts (in the padded frame) and the layout ``(frame, pad_before)``.

    The frame is the data padded (centred) to at least the tile; starts are nnU-Net's
    per axis (every slice for a 2D model, whose tile is 1 thick along axis 0). With
    ``rows`` (indices along ``ax`` of the crop's grid) only tiles meeting the model-grid
    rows that linear interpolation reads for them are kept.
    """
    frame = tuple(max(int(n), int(t)) for n, t in zip(shape, tile, strict=True))
    pad = tuple((f - n) // 2 for f, n in zip(frame, shape, strict=True))
    positions = [sliding_steps(f, t) for f, t in zip(frame, tile, strict=True)]
    if flat:
        positions[0] = list(range(shape[0])) if rows is None else list(rows)
    tiles = list(itertools.product(*positions))
    if rows is not None and not flat:
        n_in, n_out = shape[ax], crop_n[ax]
        src = (np.asarray(rows, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        lo = int(np.floor(src.min())) - 1 if len(rows) else 0
        hi = int(np.floor(src.max())) + 2 if len(rows) else 0
        t, p = tile[ax], pad[ax]
        tiles = [s for s in tiles if s[ax] - p < hi and s[ax] - p + t > lo]
    return tiles, (frame, pad)


def _slide(
    run: Runner,
    source: np.ndarray,
    tiles: list[tuple[int, ...]],
    tile: tuple[int, ...],
    layout: tuple[tuple[int, ...], tuple[int, ...]],
    n_classes: int,
    *,
    flat: bool,
    stop: Callable[[], bool],
) -> Job[torch.Tensor]:
    """Gaussian-blended logits ``(C, *source.shape)`` float32 (CPU) of ``tiles`` over the
    normalised model-grid ``source`` (zero where no tile ran); yields after each batch."""
    frame, pad = layout
    weight = nnunet_importance_map(tile[1:] if flat else tile, torch.device("cpu"))
    weight = weight[None] if flat else weight
    acc = torch.zeros((n_classes, *frame), dtype=torch.float32)
    wsum = torch.zeros(frame, dtype=torch.float32)
    for b0 in range(0, len(tiles), run.batch_size):
        if stop():
            raise Cancelled("prediction stopped")
        batch = tiles[b0 : b0 + run.batch_size]
        x = torch.zeros((len(batch), 1, *tile), dtype=torch.float32)
        for n, start in enumerate(batch):
            view, dst = read_tile(source, start, tile, pad)
            x[(n, 0, *dst)] = torch.from_numpy(np.ascontiguousarray(view))
        out = run(x[:, :, 0] if flat else x).cpu()
        out = out[:, :, None] if flat else out
        with torch.inference_mode():
            for n, start in enumerate(batch):
                region = tuple(slice(s, s + t) for s, t in zip(start, tile, strict=True))
                acc[(slice(None), *region)] += out[n] * weight
                wsum[region] += weight
        yield Progress(min(b0 + len(batch), len(tiles)), len(tiles),
                       run.messages[-1] if run.messages else "")  # fmt: skip
    acc /= wsum.clamp_min(1e-12)
    inner = tuple(slice(p, p + n) for p, n in zip(pad, source.shape, strict=True))
    return acc[(slice(None), *inner)]


def _back(
    logits: torch.Tensor,
    shape: tuple[int, ...],
    box: tuple[slice, ...],
    axis: int | None,
    *,
    ax: int,
    rows: list[int] | None,
    uncertainty: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (and normalised entropy) on the scan's grid ``shape``: the logits resampled
    to the crop ``box`` (only ``rows`` along ``ax`` when given), argmax; zero outside."""
    n_classes = logits.shape[0]
    labels = np.zeros(shape, dtype=np.uint8 if n_classes <= 256 else np.uint16)
    unc = np.zeros(shape, dtype=np.float32) if uncertainty else None
    if rows is not None and not rows:
        return labels, unc
    crop_shape = tuple(b.stop - b.start for b in box)
    with torch.inference_mode():
        back = resample_logits(logits, crop_shape, axis, rows=None if rows is None else (ax, rows))
        where = list(box)
        if rows is not None:
            where[ax] = np.asarray(rows) + box[ax].start
        labels[tuple(where)] = argmax0(back).numpy()
        if unc is not None:
            p = torch.softmax(back, dim=0)
            ent = -(p * torch.log(p.clamp_min(1e-12))).sum(0) / math.log(n_classes)
            unc[tuple(where)] = ent.clamp_(0, 1).numpy()
    return labels, unc

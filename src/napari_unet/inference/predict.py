"""`predict_steps`: one generator API for 2D and 3D inference (CLI, widgets, training).

``predict_steps`` yields `Progress` (slices or tiles done / total) after every batch,
checks ``stop`` before each one (raising `jobs.Cancelled`) and returns a `Prediction`
whose label map lies exactly on the input's grid. `predict_volume` drains it.

It reads as its steps: resolve the options (`_options`: `resolve_model`,
`check_options`) → hand a model in another orientation to `inference.orientation`, an
nnU-Net style spec to `inference.nnunet_style` (`_nnunet_steps`), else `_tiled_steps`:
prepare the input (`_prepare_input`: normalisation parameters, resampling to the
model grid) → plan tiles and batches (`_plan_tiles`) → run the batches, the part that
yields (`_run_batches`: blending, argmax and entropy happen in `inference.stitch`) →
back to the input grid (`_to_input_grid`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_unet.inference._options import (
    CheckedOptions,
    PredictOptions,
    check_options,
    resolve_model,
)
from napari_unet.inference.device import autocast_dtype
from napari_unet.inference.preprocess import (
    NormParams,
    as_contiguous,
    model_grid_shape,
    normalization_params,
    resample,
)
from napari_unet.inference.runner import Runner, eval_on, first_width
from napari_unet.inference.stitch import Layout, slices_2d, sliding_window_3d
from napari_unet.inference.tiling import choose_tile
from napari_unet.io.volume import Volume
from napari_unet.jobs import Job, never, run_job
from napari_unet.models.build import has_sample_dependent_norm, size_divisor
from napari_unet.models.spec import ModelSpec
from napari_unet.typing import Device, Precision, ProgressFn

#: Tile and batch voxel budgets (for 16 first-level features; scaled for wider nets).
#: On CPU a batch's activations live in host memory next to the scan: measured on a
#: 512×512×128 float32 CT (UNet 16-128), 2**21-voxel batches peaked at 3.6–4.2× the
#: input's bytes, 2**20 at 2.5–2.8× (issue 3 target: ≤ 3×); 3D took ~1.4× longer.
#: 2D batches on CPU are smaller still: with the packed network (`fused`), 128 slices of
#: 512² took 1.35 s one slice a batch, 1.82 s two, 2.0 s four (the activations of one
#: slice stay in cache); 128² slices were fastest 8–16 a batch.
_BUDGETS = {  # (device kind, dims): (max tile voxels, voxels per batch)
    ("cpu", 3): (2**20, 2**20),
    ("cpu", 2): (2**20, 2**18),
    ("cuda", 3): (2**23, 2**24),
    ("cuda", 2): (2**21, 2**24),
}


@dataclass
class Prediction:
    """Result of a prediction.

    Attributes:
        labels: label map on the input's grid (same shape and affine), smallest unsigned
            dtype; 0 = background, v = ``spec.labels[v - 1]``.
        uncertainty: softmax entropy / log(classes) in [0, 1], float32, same grid; None
            unless asked for.
        seconds: wall time of the whole job.
        device: where the network ran (the last device, after any fallback).
        messages: fallbacks that happened (out of memory …).
        info: tile size, batch size, number of tiles, precision, model grid shape.
    """

    labels: Volume
    uncertainty: Volume | None
    seconds: float
    device: str
    messages: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def predict_steps(
    model: Any,
    spec: ModelSpec | None,
    volume: Volume,
    *,
    device: Device | str | torch.device = Device.AUTO,
    batch_size: int | None = None,
    slice_axis: int | None = None,
    slices: Sequence[int] | None = None,
    overlap: float = 0.25,
    roi_size: Sequence[int] | None = None,
    uncertainty: bool = False,
    precision: Precision | str = Precision.AUTO,
    channels_last: bool | None = None,
    stop: Callable[[], bool] = never,
) -> Job[Prediction]:
    """Predict a label map for a volume, as a long job.

    2D models run every slice along the slice axis (the argument, else
    ``spec.slice_axis``, else the scan's through-plane axis) in batches, with
    ``spec.context_slices`` neighbours as channels. 3D models slide a window with
    gaussian blending. Both pad volumes smaller than a tile with zeros (after
    normalisation) and crop back. With ``spec.target_spacing`` the scan is resampled
    (trilinear) to the model's grid and the labels come back to the input grid by
    nearest neighbour (uncertainty: trilinear); a 2D model's slice axis is never
    resampled. A spec with ``inference_style`` "nnunet" (an imported nnU-Net model) is
    predicted as nnU-Net's predictor does instead (`inference.nnunet_style`: its crop,
    tile positions at step 0.5 of the patch, gaussian, order-3 resampling in, logits
    back linearly); ``overlap``, ``roi_size`` and ``channels_last`` do not apply to it.

    Args:
        model: a `LoadedModel` or a ``torch.nn.Module`` (its training flag is restored).
        spec: the ModelSpec; None to use ``model.spec``.
        volume: the scan, array ``(i, j, k)``.
        device: a `Device`: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "mps";
            or a ``torch.device``.
        batch_size: tiles (3D) or slice tiles (2D) per forward pass; None picks one
            from a voxel budget for the device.
        slice_axis: array axis a 2D model slices along (overrides the spec).
        slices: only these slice indices along the slice axis are predicted (the rest
            get label 0); also for 3D models, which then run only the tiles meeting them.
        overlap: fraction of ``spec.patch_size`` shared by neighbouring tiles (as
            MONAI's ``overlap``, but measured on the patch even when tiles are larger).
        roi_size: tile size; None picks it: the patch for networks with per-tile
            statistics (instance norm), else the cheapest tile within the voxel budget.
        uncertainty: also return the normalised softmax entropy.
        precision: a `Precision`: "auto" (on CUDA bf16 where the GPU computes it
            natively, else fp16 for networks with normalisation layers and float32
            for those without; float32 elsewhere: `device.autocast_dtype`), "fp32",
            "bf16", "fp16".
        channels_last: channels-last inputs; None: on for 2D and on CUDA.
        stop: returns True to cancel; checked before every batch.

    Yields:
        Progress(done, total) after each batch: slices (2D) or tiles (3D).

    Returns:
        Prediction.

    Raises:
        ValueError: bad option values (a bad choice names the allowed ones), or a
            volume/spec mismatch.
        jobs.Cancelled: ``stop()`` returned True.
    """
    t0 = time.perf_counter()
    options = PredictOptions(
        device=device, batch_size=batch_size, slice_axis=slice_axis, slices=slices,
        overlap=overlap, roi_size=roi_size, uncertainty=uncertainty, precision=precision,
        channels_last=channels_last, stop=stop,
    )  # fmt: skip
    net, spec = resolve_model(model, spec)
    from napari_unet.inference.orientation import predict_oriented_steps, reorientation_for

    if reorientation_for(spec, volume) is not None:  # e.g. an imported model expecting RAS
        return (yield from predict_oriented_steps(model, spec, volume, **options.kwargs()))
    checked = check_options(spec, volume, options)
    if spec.inference_style == "nnunet":  # nnU-Net's own tiling and resampling
        return (yield from _nnunet_steps(net, spec, volume, checked))
    return (yield from _tiled_steps(net, spec, volume, checked, t0))


def _nnunet_steps(
    net: torch.nn.Module, spec: ModelSpec, volume: Volume, opts: CheckedOptions
) -> Job[Prediction]:
    """The job of `inference.nnunet_style.predict_nnunet_steps` with the checked options."""
    from napari_unet.inference.nnunet_style import predict_nnunet_steps

    return predict_nnunet_steps(
        net, spec, volume, dev=opts.dev, ax=opts.ax, slices=opts.slices,
        batch_size=opts.given.batch_size, uncertainty=opts.given.uncertainty,
        precision=opts.precision, stop=opts.given.stop,
    )  # fmt: skip


def _tiled_steps(
    net: torch.nn.Module, spec: ModelSpec, volume: Volume, opts: CheckedOptions, t0: float
) -> Job[Prediction]:
    """Our own prediction, the part of `predict_steps` that yields: the input on the model
    grid, tiles and batches planned, the batches run, the result back on the input grid.

    Args:
        t0: `time.perf_counter` when the job started (for ``Prediction.seconds``).
    """
    given = opts.given
    grid, params, source = _prepare_input(volume, spec, opts.ax)
    plan = _plan_tiles(net, spec, opts.dev, grid, opts.ax, overlap=given.overlap,
                       roi_size=given.roi_size, batch_size=given.batch_size,
                       channels_last=given.channels_last)  # fmt: skip
    amp = autocast_dtype(opts.dev, opts.precision, net=net)
    out_labels, out_unc, run = yield from _run_batches(
        net, spec, opts.dev, amp, plan, source, params, ax=opts.ax, input_shape=volume.shape,
        slices=opts.slices, uncertainty=given.uncertainty, stop=given.stop,
    )  # fmt: skip
    label_vol, unc_vol = _to_input_grid(out_labels, out_unc, volume, spec, opts.ax, opts.slices)
    info = {
        "tile": list(plan.tile),
        "batch_size": run.batch_size,
        "n_tiles": plan.layout.n_tiles,
        "precision": str(amp).replace("torch.", "") if amp else "float32",
        "model_grid": list(grid),
        "slice_axis": opts.ax,
        "channels_last": plan.channels_last,
    }
    return Prediction(
        label_vol, unc_vol, time.perf_counter() - t0, str(run.device), run.messages, info
    )


def _prepare_input(
    volume: Volume, spec: ModelSpec, ax: int
) -> tuple[tuple[int, ...], NormParams, np.ndarray]:
    """(model grid shape, normalisation parameters, the scan on the model grid).

    The parameters come from the scan as it is; the scan is resampled (trilinear) only
    when the spec's target spacing asks for another grid (never along a 2D model's
    slice axis). Normalisation itself is applied tile by tile later.
    """
    grid = model_grid_shape(volume.shape, volume.spacing, spec.target_spacing,
                            keep_axes=(ax,) if spec.spatial_dims == 2 else ())  # fmt: skip
    params = normalization_params(volume.array, spec.normalization)
    source = volume.array if grid == volume.shape else resample(volume.array, grid)
    if source.dtype.kind not in "fiub":
        raise ValueError(f"volume dtype {source.dtype} is not numeric")
    return grid, params, source


def voxel_budgets(dev: torch.device, spec: ModelSpec) -> tuple[int, int]:
    """(largest tile, voxels per forward pass) on ``dev`` for ``spec``'s network: the
    `_BUDGETS` of its device kind and dimension, scaled by 16 / its first width (at
    least 4096 voxels each)."""
    kind = "cuda" if dev.type == "cuda" else "cpu"
    max_tile, batch_vox = _BUDGETS[(kind, spec.spatial_dims)]
    width = first_width(spec)
    return max(max_tile * 16 // width, 4096), max(batch_vox * 16 // width, 4096)


@dataclass
class _TilePlan:
    """Tiles and batches: ``tile`` size, their ``layout``, tiles per batch."""

    tile: tuple[int, ...]
    layout: Layout
    batch_size: int
    channels_last: bool


def _plan_tiles(
    net: torch.nn.Module,
    spec: ModelSpec,
    dev: torch.device,
    grid: tuple[int, ...],
    ax: int,
    *,
    overlap: float,
    roi_size: Sequence[int] | None,
    batch_size: int | None,
    channels_last: bool | None,
) -> _TilePlan:
    """Tile size (given, or the cheapest within the device's voxel budget), layout over
    the model grid (3D) or a slice (2D), batch size and memory format."""
    dims = spec.spatial_dims
    max_tile, batch_vox = voxel_budgets(dev, spec)
    extent = grid if dims == 3 else tuple(n for a, n in enumerate(grid) if a != ax)
    min_overlap = [round(overlap * p) for p in spec.patch_size]
    divisor = size_divisor(spec)
    if roi_size is not None:
        tile = tuple(int(r) for r in roi_size)
        if len(tile) != dims or min(tile) < 1:
            raise ValueError(f"roi_size must be {dims} positive sizes, got {roi_size!r}")
    else:
        tile = choose_tile(extent, spec.patch_size, divisor=divisor, max_voxels=max_tile,
                           min_overlap=min_overlap,
                           grow=not has_sample_dependent_norm(net))  # fmt: skip
    layout = Layout.over(extent, tile, min_overlap, divisor)
    if batch_size is None:
        batch_size = max(1, batch_vox // int(np.prod(tile)))
    if channels_last is None:
        channels_last = dims == 2 or dev.type == "cuda"
    return _TilePlan(tile, layout, batch_size, channels_last)


def _run_batches(
    net: torch.nn.Module,
    spec: ModelSpec,
    dev: torch.device,
    amp: torch.dtype | None,
    plan: _TilePlan,
    source: np.ndarray,
    params: NormParams,
    *,
    ax: int,
    input_shape: tuple[int, ...],
    slices: list[int] | None,
    uncertainty: bool,
    stop: Callable[[], bool],
) -> Job[tuple[np.ndarray, np.ndarray | None, Runner]]:
    """The network over every batch (the part that yields): blended logits, then argmax
    and entropy, written into label / uncertainty arrays on the model grid.

    Returns:
        (labels, uncertainty or None, the `Runner`: final batch size, device, fallbacks).
    """
    grid, n_classes = source.shape, spec.out_channels
    # a 2D model writes whole slices: its outputs are slice-first, returned as views
    first = ax if spec.spatial_dims == 2 else 0
    shape = (grid[first], *(n for a, n in enumerate(grid) if a != first))
    out_labels = np.zeros(shape, dtype=np.uint8 if n_classes <= 256 else np.uint16)
    out_unc = np.zeros(shape, dtype=np.float32) if uncertainty else None
    with eval_on(net, dev, plan.channels_last) as net_ready:
        run = Runner(net_ready, dev, amp, plan.batch_size, channels_last=plan.channels_last)
        if spec.spatial_dims == 2:
            todo = slices if slices is not None else list(range(input_shape[ax]))
            yield from slices_2d(
                run,
                np.moveaxis(source, ax, 0),
                params,
                plan.layout,
                n_classes,
                out_labels,
                out_unc,
                slices=todo,
                context=spec.context_slices,
                stop=stop,
            )
            out_labels = np.moveaxis(out_labels, 0, ax)
            out_unc = None if out_unc is None else np.moveaxis(out_unc, 0, ax)
        else:
            wanted = None
            if slices is not None:  # the slab of the model grid that meets the slices
                scale = grid[ax] / input_shape[ax]
                first = int(slices[0] * scale) - 1
                wanted = (ax, first, int(np.ceil((slices[-1] + 1) * scale)) + 1)
            yield from sliding_window_3d(run, source, params, plan.layout, n_classes,
                                         out_labels, out_unc, wanted=wanted,
                                         stop=stop)  # fmt: skip
    return out_labels, out_unc, run


def _to_input_grid(
    out_labels: np.ndarray,
    out_unc: np.ndarray | None,
    volume: Volume,
    spec: ModelSpec,
    ax: int,
    slices: list[int] | None,
) -> tuple[Volume, Volume | None]:
    """Labels (nearest) and uncertainty (trilinear) back on the input grid, zero outside
    the requested slices, as Volumes with the input's geometry (labels carry the spec's
    names and colours)."""
    labels = resample(out_labels, volume.shape, labels=True)
    unc = None if out_unc is None else resample(out_unc, volume.shape)
    if slices is not None:
        keep = np.zeros(volume.shape[ax], dtype=bool)
        keep[slices] = True
        drop = tuple(~keep if a == ax else slice(None) for a in range(3))
        labels = as_contiguous(labels)
        labels[drop] = 0
        if unc is not None:
            unc[drop] = 0
    label_vol = volume.with_array(as_contiguous(labels))
    label_vol.metadata.update(label_names=list(spec.labels), label_colors=list(spec.colors))
    unc_vol = (
        None
        if unc is None
        else volume.with_array(as_contiguous(unc.astype(np.float32, copy=False)))
    )
    return label_vol, unc_vol


def predict_volume(
    model: Any,
    spec: ModelSpec | None,
    volume: Volume,
    *,
    progress: ProgressFn | None = None,
    **options: Any,
) -> Prediction:
    """Run `predict_steps` to the end (same arguments) and return its Prediction."""
    return run_job(predict_steps(model, spec, volume, **options), progress)

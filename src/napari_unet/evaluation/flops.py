"""How close to the hardware the inference benchmark runs: the networks' FLOPs per voxel
(torch's ``FlopCounterMode``) and the speed of a plain convolution on the same device
and dtype (the "conv peak"), measured in the same run.

A method's *effective* GFLOP/s is the work of one tile-free forward pass over the whole
volume (`flops_per_voxel` × voxels) divided by its wall time: overlapping tiles,
padding, normalisation, blending, argmax and transfers all lower it, so it says how
much of the time goes into useful network arithmetic. Its *fraction of the conv peak*
compares that with what one ``Conv3d``/``Conv2d`` layer sustains here.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

#: Channel widths of the plain convolutions timed for the peak (the benchmark nets'
#: widths run from 16 to 128 channels).
PEAK_WIDTHS = (16, 32, 64)


def flops_per_voxel(net: torch.nn.Module, spec: Any) -> float:
    """FLOPs of one forward pass per input voxel (a multiply-add counts 2), counted by
    ``torch.utils.flop_counter.FlopCounterMode`` on a CPU input of 64³ (3D) or 256²
    (2D) voxels, float32. For these fully convolutional nets the count is proportional
    to the voxels (given sizes divisible by the net's stride).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from napari_unet.models.build import size_divisor

    div = size_divisor(spec)
    side = max(64 if spec.spatial_dims == 3 else 256, div)
    shape = (1, spec.in_channels) + (side,) * spec.spatial_dims
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            net(torch.zeros(shape, device=device))
    finally:
        net.train(was_training)
    return counter.get_total_flops() / side**spec.spatial_dims


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def conv_peak(
    device: torch.device | str,
    dims: int,
    *,
    dtype: torch.dtype | None = None,
    repeats: int = 3,
    widths: tuple[int, ...] = PEAK_WIDTHS,
) -> dict[str, Any]:
    """GFLOP/s of a plain 3×3(×3) convolution, ``c`` → ``c`` channels, padding 1, no
    bias, for each width ``c``: the median of ``repeats`` timed calls after a warm-up,
    in inference mode (under autocast for ``dtype``), synchronised on CUDA.

    Input: 64³ voxels (3D) or 8 × 256² (2D) on the CPU; 128³ / 32 × 256² on a GPU.

    Returns:
        ``gflops`` (the best width's), ``by_width`` {c: GFLOP/s}, ``input`` (the shape
        without channels), ``dtype``.
    """
    from napari_unet.inference.device import autocast

    device = torch.device(device)
    gpu = device.type == "cuda"
    spatial = ((128,) * 3 if gpu else (64,) * 3) if dims == 3 else (32 if gpu else 8, 256, 256)
    by_width: dict[str, float] = {}
    for c in widths:
        conv_cls = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
        conv = conv_cls(c, c, 3, padding=1, bias=False).to(device).eval()
        if dims == 3:
            x = torch.randn((1, c, *spatial), device=device)
            voxels = spatial[0] * spatial[1] * spatial[2]
        else:
            x = torch.randn((spatial[0], c, *spatial[1:]), device=device)
            voxels = spatial[0] * spatial[1] * spatial[2]
        flops = 2.0 * c * c * 3**dims * voxels
        times = []
        with torch.inference_mode(), autocast(device, dtype):
            conv(x)  # warm-up (kernel choice, allocator)
            for _ in range(repeats):
                _sync(device)
                t = time.perf_counter()
                conv(x)
                _sync(device)
                times.append(time.perf_counter() - t)
        by_width[str(c)] = round(flops / statistics.median(times) / 1e9, 1)
        del conv, x
    return {
        "gflops": max(by_width.values()),
        "by_width": by_width,
        "input": list(spatial),
        "dtype": str(dtype).replace("torch.", "") if dtype else "float32",
    }

"""The methods the inference benchmark times, on the same weights, volume, device and
dtype, each ending in the same post-processing (argmax to uint8, `to_labels`):

* `ours`: ``predict_volume`` end to end (normalisation, tiling, blending, argmax);
* `monai_sliding_window`: MONAI's ``sliding_window_inference`` over the normalised
  volume — with its defaults (the training patch as ``roi_size``, ``sw_batch_size=1``)
  or tuned (a larger ``roi_size``, ``sw_batch_size`` ≥ 4, cuDNN autotuning on CUDA);
* `slices_batched`: 2D only, what a user who knows the net is fully convolutional does
  instead of a sliding window: whole slices straight through the net, ``batch`` at a
  time.

Each takes ``(net, spec, image, device, dtype)`` and returns ``(labels, info)``:
labels ``(i, j, k)`` uint8 on the CPU, info a JSON-ready dict.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

#: Through-plane axis of the benchmark volumes (2D models slice along it).
SLICE_AXIS = 2


def to_labels(logits: torch.Tensor) -> torch.Tensor:
    """The common post-processing: argmax over channels ``(C, *S)`` → uint8 ``(*S)``.

    The very function our engine uses (`inference.stitch.argmax0`: a running max, ~10×
    faster on the CPU than ``torch.argmax`` + a cast to uint8), so no side pays more
    for its post-processing than another.
    """
    from napari_unet.inference.stitch import argmax0

    return argmax0(logits)


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    from napari_unet.inference.device import autocast

    with torch.inference_mode(), autocast(device, dtype):
        yield


def _normalised(spec, image: np.ndarray) -> torch.Tensor:
    from napari_unet.inference.preprocess import apply_normalization, normalization_params

    return apply_normalization(image, normalization_params(image, spec.normalization))


def ours(net, spec, image: np.ndarray, device: torch.device, dtype, *, precision: str):
    """``predict_volume`` with the given precision (``dtype`` is what it resolves to)."""
    from napari_unet.inference import predict_volume
    from napari_unet.io.volume import Volume

    affine = np.diag([0.8, 0.8, 2.0, 1.0])  # through-plane axis 2 = SLICE_AXIS
    pred = predict_volume(net, spec, Volume(image, affine, modality="CT"), device=device,
                          precision=precision)  # fmt: skip
    # messages: any out-of-memory fallback during a timed call shows in the results
    return pred.labels.array, {**pred.info, "device": str(pred.device), "messages": pred.messages}


def monai_sliding_window(
    net,
    spec,
    image: np.ndarray,
    device: torch.device,
    dtype,
    *,
    roi_size: Sequence[int] | None = None,
    sw_batch_size: int = 1,
    cudnn_benchmark: bool = False,
):
    """MONAI's ``sliding_window_inference``; every argument not named here at its
    default (overlap 0.25, mode "constant"). 3D: the volume ``(1, 1, i, j, k)``; 2D: the
    slices along `SLICE_AXIS` as a batch ``(k, 1, i, j)``.

    Args:
        roi_size: the window; None = the training patch (MONAI's usual choice).
        sw_batch_size: windows per forward pass.
        cudnn_benchmark: let cuDNN pick its fastest kernels (CUDA only).
    """
    from monai.inferers import sliding_window_inference

    roi = tuple(int(r) for r in (roi_size or spec.patch_size))
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark and device.type == "cuda"
    try:
        x = _normalised(spec, image)
        x = x[None, None] if spec.spatial_dims == 3 else x.permute(2, 0, 1)[:, None]
        with _autocast(device, dtype):
            y = sliding_window_inference(x.to(device), roi, sw_batch_size, net)
            labels = to_labels(y.transpose(0, 1)).cpu().numpy()  # (N, C, …) → (C, N, …)
    finally:
        torch.backends.cudnn.benchmark = old
    labels = labels[0] if spec.spatial_dims == 3 else np.moveaxis(labels, 0, SLICE_AXIS)
    info = {"roi_size": list(roi), "sw_batch_size": sw_batch_size}
    return np.ascontiguousarray(labels), {**info, "device": str(device)}


def slices_batched(net, spec, image: np.ndarray, device: torch.device, dtype, *, batch: int):
    """2D: whole slices straight through the net, ``batch`` slices per forward pass
    (zero-padded to the net's size divisor, cropped back), cuDNN autotuning on CUDA."""
    from napari_unet.models.build import size_divisor

    if spec.spatial_dims != 2 or spec.in_channels != 1:
        raise ValueError("slices_batched is for 2D models of one input channel (no context)")
    div = size_divisor(spec)
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        x = _normalised(spec, image).permute(2, 0, 1)[:, None]  # (k, 1, i, j)
        h, w = x.shape[-2:]
        x = torch.nn.functional.pad(x, (0, -w % div, 0, -h % div))
        out = np.empty((x.shape[0], h, w), np.uint8)
        with _autocast(device, dtype):
            for s in range(0, x.shape[0], batch):
                y = net(x[s : s + batch].to(device))
                out[s : s + batch] = to_labels(y.transpose(0, 1))[:, :h, :w].cpu().numpy()
    finally:
        torch.backends.cudnn.benchmark = old
    info = {"batch": batch, "padded_to": div}
    return np.moveaxis(out, 0, SLICE_AXIS), {**info, "device": str(device)}


def run_method(
    name: str, net, spec, image: np.ndarray, device: torch.device, dtype, settings: dict[str, Any]
):
    """Dispatch by name: "ours", "monai" (defaults), "monai_tuned" (``settings``: a
    sliding window's ``roi_size``/``sw_batch_size``, or ``batch`` for `slices_batched`)."""
    if name == "ours":
        return ours(net, spec, image, device, dtype, precision=settings["precision"])
    if name == "monai":
        return monai_sliding_window(net, spec, image, device, dtype)
    if name == "monai_tuned":
        if "batch" in settings:
            return slices_batched(net, spec, image, device, dtype, batch=int(settings["batch"]))
        return monai_sliding_window(net, spec, image, device, dtype,
                                    roi_size=settings["roi_size"],
                                    sw_batch_size=int(settings["sw_batch_size"]),
                                    cudnn_benchmark=True)  # fmt: skip
    raise ValueError(f"unknown method {name!r}")

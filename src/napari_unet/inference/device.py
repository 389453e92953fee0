"""Device choice and mixed precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from napari_unet.typing import Device, Precision

#: The device names (`typing.Device` values), for argparse ``choices``.
DEVICES = Device.values()


def resolve_device(device: Device | str | torch.device = Device.AUTO) -> torch.device:
    """The torch device for a name: "auto" picks CUDA, then MPS, then the CPU.

    Args:
        device: a `Device` or its name (case-insensitive; "cuda:1" names a GPU), or a
            ``torch.device`` (returned as it is).

    Raises:
        ValueError: an unknown name (the message lists the allowed ones), or a device
            that is not available here.
    """
    if isinstance(device, torch.device):
        return device
    kind = Device.check(device, "device")
    if kind == Device.AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == Device.CUDA and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    if kind == Device.MPS and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("device 'mps' requested but Apple MPS is not available")
    return torch.device(str(device).lower())


def autocast_dtype(
    device: torch.device, precision: Precision | str = Precision.AUTO
) -> torch.dtype | None:
    """The autocast dtype for a device, or None for float32.

    "auto": bf16 on CUDA GPUs that support it, else fp16; float32 on MPS and on the CPU.
    On CPUs without native bf16 (no AMX / AVX512-BF16) bf16 autocast measured 2–5× slower
    than float32 for our U-Nets (benchmarks/bench_inference.py), so "auto" never uses it
    there; pass ``precision="bf16"`` to force it.

    Raises:
        ValueError: ``precision`` is not a `Precision` (the message lists them).
    """
    precision = Precision.check(precision, "precision")
    if precision == Precision.FP32:
        return None
    if precision == Precision.BF16:
        return torch.bfloat16
    if precision == Precision.FP16:
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` for a device, or nothing when dtype is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def is_oom(error: BaseException) -> bool:
    """Whether an exception is a (CUDA / MPS) out-of-memory error."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(error, oom) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()

"""Device choice and mixed precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for a name: "auto" picks CUDA, then MPS, then the CPU.

    Raises:
        ValueError: an unknown name, or a device that is not available here.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    if kind == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("device 'mps' requested but Apple MPS is not available")
    return torch.device(name)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for a device, or None for float32.

    "auto": bf16 on CUDA GPUs that support it, else fp16; float32 on MPS and on the CPU.
    On CPUs without native bf16 (no AMX / AVX512-BF16) bf16 autocast measured 2–5× slower
    than float32 for our U-Nets (benchmarks/bench_inference.py), so "auto" never uses it
    there; pass ``precision="bf16"`` to force it.
    """
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
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

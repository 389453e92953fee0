"""Device choice, mixed precision and out-of-memory detection."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from napari_unet.typing import Device, Precision

#: The device names (`typing.Device` values), for argparse ``choices``.
DEVICES = Device.values()

#: The device every fallback goes to.
CPU = torch.device("cpu")


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


def cuda_bf16_native(device: torch.device) -> bool:
    """Whether a CUDA GPU computes bf16 in hardware (compute capability ≥ 8: Ampere and
    later; every ROCm GPU).

    ``torch.cuda.is_bf16_supported()`` alone also answers True where bf16 is only
    *emulated* (T4, V100: tensors can be made, but cuDNN has no bf16 convolution there,
    so a bf16 network runs slowly or fails). Here emulation does not count:
    ``is_bf16_supported(including_emulation=False)`` (torch ≥ 2.3), else the compute
    capability of ``device`` from ``torch.cuda.get_device_capability``.
    """
    if device.index is None or device.index == torch.cuda.current_device():
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch < 2.3: no including_emulation
            pass
    if getattr(torch.version, "hip", None):
        return True
    major, _minor = torch.cuda.get_device_capability(device)
    return major >= 8


#: Layers that rescale activations to unit size: with one of them after each
#: convolution, activations stay far below float16's largest value (65504).
_NORM_LAYERS: tuple[type, ...] = tuple(
    cls
    for cls in (
        torch.nn.modules.batchnorm._NormBase,  # batch and instance norm
        torch.nn.GroupNorm,
        torch.nn.LayerNorm,
        getattr(torch.nn, "RMSNorm", None),
        torch.nn.LocalResponseNorm,
    )
    if cls is not None
)


def has_normalization(net: torch.nn.Module) -> bool:
    """Whether a network has normalisation layers (batch, instance, group, layer norm)."""
    return any(isinstance(m, _NORM_LAYERS) for m in net.modules())


def autocast_dtype(
    device: torch.device,
    precision: Precision | str = Precision.AUTO,
    *,
    net: torch.nn.Module | None = None,
) -> torch.dtype | None:
    """The autocast dtype for a device (and network), or None for float32.

    "auto" on a CUDA GPU: bf16 where the GPU computes it natively (`cuda_bf16_native`);
    otherwise float16 only for networks with normalisation layers, and float32 for
    networks without them (``net`` given and `has_normalization` False — the recommended
    network, `training.recipe`). float16 tops out at 65504: a network without
    normalisation layers has nothing that keeps its activations near unit size, and
    fine-tuning lets weights (hence activations, multiplied layer after layer) grow, so
    float16 may overflow to inf and the labels become garbage (tests/training/
    test_precision.py shows it). bf16 has float32's range, so it is safe for both.
    Without ``net`` the network is assumed to have normalisation layers.

    "auto" elsewhere: float32 on MPS and on the CPU. On CPUs without native bf16 (no AMX
    / AVX512-BF16) bf16 autocast measured 2–5× slower than float32 for our U-Nets
    (benchmarks/bench_inference.py), so "auto" never uses it there; pass
    ``precision="bf16"`` to force it.

    Args:
        device: where the network runs.
        precision: a `Precision`; "fp32", "bf16" and "fp16" are taken as they are.
        net: the network, to check for normalisation layers (None: assume it has some).

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
    if device.type != "cuda":
        return None
    if cuda_bf16_native(device):
        return torch.bfloat16
    if net is not None and not has_normalization(net):
        return None
    return torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` for a device, or nothing when dtype is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


#: Lower-case fragments of the messages of allocation failures that torch raises as a
#: plain RuntimeError: CUDA/MPS ("CUDA out of memory", "MPS backend out of memory") and
#: the CPU allocator ("[enforce fail at alloc_cpu.cpp:…] DefaultCPUAllocator: can't
#: allocate memory: you tried to allocate … bytes. Error code 12 (Cannot allocate memory)").
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_oom(error: BaseException) -> bool:
    """Whether an exception is an out-of-memory error: ``torch.OutOfMemoryError``
    (CUDA), a ``MemoryError`` (numpy, Python), or a RuntimeError from an allocator
    (CUDA, MPS, or the CPU's ``DefaultCPUAllocator``)."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(error, oom | MemoryError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in _OOM_MESSAGES)


def empty_cache(device: torch.device) -> None:
    """Give cached accelerator memory back (nothing on the CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()

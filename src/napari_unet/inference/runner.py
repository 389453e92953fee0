"""`Runner`: batched forward passes with mixed precision and out-of-memory fallbacks."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import torch

import napari_unet.inference.fused as fused
from napari_unet.inference.device import CPU, autocast, empty_cache, is_oom

if TYPE_CHECKING:
    from napari_unet.models.spec import ModelSpec

R = TypeVar("R")


class Runner:
    """Calls a network on batches of tiles, lowering the batch size or moving to the CPU
    when the device runs out of memory (each change is recorded in ``messages`` and
    issued as a ``RuntimeWarning``; nothing crashes while a smaller batch or the CPU is
    left to try).

    The fallback is complete: after a move to the CPU the network, its inputs, its
    outputs and — through `acc_device`, which the stitching loops follow — the blending
    accumulators and the argmax all live on the CPU. Work outside the forward pass
    (joining batch outputs, blending, argmax) goes through `guarded`, so an
    out-of-memory error there moves everything to the CPU too and the step is redone.

    On the CPU in float32 the forward passes go through `fused.for_cpu`'s packed copy of
    the network (built on the first such pass, reused while the weights are unchanged;
    the network itself is not changed).

    Args:
        net: the network in eval mode, already on ``device``.
        device: where to compute.
        dtype: autocast dtype, or None for float32.
        batch_size: tiles per forward pass.
        channels_last: feed inputs in channels-last memory format.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        device: torch.device,
        dtype: torch.dtype | None,
        batch_size: int,
        *,
        channels_last: bool = False,
    ) -> None:
        self.net = net
        self.device = device
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))
        self.channels_last = channels_last
        self.messages: list[str] = []
        self._packed: torch.nn.Module | bool | None = False  # False: not built yet

    @property
    def acc_device(self) -> torch.device:
        """Where blending accumulators live: with the network on CUDA (and on the CPU),
        on the CPU for MPS."""
        return CPU if self.device.type == "mps" else self.device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C_out, *spatial)`` float32 on ``self.device`` (which may change
        to the CPU on out-of-memory) for inputs ``(N, C_in, *spatial)`` on the CPU or on
        ``self.device``."""
        outs: list[torch.Tensor] = []
        i = 0
        while i < x.shape[0]:
            chunk = x[i : i + self.batch_size]
            try:
                outs.append(self._forward(chunk))
                i += chunk.shape[0]
            except Exception as e:
                if not is_oom(e):
                    raise
                self._recover(e, tuple(chunk.shape))
        if len(outs) == 1:
            return outs[0]
        # chunks made before a fallback are still on the old device: join them where
        # the network is now (an out-of-memory error here moves everything to the CPU)
        return self.guarded(
            lambda: self._join(outs), f"joining the outputs of a batch of shape {tuple(x.shape)}"
        )

    def _join(self, outs: list[torch.Tensor]) -> torch.Tensor:
        """The chunks' outputs as one tensor on the current device."""
        return torch.cat([o.to(self.device) for o in outs])

    def guarded(self, step: Callable[[], R], what: str) -> R:
        """``step()``, redone on the CPU after an out-of-memory error on another device.

        ``step`` must leave no partial change behind when it fails (allocate first,
        then write in place), and must read the device (`device`, `acc_device`) and any
        buffers that follow it at call time.

        Raises:
            MemoryError: out of memory on the CPU (the message names ``what``).
        """
        while True:
            try:
                return step()
            except Exception as e:
                if not is_oom(e):
                    raise
                self.fall_back(e, what)

    def fall_back(self, error: BaseException, what: str) -> None:
        """Move to the CPU (network, float32) after ``error``, or raise if already there.

        Raises:
            MemoryError: out of memory on the CPU, naming ``what`` and a remedy.
        """
        if self.device == CPU:
            raise MemoryError(
                f"out of memory on the CPU {what}; try a smaller roi_size or batch_size, "
                "or free memory"
            ) from error
        old = self.device
        self.device = CPU
        self.dtype = None
        self.net.to(CPU)
        empty_cache(old)
        self._say(f"out of memory on {old} {what}: continuing on the CPU (slower)")

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device == self.device:
            pass
        elif self.device.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        if self.channels_last:
            fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
            x = x.contiguous(memory_format=fmt)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            y = self._call(x)
        if self.device.type == "cpu":  # oneDNN hands back channels-last: the readers
            return y.float()  # take any layout, and a copy cost 0.17 s per 128 slices at 512²
        return y.float().contiguous()

    def _net(self) -> torch.nn.Module:
        """The network to call: its packed copy on the CPU in float32, when it has one."""
        if self.device.type != "cpu" or self.dtype is not None:
            return self.net
        if self._packed is False:
            self._packed = fused.cached_for_cpu(self.net)
        return self._packed or self.net

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        """The network on ``x``; should its packed copy fail on this input (checked only
        on small probes when built), the network itself from then on."""
        net = self._net()
        if net is self.net:
            return net(x)
        try:
            return net(x)
        except RuntimeError as e:
            if is_oom(e):
                raise
            self._packed = None
            self._say(f"the packed CPU network failed on input {tuple(x.shape)} ({e}); "
                      "continuing with the network as it is")  # fmt: skip
            return self.net(x)

    def _recover(self, error: BaseException, shape: tuple[int, ...]) -> None:
        """Halve the batch; at batch size 1 move to the CPU; on the CPU give up."""
        empty_cache(self.device)
        if self.batch_size > 1:
            self.batch_size //= 2
            self._say(
                f"out of memory on {self.device} with input {shape}: "
                f"batch size lowered to {self.batch_size}"
            )
            return
        self.fall_back(error, f"with input {shape} even at batch size 1")

    def _say(self, message: str) -> None:
        self.messages.append(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def first_width(spec: ModelSpec) -> int:
    """Channels of the network's first stage (16 when the spec does not say)."""
    args = spec.arch_args
    widths = args.get("channels") or args.get("features") or [16]
    return max(1, int(widths[0]))


@contextlib.contextmanager
def eval_on(
    net: torch.nn.Module, device: torch.device, channels_last: bool
) -> Iterator[torch.nn.Module]:
    """The network in eval mode on ``device``; training flag, memory format and cuDNN
    autotuning restored afterwards (the network stays on ``device``)."""
    was_training = net.training
    bench = torch.backends.cudnn.benchmark
    net.eval().to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last if is_2d(net) else torch.channels_last_3d)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield net
    finally:
        torch.backends.cudnn.benchmark = bench
        if channels_last:
            net.to(memory_format=torch.contiguous_format)
        net.train(was_training)


def is_2d(net: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in net.modules())

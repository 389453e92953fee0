"""`Runner`: batched forward passes with mixed precision and out-of-memory fallbacks."""

from __future__ import annotations

import warnings

import torch

from napari_unet.inference.device import autocast, empty_cache, is_oom


class Runner:
    """Calls a network on batches of tiles, lowering the batch size or moving to the CPU
    when the accelerator runs out of memory (each change is recorded in ``messages`` and
    issued as a ``RuntimeWarning``; nothing crashes).

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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C_out, *spatial)`` float32 on ``self.device`` (which may change
        to the CPU on out-of-memory) for inputs ``(N, C_in, *spatial)`` on the CPU."""
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
        return outs[0] if len(outs) == 1 else torch.cat([o.to(self.device) for o in outs])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        if self.channels_last:
            fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
            x = x.contiguous(memory_format=fmt)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            y = self.net(x)
        return y.float().contiguous()

    def _recover(self, error: BaseException, shape: tuple[int, ...]) -> None:
        empty_cache(self.device)
        if self.batch_size > 1:
            self.batch_size //= 2
            self._say(
                f"out of memory on {self.device} with input {shape}: "
                f"batch size lowered to {self.batch_size}"
            )
        elif self.device.type != "cpu":
            old = self.device
            self.device = torch.device("cpu")
            self.dtype = None
            self.net.to(self.device)
            empty_cache(old)
            self._say(
                f"out of memory on {old} with input {shape} even at batch size 1: "
                "continuing on the CPU (slower)"
            )
        else:
            raise MemoryError(
                f"out of memory on the CPU for a batch of shape {shape}; "
                "try a smaller roi_size or free memory"
            ) from error

    def _say(self, message: str) -> None:
        self.messages.append(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

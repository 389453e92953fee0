"""Shared type aliases, and the options that are choices as `StrEnum`s.

Every choice (device, precision, strategy, normalisation mode) is a string enum: its
members *are* strings (``Device.CPU == "cpu"``), so plain strings keep working wherever
an option is taken, and ``Device.check(value, "device")`` turns a user's value into the
member or raises a `ValueError` naming the option, the bad value and the allowed
values (MONAI's ``look_up_option``). This module imports no torch.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: 4×4 voxel-index → world (mm) matrix, RAS+ convention (x to patient Right,
#: y to Anterior, z to Superior), as in nibabel.
Affine = NDArray[np.float64]
#: Voxel sizes in mm, one per array axis.
Spacing = tuple[float, ...]
#: Callback receiving (done, total) counts of a long job.
ProgressFn = Callable[[int, int], None]
#: Returns True when a long job should stop at its next checkpoint.
StopFn = Callable[[], bool]
#: Free-form metadata attached to a volume.
Metadata = dict[str, Any]


class _StrEnum(str, enum.Enum):
    """A string enum (``enum.StrEnum`` is Python ≥ 3.11): members compare equal to,
    format as and serialise to their values."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The allowed values, in declaration order."""
        return tuple(m.value for m in cls)

    @classmethod
    def check(cls, value: Any, option: str) -> Any:
        """The member for ``value`` (a member or its string value).

        Args:
            value: the user's value.
            option: the option's name, for the message.

        Returns:
            The enum member.

        Raises:
            ValueError: ``value`` is not one of the allowed values; the message names
                ``option``, the value and the allowed values.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        raise cls._bad(value, option)

    @classmethod
    def _bad(cls, value: Any, option: str) -> ValueError:
        allowed = ", ".join(repr(v) for v in cls.values())
        return ValueError(f"{option} must be one of {allowed}, got {value!r}")


class Device(_StrEnum):
    """Where a network runs: "auto" picks CUDA, then Apple MPS, then the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"

    @classmethod
    def check(cls, value: Any, option: str = "device") -> Device:
        """The device kind of a name, case-insensitive; an index is allowed after a
        concrete kind ("cuda:1" → `Device.CUDA`). A ``torch.device`` is read by its type.

        Raises:
            ValueError: an unknown name (the message lists the allowed values).
        """
        if isinstance(value, cls):
            return value
        kind = getattr(value, "type", None)  # torch.device, without importing torch
        if isinstance(kind, str):
            return super().check(kind, option)
        if isinstance(value, str):
            name, colon, index = value.lower().partition(":")
            if not colon or (index.isdigit() and name != cls.AUTO.value):
                try:
                    return cls(name)
                except ValueError:
                    pass
        raise cls._bad(value, option)


class Precision(_StrEnum):
    """Arithmetic of a network's forward pass: "auto" (bf16, else fp16, autocast on
    CUDA; float32 elsewhere), "fp32", "bf16", "fp16"."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Strategy(_StrEnum):
    """How a simulated user picks the next slices to correct: "worst" (most wrong
    voxels), "uncertain" (largest summed softmax entropy, needs no truth) or "random"
    (uniformly among unrevealed slices with content: the control)."""

    WORST = "worst"
    UNCERTAIN = "uncertain"
    RANDOM = "random"


class NormMode(_StrEnum):
    """Intensity normalisation of a scan (`models.spec.Normalization.mode`): "ct" (HU
    window, then linear scaling), "mr" (percentile clip, then z-score), "none" (cast)."""

    CT = "ct"
    MR = "mr"
    NONE = "none"

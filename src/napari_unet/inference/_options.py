"""`predict_steps`'s options: as given, then resolved against the model and the scan.

`resolve_model` finds the network and its spec; `check_options` checks the rest
(ValueError naming the bad one) before anything heavy runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from napari_unet.inference.device import resolve_device
from napari_unet.inference.preprocess import spec_slice_axis
from napari_unet.io.volume import Volume
from napari_unet.models.spec import ModelSpec
from napari_unet.typing import Device, Precision


@dataclass(frozen=True)
class PredictOptions:
    """`predict_steps`'s keyword options as given (see its docstring)."""

    device: Device | str | torch.device
    batch_size: int | None
    slice_axis: int | None
    slices: Sequence[int] | None
    overlap: float
    roi_size: Sequence[int] | None
    uncertainty: bool
    precision: Precision | str
    channels_last: bool | None
    stop: Callable[[], bool]

    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of `predict_steps`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class CheckedOptions:
    """The options checked against the spec and the scan: the device ``dev``, the slice
    axis ``ax``, the requested ``slices`` (sorted, unique; None: all), the precision;
    the rest as ``given``."""

    dev: torch.device
    ax: int
    slices: list[int] | None
    precision: Precision
    given: PredictOptions


def resolve_model(model: Any, spec: ModelSpec | None) -> tuple[torch.nn.Module, ModelSpec]:
    """The network and its spec from a `LoadedModel` or a module with its spec."""
    from napari_unet.models.files import LoadedModel

    net = model.model if isinstance(model, LoadedModel) else model
    if spec is None and isinstance(model, LoadedModel):
        spec = model.spec
    if not isinstance(spec, ModelSpec):
        raise ValueError("spec must be given when model is a plain torch.nn.Module")
    if not isinstance(net, torch.nn.Module):
        raise ValueError(
            f"model must be a LoadedModel or torch.nn.Module, got {type(model).__name__}"
        )
    return net, spec


def check_options(spec: ModelSpec, volume: Volume, options: PredictOptions) -> CheckedOptions:
    """``options`` checked in turn: overlap, precision, device, slice axis, slices.

    Raises:
        ValueError: the first bad option, named (a bad choice names the allowed ones).
    """
    if not 0.0 <= options.overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {options.overlap!r}")
    precision = Precision.check(options.precision, "precision")
    dev = resolve_device(options.device)
    ax = spec_slice_axis(spec, volume.through_plane_axis, options.slice_axis)
    slices = check_slices(options.slices, volume.shape[ax], ax)
    return CheckedOptions(dev, ax, slices, precision, options)


def check_slices(slices: Sequence[int] | None, n_slices: int, ax: int) -> list[int] | None:
    """The requested slice indices, sorted and unique; ValueError for one outside."""
    if slices is None:
        return None
    slices = sorted({int(s) for s in slices})
    bad = [s for s in slices if not 0 <= s < n_slices]
    if bad:
        raise ValueError(f"slices {bad[:5]} outside 0..{n_slices - 1} along axis {ax}")
    return slices

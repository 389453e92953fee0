"""`build_model(spec)`: the MONAI network a `ModelSpec` describes."""

from __future__ import annotations

import math
from typing import Any

import torch

from napari_unet.models.spec import ModelSpec


def build_model(spec: ModelSpec) -> torch.nn.Module:
    """Build the (untrained, train-mode) network of a spec from ``monai.networks.nets``.

    The network maps ``(N, in_channels, *spatial)`` to ``(N, out_channels, *spatial)``
    logits, spatial = ``(H, W)`` for 2D and ``(H, W, D)`` for 3D; each spatial size must
    be a multiple of `size_divisor(spec)`.

    Args:
        spec: the model description.

    Returns:
        A ``torch.nn.Module`` on the CPU.

    Raises:
        ValueError: ``spec.arch_args`` not accepted by the MONAI network (names the arg).
    """
    from monai.networks import nets

    common = {
        "spatial_dims": spec.spatial_dims,
        "in_channels": spec.in_channels,
        "out_channels": spec.out_channels,
    }
    args: dict[str, Any] = dict(spec.arch_args)
    if spec.arch in ("unet", "resunet"):
        args.setdefault("num_res_units", 2 if spec.arch == "resunet" else 0)
        cls: Any = nets.UNet
    elif spec.arch == "attention_unet":
        cls = nets.AttentionUnet
    elif spec.arch == "classic_unet":
        cls = nets.BasicUNet
    else:  # pragma: no cover - ModelSpec validates arch
        raise ValueError(f"unknown arch {spec.arch!r}")
    for key in ("norm", "act"):  # JSON turns (name, {kwargs}) tuples into lists
        if isinstance(args.get(key), list):
            args[key] = tuple(args[key])
    try:
        return cls(**common, **args)
    except TypeError as e:
        raise ValueError(
            f"arch_args {sorted(args)} not accepted by MONAI {cls.__name__}: {e}"
        ) from e


def size_divisor(spec: ModelSpec) -> int:
    """The factor every spatial input size must be a multiple of (product of the strides)."""
    if spec.arch == "classic_unet":
        return 16  # BasicUNet: four 2× max-pools
    strides = spec.arch_args.get("strides", [2, 2, 2])
    return int(math.prod(int(s) if isinstance(s, (int, float)) else max(s) for s in strides))


def has_sample_dependent_norm(model: torch.nn.Module) -> bool:
    """Whether a voxel's output depends on the whole input tile (instance/group/layer norm).

    Batch norm in eval mode is a fixed per-channel affine, so the network is a local
    function of its input and larger inference tiles give the same answer; instance, group
    and layer norm compute statistics over each tile and do not.
    """
    kinds = (torch.nn.modules.instancenorm._InstanceNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)
    return any(isinstance(m, kinds) for m in model.modules())

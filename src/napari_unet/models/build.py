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

    if spec.arch in ("nnunet_plain", "nnunet_resenc"):
        return _build_nnunet(spec)
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
    elif spec.arch in _MONAI_IMPORTED:
        cls = getattr(nets, _MONAI_IMPORTED[spec.arch])
        if spec.arch == "dynunet":
            args["deep_supervision"] = False
    else:  # pragma: no cover - ModelSpec validates arch
        raise ValueError(f"unknown arch {spec.arch!r}")
    for key in ("norm", "act", "norm_name", "act_name", "dropout"):  # JSON: tuples -> lists
        if isinstance(args.get(key), list):
            args[key] = tuple(args[key])
    try:
        if spec.arch == "swin_unetr" and torch.get_default_device().type == "meta":
            with torch.device("cpu"):  # SwinUNETR calls .item() while it is built
                return cls(**common, **args).to("meta")
        return cls(**common, **args)
    except TypeError as e:
        raise ValueError(
            f"arch_args {sorted(args)} not accepted by MONAI {cls.__name__}: {e}"
        ) from e


def size_divisor(spec: ModelSpec) -> int:
    """The factor every spatial input size must be a multiple of (product of the strides)."""
    if spec.arch == "classic_unet":
        return 16  # BasicUNet: four 2× max-pools
    if spec.arch == "segresnet":
        return 2 ** (len(spec.arch_args.get("blocks_down", (1, 2, 2, 4))) - 1)
    if spec.arch == "swin_unetr":
        return 32  # patch embedding 2, then four 2× patch mergings
    if spec.arch == "unetr":
        return 16  # ViT patches of 16 (inputs are exactly img_size anyway)
    strides = spec.arch_args.get("strides", [2, 2, 2])
    return int(math.prod(int(s) if isinstance(s, (int, float)) else max(s) for s in strides))


_MONAI_IMPORTED = {
    "segresnet": "SegResNet",
    "dynunet": "DynUNet",
    "swin_unetr": "SwinUNETR",
    "unetr": "UNETR",
}


def _build_nnunet(spec: ModelSpec) -> torch.nn.Module:
    """nnU-Net's PlainConvUNet / ResidualEncoderUNet (needs dynamic_network_architectures).

    Layer names in ``arch_args`` (``conv_op``, ``norm_op`` …) come from a fixed table, never
    from an import by name. ``axis_order`` (model axis m reads array axis
    ``axis_order[m]``) is applied to the input and undone on the output by hooks on the
    network, so its state-dict names stay nnU-Net's.
    """
    try:
        from dynamic_network_architectures.architectures import unet as dna
        from dynamic_network_architectures.building_blocks import residual
    except ImportError:
        raise ValueError(
            "this model is an nnU-Net network: install the optional package with "
            "`pip install napari-unet[nnunet]` (or dynamic_network_architectures)"
        ) from None
    nn = torch.nn
    table = {
        "Conv2d": nn.Conv2d, "Conv3d": nn.Conv3d,
        "InstanceNorm2d": nn.InstanceNorm2d, "InstanceNorm3d": nn.InstanceNorm3d,
        "BatchNorm2d": nn.BatchNorm2d, "BatchNorm3d": nn.BatchNorm3d,
        "Dropout": nn.Dropout, "Dropout2d": nn.Dropout2d, "Dropout3d": nn.Dropout3d,
        "LeakyReLU": nn.LeakyReLU, "ReLU": nn.ReLU, "PReLU": nn.PReLU, "GELU": nn.GELU,
        "ELU": nn.ELU, "BasicBlockD": residual.BasicBlockD, "BottleneckD": residual.BottleneckD,
        None: None,
    }  # fmt: skip
    args: dict[str, Any] = dict(spec.arch_args)
    order = [int(a) for a in args.pop("axis_order", range(spec.spatial_dims))]
    args.setdefault("conv_op", f"Conv{spec.spatial_dims}d")
    for key in ("conv_op", "norm_op", "dropout_op", "nonlin", "block"):
        if key in args:
            args[key] = table[args[key]]
    cls = dna.PlainConvUNet if spec.arch == "nnunet_plain" else dna.ResidualEncoderUNet
    try:
        net = cls(input_channels=spec.in_channels, num_classes=spec.out_channels,
                  deep_supervision=False, **args)  # fmt: skip
    except (TypeError, AssertionError) as e:
        raise ValueError(f"arch_args not accepted by nnU-Net's {cls.__name__}: {e}") from e
    if order != sorted(order):
        net.register_forward_pre_hook(_Permute(order, inverse=False))
        net.register_forward_hook(_Permute(order, inverse=True))
    return net


class _Permute:
    """Forward hooks giving a network its own spatial axis order (see `_build_nnunet`)."""

    def __init__(self, order: list[int], *, inverse: bool) -> None:
        self.order = list(order)
        self.inverse = inverse

    def _permute(self, x: torch.Tensor) -> torch.Tensor:
        order = self.order
        if self.inverse:  # output axis m holds input axis order[m]: put it back
            order = [order.index(a) for a in range(len(order))]
        return x.permute(0, 1, *(2 + a for a in order))

    def __call__(self, module: torch.nn.Module, inputs: Any, output: Any = None) -> Any:
        if not self.inverse:
            return (self._permute(inputs[0]), *inputs[1:])
        if isinstance(output, (list, tuple)):
            return type(output)(self._permute(o) for o in output)
        return self._permute(output)


def has_sample_dependent_norm(model: torch.nn.Module) -> bool:
    """Whether a voxel's output depends on the whole input tile (instance/group/layer norm).

    Batch norm in eval mode is a fixed per-channel affine, so the network is a local
    function of its input and larger inference tiles give the same answer; instance, group
    and layer norm compute statistics over each tile and do not.
    """
    kinds = (torch.nn.modules.instancenorm._InstanceNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)
    return any(isinstance(m, kinds) for m in model.modules())

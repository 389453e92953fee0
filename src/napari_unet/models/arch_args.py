"""Checks of `ModelSpec.arch_args`: the MONAI network arguments of a preset or imported model.

Presets ("unet", "resunet", "attention_unet", "classic_unet") have their widths, strides,
kernels, residual units and dropout checked; each imported architecture has its own
check (`_IMPORTED_CHECKS`) of the arguments that size the network. Every other entry must
be small plain JSON data. Anything else raises ValueError naming ``arch_args.<key>``.
"""

from __future__ import annotations

import numbers
from typing import Any

from napari_unet.models.checks import _int, _patch, _real, _short
from napari_unet.models.limits import (
    MAX_ARG_INT,
    MAX_FEATURES,
    MAX_HEADS,
    MAX_HIDDEN,
    MAX_KERNEL,
    MAX_LEVELS,
    MAX_MLP,
    MAX_RES_UNITS,
    MAX_STRIDE,
    NNUNET_OPS,
    PRESET_ARCHS,
)


def _sizes(value: Any, name: str, lo: int, hi: int, dims: int) -> None:
    """An int in [lo, hi] or a list of ``dims`` of them (per-axis sizes)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    ok = (not isinstance(value, (list, tuple)) or len(items) == dims) and all(
        (i := _int(v)) is not None and lo <= i <= hi for v in items
    )
    if not ok:
        raise ValueError(
            f"arch_args.{name} must be {lo} to {hi} (or one such value per axis), "
            f"got {_short(value)}"
        )


def _widths(value: Any, name: str, count: tuple[int, int]) -> None:
    ok = isinstance(value, (list, tuple)) and count[0] <= len(value) <= count[1]
    ok = ok and all((i := _int(v)) is not None and 1 <= i <= MAX_FEATURES for v in value)
    if not ok:
        n = f"{count[0]}" if count[0] == count[1] else f"{count[0]} to {count[1]}"
        raise ValueError(
            f"arch_args.{name} must be {n} widths of 1 to {MAX_FEATURES}, got {_short(value)}"
        )


def _plain(value: Any, name: str, depth: int = 0) -> None:
    """JSON-like data with small integers, finite numbers, short texts, small containers."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, numbers.Integral):
        if abs(int(value)) > MAX_ARG_INT:
            raise ValueError(f"arch_args.{name} holds {_short(value)}, above {MAX_ARG_INT}")
        return
    if isinstance(value, numbers.Real):
        if _real(value) is None:
            raise ValueError(f"arch_args.{name} holds a non-finite number")
        return
    if isinstance(value, str):
        if len(value) > 64:
            raise ValueError(f"arch_args.{name} holds a text longer than 64 characters")
        return
    if isinstance(value, (list, tuple, dict)) and depth < 3 and len(value) <= 16:
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise ValueError(f"arch_args.{name} has non-text keys")
            items = value.values()
        else:
            items = value
        for item in items:
            _plain(item, name, depth + 1)
        return
    raise ValueError(f"arch_args.{name} must be plain JSON data, got {_short(value)}")


def _arch_args(args: Any, arch: str, dims: int) -> dict[str, Any]:
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise ValueError(f"arch_args must be a JSON object, got {_short(args)}")
    if len(args) > 32:
        raise ValueError(f"arch_args has {len(args)} entries; at most 32 are allowed")
    if arch not in PRESET_ARCHS:
        checked = _IMPORTED_CHECKS[arch](args, dims)
        for key, value in args.items():  # anything else: small plain data
            if key not in checked:
                _plain(value, key)
        return dict(args)
    if arch == "classic_unet":
        if "features" in args:
            _widths(args["features"], "features", (6, 6))
    else:
        if "channels" in args:
            _widths(args["channels"], "channels", (2, MAX_LEVELS))
        if "strides" in args:
            strides = args["strides"]
            n = len(args.get("channels", ())) - 1 if "channels" in args else None
            if not isinstance(strides, (list, tuple)) or (n is not None and len(strides) != n):
                raise ValueError(
                    f"arch_args.strides must be one stride per level transition"
                    f"{f' ({n})' if n is not None else ''}, got {_short(strides)}"
                )
            for stride in strides:
                _sizes(stride, "strides", 1, MAX_STRIDE, dims)
    for key in ("kernel_size", "up_kernel_size"):
        if key in args:
            _sizes(args[key], key, 1, MAX_KERNEL, dims)
    if "num_res_units" in args:
        units = _int(args["num_res_units"])
        if units is None or not 0 <= units <= MAX_RES_UNITS:
            raise ValueError(
                f"arch_args.num_res_units must be 0 to {MAX_RES_UNITS}, "
                f"got {_short(args['num_res_units'])}"
            )
    if "dropout" in args and args["dropout"] is not None:
        drop = args["dropout"]
        values = drop if isinstance(drop, (list, tuple)) else [drop]
        if not all((d := _real(v)) is not None and 0.0 <= d <= 1.0 for v in values):
            raise ValueError(f"arch_args.dropout must be 0 to 1, got {_short(drop)}")
    for key, value in args.items():  # anything else: small plain data
        _plain(value, key)
    return dict(args)


def _whole(value: Any, name: str, lo: int, hi: int) -> int:
    number = _int(value)
    if number is None or not lo <= number <= hi:
        raise ValueError(
            f"arch_args.{name} must be a whole number {lo} to {hi}, got {_short(value)}"
        )
    return number


def _per_level(
    value: Any, name: str, dims: int, lo: int, hi: int, *, count: tuple[int, int] | int
) -> int:
    """A list of per-level values (each an int in [lo, hi] or ``dims`` of them); its length."""
    lo_n, hi_n = (count, count) if isinstance(count, int) else count
    if not isinstance(value, (list, tuple)) or not lo_n <= len(value) <= hi_n:
        n = f"{lo_n}" if lo_n == hi_n else f"{lo_n} to {hi_n}"
        raise ValueError(f"arch_args.{name} must be a list of {n} levels, got {_short(value)}")
    for item in value:
        _sizes(item, name, lo, hi, dims)
    return len(value)


def _counts(value: Any, name: str, n: int, lo: int = 1, hi: int = MAX_RES_UNITS) -> None:
    """An int in [lo, hi] or ``n`` of them (blocks or convolutions per level)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and len(items) != n:
        raise ValueError(f"arch_args.{name} must have {n} entries, got {_short(value)}")
    for item in items:
        _whole(item, name, lo, hi)


def _check_segresnet(args: dict[str, Any], dims: int) -> set[str]:
    _whole(args.get("init_filters", 8), "init_filters", 1, 128)
    down = args.get("blocks_down", (1, 2, 2, 4))
    levels = _per_level(down, "blocks_down", 1, 1, MAX_RES_UNITS, count=(1, MAX_LEVELS))
    _per_level(args.get("blocks_up", (1, 1, 1)), "blocks_up", 1, 1, MAX_RES_UNITS,
               count=levels - 1)  # fmt: skip
    if "num_groups" in args:
        _whole(args["num_groups"], "num_groups", 1, MAX_FEATURES)
    return {"init_filters", "blocks_down", "blocks_up", "num_groups"}


def _check_dynunet(args: dict[str, Any], dims: int) -> set[str]:
    for key in ("kernel_size", "strides", "upsample_kernel_size"):
        if key not in args:
            raise ValueError(f"arch_args.{key} is required for DynUNet")
    levels = _per_level(args["kernel_size"], "kernel_size", dims, 1, MAX_KERNEL,
                        count=(2, MAX_LEVELS))  # fmt: skip
    _per_level(args["strides"], "strides", dims, 1, MAX_STRIDE, count=levels)
    _per_level(args["upsample_kernel_size"], "upsample_kernel_size", dims, 1, MAX_STRIDE,
               count=levels - 1)  # fmt: skip
    if args.get("filters") is not None:
        _widths(args["filters"], "filters", (levels, levels))
    if args.get("deep_supervision", False) is not False:
        raise ValueError("arch_args.deep_supervision must be false (its heads are dropped)")
    return {"kernel_size", "strides", "upsample_kernel_size", "filters"}


def _check_swin_unetr(args: dict[str, Any], dims: int) -> set[str]:
    feature = _whole(args.get("feature_size", 24), "feature_size", 12, 48)
    if feature % 12:
        raise ValueError(f"arch_args.feature_size must be a multiple of 12, got {feature}")
    _per_level(args.get("depths", (2, 2, 2, 2)), "depths", 1, 1, MAX_RES_UNITS, count=4)
    _per_level(args.get("num_heads", (3, 6, 12, 24)), "num_heads", 1, 1, MAX_HEADS, count=4)
    _sizes(args.get("window_size", 7), "window_size", 1, 16, dims)
    if _int(args.get("patch_size", 2)) != 2:
        raise ValueError(f"arch_args.patch_size must be 2, got {_short(args.get('patch_size'))}")
    mlp = _real(args.get("mlp_ratio", 4.0))
    if mlp is None or not 0 < mlp <= 8:
        raise ValueError(f"arch_args.mlp_ratio must be above 0 and at most 8, got {mlp!r}")
    return {"feature_size", "depths", "num_heads", "window_size", "patch_size", "mlp_ratio"}


def _check_unetr(args: dict[str, Any], dims: int) -> set[str]:
    _patch(args.get("img_size"), dims)
    _whole(args.get("feature_size", 16), "feature_size", 1, 128)
    _whole(args.get("hidden_size", 768), "hidden_size", 1, MAX_HIDDEN)
    _whole(args.get("mlp_dim", 3072), "mlp_dim", 1, MAX_MLP)
    _whole(args.get("num_heads", 12), "num_heads", 1, MAX_HEADS)
    return {"img_size", "feature_size", "hidden_size", "mlp_dim", "num_heads"}


def _check_nnunet(args: dict[str, Any], dims: int) -> set[str]:
    stages = _whole(args.get("n_stages"), "n_stages", 1, MAX_LEVELS)
    features = args.get("features_per_stage")
    if isinstance(features, (list, tuple)):
        _widths(features, "features_per_stage", (stages, stages))
    else:
        _whole(features, "features_per_stage", 1, MAX_FEATURES)
    _per_level(args.get("kernel_sizes"), "kernel_sizes", dims, 1, MAX_KERNEL, count=stages)
    _per_level(args.get("strides"), "strides", dims, 1, MAX_STRIDE, count=stages)
    blocks = "n_blocks_per_stage" if "n_blocks_per_stage" in args else "n_conv_per_stage"
    _counts(args.get(blocks), blocks, stages)
    _counts(args.get("n_conv_per_stage_decoder"), "n_conv_per_stage_decoder", stages - 1)
    for key, names in NNUNET_OPS.items():
        value = args.get(key, names[-1] if names[-1] is None else names[0])
        if value not in names:
            raise ValueError(f"arch_args.{key} must be one of {names}, got {_short(value)}")
    conv = args.get("conv_op", f"Conv{dims}d")
    if conv != f"Conv{dims}d":
        raise ValueError(f"arch_args.conv_op must be Conv{dims}d for a {dims}D model")
    for key in ("bottleneck_channels", "stem_channels"):
        if args.get(key) is not None:
            value = args[key]
            if isinstance(value, (list, tuple)):
                _widths(value, key, (stages, stages))
            else:
                _whole(value, key, 1, MAX_FEATURES)
    order = args.get("axis_order", list(range(dims)))
    axes = [_int(a) for a in order] if isinstance(order, (list, tuple)) else []
    if sorted(a for a in axes if a is not None) != list(range(dims)) or None in axes:
        raise ValueError(
            f"arch_args.axis_order must be a permutation of {list(range(dims))}, "
            f"got {_short(order)}"
        )
    return {"n_stages", "features_per_stage", "kernel_sizes", "strides", blocks,
            "n_conv_per_stage_decoder", "bottleneck_channels", "stem_channels", "axis_order",
            *NNUNET_OPS}  # fmt: skip


_IMPORTED_CHECKS = {
    "segresnet": _check_segresnet,
    "dynunet": _check_dynunet,
    "swin_unetr": _check_swin_unetr,
    "unetr": _check_unetr,
    "nnunet_plain": _check_nnunet,
    "nnunet_resenc": _check_nnunet,
}

"""`ModelSpec`: everything needed to rebuild a network and feed it a scan.

The spec travels as JSON inside every model file (see `napari_unet.models.files`). It
imports neither torch nor MONAI, so a widget or the CLI can read a model's labels,
colours and patch size without loading the network.

Conventions:

* ``labels`` are the foreground class names; the network has ``len(labels) + 1`` output
  channels and channel 0 is background. A label map value ``v`` means ``labels[v - 1]``.
* 2D models see one slice along ``slice_axis`` (None: the scan's through-plane axis)
  plus ``context_slices`` neighbours on each side as extra input channels, ordered from
  the lowest slice index to the highest (so the centre slice is channel
  ``context_slices``); neighbours past the scan's ends repeat the edge slice.
  ``in_channels == 1 + 2 * context_slices``. 3D models take one channel.
* ``patch_size`` is the training patch (the sliding-window ``roi_size``), in voxels, in
  the model's input axis order: for 2D the two in-plane array axes in increasing order,
  for 3D the array axes ``(i, j, k)``.
* ``target_spacing`` (mm) is per array axis ``(i, j, k)``; None (or a None entry) keeps
  the native spacing. 2D models never resample along their slice axis.
* ``orientation`` (e.g. "RAS"; None: as stored) is the axis codes the model expects its
  ``(i, j, k)`` to point to: the scan is flipped and transposed to it before anything
  else (no resampling; `napari_unet.inference.orientation`) and the output brought
  back, so ``target_spacing``, ``patch_size`` and ``slice_axis`` are in the axis order
  of the reoriented array. Imported nnU-Net models keep their (z, y, x) axis order
  inside the network (``arch_args.axis_order``), so theirs are in ``(i, j, k)`` too.
* ``inference_style`` None predicts the napari-unet way (tiles aligned to the network's
  stride, MONAI's gaussian, trilinear resampling, labels back by nearest neighbour);
  "nnunet" the way nnU-Net v2's predictor does (its crop, sliding-window positions and
  gaussian, order-3 resampling in, logits back linearly before the argmax:
  `napari_unet.inference.nnunet_style`). Models imported from nnU-Net set it; files
  older than format version 3 have no such field and read as None.

A spec arrives from files written by others, so validation checks types and bounds every
value that sizes an allocation (see the ``MAX_*`` constants): 1–255 labels of at most 64
printable characters, ``context_slices`` 0–8 (so ``in_channels`` 1–17 ≤ 32), patch sizes
8–1024 voxels per axis and at most 2**27 voxels in all, target spacing 0.05–20 mm,
finite normalisation numbers, and in ``arch_args`` feature widths 1–1024 over at most
8 levels, kernel sizes 1–7, at most 8 residual units, and no integer beyond 1024
anywhere else (e.g. a PReLU's ``num_parameters``). Anything else raises ValueError or
TypeError naming the field, before a network is built.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import asdict, dataclass, field
from typing import Any

# Default colours for labels 1, 2, … : one palette for model specs and label files.
from napari_unet.io.labelmap import DEFAULT_COLORS

#: Version of the model-file metadata layout. Bump when an old reader could misread a file.
FORMAT_VERSION = 3  # 2: ModelSpec.orientation; 3: ModelSpec.inference_style (nnU-Net)

#: The presets (`preset_spec`).
ARCHS = ("unet", "resunet", "attention_unet", "classic_unet")
PRESET_ARCHS = ARCHS
#: Architectures of imported models (`napari_unet.models.importers`): MONAI SegResNet,
#: DynUNet, SwinUNETR, UNETR and nnU-Net's PlainConvUNet / ResidualEncoderUNet (these two
#: need the optional dynamic_network_architectures package when built).
IMPORTED_ARCHS = ("segresnet", "dynunet", "swin_unetr", "unetr", "nnunet_plain", "nnunet_resenc")
ALL_ARCHS = ARCHS + IMPORTED_ARCHS
#: `ModelSpec.inference_style` values: None (ours) or nnU-Net v2's predictor.
INFERENCE_STYLES = (None, "nnunet")
NORMALIZATION_MODES = ("ct", "mr", "none")

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")

#: Bounds on what a spec may ask for (see the module docstring).
MAX_LABELS = 255
MAX_LABEL_CHARS = 64
MAX_NAME_CHARS = 256
MAX_CONTEXT_SLICES = 8
MAX_IN_CHANNELS = 32
PATCH_RANGE = (8, 1024)
MAX_PATCH_VOXELS = 2**27
SPACING_RANGE = (0.05, 20.0)
MAX_FEATURES = 1024
MAX_LEVELS = 8
MAX_KERNEL = 7
MAX_STRIDE = 4
MAX_RES_UNITS = 8
#: Any other integer in ``arch_args`` (also inside ``norm``/``act`` arguments).
MAX_ARG_INT = 1024


@dataclass
class Normalization:
    """Intensity normalisation applied to a scan before the network sees it.

    Attributes:
        mode: "ct": clip to ``window`` (HU) then scale linearly to ``output_range``;
            "mr": clip to the ``percentiles`` of the (nonzero, if ``nonzero``) voxels, then
            z-score with their mean and standard deviation; "none": cast only.
        window: (low, high) in HU for "ct".
        output_range: (low, high) of the scaled values for "ct", e.g. (0, 1) or (-1, 1).
        percentiles: (low, high) in percent for "mr".
        nonzero: for "mr", compute statistics over nonzero voxels only (skull-stripped or
            zero-padded scans).
    """

    mode: str = "ct"
    window: tuple[float, float] = (-1000.0, 1000.0)
    output_range: tuple[float, float] = (0.0, 1.0)
    percentiles: tuple[float, float] = (0.5, 99.5)
    nonzero: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str) or self.mode not in NORMALIZATION_MODES:
            raise ValueError(
                f"normalization.mode must be one of {NORMALIZATION_MODES}, got {_short(self.mode)}"
            )
        if not isinstance(self.nonzero, bool) and type(self.nonzero).__name__ != "bool_":
            raise ValueError(
                f"normalization.nonzero must be true or false, got {_short(self.nonzero)}"
            )
        self.nonzero = bool(self.nonzero)
        self.window = _pair(self.window, "normalization.window")
        self.output_range = _pair(self.output_range, "normalization.output_range")
        self.percentiles = _pair(self.percentiles, "normalization.percentiles")
        if not 0.0 <= self.percentiles[0] < self.percentiles[1] <= 100.0:
            raise ValueError(
                f"normalization.percentiles must rise within [0, 100], got {self.percentiles}"
            )

    @classmethod
    def for_modality(cls, modality: str) -> Normalization:
        """The default for "CT" (HU window -1000…1000 → [0, 1]), "MR" (0.5–99.5 %, z-score)."""
        modality = modality.upper()
        if modality == "CT":
            return cls(mode="ct")
        if modality == "MR":
            return cls(mode="mr")
        return cls(mode="none")


@dataclass
class ModelSpec:
    """Architecture, inputs and outputs of a segmentation model (see module docstring).

    Attributes:
        arch: one of ``ALL_ARCHS``. "classic_unet" is the Ronneberger et al. layout (MONAI
            ``BasicUNet``: two 3×3 convs per block, 64→1024 features, transposed-conv
            upsampling, concatenated skips).
        spatial_dims: 2 (slice by slice) or 3 (sliding window).
        in_channels: input channels; ``1 + 2 * context_slices``.
        labels: foreground class names (output channels = ``len(labels) + 1``).
        colors: one "#rrggbb" per label.
        arch_args: keyword arguments of the MONAI network (``channels``, ``strides``,
            ``num_res_units``, ``norm``, ``features`` …).
        normalization: intensity normalisation.
        target_spacing: mm per array axis (i, j, k), or None for the native grid.
        patch_size: training patch / sliding-window roi in voxels (2 or 3 values).
        context_slices: neighbouring slices on each side fed as channels (2D only).
        slice_axis: array axis 2D models slice along; None = the scan's through-plane axis.
        modality: "CT", "MR" or "other": what the model was made for.
        name: a short human-readable name.
        orientation: axis codes ("RAS", "LPS" …) the scan is reoriented to (flips and
            transposes only) before the model sees it; None: the array as stored.
        inference_style: None (napari-unet's tiling and resampling) or "nnunet"
            (nnU-Net v2's, for models imported from it; see module docstring).
    """

    arch: str
    spatial_dims: int
    labels: list[str]
    in_channels: int = 1
    colors: list[str] = field(default_factory=list)
    arch_args: dict[str, Any] = field(default_factory=dict)
    normalization: Normalization = field(default_factory=Normalization)
    target_spacing: tuple[float | None, ...] | None = None
    patch_size: tuple[int, ...] = (96, 96)
    context_slices: int = 0
    slice_axis: int | None = None
    modality: str = "other"
    name: str = ""
    orientation: str | None = None
    inference_style: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or self.arch not in ALL_ARCHS:
            raise ValueError(f"arch must be one of {ALL_ARCHS}, got {_short(self.arch)}")
        if _int(self.spatial_dims) not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {_short(self.spatial_dims)}")
        self.spatial_dims = int(self.spatial_dims)
        self.labels = _labels(self.labels)
        if not self.colors:
            self.colors = [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(len(self.labels))]
        if (
            not isinstance(self.colors, (list, tuple))
            or len(self.colors) != len(self.labels)
            or not all(isinstance(c, str) and _HEX.match(c) for c in self.colors)
        ):
            raise ValueError(f"colors must be one '#rrggbb' per label, got {_short(self.colors)}")
        self.colors = list(self.colors)
        if isinstance(self.normalization, dict):
            self.normalization = Normalization(**self.normalization)
        if not isinstance(self.normalization, Normalization):
            raise ValueError(
                f"normalization must be an object with a mode, got {_short(self.normalization)}"
            )
        cs = _int(self.context_slices)
        if cs is None or not 0 <= cs <= MAX_CONTEXT_SLICES or (self.spatial_dims == 3 and cs):
            raise ValueError(
                f"context_slices must be 0 to {MAX_CONTEXT_SLICES} (0 for 3D models), "
                f"got {_short(self.context_slices)}"
            )
        self.context_slices = cs
        channels = _int(self.in_channels)
        if channels is None or not 1 <= channels <= MAX_IN_CHANNELS or channels != 1 + 2 * cs:
            raise ValueError(
                f"in_channels must be 1 + 2 * context_slices = "
                f"{1 + 2 * cs}, got {_short(self.in_channels)}"
            )
        self.in_channels = channels
        self.patch_size = _patch(self.patch_size, self.spatial_dims)
        self.target_spacing = _spacing(self.target_spacing)
        if self.slice_axis is not None and _int(self.slice_axis) not in (0, 1, 2):
            raise ValueError(f"slice_axis must be None, 0, 1 or 2, got {_short(self.slice_axis)}")
        if self.slice_axis is not None:
            self.slice_axis = int(self.slice_axis)
        if not isinstance(self.modality, str) or self.modality not in ("CT", "MR", "other"):
            raise ValueError(f"modality must be 'CT', 'MR' or 'other', got {_short(self.modality)}")
        if not isinstance(self.name, str) or len(self.name) > MAX_NAME_CHARS:
            raise ValueError(
                f"name must be a text of at most {MAX_NAME_CHARS} characters, "
                f"got {_short(self.name)}"
            )
        self.orientation = _orientation(self.orientation)
        if self.inference_style not in INFERENCE_STYLES:
            raise ValueError(
                f"inference_style must be one of {INFERENCE_STYLES}, "
                f"got {_short(self.inference_style)}"
            )
        self.arch_args = _arch_args(self.arch_args, self.arch, self.spatial_dims)
        if self.arch == "unetr" and list(self.arch_args.get("img_size", [])) != list(
            self.patch_size
        ):
            raise ValueError(
                f"arch_args.img_size must equal patch_size {list(self.patch_size)} (UNETR takes "
                f"inputs of exactly that size), got {_short(self.arch_args.get('img_size'))}"
            )

    @property
    def out_channels(self) -> int:
        """Background plus one channel per label."""
        return len(self.labels) + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists instead of tuples)."""
        return json.loads(json.dumps(asdict(self)))

    def file_form(self) -> tuple[int, dict[str, Any]]:
        """(format version, JSON form) for a model file: the lowest version that holds
        this spec. A field a later format added is left out while it has its default
        (``inference_style`` None), so ordinary models stay readable by napari-unet
        releases that know format 2."""
        data = self.to_dict()
        if self.inference_style is None:
            del data["inference_style"]
            return 2, data
        return FORMAT_VERSION, data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of `to_dict`; unknown keys raise ValueError naming them.

        Raises:
            ValueError, TypeError: not an object, unknown or missing fields, values of the
                wrong type or outside the bounds (the message names the field).
        """
        if not isinstance(data, dict):
            raise TypeError(f"a model spec must be a JSON object, got {type(data).__name__}")
        if not all(isinstance(k, str) for k in data):
            raise TypeError("model spec field names must be text")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelSpec fields {unknown}")
        data = dict(data)
        norm = data.get("normalization")
        if isinstance(norm, dict):
            unknown = sorted(set(norm) - set(Normalization.__dataclass_fields__))
            if unknown:
                raise ValueError(f"unknown normalization fields {_short(unknown)}")
            data["normalization"] = Normalization(**norm)
        elif "normalization" in data:
            raise TypeError(f"normalization must be a JSON object, got {_short(norm)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return cls.from_dict(json.loads(text))


def preset_spec(
    arch: str = "unet",
    *,
    spatial_dims: int,
    labels: list[str] | tuple[str, ...],
    colors: list[str] | None = None,
    modality: str = "CT",
    context_slices: int = 0,
    patch_size: tuple[int, ...] | None = None,
    target_spacing: tuple[float | None, ...] | None = None,
    **arch_args: Any,
) -> ModelSpec:
    """A spec with small defaults that fine-tune in seconds on a CPU.

    "unet": MONAI ``UNet`` channels (16, 32, 64, 128), strides (2, 2, 2); "resunet": the
    same with ``num_res_units=2``; "attention_unet": MONAI ``AttentionUnet`` with the same
    channels; "classic_unet": Ronneberger's U-Net (``BasicUNet`` 64→1024, deconv).
    Patches: 96² (2D; 128² for classic_unet) and 64³ (3D).

    All presets use batch normalisation: in eval mode it is a fixed per-channel affine, so
    a voxel's prediction does not depend on the rest of the tile it was computed in. That
    makes inference tile-size independent (the engine may use tiles larger than the
    training patch, which is where much of its speed comes from) and matches MONAI's
    ``AttentionUnet``, whose norm is fixed to batch. Pass ``norm="instance"`` to override.

    Args:
        arch: one of ``ARCHS``.
        spatial_dims: 2 or 3.
        labels: foreground class names.
        colors: "#rrggbb" per label (default palette if None).
        modality: "CT", "MR" or "other"; chooses the intensity normalisation.
        context_slices: neighbouring slices on each side as channels (2D only).
        patch_size: override the default patch (voxels).
        target_spacing: mm per array axis, or None for the native grid.
        **arch_args: override the MONAI network arguments.

    Returns:
        The ModelSpec.
    """
    if arch not in PRESET_ARCHS:
        raise ValueError(f"arch must be one of {PRESET_ARCHS}, got {arch!r}")
    if arch == "classic_unet":
        args: dict[str, Any] = {
            "features": [64, 128, 256, 512, 1024, 64],
            "upsample": "deconv",
            "norm": "batch",
            "act": "relu",
        }
        default_patch = 128 if spatial_dims == 2 else 64
    else:
        args = {"channels": [16, 32, 64, 128], "strides": [2, 2, 2]}
        if arch != "attention_unet":
            args.update(num_res_units=2 if arch == "resunet" else 0, norm="batch")
        default_patch = 96 if spatial_dims == 2 else 64
    args.update(arch_args)
    return ModelSpec(
        arch=arch,
        spatial_dims=spatial_dims,
        labels=list(labels),
        in_channels=1 + 2 * context_slices,
        colors=list(colors) if colors else [],
        arch_args=args,
        normalization=Normalization.for_modality(modality),
        target_spacing=target_spacing,
        patch_size=tuple(patch_size) if patch_size else (default_patch,) * spatial_dims,
        context_slices=context_slices,
        modality=modality.upper() if modality.upper() in ("CT", "MR") else "other",
        name=f"{arch}-{spatial_dims}d",
    )


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages stay one short line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int(value: Any) -> int | None:
    """``value`` as an int if it is an integer (not a bool), else None."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


def _real(value: Any) -> float | None:
    """``value`` as a finite float if it is a finite real number (not a bool), else None."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except (OverflowError, ValueError):
            return None
        return number if math.isfinite(number) else None
    return None


def _pair(value: Any, name: str) -> tuple[float, float]:
    values = tuple(_real(v) for v in value) if isinstance(value, (list, tuple)) else ()
    if len(values) != 2 or None in values or not values[0] < values[1]:  # type: ignore[operator]
        raise ValueError(
            f"{name} must be (low, high) finite numbers with low < high, got {_short(value)}"
        )
    return values  # type: ignore[return-value]


def _labels(labels: Any) -> list[str]:
    if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
        raise ValueError(f"labels must be a list of names, got {_short(labels)}")
    if not 1 <= len(labels) <= MAX_LABELS:
        raise ValueError(f"labels must be 1 to {MAX_LABELS} names, got {len(labels)}")
    for n in labels:
        if (
            not isinstance(n, str)
            or not n.strip()
            or len(n) > MAX_LABEL_CHARS
            or not n.isprintable()
        ):
            raise ValueError(
                f"labels must be non-empty printable names of at most {MAX_LABEL_CHARS} "
                f"characters, got {_short(n)}"
            )
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {_short(list(labels))}")
    return list(labels)


def _patch(patch: Any, dims: int) -> tuple[int, ...]:
    lo, hi = PATCH_RANGE
    sizes = tuple(_int(p) for p in patch) if isinstance(patch, (list, tuple)) else ()
    if len(sizes) != dims or any(p is None or not lo <= p <= hi for p in sizes):
        raise ValueError(
            f"patch_size must be {dims} sizes of {lo} to {hi} voxels, got {_short(patch)}"
        )
    if math.prod(sizes) > MAX_PATCH_VOXELS:  # type: ignore[arg-type]
        raise ValueError(
            f"patch_size {_short(patch)} has more than {MAX_PATCH_VOXELS} voxels in all"
        )
    return sizes  # type: ignore[return-value]


def _spacing(spacing: Any) -> tuple[float | None, ...] | None:
    if spacing is None:
        return None
    lo, hi = SPACING_RANGE
    ts = (spacing,) * 3 if isinstance(spacing, numbers.Real) else spacing
    values = (
        tuple(None if s is None else _real(s) for s in ts) if isinstance(ts, (list, tuple)) else ()
    )
    if len(values) != 3 or any(
        s is not None and (v is None or not lo <= v <= hi) for s, v in zip(ts, values, strict=True)
    ):
        raise ValueError(
            f"target_spacing must be None or 3 values of {lo} to {hi} mm "
            f"(None entries keep the native spacing), got {_short(spacing)}"
        )
    return values


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


# --- orientation and the imported architectures -----------------------------------------

_AXIS_PAIRS = ("LR", "PA", "IS")
#: nnU-Net layer names accepted in ``arch_args`` (mapped to torch classes by `build_model`).
NNUNET_OPS = {
    "conv_op": ("Conv2d", "Conv3d"),
    "norm_op": ("InstanceNorm2d", "InstanceNorm3d", "BatchNorm2d", "BatchNorm3d", None),
    "dropout_op": ("Dropout", "Dropout2d", "Dropout3d", None),
    "nonlin": ("LeakyReLU", "ReLU", "PReLU", "GELU", "ELU", None),
    "block": ("BasicBlockD", "BottleneckD"),
}
#: Largest hidden size and MLP width of a transformer (UNETR: 768 and 3072).
MAX_HIDDEN = 1024
MAX_MLP = 4096
MAX_HEADS = 64


def _orientation(value: Any) -> str | None:
    """None or three axis codes, one of each pair L/R, P/A, I/S ("RAS", "LPS", "SAR" …)."""
    if value is None:
        return None
    ok = isinstance(value, str) and len(value) == 3 and value.isupper()
    ok = ok and sorted("".join(p for c in value for p in _AXIS_PAIRS if c in p)) == sorted(
        "".join(_AXIS_PAIRS)
    )
    if not ok:
        raise ValueError(
            f"orientation must be None or 3 axis codes such as 'RAS' (one of L/R, P/A, I/S "
            f"each), got {_short(value)}"
        )
    return value


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

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
value that sizes an allocation (the ``MAX_*`` constants of `napari_unet.models.limits`,
also importable from here): 1–255 labels of at most 64 printable characters,
``context_slices`` 0–8 (so ``in_channels`` 1–17 ≤ 32), patch sizes 8–1024 voxels per
axis and at most 2**27 voxels in all, target spacing 0.05–20 mm, finite normalisation
numbers, and in ``arch_args`` feature widths 1–1024 over at most 8 levels, kernel sizes
1–7, at most 8 residual units, and no integer beyond 1024 anywhere else (e.g. a PReLU's
``num_parameters``). Anything else raises ValueError or TypeError naming the field,
before a network is built.

The field checks are in `napari_unet.models.checks`, those of ``arch_args`` in
`napari_unet.models.arch_args`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

# Default colours for labels 1, 2, … : one palette for model specs and label files.
from napari_unet.io.labelmap import DEFAULT_COLORS
from napari_unet.models.arch_args import _arch_args
from napari_unet.models.checks import _int, _labels, _orientation, _pair, _patch, _short, _spacing

# The names tables and bounds live in `limits`; all of them stay importable from here.
from napari_unet.models.limits import (  # noqa: F401
    ALL_ARCHS,
    ARCHS,
    IMPORTED_ARCHS,
    INFERENCE_STYLES,
    MAX_ARG_INT,
    MAX_CONTEXT_SLICES,
    MAX_FEATURES,
    MAX_HEADS,
    MAX_HIDDEN,
    MAX_IN_CHANNELS,
    MAX_KERNEL,
    MAX_LABEL_CHARS,
    MAX_LABELS,
    MAX_LEVELS,
    MAX_MLP,
    MAX_NAME_CHARS,
    MAX_PATCH_VOXELS,
    MAX_RES_UNITS,
    MAX_STRIDE,
    NNUNET_OPS,
    NORMALIZATION_MODES,
    PATCH_RANGE,
    PRESET_ARCHS,
    SPACING_RANGE,
)

#: Version of the model-file metadata layout. Bump when an old reader could misread a file.
FORMAT_VERSION = 3  # 2: ModelSpec.orientation; 3: ModelSpec.inference_style (nnU-Net)

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


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

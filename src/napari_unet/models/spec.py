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
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

#: Version of the model-file metadata layout. Bump when an old reader could misread a file.
FORMAT_VERSION = 1

ARCHS = ("unet", "resunet", "attention_unet", "classic_unet")
NORMALIZATION_MODES = ("ct", "mr", "none")

#: Default colours for labels 1, 2, … (napari-like, distinguishable on grey scans).
DEFAULT_COLORS = (
    "#ff4b4b",
    "#4bd14b",
    "#4b8bff",
    "#ffd24b",
    "#d24bff",
    "#4bffe6",
    "#ff9d4b",
    "#a0a0ff",
)
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
        if self.mode not in NORMALIZATION_MODES:
            raise ValueError(
                f"normalization.mode must be one of {NORMALIZATION_MODES}, got {self.mode!r}"
            )
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
        arch: one of ``ARCHS``. "classic_unet" is the Ronneberger et al. layout (MONAI
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

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        self.labels = [str(n) for n in self.labels]
        if not self.labels or any(not n.strip() for n in self.labels):
            raise ValueError(f"labels must be one or more non-empty names, got {self.labels!r}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique, got {self.labels!r}")
        if not self.colors:
            self.colors = [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(len(self.labels))]
        self.colors = [str(c) for c in self.colors]
        if len(self.colors) != len(self.labels) or not all(_HEX.match(c) for c in self.colors):
            raise ValueError(f"colors must be one '#rrggbb' per label, got {self.colors!r}")
        if isinstance(self.normalization, dict):
            self.normalization = Normalization(**self.normalization)
        if self.context_slices < 0 or (self.spatial_dims == 3 and self.context_slices):
            raise ValueError(
                f"context_slices must be >= 0 and 0 for 3D models, got {self.context_slices!r}"
            )
        if self.in_channels != 1 + 2 * self.context_slices:
            raise ValueError(
                f"in_channels must be 1 + 2 * context_slices = "
                f"{1 + 2 * self.context_slices}, got {self.in_channels!r}"
            )
        self.patch_size = tuple(int(p) for p in self.patch_size)
        if len(self.patch_size) != self.spatial_dims or min(self.patch_size) < 1:
            raise ValueError(
                f"patch_size must be {self.spatial_dims} positive sizes, got {self.patch_size!r}"
            )
        if self.target_spacing is not None:
            ts = self.target_spacing
            ts = (ts,) * 3 if isinstance(ts, (int, float)) else tuple(ts)
            if len(ts) != 3 or any(s is not None and not s > 0 for s in ts):
                raise ValueError(
                    f"target_spacing must be None or 3 positive mm values "
                    f"(None entries keep the native spacing), got {ts!r}"
                )
            self.target_spacing = tuple(None if s is None else float(s) for s in ts)
        if self.slice_axis not in (None, 0, 1, 2):
            raise ValueError(f"slice_axis must be None, 0, 1 or 2, got {self.slice_axis!r}")
        if self.modality not in ("CT", "MR", "other"):
            raise ValueError(f"modality must be 'CT', 'MR' or 'other', got {self.modality!r}")

    @property
    def out_channels(self) -> int:
        """Background plus one channel per label."""
        return len(self.labels) + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists instead of tuples)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of `to_dict`; unknown keys raise ValueError naming them."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelSpec fields {unknown}")
        data = dict(data)
        if isinstance(data.get("normalization"), dict):
            data["normalization"] = Normalization(**data["normalization"])
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
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
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


def _pair(value: Any, name: str) -> tuple[float, float]:
    values = tuple(float(v) for v in value)
    if len(values) != 2 or not values[0] < values[1]:
        raise ValueError(f"{name} must be (low, high) with low < high, got {value!r}")
    return values  # type: ignore[return-value]

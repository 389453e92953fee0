"""Layer data tuples for Volumes, and Volumes back from layers. No napari import.

A layer made by the plugin carries ``metadata["napari_unet"]`` with the scan geometry
(see `napari_unet.io.display`), so that the writer can put labels back in the scan's
exact voxel grid and affine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_unet.errors import InputError
from napari_unet.io.display import METADATA_KEY, DisplayGeometry, volume_geometry
from napari_unet.io.volume import Volume

#: CT windows (level, width) in HU, as in 3D Slicer's presets.
CT_WINDOWS = {
    "brain": (40.0, 80.0),
    "soft tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}
DEFAULT_CT_WINDOW = "soft tissue"

LayerData = tuple[Any, dict[str, Any], str]


def scan_name(path) -> str:
    """A layer name for a scan file or folder: its name without .nii.gz/.nii/.dcm/.ima."""
    from pathlib import Path

    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".dcm", ".ima"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def window_limits(name: str) -> tuple[float, float]:
    level, width = CT_WINDOWS[name]
    return level - width / 2.0, level + width / 2.0


def auto_contrast(array: np.ndarray) -> tuple[float, float]:
    """MR auto-contrast: 0.5–99.5 percentiles of the non-zero voxels (a sample of them)."""
    flat = array.reshape(-1)
    if flat.size > 2_000_000:
        flat = flat[:: flat.size // 1_000_000]
    nonzero = flat[flat != 0]
    values = nonzero if nonzero.size else flat
    low, high = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
    return float(low), float(high) if high > low else float(low) + 1.0


def geometry_metadata(volume: Volume, **extra: Any) -> dict[str, Any]:
    meta = volume_geometry(volume).to_metadata()
    meta.update(modality=volume.modality, source=volume.source, spacing=list(volume.spacing))
    header = volume.metadata.get("nifti_header")
    if header is not None:
        meta["nifti_header"] = header
    meta.update(extra)
    return {METADATA_KEY: meta}


def image_layer_data(volume: Volume, name: str) -> LayerData:
    """An image layer showing ``volume`` the right way round at its physical scale."""
    geometry = volume_geometry(volume)
    if volume.modality == "CT":
        limits = window_limits(DEFAULT_CT_WINDOW)
    else:
        limits = auto_contrast(volume.array)
    kwargs = {
        "name": name,
        "scale": geometry.scale,
        "translate": geometry.translate,
        "contrast_limits": limits,
        "colormap": "gray",
        "metadata": geometry_metadata(volume),
        "units": "mm",
    }
    return geometry.to_display(volume.array), kwargs, "image"


def labels_layer_data(
    labels: Volume,
    name: str,
    label_names: list[str] | None = None,
    label_colors: list[str] | None = None,
) -> LayerData:
    """A labels layer on the grid of the image ``labels`` was made for."""
    geometry = volume_geometry(labels)
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": geometry.scale,
        "translate": geometry.translate,
        "metadata": geometry_metadata(labels, label_names=list(label_names or [])),
        "units": "mm",
        "opacity": 0.5,
    }
    if label_colors:
        colors: dict[int | None, str] = {None: "transparent", 0: "transparent"}
        colors.update({i + 1: c for i, c in enumerate(label_colors)})
        kwargs["colormap"] = colors
    return geometry.to_display(labels.array), kwargs, "labels"


def volume_from_layer(data: np.ndarray, metadata: dict[str, Any], *, what: str) -> Volume:
    """Rebuild a Volume in the scan's native grid from a layer's data and metadata.

    Raises:
        InputError: the layer carries no scan geometry or its shape does not match it.
    """
    meta = (metadata or {}).get(METADATA_KEY)
    if not meta:
        raise InputError(f"{what} has no scan geometry (it was not opened or made by napari-unet)")
    geometry = DisplayGeometry.from_metadata(meta)
    data = np.asarray(data)
    if tuple(data.shape) != geometry.display_shape:
        raise InputError(
            f"{what} has shape {tuple(data.shape)}, but its scan's grid is "
            f"{geometry.display_shape}; draw labels on the scan's grid"
        )
    native = np.ascontiguousarray(geometry.to_native(data))
    header = meta.get("nifti_header")
    metadata_out = {"nifti_header": header} if header is not None else {}
    return Volume(native, geometry.affine, meta.get("modality", "other"), metadata_out)

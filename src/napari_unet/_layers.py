"""Layer data tuples for Volumes, and Volumes back from layers. No napari import.

A layer made by the plugin carries ``metadata["napari_unet"]`` with the scan geometry
(see `napari_unet.io.display`), so that the writer can put labels back in the scan's
exact voxel grid and affine.
"""

from __future__ import annotations

import re
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
#: Percentile auto-contrast presets (low, high percentiles of the non-zero voxels),
#: named for what they do; the first is applied when a non-CT scan is opened.
PERCENTILE_PRESETS = {
    "auto (0.5–99.5 %)": (0.5, 99.5),
    "auto (1–99 %)": (1.0, 99.0),
    "auto (2–98 %)": (2.0, 98.0),
    "full range (min–max)": (0.0, 100.0),
}
DEFAULT_AUTO = "auto (0.5–99.5 %)"
#: Parts of words in a layer's name that mark a label map, mask or derived map (never a
#: scan): labels, mask, segmentation/dseg/aseg, tissue map, aparc, uncertainty …
LABEL_MAP_PARTS = ("label", "mask", "seg", "tissue", "parc", "uncertain", "probab", "annotat")
#: Whole words that do the same (short ones are only matched whole).
LABEL_MAP_WORDS = ("roi", "prob", "probs", "truth", "gt")
#: An integer image with at most this many distinct values is a label map.
LABEL_MAP_MAX_VALUES = 32

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
    """Contrast limits (HU) of a CT window of `CT_WINDOWS`."""
    level, width = CT_WINDOWS[name]
    return level - width / 2.0, level + width / 2.0


def window_title(name: str) -> str:
    """How a CT window is listed: ``"CT soft tissue (W 400, L 40 HU)"``."""
    level, width = CT_WINDOWS[name]
    return f"CT {name} (W {width:g}, L {level:g} HU)"


def auto_contrast(
    array: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)
) -> tuple[float, float]:
    """Percentile auto-contrast: the ``percentiles`` of the non-zero voxels (a sample)."""
    flat = np.asarray(array).reshape(-1)
    if flat.size > 2_000_000:
        flat = flat[:: flat.size // 1_000_000]
    flat = flat[np.isfinite(flat)] if flat.dtype.kind == "f" else flat
    nonzero = flat[flat != 0]
    values = nonzero if nonzero.size else flat
    low, high = np.percentile(values, list(percentiles)) if values.size else (0.0, 1.0)
    return float(low), float(high) if high > low else float(low) + 1.0


def contrast_presets(modality: str) -> list[str]:
    """Preset names for a scan, the ones that suit its modality first.

    CT windows are listed by `window_title`; percentile presets by their name.
    """
    windows = [window_title(name) for name in CT_WINDOWS]
    autos = list(PERCENTILE_PRESETS)
    return windows + autos if modality == "CT" else autos + windows


def preset_limits(preset: str, array: np.ndarray) -> tuple[float, float]:
    """Contrast limits of a preset (a `contrast_presets` title or a `CT_WINDOWS` key).

    Raises:
        ValueError: an unknown preset.
    """
    if preset in PERCENTILE_PRESETS:
        return auto_contrast(array, PERCENTILE_PRESETS[preset])
    for name in CT_WINDOWS:
        if preset in (name, window_title(name)):
            return window_limits(name)
    raise ValueError(f"unknown contrast preset {preset!r}")


def default_preset(modality: str) -> str:
    """The preset a scan of ``modality`` is opened with (see `image_layer_data`)."""
    return window_title(DEFAULT_CT_WINDOW) if modality == "CT" else DEFAULT_AUTO


def is_label_map(name: str, data: Any, metadata: dict[str, Any] | None) -> bool:
    """Whether an image layer holds labels rather than a scan.

    A layer is a label map when its metadata carries label names, its name says so
    (`LABEL_MAP_PARTS`, `LABEL_MAP_WORDS`: labels, mask, segmentation, tissue map,
    uncertainty …; "atlas" does not: a CT brain atlas is a scan), or its voxels are
    integers taking at most `LABEL_MAP_MAX_VALUES` values (on a sample).
    """
    meta = (metadata or {}).get(METADATA_KEY) or {}
    if meta.get("label_names") or meta.get("kind") in ("labels", "uncertainty"):
        return True
    words = re.split(r"[^a-z0-9]+", str(name).lower())
    if any(part in word for word in words for part in LABEL_MAP_PARTS):
        return True
    if any(word in LABEL_MAP_WORDS for word in words):
        return True
    array = np.asarray(data[tuple(slice(None, None, max(1, n // 64)) for n in data.shape)])
    if array.dtype.kind == "b":
        return True
    if array.dtype.kind == "f":
        finite = array[np.isfinite(array)]
        if finite.size == 0 or not np.all(finite == np.round(finite)):
            return False
        array = finite
    elif array.dtype.kind not in "iu":
        return False
    return np.unique(array).size <= LABEL_MAP_MAX_VALUES


def is_scan_layer(name: str, data: Any, metadata: dict[str, Any] | None) -> bool:
    """Whether an image layer can be the loop's scan: opened or made by the plugin (it
    carries the scan geometry), 3D, and not a label map (`is_label_map`)."""
    meta = (metadata or {}).get(METADATA_KEY)
    if not meta or "affine" not in meta or getattr(data, "ndim", 0) != 3:
        return False
    return not is_label_map(name, data, metadata)


def label_features(label_names: list[str]) -> dict[str, list]:
    """A labels layer's ``features``: napari shows the ``name`` of the value under the
    mouse in the status bar (``2; name: kidney``)."""
    names = ["background", *[str(n) for n in label_names]]
    return {"index": list(range(len(names))), "name": names}


def label_colormap(label_colors: list[str]) -> dict[int | None, str]:
    """A labels layer's colormap: the model's colour per class, background clear, values
    the model does not know in grey (visible, so a wrong value is seen)."""
    colors: dict[int | None, str] = {None: "#b0b0b0", 0: "transparent"}
    colors.update({i + 1: c for i, c in enumerate(label_colors)})
    return colors


#: Where a layer's modality came from (``metadata["napari_unet"]["modality_source"]``).
MODALITY_SOURCES = {
    "dicom": "from the DICOM header",
    "description": "from the file's description",
    "detected": "detected: air at −1000 HU",
    "user": "chosen by you",
    "declared": "stated by the source",
    None: "not stated in the file",
}


def modality_source(volume: Volume) -> str | None:
    """A key of `MODALITY_SOURCES` for how the reader knew ``volume.modality``."""
    if volume.modality not in ("CT", "MR"):
        return None
    meta = volume.metadata or {}
    if "rescale_slope" in meta or "files" in meta:
        return "dicom"
    if "description" in meta:
        words = str(meta["description"]).upper()
        declared = {"CT", "HU"} & set(words.split()) or any(
            w in words for w in ("MR", "T1", "T2", "FLAIR", "DWI")
        )
        return "description" if declared else "detected"
    return "declared"


def geometry_metadata(volume: Volume, **extra: Any) -> dict[str, Any]:
    meta = volume_geometry(volume).to_metadata()
    meta.update(modality=volume.modality, source=volume.source, spacing=list(volume.spacing))
    meta["modality_source"] = modality_source(volume)
    header = volume.metadata.get("nifti_header")
    if header is not None:
        meta["nifti_header"] = header
    meta.update(extra)
    return {METADATA_KEY: meta}


def image_layer_data(volume: Volume, name: str) -> LayerData:
    """An image layer showing ``volume`` the right way round at its physical scale."""
    geometry = volume_geometry(volume)
    limits = preset_limits(default_preset(volume.modality), volume.array)
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
    if label_names:
        kwargs["features"] = label_features(list(label_names))
    if label_colors:
        kwargs["colormap"] = label_colormap(list(label_colors))
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

"""Segmentation models: `ModelSpec`, `build_model` over MONAI networks, model files,
importers of MONAI bundles and nnU-Net folders (`import_model`) and `export_bundle`.

``ModelSpec`` and ``preset_spec`` import no torch; the rest loads torch on first use.
"""

from __future__ import annotations

from typing import Any

from napari_unet.models.spec import (
    ARCHS,
    FORMAT_VERSION,
    ModelSpec,
    Normalization,
    preset_spec,
)

_LAZY = {
    "build_model": "napari_unet.models.build",
    "size_divisor": "napari_unet.models.build",
    "LoadedModel": "napari_unet.models.files",
    "save_model": "napari_unet.models.files",
    "load_model": "napari_unet.models.files",
    "read_model_header": "napari_unet.models.files",
    "import_state_dict": "napari_unet.models.files",
    "tensor_hash": "napari_unet.models.files",
    "import_model": "napari_unet.models.importers",
    "export_bundle": "napari_unet.models.importers",
}

__all__ = ["ARCHS", "FORMAT_VERSION", "ModelSpec", "Normalization", "preset_spec", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Inference: preprocessing, 2D slice-batched and 3D sliding-window prediction.

Entry points: `predict_steps` (a long job, see `napari_unet.jobs`) and `predict_volume`
(drains it). Imports torch.
"""

from __future__ import annotations

from napari_unet.inference.device import autocast_dtype, resolve_device
from napari_unet.inference.predict import Prediction, predict_steps, predict_volume
from napari_unet.inference.preprocess import (
    NormParams,
    apply_normalization,
    normalization_params,
    resample,
    slice_stack,
)

__all__ = [
    "NormParams",
    "Prediction",
    "apply_normalization",
    "autocast_dtype",
    "normalization_params",
    "predict_steps",
    "predict_volume",
    "resample",
    "resolve_device",
    "slice_stack",
]

"""Tiny seeded volumes with a threshold-like segmentation task."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_unet.io.volume import Volume


def blob_pair(shape=(32, 32, 8), seed=0, classes=1) -> tuple[Volume, Volume]:
    """An MR-like image of smooth blobs and labels = intensity bands (1 or 2 classes)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=(3, 3, 1.5))
    field = (field - field.mean()) / field.std()
    image = (100 + 40 * field + rng.normal(scale=2, size=shape)).astype(np.float32)
    labels = (field > 0.3).astype(np.uint8)
    if classes == 2:
        labels[field > 1.0] = 2
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    return Volume(image, affine, "MR", source="img"), Volume(labels, affine, "MR", source="lab")


@pytest.fixture
def pair():
    return blob_pair()


def tiny_spec(spatial_dims=2, labels=("fg",), context_slices=1):
    from napari_unet.training import recommended_spec

    return recommended_spec(
        list(labels),
        modality="MR",
        spatial_dims=spatial_dims,
        context_slices=context_slices,
        features=(8, 8, 8, 16, 16, 8),
        patch_size=(32, 32) if spatial_dims == 2 else (16, 16, 16),
    )

"""Shared fixtures: tiny seeded volumes and NIfTI files with known geometry."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

os.environ.setdefault("NAPARI_UNET_TESTING", "1")

#: Affines of different orientations, incl. oblique and anisotropic (RAS, mm).
AFFINES = {
    "RAS": np.diag([0.9, 0.9, 2.5, 1.0]),
    "LPS": np.array([[-0.7, 0, 0, 120.0], [0, -0.7, 0, 90.0], [0, 0, 3.0, -60.0], [0, 0, 0, 1]]),
    "PSR_oblique": np.array(
        [[0.05, -0.02, 1.2, -30.0], [-0.98, 0.1, 0.05, 40.0], [0.1, 0.97, 0.03, 5.0], [0, 0, 0, 1]]
    ),
    "LIA_oblique": np.array(
        [[-0.85, 0.2, 0.1, 11.0], [0.2, 0.1, 1.9, -7.0], [0.1, -0.9, 0.2, 3.0], [0, 0, 0, 1]]
    ),
}


@pytest.fixture(params=sorted(AFFINES))
def affine(request) -> np.ndarray:
    return AFFINES[request.param].astype(np.float64)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def write_nifti(path, array, affine, *, qform_code=1, sform_code=1, slope=None, inter=None):
    """Write a NIfTI file with explicit qform/sform codes (and optional scaling)."""
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    if slope is not None:
        img.header.set_slope_inter(slope, inter or 0.0)
    nib.save(img, str(path))
    return path

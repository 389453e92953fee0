"""A tiny cohort: NIfTI scans of different geometries, a DICOM series, a corrupt file."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_unet.cli import main

SHAPE = (24, 20, 6)


def ball_scan(seed: int, shape=SHAPE, radius: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """An MR-like scan with a bright ball, and the ball's mask."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    ball = ((i - shape[0] / 2) ** 2 + (j - shape[1] / 2) ** 2 + ((k - shape[2] / 2) * 3) ** 2
            < radius**2)  # fmt: skip
    rng = np.random.default_rng(seed)
    image = (100 + 300 * ball + rng.normal(0, 20, shape)).astype(np.float32)
    return image, ball.astype(np.uint8)


def write_scan(path: Path, seed: int, affine=None, *, labels: Path | None = None) -> Path:
    image, ball = ball_scan(seed)
    if affine is None:
        affine = np.array([[-0.8, 0, 0, 10 + seed], [0, 0.9, 0, -5], [0, 0, 3.0, 2], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(image, affine), path)
    if labels is not None:
        nib.save(nib.Nifti1Image(ball, affine), labels)
    return path


@pytest.fixture(scope="session")
def model2d(tmp_path_factory) -> Path:
    """A tiny untrained 2D model (one class)."""
    out = tmp_path_factory.mktemp("model") / "m.safetensors"
    args = ["new-model", str(out), "--dims", "2", "--labels", "ball", "--context-slices", "1",
            "--patch", "16", "16"]  # fmt: skip
    assert main(args) == 0
    return out


@pytest.fixture
def cohort(tmp_path) -> dict:
    """scans/: 4 NIfTI (different affines), dicom/: one 6-slice CT series, bad.nii.gz."""
    from tests.io.dicom_factory import write_series

    scans = tmp_path / "scans"
    scans.mkdir()
    oblique = np.array([[0.05, -0.02, 1.2, -30.0], [-0.98, 0.1, 0.05, 40.0],
                        [0.1, 0.97, 0.03, 5.0], [0, 0, 0, 1]])  # fmt: skip
    affines = [None, np.diag([1.0, 1.0, 2.5, 1.0]), oblique, None]
    nifti = [write_scan(scans / f"case{n}.nii.gz", n, a) for n, a in enumerate(affines)]
    image, _ = ball_scan(7, shape=(20, 24, 6))
    stored = np.round(image.transpose(2, 1, 0)).astype(np.int16)
    dicom = tmp_path / "dicom" / "series1"
    write_series(dicom, stored, spacing=(0.8, 0.9, 2.5))
    bad = scans / "bad.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file" * 20)
    return {"root": tmp_path, "scans": scans, "nifti": nifti, "dicom": dicom, "bad": bad,
            "good": [*nifti, dicom]}  # fmt: skip

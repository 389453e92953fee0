"""Trained-once foreign models for the importer tests (session scope: seconds of CPU)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from tests.models.importers import factory as F

HAS_DNA = importlib.util.find_spec("dynamic_network_architectures") is not None
HAS_NNUNET = HAS_DNA and importlib.util.find_spec("nnunetv2") is not None
needs_dna = pytest.mark.skipif(
    not HAS_DNA,
    reason="dynamic_network_architectures not installed (bash scripts/install_nnunet.sh)",
)
needs_nnunet = pytest.mark.skipif(
    not HAS_NNUNET, reason="nnunetv2 not installed (bash scripts/install_nnunet.sh)"
)

#: The MONAI bundle network of the agreement tests (batch norm: tile-size independent).
UNET_DEF = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 4,
    "channels": [8, 16, 32],
    "strides": [2, 2],
    "num_res_units": 1,
    "norm": "batch",
}
#: nnU-Net 3d_fullres layout in nnU-Net's (z, y, x) order: anisotropic kernels and
#: strides, so that an axis mix-up cannot go unnoticed.
NN_KERNELS = [[1, 3, 3], [3, 3, 3], [3, 3, 3]]
NN_STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]


@pytest.fixture(scope="session")
def ct4():
    """The phantom at quarter resolution: 48 × 36 × 12 voxels, LPS, 6.4 × 6.4 × 12 mm."""
    return F.small_ct(step=4)


@pytest.fixture(scope="session")
def monai_trained(ct4, tmp_path_factory):
    """A UNet trained briefly on what the bundle's preprocessing gives MONAI.

    Returns ``(config, state_dict, nifti_path)``: a Model Zoo style inference.json with
    Orientationd(RAS), Spacingd (the scan's own spacing) and a CT window, whose
    inferer window covers the whole scan.
    """
    from monai.bundle import ConfigParser
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    from napari_unet.io.nifti import save_nifti

    image, labels = ct4
    folder = tmp_path_factory.mktemp("monai_trained")
    save_nifti(image, folder / "ct.nii.gz")
    save_nifti(labels, folder / "labels.nii.gz")
    config = F.zoo_config(dict(UNET_DEF), F.ct_transforms(list(image.spacing)), [48, 36, 12])
    parser = ConfigParser(config)  # the test's own, trusted config
    x = parser.get_parsed_content("preprocessing")({"image": str(folder / "ct.nii.gz")})["image"]
    to_ras = Compose(
        [LoadImaged("label"), EnsureChannelFirstd("label"), Orientationd("label", "RAS")]
    )
    y = to_ras({"label": str(folder / "labels.nii.gz")})["label"]
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    F.train(net, x[0].numpy(), np.asarray(y[0]).astype(np.int64), steps=60)
    return config, net.state_dict(), folder / "ct.nii.gz"


@pytest.fixture(scope="session")
def nnunet_trained(ct4, tmp_path_factory):
    """A PlainConvUNet trained briefly the way nnU-Net would see the scan.

    Returns ``(net, plans, nifti_path)``: trained on ``array.transpose(2, 1, 0)`` (what
    SimpleITK gives nnU-Net) with nnU-Net's CT normalisation; plans whose patch covers
    the whole scan.
    """
    if not HAS_DNA:
        pytest.skip("dynamic_network_architectures not installed")
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from napari_unet.io.nifti import save_nifti

    image, labels = ct4
    folder = tmp_path_factory.mktemp("nnunet_trained")
    save_nifti(image, folder / "ct.nii.gz")
    hu = image.array.transpose(2, 1, 0).astype(np.float32)
    lab = labels.array.transpose(2, 1, 0)
    props = ct_properties(hu, lab)
    plans = F.nnunet_plans(patch=list(hu.shape), spacing=list(image.spacing[::-1]),
                           features=[8, 16, 32], kernels=NN_KERNELS, strides=NN_STRIDES,
                           properties=props)  # fmt: skip
    torch.manual_seed(0)
    net = nnunet_network(deep_supervision=True)
    x = (np.clip(hu, props["percentile_00_5"], props["percentile_99_5"]) - props["mean"]) / props[
        "std"
    ]
    F.train(net, x, lab, steps=60, multiple=4)
    assert isinstance(net, PlainConvUNet)
    return net, plans, folder / "ct.nii.gz"


#: The sliding-window fixture (`nnunet_tiled`): nnU-Net (z, y, x) patch and plans spacings:
#: the scan's own, 1.25× coarser on every axis (splines in 3D), and coarse along z
#: (anisotropic: nnU-Net resamples slice by slice, nearest neighbour across slices).
NN_TILED_PATCH = [8, 32, 32]
NN_TILED_SPACINGS = {
    "native": [9.0, 4.8, 4.8],
    "coarser": [11.25, 6.0, 6.0],
    "anisotropic": [19.8, 5.52, 5.52],
}


@pytest.fixture(scope="session")
def nnunet_tiled(tmp_path_factory):
    """A PlainConvUNet trained on random `NN_TILED_PATCH` patches of the phantom at a
    third of its resolution (64 × 48 × 16 voxels of 4.8 × 4.8 × 9 mm: several windows
    per axis) resampled to each of `NN_TILED_SPACINGS` (as nnU-Net resamples), so that
    one network segments well (Dice > 0.8) at all of them (~600 steps, seconds).

    Returns ``(net, properties, image, labels, nifti_path)``.
    """
    if not HAS_DNA:
        pytest.skip("dynamic_network_architectures not installed")
    from napari_unet.inference.resampling import nearest_indices, resample_image, separate_axis
    from napari_unet.io.nifti import save_nifti

    image, labels = F.small_ct(step=3)
    folder = tmp_path_factory.mktemp("nnunet_tiled")
    save_nifti(image, folder / "ct.nii.gz")
    hu = image.array.transpose(2, 1, 0).astype(np.float32)  # nnU-Net's (z, y, x)
    lab = labels.array.transpose(2, 1, 0)
    props = ct_properties(hu, lab)
    x = (np.clip(hu, props["percentile_00_5"], props["percentile_99_5"]) - props["mean"]) / props[
        "std"
    ]
    native = NN_TILED_SPACINGS["native"]
    volumes = []
    for spacing in NN_TILED_SPACINGS.values():
        shape = [round(a / b * n) for a, b, n in zip(native, spacing, x.shape, strict=True)]
        y = lab
        for a in range(3):
            y = np.take(y, nearest_indices(y.shape[a], shape[a]), axis=a)
        volumes.append((resample_image(x, shape, separate_axis(native, spacing)), y))
    torch.manual_seed(0)
    net = nnunet_network(deep_supervision=True)
    F.train_patches(net, volumes, tuple(NN_TILED_PATCH), steps=600)
    return net, props, image, labels, folder / "ct.nii.gz"


def ct_properties(hu: np.ndarray, lab: np.ndarray) -> dict[str, float]:
    """nnU-Net's foreground intensity properties (as in dataset_fingerprint.json)."""
    fg = hu[lab > 0]
    return {
        "mean": float(fg.mean()),
        "std": float(fg.std()),
        "percentile_00_5": float(np.percentile(fg, 0.5)),
        "percentile_99_5": float(np.percentile(fg, 99.5)),
        "min": float(fg.min()),
        "max": float(fg.max()),
        "median": float(np.median(fg)),
    }


def nnunet_network(*, deep_supervision: bool = False, classes: int = 4, norm=None):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    return PlainConvUNet(
        1, 3, [8, 16, 32], torch.nn.Conv3d, NN_KERNELS, NN_STRIDES, [2, 2, 2], classes, [2, 2],
        True, norm or torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None,
        torch.nn.LeakyReLU, {"inplace": True}, deep_supervision=deep_supervision,
    )  # fmt: skip

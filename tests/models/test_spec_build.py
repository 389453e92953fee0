from __future__ import annotations

import sys

import pytest
import torch

from napari_unet.models import (
    ARCHS,
    ModelSpec,
    Normalization,
    build_model,
    preset_spec,
    size_divisor,
)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dims", [2, 3])
def test_presets_build_and_round_trip(arch: str, dims: int) -> None:
    if arch == "classic_unet" and dims == 3:
        pytest.skip("the classic U-Net is 2D (and 90 M parameters in 3D)")
    spec = preset_spec(
        arch, spatial_dims=dims, labels=["liver", "tumour"], context_slices=1 if dims == 2 else 0
    )
    assert ModelSpec.from_json(spec.to_json()) == spec
    model = build_model(spec).eval()
    size = size_divisor(spec) * 2
    x = torch.randn(1, spec.in_channels, *([size] * dims))
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (1, 3, *([size] * dims))


def test_classic_unet_is_ronneberger() -> None:
    spec = preset_spec("classic_unet", spatial_dims=2, labels=["a"])
    model = build_model(spec)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    ups = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert max(c.out_channels for c in convs) == 1024
    assert len(ups) == 4
    assert spec.patch_size == (128, 128)


def test_spec_defaults_and_out_channels() -> None:
    spec = preset_spec("unet", spatial_dims=2, labels=["a", "b", "c"], modality="MR")
    assert spec.out_channels == 4
    assert spec.normalization.mode == "mr"
    assert len(spec.colors) == 3 and all(c.startswith("#") for c in spec.colors)
    assert spec.in_channels == 1


@pytest.mark.parametrize(
    ("changes", "word"),
    [
        ({"arch": "vnet"}, "arch"),
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"labels": []}, "labels"),
        ({"labels": ["a", "a"]}, "labels"),
        ({"colors": ["red"]}, "colors"),
        ({"in_channels": 2}, "in_channels"),
        ({"patch_size": (64, 64, 64)}, "patch_size"),
        ({"target_spacing": (1.0, -1.0, 1.0)}, "target_spacing"),
        ({"slice_axis": 3}, "slice_axis"),
    ],
)
def test_spec_validation_names_the_field(changes: dict, word: str) -> None:
    base = preset_spec("unet", spatial_dims=2, labels=["a"]).to_dict()
    base.update(changes)
    with pytest.raises(ValueError, match=word):
        ModelSpec.from_dict(base)


def test_unknown_spec_field_refused() -> None:
    data = preset_spec("unet", spatial_dims=3, labels=["a"]).to_dict()
    data["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        ModelSpec.from_dict(data)


def test_normalization_validation() -> None:
    with pytest.raises(ValueError, match="percentiles"):
        Normalization(mode="mr", percentiles=(50, 10))
    with pytest.raises(ValueError, match="mode"):
        Normalization(mode="zscore")


def test_spec_module_imports_no_torch() -> None:
    import subprocess

    code = (
        "import sys; import napari_unet.models as m; m.preset_spec(spatial_dims=2, labels=['a']);"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("changes", "word"),
    [
        ({"arch": ["unet"]}, "arch"),
        ({"spatial_dims": True}, "spatial_dims"),
        ({"spatial_dims": "2"}, "spatial_dims"),
        ({"labels": "a"}, "labels"),
        ({"labels": [1]}, "labels"),
        ({"labels": ["x" * 65]}, "labels"),
        ({"labels": ["a\nb"]}, "labels"),
        ({"labels": [f"l{i}" for i in range(256)], "colors": []}, "labels"),
        ({"colors": [1]}, "colors"),
        ({"in_channels": 0}, "in_channels"),
        ({"in_channels": 1.0}, "in_channels"),
        ({"context_slices": 9, "in_channels": 19}, "context_slices"),
        ({"context_slices": -1, "in_channels": -1}, "context_slices"),
        ({"patch_size": [4, 96]}, "patch_size"),
        ({"patch_size": [2048, 96]}, "patch_size"),
        ({"patch_size": [96.5, 96]}, "patch_size"),
        ({"patch_size": "96"}, "patch_size"),
        ({"target_spacing": [0.01, 1.0, 1.0]}, "target_spacing"),
        ({"target_spacing": [1.0, 1.0, 50.0]}, "target_spacing"),
        ({"target_spacing": [1.0, 1.0]}, "target_spacing"),
        ({"target_spacing": [1.0, "1", 1.0]}, "target_spacing"),
        ({"target_spacing": [1.0, float("inf"), 1.0]}, "target_spacing"),
        ({"slice_axis": True}, "slice_axis"),
        ({"modality": 3}, "modality"),
        ({"name": "n" * 1000}, "name"),
        ({"normalization": "ct"}, "normalization"),
        ({"normalization": {"mode": "ct", "window": [0, float("nan")]}}, "window"),
        ({"normalization": {"mode": "ct", "output_range": [0, 10**400]}}, "output_range"),
        ({"normalization": {"mode": "ct", "nonzero": "yes"}}, "nonzero"),
        ({"normalization": {"mode": "ct", "bogus": 1}}, "bogus"),
        ({"arch_args": []}, "arch_args"),
        ({"arch_args": {"channels": [4, 2048], "strides": [2]}}, "channels"),
        ({"arch_args": {"channels": [4] * 9, "strides": [2] * 8}}, "channels"),
        ({"arch_args": {"channels": [4], "strides": []}}, "channels"),
        ({"arch_args": {"channels": [4, 8], "strides": [2, 2]}}, "strides"),
        ({"arch_args": {"channels": [4, 8], "strides": [64]}}, "strides"),
        ({"arch_args": {"channels": [4, 8], "strides": [2], "kernel_size": 9}}, "kernel_size"),
        ({"arch_args": {"channels": [4, 8], "strides": [2], "up_kernel_size": [3]}}, "up_kernel"),
        ({"arch_args": {"channels": [4, 8], "strides": [2], "num_res_units": 99}}, "res_units"),
        ({"arch_args": {"channels": [4, 8], "strides": [2], "dropout": 2.0}}, "dropout"),
        ({"arch_args": {"act": ["prelu", {"num_parameters": 10**8}]}}, "act"),
        ({"arch_args": {"norm": ["group", {"x": [[[[1]]]]}]}}, "norm"),
        ({"arch_args": {"bias": float("nan")}}, "bias"),
    ],
)
def test_spec_bounds_name_the_field(changes: dict, word: str) -> None:
    """Values that would size an allocation, or are of the wrong type, are refused."""
    base = preset_spec("unet", spatial_dims=2, labels=["a"]).to_dict()
    base.update(changes)
    with pytest.raises((ValueError, TypeError), match=word):
        ModelSpec.from_dict(base)


def test_classic_unet_features_bounded() -> None:
    base = preset_spec("classic_unet", spatial_dims=2, labels=["a"]).to_dict()
    base["arch_args"]["features"] = [64, 128, 256, 512, 4096, 64]
    with pytest.raises(ValueError, match="features"):
        ModelSpec.from_dict(base)
    base["arch_args"]["features"] = [64, 128]
    with pytest.raises(ValueError, match="features"):
        ModelSpec.from_dict(base)


@pytest.mark.parametrize("data", [None, [1, 2], "spec", 3])
def test_spec_from_non_object_refused(data) -> None:
    with pytest.raises((ValueError, TypeError)):
        ModelSpec.from_dict(data)


def test_spec_bounds_admit_the_largest_sane_specs() -> None:
    labels = [f"organ {i}" for i in range(255)]
    spec = preset_spec(
        "resunet",
        spatial_dims=3,
        labels=labels,
        patch_size=(512, 512, 512),
        target_spacing=(0.05, 20.0, None),
        channels=[32, 64, 128, 256, 512, 1024, 1024, 1024],
        strides=[2, 2, 2, 2, 2, [1, 2, 2], 1],
        kernel_size=[3, 3, 1],
    )
    assert ModelSpec.from_json(spec.to_json()) == spec
    two_d = preset_spec("classic_unet", spatial_dims=2, labels=["a"], context_slices=8)
    assert two_d.in_channels == 17 and ModelSpec.from_dict(two_d.to_dict()) == two_d

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

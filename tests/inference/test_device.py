"""Precision choice on CUDA GPUs, with torch.cuda's answers injected (no GPU here)."""

from __future__ import annotations

import pytest
import torch

from napari_unet.inference import device as device_mod
from napari_unet.inference.device import autocast_dtype, cuda_bf16_native, has_normalization
from napari_unet.models import build_model, preset_spec
from napari_unet.training import recommended_spec

CUDA = torch.device("cuda")


def _fake_gpu(monkeypatch, capability: tuple[int, int], *, old_torch: bool = False) -> None:
    """torch.cuda as on a GPU of ``capability``: ``is_bf16_supported()`` answers True
    everywhere (bf16 emulation counts, as torch does from CUDA 11 on), and False with
    ``including_emulation=False`` below 8.0; ``old_torch``: no such argument (< 2.3)."""

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return including_emulation or capability[0] >= 8

    def old_is_bf16_supported() -> bool:
        return True

    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", old_is_bf16_supported if old_torch else is_bf16_supported
    )
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.version, "hip", None)


def _nets():
    """(recommended net: no normalisation layers, MONAI UNet preset: batch norm)."""
    plain = build_model(recommended_spec(["wm"], features=(4, 4, 4, 8, 8, 4)))
    normed = build_model(preset_spec("unet", spatial_dims=2, labels=["a"], channels=[4, 8],
                                     strides=[2]))  # fmt: skip
    return plain, normed


def test_the_recommended_net_has_no_normalisation_layers_and_the_unet_preset_has():
    plain, normed = _nets()
    assert not has_normalization(plain) and has_normalization(normed)


@pytest.mark.parametrize("old_torch", [False, True])
@pytest.mark.parametrize(
    ("capability", "plain_dtype", "normed_dtype"),
    [
        ((7, 0), None, torch.float16),  # V100: bf16 only emulated
        ((7, 5), None, torch.float16),  # T4
        ((8, 0), torch.bfloat16, torch.bfloat16),  # A100
        ((9, 0), torch.bfloat16, torch.bfloat16),  # H100
    ],
)
def test_auto_uses_bf16_only_where_native_and_fp16_only_with_normalisation(
    monkeypatch, old_torch, capability, plain_dtype, normed_dtype
):
    _fake_gpu(monkeypatch, capability, old_torch=old_torch)
    plain, normed = _nets()
    assert cuda_bf16_native(CUDA) is (capability[0] >= 8)
    assert autocast_dtype(CUDA, "auto", net=plain) is plain_dtype
    assert autocast_dtype(CUDA, "auto", net=normed) is normed_dtype
    assert autocast_dtype(CUDA, "auto") is normed_dtype  # no net: assume normalisation
    # explicit choices are taken as they are
    assert autocast_dtype(CUDA, "fp16", net=plain) is torch.float16
    assert autocast_dtype(CUDA, "bf16", net=plain) is torch.bfloat16
    assert autocast_dtype(CUDA, "fp32", net=normed) is None


def test_a_second_gpu_is_judged_by_its_own_capability(monkeypatch):
    """``cuda:1`` while the current device is 0: the capability of GPU 1 decides."""
    _fake_gpu(monkeypatch, (8, 0))
    capabilities = {0: (8, 0), 1: (7, 5)}
    monkeypatch.setattr(
        torch.cuda, "get_device_capability", lambda device=None: capabilities[device.index]
    )
    assert cuda_bf16_native(torch.device("cuda", 0))
    assert not cuda_bf16_native(torch.device("cuda", 1))


def test_rocm_counts_as_native_bf16(monkeypatch):
    _fake_gpu(monkeypatch, (9, 0), old_torch=True)
    monkeypatch.setattr(torch.version, "hip", "6.0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (0, 0))
    assert cuda_bf16_native(torch.device("cuda", 1))


@pytest.mark.parametrize("dev", ["cpu", "mps"])
def test_auto_is_float32_off_cuda(dev):
    plain, normed = _nets()
    for net in (plain, normed, None):
        assert autocast_dtype(torch.device(dev), "auto", net=net) is None


def test_predict_asks_for_the_networks_precision(monkeypatch):
    """predict_steps passes its network, so "auto" can see the normalisation layers."""
    import numpy as np

    from napari_unet.inference import predict_volume
    from napari_unet.io.volume import Volume

    seen = []
    real = device_mod.autocast_dtype

    def spy(dev, precision="auto", *, net=None):
        seen.append(net)
        return real(dev, precision, net=net)

    monkeypatch.setattr("napari_unet.inference.predict.autocast_dtype", spy)
    spec = recommended_spec(["wm"], features=(4, 4, 4, 8, 8, 4), patch_size=(32, 32))
    net = build_model(spec)
    vol = Volume(np.zeros((16, 16, 3), np.float32), np.eye(4), "MR")
    predict_volume(net, spec, vol, device="cpu")
    assert seen == [net]

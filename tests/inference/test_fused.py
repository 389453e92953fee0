"""`fused.for_cpu`: the packed CPU copy computes what the network computes, leaves the
network alone, and `predict_volume` gives the same labels with it as without it."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from napari_unet.inference import fused, predict_volume
from napari_unet.io.volume import Volume
from napari_unet.models import build_model, preset_spec


def _with_stats(net: nn.Module, seed: int = 0) -> nn.Module:
    """Batch-norm statistics and affine parameters far from the identity, PReLU slopes
    far from 0.25, so that a wrong fold or fusion shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.3)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            if isinstance(m, nn.PReLU):
                m.weight.fill_(0.1)
    return net.eval()


def _monai(arch: str, dims: int, **args) -> nn.Module:
    spec = preset_spec(arch, spatial_dims=dims, labels=["a", "b"], **args)
    torch.manual_seed(0)
    return _with_stats(build_model(spec))


def _same(net: nn.Module, fast: nn.Module, x: torch.Tensor) -> None:
    with torch.inference_mode():
        want, got = net(x), fast(x)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())


def _packed(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if type(m).__name__ == "_Packed"]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("arch", ["unet", "resunet"])
def test_packed_copy_computes_what_the_network_computes(arch, dims):
    net = _monai(arch, dims, channels=[8, 16, 32], strides=[2, 2])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = fused.for_cpu(net)
    assert fast is not None
    convs = [m for m in net.modules() if isinstance(m, fused._CONVS)]
    assert len(_packed(fast)) == len(convs)  # every convolution packed
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fast.modules())
    x = torch.randn(2, 1, *[32] * dims)
    _same(net, fast, x)
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    _same(net, fast, x.contiguous(memory_format=fmt))
    # the network itself is untouched: same weights, its batch norms still there
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def test_layers_outside_a_sequential_are_packed_one_by_one():
    """DynUNet's blocks (a custom forward, no Sequential): each convolution is packed on
    its own, its batch norm stays."""
    from monai.networks.nets import DynUNet

    torch.manual_seed(0)
    dyn = _with_stats(DynUNet(3, 1, 3, kernel_size=[3, 3, 3], strides=[1, 2, 2],
                              upsample_kernel_size=[2, 2], norm_name="batch"))  # fmt: skip
    fast = fused.for_cpu(dyn)
    assert fast is not None and _packed(fast)
    assert any(isinstance(m, nn.BatchNorm3d) for m in fast.modules())
    _same(dyn, fast, torch.randn(1, 1, 24, 24, 16))


@pytest.mark.skipif(
    importlib.util.find_spec("dynamic_network_architectures") is None,
    reason="dynamic_network_architectures not installed",
)
def test_nnunet_layers_registered_twice_are_swapped_in_both_places():
    """nnU-Net's ConvDropoutNormReLU holds its conv as ``conv`` and in ``all_modules``
    (batch norm here: with nnU-Net's usual instance norm the network is left alone)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    def plain(norm):
        torch.manual_seed(0)
        return _with_stats(PlainConvUNet(1, 3, (8, 16, 32), nn.Conv3d, 3, (1, 2, 2), 2, 3,
                                         2, True, norm, {"eps": 1e-5, "affine": True}, None,
                                         None, nn.LeakyReLU, {"inplace": True}))  # fmt: skip

    assert fused.for_cpu(plain(nn.InstanceNorm3d)) is None
    net = plain(nn.BatchNorm3d)
    fast = fused.for_cpu(net)
    assert fast is not None
    assert not any(isinstance(m, (nn.Conv3d, nn.BatchNorm3d)) for m in fast.modules())
    _same(net, fast, torch.randn(1, 1, 32, 32, 32))


def test_nothing_to_pack_or_no_onednn_gives_none(monkeypatch):
    assert fused.for_cpu(nn.Sequential(nn.Linear(3, 3)).eval()) is None
    net = _monai("unet", 2, channels=[4, 8], strides=[2])
    assert fused.for_cpu(net.train()) is None  # batch norm in training mode: not folded
    monkeypatch.setattr(fused, "_available", lambda: False)
    assert fused.for_cpu(net.eval()) is None


def test_a_layer_that_does_not_match_keeps_the_original(monkeypatch):
    net = _monai("unet", 2, channels=[4, 8], strides=[2])
    monkeypatch.setattr(fused, "_matches", lambda *a: False)
    assert fused.for_cpu(net) is None


def _volume() -> Volume:
    rng = np.random.default_rng(0)
    img = rng.normal(0, 300, (70, 58, 40)).astype(np.float32)
    img[20:50, 15:40, 10:30] += 600
    return Volume(img, np.diag([1.0, 1.0, 2.5, 1.0]), modality="CT")


@pytest.mark.parametrize("dims", [2, 3])
def test_predict_gives_the_same_labels_with_and_without_packing(monkeypatch, dims):
    spec = preset_spec("unet", spatial_dims=dims, labels=["a", "b"], patch_size=(32,) * dims,
                       channels=[8, 16], strides=[2])  # fmt: skip
    torch.manual_seed(0)
    net = _with_stats(build_model(spec)).train()  # as the loop leaves it after fine-tuning
    calls = []
    real = fused.for_cpu
    monkeypatch.setattr(fused, "for_cpu", lambda n: calls.append(1) or real(n))
    packed = predict_volume(net, spec, _volume(), device="cpu", roi_size=(32,) * dims,
                            uncertainty=True).labels.array  # fmt: skip
    assert calls, "the CPU prediction did not use the packed network"
    monkeypatch.setattr(fused, "for_cpu", lambda n: None)
    plain = predict_volume(net, spec, _volume(), device="cpu", roi_size=(32,) * dims,
                           uncertainty=True).labels.array  # fmt: skip
    assert len(np.unique(plain)) == 3  # all three classes: the comparison means something
    assert np.array_equal(packed, plain)
    assert net.training  # handed back in training mode, its batch norms still there
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def test_the_packed_copy_is_reused_until_a_weight_changes():
    net = _monai("unet", 2, channels=[4, 8], strides=[2])
    first = fused.cached_for_cpu(net)
    assert first is not None and fused.cached_for_cpu(net) is first
    x = torch.randn(2, 1, 32, 32)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net.train()
    net(x).square().mean().backward()  # a fine-tuning step: weights and BN stats move
    opt.step()
    net.eval()
    second = fused.cached_for_cpu(net)
    assert second is not first
    _same(net, second, x)  # the rebuilt copy follows the new weights
    other = _monai("unet", 2, channels=[4, 8], strides=[2])
    with torch.no_grad():
        other.model[0].conv.weight.mul_(3)
    net.load_state_dict(other.state_dict())  # a model version restored
    third = fused.cached_for_cpu(net)
    assert third is not second
    _same(net, third, x)


def test_a_packed_copy_that_fails_on_real_input_falls_back_to_the_network(monkeypatch):
    spec = preset_spec("unet", spatial_dims=3, labels=["a", "b"], patch_size=(32,) * 3,
                       channels=[8, 16], strides=[2])  # fmt: skip
    torch.manual_seed(0)
    net = _with_stats(build_model(spec))
    want = predict_volume(net, spec, _volume(), device="cpu", roi_size=(32,) * 3)

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("could not create a primitive (injected)")

    monkeypatch.setattr(fused, "cached_for_cpu", lambda n: Broken())
    with pytest.warns(RuntimeWarning, match="packed CPU network failed"):
        got = predict_volume(net, spec, _volume(), device="cpu", roi_size=(32,) * 3)
    assert np.array_equal(got.labels.array, want.labels.array)
    assert any("could not create a primitive" in m for m in got.messages)

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.inference import predict_steps, predict_volume, resolve_device
from napari_unet.inference.preprocess import apply_normalization, normalization_params
from napari_unet.io.volume import Volume
from napari_unet.jobs import Cancelled, Progress
from napari_unet.models import build_model, preset_spec

SMALL = {"channels": [4, 8], "strides": [2]}


def _net(dims: int, *, context: int = 0, patch: int = 16, **kw):
    spec = preset_spec(
        "unet",
        spatial_dims=dims,
        labels=["a", "b"],
        context_slices=context,
        patch_size=(patch,) * dims,
        **{**SMALL, **kw},
    )
    torch.manual_seed(0)
    net = build_model(spec).eval()
    with torch.no_grad():  # a non-trivial, confident output: background vs "a" by intensity
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
    return spec, net


def _volume(shape=(23, 17, 11), spacing=(1.0, 1.0, 3.0), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.0]
    return Volume(rng.normal(0, 400, shape).astype(np.float32), affine, modality="CT")


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("shape", [(23, 17, 11), (5, 6, 7), (40, 9, 13)])
def test_geometry_and_dtype(dims: int, shape) -> None:
    spec, net = _net(dims, context=1 if dims == 2 else 0)
    vol = _volume(shape)
    pred = predict_volume(net, spec, vol, device="cpu", uncertainty=True)
    assert pred.labels.shape == vol.shape and pred.labels.array.dtype == np.uint8
    np.testing.assert_array_equal(pred.labels.affine, vol.affine)
    assert set(np.unique(pred.labels.array)) <= {0, 1, 2}
    assert pred.uncertainty is not None and pred.uncertainty.shape == vol.shape
    assert pred.uncertainty.array.dtype == np.float32
    assert pred.uncertainty.array.min() >= 0 and pred.uncertainty.array.max() <= 1
    assert pred.device == "cpu" and not net.training


def test_training_flag_restored() -> None:
    spec, net = _net(3)
    net.train()
    predict_volume(net, spec, _volume(), device="cpu")
    assert net.training


def _monai_reference(net, spec, vol, roi) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    x = apply_normalization(vol.array, normalization_params(vol.array, spec.normalization))
    with torch.inference_mode():
        y = sliding_window_inference(x[None, None], roi, 1, net, overlap=0.25, mode="gaussian")
    return y.argmax(1)[0].numpy()


@pytest.mark.parametrize("roi", [None, (16, 16, 16)])
def test_agrees_with_monai_sliding_window(roi) -> None:
    # 40 = 16 + 24: MONAI's and our tile starts coincide (0, 12, 24) with 16³ tiles.
    spec, net = _net(3)
    vol = _volume((40, 40, 16))
    ours = predict_volume(net, spec, vol, device="cpu", roi_size=roi).labels.array
    ref = _monai_reference(net, spec, vol, roi or (40, 40, 16))
    assert (ours == ref).mean() > 0.999


def test_volume_smaller_than_patch_matches_monai_padding() -> None:
    spec, net = _net(3, patch=32)
    vol = _volume((9, 20, 13))
    ours = predict_volume(net, spec, vol, device="cpu", roi_size=(32, 32, 32)).labels.array
    ref = _monai_reference(net, spec, vol, (32, 32, 32))
    assert (ours == ref).mean() > 0.999


def test_2d_context_channels_and_slice_axis() -> None:
    spec, net = _net(2, context=1)
    vol = _volume((20, 18, 7))
    pred = predict_volume(net, spec, vol, device="cpu", slice_axis=0)
    # slice 5 along axis 0 by hand: channels = slices 4, 5, 6; (H, W) = axes (1, 2)
    x = apply_normalization(vol.array[4:7], normalization_params(vol.array, spec.normalization))
    x = torch.nn.functional.pad(x[None], (0, 1, 0, 0))  # W 7 → 8 (zeros after normalising)
    with torch.inference_mode():
        ref = net(x).argmax(1)[0, :, :7].numpy()
    assert pred.info["slice_axis"] == 0
    np.testing.assert_array_equal(pred.labels.array[5], ref)


def test_2d_whole_slices_every_slice_and_entropy_match_one_pass() -> None:
    """Whole-slice batches (one tile per slice): edge slices repeat their neighbour as
    context, a last batch smaller than the others, labels and normalised entropy equal
    to one forward pass over all slices."""
    spec, net = _net(2, context=1)
    vol = _volume((20, 18, 7))
    pred = predict_volume(net, spec, vol, device="cpu", slice_axis=0, batch_size=3,
                          uncertainty=True)  # fmt: skip
    x = apply_normalization(vol.array, normalization_params(vol.array, spec.normalization))
    rows = np.clip(np.arange(20)[:, None] + np.arange(-1, 2), 0, 19)
    x = torch.nn.functional.pad(x[torch.from_numpy(rows)], (0, 1, 0, 0))
    with torch.inference_mode():
        logits = net(x)[..., :7]
    p = torch.softmax(logits, 1)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(1) / np.log(3)
    assert pred.info["n_tiles"] == 1 and pred.info["batch_size"] == 3
    np.testing.assert_array_equal(pred.labels.array, logits.argmax(1).numpy())
    np.testing.assert_allclose(pred.uncertainty.array, entropy.numpy(), atol=1e-5)


def test_slices_restriction_2d_and_3d() -> None:
    for dims in (2, 3):
        spec, net = _net(dims)
        vol = _volume((20, 18, 12))
        full = predict_volume(net, spec, vol, device="cpu").labels.array
        part = predict_volume(net, spec, vol, device="cpu", slices=[3, 7]).labels.array
        assert not part[..., [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]].any()
        if dims == 2:
            np.testing.assert_array_equal(part[..., [3, 7]], full[..., [3, 7]])
        else:
            assert (part[..., [3, 7]] == full[..., [3, 7]]).mean() > 0.99
    with pytest.raises(ValueError, match="slices"):
        predict_volume(net, spec, vol, device="cpu", slices=[12])


def test_progress_and_stop() -> None:
    spec, net = _net(2)
    vol = _volume((16, 16, 10))
    events = []
    job = predict_steps(net, spec, vol, device="cpu", batch_size=3)
    with pytest.raises(StopIteration):
        while True:
            events.append(next(job))
    assert all(isinstance(e, Progress) for e in events)
    assert events[-1].done == events[-1].total == 10 and len(events) == 4
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        predict_volume(net, spec, vol, device="cpu", batch_size=3, stop=stop)
    assert len(calls) == 3


def test_anisotropic_resampling_returns_input_grid() -> None:
    spec, net = _net(3)
    spec.target_spacing = (1.0, 1.0, 1.0)
    vol = _volume((21, 19, 7), spacing=(0.7, 0.9, 3.3))
    pred = predict_volume(net, spec, vol, device="cpu", uncertainty=True)
    assert pred.info["model_grid"] == [15, 17, 23]
    assert pred.labels.shape == vol.shape and pred.uncertainty.shape == vol.shape
    np.testing.assert_array_equal(pred.labels.affine, vol.affine)


def test_oom_halves_batch(monkeypatch) -> None:
    spec, net = _net(2)
    vol = _volume((16, 16, 8))
    ref = predict_volume(net, spec, vol, device="cpu", batch_size=8).labels.array
    forward = net.forward

    def flaky(x):
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(x)

    monkeypatch.setattr(net, "forward", flaky)
    with pytest.warns(RuntimeWarning, match="batch size lowered"):
        pred = predict_volume(net, spec, vol, device="cpu", batch_size=8)
    assert pred.info["batch_size"] == 2 and pred.messages
    np.testing.assert_array_equal(pred.labels.array, ref)


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_agrees_with_cpu_and_falls_back() -> None:
    spec, net = _net(3)
    vol = _volume((40, 40, 16))
    cpu = predict_volume(net, spec, vol, device="cpu").labels.array
    gpu = predict_volume(net, spec, vol, device="cuda")
    assert gpu.device.startswith("cuda") and (gpu.labels.array == cpu).mean() > 0.99

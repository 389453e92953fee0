"""Precision and out-of-memory fallback of fine-tuning (no GPU needed).

* float16 and networks without normalisation layers: the recommended network has none,
  so nothing keeps its activations near unit size; once its layer gains grow past ~3
  (weights fine-tuned up), activations pass float16's largest value (65504) and fp16
  autocast returns inf/NaN logits. bf16 keeps float32's range. So "auto" never picks
  fp16 for such a network (`inference.device.autocast_dtype`; tests/inference/
  test_device.py checks the choice per GPU generation).
* Out of memory during a training step or a validation on a GPU: ``torch.device("cpu",
  0)`` plays the GPU (a CPU device unequal to ``torch.device("cpu")``, which is all the
  fallback looks at); the injected failure fires while the run is still on it, and the
  run must end exactly as a run on the CPU from the start.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.inference.device import CPU, autocast_dtype
from napari_unet.models import build_model, preset_spec
from napari_unet.training import TrainConfig, finetune, handlers, sparse_volume, trainer

from .conftest import blob_pair, tiny_spec

FP16_MAX = torch.finfo(torch.float16).max
FAST = {"batch_size": 4, "val_every": 5, "augmentation": "none", "lr": 1e-2, "steps": 12}


def _cpu_fp16_autocast_works() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 3, 3))
        return True
    except (RuntimeError, TypeError):
        return False


needs_fp16_cpu = pytest.mark.skipif(
    not _cpu_fp16_autocast_works(), reason="this torch has no float16 autocast on the CPU"
)


def _mr_like_input(spec, seed=0) -> torch.Tensor:
    """A z-scored input like the MR normalisation gives: values of order 1."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((2, spec.in_channels, *spec.patch_size), generator=g)


def _scaled(net: torch.nn.Module, gain: float) -> torch.nn.Module:
    """Every convolution's weights times ``gain`` (a stand-in for fine-tuned weights)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                m.weight.mul_(gain)
    return net.eval()


def _max_activation(net: torch.nn.Module, x: torch.Tensor) -> float:
    """Largest |activation| of any convolution output, float32."""
    peaks: list[float] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: peaks.append(float(o.abs().max())))
        for m in net.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return max(peaks)


def _recommended(gain: float):
    spec = tiny_spec(context_slices=0)
    torch.manual_seed(0)
    return spec, _scaled(build_model(spec), gain)


def test_the_untrained_recommended_net_is_far_from_the_fp16_limit():
    spec, net = _recommended(1.0)
    assert _max_activation(net, _mr_like_input(spec)) < 1e-2 * FP16_MAX


@needs_fp16_cpu
def test_fp16_overflows_a_network_without_normalisation_where_bf16_and_fp32_do_not():
    spec, net = _recommended(10.0)
    x = _mr_like_input(spec)
    assert _max_activation(net, x) > FP16_MAX  # float32 holds it …
    with torch.no_grad():
        assert torch.isfinite(net(x)).all()
        with torch.autocast("cpu", dtype=torch.float16):
            fp16 = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = net(x)
    assert not torch.isfinite(fp16).all()  # … float16 does not
    assert torch.isfinite(bf16).all()


@needs_fp16_cpu
def test_batch_norm_keeps_the_same_weight_growth_inside_fp16():
    """The same ×10 weights with batch norm (statistics recomputed for them, as
    training would): activations stay small and fp16 agrees with float32."""
    spec = preset_spec("unet", spatial_dims=2, labels=["a"], channels=[8, 16, 32],
                       strides=[2, 2], patch_size=(32, 32))  # fmt: skip
    torch.manual_seed(0)
    net = _scaled(build_model(spec), 10.0)
    x = _mr_like_input(spec)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()
    assert _max_activation(net, x) < 1e-2 * FP16_MAX
    with torch.no_grad():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.float16):
            fp16 = net(x).float()
    assert torch.isfinite(fp16).all()
    assert (fp16.argmax(1) == ref.argmax(1)).float().mean() > 0.99


def test_finetune_asks_for_the_precision_of_its_network(monkeypatch):
    image, truth = blob_pair()
    spec = tiny_spec(context_slices=0)
    data = sparse_volume(image, truth, spec, slices=[1, 4, 6], slice_axis=2)
    seen = []

    def spy(dev, precision="auto", *, net=None):
        seen.append(net)
        return autocast_dtype(dev, precision, net=net)

    monkeypatch.setattr("napari_unet.inference.device.autocast_dtype", spy)
    result = finetune(None, spec, [data], config=TrainConfig(device="cpu", **FAST))
    assert len(seen) == 1 and isinstance(seen[0], torch.nn.Module)
    assert result.metrics.precision == "float32"


# ---- out of memory in the training step and in validation -------------------------------

ACCEL = "cpu:0"


def _oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (injected)")


def _data():
    image, truth = blob_pair(seed=1)
    spec = tiny_spec(context_slices=0)
    return spec, sparse_volume(image, truth, spec, slices=[1, 3, 5, 7], slice_axis=2)


def _run(spec, data, device: str):
    return finetune(None, spec, [data], config=TrainConfig(device=device, seed=3, **FAST))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def cpu_result():
    spec, data = _data()
    return _run(spec, data, "cpu")


@pytest.mark.filterwarnings("ignore:out of memory:RuntimeWarning")
@pytest.mark.parametrize("stage", ["step", "validation"])
def test_oom_on_the_gpu_goes_on_on_the_cpu_with_the_cpu_result(monkeypatch, cpu_result, stage):
    spec, data = _data()
    clean = _run(spec, data, ACCEL)
    assert clean.metrics.device == ACCEL and _same_weights(clean.model, cpu_result.model)
    fired: list[int] = []
    if stage == "step":
        original = trainer._forward_backward

        def failing_step(run, *batch):
            if run.dev != CPU and run.messages == [] and len(fired) < 1:
                fired.append(1)
                # as on a GPU: fail after the forward pass, gradients half made
                run.net(batch[0].to(run.dev)).sum().backward()
                raise _oom()
            return original(run, *batch)

        monkeypatch.setattr(trainer, "_forward_backward", failing_step)
    else:
        original = handlers.validate

        def failing_validate(net, items, dev, amp, n_classes):
            if dev != CPU:
                fired.append(1)
                raise _oom()
            return original(net, items, dev, amp, n_classes)

        monkeypatch.setattr(handlers, "validate", failing_validate)

    with pytest.warns(RuntimeWarning, match="training goes on on the CPU"):
        result = _run(spec, data, ACCEL)

    assert fired
    assert result.metrics.device == "cpu" and result.metrics.precision == "float32"
    assert result.metrics.steps == cpu_result.metrics.steps
    assert result.metrics.val_dice == cpu_result.metrics.val_dice
    assert result.metrics.final_loss == cpu_result.metrics.final_loss
    assert _same_weights(result.model, cpu_result.model)


def test_oom_on_the_cpu_is_a_memory_error_with_a_remedy(monkeypatch):
    spec, data = _data()

    def failing_step(run, *batch):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")

    monkeypatch.setattr(trainer, "_forward_backward", failing_step)
    with pytest.raises(MemoryError, match=r"out of memory on the CPU in a training step.*batch"):
        _run(spec, data, "cpu")


def test_a_data_parallel_process_does_not_leave_its_gpu_alone(monkeypatch):
    """In a DDP group one process moving to the CPU would hang the others: it stops."""
    spec, data = _data()

    def failing_step(run, *batch):
        raise _oom()

    monkeypatch.setattr(trainer, "_forward_backward", failing_step)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    with pytest.raises(MemoryError, match="multi-process run"):
        _run(spec, data, ACCEL)


def test_other_errors_in_a_step_are_not_taken_for_out_of_memory(monkeypatch):
    spec, data = _data()

    def failing_step(run, *batch):
        raise RuntimeError("expected scalar type Float but found Half")

    monkeypatch.setattr(trainer, "_forward_backward", failing_step)
    with pytest.raises(RuntimeError, match="expected scalar type"):
        _run(spec, data, ACCEL)


def test_blob_data_is_deterministic_for_the_comparisons_above():
    a, b = blob_pair(seed=1), blob_pair(seed=1)
    np.testing.assert_array_equal(a[0].array, b[0].array)

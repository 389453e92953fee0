"""Out-of-memory fallbacks of inference, the failure injected at each stage.

There is no GPU here: ``torch.device("cpu", 0)`` plays the accelerator. It is a CPU
device that compares unequal to ``torch.device("cpu")``, which is all the fallback logic
looks at (`Runner.fall_back` moves to the CPU unless already there), so the device flow
of a CUDA run — network, blending buffers, argmax, all moving to the CPU on the first
out-of-memory error — runs as it would on a GPU. Each injected failure fires only while
its stage still works on the "accelerator"; the result must equal the no-fault result.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.inference import predict_volume, stitch
from napari_unet.inference.device import CPU, is_oom
from napari_unet.inference.runner import Runner
from napari_unet.io.volume import Volume
from napari_unet.models import build_model, preset_spec

ACCEL = torch.device("cpu", 0)
CPU_ALLOC = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)"
)

pytestmark = pytest.mark.filterwarnings("ignore:out of memory:RuntimeWarning")


def _oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


def _case(dims: int):
    """A small net and a volume that tiles: several tiles per slab / slice, several
    slabs / slices, batches of 4."""
    spec = preset_spec("unet", spatial_dims=dims, labels=["a", "b"], patch_size=(16,) * dims,
                       channels=[4, 8], strides=[2])  # fmt: skip
    torch.manual_seed(0)
    net = build_model(spec).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
    rng = np.random.default_rng(0)
    shape = (40, 34, 20) if dims == 3 else (40, 34, 6)
    vol = Volume(rng.normal(0, 400, shape).astype(np.float32), np.diag([1, 1, 3.0, 1]), "CT")
    options = {"roi_size": (16,) * dims, "batch_size": 4, "uncertainty": True}
    return spec, net, vol, options


@pytest.fixture
def devices_seen(monkeypatch):
    """The buffers' device at every blend and argmax step (the real functions run)."""
    seen: list[torch.device] = []
    add, labels_of = stitch._add_tile, stitch._labels_of

    def spy_add(bufs, *a, **k):
        seen.append(bufs.device)
        return add(bufs, *a, **k)

    def spy_labels(bufs, *a, **k):
        seen.append(bufs.device)
        return labels_of(bufs, *a, **k)

    monkeypatch.setattr(stitch, "_add_tile", spy_add)
    monkeypatch.setattr(stitch, "_labels_of", spy_labels)
    return seen


def _inject(monkeypatch, stage: str) -> list[str]:
    """Make ``stage`` raise CUDA out-of-memory while it runs on the accelerator; returns
    a list that gets the name of the failing function at each injected failure."""
    fired: list[str] = []

    def failing(original, on_accel, name):
        def wrapper(*args, **kwargs):
            if on_accel(*args):
                fired.append(name)
                raise _oom()
            return original(*args, **kwargs)

        return wrapper

    if stage in ("forward", "join"):
        forward = Runner._forward
        # "forward": every batch size fails on the accelerator (halving, then the CPU);
        # "join": one failure at batch 4 halves the batch, so two outputs get joined
        big = (
            (lambda self, x: self.device != CPU)
            if stage == "forward"
            else (lambda self, x: self.device != CPU and x.shape[0] > 2)
        )
        monkeypatch.setattr(Runner, "_forward", failing(forward, big, "_forward"))
    if stage == "join":
        on_accel = lambda s, o: s.device != CPU  # noqa: E731
        monkeypatch.setattr(Runner, "_join", failing(Runner._join, on_accel, "_join"))
    if stage in ("blend", "argmax", "shift"):
        name = {"blend": "_add_tile", "argmax": "_labels_of", "shift": "_shift"}[stage]
        original = getattr(stitch, name)
        monkeypatch.setattr(stitch, name, failing(original, lambda b, *a: b.device != CPU, name))
    return fired


STAGES = [(3, s) for s in ("forward", "join", "blend", "argmax", "shift")] + [
    (2, s) for s in ("forward", "join", "blend", "argmax")
]


@pytest.mark.parametrize(("dims", "stage"), STAGES)
def test_oom_at_each_stage_falls_back_to_the_cpu_with_the_same_result(
    monkeypatch, devices_seen, dims, stage
) -> None:
    spec, net, vol, options = _case(dims)
    ref = predict_volume(net, spec, vol, device="cpu", **options)
    clean = predict_volume(net, spec, vol, device=ACCEL, **options)
    assert clean.device == str(ACCEL) and not clean.messages
    devices_seen.clear()
    fired = _inject(monkeypatch, stage)

    pred = predict_volume(net, spec, vol, device=ACCEL, **options)

    where = {"forward": "_forward", "join": "_join", "blend": "_add_tile",
             "argmax": "_labels_of", "shift": "_shift"}[stage]  # fmt: skip
    assert where in fired, f"the {stage} failure was never injected"
    assert pred.device == "cpu"
    assert any("continuing on the CPU" in m for m in pred.messages), pred.messages
    np.testing.assert_array_equal(pred.labels.array, ref.labels.array)
    np.testing.assert_allclose(pred.uncertainty.array, ref.uncertainty.array, atol=1e-6)
    # complete fallback: once the buffers are on the CPU they never go back, and every
    # later blend and argmax runs there
    first_cpu = devices_seen.index(CPU)
    assert all(d == CPU for d in devices_seen[first_cpu:])
    assert devices_seen[-1] == CPU


def test_no_fault_on_the_accelerator_keeps_everything_there(devices_seen) -> None:
    spec, net, vol, options = _case(3)
    pred = predict_volume(net, spec, vol, device=ACCEL, **options)
    assert pred.device == str(ACCEL) and set(devices_seen) == {ACCEL}


@pytest.mark.parametrize("dims", [2, 3])
def test_a_cpu_allocator_failure_halves_the_batch(monkeypatch, dims) -> None:
    """``RuntimeError: DefaultCPUAllocator: can't allocate memory`` is out of memory."""
    spec, net, vol, options = _case(dims)
    ref = predict_volume(net, spec, vol, device="cpu", **options)
    forward = Runner._forward

    def flaky(self, x):
        if x.shape[0] > 2:
            raise RuntimeError(CPU_ALLOC)
        return forward(self, x)

    monkeypatch.setattr(Runner, "_forward", flaky)
    with pytest.warns(RuntimeWarning, match="batch size lowered to 2"):
        pred = predict_volume(net, spec, vol, device="cpu", **options)
    assert pred.info["batch_size"] == 2 and pred.device == "cpu"
    np.testing.assert_array_equal(pred.labels.array, ref.labels.array)


def test_out_of_memory_on_the_cpu_at_batch_one_is_a_memory_error_with_a_remedy(
    monkeypatch,
) -> None:
    spec, net, vol, options = _case(3)

    def failing(self, x):
        raise RuntimeError(CPU_ALLOC)

    monkeypatch.setattr(Runner, "_forward", failing)
    with pytest.raises(MemoryError, match=r"out of memory on the CPU.*smaller roi_size"):
        predict_volume(net, spec, vol, device="cpu", **options)


def test_other_runtime_errors_are_not_taken_for_out_of_memory(monkeypatch) -> None:
    spec, net, vol, options = _case(2)

    def failing(self, x):
        raise RuntimeError("Given groups=1, weight of size [4, 3, 3, 3], expected input")

    monkeypatch.setattr(Runner, "_forward", failing)
    with pytest.raises(RuntimeError, match="Given groups"):
        predict_volume(net, spec, vol, device=ACCEL, **options)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RuntimeError(CPU_ALLOC), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"), True),
        (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), True),
        (RuntimeError("std::bad_alloc: cannot allocate memory"), True),
        (MemoryError("Unable to allocate 3.00 GiB for an array"), True),
        (torch.OutOfMemoryError("CUDA out of memory"), True),
        (RuntimeError("expected scalar type Float but found Half"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_is_oom(error, expected) -> None:
    assert is_oom(error) is expected

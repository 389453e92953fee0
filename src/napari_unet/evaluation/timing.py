"""The benchmark's timing harness: each method in a fresh process, the median of several
timed calls after a warm-up, with peak resident (and GPU) memory.

`measure_methods` starts one ``python -m napari_unet.evaluation.bench --worker METHOD
--serve …`` process per method (`serve`): it loads the weights and the volume, makes one
warm-up call on the whole volume, then makes one timed call (`timed_call`: CUDA
synchronised before and after, the kernel's peak-RSS mark and torch's CUDA peak reset
before) each time the driver asks. With ``interleave`` the driver asks the processes in
turn — round r times every method once, in an order rotated by r — so that a change of
machine load (a shared machine) slows every method alike instead of whichever ran at
that moment; only one process computes at a time. The methods are in
`evaluation.baselines`; the conv peak (`flops.conv_peak`) runs in a fresh process too
(`measure`, `worker`). `machine` describes the computer for the results.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def machine() -> dict[str, Any]:
    """The CPU (model name, cores), torch threads, platform, Python and GPU, if any."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """One timed call of ``fn()``.

    Before it: CUDA synchronised, the peak-RSS mark reset (Linux ``clear_refs`` 5),
    torch's CUDA peak statistics reset; after it: synchronised again, the peaks read.

    Returns:
        ``seconds``, ``peak_rss_increase`` (VmHWM, or ``ru_maxrss`` where /proc is
        missing, above the RSS before the call), ``peak_reset`` (False: the increase is
        a lower bound), ``peak_gpu_bytes`` (allocated CUDA memory above the allocation
        before the call; None off CUDA), ``peak_gpu_allocated_bytes`` (the total, the
        resident model included), ``result`` (``fn``'s return value).
    """
    import resource

    rss_before = (_status_kib("VmRSS") or 0) * 1024
    reset = _reset_peak()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gpu_before = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        gpu_before = torch.cuda.memory_allocated(device)
    _sync(device)
    t = time.perf_counter()
    result = fn()
    _sync(device)
    seconds = time.perf_counter() - t
    # VmHWM is this process's own peak mark, which the reset above lowers. ru_maxrss is no
    # use after a reset: it is max(VmHWM, a mark inherited at fork/exec from the parent,
    # i.e. the benchmark driver's RSS), which clear_refs does not touch.
    hwm = _status_kib("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gpu_total = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "seconds": seconds,
        "peak_rss_increase": (hwm * 1024 if (hwm is not None and reset) else maxrss) - rss_before,
        "peak_reset": reset or maxrss_before <= rss_before,
        "peak_gpu_bytes": None if gpu_total is None else gpu_total - gpu_before,
        "peak_gpu_allocated_bytes": gpu_total,
        "result": result,
    }


def summarise(first_s: float, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of a method from its warm-up time and its timed calls: ``seconds``
    (each), ``median_s``, ``first_s``, ``peak_rss_increase`` (the largest),
    ``peak_reset`` (all reset), ``peak_gpu_bytes`` and ``peak_gpu_allocated_bytes``
    (the largest, None off CUDA)."""
    gpu = [c["peak_gpu_bytes"] for c in calls if c["peak_gpu_bytes"] is not None]
    total = [c["peak_gpu_allocated_bytes"] for c in calls if c["peak_gpu_bytes"] is not None]
    seconds = [c["seconds"] for c in calls]
    return {
        "seconds": seconds,
        "median_s": statistics.median(seconds),
        "first_s": first_s,
        "peak_rss_increase": max(c["peak_rss_increase"] for c in calls),
        "peak_reset": all(c["peak_reset"] for c in calls),
        "peak_gpu_bytes": max(gpu) if gpu else None,
        "peak_gpu_allocated_bytes": max(total) if total else None,
    }


def timed_calls(fn: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, Any]:
    """One warm-up call, then ``repeats`` `timed_call` s of ``fn()`` in this process.

    Returns:
        `summarise`'s figures and ``result`` (the last call's return value).
    """
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t
    calls = [timed_call(fn, device) for _ in range(max(1, repeats))]
    return {**summarise(first, calls), "result": calls[-1]["result"]}


#: Marks the worker's protocol lines on stdout (anything else printed there is ignored).
_MARK = "@@bench "


def _say(obj: dict[str, Any]) -> None:
    print(_MARK + json.dumps(obj), flush=True)


def _load(weights: str, volume: str, device: str, precision: str):
    """(net, spec, volume array, device, autocast dtype) in a worker."""
    from napari_unet.inference.device import autocast_dtype
    from napari_unet.models.files import load_model

    dev = torch.device(device)
    loaded = load_model(weights, device=device)
    net = loaded.model.eval()
    return net, loaded.spec, np.load(volume), dev, autocast_dtype(dev, precision, net=net)


def serve(
    method: str,
    weights: str,
    volume: str,
    labels_out: str,
    device: str,
    *,
    precision: str = "fp32",
    settings: dict[str, Any] | None = None,
    commands=None,
) -> None:
    """A method's worker process (see the module docstring): load, warm up, say
    ``{"ready", "first_s", "info"}``; then for each ``run`` line on stdin say one `timed_call`'s
    figures; at ``done`` save the last label map to ``labels_out`` and say ``{"info"}``
    (the method's, plus ``dtype``).

    Args:
        method: "ours", "monai", "monai_tuned" (see `baselines.run_method`).
        weights: the model file.
        volume: a ``.npy`` file of the ``(i, j, k)`` volume in HU.
        labels_out: where to save the label map (``.npy``).
        device: torch device name.
        precision: a `Precision`; every method runs under the dtype it resolves to.
        settings: the method's options (tuned MONAI's window and batch).
        commands: the command lines (default ``sys.stdin``).
    """
    from napari_unet.evaluation.baselines import run_method

    net, spec, img, dev, dtype = _load(weights, volume, device, precision)
    settings = {**(settings or {}), "precision": precision}

    def call():
        return run_method(method, net, spec, img, dev, dtype, settings)

    _sync(dev)
    t = time.perf_counter()
    result = call()
    _sync(dev)
    _say({"ready": True, "first_s": time.perf_counter() - t, "info": result[1]})
    for line in commands if commands is not None else sys.stdin:
        if line.strip() == "run":
            m = timed_call(call, dev)
            result = m.pop("result")
            _say(m)
        elif line.strip() == "done":
            break
    labels, info = result
    np.save(labels_out, labels)
    info["dtype"] = str(dtype).replace("torch.", "") if dtype else "float32"
    _say({"info": info})


def worker(device: str, *, precision: str = "fp32", dims: int = 3) -> dict[str, Any]:
    """The conv peak (`flops.conv_peak`) measured in this (fresh) process.

    Returns:
        ``{"info": conv_peak's result}``.
    """
    from napari_unet.evaluation.flops import conv_peak
    from napari_unet.inference.device import autocast_dtype

    dev = torch.device(device)
    return {"info": conv_peak(dev, dims, dtype=autocast_dtype(dev, precision))}


class _Worker:
    """A running `serve` process and its protocol."""

    def __init__(self, cmd: list[str], log: str, method: str, labels: str) -> None:
        import subprocess

        self.method, self.log, self.labels = method, log, labels
        self._err = open(log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, text=True)  # fmt: skip
        self.ready = self.read()
        self.calls: list[dict[str, Any]] = []

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(_MARK):
                return json.loads(line[len(_MARK) :])
        self.proc.wait()
        self._err.flush()
        with open(self.log) as f:
            tail = f.read()[-4000:]
        raise RuntimeError(f"{self.method} worker failed (exit {self.proc.returncode}):\n{tail}")

    def send(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def finish(self) -> tuple[dict[str, Any], np.ndarray]:
        """Stop the worker; (its figures and ``info``, its label map)."""
        info = self.send("done")["info"]
        self.proc.wait()
        return {**summarise(self.ready["first_s"], self.calls), "info": info}, np.load(self.labels)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


Job = tuple[str, "dict[str, Any] | None"]


def measure_methods(
    jobs: list[Job],
    weights: Path | str,
    volume: str,
    tmp: str,
    device: str,
    *,
    repeats: int = 3,
    precision: str = "fp32",
    interleave: bool = True,
    more: Callable[[list[dict[str, Any]]], list[Job]] | None = None,
) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Measure methods, each in its own fresh `serve` process.

    Args:
        jobs: ``(method, settings)`` pairs.
        weights: the model file.
        volume: a ``.npy`` file of the ``(i, j, k)`` volume in HU.
        tmp: a folder for the workers' label maps and logs.
        device: torch device name.
        repeats: timed calls per method after its warm-up.
        precision: a `Precision` for every method.
        interleave: keep every process alive and time them in turn (round r in an
            order rotated by r); False: one process after the other, each to its end
            (on a GPU, where live processes would share its memory).
        more: called with the ``jobs``' ready messages (each with its warm-up's
            ``info``) for further jobs (tuned MONAI's window is our tile).

    Returns:
        Per job (``jobs``, then ``more``'s): (`summarise`'s figures and ``info``, the
        label map ``(i, j, k)``).

    Raises:
        RuntimeError: a worker failed (its stderr's tail in the message).
    """
    repeats = max(1, int(repeats))
    workers: list[_Worker] = []

    def start(method: str, settings: dict[str, Any] | None) -> _Worker:
        i = len(workers)
        labels = os.path.join(tmp, f"{method}-{i}-labels.npy")
        cmd = [
            sys.executable, "-m", "napari_unet.evaluation.bench", "--worker", method,
            "--serve", "--weights", str(weights), "--volume", volume, "--labels-out", labels,
            "--device", device, "--precision", precision,
            "--settings", json.dumps(settings or {}),
        ]  # fmt: skip
        workers.append(_Worker(cmd, os.path.join(tmp, f"{method}-{i}.log"), method, labels))
        return workers[-1]

    def run_to_end(method: str, settings) -> tuple[dict[str, Any], np.ndarray]:
        w = start(method, settings)
        w.calls = [w.send("run") for _ in range(repeats)]
        result = w.finish()
        w.close()
        return result

    try:
        if not interleave:
            results = [run_to_end(m, s) for m, s in jobs]
            ready = [w.ready for w in workers]
            return results + [run_to_end(m, s) for m, s in (more(ready) if more else [])]
        for m, s in jobs:  # warm-ups one after the other
            start(m, s)
        for m, s in more([w.ready for w in workers]) if more else []:
            start(m, s)
        for r in range(repeats):
            for k in range(len(workers)):
                w = workers[(k + r) % len(workers)]
                w.calls.append(w.send("run"))
        return [w.finish() for w in workers]
    finally:
        for w in workers:
            w.close()


def measure(device: str, *, precision: str = "fp32", dims: int = 3) -> dict[str, Any]:
    """The conv peak for ``dims`` measured in a fresh Python process (`worker`).

    Raises:
        RuntimeError: the worker failed (its stderr's tail in the message).
    """
    import subprocess

    cmd = [sys.executable, "-m", "napari_unet.evaluation.bench", "--worker", "conv_peak",
           "--device", device, "--precision", precision,
           "--settings", json.dumps({"dims": dims})]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"conv_peak worker failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])

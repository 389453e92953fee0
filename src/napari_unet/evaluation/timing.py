"""The benchmark's timing harness: each measurement in a fresh process, the median of
several timed calls after a warm-up, with peak resident (and GPU) memory.

`measure` runs ``python -m napari_unet.evaluation.bench --worker METHOD …``, which calls
`worker`: load the weights and the volume, one warm-up call on the whole volume, then
``repeats`` timed calls (`timed_calls`: CUDA synchronised before and after each, the
kernel's peak-RSS mark and torch's CUDA peak reset before each). The methods are in
`evaluation.baselines`; the conv peak (`flops.conv_peak`) runs the same way.
`machine` describes the computer for the results.
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


def timed_calls(fn: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, Any]:
    """One warm-up call, then ``repeats`` timed calls of ``fn()``.

    Before each timed call: CUDA synchronised, the peak-RSS mark reset (Linux
    ``clear_refs`` 5), torch's CUDA peak statistics reset; after it: synchronised again,
    the peak read.

    Returns:
        ``seconds`` (each timed call), ``median_s``, ``first_s`` (the warm-up call),
        ``rss_before``, ``peak_rss`` (the largest over the timed calls; VmHWM, or
        ``ru_maxrss`` where /proc is missing), ``peak_reset``, ``peak_gpu_bytes`` (the
        largest increase of allocated CUDA memory over what was allocated before a
        call; None off CUDA), ``peak_gpu_allocated_bytes`` (the largest total, the
        resident model included), ``result`` (the last call's return value).
    """
    import resource

    _sync(device)
    t = time.perf_counter()
    result = fn()
    _sync(device)
    first = time.perf_counter() - t
    seconds: list[float] = []
    peaks: list[int] = []
    gpu_peaks: list[int] = []
    gpu_totals: list[int] = []
    reset_all = True
    rss_before = (_status_kib("VmRSS") or 0) * 1024
    for _ in range(repeats):
        result = None
        rss_before = (_status_kib("VmRSS") or 0) * 1024
        reset = _reset_peak()
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        reset_all &= reset or maxrss_before <= rss_before
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            gpu_before = torch.cuda.memory_allocated(device)
        _sync(device)
        t = time.perf_counter()
        result = fn()
        _sync(device)
        seconds.append(time.perf_counter() - t)
        # VmHWM is this process's own peak mark, which the reset above lowers. ru_maxrss
        # is no use after a reset: it is max(VmHWM, a mark inherited at fork/exec from
        # the parent, i.e. the benchmark driver's RSS), which clear_refs does not touch.
        hwm = _status_kib("VmHWM")
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peaks.append((hwm * 1024 if (hwm is not None and reset) else maxrss) - rss_before)
        if device.type == "cuda":
            gpu_totals.append(torch.cuda.max_memory_allocated(device))
            gpu_peaks.append(gpu_totals[-1] - gpu_before)
    return {
        "seconds": seconds,
        "median_s": statistics.median(seconds),
        "first_s": first,
        "rss_before": rss_before,
        "peak_rss_increase": max(peaks),
        # without the reset the mark may be left over from loading/warm-up (then the
        # increase is a lower bound)
        "peak_reset": reset_all,
        "peak_gpu_bytes": max(gpu_peaks) if gpu_peaks else None,
        "peak_gpu_allocated_bytes": max(gpu_totals) if gpu_totals else None,
        "result": result,
    }


def worker(
    method: str,
    weights: str,
    volume: str,
    labels_out: str,
    device: str,
    *,
    repeats: int = 3,
    precision: str = "fp32",
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One method measured in this (fresh) process: `timed_calls` of it on the volume.

    Args:
        method: "ours", "monai", "monai_tuned" (see `baselines.run_method`) or
            "conv_peak" (``settings``: ``dims``; no weights or volume needed).
        weights: the model file.
        volume: a ``.npy`` file of the ``(i, j, k)`` volume in HU.
        labels_out: where to save the label map (``.npy``).
        device: torch device name.
        repeats: timed calls after the warm-up (≥ 1).
        precision: a `Precision`; every method runs under the dtype it resolves to.
        settings: the method's options (tuned MONAI's window and batch).

    Returns:
        `timed_calls`' figures (without ``result``) and ``info`` (the method's, plus
        ``dtype``).
    """
    from napari_unet.evaluation.baselines import run_method
    from napari_unet.inference.device import autocast_dtype
    from napari_unet.models.files import load_model

    dev = torch.device(device)
    settings = dict(settings or {})
    if method == "conv_peak":
        from napari_unet.evaluation.flops import conv_peak

        dtype = autocast_dtype(dev, precision)
        return {"info": conv_peak(dev, int(settings["dims"]), dtype=dtype)}
    loaded = load_model(weights, device=device)
    net, spec = loaded.model.eval(), loaded.spec
    dtype = autocast_dtype(dev, precision, net=net)
    img = np.load(volume)
    settings["precision"] = precision
    m = timed_calls(lambda: run_method(method, net, spec, img, dev, dtype, settings), dev,
                    max(1, int(repeats)))  # fmt: skip
    labels, info = m.pop("result")
    np.save(labels_out, labels)
    info["dtype"] = str(dtype).replace("torch.", "") if dtype else "float32"
    return {**m, "info": info}


def measure(
    method: str,
    weights: Path | str,
    volume: str,
    tmp: str,
    device: str,
    *,
    repeats: int = 3,
    precision: str = "fp32",
    settings: dict[str, Any] | None = None,
    tag: str = "",
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run `worker` for ``method`` in a fresh Python process.

    Args:
        method: see `worker`.
        weights: the model file.
        volume: a ``.npy`` file of the ``(i, j, k)`` volume in HU.
        tmp: a folder for the worker's label map.
        device: torch device name.
        repeats, precision, settings: see `worker`.
        tag: distinguishes label files of several runs of one method.

    Returns:
        (the worker's result dict, its label map ``(i, j, k)``; None for "conv_peak").

    Raises:
        RuntimeError: the worker failed (its stderr's tail in the message).
    """
    import subprocess

    out = os.path.join(tmp, f"{method}{tag}-labels.npy")
    cmd = [
        sys.executable, "-m", "napari_unet.evaluation.bench", "--worker", method,
        "--weights", str(weights), "--volume", volume, "--labels-out", out,
        "--device", device, "--repeats", str(repeats), "--precision", precision,
        "--settings", json.dumps(settings or {}),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{method} worker failed:\n{res.stderr[-4000:]}")
    result = json.loads(res.stdout.strip().splitlines()[-1])
    return result, (np.load(out) if method != "conv_peak" else None)

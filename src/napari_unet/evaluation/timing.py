"""The benchmark's timing harness: one measurement in a fresh process, time and peak
resident memory.

`measure` runs ``python -m napari_unet.evaluation.bench --worker METHOD …``, which calls
`worker`: load the weights and the volume, warm up, reset the kernel's peak-RSS mark,
run the method once, report seconds and the peak above the pre-call RSS. `machine`
describes the computer for the results.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def machine() -> dict[str, Any]:
    """The CPU (model name, cores), torch threads, platform, Python and GPU, if any."""
    import torch

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


def worker(method: str, weights: str, volume: str, labels_out: str, device: str) -> dict:
    """One measurement in a fresh process: load the net and the volume, warm up, reset the
    peak-RSS mark, run ``method`` once, timed.

    Args:
        method: "ours" (`predict_volume`) or "monai" (`sliding_window_inference`).
        weights: the model file.
        volume: a ``.npy`` file of the ``(i, j, k)`` volume in HU.
        labels_out: where to save the label map (``.npy``).
        device: torch device name.

    Returns:
        Seconds, sliding-window-only seconds (MONAI), RSS before the call and the peak
        resident memory (VmHWM; ``ru_maxrss`` where /proc is missing), whether the peak
        mark was reset, and our tiling info.
    """
    import resource

    import torch
    from monai.inferers import sliding_window_inference

    from napari_unet.inference import predict_volume
    from napari_unet.inference.preprocess import apply_normalization, normalization_params
    from napari_unet.io.volume import Volume
    from napari_unet.models.files import load_model

    loaded = load_model(weights, device=device)
    net, spec = loaded.model.eval(), loaded.spec
    dims = spec.spatial_dims
    dev = torch.device(device)
    img = np.load(volume)
    affine = np.diag([0.8, 0.8, 2.0, 1.0])  # through-plane axis 2

    def ours(a: np.ndarray) -> tuple[np.ndarray, dict]:
        pred = predict_volume(net, spec, Volume(a, affine, modality="CT"), device=device)
        return pred.labels.array, {**pred.info, "device": str(pred.device)}

    swi: list[float] = []

    def monai(a: np.ndarray) -> tuple[np.ndarray, dict]:
        x = apply_normalization(a, normalization_params(a, spec.normalization))
        # 3D: (1, 1, I, J, K); 2D: the slices along axis 2 as a batch (N, 1, I, J)
        x = x[None, None] if dims == 3 else x.permute(2, 0, 1)[:, None]
        with torch.inference_mode():
            t = time.perf_counter()
            y = sliding_window_inference(x.to(dev), spec.patch_size, 1, net)
            swi.append(time.perf_counter() - t)
            lab = y.argmax(1).to(torch.uint8).cpu().numpy()
        return (lab[0] if dims == 3 else np.moveaxis(lab, 0, 2)), {"device": str(dev)}

    fn = ours if method == "ours" else monai
    fn(img[:48, :48, :24].copy())  # warm-up (allocator, oneDNN kernels), both methods alike
    swi.clear()
    rss_before = (_status_kib("VmRSS") or 0) * 1024
    reset = _reset_peak()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter()
    labels, info = fn(img)
    seconds = time.perf_counter() - t
    # VmHWM is this process's own peak mark, which the reset above lowers. ru_maxrss is no
    # use after a reset: it is max(VmHWM, a mark inherited at fork/exec from the parent,
    # i.e. the benchmark driver's RSS), which clear_refs does not touch.
    hwm = _status_kib("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = hwm * 1024 if (hwm is not None and reset) else maxrss
    np.save(labels_out, labels)
    return {
        "seconds": seconds,
        "sliding_window_only_s": swi[0] if swi else None,
        "rss_before": rss_before,
        "peak_rss": peak,
        "ru_maxrss": maxrss,
        # without the reset the mark may be left over from loading/warm-up (then it is
        # an upper bound of the pre-call state, and the increase is a lower bound)
        "peak_reset": reset or maxrss_before <= rss_before,
        "info": info,
    }


def measure(method: str, weights: Path, volume: str, tmp: str, device: str) -> tuple:
    """Run `worker` for ``method`` in a fresh Python process.

    Args:
        method: "ours" or "monai".
        weights: the model file.
        volume: a ``.npy`` file of the ``(i, j, k)`` volume in HU.
        tmp: a folder for the worker's label map.
        device: torch device name.

    Returns:
        (the worker's result dict, its label map ``(i, j, k)``).

    Raises:
        RuntimeError: the worker failed (its stderr's tail in the message).
    """
    import subprocess

    out = os.path.join(tmp, f"{method}-labels.npy")
    cmd = [
        sys.executable,
        "-m",
        "napari_unet.evaluation.bench",
        "--worker",
        method,
        "--weights",
        str(weights),
        "--volume",
        volume,
        "--labels-out",
        out,
        "--device",
        device,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{method} worker failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1]), np.load(out)

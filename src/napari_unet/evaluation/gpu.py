"""The GPU-only figures of ``benchmarks/gpu.sh``: a fine-tune round on the MR sample
through the `Loop`, and GPU memory and time of a prediction against volume size.

* ``finetune``: `loop.simulation.simulate` on the MR sample with the recommended network
  from scratch, two rounds of 10 slices: round 1 trains on 10 evenly spread slices,
  round 2 is the figure — 10 corrected slices (the worst predicted), fine-tuned from
  round 1's model, then the whole volume predicted again. ``seconds`` of a round is its
  wall time: choosing the slices + training + the new prediction (target ≤ 30 s).
* ``memory``: ``predict_volume`` of the inference benchmark's nets (3D and 2D) on cubes
  of 256³ … 512³ voxels (the 128³ benchmark phantom tiled), each after a warm-up on the
  smallest one: seconds (CUDA synchronised), torch's peak allocated GPU memory, tile
  and batch sizes (target: memory flat in volume size).

Every result names the GPU (``torch.cuda.get_device_name``). Without a CUDA GPU the
command stops with one line saying so (exit status 2).

Run: ``python -m napari_unet.evaluation.gpu {finetune,memory} --out FILE``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SIZES = (256, 320, 384, 448, 512)


class NoGPU(RuntimeError):
    """No CUDA GPU is visible to torch."""


def require_cuda(device: str = "cuda"):
    """The CUDA device, or `NoGPU` with a message naming torch's build."""
    import torch

    if not torch.cuda.is_available():
        raise NoGPU(
            f"needs a CUDA GPU, and torch {torch.__version__} (CUDA build: "
            f"{torch.version.cuda or 'none'}) sees none"
        )
    return torch.device(device)


def _header(dev) -> dict[str, Any]:
    import torch

    from napari_unet.evaluation.timing import machine
    from napari_unet.models.files import package_versions

    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev),
        "machine": machine(),
        "versions": {
            **package_versions(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
        },
    }


def finetune_round(*, device: str = "cuda", slices: int = 10, seed: int = 0) -> dict[str, Any]:
    """Two simulated rounds on the MR sample (see the module docstring); round 2 is the
    fine-tune round of ``slices`` corrected slices."""
    import torch

    from napari_unet.loop.simulation import simulate
    from napari_unet.samples import load_sample
    from napari_unet.training import TrainConfig, recommended_spec

    dev = require_cuda(device)
    s = load_sample("mr_brain")
    spec = recommended_spec(s.label_names, modality=s.image.modality)
    torch.cuda.reset_peak_memory_stats(dev)
    t = time.perf_counter()
    result = simulate(s.image, s.labels, spec=spec, rounds=2, slices_per_round=slices,
                      strategy="worst", config=TrainConfig(device=device, seed=seed),
                      device=device, seed=seed)  # fmt: skip
    wall = time.perf_counter() - t
    rounds = result.to_dict()["rounds"]
    out = _header(dev)
    out.update(
        sample="mr_brain",
        shape=list(s.image.shape),
        spec={"arch": spec.arch, "arch_args": spec.arch_args, "patch": list(spec.patch_size)},
        config=TrainConfig(device=device, seed=seed).to_dict(),
        rounds=rounds,
        finetune_round_seconds=rounds[-1]["seconds"] if len(rounds) > 1 else None,
        finetune_round_train_seconds=rounds[-1]["train_seconds"] if len(rounds) > 1 else None,
        finetune_round_predict_seconds=rounds[-1]["predict_seconds"] if len(rounds) > 1 else None,
        dice_after=rounds[-1]["dice"],
        wall_seconds_incl_setup=round(wall, 2),
        peak_gpu_allocated_bytes=int(torch.cuda.max_memory_allocated(dev)),
    )
    return out


def memory_vs_size(
    *,
    weights_dir: str | Path | None = None,
    sizes: tuple[int, ...] = SIZES,
    device: str = "cuda",
    precision: str = "auto",
    log=print,
) -> dict[str, Any]:
    """GPU memory and time of ``predict_volume`` against volume size (module docstring)."""
    import torch

    from napari_unet.evaluation.bench_nets import benchmark_net, phantom
    from napari_unet.inference import predict_volume
    from napari_unet.io.volume import Volume

    dev = require_cuda(device)
    base, _ = phantom((128, 128, 128), seed=42)
    out = _header(dev)
    out.update(precision=precision, sizes=list(sizes), cases=[])
    for dims in (3, 2):
        net, spec, _, _ = benchmark_net(dims, weights_dir=weights_dir, log=log)
        for i, n in enumerate((sizes[0], *sizes)):  # the first call is a warm-up
            reps = -(-n // 128)
            img = np.ascontiguousarray(np.tile(base, (reps,) * 3)[:n, :n, :n])
            vol = Volume(img, np.diag([0.8, 0.8, 2.0, 1.0]), modality="CT")
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
            before = torch.cuda.memory_allocated(dev)
            torch.cuda.synchronize(dev)
            t = time.perf_counter()
            pred = predict_volume(net, spec, vol, device=dev, precision=precision)
            torch.cuda.synchronize(dev)
            seconds = time.perf_counter() - t
            if i == 0:
                continue
            row = {
                "mode": f"{dims}d",
                "shape": [n, n, n],
                "voxels": n**3,
                "seconds": round(seconds, 3),
                "voxels_per_s": round(n**3 / seconds),
                "peak_gpu_allocated_bytes": int(torch.cuda.max_memory_allocated(dev)),
                "peak_gpu_increase_bytes": int(torch.cuda.max_memory_allocated(dev) - before),
                "input_bytes": int(img.nbytes),
                "device": pred.device,
                "tile": pred.info["tile"],
                "batch_size": pred.info["batch_size"],
                "n_tiles": pred.info["n_tiles"],
                "precision": pred.info["precision"],
                "messages": pred.messages,
            }
            log(json.dumps(row))
            out["cases"].append(row)
            del img, vol, pred
        net.cpu()
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m napari_unet.evaluation.gpu {finetune,memory} [--out FILE]``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("finetune", "memory"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--weights-dir", help="the inference benchmark's nets (memory)")
    p.add_argument("--precision", default="auto", help="memory: fp32, auto, bf16, fp16")
    p.add_argument("--out", help="write the JSON result to this file")
    args = p.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        if args.what == "finetune":
            result = finetune_round(device=args.device)
        else:
            result = memory_vs_size(weights_dir=args.weights_dir, device=args.device,
                                    precision=args.precision, log=log)  # fmt: skip
    except NoGPU as e:
        print(f"napari_unet.evaluation.gpu {args.what}: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

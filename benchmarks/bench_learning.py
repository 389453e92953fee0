"""Simulated-user learning curves from an untrained model, against trivial baselines.

For each sample (MR brain white matter, CT-like abdomen phantom) and from scratch:

* ``target``: one round revealing 5 evenly spread slices along the through-plane axis
  (the issue's target: Dice ≥ 0.93 on unrevealed slices, whole run ≤ 3 min on 2 CPU cores);
* ``curve``: several rounds of ``--k`` slices chosen by ``--strategy`` ("worst" by
  default; "random" is the control, see `loop.simulation`) — Dice on the
  unrevealed slices against revealed slices and against cumulative seconds, and how much
  each round lowered Dice on the slices revealed before it (target: by ≤ 0.01);
* baselines measured in the same run on the same unrevealed slices: the best single
  intensity threshold per class chosen in hindsight (an upper bound for any threshold),
  and multi-Otsu (each class mapped to its best Otsu band in hindsight).

Usage::

    python benchmarks/bench_learning.py [--quick] [--device cpu] [--strategy worst] \
        [--out benchmarks/results/learning_cpu.json]

Timings on a shared machine are noisy: the load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from napari_unet.evaluation.metrics import dice_per_class
from napari_unet.typing import Device, Strategy


def best_threshold_dice(image: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Best Dice of ``image >= t`` or ``image <= t`` against a binary truth, over all t.

    A sweep of Dice over every threshold at once from cumulative counts, not a Dice of two
    label maps: `evaluation.metrics.dice_per_class` once per threshold would be O(N²).
    """
    v = image.reshape(-1).astype(np.float64)
    t = truth.reshape(-1).astype(bool)
    order = np.argsort(v, kind="stable")
    vs, ts = v[order], t[order]
    n_true = ts.sum()
    best, best_t = 0.0, float(vs[0])
    for above in (True, False):
        tp = np.cumsum(ts[::-1])[::-1] if above else np.cumsum(ts)
        npred = np.arange(len(vs), 0, -1) if above else np.arange(1, len(vs) + 1)
        # only cut between distinct values
        ok = np.r_[True, vs[1:] != vs[:-1]] if above else np.r_[vs[1:] != vs[:-1], True]
        dice = np.where(ok, 2 * tp / (npred + n_true), 0)
        i = int(dice.argmax())
        if dice[i] > best:
            best, best_t = float(dice[i]), float(vs[i])
    return best, best_t


def multi_otsu_dice(image: np.ndarray, truth: np.ndarray, n_labels: int) -> list[float]:
    """Multi-Otsu with ``n_labels + 2`` bands (at most 4); each label takes its best band."""
    from skimage.filters import threshold_multiotsu

    sample = image.reshape(-1)[:: max(1, image.size // 2_000_000)]
    th = threshold_multiotsu(sample, classes=min(n_labels + 2, 4))  # 5 classes: O(256⁴)
    bands = np.digitize(image, th)
    out = []
    for c in range(1, n_labels + 1):
        t = truth == c
        dices = [dice_per_class(bands == b, t, 2)[0] or 0.0 for b in range(len(th) + 1)]
        out.append(float(max(dices)))
    return out


def run_sample(
    key: str,
    *,
    device: Device | str,
    k: int,
    rounds: int,
    quick: bool,
    log,
    strategy: Strategy | str = Strategy.WORST,
) -> dict:
    from napari_unet.loop.simulation import simulate
    from napari_unet.samples import load_sample
    from napari_unet.training import TrainConfig, recommended_spec

    s = load_sample(key)
    spec = recommended_spec(s.label_names, modality=s.image.modality)
    axis = s.image.through_plane_axis
    n_labels = len(s.label_names)
    out: dict = {
        "sample": key,
        "shape": list(s.image.shape),
        "spacing": [round(x, 3) for x in s.image.spacing],
        "slice_axis": axis,
        "labels": s.label_names,
        "spec": {
            "arch": spec.arch,
            "arch_args": spec.arch_args,
            "patch": list(spec.patch_size),
            "context_slices": spec.context_slices,
        },
        "config": TrainConfig().to_dict(),
    }
    t0 = time.perf_counter()
    target = simulate(s.image, s.labels, spec=spec, rounds=1, slices_per_round=5, device=device)
    wall = time.perf_counter() - t0
    out["target"] = {**target.to_dict(), "wall_seconds_incl_setup": round(wall, 2)}
    log(f"{key} target: {json.dumps(out['target']['rounds'][0])[:300]} wall {wall:.1f}s")

    revealed = target.rounds[0].slices
    keep = np.ones(s.image.shape[axis], bool)
    keep[revealed] = False
    img = np.compress(keep, s.image.array, axis=axis)
    tru = np.compress(keep, s.labels.array, axis=axis)
    thr = [best_threshold_dice(img, tru == c) for c in range(1, n_labels + 1)]
    out["baselines"] = {
        "on": "the target run's unrevealed slices",
        "best_threshold_per_class": [round(d, 4) for d, _ in thr],
        "best_threshold_values": [t for _, t in thr],
        "best_threshold_mean": round(float(np.mean([d for d, _ in thr])), 4),
        "multi_otsu_per_class": [round(d, 4) for d in multi_otsu_dice(img, tru, n_labels)],
    }
    out["baselines"]["multi_otsu_mean"] = round(
        float(np.mean(out["baselines"]["multi_otsu_per_class"])), 4
    )
    log(f"{key} baselines: {out['baselines']}")
    d = target.rounds[0].dice
    out["target"]["ratio_vs_best_threshold"] = round(d / out["baselines"]["best_threshold_mean"], 4)
    if not quick:
        t0 = time.perf_counter()
        curve = simulate(
            s.image,
            s.labels,
            spec=spec,
            rounds=rounds,
            slices_per_round=k,
            strategy=strategy,
            device=device,
        )
        out["curve"] = curve.to_dict()
        cum = np.cumsum([r.seconds for r in curve.rounds])
        out["curve"]["points"] = [
            {
                "revealed": r.revealed_slices,
                "dice": r.dice,
                "cumulative_seconds": round(float(c), 2),
            }
            for r, c in zip(curve.rounds, cum, strict=True)
        ]
        # Dice on the slices revealed before a round: at the end of the previous round
        # (its dice_revealed) and after this one (dice_previous). Target: no drop > 0.01.
        drops = [
            round(before.dice_revealed - after.dice_previous, 4)
            for before, after in zip(curve.rounds, curve.rounds[1:], strict=False)
            if before.dice_revealed is not None and after.dice_previous is not None
        ]
        out["curve"]["revealed_dice_drop_per_round"] = drops
        out["curve"]["max_revealed_dice_drop"] = max(drops) if drops else None
        log(f"{key} curve: {out['curve']['points']} ({time.perf_counter() - t0:.0f}s)")
        log(f"{key} drop of Dice on earlier revealed slices per round: {drops}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="target runs and baselines only")
    p.add_argument("--device", default="cpu", choices=Device.values())
    p.add_argument("--strategy", default="worst", choices=Strategy.values())
    p.add_argument("--samples", default="mr_brain,ct_abdomen")
    p.add_argument("--k", type=int, default=2, help="slices per round of the curve")
    p.add_argument("--rounds", type=int, default=4, help="rounds of the curve")
    p.add_argument("--out", default="benchmarks/results/learning_cpu.json")
    args = p.parse_args(argv)

    import monai
    import torch

    def log(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "device": args.device if args.device != "cuda" else torch.cuda.get_device_name(0),
            "load_average_before": list(os.getloadavg()),
            "note": "shared machine: other engineers' jobs were running; timings are noisy",
        },
        "versions": {
            "torch": torch.__version__,
            "monai": monai.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "cases": [],
    }
    for key in args.samples.split(","):
        result["cases"].append(
            run_sample(
                key,
                device=args.device,
                k=args.k,
                rounds=args.rounds,
                quick=args.quick,
                log=log,
                strategy=args.strategy,
            )
        )
    result["machine"]["load_average_after"] = list(os.getloadavg())
    text = json.dumps(result, indent=2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

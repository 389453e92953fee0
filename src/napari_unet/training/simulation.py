"""A simulated user: reveal the truth on a few slices per round, fine-tune, predict, score.

Round r (1-based):

1. choose ``slices_per_round`` new slices along the slice axis — for a model that has
   not been trained yet, evenly spread over the slices with image content; otherwise
   by ``strategy``: "worst" (most misclassified voxels in the current prediction, what
   a user would correct first) or "uncertain" (largest summed softmax entropy, which
   needs no truth); chosen greedily, at least ``gap`` slices apart;
2. fine-tune on them (new slices as data, earlier ones replayed; first round from the
   given model or from scratch) with `finetune_steps`;
3. predict the whole volume and score Dice on the unrevealed slices (``dice``, mean over
   foreground classes, and ``dice_per_class``) and on the revealed ones.

``seconds`` of a round is its wall time: selection + training + prediction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from napari_unet.evaluation.metrics import dice_per_class, mean_dice
from napari_unet.io.volume import Volume
from napari_unet.jobs import Job, Progress, never, run_job
from napari_unet.models.spec import ModelSpec
from napari_unet.training.data import check_same_grid, sparse_volume
from napari_unet.training.trainer import (
    FinetuneResult,
    TrainConfig,
    cpu_threads,
    finetune_steps,
)

STRATEGIES = ("worst", "uncertain")


@dataclass
class RoundResult:
    """Figures of one round (the ``simulate --json`` contract, plus details)."""

    round: int
    revealed_slices: int
    slices: list[int]
    dice: float | None
    dice_per_class: list[float | None]
    dice_revealed: float | None
    dice_previous: float | None
    seconds: float
    train_seconds: float
    predict_seconds: float
    steps: int
    val_dice: float | None = None
    drift: dict[str, Any] | None = None


@dataclass
class SimulationResult:
    """All rounds, and the final model (a `FinetuneResult`, savable with `save_version`)."""

    strategy: str
    slice_axis: int
    rounds: list[RoundResult] = field(default_factory=list)
    final: FinetuneResult | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``strategy``, ``slice_axis``, ``seconds``, ``rounds`` (list)."""
        return {
            "strategy": self.strategy,
            "slice_axis": self.slice_axis,
            "seconds": round(self.seconds, 3),
            "rounds": [asdict(r) for r in self.rounds],
        }


def content_slices(image: np.ndarray, axis: int) -> np.ndarray:
    """Indices along ``axis`` of slices with image content (std > 5 % of the volume's)."""
    moved = np.moveaxis(image, axis, 0).reshape(image.shape[axis], -1)
    std = moved.astype(np.float32).std(axis=1)
    keep = np.flatnonzero(std > 0.05 * float(np.asarray(image, dtype=np.float32).std()))
    return keep if keep.size else np.arange(image.shape[axis])


def evenly_spaced(candidates: np.ndarray, k: int) -> list[int]:
    """``k`` slices at the centres of ``k`` equal shares of ``candidates`` (sorted)."""
    c = np.sort(np.asarray(candidates))
    pos = ((np.arange(k) + 0.5) * c.size / k).astype(int).clip(0, c.size - 1)
    return sorted({int(c[p]) for p in pos})


def pick_slices(scores: np.ndarray, k: int, exclude: set[int], gap: int) -> list[int]:
    """Greedy top-``k`` of per-slice ``scores``, skipping ``exclude`` and keeping ``gap``."""
    chosen: list[int] = []
    for s in np.argsort(-scores, kind="stable"):
        s = int(s)
        if s in exclude or any(abs(s - c) < gap for c in chosen):
            continue
        chosen.append(s)
        if len(chosen) == k:
            break
    return sorted(chosen)


def simulate_steps(
    image: Volume,
    truth: Volume,
    *,
    model: Any = None,
    spec: ModelSpec | None = None,
    rounds: int = 1,
    slices_per_round: int = 5,
    strategy: str = "worst",
    slice_axis: int | None = None,
    config: TrainConfig | None = None,
    finetune_config: TrainConfig | None = None,
    device: str = "auto",
    stop: Callable[[], bool] = never,
) -> Job[SimulationResult]:
    """Play a user who reveals the truth slice by slice, as a long job.

    Args:
        image: the scan, ``(i, j, k)``.
        truth: its full label map (same grid).
        model: starting model (`LoadedModel`), or None for a new one from ``spec``.
        spec: needed when ``model`` is None (see `training.recommended_spec`).
        rounds: number of rounds.
        slices_per_round: slices revealed per round.
        strategy: "worst" or "uncertain".
        slice_axis: None = the spec's, else the scan's through-plane axis.
        config: training options of the first round (and of all, without
            ``finetune_config``).
        finetune_config: training options of later rounds (fine-tuning the previous
            round's model); None = ``config`` with half the budget.
        device: where to train and predict.
        stop: returns True to stop (checked between training steps and rounds).

    Yields:
        Progress of the training steps, ``data`` also holding ``round``.

    Returns:
        SimulationResult (the rounds completed).

    Raises:
        InputError: truth on another grid.
        ValueError: bad options.
    """
    from napari_unet.inference.device import resolve_device
    from napari_unet.models.files import LoadedModel

    check_same_grid(image, truth, what="truth")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if rounds < 1 or slices_per_round < 1:
        raise ValueError(
            f"rounds and slices_per_round must be >= 1, got {rounds!r}, {slices_per_round!r}"
        )
    if model is not None and isinstance(model, LoadedModel):
        spec = model.spec
    if spec is None:
        raise ValueError("give a spec when starting from scratch (model=None)")
    cfg = replace(config or TrainConfig(), device=device)
    later = finetune_config or replace(
        cfg,
        steps=None if cfg.steps is None else max(1, cfg.steps // 2),
        seconds=None if cfg.seconds is None else cfg.seconds / 2,
    )
    later = replace(later, device=device)
    threads = cpu_threads(cfg.threads) if resolve_device(device).type == "cpu" else None
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return (
            yield from _rounds(
                image,
                truth,
                net=model,
                spec=spec,
                rounds=rounds,
                k=slices_per_round,
                strategy=strategy,
                slice_axis=slice_axis,
                cfg=cfg,
                later=later,
                device=device,
                stop=stop,
            )
        )
    finally:
        if threads:
            torch.set_num_threads(old_threads)


def _rounds(
    image: Volume,
    truth: Volume,
    *,
    net: Any,
    spec: ModelSpec,
    rounds: int,
    k: int,
    strategy: str,
    slice_axis: int | None,
    cfg: TrainConfig,
    later: TrainConfig,
    device: str,
    stop: Callable[[], bool],
) -> Job[SimulationResult]:
    from napari_unet.inference.predict import predict_volume
    from napari_unet.inference.preprocess import spec_slice_axis

    slices_per_round = k
    axis = spec_slice_axis(spec, image.through_plane_axis, slice_axis)
    n = image.shape[axis]
    truth_arr = np.asarray(truth.array)
    want_unc = strategy == "uncertain"
    t_start = time.perf_counter()
    result = SimulationResult(strategy=strategy, slice_axis=axis)
    revealed: list[int] = []
    pred = None
    candidates = content_slices(image.array, axis)
    gap = max(1, len(candidates) // (4 * (slices_per_round * rounds + 1)))

    for r in range(1, rounds + 1):
        if stop():
            break
        t0 = time.perf_counter()
        if pred is None and net is not None:
            pred = predict_volume(net, spec, image, uncertainty=want_unc, device=device)
        if pred is None:
            new = evenly_spaced(candidates, slices_per_round)
        else:
            new = pick_slices(
                _slice_scores(pred, truth_arr, axis, want_unc), slices_per_round, set(revealed), gap
            )
        if not new:
            break
        data = sparse_volume(image, truth, spec, slices=new, slice_axis=axis, seed=r)
        replay = (
            [sparse_volume(image, truth, spec, slices=revealed, slice_axis=axis, seed=r + 1000)]
            if revealed
            else []
        )
        job = finetune_steps(
            net, spec, [data], replay=replay, config=cfg if r == 1 else later, stop=stop
        )
        while True:
            try:
                event = next(job)
            except StopIteration as done:
                fr: FinetuneResult = done.value
                break
            event.data["round"] = r
            yield Progress(event.done, event.total, f"round {r}: {event.message}", event.data)
        t1 = time.perf_counter()
        previous = list(revealed)
        revealed = sorted(set(revealed) | set(new))
        net = fr.model
        pred = predict_volume(net, spec, image, uncertainty=want_unc, device=device)
        t2 = time.perf_counter()
        lab = pred.labels.array
        is_rev = np.zeros(n, dtype=bool)
        is_rev[revealed] = True
        per_class = dice_per_class(
            _along(lab, axis, ~is_rev), _along(truth_arr, axis, ~is_rev), spec.out_channels
        )
        rev_dice = mean_dice(
            dice_per_class(
                _along(lab, axis, is_rev), _along(truth_arr, axis, is_rev), spec.out_channels
            )
        )
        prev_dice = None
        if previous:
            is_prev = np.zeros(n, dtype=bool)
            is_prev[previous] = True
            prev_dice = mean_dice(
                dice_per_class(
                    _along(lab, axis, is_prev), _along(truth_arr, axis, is_prev), spec.out_channels
                )
            )
        result.rounds.append(
            RoundResult(
                round=r,
                revealed_slices=len(revealed),
                slices=new,
                dice=mean_dice(per_class),
                dice_per_class=per_class,
                dice_revealed=rev_dice,
                dice_previous=prev_dice,
                seconds=round(t2 - t0, 3),
                train_seconds=round(t1 - t0, 3),
                predict_seconds=round(t2 - t1, 3),
                steps=int(fr.metrics["steps"]),
                val_dice=fr.metrics.get("val_dice"),
                drift=fr.drift,
            )
        )
        result.final = fr
        if fr.metrics.get("stopped"):
            break
    result.seconds = time.perf_counter() - t_start
    return result


def simulate(image: Volume, truth: Volume, **options: Any) -> SimulationResult:
    """Run `simulate_steps` to the end (same arguments) and return its result."""
    return run_job(simulate_steps(image, truth, **options))


def _along(a: np.ndarray, axis: int, keep: np.ndarray) -> np.ndarray:
    return np.compress(keep, a, axis=axis)


def _slice_scores(pred, truth: np.ndarray, axis: int, uncertain: bool) -> np.ndarray:
    others = tuple(a for a in range(3) if a != axis)
    if uncertain:
        return np.asarray(pred.uncertainty.array, dtype=np.float64).sum(axis=others)
    return (np.asarray(pred.labels.array) != truth).sum(axis=others).astype(np.float64)

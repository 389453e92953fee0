"""A simulated user driving the `Loop`: reveal the truth on a few slices per round,
fine-tune, predict, score — the same loop the panel and the CLI drive.

Round r (1-based):

1. choose ``slices_per_round`` new slices along the slice axis — for a model that has
   not been trained yet, evenly spread over the slices with image content; otherwise
   by ``strategy`` (a `typing.Strategy`): "worst" (most misclassified voxels in the
   current prediction, what a user would correct first) or "uncertain" (largest summed
   softmax entropy, which needs no truth), chosen greedily, at least ``gap`` slices
   apart; or "random", the control: uniformly among the unrevealed slices with image
   content (a numpy generator seeded by ``seed``, no gap);
2. write the truth into the loop's labels on them and mark them reviewed, then
   `Loop.finetune` (new slices as data, earlier ones replayed; first round from the given
   model or from scratch), the new version written to a scratch folder;
3. predict the whole volume, merge it (reviewed slices stay) and score Dice on the
   unrevealed slices (``dice``, mean over foreground classes, and ``dice_per_class``)
   and on the revealed ones.

``seconds`` of a round is its wall time: selection + training + prediction.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.evaluation.metrics import dice_per_class, mean_dice
from napari_unet.io.volume import Volume
from napari_unet.jobs import Job, Progress, never, run_job
from napari_unet.loop.core import Loop
from napari_unet.loop.steps import TrainedVersion
from napari_unet.models.spec import ModelSpec
from napari_unet.training.config import TrainConfig, cpu_threads, torch_threads
from napari_unet.training.data import check_same_grid
from napari_unet.training.scoring import DriftCheck
from napari_unet.typing import Device, Strategy

#: The strategy names (`typing.Strategy` values).
STRATEGIES = Strategy.values()


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
    drift: DriftCheck | None = None
    dice_held_out: float | None = None
    dice_held_out_per_class: list[float | None] | None = None


@dataclass
class SimulationResult:
    """All rounds, and the final model version (in memory: its file was in a scratch
    folder; write it with `save_final`)."""

    strategy: Strategy
    slice_axis: int
    rounds: list[RoundResult] = field(default_factory=list)
    final: TrainedVersion | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``strategy``, ``slice_axis``, ``seconds``, ``rounds`` (list)."""
        return {
            "strategy": str(self.strategy),
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
    strategy: Strategy | str = Strategy.WORST,
    slice_axis: int | None = None,
    config: TrainConfig | None = None,
    finetune_config: TrainConfig | None = None,
    device: Device | str = Device.AUTO,
    seed: int | None = None,
    held_out: Sequence[int] | None = None,
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
        strategy: a `Strategy`: "worst", "uncertain" or "random" (see the module
            docstring).
        slice_axis: None = the spec's, else the scan's through-plane axis.
        config: training options of the first round (and of all, without
            ``finetune_config``).
        finetune_config: training options of later rounds (fine-tuning the previous
            round's model); None = ``config`` with half the budget.
        device: a `Device`: where to train and predict.
        seed: seeds the "random" strategy; None = ``config.seed`` (default 0).
        held_out: slice indices (along the slice axis) never revealed, by any strategy
            or round, and scored every round (``dice_held_out``): a fixed test set.
        stop: returns True to stop (checked between training steps and rounds).

    Yields:
        Progress of the training steps, ``data`` also holding ``round``.

    Returns:
        SimulationResult (the rounds completed).

    Raises:
        InputError: truth on another grid.
        ValueError: bad options (an unknown strategy or device names the allowed ones).
    """
    from napari_unet.inference.device import resolve_device

    check_same_grid(image, truth, what="truth")
    strategy = Strategy.check(strategy, "strategy")
    Device.check(device, "device")
    spec = _check_start(model, spec, rounds, slices_per_round)
    cfg, later = _round_configs(config, finetune_config, device)
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    threads = cpu_threads(cfg.threads) if resolve_device(device).type == "cpu" else None
    with torch_threads(threads):
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
                rng=rng,
                held_out=held_out,
                stop=stop,
            )
        )


def _check_start(
    model: Any, spec: ModelSpec | None, rounds: int, slices_per_round: int
) -> ModelSpec:
    """The spec to train (the model's own for a `LoadedModel`); ValueError for bad
    counts or no spec to start from scratch."""
    from napari_unet.models.files import LoadedModel

    if rounds < 1 or slices_per_round < 1:
        raise ValueError(
            f"rounds and slices_per_round must be >= 1, got {rounds!r}, {slices_per_round!r}"
        )
    if model is not None and isinstance(model, LoadedModel):
        spec = model.spec
    if spec is None:
        raise ValueError("give a spec when starting from scratch (model=None)")
    return spec


def _round_configs(
    config: TrainConfig | None, finetune_config: TrainConfig | None, device: Device | str
) -> tuple[TrainConfig, TrainConfig]:
    """Training options of the first round and of later ones (default: the first
    round's with half the budget), both on ``device``."""
    cfg = replace(config or TrainConfig(), device=device)
    later = finetune_config or replace(
        cfg,
        steps=None if cfg.steps is None else max(1, cfg.steps // 2),
        seconds=None if cfg.seconds is None else cfg.seconds / 2,
    )
    return cfg, replace(later, device=device)


def _rounds(
    image: Volume,
    truth: Volume,
    *,
    net: Any,
    spec: ModelSpec,
    rounds: int,
    k: int,
    strategy: Strategy,
    slice_axis: int | None,
    cfg: TrainConfig,
    later: TrainConfig,
    device: Device | str,
    rng: np.random.Generator,
    held_out: Sequence[int] | None,
    stop: Callable[[], bool],
) -> Job[SimulationResult]:
    from napari_unet.inference.preprocess import spec_slice_axis

    axis = spec_slice_axis(spec, image.through_plane_axis, slice_axis)
    held = _check_held_out(held_out, image.shape[axis], axis)
    truth_arr = np.asarray(truth.array)
    want_unc = strategy == Strategy.UNCERTAIN
    t_start = time.perf_counter()
    result = SimulationResult(strategy=strategy, slice_axis=axis)
    candidates = np.setdiff1d(content_slices(image.array, axis), held)
    gap = max(1, len(candidates) // (4 * (k * rounds + 1)))
    with tempfile.TemporaryDirectory(prefix="napari-unet-simulate-") as scratch:
        loop = Loop(image, np.zeros(image.shape, np.uint8), slice_axis=axis,
                    models_folder=Path(scratch), device=device)  # fmt: skip
        if net is not None:
            loop.set_model(net)
        pred = None
        for r in range(1, rounds + 1):
            if stop():
                break
            t0 = time.perf_counter()
            if pred is None and loop.model is not None:
                pred = yield from _predict(loop, want_unc)
            new = _choose(pred, truth_arr, axis, k, strategy, set(loop.reviewed) | set(held),
                          gap, candidates, rng)  # fmt: skip
            if not new:
                break
            previous = sorted(loop.reviewed)
            _reveal(loop, truth_arr, new)
            trained = yield from _with_round(r, loop.finetune(
                cfg if r == 1 else later, spec=spec, seed=r, stop=stop))  # fmt: skip
            loop.add_version(trained)
            t1 = time.perf_counter()
            pred = yield from _predict(loop, want_unc)
            t2 = time.perf_counter()
            result.rounds.append(_score(r, pred, truth_arr, loop, previous, new, trained,
                                        (t0, t1, t2), held))  # fmt: skip
            result.final = trained
            if trained.metrics.stopped:
                break
        result.seconds = time.perf_counter() - t_start
        return result


def _predict(loop: Loop, uncertainty: bool) -> Job[Any]:
    """The whole volume (also reviewed slices, to score them), merged into the labels."""
    pred = yield from loop.predict(only_unreviewed=False, uncertainty=uncertainty)
    loop.merge(pred)
    return pred


def _choose(pred, truth, axis, k, strategy, revealed, gap, candidates, rng) -> list[int]:
    if pred is None:
        return evenly_spaced(candidates, k)
    if strategy == Strategy.RANDOM:
        return random_slices(candidates, k, revealed, rng)
    scores = _slice_scores(pred, truth, axis, strategy == Strategy.UNCERTAIN)
    return pick_slices(scores, k, revealed, gap)


def random_slices(
    candidates: np.ndarray, k: int, exclude: set[int], rng: np.random.Generator
) -> list[int]:
    """``k`` of ``candidates`` not in ``exclude``, uniformly at random (fewer if fewer
    are left), sorted."""
    pool = np.array([int(c) for c in candidates if int(c) not in exclude], dtype=np.int64)
    if pool.size == 0:
        return []
    return sorted(int(s) for s in rng.choice(pool, size=min(k, pool.size), replace=False))


def _reveal(loop: Loop, truth: np.ndarray, slices: list[int]) -> None:
    """The user corrects these slices: the truth goes into the loop's labels."""
    index = [slice(None)] * 3
    index[loop.slice_axis] = slices
    loop.labels[tuple(index)] = truth[tuple(index)]
    loop.mark_reviewed(slices)


def _with_round(r: int, job: Job[Any]) -> Job[Any]:
    while True:
        try:
            event = next(job)
        except StopIteration as done:
            return done.value
        event.data["round"] = r
        yield Progress(event.done, event.total, f"round {r}: {event.message}", event.data)


def _dice_on(lab, truth, axis, rows, n_classes) -> list[float | None]:
    keep = np.zeros(lab.shape[axis], dtype=bool)
    keep[rows] = True
    return dice_per_class(_along(lab, axis, keep), _along(truth, axis, keep), n_classes)


def _check_held_out(held_out: Sequence[int] | None, n: int, axis: int) -> list[int]:
    """The held-out slices, sorted and unique; ValueError for one outside ``[0, n)``."""
    held = sorted({int(s) for s in held_out or ()})
    if held and (held[0] < 0 or held[-1] >= n):
        raise ValueError(
            f"held_out slices must be in [0, {n}) along axis {axis}, got {held[0]}…{held[-1]}"
        )
    return held


def _score(r, pred, truth, loop, previous, new, trained, times, held) -> RoundResult:
    t0, t1, t2 = times
    lab, axis = pred.labels.array, loop.slice_axis
    n_classes = loop.model.spec.out_channels
    revealed = sorted(loop.reviewed)
    unrevealed = sorted(set(range(lab.shape[axis])) - set(revealed))
    per_class = _dice_on(lab, truth, axis, unrevealed, n_classes)
    held_dice = _dice_on(lab, truth, axis, held, n_classes) if held else None
    m = trained.metrics
    return RoundResult(
        round=r,
        revealed_slices=len(revealed),
        slices=new,
        dice=mean_dice(per_class),
        dice_per_class=per_class,
        dice_revealed=mean_dice(_dice_on(lab, truth, axis, revealed, n_classes)),
        dice_previous=mean_dice(_dice_on(lab, truth, axis, previous, n_classes))
        if previous
        else None,
        seconds=round(t2 - t0, 3),
        train_seconds=round(t1 - t0, 3),
        predict_seconds=round(t2 - t1, 3),
        steps=int(m.steps),
        val_dice=m.val_dice,
        drift=m.drift_check,
        dice_held_out=mean_dice(held_dice) if held else None,
        dice_held_out_per_class=held_dice if held else None,
    )


def save_final(result: SimulationResult, path: str | Path) -> str:
    """Write the last round's model version (with its lineage) to ``path``; its hash."""
    from napari_unet.models.files import save_model

    if result.final is None:
        raise ValueError("the simulation ended before any round was trained")
    loaded = result.final.model
    return save_model(path, loaded.model, loaded.spec, loaded.lineage)


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

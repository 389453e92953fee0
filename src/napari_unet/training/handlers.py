"""The handlers of a fine-tuning run, in the manner of MONAI's engine handlers.

`trainer._train` runs iterations (MONAI's ``SupervisedTrainer._iteration``); what
happens around them lives here, each piece a small object or function over the run
(`trainer.TrainRun`) and its mutable `TrainState` (ignite's ``engine.state``):

* `budget_used` / `should_end`: the budget (steps or seconds) and the user's stop flag
  (MONAI's ``EarlyStopHandler``, with a budget instead of patience);
* `BestState`: validation every ``val_every`` steps and at the end, keeping the best
  state (``ValidationHandler`` with ``CheckpointSaver(save_key_metric=True)``);
* `log_step`: the progress event with ETA and the logged history (``StatsHandler``);
* `guarded` / `fall_back_to_cpu`: out of memory on a GPU moves the run to the CPU and
  redoes the step (the inference `Runner`'s fallback, for training).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from napari_unet.evaluation.metrics import dice_per_class, mean_dice
from napari_unet.jobs import Progress
from napari_unet.training.config import TrainConfig

if TYPE_CHECKING:
    from napari_unet.training.trainer import TrainRun

R = TypeVar("R")


@dataclass
class TrainState:
    """What changes while a run goes on.

    Attributes:
        step: optimizer steps done.
        loss: the last step's loss.
        val_dice: the latest validation Dice (None before the first, or without
            validation voxels).
        stopped: the user's stop flag ended the run.
        started: ``time.perf_counter()`` when training started (after the set-up).
        history: one dict per logged step (see `log_step`).
    """

    step: int = 0
    loss: float = float("nan")
    val_dice: float | None = None
    stopped: bool = False
    started: float = field(default_factory=time.perf_counter)
    history: list[dict[str, Any]] = field(default_factory=list)

    def elapsed(self) -> float:
        """Training seconds so far."""
        return time.perf_counter() - self.started


def budget_used(step: int, elapsed: float, cfg: TrainConfig) -> float:
    """Share of the budget used after ``step`` steps and ``elapsed`` s (≥ 1: done)."""
    p = 0.0
    if cfg.steps is not None:
        p = max(p, step / cfg.steps)
    if cfg.seconds is not None:
        p = max(p, elapsed / cfg.seconds)
    return p


def should_end(progress: float, state: TrainState, stop: Callable[[], bool]) -> bool:
    """Whether the run ends before the next step: budget spent, or a stop request
    (which sets ``state.stopped``)."""
    if progress >= 1.0:
        return True
    if stop():
        state.stopped = True
        return True
    return False


def plan(step: int, elapsed: float, cfg: TrainConfig) -> tuple[int, float]:
    """(planned total steps, estimated seconds left)."""
    per_step = elapsed / max(step, 1)
    total = cfg.steps if cfg.steps is not None else 0
    if cfg.seconds is not None:
        by_time = int(cfg.seconds / max(per_step, 1e-9))
        total = min(total, by_time) if total else by_time
    total = max(total, step)
    return total, max(0.0, (total - step) * per_step)


def log_step(run: TrainRun, state: TrainState) -> Progress:
    """The progress event after a step; every ``val_every // 5`` steps (and the first)
    also a ``history`` entry (``step``, ``loss``, ``val_dice``, ``elapsed``, ``eta``,
    ``lr``)."""
    cfg, step = run.cfg, state.step
    elapsed = state.elapsed()
    total, eta = plan(step, elapsed, cfg)
    record = {
        "step": step,
        "loss": state.loss,
        "val_dice": state.val_dice,
        "elapsed": elapsed,
        "eta": eta,
    }
    if step % max(1, cfg.val_every // 5) == 0 or step == 1:
        state.history.append({**record, "lr": run.opt.param_groups[0]["lr"], "eta": round(eta, 2)})
    message = f"step {step}/{total} loss {state.loss:.3f}"
    if run.messages:
        message += f" ({run.messages[-1]})"
    return Progress(step, total, message, record)


def guarded(run: TrainRun, step: Callable[[], R], what: str) -> R:
    """``step()``; after out of memory on a GPU the run moves to the CPU
    (`fall_back_to_cpu`) and ``step`` is redone there.

    ``step`` must read the run's device and precision at call time and be safe to redo
    (zero the gradients first). Buffers it changes before failing (batch-norm running
    statistics of a forward pass whose backward then failed) are restored first.

    Raises:
        MemoryError: out of memory on the CPU (the message names ``what``).
    """
    from napari_unet.inference.device import is_oom

    saved = {name: b.detach().clone() for name, b in run.net.named_buffers()}
    while True:
        try:
            return step()
        except Exception as e:
            if not is_oom(e):
                raise
            fall_back_to_cpu(run, e, what)
            with torch.no_grad():
                for name, b in run.net.named_buffers():
                    b.copy_(saved[name])


def fall_back_to_cpu(run: TrainRun, error: BaseException, what: str) -> None:
    """Move a run to the CPU in float32 after ``error``: network, optimizer state,
    loss; the gradient scaler is switched off. Recorded in ``run.messages`` and issued
    as a ``RuntimeWarning``.

    Raises:
        MemoryError: the run is on the CPU already, or is one process of a
            data-parallel group (the message names ``what`` and a remedy).
    """
    from napari_unet.inference.device import CPU, empty_cache

    if run.dev == CPU:
        raise MemoryError(
            f"out of memory on the CPU {what}; lower batch_size or patch_size in the "
            "training options, or free memory"
        ) from error
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # one process of a data-parallel group cannot leave its GPU alone
        raise MemoryError(
            f"out of memory on {run.dev} {what} in a multi-process run; lower batch_size "
            "or patch_size in the training options"
        ) from error
    old = run.dev
    run.opt.zero_grad(set_to_none=True)
    run.net.to(CPU)  # the same Parameter objects: the optimizer keeps its references
    run.loss_fn.to(CPU)
    for param_state in run.opt.state.values():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                param_state[key] = value.to(CPU)
    run.dev, run.amp = CPU, None
    run.scaler = torch.amp.GradScaler("cuda", enabled=False)
    empty_cache(old)
    message = f"out of memory on {old} {what}: training goes on on the CPU (slower)"
    run.messages.append(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


class BestState:
    """Validation on the held-out voxels, keeping the best state on the CPU.

    Only validations after ``cfg.best_after`` of the budget compete; at the end the
    final state is preferred unless an earlier one beat it by more than
    ``cfg.best_margin``. Without validation voxels the final state is kept.
    """

    def __init__(self, run: TrainRun) -> None:
        self.state_dict = snapshot(run.net)
        self.score = -math.inf
        self.dice: float | None = None
        self.per_class: list[float | None] | None = None
        self.step = 0

    def after_step(self, run: TrainRun, state: TrainState) -> None:
        """Validate every ``val_every`` steps (the network goes back to training)."""
        if state.step % run.cfg.val_every == 0:
            guarded(run, lambda: self.validate(run, state), "validating")
            run.net.train()

    def validate(self, run: TrainRun, state: TrainState) -> None:
        """Recalibrate batch norm, score the held-out voxels, keep the state if best."""
        cfg = run.cfg
        if cfg.bn_batches:
            recalibrate_batchnorm(run.net, run.sampler, cfg.bn_batches, run.dev, run.amp)
        if not run.val_items:
            return
        per_class = validate(run.net, run.val_items, run.dev, run.amp, run.spec.out_channels)
        state.val_dice = mean_dice(per_class)
        score = -math.inf if state.val_dice is None else state.val_dice
        late = budget_used(state.step, state.elapsed(), cfg) >= cfg.best_after
        if late and (score > self.score or self.dice is None):
            self.score, self.dice, self.per_class = score, state.val_dice, per_class
            self.step = state.step
            self.state_dict.update(snapshot(run.net))

    def finish(self, run: TrainRun, state: TrainState) -> None:
        """The last validation, the final-versus-best choice, and the chosen state
        loaded into the network (eval mode, on the CPU)."""
        cfg, net = run.cfg, run.net
        if state.step % cfg.val_every != 0 or (state.stopped and not run.val_items):
            guarded(run, lambda: self.validate(run, state), "validating")
        final_pc = (
            guarded(
                run,
                lambda: validate(net, run.val_items, run.dev, run.amp, run.spec.out_channels),
                "validating",
            )
            if run.val_items
            else None
        )
        final = None if final_pc is None else mean_dice(final_pc)
        # prefer the final state unless clearly beaten
        if final is not None and (self.dice is None or final >= self.dice - cfg.best_margin):
            self.dice, self.per_class, self.step = final, final_pc, state.step
            self.state_dict.update(snapshot(net))
        if not run.val_items or self.dice is None:
            self.state_dict.update(snapshot(net))
            self.step = state.step
        net.load_state_dict(self.state_dict)
        net.eval().cpu()


@torch.no_grad()
def recalibrate_batchnorm(net, sampler, n_batches: int, dev, amp) -> None:
    """Recompute batch-norm running statistics over ``n_batches`` fresh batches."""
    from napari_unet.inference.device import autocast

    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    for _ in range(n_batches):
        x, _, _ = sampler.sample()
        with autocast(dev, amp):
            net(x.to(dev))
    for m, mom in zip(norms, momenta, strict=True):
        m.momentum = mom


def snapshot(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the network's state."""
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


@torch.no_grad()
def validate(net, items, dev, amp, n_classes: int) -> list[float | None]:
    """Dice per foreground class over all validation voxels (pooled)."""
    from napari_unet.inference.device import autocast

    net.eval()
    preds, truths = [], []
    for x, y, m in items:
        with autocast(dev, amp):
            logits = net(x.to(dev))
        p = logits.argmax(1).cpu()
        preds.append(p[m])
        truths.append(y[m])
    return dice_per_class(torch.cat(preds), torch.cat(truths), n_classes)

"""Data-parallel fine-tuning (PyTorch DDP) that reproduces the single-process run.

`ddp_finetune_steps` has `trainer.finetune_steps`'s arguments and result, and runs the
trainer itself, unchanged, in every process of an initialised process group: the model
it is given is wrapped from outside (`GlobalBatchNet`), so the sampler, augmentation,
masked loss, schedule, validation, best-state choice and lineage are the trainer's own.

How one step stays the single-process step with the same global batch:

* every process builds the same `PatchSampler` and augmentation (same seed), so each
  draws the *same* global batch of ``config.batch_size`` patches;
* `GlobalBatchNet` runs the network (through `DistributedDataParallel`) on this
  process's contiguous share of the batch only, all-gathers the logits of the others
  (no gradient) and returns the whole batch's logits, so the trainer's loss — soft Dice
  pooled over the batch plus class-weighted cross-entropy averaged over the labelled
  voxels, neither of which splits into per-process means — is computed on the global
  batch exactly as in one process;
* backward reaches this process's own logits only; DDP averages the parameter
  gradients over the W processes, and a gradient scale of W on the local logits turns
  that average into the sum, which is the global batch's gradient.

So the processes hold identical weights after every step (validation and the choice of
the best state agree without communication), and W processes give, within float
rounding, the weights one process gives. The cost of exactness: each process crops and
augments the whole global batch (CPU work, small next to the network on a GPU) and
all-gathers logits (``batch × classes × patch`` floats per step).

Batch norm: on CUDA its layers become `SyncBatchNorm` (statistics over the global
batch, as in one process); on the CPU (gloo) they keep per-process statistics, which
differ from one process's. The recommended network has no normalisation layers.

The time budget (``seconds``) is refused: processes with their own clocks would stop
after different steps. A stop request is agreed on by all processes (any one stops all).
`launch` starts ``nproc`` processes on this machine through torchrun's launcher.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist

from napari_unet.jobs import Job, never
from napari_unet.training.config import TrainConfig
from napari_unet.training.data import SparseVolume


@dataclass(frozen=True)
class DistContext:
    """This process's place in the group.

    Attributes:
        rank: global rank (0 writes files and prints).
        world_size: processes in all.
        local_rank: rank on this machine (picks the GPU).
        backend: "gloo" or "nccl".
        device: "cpu" or "cuda:LOCAL_RANK".
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: str


def launched() -> bool:
    """Whether this process was started by torchrun as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_process_group(device: str = "auto") -> DistContext:
    """Join the process group torchrun set up (env://): NCCL on GPUs, gloo on the CPU.

    Args:
        device: "auto" (CUDA when there is a GPU for every local process), "cpu", "cuda".
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    use_cuda = device.startswith("cuda") or (device == "auto" and gpus >= local_world)
    if use_cuda:
        if gpus < local_world:
            raise ValueError(
                f"--nproc {local_world} on CUDA needs {local_world} GPUs, this machine has {gpus}"
            )
        torch.cuda.set_device(local_rank)
        backend, where = "nccl", f"cuda:{local_rank}"
    else:
        backend, where = "gloo", "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend, where)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``factor``."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


class GlobalBatchNet(torch.nn.Module):
    """A network that computes the global batch's logits from its share (module docstring).

    With gradients in training mode it runs its rank's contiguous share of the batch
    through `DistributedDataParallel` (made on first use, once the network is on its
    device) and all-gathers the rest; without gradients (validation, batch-norm
    recalibration, drift check) or in eval mode it is the plain network.

    Args:
        module: the network.
        rank: this process's rank.
        world_size: processes in all.
    """

    def __init__(self, module: torch.nn.Module, rank: int, world_size: int) -> None:
        super().__init__()
        self.module = module
        self.rank, self.world_size = int(rank), int(world_size)
        self.__dict__["_ddp"] = None  # not a sub-module: kept out of the state dict

    def __deepcopy__(self, memo):
        # the trainer copies its parent; the copy gets its own DDP on first use
        return GlobalBatchNet(copy.deepcopy(self.module, memo), self.rank, self.world_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()) or self.world_size == 1:
            return self.module(x)
        n = x.shape[0]
        if n % self.world_size:
            raise ValueError(
                f"batch_size {n} must be a multiple of the {self.world_size} processes"
            )
        share = n // self.world_size
        if self._ddp is None:
            from torch.nn.parallel import DistributedDataParallel

            ids = [x.device.index] if x.device.type == "cuda" else None
            self.__dict__["_ddp"] = DistributedDataParallel(self.module, device_ids=ids)
        mine = self._ddp(x[self.rank * share : (self.rank + 1) * share])
        parts = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(parts, mine.detach().contiguous())
        parts[self.rank] = _ScaleGrad.apply(mine, float(self.world_size))
        return torch.cat(parts)


def agreed_stop(stop: Callable[[], bool], device: str = "cpu") -> Callable[[], bool]:
    """A stop flag all processes agree on: True everywhere as soon as one says True."""

    def check() -> bool:
        flag = torch.tensor([1.0 if stop() else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    return check


def ddp_finetune_steps(
    model: Any,
    spec: Any,
    data: Sequence[SparseVolume],
    *,
    replay: Sequence[SparseVolume] = (),
    config: TrainConfig | None = None,
    stop: Callable[[], bool] = never,
) -> Job[Any]:
    """`trainer.finetune_steps` over all processes of the group (module docstring).

    Call it in every process with the same arguments (the same data, in the same
    order). Without an initialised group of more than one process it is
    `finetune_steps` itself.

    Args:
        model: the parent (`LoadedModel` or ``torch.nn.Module``) or None for a new one.
        spec: its ModelSpec.
        data: training volumes, identical in every process.
        replay: previously reviewed volumes.
        config: ``batch_size`` is the global batch (a multiple of the processes);
            a step budget, not ``seconds``.
        stop: returns True to stop (any process stops all).

    Returns:
        `FinetuneResult` (identical in every process) with the plain network and the
        parent's hash.

    Raises:
        ValueError: ``seconds`` given; a batch that does not split evenly.
    """
    from napari_unet.models.build import build_model
    from napari_unet.models.files import LoadedModel
    from napari_unet.training.trainer import finetune_steps

    cfg = config or TrainConfig()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return (yield from finetune_steps(model, spec, data, replay=replay, config=cfg,
                                          stop=stop))  # fmt: skip
    world, rank = dist.get_world_size(), dist.get_rank()
    if cfg.seconds is not None:
        raise ValueError("training on several processes needs a step budget (--steps), "
                         "not --seconds: every process must stop after the same step")  # fmt: skip
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the {world} processes")
    parent_hash = model.hash if isinstance(model, LoadedModel) else ""
    net = model.model if isinstance(model, LoadedModel) else model
    if net is None:
        torch.manual_seed(cfg.seed)  # the trainer's own initialisation of a new network
        net = build_model(spec)
    else:
        net = copy.deepcopy(net)
    plain = net
    if str(cfg.device).startswith("cuda"):  # batch statistics over the global batch
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(net))
    wrapped = GlobalBatchNet(net, rank, world)
    flag_device = cfg.device if dist.get_backend() == "nccl" else "cpu"
    result = yield from finetune_steps(wrapped, spec, data, replay=replay, config=cfg,
                                       stop=agreed_stop(stop, flag_device))  # fmt: skip
    trained = result.model.module if isinstance(result.model, GlobalBatchNet) else result.model
    plain.load_state_dict(trained.state_dict())  # the spec's own layers (no SyncBatchNorm)
    result.model = plain.eval().cpu()
    result.parent_hash = parent_hash
    return result


def per_process_config(config: TrainConfig, ctx: DistContext) -> TrainConfig:
    """The config one process runs with: its device, and CPU threads shared out."""
    threads = config.threads
    if ctx.device == "cpu" and threads is None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
        threads = max(1, (os.cpu_count() or 1) // max(local, 1))
    return replace(config, device=ctx.device, threads=threads)


def launch(args: Sequence[str], nproc: int, *, module: str = "napari_unet.cli") -> int:
    """Run ``python -m MODULE ARGS`` in ``nproc`` processes on this machine (torchrun).

    The processes find each other through a rendezvous on localhost; their output goes
    to this process's terminal. Multi-node runs use ``torchrun`` itself (README).

    Returns:
        0 when every process succeeded, else the exit status of the first that failed.
    """
    import logging
    import sys
    import uuid

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=int(nproc),
        run_id=f"napari-unet-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,
    )
    try:
        elastic_launch(config, sys.executable)("-m", module, *args)
    except Exception as e:  # torch's ChildFailedError
        failures = getattr(e, "failures", None) or {}
        first = min(failures.values(), key=lambda f: getattr(f, "timestamp", 0), default=None)
        code = getattr(first, "exitcode", None)
        return int(code) if isinstance(code, int) and code > 0 else 1
    return 0

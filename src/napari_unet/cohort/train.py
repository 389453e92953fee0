"""Fine-tune one model version on many labelled volumes (one process or DDP).

Each case brings a scan and a label map on its grid, and says which voxels count:

* full labels (nothing else given): every voxel;
* reviewed slices (``slices = "AXIS:I,J,..."``, e.g. from the review queue): only those;
* an ignore label (``ignore_label = V``): every voxel whose value is not V.

Every case becomes a `training.SparseVolume` (its own held-out validation bands), and
`training.finetune_steps` trains on all of them together — the same masked loss,
sampler (volumes mixed by their labelled voxels), schedule and lineage as the
single-scan loop; the lineage names every case. Over several processes
(`training.distributed`, launched by ``torchrun``) every process loads every case and
rank 0 writes the file.

Memory: all cases are held in memory at once (normalised float32 scans plus masks).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_unet.cohort.manifest import Case
from napari_unet.errors import InputError
from napari_unet.jobs import Cancelled, Job, Progress, never


@dataclass(frozen=True)
class TrainingCase:
    """One labelled volume of a cohort.

    Attributes:
        id: names the case in the lineage.
        image: the scan (NIfTI, DICOM file or folder).
        labels: its label map (same grid).
        slices: reviewed slice indices along ``slice_axis`` (None: no restriction).
        slice_axis: the axis of ``slices`` (None: the scan's through-plane axis).
        ignore_label: the value meaning "not labelled", or None.
    """

    id: str
    image: str
    labels: str
    slices: tuple[int, ...] | None = None
    slice_axis: int | None = None
    ignore_label: int | None = None


@dataclass
class CohortVersion:
    """A model version trained on a cohort.

    Attributes:
        path: the ``.safetensors`` file (written by rank 0 only).
        hash: its content hash.
        parent: the parent's hash (None for a new model).
        metrics: the trainer's metrics (``val_dice``, ``steps``, ``seconds`` …).
        cases: the ids trained on.
        model: the `LoadedModel` read back from ``path`` (None on other ranks).
    """

    path: Path
    hash: str
    parent: str | None
    metrics: dict[str, Any]
    cases: list[str] = field(default_factory=list)
    model: Any = None


def parse_slices(text: str, where: str) -> tuple[int, list[int]]:
    """``"AXIS:I,J,..."`` → (axis, sorted indices); InputError naming ``where``.

    Indices may also be separated by ``;`` or spaces (a CSV cell then needs no quotes).
    """
    axis_text, sep, rest = str(text).partition(":")
    try:
        axis = int(axis_text)
        slices = sorted({int(s) for s in re.split(r"[,; ]", rest) if s.strip()})
    except ValueError:
        raise InputError(f"{where}: slices {text!r}: expected AXIS:I,J,... with integers") from None
    if not sep or not slices or axis not in (0, 1, 2) or min(slices) < 0:
        raise InputError(f"{where}: slices {text!r}: expected AXIS:I,J,... (e.g. 2:40,80,120)")
    return axis, slices


def training_cases(cases: Sequence[Case], *, ignore_label: int | None = None) -> list[TrainingCase]:
    """Training cases from manifest cases (each needs ``labels``).

    Args:
        cases: from `manifest.read_manifest`.
        ignore_label: the ignore label of cases that do not give their own.
    """
    out = []
    for case in cases:
        if not case.labels:
            raise InputError(f"case {case.id} ({case.image}): no labels given to train on")
        axis, slices = parse_slices(case.slices, f"case {case.id}") if case.slices else (None, None)
        label = case.ignore_label if case.ignore_label is not None else ignore_label
        out.append(TrainingCase(case.id, case.image, case.labels,
                                tuple(slices) if slices else None, axis, label))  # fmt: skip
    if not out:
        raise InputError("no case to train on")
    return out


def _load_case(case: TrainingCase, n_classes: int | None):
    """(image, labels as the smallest integer type, PairCheck) of one case, checked."""
    import numpy as np

    from napari_unet.io.reader import load_volume
    from napari_unet.training.data import check_same_grid, check_training_pair

    image = load_volume(case.image)
    labels = load_volume(case.labels)
    what = f"labels of case {case.id}"
    check_same_grid(image, labels, what=what)
    if case.slices is not None:
        axis = image.through_plane_axis if case.slice_axis is None else case.slice_axis
        bad = [s for s in case.slices if s >= image.shape[axis]]
        if bad:
            raise InputError(f"case {case.id}: slice {bad[0]} outside 0..{image.shape[axis] - 1}"
                             f" along axis {axis}")  # fmt: skip
    check = check_training_pair(image, labels, n_classes=n_classes, ignore_label=case.ignore_label,
                                slices=case.slices, slice_axis=case.slice_axis,
                                what=what)  # fmt: skip
    dtype = np.min_scalar_type(max(check.top_label, case.ignore_label or 0, 1))
    compact = np.asarray(labels.array).astype(dtype)
    return image, labels.with_array(compact, source=case.labels), check


def cohort_finetune_steps(
    model: Any,
    cases: Sequence[TrainingCase],
    *,
    out: str | os.PathLike,
    config: Any = None,
    spec: Any = None,
    label_names: Sequence[str] | None = None,
    note: str = "",
    seed: int = 0,
    distributed: bool = False,
    warn: Callable[[str], None] | None = None,
    stop: Callable[[], bool] = never,
) -> Job[CohortVersion]:
    """Train one version on every case, as a long job.

    Args:
        model: the parent `LoadedModel`, or None to train a new network.
        cases: the labelled volumes.
        out: the new version's file.
        config: a `training.TrainConfig` (default: the recipe's).
        spec: a new network's spec (default: the recommended one for the first scan's
            modality, with ``label_names`` or label1… for the highest label found).
        label_names: class names of a new network.
        note: a lineage note.
        seed: seeds each case's validation bands (case n: seed + n) and the sampling.
        distributed: train over the initialised process group (`training.distributed`);
            rank 0 writes ``out``.
        warn: receives one-line warnings (e.g. a case with no foreground).
        stop: returns True to stop; the best state so far is kept.

    Yields:
        Progress while loading ("loading N/M") and then the trainer's steps.
    """
    from napari_unet.training import TrainConfig, sparse_volume
    from napari_unet.training.versions import save_version

    cfg = config or TrainConfig()
    n_classes = len(model.spec.labels) if model is not None else None
    if n_classes is None and spec is not None:
        n_classes = len(spec.labels)
    pairs = []
    for n, case in enumerate(cases):
        if stop():
            raise Cancelled("training on the cohort was cancelled while loading")
        pairs.append(_load_case(case, n_classes))
        for message in pairs[-1][2].warnings:
            if warn is not None:
                warn(f"case {case.id}: {message}")
        yield Progress(n + 1, len(cases), f"loading: case {n + 1}/{len(cases)}", {})
    if model is not None:
        spec = model.spec
    elif spec is None:
        spec = _new_spec(pairs, label_names)
    volumes = []
    for n, (case, (image, labels, _)) in enumerate(zip(cases, pairs, strict=True)):
        volumes.append(sparse_volume(image, labels, spec, slices=case.slices,
                                     slice_axis=case.slice_axis, ignore_label=case.ignore_label,
                                     seed=seed + n, name=case.id))  # fmt: skip
    del pairs
    if distributed:
        from napari_unet.training.distributed import ddp_finetune_steps as train
    else:
        from napari_unet.training import finetune_steps as train
    result = yield from train(model, spec, volumes, config=cfg, stop=stop)
    ids = [c.id for c in cases]
    rank, world = _rank_world()
    run = {"cases": ids, "n_cases": len(ids), "world_size": world, "global_batch": cfg.batch_size}
    metrics = {**_as_dict(result.metrics), "world_size": world, "global_batch": cfg.batch_size}
    path = Path(out)
    if rank != 0:
        from napari_unet.models.files import tensor_hash

        return CohortVersion(path, tensor_hash(result.model.state_dict()),
                             result.parent_hash or None, metrics, ids)  # fmt: skip
    from napari_unet.models.files import load_model

    digest = save_version(path, result, image=None, note=note, cohort=run)
    return CohortVersion(path, digest, result.parent_hash or None, metrics, ids,
                         load_model(path))  # fmt: skip


def _as_dict(metrics: Any) -> dict[str, Any]:
    """The trainer's metrics as a plain dict (a dict, or a dataclass with ``to_dict``)."""
    return dict(metrics.to_dict() if hasattr(metrics, "to_dict") else metrics)


def _new_spec(pairs, label_names: Sequence[str] | None):
    from napari_unet.training.recipe import guess_modality, make_spec

    top = max(check.top_label for _, _, check in pairs)
    names = list(label_names or [f"label{i}" for i in range(1, max(top, 1) + 1)])
    if len(names) < top:
        raise InputError(f"the labels hold label {top}, but {len(names)} class names were given")
    image = pairs[0][0]
    try:
        return make_spec(names, modality=guess_modality(image.array, image.modality))
    except (ValueError, TypeError) as e:
        raise InputError(f"new model: {e}") from None


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1

"""The loop's two jobs built from its workspace: what `Loop.predict` and `Loop.finetune`
check and gather before `loop.steps` runs them.

The `Loop` refuses them while busy and marks itself busy around the job returned here;
these functions only read the workspace (a fine-tune snapshots the labels). torch loads
only when a job runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import napari_unet.loop._review as _review
import napari_unet.loop._versions as _versions
from napari_unet.errors import InputError
from napari_unet.jobs import Job
from napari_unet.loop._predictions import signed
from napari_unet.loop.steps import TrainedVersion, finetune_job, predict_job
from napari_unet.typing import Device
from napari_unet.workspace import ModelVersion, Workspace


def prediction_job(
    model: Any,
    workspace: Workspace,
    *,
    device: Device | str,
    only_unreviewed: bool,
    uncertainty: bool,
    batch_size: int | None,
    stop: Callable[[], bool],
) -> Job[Any]:
    """A job predicting the scan with ``model`` (a `LoadedModel`), its `Prediction`
    signed with the model's version (see `Loop.predict`).

    Raises:
        InputError: the labels hold a label the model does not know.
    """
    top = _versions.highest_label(workspace.labels)
    if top > len(model.spec.labels):
        raise InputError(
            f"the labels hold label {top}, but the model knows {len(model.spec.labels)} "
            f"label(s) ({', '.join(model.spec.labels)}): use a model with matching labels"
        )
    slices = _review.slices_to_predict(workspace.reviewed, workspace.n_slices, only_unreviewed)
    job = predict_job(model, workspace.image, slice_axis=workspace.slice_axis, slices=slices,
                      device=device, uncertainty=uncertainty, batch_size=batch_size,
                      stop=stop)  # fmt: skip
    return signed(job, model.hash)


def finetuning_job(
    model: Any,
    spec: Any,
    workspace: Workspace,
    *,
    parent: ModelVersion | None,
    config: Any,
    device: Device | str,
    seconds: float | None,
    steps: int | None,
    ignore_label: int | None,
    all_voxels: bool,
    previous: Iterable[int] | None,
    out: str | os.PathLike | None,
    new_file: Callable[[Any], Path],
    note: str,
    seed: int,
    stop: Callable[[], bool],
) -> Job[TrainedVersion]:
    """A job fine-tuning ``model`` (or training ``spec`` when it is None) on a snapshot
    of the labels (the rule and the arguments: `Loop.finetune`; ``parent`` is the
    current version, ``new_file(spec)`` names the new version's file without ``out``).

    Raises:
        InputError: only reviewed slices count and there are none.
    """
    from napari_unet.training import TrainConfig

    data = _review.training_data(workspace.reviewed, previous=previous, parent=parent,
                                 all_voxels=all_voxels, ignore_label=ignore_label)  # fmt: skip
    config = config or TrainConfig(device=device)
    if seconds is not None or steps is not None:
        config = replace(config, seconds=seconds if steps is None else None, steps=steps)
    out_path = Path(out) if out is not None else new_file(spec)
    image = workspace.image
    return finetune_job(model, spec, image, workspace.labels.copy(), data,
                        slice_axis=workspace.slice_axis, config=config, out=out_path,
                        name=str(image.source or "scan"), note=note, seed=seed,
                        stop=stop)  # fmt: skip

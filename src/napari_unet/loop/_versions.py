"""Model versions of a loop: creating and adopting them, their files and lineage.

The `Loop` keeps the live model and emits ``model_changed``; these functions do the
work on explicit arguments (the workspace, the labels, a model). torch loads only
inside `create_model` and `adopt`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.errors import InputError
from napari_unet.io.volume import Volume
from napari_unet.loop.steps import TrainedVersion, version_file
from napari_unet.workspace import ModelVersion, Recovery, Workspace


def models_folder(explicit: Path | None, workspace: Workspace) -> Path:
    """Where new versions go: ``explicit``, else the workspace's ``models/`` once saved,
    else the scan's recovery folder's ``models/``."""
    if explicit is not None:
        return explicit
    if workspace.folder is not None:
        return workspace.folder / "models"
    return Recovery(workspace.image).folder / "models"


def new_version_file(folder: Path, spec: Any) -> Path:
    """A new, unused file for a version of ``spec`` in ``folder`` (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    return version_file(folder, spec)


def create_model(
    image: Volume,
    labels: list[str],
    *,
    spatial_dims: int,
    arch: str,
    modality: str | None,
    seed: int,
    out: str | os.PathLike | None,
    new_file: Callable[[Any], Path],
    spec_options: dict[str, Any],
) -> tuple[Path, str]:
    """Write an untrained model for ``image`` (see `Loop.new_model`).

    Args:
        image: the scan (its modality, values and source).
        labels: foreground class names.
        spatial_dims: 2 or 3.
        arch: "recommended" or a preset name.
        modality: "CT" or "MR"; None: the scan's, else guessed from its values.
        seed: weight initialisation seed.
        out: the model file; None: ``new_file(spec)``.
        new_file: a new file name for a spec.
        spec_options: more `training.recipe.make_spec` options.

    Returns:
        The model file and its hash.

    Raises:
        InputError: `make_spec` refused the options.
    """
    import torch

    from napari_unet.models import build_model, save_model
    from napari_unet.training.recipe import guess_modality, make_spec

    modality = modality or guess_modality(image.array, image.modality)
    try:
        spec = make_spec(labels, modality=modality, arch=arch, spatial_dims=spatial_dims,
                         **spec_options)  # fmt: skip
    except (TypeError, ValueError) as e:
        raise InputError(f"new model: {e}") from None
    path = Path(out) if out is not None else new_file(spec)
    torch.manual_seed(seed)
    lineage = {"parent": None, "note": "new, untrained", "init_seed": seed,
               "image": image.source}  # fmt: skip
    digest = save_model(path, build_model(spec), spec, lineage)
    return path, digest


def highest_label(labels: np.ndarray) -> int:
    """The highest label value in ``labels`` (0 when empty)."""
    return int(labels.max()) if labels.size else 0


def adopt(
    workspace: Workspace,
    path: Path,
    digest: str,
    parent: str | None,
    *,
    loaded: Any = None,
    **fields: Any,
) -> tuple[ModelVersion, Any]:
    """Add the model file ``path`` to ``workspace`` as its current version.

    Args:
        workspace: gets the version, and the model's label names and colours.
        path: the model file.
        digest: its hash.
        parent: the version it came from, or None.
        loaded: the `LoadedModel` of ``path`` (None: loaded here).
        **fields: more `ModelVersion` fields (note, metrics).

    Returns:
        The version and the loaded model.

    Raises:
        InputError: the workspace's labels hold a label the model does not know.
    """
    from napari_unet.models.files import load_model

    loaded = loaded or load_model(path)
    top = highest_label(workspace.labels)
    if top > len(loaded.spec.labels):
        raise InputError(
            f"{path}: the labels hold label {top}, but the model knows "
            f"{len(loaded.spec.labels)} ({', '.join(loaded.spec.labels)})"
        )
    version = ModelVersion(str(path), digest, parent, **fields)
    workspace.add_model(version)
    workspace.current = digest
    workspace.label_names = list(loaded.spec.labels)
    workspace.label_colors = list(loaded.spec.colors)
    return version, loaded


def trained_version(trained: TrainedVersion) -> ModelVersion:
    """The `ModelVersion` of a fine-tune's result (flagged when it drifted)."""
    version = ModelVersion(str(trained.path), trained.hash, trained.parent,
                           metrics=trained.metrics.to_dict())  # fmt: skip
    if trained.flagged:
        version.note = "flagged: worse on earlier slices"
    return version


def is_trained(model: Any, current: ModelVersion | None) -> bool:
    """Whether ``model`` (of version ``current``) has learned from data (the rule:
    `Loop.trained`)."""
    if model is None:
        return False
    metrics = current.metrics if current is not None else {}
    if metrics.get("steps") or metrics.get("trained_slices"):
        return True
    lineage = getattr(model, "lineage", None)
    lineage = lineage if isinstance(lineage, dict) else {}
    return any(lineage.get(key) for key in ("imported_from", "source", "trained_on"))


def lineage(versions: Iterable[ModelVersion], version_hash: str) -> set[str]:
    """The version and its ancestors among ``versions``."""
    parents = {v.hash: v.parent for v in versions}
    seen: set[str] = set()
    while version_hash is not None and version_hash not in seen:
        seen.add(version_hash)
        version_hash = parents.get(version_hash)
    return seen


def same_line(versions: list[ModelVersion], a: str | None, b: str | None) -> bool:
    """Whether versions ``a`` and ``b`` are one line: one descends from the other."""
    if a is None or b is None:
        return False
    return a in lineage(versions, b) or b in lineage(versions, a)

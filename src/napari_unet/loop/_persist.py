"""A loop's files: the labels exported as NIfTI, the workspace saved and reopened."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.errors import InputError
from napari_unet.io.volume import Volume
from napari_unet.outputs import atomic_output, check_output
from napari_unet.workspace import Workspace


def export_labels(
    image: Volume, labels: np.ndarray, path: str | os.PathLike, *, overwrite: bool
) -> Path:
    """Write ``labels`` (``(i, j, k)``) as NIfTI on ``image``'s exact grid and affine,
    in the smallest label dtype; returns the file."""
    from napari_unet.io.nifti import NIFTI_SUFFIXES, save_nifti
    from napari_unet.io.volume import smallest_label_dtype

    out = check_output(path, overwrite=overwrite, inputs=[image.source],
                       suffixes=NIFTI_SUFFIXES)  # fmt: skip
    array = labels.astype(smallest_label_dtype(labels), copy=False)
    return save_nifti(image.with_array(array), out, overwrite=overwrite)


def save_workspace(workspace: Workspace, folder: str | os.PathLike | None) -> Path:
    """Save ``workspace`` in ``folder`` (None: where it was saved), copying every model
    version's file into its ``models/``; returns the folder.

    Raises:
        InputError: no folder given and the workspace was never saved.
    """
    target = Path(folder) if folder is not None else workspace.folder
    if target is None:
        raise InputError("choose a folder to save the workspace in")
    workspace.check_target(target)  # before anything is written into it
    models = target / "models"
    models.mkdir(parents=True, exist_ok=True)
    for version in workspace.models:  # bring model files into the workspace
        source = workspace.model_path(version.hash)
        if source is not None and source.exists() and source.parent.resolve() != models.resolve():
            with atomic_output(models / source.name) as tmp:
                shutil.copyfile(source, tmp)
            version.file = source.name
    return workspace.save(target, checked=True)


def load_current_model(workspace: Workspace) -> Any:
    """The `LoadedModel` of the workspace's current version, or None without one."""
    from napari_unet.models.files import load_model

    if workspace.current is not None and workspace.model_path() is not None:
        return load_model(workspace.model_path())
    return None

"""`Loop`: the correct-and-fine-tune loop on one scan, without Qt or napari.

The loop owns the scan, ONE labels array (native ``(i, j, k)``; the panel's labels layer
shows a display-ordered view of the same memory), the reviewed slices, the model
versions with their lineage, the live model and the device. The panel, the CLI, the
simulated user and the demo all drive it the same way::

    loop = Loop(image)
    loop.new_model(["liver"])                     # or loop.open_model(path)
    loop.merge(run_job(loop.predict()))           # never writes reviewed slices
    loop.labels[..., 40] = corrected; loop.mark_reviewed([40])
    loop.add_version(run_job(loop.finetune(seconds=60)))
    loop.merge(run_job(loop.predict()))           # only unreviewed slices
    loop.use_version(first_hash)                  # roll back (labels untouched)
    loop.export("seg.nii.gz"); loop.save("ws/"); Loop.open("ws/")

Jobs (`predict`, `finetune`) are generators of `jobs.Progress` that read a snapshot
when created and return a result; applying it (`merge`, `add_version`) happens on the
caller's thread. While a job runs, the actions that would change what it works on
(`new_model`, `open_model`, `use_version`, starting another job) are refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal

import napari_unet.loop._jobs as _jobs
import napari_unet.loop._persist as _persist
import napari_unet.loop._versions as _versions
from napari_unet.errors import InputError
from napari_unet.io.volume import Volume
from napari_unet.jobs import Job, never
from napari_unet.loop._busy import BusyJob as _BusyJob
from napari_unet.loop._predictions import label_array as _label_array
from napari_unet.loop._predictions import merge_edit, writer_of
from napari_unet.loop._review import ALMOST_EMPTY, UNCERTAIN_SLICE
from napari_unet.loop._reviewing import ReviewMixin
from napari_unet.loop.merge import Edit, merge_unreviewed
from napari_unet.loop.steps import TrainedVersion
from napari_unet.typing import Device
from napari_unet.workspace import ModelVersion, Workspace

__all__ = ["ALMOST_EMPTY", "UNCERTAIN_SLICE", "Loop"]


class Loop(ReviewMixin):
    """One scan's segmentation loop (see the module docstring).

    Args:
        image: the scan.
        labels: the labels array ``(i, j, k)`` on the scan's grid, used in place (a view
            of a layer's buffer is fine); zeros (uint8) if None.
        slice_axis: the axis slices are reviewed along (default: through-plane).
        models_folder: where new model versions are written (default: the workspace's
            ``models/`` once saved, else a per-scan cache folder).
        device: a `Device`: "auto", "cpu", "cuda" or "mps" (checked here; "cuda:1" names
            a GPU).

    Signals:
        labels_changed(Edit | None): the labels changed (None: wholesale).
        reviewed_changed(): the reviewed slices changed.
        model_changed(): the live model or the versions changed.
        busy_changed(bool): a job started or ended.

    Attributes:
        labels_writer: the model version whose merge last wrote every unreviewed
            slice; None when the labels came from elsewhere (an adopted segmentation,
            a file, a merge of only some slices into such labels). See `foreign_content`.
    """

    labels_writer: str | None = None
    _labels_epoch = 0  # bumped whenever the labels change other than by painting

    labels_changed = Signal(object)
    reviewed_changed = Signal()
    model_changed = Signal()
    busy_changed = Signal(bool)

    def __init__(
        self,
        image: Volume,
        labels: np.ndarray | None = None,
        *,
        slice_axis: int | None = None,
        models_folder: str | os.PathLike | None = None,
        device: Device | str = Device.AUTO,
    ) -> None:
        self._start(Workspace(image, labels, slice_axis=slice_axis), device, models_folder)

    def _start(
        self, workspace: Workspace, device: Device | str, models_folder: str | os.PathLike | None
    ) -> None:
        """The loop's own state around ``workspace`` (shared by `__init__` and `open`)."""
        self.workspace = workspace
        self.model: Any = None  # models.files.LoadedModel
        self.device = device
        self.last_uncertainty: np.ndarray | None = None
        self._models_folder = Path(models_folder) if models_folder is not None else None
        self._busy = False

    # --- state ---------------------------------------------------------------------------
    @property
    def device(self) -> Device | str:
        """Where jobs run: a `Device` name; setting it checks the name."""
        return self._device

    @device.setter
    def device(self, device: Device | str) -> None:
        Device.check(device, "device")
        self._device = device

    @property
    def image(self) -> Volume:
        return self.workspace.image

    @property
    def labels(self) -> np.ndarray:
        return self.workspace.labels

    @property
    def slice_axis(self) -> int:
        return self.workspace.slice_axis

    @property
    def reviewed(self) -> frozenset[int]:
        return frozenset(self.workspace.reviewed)

    @property
    def versions(self) -> list[ModelVersion]:
        return list(self.workspace.models)

    @property
    def current(self) -> ModelVersion | None:
        return next((v for v in self.workspace.models if v.hash == self.workspace.current), None)

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def models_folder(self) -> Path:
        return _versions.models_folder(self._models_folder, self.workspace)

    def _idle(self, action: str) -> None:
        if self._busy:
            raise InputError(f"cannot {action} while a job runs: wait for it or cancel it")

    # --- models ----------------------------------------------------------------------------
    def new_model(
        self,
        labels: list[str],
        *,
        spatial_dims: int = 2,
        arch: str = "recommended",
        modality: str | None = None,
        seed: int = 0,
        out: str | os.PathLike | None = None,
        **spec_options: Any,
    ) -> ModelVersion:
        """Create an untrained model through the one spec factory and make it current.

        Args:
            labels: foreground class names.
            spatial_dims: 2 or 3.
            arch: "recommended" or a preset name.
            modality: "CT" or "MR"; None: the scan's, else guessed from its values.
            seed: weight initialisation seed.
            out: the model file (default: a new name in `models_folder`).
            **spec_options: `training.recipe.make_spec` options (context_slices,
                patch_size, target_spacing).
        """
        self._idle("create a model")
        path, digest = _versions.create_model(
            self.image, labels, spatial_dims=spatial_dims, arch=arch, modality=modality,
            seed=seed, out=out, new_file=self._new_file, spec_options=spec_options,
        )  # fmt: skip
        return self._adopt(path, digest, None, note="untrained")

    def open_model(self, path: str | os.PathLike) -> ModelVersion:
        """Load a model file and make it current (its lineage parent is kept)."""
        from napari_unet.models.files import load_model

        self._idle("open a model")
        return self.set_model(load_model(path))

    def set_model(self, loaded: Any) -> ModelVersion:
        """Make an in-memory `LoadedModel` (e.g. from `models.load_model`) current."""
        self._idle("change the model")
        lineage = loaded.lineage if isinstance(loaded.lineage, dict) else {}
        path = Path(loaded.path) if loaded.path else Path(f"{loaded.hash}.safetensors")
        return self._adopt(path, loaded.hash, lineage.get("parent"), loaded=loaded,
                           metrics=lineage.get("metrics") or {})  # fmt: skip

    def use_version(self, version_hash: str) -> None:
        """Roll back (or forward) to another version; the labels are not touched."""
        from napari_unet.models.files import load_model

        self._idle("change the model")
        path = self.workspace.model_path(version_hash)
        if path is None:
            raise InputError(f"no model version {version_hash[:12]} in this loop")
        loaded = load_model(path)
        self.workspace.roll_back(version_hash)
        self.model = loaded
        self.model_changed.emit()

    def add_version(self, trained: TrainedVersion) -> ModelVersion:
        """Make a fine-tune's result the current version (see `finetune`)."""
        version = _versions.trained_version(trained)
        self.workspace.add_model(version)
        self.workspace.current = version.hash
        self.model = trained.model
        self.model_changed.emit()
        return version

    def _adopt(self, path: Path, digest: str, parent, *, loaded=None, **fields) -> ModelVersion:
        version, self.model = _versions.adopt(self.workspace, path, digest, parent,
                                              loaded=loaded, **fields)  # fmt: skip
        self.model_changed.emit()
        return version

    def _new_file(self, spec) -> Path:
        return _versions.new_version_file(self.models_folder, spec)

    def _require_model(self):
        if self.model is None:
            raise InputError("create or open a model first")
        return self.model

    def use_labels(self, labels: np.ndarray) -> None:
        """Work on another labels array from now on (in place; nothing reviewed yet).

        Args:
            labels: ``(i, j, k)`` on the scan's grid, e.g. a view of another layer.
        """
        self._idle("change the labels")
        if tuple(labels.shape) != self.image.shape:
            raise InputError(
                f"labels of shape {tuple(labels.shape)} are not on the scan's grid "
                f"{self.image.shape}"
            )
        self.workspace.labels = labels
        self.workspace.reviewed = set()
        self.last_uncertainty = None
        self.labels_writer = None  # adopted: whoever made it, it was not a merge of ours
        self._labels_epoch += 1
        self.labels_changed.emit(None)
        self.reviewed_changed.emit()

    # --- review ----------------------------------------------------------------------------
    # (marking, ordering and content queries: `ReviewMixin`, loop/_reviewing.py)
    @property
    def trained(self) -> bool:
        """Whether the live model has learned from data: fine-tuned (its version's
        metrics have ``steps`` or ``trained_slices``) or imported from a trained model
        (its lineage names the source). False for a new model and without a model."""
        return _versions.is_trained(self.model, self.current)

    # --- jobs ------------------------------------------------------------------------------
    def predict(
        self, *, only_unreviewed: bool = True, uncertainty: bool = False,
        batch_size: int | None = None, stop: Callable[[], bool] = never,
    ) -> Job[Any]:  # fmt: skip
        """A job predicting the scan with the live model; returns a `Prediction`.

        A 2D model runs only the unreviewed slices (``only_unreviewed``); apply the
        result with `merge`. The prediction's ``info["model"]`` names the version.
        """
        self._idle("start a prediction")
        job = _jobs.prediction_job(self._require_model(), self.workspace, device=self.device,
                                   only_unreviewed=only_unreviewed, uncertainty=uncertainty,
                                   batch_size=batch_size, stop=stop)  # fmt: skip
        return self._guarded(job)

    def plan_merge(self, prediction: Any, *, only: Iterable[int] | None = None) -> Edit:
        """What `merge` would write, computed without writing (safe in a worker thread:
        it only reads the labels). Pass it to `merge` as ``planned``; slices reviewed in
        between are then left out, so the user's newest corrections still win."""
        return merge_unreviewed(self.labels, _label_array(prediction),
                                reviewed=set(self.workspace.reviewed),
                                slice_axis=self.slice_axis, only=only, write=False)  # fmt: skip

    def merge(
        self,
        prediction: Any,
        *,
        only: Iterable[int] | None = None,
        writer: Callable[[Edit], None] | None = None,
        planned: Edit | None = None,
    ) -> Edit:
        """Write a prediction into the labels on unreviewed slices (read now, so slices
        reviewed while it ran are kept). Returns the `Edit` (one undo step).

        Args:
            prediction: a `Prediction`, a label `Volume` or an array on the scan's grid.
                A prediction of `predict` merged over every unreviewed slice makes its
                model version the `labels_writer`; anything else makes it None.
            only: write only these slices (e.g. the empty ones); the `labels_writer`
                stays what it was.
            writer: applies the Edit to the labels itself (the panel records it in
                napari's undo history); None writes it here.
            planned: the Edit `plan_merge` computed for this prediction (and ``only``)
                off the GUI thread; only what became reviewed since is dropped here.
        """
        edit = merge_edit(self.labels, prediction, reviewed=self.workspace.reviewed,
                          slice_axis=self.slice_axis, only=only, writer=writer,
                          planned=planned)  # fmt: skip
        unc = getattr(prediction, "uncertainty", None)
        if unc is not None:
            self.last_uncertainty = np.asarray(unc.array)
        if only is None:
            self.labels_writer = writer_of(prediction)
        self._labels_epoch += 1
        self.labels_changed.emit(edit)
        return edit

    def finetune(
        self,
        config: Any = None,
        *,
        seconds: float | None = None,
        steps: int | None = None,
        ignore_label: int | None = None,
        all_voxels: bool = False,
        previous: Iterable[int] | None = None,
        out: str | os.PathLike | None = None,
        note: str = "",
        seed: int = 0,
        spec: Any = None,
        stop: Callable[[], bool] = never,
    ) -> Job[TrainedVersion]:
        """A job fine-tuning the live model (or training a new one) on the labels.

        By default only the reviewed slices count; slices the parent already learned
        from (its ``trained_slices``, or ``previous``) are replayed and scored, so a
        version that got worse on them is flagged. ``all_voxels`` (or an
        ``ignore_label``) counts every labelled voxel instead. Apply the result with
        `add_version`.

        Args:
            config: a `training.TrainConfig` (default: the recipe's, on `device`).
            seconds: wall-time budget (overrides the config's steps).
            steps: step budget.
            ignore_label: label value meaning "not labelled".
            all_voxels: train on every labelled voxel, not only reviewed slices.
            previous: slices reviewed for earlier versions (default: the parent's).
            out: the new version's file (default: a new name in `models_folder`).
            note: lineage note.
            seed: data sampling seed.
            spec: with no live model: train a new network of this `ModelSpec`.
            stop: returns True to stop; the best state so far is kept.
        """
        self._idle("start fine-tuning")
        model = self.model if self.model is not None or spec is not None else self._require_model()
        spec = model.spec if model is not None else spec
        job = _jobs.finetuning_job(model, spec, self.workspace, parent=self.current,
                                   config=config, device=self.device, seconds=seconds,
                                   steps=steps, ignore_label=ignore_label, all_voxels=all_voxels,
                                   previous=previous, out=out, new_file=self._new_file,
                                   note=note, seed=seed, stop=stop)  # fmt: skip
        return self._guarded(job)

    def _guarded(self, job: Job[Any]) -> Job[Any]:
        """The job, with the loop busy from now until it ends, fails or is closed."""
        self._set_busy(True)
        return _BusyJob(job, lambda: self._set_busy(False))  # type: ignore[return-value]

    def _set_busy(self, busy: bool) -> None:
        if self._busy != busy:
            self._busy = busy
            self.busy_changed.emit(busy)

    # --- files -----------------------------------------------------------------------------
    def export(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the labels as NIfTI on the scan's exact grid and affine."""
        return _persist.export_labels(self.image, self.labels, path, overwrite=overwrite)

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Save scan, labels, reviewed slices and every model version in a folder."""
        return _persist.save_workspace(self.workspace, folder)

    @classmethod
    def open(cls, folder: str | os.PathLike, *, device: Device | str = Device.AUTO) -> Loop:
        """Reopen a saved workspace with its current model version."""
        ws = Workspace.open(folder)
        loop = cls.__new__(cls)
        loop._start(ws, device, None)
        loop.model = _persist.load_current_model(ws)
        return loop

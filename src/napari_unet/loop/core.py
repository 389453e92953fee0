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
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal

from napari_unet.errors import InputError
from napari_unet.io.volume import Volume
from napari_unet.jobs import Job, never
from napari_unet.loop.merge import Edit, SliceInformation, merge_unreviewed, unreviewed_content
from napari_unet.loop.merge import empty_slices as _empty_slices
from napari_unet.loop.merge import slice_information as _slice_information
from napari_unet.loop.steps import (
    TrainedVersion,
    TrainingData,
    finetune_job,
    predict_job,
    split_slices,
    version_file,
)
from napari_unet.outputs import atomic_output, check_output
from napari_unet.typing import Device
from napari_unet.workspace import ModelVersion, Recovery, Workspace

#: A slice's prediction is "uncertain" when the mean uncertainty (softmax entropy /
#: log(classes), in [0, 1]) over its foreground and the voxels near it is above this.
#: Measured on the CT phantom (sample_data, 3 organs, 2D): an untrained model scores 0.99
#: on every slice; after a 45 s CPU fine-tune on 6 slices, 0.03-0.31, and the only three
#: slices above 0.2 were the worst predicted (mean Dice 0.18-0.32; the rest 0.29-1.0).
#: 0.2 is about the entropy of 97 : 3 between two classes.
UNCERTAIN_SLICE = 0.2

#: Slices with less foreground than this fraction of the median foreground of the
#: slices that have any are "almost empty" (edge slices): reviewed last.
ALMOST_EMPTY = 0.05


class Loop:
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
    _information: tuple[Any, Any, int, SliceInformation] | None = None

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
        if self._models_folder is not None:
            return self._models_folder
        if self.workspace.folder is not None:
            return self.workspace.folder / "models"
        return Recovery(self.image).folder / "models"

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
        import torch

        from napari_unet.models import build_model, save_model
        from napari_unet.training.recipe import guess_modality, make_spec

        self._idle("create a model")
        modality = modality or guess_modality(self.image.array, self.image.modality)
        try:
            spec = make_spec(labels, modality=modality, arch=arch, spatial_dims=spatial_dims,
                             **spec_options)  # fmt: skip
        except (TypeError, ValueError) as e:
            raise InputError(f"new model: {e}") from None
        path = Path(out) if out is not None else self._new_file(spec)
        torch.manual_seed(seed)
        lineage = {"parent": None, "note": "new, untrained", "init_seed": seed,
                   "image": self.image.source}  # fmt: skip
        digest = save_model(path, build_model(spec), spec, lineage)
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
        version = ModelVersion(str(trained.path), trained.hash, trained.parent,
                               metrics=trained.metrics.to_dict())  # fmt: skip
        if trained.flagged:
            version.note = "flagged: worse on earlier slices"
        self.workspace.add_model(version)
        self.workspace.current = version.hash
        self.model = trained.model
        self.model_changed.emit()
        return version

    def _adopt(self, path: Path, digest: str, parent, *, loaded=None, **fields) -> ModelVersion:
        from napari_unet.models.files import load_model

        loaded = loaded or load_model(path)
        top = int(self.labels.max()) if self.labels.size else 0
        if top > len(loaded.spec.labels):
            raise InputError(
                f"{path}: the labels hold label {top}, but the model knows "
                f"{len(loaded.spec.labels)} ({', '.join(loaded.spec.labels)})"
            )
        version = ModelVersion(str(path), digest, parent, **fields)
        self.workspace.add_model(version)
        self.workspace.current = digest
        self.workspace.label_names = list(loaded.spec.labels)
        self.workspace.label_colors = list(loaded.spec.colors)
        self.model = loaded
        self.model_changed.emit()
        return version

    def _new_file(self, spec) -> Path:
        folder = self.models_folder
        folder.mkdir(parents=True, exist_ok=True)
        return version_file(folder, spec)

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
    def mark_reviewed(self, slices: Iterable[int]) -> set[int]:
        """Mark slices (native indices along `slice_axis`) as reviewed; returns the new ones."""
        new = self.workspace.mark_reviewed(list(slices))
        if new:
            self.reviewed_changed.emit()
        return new

    def unmark_reviewed(self, slices: Iterable[int]) -> None:
        before = set(self.workspace.reviewed)
        self.workspace.unmark_reviewed(list(slices))
        if self.workspace.reviewed != before:
            self.reviewed_changed.emit()

    def accept(self, index: int) -> None:
        """The slice is correct as it is: it becomes reviewed."""
        self.mark_reviewed([index])

    def next_to_review(self) -> int | None:
        """The unreviewed slice worth reviewing most (see `review_order`); None when all
        are reviewed."""
        order = self.review_order()
        return order[0] if order else None

    def review_order(self) -> list[int]:
        """The unreviewed slices (native indices), the most informative first.

        With the last prediction's uncertainty, slices rank by their information: the
        uncertainty summed over the voxels predicted foreground or near it
        (`merge.slice_information`), so much tissue of medium uncertainty comes before
        a few very uncertain voxels. Slices with almost no foreground (`ALMOST_EMPTY`
        of the median foreground; edge slices) come last. Ties, and no uncertainty:
        the middle of the widest run of unreviewed slices first (the scan's ends count
        as reviewed), which spreads the reviews out and leaves the edges for last.
        """
        ws = self.workspace
        n = ws.n_slices
        unreviewed = np.array(sorted(set(range(n)) - ws.reviewed), dtype=np.int64)
        if unreviewed.size == 0:
            return []
        info = self.slice_information()
        filled = info.foreground[info.foreground > 0]
        if filled.size:
            almost_empty = info.foreground < ALMOST_EMPTY * float(np.median(filled))
        else:
            almost_empty = np.zeros(n, dtype=bool)
        walls = np.array(sorted(ws.reviewed | {-1, n}), dtype=np.int64)
        gap = np.min(np.abs(unreviewed[:, None] - walls[None, :]), axis=1)
        order = np.lexsort((-gap, -info.information[unreviewed], almost_empty[unreviewed]))
        return [int(i) for i in unreviewed[order]]

    def slice_information(self) -> SliceInformation:
        """Per-slice information, uncertainty and foreground of the labels and the last
        prediction's uncertainty (`merge.slice_information`).

        Kept until a merge, `use_labels`, `labels_edited` or a new uncertainty; painting
        (which only changes slices it makes reviewed) does not recompute it.
        """
        cached = self._information
        if not (
            cached is not None
            and cached[0] is self.last_uncertainty
            and cached[1] is self.labels
            and cached[2] == self._labels_epoch
        ):
            info = _slice_information(self.labels, self.last_uncertainty,
                                      slice_axis=self.slice_axis)  # fmt: skip
            cached = self._information = (self.last_uncertainty, self.labels,
                                          self._labels_epoch, info)  # fmt: skip
        return cached[3]

    def slice_uncertainty(self, index: int) -> float | None:
        """Mean uncertainty of the last prediction over a slice's foreground and the
        voxels near it (compare with `UNCERTAIN_SLICE`); None without an uncertainty."""
        if self.last_uncertainty is None:
            return None
        return float(self.slice_information().mean_uncertainty[int(index)])

    def labels_edited(self) -> None:
        """The labels were changed in place from outside (an undo in the viewer): figures
        derived from them are recomputed; `labels_changed(None)` is emitted."""
        self._labels_epoch += 1
        self.labels_changed.emit(None)

    @property
    def trained(self) -> bool:
        """Whether the live model has learned from data: fine-tuned (its version's
        metrics have ``steps`` or ``trained_slices``) or imported from a trained model
        (its lineage names the source). False for a new model and without a model."""
        if self.model is None:
            return False
        current = self.current
        metrics = current.metrics if current is not None else {}
        if metrics.get("steps") or metrics.get("trained_slices"):
            return True
        lineage = getattr(self.model, "lineage", None)
        lineage = lineage if isinstance(lineage, dict) else {}
        return any(lineage.get(key) for key in ("imported_from", "source", "trained_on"))

    def foreign_content(self) -> int:
        """Foreground voxels on unreviewed slices that the live model's line did not write.

        Content is the model's own when the last merge over every unreviewed slice came
        from the current version, an ancestor or a descendant of it (a fine-tune's
        re-prediction, a roll back). Anything else (an adopted segmentation, labels
        from a file or an earlier session, another model's prediction) is foreign: a
        merge would replace it, so a front end asks first. Returns its voxel count.
        """
        writer, current = self.labels_writer, self.workspace.current
        if (
            writer is not None
            and current is not None
            and (writer in self._lineage(current) or current in self._lineage(writer))
        ):
            return 0
        return unreviewed_content(self.labels, reviewed=self.workspace.reviewed,
                                  slice_axis=self.slice_axis)  # fmt: skip

    def empty_slices(self) -> list[int]:
        """Unreviewed slices without foreground (for ``merge(..., only=...)``)."""
        return _empty_slices(self.labels, reviewed=self.workspace.reviewed,
                             slice_axis=self.slice_axis)  # fmt: skip

    def _lineage(self, version_hash: str) -> set[str]:
        """The version and its ancestors among this loop's versions."""
        parents = {v.hash: v.parent for v in self.workspace.models}
        seen: set[str] = set()
        while version_hash is not None and version_hash not in seen:
            seen.add(version_hash)
            version_hash = parents.get(version_hash)
        return seen

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
        model = self._require_model()
        top = int(self.labels.max()) if self.labels.size else 0
        if top > len(model.spec.labels):
            raise InputError(
                f"the labels hold label {top}, but the model knows {len(model.spec.labels)} "
                f"label(s) ({', '.join(model.spec.labels)}): use a model with matching labels"
            )
        slices = None
        ws = self.workspace
        if only_unreviewed and ws.reviewed:
            slices = sorted(set(range(ws.n_slices)) - ws.reviewed)
        job = predict_job(model, self.image, slice_axis=self.slice_axis, slices=slices,
                          device=self.device, uncertainty=uncertainty,
                          batch_size=batch_size, stop=stop)  # fmt: skip
        return self._guarded(_signed(job, model.hash))

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
        if planned is None:
            edit = merge_unreviewed(self.labels, _label_array(prediction),
                                    reviewed=self.workspace.reviewed, slice_axis=self.slice_axis,
                                    only=only, write=writer is None)  # fmt: skip
        else:
            edit = planned.without_slices(self.workspace.reviewed, self.slice_axis)
            if writer is None:
                edit.redo(self.labels)
        if writer is not None:
            writer(edit)
        unc = getattr(prediction, "uncertainty", None)
        if unc is not None:
            self.last_uncertainty = np.asarray(unc.array)
        if only is None:
            info = getattr(prediction, "info", None)
            self.labels_writer = info.get("model") if isinstance(info, dict) else None
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
        from dataclasses import replace

        from napari_unet.training import TrainConfig

        self._idle("start fine-tuning")
        model = self.model if self.model is not None or spec is not None else self._require_model()
        spec = model.spec if model is not None else spec
        ws = self.workspace
        if all_voxels or ignore_label is not None:
            data = TrainingData(None, [], ignore_label)
        else:
            if not ws.reviewed:
                raise InputError("no reviewed slices yet: correct or accept a slice first")
            if previous is None:
                parent = self.current
                previous = parent.metrics.get("trained_slices", []) if parent else []
            data = split_slices(sorted(ws.reviewed), sorted(previous))
        config = config or TrainConfig(device=self.device)
        if seconds is not None or steps is not None:
            config = replace(config, seconds=seconds if steps is None else None, steps=steps)
        out_path = Path(out) if out is not None else self._new_file(spec)
        job = finetune_job(model, spec, self.image, self.labels.copy(), data,
                           slice_axis=self.slice_axis, config=config, out=out_path,
                           name=str(self.image.source or "scan"), note=note, seed=seed,
                           stop=stop)  # fmt: skip
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
        from napari_unet.io.nifti import NIFTI_SUFFIXES, save_nifti
        from napari_unet.io.volume import smallest_label_dtype

        out = check_output(path, overwrite=overwrite, inputs=[self.image.source],
                           suffixes=NIFTI_SUFFIXES)  # fmt: skip
        array = self.labels.astype(smallest_label_dtype(self.labels), copy=False)
        return save_nifti(self.image.with_array(array), out, overwrite=overwrite)

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Save scan, labels, reviewed slices and every model version in a folder."""
        ws = self.workspace
        target = Path(folder) if folder is not None else ws.folder
        if target is None:
            raise InputError("choose a folder to save the workspace in")
        ws.check_target(target)  # before anything is written into it
        models = target / "models"
        models.mkdir(parents=True, exist_ok=True)
        for version in ws.models:  # bring model files into the workspace
            source = ws.model_path(version.hash)
            if (
                source is not None
                and source.exists()
                and source.parent.resolve() != models.resolve()
            ):
                with atomic_output(models / source.name) as tmp:
                    shutil.copyfile(source, tmp)
                version.file = source.name
        return ws.save(target, checked=True)

    @classmethod
    def open(cls, folder: str | os.PathLike, *, device: Device | str = Device.AUTO) -> Loop:
        """Reopen a saved workspace with its current model version."""
        from napari_unet.models.files import load_model

        ws = Workspace.open(folder)
        loop = cls.__new__(cls)
        loop._start(ws, device, None)
        if ws.current is not None and ws.model_path() is not None:
            loop.model = load_model(ws.model_path())
        return loop


def _signed(job: Job[Any], model_hash: str) -> Job[Any]:
    """The prediction job, its result signed with the model version that made it."""
    prediction = yield from job
    if isinstance(getattr(prediction, "info", None), dict):
        prediction.info.setdefault("model", model_hash)
    return prediction


class _BusyJob:
    """A generator wrapper that calls ``release`` once when the job is over.

    Over means: it returned, raised, was closed, or was dropped without being run.
    """

    def __init__(self, job: Job[Any], release: Callable[[], None]) -> None:
        self._job, self._release = job, release

    def __iter__(self) -> _BusyJob:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        try:
            return self._job.send(value)
        except BaseException:
            self._done()
            raise

    def throw(self, *args: Any) -> Any:
        try:
            return self._job.throw(*args)
        except BaseException:
            self._done()
            raise

    def close(self) -> None:
        try:
            self._job.close()
        finally:
            self._done()

    def __del__(self) -> None:
        self._done()

    def _done(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


def _label_array(prediction: Any) -> np.ndarray:
    """The label array of a `Prediction`, a label `Volume` or an array."""
    labels = getattr(prediction, "labels", prediction)
    return np.asarray(getattr(labels, "array", labels))

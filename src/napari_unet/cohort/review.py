"""The cohort review queue: most uncertain case first, corrections saved per case.

    review = CohortReview.open("out/")        # a cohort run's folder, or a manifest
    entry = review.next_to_review()           # the most uncertain unreviewed case
    loop = review.open_loop(entry)            # scan + predicted labels + the model
    ...                                       # correct slices, loop.mark_reviewed(...)
    review.save(entry, loop)                  # Loop.save → out/review/<id>/
    version = run_job(review.finetune(steps=300))   # one version on every reviewed case
    review.adopt(version)                     # the next cases open with it

Where things are: for a run's folder ``OUT``, the review lives in ``OUT/review/``; for a
manifest ``M.csv``, in ``M-review/`` beside it. Inside: one workspace folder per case
(``<id>/``, written by `Loop.save`: scan, labels, reviewed slices, model versions),
``models/`` with the versions trained on the reviewed cases, and ``review.json`` naming
the model cases open with (the newest adopted version, else the run's model).

Order: cases whose prediction found nothing come first (an empty prediction of a scan
that should hold the structure is the worst kind of error, and no entropy ranks it),
then by decreasing uncertainty (mean softmax entropy over the predicted foreground);
failed cases are never offered. A manifest without a run offers its cases in order,
starting from their ``labels`` column when it has one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_unet.cohort.manifest import is_manifest, read_manifest, read_records
from napari_unet.cohort.train import CohortVersion, TrainingCase
from napari_unet.errors import InputError
from napari_unet.jobs import Job, never
from napari_unet.outputs import atomic_output

REVIEW_FILE = "review.json"
WORKSPACE_FILE = "workspace.json"


@dataclass
class ReviewEntry:
    """One case in the queue.

    Attributes:
        id: the case id.
        image: its scan.
        labels: labels it opens with: the run's prediction (or the manifest's labels).
        status: "done", "skipped" (done earlier), "failed", or "pending" (no run).
        uncertainty: the run's uncertainty figure, None when unknown or nothing found.
        workspace: the case's review workspace folder.
        reviewed_slices: slices reviewed and saved so far.
        error: why it failed.
    """

    id: str
    image: str
    labels: str | None
    status: str
    uncertainty: float | None
    workspace: Path
    reviewed_slices: int = 0
    error: str | None = None

    @property
    def reviewed(self) -> bool:
        return self.reviewed_slices > 0

    @property
    def openable(self) -> bool:
        return self.status != "failed"


class CohortReview:
    """The review queue of a cohort (module docstring). Use `CohortReview.open`."""

    def __init__(self, source: Path, root: Path, entries: list[ReviewEntry],
                 run_model: str | None) -> None:  # fmt: skip
        self.source, self.root, self.entries = source, root, entries
        self.run_model = run_model
        self.versions: list[dict[str, Any]] = []
        self._model: str | None = None
        self._read_state()
        self.refresh()

    @classmethod
    def open(cls, path: str | os.PathLike) -> CohortReview:
        """Open a cohort run's output folder (``cohort.jsonl``) or a CSV/TSV manifest.

        Raises:
            InputError: neither, or an unreadable manifest.
        """
        p = Path(path).absolute()
        if p.is_dir():
            records = read_records(p)
            if not records:
                raise InputError(f"{p}: not a cohort output folder (no cohort.jsonl with cases)")
            root = p / "review"
            entries = [_entry(r, root) for r in records.values()]
            models = [r.get("model_file") for r in records.values() if r.get("model_file")]
            return cls(p, root, entries, models[-1] if models else None)
        if is_manifest(p):
            root = p.parent / f"{p.stem}-review"
            entries = [ReviewEntry(c.id, c.image, c.labels, "pending", None, root / c.id)
                       for c in read_manifest(p)]  # fmt: skip
            return cls(p, root, entries, None)
        raise InputError(f"{p}: open a cohort output folder or a .csv/.tsv manifest")

    # --- state ------------------------------------------------------------------------------
    @property
    def model_path(self) -> str | None:
        """The model cases open with: the newest adopted version, else the run's."""
        return self._model or self.run_model

    def _read_state(self) -> None:
        try:
            state = json.loads((self.root / REVIEW_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(state, dict):
            self._model = state.get("model") if isinstance(state.get("model"), str) else None
            self.versions = [v for v in state.get("versions", []) if isinstance(v, dict)]

    def _write_state(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"format": 1, "model": self._model, "versions": self.versions}, indent=2)
        with atomic_output(self.root / REVIEW_FILE) as tmp:
            tmp.write_text(text, encoding="utf-8")

    def refresh(self) -> None:
        """Re-read how many slices of each case were reviewed and saved."""
        for entry in self.entries:
            entry.reviewed_slices = _reviewed_count(entry.workspace)

    def entry(self, case_id: str) -> ReviewEntry:
        for entry in self.entries:
            if entry.id == case_id:
                return entry
        raise InputError(f"no case {case_id!r} in this cohort")

    # --- the queue --------------------------------------------------------------------------
    def queue(self) -> list[ReviewEntry]:
        """Unreviewed cases that can be opened, in review order (module docstring)."""
        todo = [(n, e) for n, e in enumerate(self.entries) if e.openable and not e.reviewed]

        def rank(item: tuple[int, ReviewEntry]) -> tuple[bool, float, int]:
            n, e = item
            found_nothing = e.uncertainty is None and e.status != "pending"
            return (not found_nothing, -(e.uncertainty or 0.0), n)

        return [e for _, e in sorted(todo, key=rank)]

    def next_to_review(self) -> ReviewEntry | None:
        """The most uncertain unreviewed case (None when every case is reviewed)."""
        queue = self.queue()
        return queue[0] if queue else None

    def reviewed_entries(self) -> list[ReviewEntry]:
        return [e for e in self.entries if e.reviewed]

    # --- one case ---------------------------------------------------------------------------
    def load_case(self, entry: ReviewEntry) -> tuple[Any, Any, set[int], int | None]:
        """(scan Volume, labels ``(i, j, k)`` or None, reviewed slices, slice axis or None).

        See `load_review_labels`; the scan is read from the case's input.
        """
        from napari_unet.io.reader import load_volume
        from napari_unet.training.data import check_same_grid

        image = load_volume(entry.image)
        labels, reviewed, axis = load_review_labels(entry, volume=True)
        if labels is None:
            return image, None, reviewed, axis
        check_same_grid(image, labels, what=f"labels of case {entry.id}")
        return image, labels.array, reviewed, axis

    def open_loop(self, entry: ReviewEntry, *, device: str = "auto") -> Any:
        """A `Loop` on the case: scan, labels, reviewed slices, and `model_path` live."""
        from napari_unet.loop import Loop

        image, labels, reviewed, axis = self.load_case(entry)
        loop = Loop(image, labels, slice_axis=axis, device=device,
                    models_folder=self.root / "models")  # fmt: skip
        if self.model_path:
            loop.open_model(self.model_path)
        loop.mark_reviewed(sorted(reviewed))
        return loop

    def save(self, entry: ReviewEntry, loop: Any) -> Path:
        """Save the loop (labels, reviewed slices, model versions) as the case's workspace."""
        entry.workspace.parent.mkdir(parents=True, exist_ok=True)
        folder = loop.save(entry.workspace)
        entry.reviewed_slices = _reviewed_count(entry.workspace)
        return folder

    # --- training ---------------------------------------------------------------------------
    def training_cases(self) -> list[TrainingCase]:
        """Every saved case with reviewed slices: its reviewed slices count, nothing else."""
        cases = []
        for entry in self.entries:
            state = _workspace_state(entry.workspace)
            reviewed = sorted(int(i) for i in (state or {}).get("reviewed", []))
            if reviewed:
                cases.append(TrainingCase(entry.id, str(entry.workspace / "image.nii.gz"),
                                          str(entry.workspace / "labels.nii.gz"), tuple(reviewed),
                                          state.get("slice_axis")))  # fmt: skip
        return cases

    def finetune(
        self,
        *,
        parent: Any = None,
        config: Any = None,
        steps: int | None = None,
        seconds: float | None = None,
        out: str | os.PathLike | None = None,
        seed: int = 0,
        stop: Callable[[], bool] = never,
    ) -> Job[CohortVersion]:
        """A job training one new version on every reviewed case (apply it with `adopt`).

        Args:
            parent: the parent `LoadedModel` (default: `model_path` loaded now).
            config: a `training.TrainConfig` (default: the recipe's).
            steps: step budget (overrides the config's).
            seconds: time budget (overrides the config's steps).
            out: the version's file (default: a new name in ``review/models/``).
            seed: sampling seed.
            stop: returns True to stop; the best state so far is kept.

        Raises:
            InputError: no reviewed case, or no model to start from.
        """
        from dataclasses import replace

        from napari_unet.cohort.train import cohort_finetune_steps
        from napari_unet.loop.steps import version_file
        from napari_unet.models.files import load_model
        from napari_unet.training import TrainConfig

        cases = self.training_cases()
        if not cases:
            raise InputError("no reviewed case yet: review and save at least one case first")
        if parent is None:
            if not self.model_path:
                raise InputError("no model to fine-tune: open the cohort's model first")
            parent = load_model(self.model_path)
        cfg = config or TrainConfig()
        if steps is not None or seconds is not None:
            cfg = replace(cfg, steps=steps, seconds=seconds if steps is None else None)
        if out is None:
            (self.root / "models").mkdir(parents=True, exist_ok=True)
            out = version_file(self.root / "models", parent.spec)
        note = f"cohort review of {self.source.name}: {len(cases)} cases"
        return cohort_finetune_steps(parent, cases, out=out, config=cfg, note=note, seed=seed,
                                     stop=stop)  # fmt: skip

    def adopt(self, version: CohortVersion) -> None:
        """Make a trained version the model cases open with (recorded in review.json)."""
        self._model = str(Path(version.path).absolute())
        self.versions.append({"path": self._model, "hash": version.hash,
                              "parent": version.parent, "cases": list(version.cases),
                              "val_dice": version.metrics.get("val_dice"),
                              "created": time.time()})  # fmt: skip
        self._write_state()


def load_review_labels(entry: ReviewEntry, *, volume: bool = False):
    """(labels, reviewed slices, slice axis or None) a case opens with.

    A case reviewed before comes back from its workspace (its labels and reviewed
    slices); otherwise the labels are the run's prediction (or the manifest's labels),
    nothing reviewed, or None when there are none.

    Args:
        entry: the case.
        volume: return the labels as a `Volume` (with its geometry) instead of an
            integer array ``(i, j, k)`` (uint8, or uint16 above 255).
    """
    import numpy as np

    from napari_unet.io.nifti import load_nifti

    state = _workspace_state(entry.workspace)
    if state is not None:
        labels = load_nifti(entry.workspace / "labels.nii.gz")
        reviewed = {int(i) for i in state.get("reviewed", [])}
        axis = state.get("slice_axis")
    elif entry.labels:
        labels, reviewed, axis = load_nifti(entry.labels), set(), None
    else:
        return None, set(), None
    array = np.asarray(labels.array)
    if array.dtype.kind == "f":
        array = np.rint(array)
    top = int(array.max()) if array.size else 0
    array = array.astype(np.uint8 if top < 256 else np.uint16)
    axis = int(axis) if isinstance(axis, int) else None
    return (labels.with_array(array) if volume else array), reviewed, axis


def _entry(record: dict[str, Any], root: Path) -> ReviewEntry:
    status = str(record.get("status", "failed"))
    output = record.get("output") if status in ("done", "skipped") else None
    unc = record.get("uncertainty")
    return ReviewEntry(str(record["id"]), str(record.get("input", "")), output, status,
                       float(unc) if isinstance(unc, int | float) else None,
                       root / str(record["id"]), error=record.get("error"))  # fmt: skip


def _workspace_state(folder: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((folder / WORKSPACE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _reviewed_count(folder: Path) -> int:
    state = _workspace_state(folder)
    reviewed = (state or {}).get("reviewed", [])
    return len(reviewed) if isinstance(reviewed, list) else 0

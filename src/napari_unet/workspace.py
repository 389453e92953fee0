"""The state of one interactive loop, saved and reopened as a folder. Plain Python.

A workspace folder holds::

    workspace.json     format, label names/colours, slice axis, reviewed slices,
                       model versions (file, hash, parent, metrics), the current one
    image.nii.gz       the scan (written once)
    labels.nii.gz      the current labels, on the scan's grid and affine
    models/<hash>.safetensors   one file per model version (lineage inside)

Every file is written atomically (temporary name, then rename), so a crash mid-save
leaves the previous save intact. Arrays are native ``(i, j, k)``; "slices" are indices
along ``slice_axis`` of that array (the scan's through-plane axis by default).

`Recovery` autosaves the labels and reviewed slices of a scan to a cache folder every
few seconds, so that a crash loses at most that much work; the next session finds it
with `Recovery.find` and offers to restore it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.errors import InputError
from napari_unet.io.nifti import load_nifti, save_nifti
from napari_unet.io.volume import Volume
from napari_unet.outputs import atomic_output

WORKSPACE_FORMAT = 1
WORKSPACE_FILE = "workspace.json"


@dataclass
class ModelVersion:
    """One model version of the workspace (the lineage itself is in the file)."""

    file: str  # relative to the workspace's models/ folder, or absolute
    hash: str
    parent: str | None = None
    created: float = field(default_factory=time.time)
    metrics: dict[str, Any] = field(default_factory=dict)
    note: str = ""


class Workspace:
    """Image, labels, reviewed slices and model versions of one correction loop.

    Args:
        image: the scan.
        labels: native ``(i, j, k)`` label map on the image's grid (zeros if None).
        label_names: foreground class names (label 1, 2, ...).
        label_colors: "#rrggbb" per class.
        slice_axis: native axis along which slices are reviewed (default: through-plane).
        folder: where `save` writes (None until saved).
    """

    def __init__(
        self,
        image: Volume,
        labels: np.ndarray | None = None,
        *,
        label_names: list[str] | None = None,
        label_colors: list[str] | None = None,
        slice_axis: int | None = None,
        folder: str | os.PathLike | None = None,
    ) -> None:
        self.image = image
        if labels is None:
            labels = np.zeros(image.shape, dtype=np.uint8)
        if tuple(labels.shape) != image.shape:
            raise InputError(
                f"labels of shape {tuple(labels.shape)} are not on the image's grid {image.shape}"
            )
        self.labels = labels
        self.label_names = list(label_names or [])
        self.label_colors = list(label_colors or [])
        self.slice_axis = image.through_plane_axis if slice_axis is None else int(slice_axis)
        if self.slice_axis not in (0, 1, 2):
            raise InputError(f"slice axis must be 0, 1 or 2, got {slice_axis!r}")
        self.reviewed: set[int] = set()
        self.models: list[ModelVersion] = []
        self.current: str | None = None
        self.folder = Path(folder) if folder is not None else None

    # --- reviewed slices -------------------------------------------------------------
    @property
    def n_slices(self) -> int:
        return self.image.shape[self.slice_axis]

    def mark_reviewed(self, indices) -> set[int]:
        """Mark slices as reviewed; returns those that were new."""
        new = {int(i) for i in np.atleast_1d(indices)} - self.reviewed
        bad = [i for i in new if not 0 <= i < self.n_slices]
        if bad:
            raise InputError(f"slice {bad[0]} is outside 0..{self.n_slices - 1}")
        self.reviewed |= new
        return new

    def unmark_reviewed(self, indices) -> None:
        self.reviewed -= {int(i) for i in np.atleast_1d(indices)}

    def reviewed_mask(self) -> np.ndarray:
        """Boolean ``(i, j, k)`` mask of the voxels in reviewed slices."""
        mask = np.zeros(self.image.shape, dtype=bool)
        index = [slice(None)] * 3
        index[self.slice_axis] = sorted(self.reviewed)
        mask[tuple(index)] = True
        return mask

    # --- model versions --------------------------------------------------------------
    def add_model(self, version: ModelVersion, *, make_current: bool = True) -> None:
        if any(v.hash == version.hash for v in self.models):
            return
        self.models.append(version)
        if make_current:
            self.current = version.hash

    def model_path(self, version_hash: str | None = None) -> Path | None:
        """The file of a version (the current one by default)."""
        wanted = version_hash or self.current
        for version in self.models:
            if version.hash == wanted:
                path = Path(version.file)
                if not path.is_absolute() and self.folder is not None:
                    path = self.folder / "models" / path
                return path
        return None

    def roll_back(self, version_hash: str) -> None:
        if not any(v.hash == version_hash for v in self.models):
            raise InputError(f"no model version {version_hash[:12]} in this workspace")
        self.current = version_hash

    # --- saving ------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike | None = None, *, checked: bool = False) -> Path:
        """Write the workspace (atomically, file by file) and return its folder.

        Args:
            folder: where to write (default: where it was saved or opened from).
            checked: the caller already ran `check_target` on ``folder``.
        """
        target = Path(folder) if folder is not None else self.folder
        if target is None:
            raise InputError("choose a folder to save the workspace in")
        if not checked:
            self.check_target(target)
        target.mkdir(parents=True, exist_ok=True)
        (target / "models").mkdir(exist_ok=True)
        if not (target / "image.nii.gz").exists():
            save_nifti(self.image, target / "image.nii.gz")
        save_nifti(self.image.with_array(self.labels), target / "labels.nii.gz")
        _write_text_atomic(target / WORKSPACE_FILE, json.dumps(self._state(), indent=2))
        self.folder = target
        return target

    def check_target(self, target: Path) -> None:
        """Refuse a folder that holds someone else's files or another scan's workspace."""
        if target.exists() and not target.is_dir():
            raise InputError(f"{target}: is a file, not a folder for a workspace")
        if not target.is_dir() or not any(target.iterdir()):
            return
        state_file = target / WORKSPACE_FILE
        if not state_file.is_file():
            raise InputError(
                f"{target}: folder is not empty and is not a napari-unet workspace; "
                "choose an empty or new folder (nothing in it was changed)"
            )
        if self.folder is not None and _same_folder(target, self.folder):
            return
        try:
            other = json.loads(state_file.read_text())
            same_scan = other.get("scan_key") == recovery_key(self.image)
        except (OSError, ValueError, AttributeError):
            same_scan = False
        if not same_scan:
            raise InputError(
                f"{target}: holds the workspace of another scan; choose another folder "
                "(nothing in it was changed)"
            )

    def _state(self) -> dict[str, Any]:
        return {
            "format": WORKSPACE_FORMAT,
            "image_source": self.image.source,
            "scan_key": recovery_key(self.image),
            "modality": self.image.modality,
            "label_names": self.label_names,
            "label_colors": self.label_colors,
            "slice_axis": self.slice_axis,
            "reviewed": sorted(self.reviewed),
            "models": [asdict(v) for v in self.models],
            "current": self.current,
            "saved": time.time(),
        }

    @classmethod
    def open(cls, folder: str | os.PathLike) -> Workspace:
        """Reopen a saved workspace.

        Raises:
            InputError: not a workspace folder, a newer format, or damaged files.
        """
        folder = Path(folder)
        state_file = folder / WORKSPACE_FILE
        if not state_file.is_file():
            raise InputError(f"{folder}: not a napari-unet workspace (no {WORKSPACE_FILE})")
        try:
            state = json.loads(state_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{state_file}: unreadable workspace file ({e})") from e
        if not isinstance(state, dict):
            raise InputError(f"{state_file}: damaged workspace file (not a JSON object)")
        try:
            version = int(state.get("format", 0))
        except (TypeError, ValueError):
            raise InputError(f"{state_file}: damaged workspace file (bad format)") from None
        if version > WORKSPACE_FORMAT:
            raise InputError(
                f"{state_file}: made by a newer napari-unet (format {version}); update"
            )
        image = load_nifti(folder / "image.nii.gz", modality=state.get("modality"))
        image.source = state.get("image_source") or image.source
        labels = load_nifti(folder / "labels.nii.gz").array
        try:
            workspace = cls(
                image,
                np.asarray(labels),
                label_names=state.get("label_names"),
                label_colors=state.get("label_colors"),
                slice_axis=state.get("slice_axis"),
                folder=folder,
            )
            workspace.reviewed = {int(i) for i in state.get("reviewed", [])}
            workspace.models = [ModelVersion(**v) for v in state.get("models", [])]
        except (TypeError, ValueError) as e:  # InputError is a ValueError too
            raise InputError(f"{state_file}: damaged workspace file ({e})") from None
        workspace.current = state.get("current")
        return workspace


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


# --- crash recovery ------------------------------------------------------------------------


def default_recovery_root() -> Path:
    env = os.environ.get("NAPARI_UNET_RECOVERY_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "napari-unet" / "recovery"


@dataclass
class RecoveryInfo:
    key: str
    image_source: str | None
    saved: float
    reviewed: list[int]
    folder: Path


class Recovery:
    """Autosave of one scan's labels and reviewed slices (fast: raw .npy, atomic)."""

    def __init__(self, image: Volume, *, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_recovery_root()
        self.key = recovery_key(image)
        self.folder = self.root / self.key
        self.image_source = image.source

    def write(self, labels: np.ndarray, reviewed, slice_axis: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.folder / "labels.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.asarray(labels))
        state = {
            "image_source": self.image_source,
            "saved": time.time(),
            "reviewed": sorted(int(i) for i in reviewed),
            "slice_axis": int(slice_axis),
        }
        _write_text_atomic(self.folder / "state.json", json.dumps(state))

    def load(self) -> tuple[np.ndarray, set[int], int] | None:
        """(labels, reviewed, slice_axis) of the last autosave, or None."""
        try:
            state = json.loads((self.folder / "state.json").read_text())
            labels = np.load(self.folder / "labels.npy", allow_pickle=False)
        except (OSError, ValueError):
            return None
        return labels, {int(i) for i in state["reviewed"]}, int(state["slice_axis"])

    def clear(self) -> None:
        for name in ("labels.npy", "state.json"):
            (self.folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # only if empty

    @staticmethod
    def find(root: str | os.PathLike | None = None) -> list[RecoveryInfo]:
        """Autosaves left by earlier sessions, newest first."""
        root = Path(root) if root is not None else default_recovery_root()
        found = []
        for state_file in root.glob("*/state.json"):
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                continue
            found.append(
                RecoveryInfo(
                    key=state_file.parent.name,
                    image_source=state.get("image_source"),
                    saved=float(state.get("saved", 0)),
                    reviewed=list(state.get("reviewed", [])),
                    folder=state_file.parent,
                )
            )
        return sorted(found, key=lambda r: r.saved, reverse=True)


def recovery_key(image: Volume) -> str:
    """Identifies a scan across sessions: its source, shape and affine."""
    text = json.dumps([image.source, list(image.shape), np.round(image.affine, 4).tolist()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]

"""One case of a cohort run, where it runs (a Dask worker or this process).

`ModelHolder` keeps one worker's model: loaded on first use, once, and reused for every
case that worker gets (`loads` counts the loads, and every record carries it, so a run
can show that no case reloaded the model). `predict_case` segments one scan through the
`Loop` exactly as ``napari-unet predict`` does for a single scan, writes the label map
atomically in the scan's geometry, and returns the case's record. It never raises for a
bad scan: the error becomes the record's one-line ``error`` and status ``failed``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from napari_unet.errors import InputError, ModelFileError
from napari_unet.text import printable

#: Longest error line kept in a record (characters).
MAX_ERROR = 500


class ModelHolder:
    """The model of one worker, loaded once on first use.

    Args:
        path: the model file.
        expected_hash: its content hash (read on the client); a file changed since
            is refused.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        name: names the worker in records (default: host and process id).
    """

    def __init__(self, path: str, expected_hash: str, device: str = "auto",
                 name: str | None = None) -> None:  # fmt: skip
        self.path = str(path)
        self.hash = expected_hash
        self.device = device
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.loads = 0
        self._model: Any = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        """The `LoadedModel` (loaded now if it was not yet).

        Raises:
            ModelFileError: the file cannot be loaded, or is not the one the run began with.
        """
        with self._lock:
            if self._error is not None:
                raise ModelFileError(self._error)
            if self._model is None:
                from napari_unet.models.files import load_model

                try:
                    loaded = load_model(self.path)
                    if self.hash and loaded.hash != self.hash:
                        raise ModelFileError(
                            f"{self.path}: the model file changed since the run started"
                        )
                except InputError as e:
                    self._error = str(e)
                    raise
                self.loads += 1
                self._model = loaded
            return self._model

    def release(self) -> None:
        with self._lock:
            self._model = None


def new_record(case: dict[str, Any], out: str, model_hash: str) -> dict[str, Any]:
    """A record with every key of the contract, before the case runs."""
    return {
        "id": case["id"],
        "input": case["image"],
        "output": out,
        "status": "failed",
        "seconds": None,
        "device": None,
        "model": model_hash,
        "uncertainty": None,
        "error": None,
    }


def predict_case(
    case: dict[str, Any],
    out: str,
    holder: ModelHolder,
    *,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Segment one scan and write ``out`` (NIfTI, the scan's grid and affine).

    Args:
        case: `manifest.Case.to_dict()`.
        out: the label map to write (replaced if it exists: the caller checked it).
        holder: the worker's model.
        batch_size: tiles or slices per forward pass (None: chosen for the device).

    Returns:
        The record: `manifest.RECORD_KEYS` plus ``shape``, ``foreground_voxels``,
        ``worker`` and ``model_loads``. ``uncertainty`` is the mean normalised softmax
        entropy (0–1) over the predicted foreground voxels, None when nothing was found.
    """
    t0 = time.perf_counter()
    record = new_record(case, out, holder.hash)
    record["worker"] = holder.name
    try:
        record.update(_predict(case, out, holder, batch_size))
        record["status"] = "done"
    except ModelFileError as e:
        record["error"] = _line(f"model: {e}")
        record["model_error"] = True
    except InputError as e:
        record["error"] = _line(e)
    except MemoryError as e:
        record["error"] = _line(f"{case['image']}: out of memory ({e or 'MemoryError'})")
    except Exception as e:  # one bad scan never stops the others
        kind = "out of memory" if type(e).__name__ == "OutOfMemoryError" else "internal error"
        record["error"] = _line(f"{case['image']}: {kind}: {type(e).__name__}: {e}")
    record["seconds"] = round(time.perf_counter() - t0, 3)
    record["model_loads"] = holder.loads
    return record


def _predict(case: dict[str, Any], out: str, holder: ModelHolder, batch_size: int | None):
    import numpy as np

    from napari_unet.inference.checks import check_finite_image
    from napari_unet.inference.preprocess import spec_slice_axis
    from napari_unet.io.reader import load_volume
    from napari_unet.jobs import run_job
    from napari_unet.loop import Loop

    loaded = holder.get()
    volume = load_volume(case["image"])
    check_finite_image(volume)
    axis = spec_slice_axis(loaded.spec, volume.through_plane_axis, None)
    loop = Loop(volume, slice_axis=axis, device=holder.device)
    loop.set_model(loaded)
    try:
        job = loop.predict(only_unreviewed=False, uncertainty=True, batch_size=batch_size)
        pred = run_job(job)
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{case['image']}: {e}") from None
    loop.merge(pred)
    loop.export(out, overwrite=True)
    foreground = np.asarray(pred.labels.array) > 0
    n = int(foreground.sum())
    unc = float(np.asarray(pred.uncertainty.array)[foreground].mean()) if n else None
    return {
        "device": pred.device,
        "uncertainty": None if unc is None else round(unc, 6),
        "foreground_voxels": n,
        "shape": list(volume.shape),
        "predict_seconds": round(pred.seconds, 3),
    }


def _line(text: object) -> str:
    return printable(text, limit=MAX_ERROR)

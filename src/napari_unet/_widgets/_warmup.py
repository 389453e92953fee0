"""Import the engine's heavy modules in a background thread when the panel opens.

The first prediction or fine-tune would otherwise import MONAI, the training modules and
``torch._dynamo`` (which ``torch.optim`` pulls in when the first optimizer is made) inside
the job; measured in napari, that froze the window for 2.0–2.6 s at the start of the
first fine-tune (benchmarks/bench_gui_stall.py). Importing them here, while the user is
still opening a scan and a model, leaves the jobs with nothing to import.
"""

from __future__ import annotations

import importlib
import threading

MODULES = (
    "torch",
    "monai.networks.nets",
    "monai.transforms",
    "monai.losses",
    "napari_unet.models.build",
    "napari_unet.models.files",
    "napari_unet.inference.predict",
    "napari_unet.training.trainer",
    "napari_unet.training.augment",
    "napari_unet.training.loss",
    "napari_unet.training.scoring",
    "napari_unet.training.versions",
    "napari_unet.loop",
)

_done = threading.Event()
_started = threading.Lock()
_thread: threading.Thread | None = None


def _import_all() -> None:
    from napari_unet._widgets import _gc_freeze

    _gc_freeze.job_started()  # the imports make objects by the 100 000
    try:
        for name in MODULES:
            importlib.import_module(name)
        import torch

        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # imports torch._dynamo
    except Exception:  # a failed warm-up only means a slower first job
        pass
    finally:
        _gc_freeze.job_ended()
        _done.set()


def done_event() -> threading.Event:
    """Set when the warm-up has finished (it may not have started yet)."""
    return _done


def start_warm_up() -> threading.Event:
    """Start importing (once per process); the returned event is set when done."""
    global _thread
    with _started:
        if _thread is None:
            _thread = threading.Thread(target=_import_all, name="napari-unet warm-up", daemon=True)
            _thread.start()
    return _done

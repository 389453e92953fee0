"""The Dask side of a cohort run: a `WorkerPlugin` holding the model, and the task.

Imported only where Dask ``distributed`` is installed (the ``cluster`` extra): on the
client by `cohort.run`, and on every worker when the plugin arrives there.

The plugin travels to each worker as a few strings (the model's path and hash, the
device); the worker loads the model itself, from the shared file system, on its first
case, and keeps it for the others. On a worker with several GPUs (a `LocalCluster` on a
multi-GPU machine) worker ``n`` takes GPU ``n mod count``.
"""

from __future__ import annotations

from typing import Any

from distributed import WorkerPlugin, get_worker

from napari_unet.cohort.case import ModelHolder, predict_case


class ModelPlugin(WorkerPlugin):
    """Keeps one `ModelHolder` per worker (see the module docstring).

    Args:
        path: the model file (readable from every worker).
        model_hash: its content hash.
        device: "auto", "cpu", "cuda" or "mps".
        threads: torch CPU threads per worker (None: the worker's thread count).
    """

    def __init__(self, path: str, model_hash: str, device: str = "auto",
                 threads: int | None = None) -> None:  # fmt: skip
        self.path, self.hash, self.device, self.threads = str(path), model_hash, device, threads
        self.holder: ModelHolder | None = None

    def setup(self, worker: Any) -> None:
        import torch

        threads = self.threads or max(1, int(getattr(worker.state, "nthreads", 1) or 1))
        torch.set_num_threads(threads)
        self.holder = ModelHolder(self.path, self.hash, _worker_device(self.device, worker),
                                  name=str(worker.address))  # fmt: skip

    def teardown(self, worker: Any) -> None:
        if self.holder is not None:
            self.holder.release()


def _worker_device(device: str, worker: Any) -> str:
    """This worker's device: with several GPUs, worker n (LocalCluster's names are
    0, 1, …) takes GPU n mod count; otherwise the device as given."""
    if device not in ("auto", "cuda"):
        return device
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count <= 1:
        return device
    try:
        index = int(str(worker.name).rsplit("-", 1)[-1])
    except ValueError:
        return device
    return f"cuda:{index % count}"


def run_case(case: dict[str, Any], out: str, plugin_name: str, batch_size: int | None):
    """The task: predict one case on this worker with the worker's model."""
    plugin = get_worker().plugins[plugin_name]
    return predict_case(case, out, plugin.holder, batch_size=batch_size)

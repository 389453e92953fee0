"""Predict a cohort: every case through the same model, locally or on a Dask cluster.

    job = predict_cohort_steps("model.safetensors", collect_cases(["scans/"]), "out/")
    result = run_job(job)            # or predict_cohort(...)
    result.failed, result.records    # OUT/cohort.jsonl holds the same records

Where the cases run:

* one worker and no scheduler: in this process, one case after another (no Dask);
* ``workers=N`` (default: sized to the machine) without a scheduler: a Dask
  `LocalCluster` of N worker *processes* with one thread each (one torch thread per
  worker, so N workers use N cores) — or, with CUDA GPUs, one worker per GPU, each
  advertising a ``GPU`` resource that every task asks for;
* ``scheduler="tcp://HOST:PORT"``: an existing Dask cluster (dask-jobqueue on SLURM/PBS,
  Kubernetes, ``dask scheduler`` + ``dask worker``); inputs, outputs and the model
  must be on a file system every worker sees. ``workers=N`` then waits for N workers.

The model is loaded once per worker (`cohort.worker.ModelPlugin`), never per case.
Every case ends in a record (`manifest.RECORD_KEYS`); a bad scan fails alone. Outputs
are written atomically, records appended as cases finish: an interrupted run loses at
most the cases in flight, and ``resume=True`` skips the cases already done with the
same model (same content hash) whose output is still there.

Dask ``distributed`` is needed only for more than one worker (the ``cluster`` extra).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_unet.cohort.case import ModelHolder, new_record, predict_case
from napari_unet.cohort.manifest import (
    RECORD_FILE,
    Case,
    append_record,
    read_records,
    write_records,
)
from napari_unet.errors import InputError
from napari_unet.jobs import Job, Progress, never
from napari_unet.outputs import check_output, check_writable, remove_stale_temps

#: Largest number of local workers asked for.
MAX_WORKERS = 1024
#: Memory a local CPU worker is given at least (bytes): more workers than RAM allows
#: would only swap or be killed by Dask's memory monitor.
WORKER_MEMORY = 2 * 1024**3
#: Seconds to wait for a scheduler to answer, and for the asked-for workers.
CONNECT_TIMEOUT = 20.0


@dataclass
class CohortResult:
    """A cohort run's outcome.

    Attributes:
        out_dir: the output folder (``cohort.jsonl`` inside).
        model: the model's content hash.
        records: one record per case, in input order.
        seconds: wall time of the run (setup included).
        workers: the workers that ran cases (1 in-process).
        scheduler: "in-process", "local" or the scheduler's address.
        model_loads: loads of the model per worker that ran a case.
    """

    out_dir: Path
    model: str
    records: list[dict[str, Any]]
    seconds: float
    workers: int
    scheduler: str
    model_loads: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.records)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    def summary(self) -> dict[str, Any]:
        """The run as one JSON-ready dict (``predict --json``)."""
        ran = self.done + self.failed
        return {
            "out": str(self.out_dir),
            "manifest": str(self.out_dir / RECORD_FILE),
            "model": self.model,
            "cases": len(self.records),
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "scans_per_minute": round(60.0 * ran / self.seconds, 3) if self.seconds else None,
            "workers": self.workers,
            "scheduler": self.scheduler,
            "model_loads": self.model_loads,
            "records": self.records,
        }


@dataclass
class Plan:
    """What a run will do, decided (and checked) before any case runs."""

    todo: list[tuple[Case, Path]]
    skipped: list[dict[str, Any]]
    previous: dict[str, dict[str, Any]]


def output_path(out_dir: Path, case: Case) -> Path:
    return out_dir / f"{case.id}.nii.gz"


def plan_run(
    model: str | os.PathLike,
    model_hash: str,
    cases: Sequence[Case],
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> Plan:
    """Check every output before any work and decide which cases to run.

    Raises:
        InputError: the folder cannot be made or written; an output would replace an
            input; an output exists that this run may not replace (neither ``resume``
            for a case of an earlier run, nor ``overwrite``).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: is a file; with several inputs -o names a folder")
    if not out.exists():
        if not out.parent.is_dir():
            raise InputError(f"-o {out}: folder {out.parent} does not exist")
        try:
            out.mkdir()
        except OSError as e:
            raise InputError(f"-o {out}: cannot create the folder ({e.strerror or e})") from None
    check_writable(out, what=f"-o {out}")
    remove_stale_temps(out)
    previous = read_records(out)
    todo, skipped = [], []
    for case in cases:
        path = output_path(out, case)
        check_output(path, overwrite=True, inputs=[case.image, case.labels, model],
                     option="-o")  # fmt: skip
        old = previous.get(case.id)
        ours = old is not None and Path(str(old.get("output"))) == path
        if (
            resume
            and ours
            and old.get("status") in ("done", "skipped")
            and old.get("model") == model_hash
            and path.is_file()
        ):
            skipped.append({**old, "status": "skipped"})
            continue
        if path.exists() and not overwrite and not (resume and ours):
            raise InputError(
                f"-o {out}: {path.name} already exists (use --resume to keep the finished "
                "cases of an earlier run, or --overwrite to redo them)"
            )
        todo.append((case, path))
    return Plan(todo, skipped, previous)


def default_workers(device: str = "auto") -> tuple[int, int]:
    """(workers, GPUs) for a local cluster: one per GPU, else one per core (within RAM)."""
    gpus = 0
    if device in ("auto", "cuda"):
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        return gpus, gpus
    cores = os.cpu_count() or 1
    try:
        import psutil

        by_memory = max(1, int(psutil.virtual_memory().total // WORKER_MEMORY))
    except ImportError:
        by_memory = cores
    return max(1, min(cores, by_memory)), 0


def predict_cohort_steps(
    model: str | os.PathLike,
    cases: Sequence[Case],
    out_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    batch_size: int | None = None,
    stop: Callable[[], bool] = never,
) -> Job[CohortResult]:
    """Predict every case, as a long job (see the module docstring).

    Args:
        model: the model file (every worker must be able to read it).
        cases: from `manifest.collect_cases`.
        out_dir: the output folder (created if its parent exists).
        workers: worker processes (None: sized to the machine; 1 and no scheduler:
            in this process).
        scheduler: address of an existing Dask scheduler.
        resume: skip cases done with the same model in an earlier run.
        overwrite: redo and replace existing outputs.
        device: where the network runs on each worker.
        batch_size: tiles or slices per forward pass.
        stop: returns True to stop; cases in flight are cancelled, finished ones kept.

    Yields:
        Progress after each case: done = cases finished (failed included), total =
        cases to run, data = ``{"done", "failed", "skipped", "id", "status"}``.

    Returns:
        CohortResult (also written to ``OUT_DIR/cohort.jsonl``).
    """
    from napari_unet.models.files import read_model_header

    t0 = time.perf_counter()
    if workers is not None and not 1 <= int(workers) <= MAX_WORKERS:
        raise InputError(f"--workers must be from 1 to {MAX_WORKERS}, got {workers!r}")
    model = str(model)
    model_hash = read_model_header(model)["hash"]
    out = Path(out_dir).absolute()
    plan = plan_run(model, model_hash, cases, out, resume=resume, overwrite=overwrite)
    results: dict[str, dict[str, Any]] = {r["id"]: r for r in plan.skipped}
    counts = {"done": 0, "failed": 0, "skipped": len(plan.skipped)}
    total = len(plan.todo)

    def finished(record: dict[str, Any]) -> Progress:
        record.setdefault("model_file", os.path.abspath(model))
        append_record(out, record)
        results[record["id"]] = record
        counts[record["status"]] += 1
        done = counts["done"] + counts["failed"]
        return Progress(done, total, f"{record['id']}: {record['status']}",
                        {**counts, "id": record["id"], "status": record["status"]})  # fmt: skip

    runner, where = _start_runner(model, model_hash, plan, device, batch_size, stop, workers,
                                  scheduler)  # fmt: skip
    loads: dict[str, int] = {}
    try:
        yield Progress(0, total, "starting", {**counts})
        if runner is not None:
            for record in runner:
                if record.get("worker") is not None:
                    name = str(record["worker"])
                    loads[name] = max(loads.get(name, 0), int(record.get("model_loads") or 0))
                yield finished(record)
                if record.get("model_error"):
                    raise InputError(record["error"])
    finally:
        if runner is not None:
            runner.close()
        ordered = _write_manifest(out, cases, results, plan.previous)
    return CohortResult(out, model_hash, ordered, time.perf_counter() - t0, len(loads), where,
                        loads)  # fmt: skip


def predict_cohort(model, cases, out_dir, *, progress=None, **options: Any) -> CohortResult:
    """Run `predict_cohort_steps` to its end (same arguments); ``progress(done, total)``."""
    from napari_unet.jobs import run_job

    return run_job(predict_cohort_steps(model, cases, out_dir, **options), progress)


def _start_runner(model, model_hash, plan: Plan, device, batch_size, stop, workers, scheduler):
    """(records generator or None when there is nothing to run, where it runs): in this
    process for one local worker, else on Dask (connected now)."""
    if not plan.todo:
        return None, "in-process"
    if scheduler is None:  # never more local workers than cases
        workers = min(workers or default_workers(device)[0], len(plan.todo))
    if scheduler is None and workers == 1:
        return _in_process(model, model_hash, plan, device, batch_size, stop), "in-process"
    runner = _on_dask(model, model_hash, plan, device, batch_size, stop, workers, scheduler)
    return runner, scheduler or "local"


def _write_manifest(
    out: Path,
    cases: Sequence[Case],
    results: dict[str, dict[str, Any]],
    previous: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Rewrite ``cohort.jsonl``: this run's records in input order, then the earlier
    run's records of cases not in this run; this run's records."""
    ordered = [results[c.id] for c in cases if c.id in results]
    ran = {c.id for c in cases}
    others = [r for i, r in previous.items() if i not in ran]
    if ordered or others:
        write_records(out, ordered + others)
    return ordered


def _in_process(model, model_hash, plan: Plan, device, batch_size, stop):
    holder = ModelHolder(model, model_hash, device)
    for case, path in plan.todo:
        if stop():
            return
        yield predict_case(case.to_dict(), str(path), holder, batch_size=batch_size)


def _on_dask(model, model_hash, plan: Plan, device, batch_size, stop, workers, scheduler):
    """Connect (or start a local cluster) now; return a generator of records as the
    cluster finishes cases, which cancels the rest and disconnects when closed."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError(
            "several workers need Dask distributed: pip install 'napari-unet[cluster]' "
            "(or use --workers 1)"
        ) from None
    client, cluster, gpus = _connect(Client, workers, scheduler, device)
    return _dask_records(client, cluster, gpus, model, model_hash, plan, device, batch_size, stop)


def _dask_records(client, cluster, gpus, model, model_hash, plan: Plan, device, batch_size, stop):
    from distributed import as_completed

    from napari_unet.cohort.worker import ModelPlugin, run_case

    futures = []
    try:
        name = f"napari-unet-model-{model_hash[:16]}"
        client.register_plugin(ModelPlugin(model, model_hash, device), name=name)
        resources = {"GPU": 1} if gpus else None
        by_key = {}
        for case, path in plan.todo:
            future = client.submit(run_case, case.to_dict(), str(path), name, batch_size,
                                   key=f"napari-unet-{case.id}-{time.monotonic_ns()}",
                                   pure=False, resources=resources)  # fmt: skip
            futures.append(future)
            by_key[future.key] = (case, path)
        for future in as_completed(futures):
            if stop():
                return
            case, path = by_key[future.key]
            try:
                record = future.result()
            except Exception as e:  # the worker died (killed, out of memory, crashed)
                record = new_record(case.to_dict(), str(path), model_hash)
                record["error"] = (f"{case.image}: the worker running it died or was lost "
                                   f"({type(e).__name__}: {e})")[:500]  # fmt: skip
            yield record
    finally:
        for future in futures:
            future.cancel()
        client.close()
        if cluster is not None:
            cluster.close()


def _connect(client_cls, workers, scheduler, device):
    """(client, cluster or None, GPUs used as resources)."""
    import logging

    if scheduler is not None:
        try:
            client = client_cls(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as e:
            raise InputError(f"--scheduler {scheduler}: cannot connect ({e})") from None
        if workers:
            try:
                client.wait_for_workers(int(workers), timeout=CONNECT_TIMEOUT)
            except TimeoutError:
                client.close()
                raise InputError(
                    f"--scheduler {scheduler}: fewer than {workers} workers after "
                    f"{CONNECT_TIMEOUT:.0f} s"
                ) from None
        info = client.scheduler_info().get("workers", {})
        gpus = bool(info) and all("GPU" in (w.get("resources") or {}) for w in info.values())
        return client, None, gpus
    from distributed import LocalCluster

    n, gpus = default_workers(device)
    n = int(workers or n)
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        resources={"GPU": 1} if gpus else None,
        silence_logs=logging.ERROR,
    )
    return client_cls(cluster), cluster, bool(gpus)

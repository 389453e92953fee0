"""Many scans: cohort manifests, prediction on Dask, training on many volumes (DDP), review.

No Qt. torch loads only when a case runs or a model trains; Dask ``distributed`` (the
``cluster`` extra) only for more than one worker. The CLI (``napari-unet predict`` with
several inputs, ``napari-unet train --cohort``) and the napari Cohort dock call these::

    from napari_unet.cohort import collect_cases, predict_cohort, CohortReview

    cases = collect_cases(["scans/", "more/*.nii.gz"])       # or a CSV/TSV manifest
    result = predict_cohort("model.safetensors", cases, "out/", workers=2)
    review = CohortReview.open("out/")
    entry = review.next_to_review()                           # most uncertain unreviewed
    loop = review.open_loop(entry)                            # correct it, then
    review.save(entry, loop)                                  # out/review/<id>/
    version = run_job(review.finetune(steps=300))             # one version on all reviewed

Modules: `manifest` (cases, manifests, ``cohort.jsonl``), `run` (prediction, local or on
a cluster), `case` (one case on a worker), `worker` (the Dask plugin), `train` (training
on many labelled volumes, ``torchrun`` launch), `review` (the review queue).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "Case": "napari_unet.cohort.manifest",
    "collect_cases": "napari_unet.cohort.manifest",
    "is_cohort_input": "napari_unet.cohort.manifest",
    "read_manifest": "napari_unet.cohort.manifest",
    "write_manifest": "napari_unet.cohort.manifest",
    "read_records": "napari_unet.cohort.manifest",
    "CohortResult": "napari_unet.cohort.run",
    "predict_cohort": "napari_unet.cohort.run",
    "predict_cohort_steps": "napari_unet.cohort.run",
    "TrainingCase": "napari_unet.cohort.train",
    "CohortVersion": "napari_unet.cohort.train",
    "training_cases": "napari_unet.cohort.train",
    "cohort_finetune_steps": "napari_unet.cohort.train",
    "CohortReview": "napari_unet.cohort.review",
    "ReviewEntry": "napari_unet.cohort.review",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

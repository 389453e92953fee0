"""Learning from corrections: sparse-label data, fine-tuning, scoring and storing
versions (`scoring`, `versions`). The simulated user lives in `napari_unet.loop.simulation`.

Entry points (torch loads on first use of any of them):

* `sparse_volume(image, labels, spec, slices=…, ignore_label=…)` → `SparseVolume`;
* `finetune_steps(model, spec, data, replay=…, config=TrainConfig(…), stop=…)` → a
  long job returning `FinetuneResult`; `finetune(...)` drains it;
* `save_version(path, result)` → content hash; `version_history(path)`; rollback is
  `models.load_model` of an older file;
* `recommended_spec(labels, modality=…)` — the network the defaults were tuned for.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "SparseVolume": "napari_unet.training.data",
    "sparse_volume": "napari_unet.training.data",
    "reviewed_mask": "napari_unet.training.data",
    "check_same_grid": "napari_unet.training.data",
    "TrainConfig": "napari_unet.training.config",
    "FinetuneResult": "napari_unet.training.trainer",
    "finetune_steps": "napari_unet.training.trainer",
    "finetune": "napari_unet.training.trainer",
    "MaskedDiceCELoss": "napari_unet.training.loss",
    "dice_per_class": "napari_unet.evaluation.metrics",
    "DriftCheck": "napari_unet.training.scoring",
    "check_drift": "napari_unet.training.scoring",
    "lineage_for": "napari_unet.training.versions",
    "save_version": "napari_unet.training.versions",
    "version_history": "napari_unet.training.versions",
    "recommended_spec": "napari_unet.training.recipe",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

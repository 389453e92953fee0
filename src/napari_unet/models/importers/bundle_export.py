"""Write one of our model files as a MONAI bundle folder (for MONAI Label, 3D Slicer).

The folder follows the Model Zoo layout::

    OUT_DIR/configs/metadata.json    network_data_format with channel_def (label names)
    OUT_DIR/configs/inference.json   plain network_def, standard transforms, inferer,
                                     evaluator (what ``python -m monai.bundle run`` needs)
    OUT_DIR/models/model.pt          the network's state dict (torch.save of tensors)
    OUT_DIR/docs/README.md           what it is and where it came from

``network_def`` names the MONAI class and literal arguments; the preprocessing is the
spec's: ``Orientationd`` (``spec.orientation``), ``Spacingd`` (``target_spacing``, a
non-positive pixdim keeps the scan's), then ``ScaleIntensityRanged`` (CT window) or
``ScaleIntensityRangePercentilesd`` + ``NormalizeIntensityd`` (our MR z-score; MONAI
takes the percentiles over all voxels and leaves zeros at zero with ``nonzero``, so
MR predictions can differ slightly from ours). 3D models run in a
``SlidingWindowInferer`` (``roi_size`` = patch, gaussian blending), 2D models without
context slices in a ``SliceInferer`` along their slice axis; 2D models with context
slices and nnU-Net networks have no plain MONAI equivalent and are refused. The
``$`` expressions in the config (device, data list, evaluator) are MONAI's usual ones:
our importer ignores them, and importing the exported folder gives back the same
network and predictions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from napari_unet.errors import InputError
from napari_unet.models.spec import ModelSpec

_CLASSES = {
    "unet": "UNet",
    "resunet": "UNet",
    "attention_unet": "AttentionUnet",
    "classic_unet": "BasicUNet",
    "segresnet": "SegResNet",
    "dynunet": "DynUNet",
    "swin_unetr": "SwinUNETR",
    "unetr": "UNETR",
}


def network_def(spec: ModelSpec) -> dict[str, Any]:
    """The plain MONAI ``network_def`` of a spec (raises InputError for nnU-Net networks)."""
    if spec.arch not in _CLASSES:
        raise InputError(
            f"a {spec.arch} network has no plain MONAI network_def; only MONAI networks "
            "can be exported as a bundle"
        )
    args = dict(spec.arch_args)
    if spec.arch in ("unet", "resunet"):
        args.setdefault("num_res_units", 2 if spec.arch == "resunet" else 0)
    if spec.arch == "dynunet":
        args["deep_supervision"] = False
    out = {"_target_": f"monai.networks.nets.{_CLASSES[spec.arch]}"}
    out.update(spatial_dims=spec.spatial_dims, in_channels=spec.in_channels,
               out_channels=spec.out_channels)  # fmt: skip
    out.update(args)
    return json.loads(json.dumps(out))


def preprocessing(spec: ModelSpec) -> list[dict[str, Any]]:
    """The standard MONAI transforms reproducing the spec's preprocessing."""
    t: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
    ]
    if spec.orientation:
        t.append({"_target_": "Orientationd", "keys": "image", "axcodes": spec.orientation})
    if spec.target_spacing and any(s is not None for s in spec.target_spacing):
        pixdim = [-1.0 if s is None else float(s) for s in spec.target_spacing]
        t.append({"_target_": "Spacingd", "keys": "image", "pixdim": pixdim, "mode": "bilinear"})
    norm = spec.normalization
    if norm.mode == "ct":
        t.append({"_target_": "ScaleIntensityRanged", "keys": "image",
                  "a_min": norm.window[0], "a_max": norm.window[1],
                  "b_min": norm.output_range[0], "b_max": norm.output_range[1],
                  "clip": True})  # fmt: skip
    elif norm.mode == "mr":
        lo, hi = norm.percentiles
        if (lo, hi) != (0.0, 100.0):
            t.append({"_target_": "ScaleIntensityRangePercentilesd", "keys": "image",
                      "lower": lo, "upper": hi, "b_min": None, "b_max": None,
                      "clip": True})  # fmt: skip
        t.append({"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": norm.nonzero})
    t.append({"_target_": "EnsureTyped", "keys": "image"})
    return t


def inference_config(spec: ModelSpec) -> dict[str, Any]:
    """The whole ``configs/inference.json`` (Model Zoo layout)."""
    inferer = _inferer(spec)  # its InputError first, as before network_def's
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii*')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def(spec),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing(spec)},
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": inferer,
        "postprocessing": _postprocessing(),
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
                "strict": True,
            },
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


def _inferer(spec: ModelSpec) -> dict[str, Any]:
    """``SliceInferer`` along the slice axis for a 2D model (refused with context slices,
    InputError), else ``SlidingWindowInferer``; both over the spec's patch."""
    if spec.spatial_dims == 2:
        if spec.context_slices:
            raise InputError(
                "a 2D model with neighbouring slices as channels has no standard MONAI "
                "inferer; export a 3D model or a 2D model with 0 context slices"
            )
        axis = spec.slice_axis if spec.slice_axis is not None else 2
        return {"_target_": "SliceInferer", "spatial_dim": axis,
                "roi_size": list(spec.patch_size), "sw_batch_size": 4, "overlap": 0.25,
                "mode": "gaussian"}  # fmt: skip
    return {"_target_": "SlidingWindowInferer", "roi_size": list(spec.patch_size),
            "sw_batch_size": 4, "overlap": 0.25, "mode": "gaussian"}  # fmt: skip


def _postprocessing() -> dict[str, Any]:
    """Softmax, invert the preprocessing, argmax, save as ``*_seg`` in ``@output_dir``."""
    return {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "image",
                "nearest_interp": False,
                "to_tensor": True,
            },
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {
                "_target_": "SaveImaged",
                "keys": "pred",
                "output_dir": "@output_dir",
                "output_postfix": "seg",
                "resample": False,
                "separate_folder": False,
            },
        ],
    }


def metadata(spec: ModelSpec, lineage: dict[str, Any], digest: str) -> dict[str, Any]:
    """``configs/metadata.json``: versions, label names (channel_def), provenance."""
    import monai
    import numpy
    import torch

    from napari_unet import __version__

    channel_def = {"0": "background", **{str(i): n for i, n in enumerate(spec.labels, 1)}}
    patch = list(spec.patch_size)
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by napari-unet {__version__}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"nibabel": _version("nibabel")},
        "name": spec.name or "napari-unet model",
        "task": f"segmentation of {', '.join(spec.labels)}",
        "description": "A napari-unet model (fine-tuned on corrected slices), exported as a "
        "MONAI bundle.",
        "authors": "napari-unet user",
        "copyright": "the model's authors",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if spec.modality == "CT" else "magnitude",
                    "modality": spec.modality,
                    "num_channels": 1,
                    "spatial_shape": patch,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": spec.out_channels,
                    "spatial_shape": patch,
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": channel_def,
                }
            },
        },
        "napari_unet": {
            "hash": digest,
            "colors": list(spec.colors),
            "parent": lineage.get("parent"),
            "created": lineage.get("created"),
        },
    }


def export_bundle(
    model: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write a model file as a MONAI bundle folder.

    Args:
        model: one of our ``.safetensors`` model files.
        out_dir: the bundle folder to create (it must not exist, or be empty, unless
            ``overwrite``).
        overwrite: replace the bundle's files in an existing folder.

    Returns:
        The folder.

    Raises:
        InputError / ModelFileError: an unreadable model, a network or layout with no
            MONAI equivalent, an output folder that is not empty.
    """
    import torch

    from napari_unet.models.files import load_model
    from napari_unet.outputs import atomic_output, check_output

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: folder is not empty (choose a new folder, or overwrite)")
    if Path(model).resolve() == out.resolve() or out.resolve() in Path(model).resolve().parents:
        raise InputError(f"{out}: would hold or replace the model file itself")
    loaded = load_model(model)
    spec = loaded.spec
    config = inference_config(spec)  # refuses what MONAI cannot express, before writing
    meta = metadata(spec, loaded.lineage, loaded.hash)
    for sub in ("configs", "models", "docs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    files = {
        "configs/inference.json": json.dumps(config, indent=2),
        "configs/metadata.json": json.dumps(meta, indent=2),
        "docs/README.md": _readme(spec, loaded.hash),
    }
    for rel, text in files.items():
        target = check_output(out / rel, overwrite=True)
        with atomic_output(target) as tmp:
            Path(tmp).write_text(text + "\n", encoding="utf-8")
    state = {k: v.detach().cpu().contiguous() for k, v in loaded.model.state_dict().items()}
    with atomic_output(check_output(out / "models" / "model.pt", overwrite=True)) as tmp:
        torch.save(state, tmp)
    return out


def _readme(spec: ModelSpec, digest: str) -> str:
    return (
        f"# {spec.name or 'napari-unet model'}\n\n"
        f"Segments {', '.join(spec.labels)} ({spec.spatial_dims}D {spec.arch}, "
        f"{spec.modality}). Exported by napari-unet from the model whose tensors hash to "
        f"`{digest}`.\n\nRun: `python -m monai.bundle run --config_file configs/inference.json "
        "--dataset_dir /path/to/niftis`.\n"
    )


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""

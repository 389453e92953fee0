"""Foreign model folders built by the tests, in the exact formats (nothing downloaded).

* `small_ct`: the CT-like phantom at half resolution (96 × 72 × 24 voxels of
  3.2 × 3.2 × 6 mm, LPS-stored), a fast stand-in for an abdominal CT.
* `train`: a few seconds of CPU training so that predictions are confident (agreement
  between implementations is then about the implementations, not about near-ties).
* `write_bundle`: a MONAI bundle laid out like a Model Zoo one, ``$`` expressions in
  ``imports``/``device``/``network`` included.
* `write_nnunet`: an nnU-Net v2 results folder; the checkpoint is saved the way
  ``nnUNetTrainer.save_checkpoint`` saves it (optimizer state, a training log of numpy
  floats, ``init_args`` with a ``torch.device``).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from napari_unet.io.volume import Volume
from napari_unet.samples.phantom import ct_affine, make_ct_abdomen

LABELS = ["liver", "kidney", "spleen"]


def small_ct(
    seed: int = 7, *, step: int = 4, contrast: float = 1.0, noise: float = 0.0
) -> tuple[Volume, Volume]:
    """The phantom subsampled by ``step``: (image in HU, labels), LPS-stored.

    ``step=4``: 48 × 36 × 12 voxels of 6.4 × 6.4 × 12 mm (fast tests); ``step=2``:
    96 × 72 × 24 of 3.2 × 3.2 × 6 mm. ``contrast`` scales soft-tissue HU around 40 and
    ``noise`` adds Gaussian HU noise (the benchmark's domain shift uses the same knobs).
    """
    sample = make_ct_abdomen(seed)
    hu = ndimage.uniform_filter(sample.image.array.astype(np.float32), step)[::step, ::step, ::step]
    lab = sample.labels.array[::step, ::step, ::step]
    soft = (hu > -200) & (hu < 300)
    hu = np.where(soft, 40 + (hu - 40) * contrast, hu)
    if noise:
        hu = hu + np.random.default_rng(seed).normal(0, noise, hu.shape).astype(np.float32)
    spacing = (1.6 * step, 1.6 * step, 3.0 * step)
    affine = ct_affine(lab.shape, spacing)
    image = Volume(np.round(hu).astype(np.int16), affine, "CT", source="test:small_ct")
    return image, Volume(np.ascontiguousarray(lab), affine, "CT", source="test:small_ct_labels")


def train(
    net: torch.nn.Module,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int = 60,
    lr: float = 1e-2,
    seed: int = 0,
    multiple: int = 8,
    patch: tuple[int, ...] | None = None,
) -> torch.nn.Module:
    """Fit a 3D network on one normalised volume (CE loss); returned in eval mode.

    The volume is padded (zeros, label 0) to a multiple of ``multiple`` and at least
    ``patch``; each step sees the whole volume, or a random ``patch`` of it (as a
    sliding-window model is trained). Batch-norm statistics are recomputed over the
    whole volume at the end, so that eval mode reproduces what was learned.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    least = patch or (0,) * image.ndim
    pad = [(0, max(-n % multiple, p - n)) for n, p in zip(image.shape, least, strict=False)]
    x = np.pad(np.asarray(image, dtype=np.float32), pad)
    y = np.pad(np.asarray(labels, dtype=np.int64), pad)
    xt, yt = torch.as_tensor(x)[None, None], torch.as_tensor(y)[None]
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        xb, yb = xt, yt
        if patch is not None:
            c = [int(rng.integers(0, n - p + 1)) for n, p in zip(x.shape, patch, strict=False)]
            box = tuple(slice(a, a + p) for a, p in zip(c, patch, strict=False))
            xb, yb = xt[(slice(None), slice(None), *box)], yt[(slice(None), *box)]
        out = net(xb)
        out = out[0] if isinstance(out, (list, tuple)) else out
        loss = torch.nn.functional.cross_entropy(out, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    if norms:
        with torch.no_grad():
            net(xt)
    return net.eval()


def train_patches(
    net: torch.nn.Module,
    volumes: list[tuple[np.ndarray, np.ndarray]],
    patch: tuple[int, ...],
    *,
    steps: int,
    batch: int = 2,
    lr: float = 1e-2,
    seed: int = 0,
) -> torch.nn.Module:
    """Fit a 3D network on random ``patch`` crops of several normalised volumes (one
    volume per step, in turn; CE loss), as a sliding-window model with per-tile
    statistics (instance norm) is trained; returned in eval mode.

    Runs on one thread: these tiny convolutions gain nothing from more, and lose much
    when the cores are shared.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    net.train()
    try:
        for step in range(steps):
            x, y = volumes[step % len(volumes)]
            pad = [(0, max(0, p - n)) for n, p in zip(x.shape, patch, strict=True)]
            x, y = np.pad(x, pad), np.pad(y, pad)
            xb, yb = [], []
            for _ in range(batch):
                c = [int(rng.integers(0, n - p + 1)) for n, p in zip(x.shape, patch, strict=True)]
                box = tuple(slice(a, a + p) for a, p in zip(c, patch, strict=True))
                xb.append(x[box])
                yb.append(y[box])
            out = net(torch.as_tensor(np.stack(xb), dtype=torch.float32)[:, None])
            out = out[0] if isinstance(out, (list, tuple)) else out
            loss = torch.nn.functional.cross_entropy(out, torch.as_tensor(np.stack(yb)).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def zoo_config(
    network_def: dict[str, Any],
    transforms: list[dict[str, Any]],
    roi_size: list[int],
    **extra: Any,
) -> dict[str, Any]:
    """An inference.json laid out like a Model Zoo bundle's (with its ``$`` expressions)."""
    config = {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": transforms},
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": roi_size,
            "sw_batch_size": 4,
            "overlap": 0.5,
            "mode": "gaussian",
        },
        "postprocessing": {
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
            ],
        },
        "run": ["$@evaluator.run()"],
    }
    config.update(extra)
    return config


def ct_transforms(pixdim: list[float] | None = None, axcodes: str | None = "RAS") -> list:
    t: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
    ]
    if axcodes:
        t.append({"_target_": "Orientationd", "keys": "image", "axcodes": axcodes})
    if pixdim:
        t.append({"_target_": "Spacingd", "keys": "image", "pixdim": pixdim, "mode": "bilinear"})
    t.append({"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -200, "a_max": 300,
              "b_min": 0.0, "b_max": 1.0, "clip": True})  # fmt: skip
    t.append({"_target_": "EnsureTyped", "keys": "image"})
    return t


def metadata(labels: list[str] = LABELS, **extra: Any) -> dict[str, Any]:
    channel_def = {"0": "background", **{str(i): n for i, n in enumerate(labels, 1)}}
    meta = {
        "name": "test bundle",
        "version": "0.0.1",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "modality": "CT", "num_channels": 1}},
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(labels) + 1,
                    "channel_def": channel_def,
                }
            },
        },
    }
    meta.update(extra)
    return meta


def write_bundle(
    folder: Path,
    config: dict[str, Any] | str,
    weights: dict[str, torch.Tensor] | bytes | None,
    *,
    meta: dict[str, Any] | None = None,
    config_name: str = "inference.json",
    weights_name: str = "model.pt",
) -> Path:
    """A bundle folder: configs/metadata.json, configs/<config_name>, models/<weights>."""
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    text = config if isinstance(config, str) else json.dumps(config, indent=1)
    if config_name.endswith((".yaml", ".yml")) and not isinstance(config, str):
        import yaml

        text = yaml.safe_dump(config)
    (folder / "configs" / config_name).write_text(text)
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta or metadata()))
    if isinstance(weights, bytes):
        (folder / "models" / weights_name).write_bytes(weights)
    elif weights is not None:
        torch.save(weights, folder / "models" / weights_name)
    return folder


def zip_folder(folder: Path, out: Path, *, top: str = "bundle") -> Path:
    """A zip of a bundle folder under one top folder, as Model Zoo archives are."""
    with zipfile.ZipFile(out, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{top}/{p.relative_to(folder).as_posix()}")
    return out


# --- nnU-Net ------------------------------------------------------------------------------


def nnunet_plans(
    *,
    patch: list[int],
    spacing: list[float],
    features: list[int],
    kernels: list[list[int]],
    strides: list[list[int]],
    properties: dict[str, float],
    scheme: str = "CTNormalization",
    transpose_forward: list[int] | None = None,
    old_format: bool = False,
) -> dict[str, Any]:
    """plans.json of nnU-Net 2.x for one 3d_fullres configuration (new or pre-2.3 layout)."""
    n = len(features)
    config: dict[str, Any] = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": patch,
        "median_image_size_in_voxels": patch,
        "spacing": spacing,
        "normalization_schemes": [scheme],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {
            "is_seg": False,
            "order": 3,
            "order_z": 0,
            "force_separate_z": None,
        },
        "resampling_fn_seg_kwargs": {
            "is_seg": True,
            "order": 1,
            "order_z": 0,
            "force_separate_z": None,
        },
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {
            "is_seg": False,
            "order": 1,
            "order_z": 0,
            "force_separate_z": None,
        },
        "batch_dice": False,
    }
    if old_format:
        config.update(UNet_class_name="PlainConvUNet", UNet_base_num_features=features[0],
                      unet_max_num_features=features[-1], n_conv_per_stage_encoder=[2] * n,
                      n_conv_per_stage_decoder=[2] * (n - 1), conv_kernel_sizes=kernels,
                      pool_op_kernel_sizes=strides)  # fmt: skip
    else:
        config["architecture"] = {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": n, "features_per_stage": features,
                "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": kernels,
                "strides": strides, "n_conv_per_stage": [2] * n,
                "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        }  # fmt: skip
    tf = transpose_forward or [0, 1, 2]
    return {
        "dataset_name": "Dataset501_Phantom",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": patch,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": tf,
        "transpose_backward": [tf.index(i) for i in range(3)],
        "configurations": {"3d_fullres": config},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": properties},
    }


def nnunet_dataset(labels: list[str] = LABELS) -> dict[str, Any]:
    return {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{n: i for i, n in enumerate(labels, 1)}},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }


def nnunet_checkpoint(net: torch.nn.Module, plans: dict, dataset: dict) -> dict[str, Any]:
    """What ``nnUNetTrainer.save_checkpoint`` writes, with a real optimizer and log."""
    opt = torch.optim.SGD(net.parameters(), 0.01, weight_decay=3e-5, momentum=0.99, nesterov=True)
    log: dict[str, list] = {k: [] for k in ("mean_fg_dice", "ema_fg_dice",
                                            "dice_per_class_or_region", "train_losses",
                                            "val_losses", "lrs", "epoch_start_timestamps",
                                            "epoch_end_timestamps")}  # fmt: skip
    tp, fp, fn = np.array([50.0, 30, 20]), np.array([5.0, 3, 2]), np.array([4.0, 2, 1])
    dice = [2 * i / (2 * i + j + k) for i, j, k in zip(tp, fp, fn, strict=False)]
    for _ in range(2):
        log["mean_fg_dice"].append(np.nanmean(dice))
        log["ema_fg_dice"].append(np.nanmean(dice) * 0.9)
        log["dice_per_class_or_region"].append(dice)
        log["train_losses"].append(np.vstack([np.float32(0.3)]).mean())
        log["val_losses"].append(np.mean(np.array([0.3, 0.2], dtype=np.float32)))
        log["lrs"].append(0.01)
        log["epoch_start_timestamps"].append(1.0)
        log["epoch_end_timestamps"].append(2.0)
    return {
        "network_weights": net.state_dict(),
        "optimizer_state": opt.state_dict(),
        "grad_scaler_state": None,
        "logging": log,
        "_best_ema": log["ema_fg_dice"][-1],
        "current_epoch": 2,
        "init_args": {
            "plans": plans,
            "configuration": "3d_fullres",
            "fold": 0,
            "dataset_json": dataset,
            "device": torch.device("cpu"),
        },
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }


def write_nnunet(
    root: Path,
    net: torch.nn.Module,
    plans: dict[str, Any],
    dataset: dict[str, Any] | None = None,
    *,
    fold: int = 0,
    checkpoint: dict[str, Any] | bytes | None = None,
) -> Path:
    """``root/Dataset501_Phantom/nnUNetTrainer__nnUNetPlans__3d_fullres`` with one fold."""
    dataset = dataset or nnunet_dataset()
    folder = root / "Dataset501_Phantom" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    target = folder / f"fold_{fold}" / "checkpoint_final.pth"
    if isinstance(checkpoint, bytes):
        target.write_bytes(checkpoint)
    else:
        torch.save(checkpoint or nnunet_checkpoint(net, plans, dataset), target)
    return folder


def write_nnunet_2d(root: Path, *, patch: list[int], spacing: list[float]):
    """A random 2d-configuration nnU-Net folder (PlainConvUNet 8-16, instance norm, seed 4;
    ``patch`` and ``spacing`` in nnU-Net's in-plane (y, x) order).

    Returns:
        (the network, in eval mode; the results folder).
    """
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    torch.manual_seed(4)
    kernels, strides = [[3, 3], [3, 3]], [[1, 1], [2, 2]]
    net = PlainConvUNet(1, 2, [8, 16], torch.nn.Conv2d, kernels, strides, [2, 2], 4, [2], True,
                        torch.nn.InstanceNorm2d, {"eps": 1e-5, "affine": True}, None, None,
                        torch.nn.LeakyReLU, {"inplace": True}).eval()  # fmt: skip
    props = {"mean": 40, "std": 30, "percentile_00_5": -100, "percentile_99_5": 200}
    plans = nnunet_plans(patch=patch, spacing=spacing, features=[8, 16], kernels=kernels,
                         strides=strides, properties=props)  # fmt: skip
    config = plans["configurations"].pop("3d_fullres")
    config["architecture"]["arch_kwargs"].update(conv_op="torch.nn.modules.conv.Conv2d",
                                                 norm_op="torch.nn.InstanceNorm2d")  # fmt: skip
    plans["configurations"]["2d"] = config
    ck = nnunet_checkpoint(net, plans, nnunet_dataset())
    ck["init_args"]["configuration"] = "2d"
    return net, write_nnunet(root, net, plans, checkpoint=ck)

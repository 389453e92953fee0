"""Import an nnU-Net v2 results folder (TotalSegmentator's task folders included).

A results folder (``nnUNet_results/DatasetXXX_Name/Trainer__Plans__Configuration``)
holds ``dataset.json``, ``plans.json`` and ``fold_N/checkpoint_final.pth`` (or
``checkpoint_best.pth``). What is read, and how it maps onto a `ModelSpec`:

* the network: ``plans.json`` → ``configurations[<configuration>].architecture``
  (``PlainConvUNet`` or ``ResidualEncoderUNet`` of ``dynamic_network_architectures``;
  older plans without ``architecture`` are rebuilt the way nnU-Net does). Layer names
  (``torch.nn.modules.conv.Conv3d`` …) are looked up in a fixed table, never imported
  by name. Built without deep supervision; the extra heads' weights stay in the state
  dict (dynamic_network_architectures always builds them) and are never computed.
* normalisation: ``CTNormalization`` → clip to the dataset's foreground
  ``percentile_00_5``/``percentile_99_5`` and z-score with its foreground ``mean``/``std``
  (``foreground_intensity_properties_per_channel`` of plans.json, else
  dataset_fingerprint.json) — exactly our "ct" mode with a window and an output range;
  ``ZScoreNormalization`` → per-scan z-score ("mr" mode, percentiles 0–100, nonzero
  statistics when ``use_mask_for_norm``); ``NoNormalization`` → none.
* axes: nnU-Net works on arrays as SimpleITK returns them, ``(z, y, x)`` of the image
  file: for a NIfTI file whose voxel ``(i, j, k)`` is our array's, SimpleITK's array
  is ``array.transpose(2, 1, 0)`` (NibabelIO does the same transpose), then plans'
  ``transpose_forward`` ``tf`` permutes it. So nnU-Net's axis ``m`` is our axis
  ``2 - tf[m]``; that permutation is ``arch_args.axis_order`` (applied inside the
  network by `build_model`), and ``spacing``/``patch_size`` are stored per our axis:
  ``target_spacing[2 - tf[m]] = spacing[m]``. Readers that reorient first
  (``NibabelIOWithReorient``) set ``orientation`` "RAS".
* prediction: ``inference_style`` "nnunet", so that the model is run as nnU-Net's
  predictor runs it (crop to nonzero, order-3 resampling, its sliding-window positions
  and gaussian, logits back linearly before the argmax: `napari_unet.inference
  .nnunet_style`); an instance-normalised network's answer depends on all of them.
* the checkpoint: ``torch.load(weights_only=True)`` with only `SAFE_GLOBALS` allowed
  (numpy scalars and dtypes that nnU-Net's training log holds), scoped to the call.

Not reproduced: test-time mirroring, the 5-fold ensemble (one fold is imported), and
for ZScore with ``use_mask_for_norm`` the zeroing outside the nonzero mask; they are
listed in the lineage. Cascades (3d_cascade_fullres) and region-based models are
refused.

TotalSegmentator: its task folders are nnU-Net results folders, e.g.
``~/.totalsegmentator/nnunet/results/Dataset291_TotalSegmentator_part1_organs_1559subj/
nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres``. TotalSegmentator reorients scans
to RAS (``nib.as_closest_canonical``) and resamples to 1.5 mm before nnU-Net sees
them, so import with ``orientation="RAS"`` (``--orientation RAS``), and keep the
classes you need with ``labels="liver,spleen"``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from napari_unet.errors import ModelFileError
from napari_unet.models.importers._source import (
    SourceFiles,
    load_weights,
    short,
    tensors_only,
)
from napari_unet.models.spec import ModelSpec, Normalization

_CLASSES = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet": "nnunet_plain",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet": "nnunet_resenc",
    "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet": (
        "nnunet_resenc"
    ),
    "PlainConvUNet": "nnunet_plain",
    "ResidualEncoderUNet": "nnunet_resenc",
}
#: Layer names in plans.json → the names `build_model` knows (spec.NNUNET_OPS).
_OPS = {
    "torch.nn.modules.conv.Conv2d": "Conv2d", "torch.nn.modules.conv.Conv3d": "Conv3d",
    "torch.nn.Conv2d": "Conv2d", "torch.nn.Conv3d": "Conv3d",
    "torch.nn.modules.instancenorm.InstanceNorm2d": "InstanceNorm2d",
    "torch.nn.modules.instancenorm.InstanceNorm3d": "InstanceNorm3d",
    "torch.nn.InstanceNorm2d": "InstanceNorm2d", "torch.nn.InstanceNorm3d": "InstanceNorm3d",
    "torch.nn.modules.batchnorm.BatchNorm2d": "BatchNorm2d",
    "torch.nn.modules.batchnorm.BatchNorm3d": "BatchNorm3d",
    "torch.nn.BatchNorm2d": "BatchNorm2d", "torch.nn.BatchNorm3d": "BatchNorm3d",
    "torch.nn.modules.dropout.Dropout": "Dropout", "torch.nn.Dropout": "Dropout",
    "torch.nn.modules.dropout.Dropout2d": "Dropout2d", "torch.nn.Dropout2d": "Dropout2d",
    "torch.nn.modules.dropout.Dropout3d": "Dropout3d", "torch.nn.Dropout3d": "Dropout3d",
    "torch.nn.LeakyReLU": "LeakyReLU", "torch.nn.modules.activation.LeakyReLU": "LeakyReLU",
    "torch.nn.ReLU": "ReLU", "torch.nn.modules.activation.ReLU": "ReLU",
    "torch.nn.PReLU": "PReLU", "torch.nn.modules.activation.PReLU": "PReLU",
    "torch.nn.GELU": "GELU", "torch.nn.modules.activation.GELU": "GELU",
    "torch.nn.ELU": "ELU", "torch.nn.modules.activation.ELU": "ELU",
    "dynamic_network_architectures.building_blocks.residual.BasicBlockD": "BasicBlockD",
    "dynamic_network_architectures.building_blocks.residual.BottleneckD": "BottleneckD",
}  # fmt: skip
_OP_KEYS = ("conv_op", "norm_op", "dropout_op", "nonlin", "block")
_READERS_REORIENT = {"NibabelIOWithReorient": "RAS"}
_READERS = {"SimpleITKIO", "NibabelIO", "SimpleITKIOWithReorient", *_READERS_REORIENT}
_MR_NAMES = re.compile(r"^(MR|MRI|T1|T2|FLAIR|ADC|DWI|PD|T1W|T2W|T1C|T1CE|T1GD|SWI)", re.I)


def safe_globals() -> list[Any]:
    """The only non-torch classes an nnU-Net checkpoint's pickle may build.

    Found by saving a checkpoint the way ``nnUNetTrainer.save_checkpoint`` does
    (network and optimizer state, its training log of numpy floats, ``init_args`` with
    a ``torch.device``): numpy's scalar constructor (numpy 2 and numpy 1 names) and the
    numeric dtypes. None of them can run code.
    """
    import numpy as np

    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    out: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    dtypes = getattr(np, "dtypes", None)
    for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType",
                 "BoolDType"):  # fmt: skip
        if dtypes is not None and hasattr(dtypes, name):
            out.append(getattr(dtypes, name))
    return out


def read_nnunet(
    source: str | os.PathLike,
    *,
    fold: int | str | None = None,
    checkpoint: str = "final",
    orientation: str | None = None,
) -> tuple[ModelSpec, dict[str, Any], dict[str, Any]]:
    """The spec, state dict and lineage of one fold of an nnU-Net v2 results folder.

    Args:
        source: the results folder (holding plans.json), or its dataset folder when
            that holds exactly one such folder.
        fold: the fold (0..N or "all"); None: the only one there.
        checkpoint: "final" or "best".
        orientation: axis codes the scans are reoriented to first (TotalSegmentator:
            "RAS"); None: what the plans' reader does.

    Raises:
        ModelFileError: one line naming the file (and key) that cannot be imported.
    """
    folder = _results_folder(Path(source))
    if checkpoint not in ("final", "best"):
        raise ModelFileError(f"checkpoint must be 'final' or 'best', got {short(checkpoint, 20)}")
    ck_rel = f"{_fold_folder(folder, fold)}/checkpoint_{checkpoint}.pth"
    with SourceFiles(folder) as files:
        dataset = files.read_config("dataset.json")
        plans = files.read_config("plans.json")
        if not isinstance(dataset, dict) or not isinstance(plans, dict):
            raise ModelFileError(f"{folder}: dataset.json and plans.json must be JSON objects")
        if not files.exists(ck_rel):
            raise ModelFileError(f"{files.where(ck_rel)}: missing")
        ck = load_weights(files, ck_rel, safe_globals=safe_globals())
        where_ck = files.where(ck_rel)
        sd = tensors_only(ck.get("network_weights") if isinstance(ck, dict) else None, where_ck)
        config_name = _configuration(ck, folder, files.where("plans.json"))
        config = _resolve(plans, config_name, files.where("plans.json"))
        labels = _labels(dataset, files.where("dataset.json"))
        channels = dataset.get("channel_names", dataset.get("modality", {"0": "CT"}))
        if not isinstance(channels, dict) or len(channels) != 1:
            count = len(channels) if isinstance(channels, dict) else "?"
            raise ModelFileError(
                f"{files.where('dataset.json')}: {count} input channels; napari-unet models "
                "take one"
            )
        channel = str(next(iter(channels.values())))
        fingerprint = None
        if files.exists("dataset_fingerprint.json"):
            fingerprint = files.read_config("dataset_fingerprint.json")
        norm, notes = _normalization(config, plans, fingerprint, files.where("plans.json"))
        spec = _spec(plans, config, config_name, labels, norm, channel, orientation,
                     files.where("plans.json"))  # fmt: skip
        hashed = ["dataset.json", "plans.json", ck_rel]
        if fingerprint is not None:
            hashed.append("dataset_fingerprint.json")
        lineage = {
            "format": "nnunet_v2",
            "source": str(folder),
            "files": {r: files.sha256(r) for r in hashed},
            "configuration": config_name,
            "fold": ck_rel.split("/")[0].removeprefix("fold_"),
            "checkpoint": checkpoint,
            "trainer": short(ck.get("trainer_name", ""), 120),
            "dataset_name": short(plans.get("dataset_name", ""), 120),
            "approximations": [
                *notes,
                "test-time mirroring not applied",
                "one fold, not the ensemble of folds",
            ],
        }
        return spec, sd, lineage


def _results_folder(path: Path) -> Path:
    if not path.is_dir():
        raise ModelFileError(f"{path}: not an nnU-Net results folder (not a folder)")
    if (path / "plans.json").is_file():
        return path
    inner = sorted(p for p in path.iterdir() if p.is_dir() and (p / "plans.json").is_file())
    if len(inner) == 1:
        return inner[0]
    if inner:
        names = ", ".join(p.name for p in inner[:6])
        raise ModelFileError(f"{path}: holds several nnU-Net models ({names}); name one of them")
    raise ModelFileError(f"{path}: not an nnU-Net results folder (no plans.json)")


def _fold_folder(folder: Path, fold: int | str | None) -> str:
    folds = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("fold_"))
    if fold is not None:
        name = f"fold_{fold}"
        if name not in folds:
            raise ModelFileError(f"{folder}: no {name} (folds here: {', '.join(folds) or 'none'})")
        return name
    if len(folds) == 1:
        return folds[0]
    if not folds:
        raise ModelFileError(f"{folder}: no fold_N folder with a checkpoint")
    raise ModelFileError(
        f"{folder}: holds {len(folds)} folds ({', '.join(folds)}); choose one with --fold N "
        "(napari-unet runs one network, not nnU-Net's ensemble of folds)"
    )


def _configuration(ck: Any, folder: Path, where: str) -> str:
    init = ck.get("init_args") if isinstance(ck, dict) else None
    name = init.get("configuration") if isinstance(init, dict) else None
    if not isinstance(name, str):
        name = folder.name.rpartition("__")[2]
    if not name or len(name) > 100:
        raise ModelFileError(f"{where}: cannot tell which configuration the checkpoint is")
    return name


def _resolve(plans: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    configs = plans.get("configurations")
    if not isinstance(configs, dict) or name not in configs:
        raise ModelFileError(f"{where}: no configuration {short(name, 40)!r}")
    chain, merged = [], {}
    while name is not None:
        if name in chain or len(chain) > 8 or name not in configs:
            raise ModelFileError(f"{where}: configuration inheritance {[*chain, name]} is broken")
        chain.append(name)
        node = configs[name]
        if not isinstance(node, dict):
            raise ModelFileError(f"{where}: configurations#{short(name, 40)} is not an object")
        merged = {**node, **merged}
        name = node.get("inherits_from")
    if merged.get("previous_stage"):
        raise ModelFileError(
            f"{where}: configuration {chain[0]!r} is a cascade stage (it needs the previous "
            "stage's segmentation as input); import the 3d_fullres or 3d_lowres model"
        )
    return merged


def _labels(dataset: dict[str, Any], where: str) -> list[str]:
    labels = dataset.get("labels")
    if not isinstance(labels, dict):
        raise ModelFileError(f"{where}: no labels object")
    if dataset.get("regions_class_order") is not None or any(
        isinstance(v, list) for v in labels.values()
    ):
        raise ModelFileError(f"{where}: a region-based model (overlapping labels): not supported")
    by_value: dict[int, str] = {}
    for name, value in labels.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ModelFileError(f"{where}: label {short(name, 40)!r} has value {short(value, 20)}")
        if str(name).lower() != "ignore":
            by_value[value] = short(name, 64).strip() or f"class_{value}"
    values = sorted(by_value)
    if values != list(range(len(values))) or len(values) < 2:
        raise ModelFileError(f"{where}: labels must be 0 (background), 1, 2, … without gaps")
    return [by_value[v] for v in values[1:]]


def _normalization(
    config: dict[str, Any], plans: dict[str, Any], fingerprint: Any, where: str
) -> tuple[Normalization, list[str]]:
    schemes = config.get("normalization_schemes") or ["ZScoreNormalization"]
    scheme = schemes[0] if isinstance(schemes, list) else schemes
    mask = config.get("use_mask_for_norm") or [False]
    use_mask = bool(mask[0]) if isinstance(mask, list) else bool(mask)
    if scheme == "CTNormalization":
        props = plans.get("foreground_intensity_properties_per_channel") or plans.get(
            "foreground_intensity_properties_by_modality"
        )
        if not isinstance(props, dict) and isinstance(fingerprint, dict):
            props = fingerprint.get("foreground_intensity_properties_per_channel")
        p = props.get("0", props.get(0)) if isinstance(props, dict) else None
        try:
            lo, hi = float(p["percentile_00_5"]), float(p["percentile_99_5"])
            mean, std = float(p["mean"]), max(float(p["std"]), 1e-8)
        except (TypeError, KeyError, ValueError):
            raise ModelFileError(
                f"{where}: CTNormalization needs foreground_intensity_properties_per_channel "
                "(mean, std, percentile_00_5, percentile_99_5)"
            ) from None
        if not all(map(math.isfinite, (lo, hi, mean, std))) or not lo < hi:
            raise ModelFileError(f"{where}: CT intensity properties are not finite and rising")
        out = ((lo - mean) / std, (hi - mean) / std)
        return Normalization(mode="ct", window=(lo, hi), output_range=out), []
    if scheme == "ZScoreNormalization":
        notes = ["ZScore with use_mask_for_norm: voxels outside the mask are normalised too"]
        norm = Normalization(mode="mr", percentiles=(0.0, 100.0), nonzero=use_mask)
        return norm, notes if use_mask else []
    if scheme == "NoNormalization":
        return Normalization(mode="none"), []
    raise ModelFileError(f"{where}: normalization scheme {short(scheme, 60)!r} is not supported")


def _architecture(config: dict[str, Any], dims: int, where: str) -> tuple[str, dict[str, Any]]:
    arch = config.get("architecture")
    if isinstance(arch, dict):
        class_name = arch.get("network_class_name")
        kwargs = arch.get("arch_kwargs")
        if class_name not in _CLASSES or not isinstance(kwargs, dict):
            raise ModelFileError(
                f"{where}: network {short(class_name, 80)!r} is not an allowed nnU-Net network "
                "(PlainConvUNet, ResidualEncoderUNet)"
            )
        kwargs = dict(kwargs)
    else:  # plans written before nnU-Net 2.3 (e.g. TotalSegmentator's): rebuilt as nnU-Net does
        unet = config.get("UNet_class_name")
        if unet not in ("PlainConvUNet", "ResidualEncoderUNet"):
            raise ModelFileError(f"{where}: network {short(unet, 60)!r} is not an allowed one")
        class_name = unet
        enc = config.get("n_conv_per_stage_encoder")
        if not isinstance(enc, list) or not 1 <= len(enc) <= 16:
            raise ModelFileError(f"{where}: n_conv_per_stage_encoder is missing or odd")
        base, top = config.get("UNet_base_num_features"), config.get("unet_max_num_features")
        if not all(isinstance(v, int) and 0 < v <= 4096 for v in (base, top)):
            raise ModelFileError(f"{where}: UNet_base_num_features/unet_max_num_features odd")
        blocks = "n_conv_per_stage" if unet == "PlainConvUNet" else "n_blocks_per_stage"
        kwargs = {
            "n_stages": len(enc),
            "features_per_stage": [min(base * 2**i, top) for i in range(len(enc))],
            "conv_op": f"Conv{dims}d",
            "kernel_sizes": config.get("conv_kernel_sizes"),
            "strides": config.get("pool_op_kernel_sizes"),
            blocks: enc,
            "n_conv_per_stage_decoder": config.get("n_conv_per_stage_decoder"),
            "conv_bias": True,
            "norm_op": f"InstanceNorm{dims}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        }
    for key in _OP_KEYS:
        value = kwargs.get(key)
        if value is None or value in _OPS.values():
            continue
        if value not in _OPS:
            raise ModelFileError(
                f"{where}: architecture {key} {short(value, 80)!r} is not an allowed layer"
            )
        kwargs[key] = _OPS[value]
    kwargs.pop("deep_supervision", None)
    return _CLASSES[class_name], kwargs


def _spec(
    plans: dict[str, Any],
    config: dict[str, Any],
    config_name: str,
    labels: list[str],
    norm: Normalization,
    channel: str,
    orientation: str | None,
    where: str,
) -> ModelSpec:
    patch = config.get("patch_size")
    spacing = config.get("spacing")
    if not isinstance(patch, list) or len(patch) not in (2, 3):
        raise ModelFileError(f"{where}: configuration {config_name!r} has no patch_size")
    dims = len(patch)
    tf = plans.get("transpose_forward", [0, 1, 2])
    if not isinstance(tf, list) or sorted(tf) != [0, 1, 2]:
        raise ModelFileError(f"{where}: transpose_forward must be a permutation of 0, 1, 2")
    if not isinstance(spacing, list) or len(spacing) != dims:
        raise ModelFileError(f"{where}: configuration {config_name!r} has no spacing")
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader not in _READERS:
        raise ModelFileError(f"{where}: image reader {short(reader, 60)!r} is not supported")
    arch, kwargs = _architecture(config, dims, where)
    ours = [2 - int(t) for t in tf]  # nnU-Net axis m is our axis ours[m]
    slice_axis = None
    if dims == 3:
        kwargs["axis_order"] = ours
        target = [0.0, 0.0, 0.0]
        size = [0, 0, 0]
        for m in range(3):
            target[ours[m]], size[ours[m]] = spacing[m], patch[m]
    else:  # 2D: slices along nnU-Net's axis 0; in-plane axes sorted as our 2D input
        slice_axis = ours[0]
        plane = sorted(ours[1:])
        kwargs["axis_order"] = [plane.index(a) for a in ours[1:]]
        size = [0, 0]
        for m in range(2):
            size[plane.index(ours[1 + m])] = patch[m]
        target = [None, None, None]
        for m in range(2):
            target[ours[1 + m]] = spacing[m]
    modality = "CT" if channel.upper() == "CT" else ("MR" if _MR_NAMES.match(channel) else "other")
    try:
        return ModelSpec(
            arch=arch,
            spatial_dims=dims,
            labels=labels,
            arch_args=kwargs,
            normalization=norm,
            target_spacing=tuple(target),
            patch_size=tuple(size),
            slice_axis=slice_axis,
            modality=modality,
            name=short(f"{plans.get('dataset_name', 'nnunet')}-{config_name}", 200),
            orientation=orientation or _READERS_REORIENT.get(reader),
            inference_style="nnunet",
        )
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{where}: configuration {config_name!r}: {short(e, 300)}") from None

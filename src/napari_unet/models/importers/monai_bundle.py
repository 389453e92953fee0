"""Import a MONAI bundle (folder or .zip) as data, never as code.

A bundle holds ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``) and
``models/model.pt`` (a state dict) or ``models/model.ts`` (TorchScript). MONAI runs the
config through ``ConfigParser``, which imports ``_target_`` classes and evaluates
``$`` expressions (advisory GHSA-873f-pvrv-4x83). Here the config is only read:

* ``network_def``: its ``_target_`` must be one of `NETWORKS` and every argument a
  literal (a ``@key`` reference to another key holding a literal is followed, as data);
* ``preprocessing`` transforms map onto the spec: ``ScaleIntensityRanged`` → CT window,
  ``NormalizeIntensityd`` → z-score, ``Spacingd`` → target spacing, ``Orientationd`` →
  orientation; ``LoadImaged``, ``EnsureChannelFirstd``, ``EnsureTyped``, ``CastToTyped``
  (and the like, `UNDERSTOOD`) only load or retype data; any other transform refuses the
  bundle, with all of them listed;
* ``inferer`` ``roi_size`` → patch size; ``metadata.json``
  ``network_data_format.outputs.<first>.channel_def`` → label names;
* weights with ``torch.load(weights_only=True)``; a TorchScript ``model.ts`` is code and
  never loaded, but its tensors are read as data (`_torchscript`: a restricted unpickler
  that builds only module stand-ins and tensors) when ``model.pt`` is absent.

Every other key (``imports``, ``device``, ``network``, ``evaluator`` … which in Model Zoo
bundles are ``$`` expressions) is ignored, never looked at. A ``$`` expression, a ``%``
macro or a ``_target_`` outside the allowlist inside what is read refuses the bundle in
one line naming the file and the key.
"""

from __future__ import annotations

import math
import os
from typing import Any

from napari_unet.errors import ModelFileError
from napari_unet.models.importers._bundle_refs import BundleRefs as _Refs
from napari_unet.models.importers._source import (
    MAX_WEIGHTS_BYTES,
    SourceFiles,
    is_torchscript,
    load_weights,
    short,
    tensors_only,
)
from napari_unet.models.importers._torchscript import read_torchscript_weights
from napari_unet.models.spec import ModelSpec, Normalization

#: Allowed ``network_def._target_`` names (MONAI's aliases included) → our arch.
NETWORKS = {
    "UNet": "unet", "Unet": "unet", "unet": "unet",
    "BasicUNet": "classic_unet", "BasicUnet": "classic_unet", "Basicunet": "classic_unet",
    "basicunet": "classic_unet",
    "AttentionUnet": "attention_unet",
    "SegResNet": "segresnet",
    "DynUNet": "dynunet", "DynUnet": "dynunet", "Dynunet": "dynunet",
    "SwinUNETR": "swin_unetr",
    "UNETR": "unetr",
}  # fmt: skip
_NET_MODULES = {"unet", "basic_unet", "attentionunet", "segresnet", "dynunet", "swin_unetr",
                "unetr"}  # fmt: skip
#: Transforms that only load, add a channel axis or change the data type.
UNDERSTOOD = {"LoadImage", "EnsureChannelFirst", "AddChannel", "EnsureType", "CastToType",
              "ToTensor", "ToNumpy", "Identity", "ToDevice"}  # fmt: skip
_MAPPED = {"Orientation", "Spacing", "ScaleIntensityRange", "NormalizeIntensity",
           "ScaleIntensityRangePercentiles"}  # fmt: skip
#: Keys of a network_def that are bookkeeping, not arguments.
_IGNORED_KEYS = {"_target_", "_desc_", "_name_"}
#: Arguments that only the bundle's own MONAI version needs (they change no weights).
_DROPPED_ARGS = {"swin_unetr": {"img_size"}, "dynunet": {"deep_supervision", "deep_supr_num"}}
_CONFIGS = ("configs/inference.json", "configs/inference.yaml", "configs/inference.yml")


def read_bundle(source: str | os.PathLike) -> tuple[ModelSpec, dict[str, Any], dict[str, Any]]:
    """The spec, state dict and lineage of a MONAI bundle (folder or zip).

    Raises:
        ModelFileError: one line naming the file (and key) that cannot be imported.
    """
    with SourceFiles(source) as files:
        for rel in ("configs/metadata.json", *_CONFIGS):  # a zip's top folder, if any
            files.root(rel)
            if files.exists(rel):
                break
        config_rel = next((c for c in _CONFIGS if files.exists(c)), None)
        if config_rel is None:
            raise ModelFileError(
                f"{files.path}: not a MONAI bundle (no configs/inference.json or .yaml)"
            )
        where = files.where(config_rel)
        config = files.read_config(config_rel)
        if not isinstance(config, dict):
            raise ModelFileError(f"{where}: not a JSON/YAML object")
        meta: dict[str, Any] = {}
        if files.exists("configs/metadata.json"):
            meta = files.read_config("configs/metadata.json")
            if not isinstance(meta, dict):
                raise ModelFileError(f"{files.where('configs/metadata.json')}: not a JSON object")
        refs = _Refs(config, where)
        arch, dims, out_channels, args = _network(refs)
        pre = _preprocessing(refs)
        _check_outputs(refs)
        patch, slice_axis = _patch_size(refs, meta, dims, arch, args)
        labels = _labels(meta, out_channels)
        modality = _modality(meta, pre["normalization"])
        weights_rel = "models/model.pt"
        if not files.exists(weights_rel):
            weights_rel = "models/model.ts" if files.exists("models/model.ts") else weights_rel
        if not files.exists(weights_rel):
            raise ModelFileError(f"{files.where('models/model.pt')}: missing (no weights)")
        where_w = files.where(weights_rel)
        data = files.read_bytes(weights_rel, MAX_WEIGHTS_BYTES)
        scripted = is_torchscript(data)
        if scripted:  # read as data: its tensors, never its code
            sd = read_torchscript_weights(data, where_w)
        else:
            sd = tensors_only(load_weights(files, weights_rel, data=data), where_w)
        del data
        name = meta.get("name") if isinstance(meta.get("name"), str) else files.path.stem
        try:
            spec = ModelSpec(
                arch=arch,
                spatial_dims=dims,
                labels=labels,
                arch_args=args,
                normalization=pre["normalization"],
                target_spacing=pre["target_spacing"],
                patch_size=patch,
                slice_axis=slice_axis,
                modality=modality,
                name=short(name, 200),
                orientation=pre["orientation"],
            )
        except (ValueError, TypeError) as e:
            raise ModelFileError(f"{where}: network_def: {short(e, 300)}") from None
        sd = _drop_extra_heads(sd, spec)
        if scripted:  # attributes that are not parameters or buffers (none, usually)
            sd = _only_expected(sd, spec)
        hashed = [r for r in ("configs/metadata.json", config_rel, weights_rel) if files.exists(r)]
        lineage = {
            "format": "monai_bundle",
            "source": str(files.path),
            "files": {r: files.sha256(r) for r in hashed},
            "bundle_name": short(meta.get("name", ""), 200),
            "bundle_version": short(meta.get("version", ""), 60),
            "approximations": pre["notes"],
        }
        return spec, sd, lineage


def _network(refs: _Refs) -> tuple[str, int, int, dict[str, Any]]:
    node = refs.config.get("network_def")
    if isinstance(node, str) and node.startswith("@"):
        node = refs.get(node[1:])
    if not isinstance(node, dict):
        raise ModelFileError(f"{refs.where}: no network_def object (found {short(node, 60)})")
    target = refs.target(node, "network_def")
    name = target.removeprefix("monai.networks.nets.")
    module, _, cls = name.rpartition(".")
    if module and module in _NET_MODULES:
        name = cls
    if name not in NETWORKS:
        raise ModelFileError(
            f"{refs.where}: network_def#_target_ {short(target, 80)!r} is not an allowed "
            f"network (MONAI UNet, BasicUNet, AttentionUnet, SegResNet, DynUNet, SwinUNETR, "
            "UNETR)"
        )
    arch = NETWORKS[name]
    for key in node:
        if not isinstance(key, str) or (key.startswith("_") and key not in _IGNORED_KEYS):
            raise ModelFileError(
                f"{refs.where}: network_def#{short(key, 40)} is not a network argument"
            )
    args = {
        k: refs.literal(v, f"network_def#{k}") for k, v in node.items() if k not in _IGNORED_KEYS
    }
    dims = args.pop("spatial_dims", 3)
    in_channels = args.pop("in_channels", 1)
    out_channels = args.pop("out_channels", 2)
    if dims not in (2, 3) or isinstance(dims, bool):
        raise ModelFileError(f"{refs.where}: network_def#spatial_dims must be 2 or 3")
    if in_channels != 1 or isinstance(in_channels, bool):
        raise ModelFileError(
            f"{refs.where}: network_def#in_channels is {short(in_channels, 20)}; napari-unet "
            "models take one image channel"
        )
    if not isinstance(out_channels, int) or isinstance(out_channels, bool) or out_channels < 2:
        raise ModelFileError(
            f"{refs.where}: network_def#out_channels is {short(out_channels, 20)}; napari-unet "
            "needs a softmax output with a background channel (2 or more)"
        )
    if args.get("deep_supervision"):
        args["deep_supervision"] = False
    for key in _DROPPED_ARGS.get(arch, ()):
        args.pop(key, None)
    if arch == "classic_unet":
        args.setdefault("features", [32, 32, 64, 128, 256, 32])
    return arch, dims, out_channels, args


def _base_name(target: str) -> str:
    name = target.rpartition(".")[2]
    for suffix in ("Dict", "D", "d"):
        if name.endswith(suffix) and name[: -len(suffix)] in _MAPPED | UNDERSTOOD:
            return name[: -len(suffix)]
    return name


def _preprocessing(refs: _Refs) -> dict[str, Any]:
    node = refs.config.get("preprocessing")
    key = "preprocessing"
    if isinstance(node, str) and node.startswith("@"):
        node = refs.get(node[1:])
    if isinstance(node, dict):
        if refs.target(node, key).rpartition(".")[2] != "Compose":
            raise ModelFileError(f"{refs.where}: {key} is not a Compose of transforms")
        node, key = node.get("transforms"), f"{key}#transforms"
    if isinstance(node, str):
        refs.literal(node, key)  # refuses an expression naming the key
    if node is None:
        node = []
    if not isinstance(node, list):
        raise ModelFileError(f"{refs.where}: {key} is not a list of transforms")
    out: dict[str, Any] = {"normalization": Normalization(mode="none"), "target_spacing": None,
                           "orientation": None, "notes": []}  # fmt: skip
    unsupported: list[str] = []
    intensity = 0
    clip = (0.0, 100.0)
    for n, item in enumerate(node):
        where = f"{key}#{n}"
        if isinstance(item, str) and item.startswith("@"):
            item = refs.get(item[1:])
        if not isinstance(item, dict):
            raise ModelFileError(f"{refs.where}: {where} is not a transform object")
        target = refs.target(item, where)
        base = _base_name(target)
        if base in UNDERSTOOD:
            continue
        if base not in _MAPPED:
            unsupported.append(short(target, 60))
            continue
        args = {k: refs.literal(v, f"{where}#{k}") for k, v in item.items() if k != "_target_"}
        if base == "Orientation":
            codes = args.get("axcodes")
            if not isinstance(codes, str) or len(codes) != 3:
                raise ModelFileError(f"{refs.where}: {where}#axcodes must be 3 axis codes")
            out["orientation"] = codes.upper()
        elif base == "Spacing":
            out["target_spacing"] = _pixdim(args.get("pixdim"), refs.where, where)
            spacing = out["target_spacing"]
            if out["orientation"] is None and len({s for s in spacing if s}) > 1:
                out["notes"].append("Spacingd before any Orientationd: spacing per stored axis")
        elif base == "ScaleIntensityRange":
            intensity += 1
            out["normalization"] = _scale_range(args, refs.where, where)
        elif base == "ScaleIntensityRangePercentiles":  # a clip only: what our MR export writes
            if args.get("b_min") is not None or args.get("b_max") is not None:
                unsupported.append(f"{short(target, 40)} with b_min/b_max")
                continue
            try:
                clip = (float(args["lower"]), float(args["upper"]))
            except (KeyError, TypeError, ValueError):
                raise ModelFileError(f"{refs.where}: {where} needs numbers lower, upper") from None
        elif base == "NormalizeIntensity":
            intensity += 1
            if args.get("subtrahend") is not None or args.get("divisor") is not None:
                unsupported.append(f"{short(target, 40)} with a fixed subtrahend/divisor")
            try:
                out["normalization"] = Normalization(
                    mode="mr", percentiles=clip, nonzero=bool(args.get("nonzero", False))
                )
            except ValueError as e:
                raise ModelFileError(f"{refs.where}: {where}: {short(e, 120)}") from None
            if args.get("nonzero"):
                out["notes"].append("NormalizeIntensityd(nonzero): zero voxels are normalised too")
    if unsupported:
        raise ModelFileError(
            f"{refs.where}: preprocessing uses transforms napari-unet cannot reproduce: "
            f"{', '.join(unsupported)}"
        )
    if intensity > 1:
        raise ModelFileError(f"{refs.where}: preprocessing normalises intensities twice")
    return out


def _pixdim(value: Any, where: str, key: str) -> tuple[float | None, ...]:
    values = [value] * 3 if isinstance(value, (int, float)) else value
    if not isinstance(values, list) or len(values) != 3:
        raise ModelFileError(f"{where}: {key}#pixdim must be one or three numbers")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ModelFileError(f"{where}: {key}#pixdim must be numbers, got {short(value, 60)}")
        out.append(float(v) if v > 0 else None)  # MONAI: <= 0 keeps the axis as it is
    return tuple(out)


def _scale_range(args: dict[str, Any], where: str, key: str) -> Normalization:
    try:
        a0, a1 = float(args["a_min"]), float(args["a_max"])
        b0, b1 = float(args.get("b_min", 0.0)), float(args.get("b_max", 1.0))
    except (KeyError, TypeError, ValueError):
        raise ModelFileError(f"{where}: {key} needs numbers a_min, a_max, b_min, b_max") from None
    if not all(map(math.isfinite, (a0, a1, b0, b1))) or a0 == a1 or b0 == b1:
        raise ModelFileError(f"{where}: {key}: a_min/a_max and b_min/b_max must differ")
    if (a1 - a0) * (b1 - b0) < 0:
        raise ModelFileError(f"{where}: {key}: a decreasing intensity map is not supported")
    if a0 > a1:
        a0, a1, b0, b1 = a1, a0, b1, b0
    if not args.get("clip", False):  # a linear map without clipping: a window wide enough
        scale = (b1 - b0) / (a1 - a0)
        lo, hi = -1e6, 1e6
        a0, a1, b0, b1 = lo, hi, b0 + (lo - a0) * scale, b0 + (hi - a0) * scale
    return Normalization(mode="ct", window=(a0, a1), output_range=(b0, b1))


def _check_outputs(refs: _Refs) -> None:
    """Refuse sigmoid (multi-label) outputs: napari-unet models are softmax + argmax."""
    node = refs.config.get("postprocessing")
    transforms = node.get("transforms") if isinstance(node, dict) else node
    if not isinstance(transforms, list):
        return
    for n, item in enumerate(transforms):
        if isinstance(item, dict) and item.get("sigmoid") is True:
            raise ModelFileError(
                f"{refs.where}: postprocessing#transforms#{n} applies a sigmoid: multi-label "
                "outputs are not supported (napari-unet models are softmax + argmax)"
            )


def _patch_size(
    refs: _Refs, meta: dict[str, Any], dims: int, arch: str, args: dict[str, Any]
) -> tuple[tuple[int, ...], int | None]:
    """The patch (inferer roi_size) and, for a 2D network run by SliceInferer, its axis."""
    node = refs.config.get("inferer")
    if isinstance(node, str) and node.startswith("@"):
        node = refs.get(node[1:])
    roi, slice_axis = None, None
    if isinstance(node, dict):
        target = refs.target(node, "inferer").rpartition(".")[2]
        if "roi_size" in node:
            roi = refs.literal(node["roi_size"], "inferer#roi_size")
        if target == "SliceInferer":
            slice_axis = refs.literal(node.get("spatial_dim", 0), "inferer#spatial_dim")
            if slice_axis not in (0, 1, 2) or isinstance(slice_axis, bool):
                raise ModelFileError(f"{refs.where}: inferer#spatial_dim must be 0, 1 or 2")
            if dims != 2:
                raise ModelFileError(f"{refs.where}: SliceInferer with a {dims}D network")
    if arch == "unetr" and "img_size" in args:
        size = args["img_size"]
        return (tuple(size) if isinstance(size, list) else (size,) * dims), slice_axis
    if roi is None:  # SimpleInferer: the input shape the metadata documents, if literal
        fmt = meta.get("network_data_format", {}) if isinstance(meta, dict) else {}
        first = next(iter((fmt.get("inputs") or {}).values()), {}) if isinstance(fmt, dict) else {}
        shape = first.get("spatial_shape") if isinstance(first, dict) else None
        roi = shape if isinstance(shape, list) and all(isinstance(s, int) for s in shape) else None
    if roi is None:
        roi = [96] * dims
    if isinstance(roi, int):
        roi = [roi] * dims
    if not isinstance(roi, list) or len(roi) != dims or not all(isinstance(r, int) for r in roi):
        raise ModelFileError(f"{refs.where}: inferer#roi_size must be {dims} whole numbers")
    if any(r < 1 for r in roi):
        raise ModelFileError(f"{refs.where}: inferer#roi_size {roi} has a non-positive size")
    return tuple(roi), slice_axis


def _labels(meta: dict[str, Any], out_channels: int) -> list[str]:
    fmt = meta.get("network_data_format") if isinstance(meta, dict) else None
    outputs = fmt.get("outputs") if isinstance(fmt, dict) else None
    first = next(iter(outputs.values()), None) if isinstance(outputs, dict) and outputs else None
    channel_def = first.get("channel_def") if isinstance(first, dict) else None
    names: list[str] = []
    for c in range(1, out_channels):
        raw = channel_def.get(str(c)) if isinstance(channel_def, dict) else None
        name = short(raw, 64).strip() if isinstance(raw, str) and raw.strip() else f"class_{c}"
        while name in names:
            name = f"{name[:60]}_{c}"
        names.append(name)
    return names


def _modality(meta: dict[str, Any], norm: Normalization) -> str:
    fmt = meta.get("network_data_format") if isinstance(meta, dict) else None
    inputs = fmt.get("inputs") if isinstance(fmt, dict) else None
    first = next(iter(inputs.values()), None) if isinstance(inputs, dict) and inputs else None
    modality = first.get("modality") if isinstance(first, dict) else None
    if isinstance(modality, str):
        if modality.upper().startswith("CT"):
            return "CT"
        if modality.upper().startswith("MR"):
            return "MR"
    return "CT" if norm.mode == "ct" and norm.window[0] < -100 else "other"


def _drop_extra_heads(sd: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """Deep-supervision heads of a DynUNet trained with them: not part of our network."""
    if spec.arch != "dynunet":
        return sd
    import torch

    from napari_unet.models.build import build_model

    with torch.device("meta"):
        expected = set(build_model(spec).state_dict())
    heads = ("deep_supervision_heads.", "super_head.")
    return {k: v for k, v in sd.items() if k in expected or not any(h in k for h in heads)}


def _only_expected(sd: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    import torch

    from napari_unet.models.build import build_model

    with torch.device("meta"):
        expected = set(build_model(spec).state_dict())
    return {k: v for k, v in sd.items() if k in expected}

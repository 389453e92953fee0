"""Foreign models in, ours out: MONAI bundles, nnU-Net v2 results folders, bundle export.

`import_model` turns a MONAI bundle (folder or .zip) or an nnU-Net v2 results folder
into one of our ``.safetensors`` model files (spec + tensors + a lineage naming the
source, its format and its files' SHA-256), optionally keeping a subset of its classes
under new names. From then on the model is like any other: `Loop.open_model` it,
predict, correct, fine-tune. `export_bundle` writes one of ours as a MONAI bundle.

Importing never runs code from the source: configs are read as data, weights with
``torch.load(weights_only=True)`` (see `monai_bundle` and `nnunet`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from napari_unet.errors import InputError, ModelFileError

FORMATS = ("auto", "monai_bundle", "nnunet")

__all__ = ["FORMATS", "detect_format", "export_bundle", "import_model", "read_foreign"]


def detect_format(source: str | os.PathLike) -> str:
    """ "monai_bundle" or "nnunet", from what the folder or zip holds.

    Raises:
        ModelFileError: neither (one line naming the source).
    """
    path = Path(source)
    if path.is_file():
        return "monai_bundle"  # a zip; SourceFiles refuses anything else
    if not path.is_dir():
        raise ModelFileError(f"{path}: no such model folder or zip file")
    if (path / "configs").is_dir():
        return "monai_bundle"
    if (path / "plans.json").is_file() or any(
        (p / "plans.json").is_file() for p in path.iterdir() if p.is_dir()
    ):
        return "nnunet"
    raise ModelFileError(
        f"{path}: neither a MONAI bundle (configs/inference.json) nor an nnU-Net results "
        "folder (plans.json, dataset.json, fold_N/)"
    )


def read_foreign(
    source: str | os.PathLike,
    *,
    format: str = "auto",
    fold: int | str | None = None,
    checkpoint: str = "final",
    labels: str | list[str] | None = None,
    orientation: str | None = None,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The spec, state dict and lineage of a foreign model, classes selected.

    Args: see `import_model`.

    Returns:
        ``(spec, state_dict, lineage)``, not yet saved.
    """
    from dataclasses import replace

    from napari_unet.models.importers._classes import parse_classes, select_classes

    if format not in FORMATS:
        raise InputError(f"format must be one of {FORMATS}, got {format!r}")
    kind = detect_format(source) if format == "auto" else format
    if kind == "nnunet":
        from napari_unet.models.importers.nnunet import read_nnunet

        spec, sd, source_info = read_nnunet(source, fold=fold, checkpoint=checkpoint,
                                            orientation=orientation)  # fmt: skip
    else:
        from napari_unet.models.importers.monai_bundle import read_bundle

        if fold is not None:
            raise InputError("--fold is for nnU-Net folders; a MONAI bundle holds one model")
        spec, sd, source_info = read_bundle(source)
        if orientation is not None:
            try:
                spec = replace(spec, orientation=orientation)
            except (TypeError, ValueError) as e:
                raise InputError(f"--orientation: {e}") from None
    _check_tensors(spec, sd, source_info["source"])
    classes = parse_classes(labels, spec.labels)
    spec, sd, class_info = select_classes(spec, sd, classes)
    lineage = {
        "parent": None,
        "note": "imported from a "
        + ("MONAI bundle" if kind == "monai_bundle" else "nnU-Net v2 results folder"),
        "imported": {**source_info, **class_info},
    }
    return spec, sd, lineage


def import_model(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    format: str = "auto",
    fold: int | str | None = None,
    checkpoint: str = "final",
    labels: str | list[str] | None = None,
    orientation: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Import a MONAI bundle or nnU-Net v2 results folder as one of our model files.

    Args:
        source: bundle folder or ``.zip``, or nnU-Net results folder.
        out: the ``.safetensors`` file to write (checked before any work).
        format: "auto", "monai_bundle" or "nnunet".
        fold: nnU-Net fold (None: the only one present).
        checkpoint: nnU-Net checkpoint, "final" or "best".
        labels: classes to keep, in order, renamed: "liver,spleen", "liver=1,spleen=5",
            "organ=liver" (None: all, as named by the source).
        orientation: axis codes the model expects the scan in (e.g. "RAS" for
            TotalSegmentator); None: what the source says.
        overwrite: replace ``out`` if it exists.

    Returns:
        The written file.

    Raises:
        ModelFileError: the source cannot be imported (one line naming file and key).
        InputError: a bad option or output path.
    """
    from napari_unet.models.files import save_model
    from napari_unet.outputs import check_output

    target = check_output(out, overwrite=overwrite, inputs=[source], suffixes=(".safetensors",))
    spec, sd, lineage = read_foreign(source, format=format, fold=fold, checkpoint=checkpoint,
                                     labels=labels, orientation=orientation)  # fmt: skip
    save_model(target, sd, spec, lineage)
    return target


def export_bundle(model: str | os.PathLike, out_dir: str | os.PathLike, **options: Any) -> Path:
    """Write one of our model files as a MONAI bundle folder (see `bundle_export`)."""
    from napari_unet.models.importers.bundle_export import export_bundle as _export

    return _export(model, out_dir, **options)


def _check_tensors(spec: Any, sd: dict[str, Any], where: str) -> None:
    """The weights fit the network the spec describes (names and shapes), or one line."""
    from napari_unet.models.files import _check_shapes

    try:
        _check_shapes({k: tuple(v.shape) for k, v in sd.items()}, spec, where)
    except ModelFileError as e:
        raise ModelFileError(
            f"{e} (the weights do not fit the network the config describes)"
        ) from None

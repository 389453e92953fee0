"""Model files: one ``.safetensors`` per model version, never a pickle.

A file holds the network's tensors and one metadata entry, ``"napari_unet"``, a JSON
object ``{"format_version", "spec", "lineage", "hash"}``. ``hash`` is the content hash
(`tensor_hash`) of the tensors; lineage entries name their parent by it. Loading checks
the format version, the spec, the tensor names and shapes against the network the spec
builds, and the hash, and refuses anything else with a `ModelFileError` naming the file.

Safetensors files hold a JSON header and raw tensor bytes: nothing in them can execute
code. Foreign PyTorch ``.pt/.pth`` checkpoints go through `import_state_dict`, which uses
``torch.load(weights_only=True)``.

A file comes from outside, so everything is checked before anything is allocated for
it: the header, its tensor entries and the metadata (`read_model_header`, in
`napari_unet.models.header`, which also says how a file is recognised), then the tensor
names and shapes against the network the spec describes (built on PyTorch's ``meta``
device, which allocates nothing) before the tensors are read. Weights holding NaN or
infinity are refused on loading and never saved.

`read_model_header` and ``METADATA_KEY`` (`napari_unet.models.header`) and `tensor_hash`
(`napari_unet.models.hashing`) stay importable from here.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_unet.errors import ModelFileError
from napari_unet.models.build import build_model
from napari_unet.models.hashing import tensor_hash
from napari_unet.models.header import (  # noqa: F401 (re-exported)
    _MAX_HEADER,
    METADATA_KEY,
    _short,
    read_model_header,
)
from napari_unet.models.spec import FORMAT_VERSION, ModelSpec  # noqa: F401 (re-exported)
from napari_unet.outputs import atomic_output

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A network rebuilt from a model file, in eval mode on its device.

    Attributes:
        model: the ``torch.nn.Module``.
        spec: its ModelSpec.
        lineage: free dict (``parent``, ``created``, ``versions``, ``trained_on``,
            ``reviewed_slices``, ``metrics`` …).
        hash: content hash of the tensors (`tensor_hash`).
        path: the file it came from, if any.
    """

    model: torch.nn.Module
    spec: ModelSpec
    lineage: dict[str, Any] = field(default_factory=dict)
    hash: str = ""
    path: str | None = None


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a model's numbers."""
    import monai
    import numpy
    import safetensors

    from napari_unet import __version__

    return {
        "napari_unet": __version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
    }


def save_model(
    path: str | os.PathLike,
    model_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor],
    spec: ModelSpec,
    lineage: Mapping[str, Any] | None = None,
) -> str:
    """Write a model file atomically (temporary file in the same folder, then rename).

    Args:
        path: destination ``.safetensors`` file; its folder must exist.
        model_or_state_dict: the network or its state dict; must match ``spec``.
        spec: the ModelSpec stored with it.
        lineage: free dict; ``created`` (ISO 8601 UTC) and ``versions`` are filled in
            unless given.

    Returns:
        The content hash of the tensors.

    Raises:
        ModelFileError: the tensors do not match the network the spec builds.
        InputError: the folder does not exist or is not writable.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    sd = _state_dict(model_or_state_dict)
    _check_shapes({k: tuple(v.shape) for k, v in sd.items()}, spec, str(path))
    bad = _non_finite(sd)
    if bad is not None:
        raise ModelFileError(
            f"{path}: training diverged: the weights hold NaN or infinite values "
            f"(e.g. {_short(bad)}); the model was not saved"
        )
    digest = tensor_hash(sd)
    lineage = dict(lineage or {})
    lineage.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    lineage.setdefault("versions", package_versions())
    version, spec_form = spec.file_form()
    meta = {
        "format_version": version,
        "spec": spec_form,
        "lineage": lineage,
        "hash": digest,
    }
    text = json.dumps(meta, sort_keys=True)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ModelFileError(f"{path}: folder {folder} does not exist")
    with atomic_output(path) as tmp:
        try:
            save_file(sd, str(tmp), metadata={METADATA_KEY: text})
        except SafetensorError as e:
            raise ModelFileError(f"{path}: could not be written ({_short(e)})") from None
    return digest


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model file (safetensors only; nothing is unpickled) in eval mode.

    The header, metadata, spec and tensor shapes are all checked (`read_model_header`,
    then the spec's network built on the ``meta`` device) before any tensor is read or
    the network is allocated.

    Args:
        path: the ``.safetensors`` file.
        device: where to put the network.

    Returns:
        LoadedModel(model, spec, lineage, hash, path).

    Raises:
        ModelFileError: see `read_model_header`; tensors that do not match the spec's
            network (names or shapes); tensors whose hash differs from the recorded one;
            weights holding NaN or infinity.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_model_header(path)
    spec: ModelSpec = meta["spec"]
    shapes = {k: tuple(v["shape"]) for k, v in meta["tensors"].items()}
    _check_shapes(shapes, spec, str(path))
    try:
        sd = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise ModelFileError(f"{path}: damaged safetensors file ({_short(e)})") from None
    digest = tensor_hash(sd)
    if meta["hash"] != digest:
        raise ModelFileError(
            f"{path}: tensors do not match the recorded hash (the file was modified or damaged)"
        )
    bad = _non_finite(sd)
    if bad is not None:
        raise ModelFileError(
            f"{path}: the weights hold NaN or infinite values (e.g. {_short(bad)}); "
            "the model is unusable (its training diverged)"
        )
    model = _model_from_state_dict(sd, spec, str(path))
    return LoadedModel(model.to(device), spec, meta["lineage"], digest, str(path))


def import_state_dict(pt_path: str | os.PathLike, spec: ModelSpec) -> LoadedModel:
    """Import a foreign PyTorch checkpoint (``.pt/.pth``) for the network of ``spec``.

    Uses ``torch.load(weights_only=True)``: only tensors and plain containers are read,
    arbitrary pickled objects are refused, so no code from the file runs. Accepts a bare
    state dict or one wrapped in ``{"state_dict": …}`` / ``{"model": …}``, with an
    optional ``module.`` (DataParallel) prefix. Save the result with `save_model` to get
    a napari-unet model file.

    Raises:
        ModelFileError: missing or unreadable file, or tensors that do not match the spec.
    """
    pt_path = Path(pt_path)
    if not pt_path.is_file():
        raise ModelFileError(f"{pt_path}: no such checkpoint file")
    log.warning(
        "Importing %s with torch.load(weights_only=True): tensors only, no code runs.", pt_path
    )
    try:
        obj = torch.load(pt_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelFileError(
            f"{pt_path}: cannot be read as a weights-only PyTorch checkpoint "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(f"{pt_path}: does not hold a state dict of tensors")
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    model = _model_from_state_dict(sd, spec, str(pt_path))
    return LoadedModel(model, spec, {"imported_from": str(pt_path)}, tensor_hash(sd), None)


def _state_dict(obj: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = obj.state_dict() if isinstance(obj, torch.nn.Module) else obj
    return {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}


def _non_finite(sd: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or infinity, or None."""
    for name in sorted(sd):
        t = sd[name]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def _expected_shapes(spec: ModelSpec, where: str) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of the spec's network, built on the meta device (no memory)."""
    try:
        with torch.device("meta"):
            net = build_model(spec)
    except Exception as e:  # any failure of a spec read from a file is the file's fault
        raise ModelFileError(
            f"{where}: the {spec.arch} network its spec describes cannot be built "
            f"({type(e).__name__}: {_short(e)})"
        ) from None
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _check_shapes(got: Mapping[str, tuple[int, ...]], spec: ModelSpec, where: str) -> None:
    expected = _expected_shapes(spec, where)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {_short(missing[0], 80)})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {_short(repr(extra[0]), 80)})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with wrong shape (e.g. {_short(k, 80)}: {_short(got[k], 60)} "
                f"instead of {expected[k]})"
            )
        raise ModelFileError(
            f"{where}: tensors do not match the {spec.arch} "
            f"{spec.spatial_dims}D spec: {'; '.join(parts)}"
        )


def _model_from_state_dict(
    sd: Mapping[str, torch.Tensor], spec: ModelSpec, where: str
) -> torch.nn.Module:
    _check_shapes({k: tuple(v.shape) for k, v in sd.items()}, spec, where)
    try:
        model = build_model(spec)
        model.load_state_dict(dict(sd), strict=True)
    except (ValueError, TypeError, RuntimeError) as e:
        raise ModelFileError(
            f"{where}: the tensors cannot be loaded into the {spec.arch} network "
            f"({type(e).__name__}: {_short(e)})"
        ) from None
    return model.eval()

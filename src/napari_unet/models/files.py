"""Model files: one ``.safetensors`` per model version, never a pickle.

A file holds the network's tensors and one metadata entry, ``"napari_unet"``, a JSON
object ``{"format_version", "spec", "lineage", "hash"}``. ``hash`` is the content hash
(`tensor_hash`) of the tensors; lineage entries name their parent by it. Loading checks
the format version, the spec, the tensor names and shapes against the network the spec
builds, and the hash, and refuses anything else with a `ModelFileError` naming the file.

Safetensors files are a little-endian u64 header length, a JSON header and raw tensor
bytes: nothing in them can execute code. Foreign PyTorch ``.pt/.pth`` checkpoints go
through `import_state_dict`, which uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_unet.errors import ModelFileError
from napari_unet.models.build import build_model
from napari_unet.models.spec import FORMAT_VERSION, ModelSpec

log = logging.getLogger(__name__)

METADATA_KEY = "napari_unet"
_MAX_HEADER = 100 * 1024 * 1024
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save zip archive; raw pickle protocol ≥ 2


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


def tensor_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order (hex)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(state_dict[name].shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


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
    from safetensors.torch import save_file

    path = Path(path)
    sd = _state_dict(model_or_state_dict)
    _check_tensors(sd, spec, str(path))
    digest = tensor_hash(sd)
    lineage = dict(lineage or {})
    lineage.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    lineage.setdefault("versions", package_versions())
    meta = {
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "lineage": lineage,
        "hash": digest,
    }
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ModelFileError(f"{path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        save_file(sd, tmp, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def read_model_header(path: str | os.PathLike) -> dict[str, Any]:
    """The ``napari_unet`` metadata of a model file (no tensors read, no torch needed).

    Returns:
        ``{"format_version", "spec" (a ModelSpec), "lineage", "hash", "tensors"}`` where
        ``tensors`` maps names to ``{"dtype", "shape"}``.

    Raises:
        ModelFileError: missing file, not a safetensors file (e.g. a pickle), no or bad
            metadata, a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    with open(path, "rb") as f:
        head = f.read(8)
        if head.startswith(_PICKLE_MAGIC):
            raise ModelFileError(
                f"{path}: is a pickle/torch.save file, not safetensors; it was not loaded "
                "(pickles can run code) — import trusted weights with import_state_dict"
            )
        if len(head) < 8:
            raise ModelFileError(f"{path}: not a safetensors model file (too short)")
        (n,) = struct.unpack("<Q", head)
        size = path.stat().st_size
        if n < 2 or n > min(_MAX_HEADER, size - 8):
            raise ModelFileError(f"{path}: not a safetensors model file (bad header length)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelFileError(
                f"{path}: not a safetensors model file (header is not JSON)"
            ) from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a safetensors model file (bad header)")
    raw = (header.pop("__metadata__", None) or {}).get(METADATA_KEY)
    if raw is None:
        raise ModelFileError(
            f"{path}: safetensors file without napari_unet metadata "
            "(not a napari-unet model; import it with import_state_dict)"
        )
    try:
        meta = json.loads(raw)
        version = int(meta["format_version"])
    except (ValueError, TypeError, KeyError):
        raise ModelFileError(f"{path}: napari_unet metadata is damaged") from None
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this "
            f"napari-unet supports ({FORMAT_VERSION}); upgrade napari-unet"
        )
    try:
        spec = ModelSpec.from_dict(meta["spec"])
    except (ValueError, TypeError, KeyError) as e:
        raise ModelFileError(f"{path}: model spec is invalid: {e}") from None
    tensors = {
        k: {"dtype": v.get("dtype"), "shape": v.get("shape")}
        for k, v in header.items()
        if isinstance(v, dict)
    }
    return {
        "format_version": version,
        "spec": spec,
        "lineage": dict(meta.get("lineage") or {}),
        "hash": meta.get("hash"),
        "tensors": tensors,
    }


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model file (safetensors only; nothing is unpickled) in eval mode.

    Args:
        path: the ``.safetensors`` file.
        device: where to put the network.

    Returns:
        LoadedModel(model, spec, lineage, hash, path).

    Raises:
        ModelFileError: see `read_model_header`; tensors that do not match the spec's
            network (names or shapes); tensors whose hash differs from the recorded one.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_model_header(path)
    spec: ModelSpec = meta["spec"]
    try:
        sd = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: damaged safetensors file ({e})") from None
    digest = tensor_hash(sd)
    if meta["hash"] is not None and meta["hash"] != digest:
        raise ModelFileError(
            f"{path}: tensors do not match the recorded hash (the file was modified or damaged)"
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


def _check_tensors(sd: Mapping[str, torch.Tensor], spec: ModelSpec, where: str) -> None:
    expected = {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with wrong shape (e.g. {k}: {got[k]} instead of {expected[k]})"
            )
        raise ModelFileError(
            f"{where}: tensors do not match the {spec.arch} "
            f"{spec.spatial_dims}D spec: {'; '.join(parts)}"
        )


def _model_from_state_dict(
    sd: Mapping[str, torch.Tensor], spec: ModelSpec, where: str
) -> torch.nn.Module:
    _check_tensors(sd, spec, where)
    model = build_model(spec)
    model.load_state_dict(dict(sd), strict=True)
    return model.eval()

"""Model files: one ``.safetensors`` per model version, never a pickle.

A file holds the network's tensors and one metadata entry, ``"napari_unet"``, a JSON
object ``{"format_version", "spec", "lineage", "hash"}``. ``hash`` is the content hash
(`tensor_hash`) of the tensors; lineage entries name their parent by it. Loading checks
the format version, the spec, the tensor names and shapes against the network the spec
builds, and the hash, and refuses anything else with a `ModelFileError` naming the file.

Safetensors files are a little-endian u64 header length ``n``, ``n`` bytes of UTF-8 JSON
(an object: tensor name → dtype, shape, data offsets, plus ``__metadata__``) and raw
tensor bytes: nothing in them can execute code. A file is recognised by that structure,
never by its first byte (a header length of 128 + 256·k starts with 0x80, like a pickle);
only when the structure is wrong does the message say that the file looks like a pickle
or a ``torch.save`` zip. Foreign PyTorch ``.pt/.pth`` checkpoints go through
`import_state_dict`, which uses ``torch.load(weights_only=True)``.

A file comes from outside, so everything is checked before anything is allocated for
it: the header is at most ``_MAX_HEADER`` bytes, ``_MAX_DEPTH`` levels deep and holds at
most ``_MAX_CONTAINERS`` arrays/objects (parsing it stays well under 200 MB), every
tensor entry has a known dtype, a shape and offsets that tile the data exactly, the
metadata has the right types and an integrity hash, the spec is within `ModelSpec`'s
bounds, and the tensor names and shapes match the network the spec describes (built on
PyTorch's ``meta`` device, which allocates nothing) before the tensors are read. Weights
holding NaN or infinity are refused on loading and never saved.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_unet.errors import ModelFileError
from napari_unet.models.build import build_model
from napari_unet.models.spec import FORMAT_VERSION, ModelSpec
from napari_unet.outputs import atomic_output

log = logging.getLogger(__name__)

METADATA_KEY = "napari_unet"
#: Largest JSON header accepted (bytes). Ours are a few kB; lineage may add some more.
_MAX_HEADER = 8 * 1024 * 1024
#: Deepest nesting of JSON arrays/objects accepted in the header and in the metadata.
_MAX_DEPTH = 32
#: Most JSON arrays/objects (counted as ``{`` and ``[`` bytes) in a header: parsing a
#: header of empty containers costs ~45x its size in memory, so their number is bounded.
_MAX_CONTAINERS = 250_000
_MAX_TENSORS = 10_000
_MAX_NDIM = 8
_DTYPE_SIZES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save (zip archive holding a pickle)


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


def read_model_header(path: str | os.PathLike) -> dict[str, Any]:
    """The ``napari_unet`` metadata of a model file (no tensors read).

    Returns:
        ``{"format_version", "spec" (a ModelSpec), "lineage", "hash", "tensors"}`` where
        ``tensors`` maps names to ``{"dtype", "shape"}``.

    Raises:
        ModelFileError: one line naming the file and the problem: missing file or a
            folder, not a safetensors file (saying so when it looks like a pickle or a
            ``torch.save`` zip), a header too large or too deep, odd tensor entries, no
            or damaged metadata (wrong types, no integrity hash), a newer format
            version, a spec outside `ModelSpec`'s bounds.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a model file")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            problem = _structure_problem(size, n)
            raw = b"" if problem else f.read(n)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot be read ({e.strerror or e})") from None
    header = None
    if not problem:
        if len(raw) != n:
            problem = "the file is shorter than its header"
        elif not raw.startswith(b"{"):
            problem = "the header is not a JSON object"
        elif raw.count(b"{") + raw.count(b"[") > _MAX_CONTAINERS:
            problem = f"the header holds more than {_MAX_CONTAINERS} JSON arrays/objects"
        else:
            try:
                header = json.loads(raw.decode("utf-8"))
            except RecursionError:
                problem = f"the header is nested deeper than {_MAX_DEPTH} levels"
            except ValueError:
                problem = "the header is not UTF-8 JSON"
            else:
                if not isinstance(header, dict):
                    problem = "the header is not a JSON object"
                elif not _shallow(header):
                    problem = f"the header is nested deeper than {_MAX_DEPTH} levels"
    if problem or header is None:
        raise ModelFileError(f"{path}: {_not_safetensors(head, problem or 'bad header')}")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelFileError(f"{path}: damaged safetensors file (__metadata__ is not texts)")
    tensors = _tensor_table(header, size - 8 - n, path)
    raw_meta = metadata.get(METADATA_KEY)
    if raw_meta is None:
        raise ModelFileError(
            f"{path}: safetensors file without napari_unet metadata "
            "(not a napari-unet model; import it with import_state_dict)"
        )
    try:
        meta = json.loads(raw_meta)
    except RecursionError:
        raise ModelFileError(
            f"{path}: napari_unet metadata is nested deeper than {_MAX_DEPTH} levels"
        ) from None
    except ValueError:
        raise ModelFileError(f"{path}: napari_unet metadata is damaged (not JSON)") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: napari_unet metadata is damaged (not a JSON object)")
    if not _shallow(meta):
        raise ModelFileError(
            f"{path}: napari_unet metadata is nested deeper than {_MAX_DEPTH} levels"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(
            f"{path}: napari_unet metadata is damaged "
            f"(format_version is {_short(repr(version), 40)}, not a whole number)"
        )
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this "
            f"napari-unet supports ({FORMAT_VERSION}); upgrade napari-unet"
        )
    if version < 1:
        raise ModelFileError(f"{path}: unknown model format version {version}")
    if meta.get("spec") is None:
        raise ModelFileError(f"{path}: napari_unet metadata has no model spec")
    if not isinstance(meta["spec"], dict):
        raise ModelFileError(
            f"{path}: model spec is a {type(meta['spec']).__name__}, not a JSON object"
        )
    try:
        spec = ModelSpec.from_dict(meta["spec"])
    except (ValueError, TypeError, KeyError) as e:
        raise ModelFileError(f"{path}: model spec is invalid: {_short(e)}") from None
    lineage = meta.get("lineage", {})
    if not isinstance(lineage, dict):
        raise ModelFileError(
            f"{path}: napari_unet metadata is damaged (lineage is a "
            f"{type(lineage).__name__}, not a JSON object)"
        )
    digest = meta.get("hash")
    if digest is None:
        raise ModelFileError(
            f"{path}: has no integrity hash (not written by napari-unet, or tampered with)"
        )
    if not isinstance(digest, str) or not _HASH_RE.match(digest):
        raise ModelFileError(
            f"{path}: integrity hash {_short(repr(digest), 40)} is not a SHA-256 hex digest"
        )
    return {
        "format_version": version,
        "spec": spec,
        "lineage": dict(lineage),
        "hash": digest,
        "tensors": tensors,
    }


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


def _short(value: Any, limit: int = 200) -> str:
    """One printable line of at most ``limit`` characters (for error messages)."""
    text = str(value).splitlines()[0] if str(value).strip() else repr(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _structure_problem(size: int, n: int) -> str | None:
    """Why a file of ``size`` bytes with header length ``n`` is not safetensors, or None."""
    if size == 0:
        return "the file is empty"
    if size < 10:
        return f"the file is only {size} bytes"
    if n < 2 or n > size - 8:
        return f"bad header length {n} for a file of {size} bytes"
    if n > _MAX_HEADER:
        return f"the header of {n} bytes is larger than the {_MAX_HEADER} allowed"
    return None


def _not_safetensors(head: bytes, problem: str) -> str:
    """The message for a file whose safetensors structure is wrong (``problem``)."""
    if head.startswith(_ZIP_MAGIC):
        return (
            "is a zip archive (a torch.save checkpoint?), not a safetensors model file; "
            "it was not loaded (it may hold pickles, which can run code) - import trusted "
            "weights with import_state_dict"
        )
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return (
            "is a pickle file, not a safetensors model file; it was not loaded (pickles "
            "can run code) - import trusted weights with import_state_dict"
        )
    return f"not a safetensors model file ({problem})"


def _shallow(value: Any, limit: int = _MAX_DEPTH) -> bool:
    """Whether JSON data nests at most ``limit`` arrays/objects deep (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return True


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_table(header: dict[str, Any], data_size: int, path: Path) -> dict[str, Any]:
    """Check the tensor entries of a safetensors header; ``{name: {"dtype", "shape"}}``.

    Every entry needs a known dtype, a shape of at most ``_MAX_NDIM`` whole numbers and
    ``data_offsets`` whose span holds exactly that many elements; the spans must tile the
    ``data_size`` bytes after the header with no gap or overlap.
    """
    if len(header) > _MAX_TENSORS:
        raise ModelFileError(f"{path}: damaged safetensors file ({len(header)} tensors)")
    spans = []
    tensors: dict[str, Any] = {}
    for name, entry in header.items():
        where = f"{path}: damaged safetensors file (tensor {_short(repr(name), 60)}"
        if not isinstance(entry, dict):
            raise ModelFileError(f"{where} is not described by an object)")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _DTYPE_SIZES:
            raise ModelFileError(f"{where} has unknown dtype {_short(repr(dtype), 30)})")
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_NDIM
            or not all(_whole(d) and d < 2**40 for d in shape)
        ):
            raise ModelFileError(f"{where} has a bad shape {_short(shape, 60)})")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(_whole(o) for o in offsets)
            and offsets[0] <= offsets[1]
        ):
            raise ModelFileError(f"{where} has bad data offsets {_short(offsets, 60)})")
        if offsets[1] > data_size:
            raise ModelFileError(
                f"{path}: damaged safetensors file (tensor data runs past the end of the "
                f"file, {offsets[1]} > {data_size} bytes: truncated?)"
            )
        if offsets[1] - offsets[0] != math.prod(shape) * _DTYPE_SIZES[dtype]:
            raise ModelFileError(f"{where}: its shape and byte size disagree)")
        spans.append((offsets[0], offsets[1]))
        tensors[name] = {"dtype": dtype, "shape": list(shape)}
    end = 0
    for start, stop in sorted(spans):
        if start != end:
            raise ModelFileError(f"{path}: damaged safetensors file (tensor data overlap or gap)")
        end = stop
    if end != data_size:
        raise ModelFileError(
            f"{path}: damaged safetensors file ({data_size} bytes of tensor data, {end} described)"
        )
    return tensors


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

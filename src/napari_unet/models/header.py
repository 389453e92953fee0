"""Reading and checking the header of a model file, without reading its tensors.

Safetensors files are a little-endian u64 header length ``n``, ``n`` bytes of UTF-8 JSON
(an object: tensor name → dtype, shape, data offsets, plus ``__metadata__``) and raw
tensor bytes: nothing in them can execute code. A file is recognised by that structure,
never by its first byte (a header length of 128 + 256·k starts with 0x80, like a pickle);
only when the structure is wrong does the message say that the file looks like a pickle
or a ``torch.save`` zip.

A file comes from outside, so the header is checked before anything is allocated for
it: it is at most ``_MAX_HEADER`` bytes, ``_MAX_DEPTH`` levels deep and holds at most
``_MAX_CONTAINERS`` arrays/objects (parsing it stays well under 200 MB), every tensor
entry has a known dtype, a shape and offsets that tile the data exactly, and the
``napari_unet`` metadata has the right types, an integrity hash and a spec within
`ModelSpec`'s bounds. Imports no torch.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

from napari_unet.errors import ModelFileError
from napari_unet.models.spec import FORMAT_VERSION, ModelSpec

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
    header, data_size = _read_header(path)
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelFileError(f"{path}: damaged safetensors file (__metadata__ is not texts)")
    tensors = _tensor_table(header, data_size, path)
    meta = _napari_metadata(metadata, path)
    version = _format_version(meta, path)
    spec = _spec(meta, path)
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


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors JSON header of ``path`` and the byte size of its tensor data.

    Raises:
        ModelFileError: a folder, no such file, unreadable, or not safetensors.
    """
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
        header, problem = _parse_header(raw, n)
    if problem or header is None:
        raise ModelFileError(f"{path}: {_not_safetensors(head, problem or 'bad header')}")
    return header, size - 8 - n


def _parse_header(raw: bytes, n: int) -> tuple[dict[str, Any] | None, str | None]:
    """(header, None) for ``raw``, the ``n`` header bytes read, or (None, the problem)."""
    if len(raw) != n:
        return None, "the file is shorter than its header"
    if not raw.startswith(b"{"):
        return None, "the header is not a JSON object"
    if raw.count(b"{") + raw.count(b"[") > _MAX_CONTAINERS:
        return None, f"the header holds more than {_MAX_CONTAINERS} JSON arrays/objects"
    try:
        header = json.loads(raw.decode("utf-8"))
    except RecursionError:
        return None, f"the header is nested deeper than {_MAX_DEPTH} levels"
    except ValueError:
        return None, "the header is not UTF-8 JSON"
    if not isinstance(header, dict):
        return None, "the header is not a JSON object"
    if not _shallow(header):
        return None, f"the header is nested deeper than {_MAX_DEPTH} levels"
    return header, None


def _napari_metadata(metadata: dict[str, str], path: Path) -> dict[str, Any]:
    """The ``napari_unet`` entry of a header's ``__metadata__``, parsed and depth-checked."""
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
    return meta


def _format_version(meta: dict[str, Any], path: Path) -> int:
    """The metadata's ``format_version``: a whole number from 1 to `FORMAT_VERSION`."""
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
    return version


def _spec(meta: dict[str, Any], path: Path) -> ModelSpec:
    """The metadata's ``spec`` as a ModelSpec (within its bounds)."""
    if meta.get("spec") is None:
        raise ModelFileError(f"{path}: napari_unet metadata has no model spec")
    if not isinstance(meta["spec"], dict):
        raise ModelFileError(
            f"{path}: model spec is a {type(meta['spec']).__name__}, not a JSON object"
        )
    try:
        return ModelSpec.from_dict(meta["spec"])
    except (ValueError, TypeError, KeyError) as e:
        raise ModelFileError(f"{path}: model spec is invalid: {_short(e)}") from None


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

"""The weights of a TorchScript archive, read without running it.

A TorchScript file (``torch.jit.save``) is a zip of code (``code/*.py``, TorchScript
source that ``torch.jit.load`` compiles and runs), a pickle of the module tree
(``data.pkl``) and raw tensor storages (``data/<key>``). Loading it runs its code, so
it is never loaded. Its parameters can still be read as data: ``data.pkl`` is unpickled
by a restricted unpickler (the pattern of the Python documentation's "Restricting
Globals") that builds nothing but plain stand-ins for the ``__torch__.*`` module classes,
tensors over the archive's storages (bounds checked) and a few list builders; any other
global refuses the file. The tensors are named by their attribute paths
(``model.0.conv.weight``), which are the names of the module's state dict.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections import OrderedDict
from typing import Any

from napari_unet.errors import ModelFileError

_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool",
}  # fmt: skip
_LIST_BUILDERS = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist",
                  "build_genericlist")  # fmt: skip
_MAX_NODES = 1_000_000


class _Module:
    """Stand-in for a pickled ``__torch__`` module: keeps its attribute dict, runs nothing."""

    def __init__(self, *args: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


class _Storage:
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


def read_torchscript_weights(data: bytes, where: str) -> dict[str, Any]:
    """``{attribute path: tensor}`` of every tensor in a TorchScript archive's module tree.

    Raises:
        ModelFileError: not a TorchScript zip, or its pickle asks for anything else than
            module stand-ins, tensors and list builders (naming what it asked for).
    """
    import torch

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, ValueError) as e:
        raise ModelFileError(f"{where}: not a TorchScript archive ({e})") from None
    pkl = sorted((n for n in names if n.endswith("/data.pkl") and n.count("/") == 1), key=len)
    if not pkl:
        raise ModelFileError(f"{where}: TorchScript archive without data.pkl")
    prefix = pkl[0][: -len("data.pkl")]
    storages: dict[str, Any] = {}

    def storage(dtype: str, key: str, numel: int) -> Any:
        if key not in storages:
            member = f"{prefix}data/{key}"
            if member not in names:
                raise ModelFileError(f"{where}: storage {key!r} missing from the archive")
            raw = archive.read(member)
            t = torch.frombuffer(bytearray(raw), dtype=getattr(torch, dtype)) if raw else None
            if t is None or t.numel() < numel:
                raise ModelFileError(f"{where}: storage {key!r} is shorter than declared")
            storages[key] = t
        return storages[key]

    def rebuild(store, offset, size, stride, *_ignored) -> Any:
        flat = store
        sizes, strides = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        last = int(offset) + sum((s - 1) * st for s, st in zip(sizes, strides, strict=True))
        if math.prod(sizes) and (
            int(offset) < 0 or last >= flat.numel() or min(strides, default=0) < 0
        ):
            raise ModelFileError(f"{where}: a tensor reaches outside its storage")
        return torch.as_strided(flat, sizes, strides, int(offset)).clone()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module.startswith("__torch__."):
                return _Module
            if module == "torch._utils" and name == "_rebuild_tensor_v2":
                return rebuild
            if module == "torch._utils" and name == "_rebuild_parameter":
                return lambda tensor, *_a: tensor
            if module == "torch.jit._pickle" and name in _LIST_BUILDERS:
                return lambda values: values
            if module == "collections" and name == "OrderedDict":
                return OrderedDict
            if module == "torch" and name in _STORAGES:
                return _Storage(_STORAGES[name])
            raise pickle.UnpicklingError(f"{module}.{name}")

        def persistent_load(self, pid: Any) -> Any:
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                raise pickle.UnpicklingError("an unknown persistent id")
            kind, key, numel = pid[1], str(pid[2]), int(pid[4])
            if not isinstance(kind, _Storage):
                raise pickle.UnpicklingError("a storage of unknown type")
            return storage(kind.dtype, key, numel)

    try:
        root = Unpickler(io.BytesIO(archive.read(pkl[0]))).load()
    except ModelFileError:
        raise
    except Exception as e:
        raise ModelFileError(
            f"{where}: its module pickle asks for {str(e)[:80]!r}, which napari-unet does not "
            "build (only modules, tensors and lists are read; nothing of the archive runs)"
        ) from None
    return _tensors(root, where)


def _tensors(root: Any, where: str) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    stack = [("", root)]
    nodes = 0
    while stack:
        prefix, node = stack.pop()
        nodes += 1
        if nodes > _MAX_NODES:
            raise ModelFileError(f"{where}: module tree too large")
        if not isinstance(node, _Module):
            continue
        for name, value in node.state.items():
            if isinstance(value, torch.Tensor):
                out[f"{prefix}{name}"] = value
            elif isinstance(value, _Module):
                stack.append((f"{prefix}{name}.", value))
    if not out:
        raise ModelFileError(f"{where}: no tensors in the TorchScript module")
    return out

"""Reading a foreign model's files as data: a folder or a zip, JSON/YAML, weights-only.

Nothing here runs code from the files: configs are parsed as data (``json``,
``yaml.safe_load``), weights go through ``torch.load(weights_only=True)``, zips are
read member by member in memory (never extracted, so no path in them can point
outside), and every size is bounded before it is read. A problem is one
`ModelFileError` line naming the file (and the key) and what is wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from napari_unet.errors import ModelFileError

#: Largest config (JSON/YAML) file read, and the most nodes walked in one.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64
#: Largest weights file read (a zip member is read into memory).
MAX_WEIGHTS_BYTES = 8 * 1024**3
MAX_ZIP_MEMBERS = 10_000


def short(value: Any, limit: int = 120) -> str:
    """One printable line of at most ``limit`` characters."""
    text = str(value).replace("\n", " ").replace("\r", " ")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SourceFiles:
    """The files of a model folder or zip archive, by relative POSIX path.

    A zip may hold everything under one top folder (``bundle/configs/…``), as MONAI Model
    Zoo archives do; `root` finds it from a file that must exist (e.g.
    ``configs/metadata.json``).
    """

    def __init__(self, source: str | os.PathLike) -> None:
        self.path = Path(source)
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, zipfile.ZipInfo] = {}
        self.prefix = ""
        if self.path.is_dir():
            return
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such model folder or zip file")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise ModelFileError(
                f"{self.path}: not a model folder or a zip archive ({short(e, 80)})"
            ) from None
        infos = self._zip.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise ModelFileError(f"{self.path}: zip archive with {len(infos)} members")
        for info in infos:
            if not info.is_dir():
                self._members[info.filename.replace("\\", "/")] = info

    def __enter__(self) -> SourceFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip is not None:
            self._zip.close()

    def root(self, marker: str) -> None:
        """Make the folder holding ``marker`` (a relative path) the root of a zip."""
        if self._zip is None:
            return
        hits = sorted(
            (n[: -len(marker)] for n in self._members if n == marker or n.endswith("/" + marker)),
            key=len,
        )
        if hits:
            self.prefix = hits[0]

    def where(self, rel: str) -> str:
        """How a file is named in messages (``archive.zip:bundle/configs/x.json``)."""
        if self._zip is not None:
            return f"{self.path}:{self.prefix}{rel}"
        return str(self.path / rel)

    def exists(self, rel: str) -> bool:
        if self._zip is not None:
            return self.prefix + rel in self._members
        return (self.path / rel).is_file()

    def size(self, rel: str) -> int:
        if self._zip is not None:
            return self._members[self.prefix + rel].file_size
        return (self.path / rel).stat().st_size

    def read_bytes(self, rel: str, limit: int) -> bytes:
        """The file's bytes; refused when larger than ``limit`` (checked while reading)."""
        where = self.where(rel)
        if not self.exists(rel):
            raise ModelFileError(f"{where}: missing")
        try:
            if self._zip is not None:
                info = self._members[self.prefix + rel]
                if info.flag_bits & 0x1:
                    raise ModelFileError(f"{where}: encrypted zip member")
                if info.file_size > limit:
                    raise ModelFileError(f"{where}: {info.file_size} bytes, more than {limit}")
                with self._zip.open(info) as f:
                    data = f.read(limit + 1)
            else:
                path = self.path / rel
                if path.stat().st_size > limit:
                    raise ModelFileError(f"{where}: {path.stat().st_size} bytes, more than {limit}")
                with open(path, "rb") as f:
                    data = f.read(limit + 1)
        except (OSError, zipfile.BadZipFile, RuntimeError, ValueError, EOFError) as e:
            raise ModelFileError(f"{where}: cannot be read ({short(e, 80)})") from None
        if len(data) > limit:
            raise ModelFileError(f"{where}: more than {limit} bytes")
        return data

    def sha256(self, rel: str) -> str:
        """SHA-256 of a file (streamed)."""
        digest = hashlib.sha256()
        try:
            if self._zip is not None:
                with self._zip.open(self._members[self.prefix + rel]) as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
            else:
                with open(self.path / rel, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
        except (OSError, zipfile.BadZipFile, RuntimeError, ValueError, EOFError) as e:
            raise ModelFileError(f"{self.where(rel)}: cannot be read ({short(e, 80)})") from None
        return digest.hexdigest()

    def read_config(self, rel: str) -> Any:
        """A JSON or YAML (by suffix) file as plain data; YAML through ``yaml.safe_load``."""
        data = self.read_bytes(rel, MAX_CONFIG_BYTES)
        where = self.where(rel)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ModelFileError(f"{where}: not UTF-8 text") from None
        suffix = PurePosixPath(rel).suffix.lower()
        try:
            if suffix in (".yaml", ".yml"):
                import yaml

                value = yaml.safe_load(text)
            else:
                value = json.loads(text)
        except RecursionError:
            raise ModelFileError(f"{where}: nested too deeply") from None
        except Exception as e:  # json.JSONDecodeError, yaml.YAMLError and friends
            raise ModelFileError(
                f"{where}: not valid {suffix[1:].upper()} ({short(e, 80)})"
            ) from None
        check_plain(value, where)
        return value


def check_plain(value: Any, where: str) -> None:
    """Refuse data that is not plain JSON-like, too deep or too large (iteratively)."""
    stack = [(value, 0)]
    nodes = 0
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ModelFileError(f"{where}: more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise ModelFileError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            if id(item) in seen:  # a YAML alias: walked once
                continue
            seen.add(id(item))
            for k, v in item.items():
                if not isinstance(k, (str, int, float, bool)) and k is not None:
                    raise ModelFileError(f"{where}: a key of type {type(k).__name__}")
                stack.append((v, depth + 1))
        elif isinstance(item, list):
            if id(item) in seen:
                continue
            seen.add(id(item))
            stack.extend((v, depth + 1) for v in item)
        elif item is not None and not isinstance(item, (str, int, float, bool)):
            raise ModelFileError(f"{where}: holds a {type(item).__name__}, not plain data")


def load_weights(
    files: SourceFiles,
    rel: str,
    *,
    safe_globals: list[Any] | tuple[Any, ...] = (),
    data: bytes | None = None,
) -> Any:
    """``torch.load(weights_only=True)`` of a file: tensors and plain containers only.

    Args:
        files: where the file is.
        rel: its relative path.
        safe_globals: the only extra classes the unpickler may build (scoped to this call).
        data: the file's bytes, if already read.

    Raises:
        ModelFileError: a TorchScript archive (code), or anything ``weights_only``
            refuses (a pickled object that would run code), naming the file.
    """
    import torch

    where = files.where(rel)
    if data is None:
        data = files.read_bytes(rel, MAX_WEIGHTS_BYTES)
    if is_torchscript(data):
        raise ModelFileError(
            f"{where}: is a TorchScript archive, i.e. code; napari-unet does not run it "
            "(save the network's state dict with torch.save(net.state_dict(), ...) instead)"
        )
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        import re

        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"a pickled {found.group(1)}" if found else short(str(e).splitlines()[0], 100)
        raise ModelFileError(
            f"{where}: refused by the weights-only loader: it holds {what}, not only tensors "
            "and plain data (unpickling it could run code)"
        ) from None


def is_torchscript(data: bytes) -> bool:
    """Whether bytes are a TorchScript zip (it holds ``code/`` or ``constants.pkl``)."""
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return False
    return any(
        "/code/" in n or n.startswith("code/") or n.endswith("/constants.pkl") for n in names
    )


def tensors_only(obj: Any, where: str) -> dict[str, Any]:
    """A ``{name: tensor}`` state dict from a checkpoint (``module.`` prefixes dropped)."""
    import torch

    for key in ("state_dict", "model", "model_state_dict", "network_weights", "network"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise ModelFileError(f"{where}: does not hold a state dict of tensors")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}

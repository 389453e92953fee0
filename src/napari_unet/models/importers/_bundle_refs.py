"""A MONAI bundle config read as data: ``@a#b#0`` references followed, nothing evaluated.

`BundleRefs.literal` is the guard of `monai_bundle`'s import: a ``$`` expression, a ``%``
macro or a ``_target_`` component inside a value refuses the bundle in one line naming
the file and the key (advisory GHSA-873f-pvrv-4x83: MONAI's ``ConfigParser`` would
import and evaluate them).
"""

from __future__ import annotations

from typing import Any

from napari_unet.errors import ModelFileError
from napari_unet.models.importers._source import short


class BundleRefs:
    """A config read as data: ``@a#b#0`` references followed, nothing evaluated."""

    def __init__(self, config: dict[str, Any], where: str) -> None:
        self.config = config
        self.where = where

    def get(self, path: str) -> Any:
        node: Any = self.config
        for part in path.split("#"):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise ModelFileError(f"{self.where}: reference @{short(path, 80)} not found")
        return node

    def literal(self, value: Any, key: str, depth: int = 0) -> Any:
        """``value`` with references followed; refuses expressions and components."""
        if depth > 16:
            raise ModelFileError(f"{self.where}: {key}: references nested too deeply")
        if isinstance(value, str):
            if value.startswith("$"):
                raise ModelFileError(
                    f"{self.where}: {key} is an expression ({short(value, 60)}); napari-unet "
                    "reads bundle configs as data and never evaluates them"
                )
            if value.startswith("%"):
                raise ModelFileError(
                    f"{self.where}: {key} is a macro ({short(value, 60)}) into another file; "
                    "not supported"
                )
            if value.startswith("@"):
                return self.literal(self.get(value[1:]), f"{key} (@{short(value[1:], 60)})",
                                    depth + 1)  # fmt: skip
            return value
        if isinstance(value, list):
            return [self.literal(v, f"{key}#{i}", depth + 1) for i, v in enumerate(value)]
        if isinstance(value, dict):
            if "_target_" in value:
                raise ModelFileError(
                    f"{self.where}: {key} builds an object ({short(value['_target_'], 60)}); "
                    "only literal arguments are accepted"
                )
            return {k: self.literal(v, f"{key}#{k}", depth + 1) for k, v in value.items()}
        return value

    def target(self, node: dict[str, Any], key: str) -> str:
        target = node.get("_target_")
        if not isinstance(target, str) or target[:1] in "$@%":
            raise ModelFileError(
                f"{self.where}: {key}#_target_ must be a class name, got {short(target, 60)}"
            )
        return target

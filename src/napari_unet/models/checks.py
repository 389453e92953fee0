"""Checks of `ModelSpec`'s fields (labels, patch size, spacing, orientation …).

Each check takes a value read from a file or given by a caller and returns it in its
canonical form, or raises ValueError naming the field and the bad value. The bounds are
in `napari_unet.models.limits`; ``arch_args`` is checked in `napari_unet.models.arch_args`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from napari_unet.models.limits import (
    MAX_LABEL_CHARS,
    MAX_LABELS,
    MAX_PATCH_VOXELS,
    PATCH_RANGE,
    SPACING_RANGE,
)

_AXIS_PAIRS = ("LR", "PA", "IS")


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages stay one short line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int(value: Any) -> int | None:
    """``value`` as an int if it is an integer (not a bool), else None."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


def _real(value: Any) -> float | None:
    """``value`` as a finite float if it is a finite real number (not a bool), else None."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except (OverflowError, ValueError):
            return None
        return number if math.isfinite(number) else None
    return None


def _pair(value: Any, name: str) -> tuple[float, float]:
    values = tuple(_real(v) for v in value) if isinstance(value, (list, tuple)) else ()
    if len(values) != 2 or None in values or not values[0] < values[1]:  # type: ignore[operator]
        raise ValueError(
            f"{name} must be (low, high) finite numbers with low < high, got {_short(value)}"
        )
    return values  # type: ignore[return-value]


def _labels(labels: Any) -> list[str]:
    if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
        raise ValueError(f"labels must be a list of names, got {_short(labels)}")
    if not 1 <= len(labels) <= MAX_LABELS:
        raise ValueError(f"labels must be 1 to {MAX_LABELS} names, got {len(labels)}")
    for n in labels:
        if (
            not isinstance(n, str)
            or not n.strip()
            or len(n) > MAX_LABEL_CHARS
            or not n.isprintable()
        ):
            raise ValueError(
                f"labels must be non-empty printable names of at most {MAX_LABEL_CHARS} "
                f"characters, got {_short(n)}"
            )
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {_short(list(labels))}")
    return list(labels)


def _patch(patch: Any, dims: int) -> tuple[int, ...]:
    lo, hi = PATCH_RANGE
    sizes = tuple(_int(p) for p in patch) if isinstance(patch, (list, tuple)) else ()
    if len(sizes) != dims or any(p is None or not lo <= p <= hi for p in sizes):
        raise ValueError(
            f"patch_size must be {dims} sizes of {lo} to {hi} voxels, got {_short(patch)}"
        )
    if math.prod(sizes) > MAX_PATCH_VOXELS:  # type: ignore[arg-type]
        raise ValueError(
            f"patch_size {_short(patch)} has more than {MAX_PATCH_VOXELS} voxels in all"
        )
    return sizes  # type: ignore[return-value]


def _spacing(spacing: Any) -> tuple[float | None, ...] | None:
    if spacing is None:
        return None
    lo, hi = SPACING_RANGE
    ts = (spacing,) * 3 if isinstance(spacing, numbers.Real) else spacing
    values = (
        tuple(None if s is None else _real(s) for s in ts) if isinstance(ts, (list, tuple)) else ()
    )
    if len(values) != 3 or any(
        s is not None and (v is None or not lo <= v <= hi) for s, v in zip(ts, values, strict=True)
    ):
        raise ValueError(
            f"target_spacing must be None or 3 values of {lo} to {hi} mm "
            f"(None entries keep the native spacing), got {_short(spacing)}"
        )
    return values


def _orientation(value: Any) -> str | None:
    """None or three axis codes, one of each pair L/R, P/A, I/S ("RAS", "LPS", "SAR" …)."""
    if value is None:
        return None
    ok = isinstance(value, str) and len(value) == 3 and value.isupper()
    ok = ok and sorted("".join(p for c in value for p in _AXIS_PAIRS if c in p)) == sorted(
        "".join(_AXIS_PAIRS)
    )
    if not ok:
        raise ValueError(
            f"orientation must be None or 3 axis codes such as 'RAS' (one of L/R, P/A, I/S "
            f"each), got {_short(value)}"
        )
    return value

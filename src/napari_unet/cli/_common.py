"""What every command shares: option types with bounds, output checks, one-line messages.

Option values are refused at parse time, with one line naming the option and the allowed
range (argparse turns an `argparse.ArgumentTypeError` raised by a ``type=`` function into
"argument --steps: …"). Bounds are generous but finite: a value outside them is a typo
or an attack, never a plan (``--steps 10**9``, ``--seconds inf``, ``--patch 100000``).

No torch import here.
"""

from __future__ import annotations

import argparse
import math
import sys
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from napari_unet.errors import InputError
from napari_unet.models.spec import (
    MAX_CONTEXT_SLICES,
    MAX_LABEL_CHARS,
    MAX_LABELS,
    PATCH_RANGE,
    SPACING_RANGE,
)
from napari_unet.outputs import check_output, remove_stale_temps
from napari_unet.text import printable

#: Largest value ``--ignore-label`` may take (label maps are at most uint16 in practice).
MAX_IGNORE_LABEL = 65535
#: Longest message line (characters) printed on stderr.
MAX_LINE = 500

NIFTI_SUFFIXES = (".nii", ".nii.gz")
MODEL_SUFFIXES = (".safetensors",)


def _strip_controls(text: str) -> str:
    """``text`` without the control and format characters `printable` keeps (U+200B …)."""
    return "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co"))


def one_line(text: object, limit: int = MAX_LINE) -> str:
    """``text`` made safe for one line of a terminal: no line breaks, no control characters.

    `napari_unet.text.printable` (line breaks become spaces; escape sequences, control
    characters and bidi overrides are removed), then any other invisible format
    character; a line longer than ``limit`` characters loses its middle (a long path)
    to "…", so that both the file and the reason stay visible.
    Text taken from files (DICOM descriptions, file names, exception messages) goes
    through here before it is printed.
    """
    line = _strip_controls(printable(text)).strip()
    if len(line) <= limit:
        return line
    head = (limit - 1) // 2  # cut in the middle: keep the start and the reason at the end
    return line[:head] + "…" + line[len(line) - (limit - 1 - head) :]


def warn(message: str, *, kind: str = "warning") -> None:
    """Print ``napari-unet: KIND: MESSAGE`` on stderr as one sanitised line."""
    print(one_line(f"napari-unet: {kind}: {message}"), file=sys.stderr)


def prepare_output(
    path: str | Path,
    *,
    overwrite: bool,
    inputs: Iterable[str | Path | None] = (),
    suffixes: Sequence[str] = (),
    option: str = "",
) -> Path:
    """`outputs.check_output` before any long job, then clear stale temporary files.

    A temporary file left in the output folder by a killed writer is removed here, so a
    crash never leaves debris behind for long.
    """
    what = f"{option} {path}" if option else str(path)
    if Path(path).parent.exists() and not Path(path).parent.is_dir():
        raise InputError(f"{what}: {Path(path).parent} is a file, not a folder")
    out = check_output(path, overwrite=True, inputs=list(inputs), suffixes=suffixes, option=option)
    if out.exists() and not overwrite:
        raise InputError(f"{what}: already exists (use --overwrite to replace it)")
    remove_stale_temps(out.parent)
    return out


# --- option types ---------------------------------------------------------------------


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse ``type=``: an integer in ``lo..hi``."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {lo} to {hi}, got {one_line(text, 40)!r}"
            ) from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(
                f"must be an integer from {lo} to {hi}, got {_short(value)}"
            )
        return value

    parse.__name__ = "integer"
    return parse


def float_range(lo: float, hi: float, *, lo_open: bool = True) -> Callable[[str], float]:
    """An argparse ``type=``: a finite number in ``(lo, hi]`` (``[lo, hi]`` if not lo_open)."""
    lo_text = f"more than {lo:g}" if lo_open else f"at least {lo:g}"

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            value = math.nan
        too_low = value <= lo if lo_open else value < lo
        if not math.isfinite(value) or too_low or value > hi:
            raise argparse.ArgumentTypeError(
                f"must be a finite number {lo_text} and at most {hi:g}, got {one_line(text, 40)!r}"
            )
        return value

    parse.__name__ = "number"
    return parse


def label_names(text: str) -> list[str]:
    """An argparse ``type=``: comma-separated class names, 1..MAX_LABELS, unique."""
    names = [n.strip() for n in text.split(",")]
    if not any(names):
        raise argparse.ArgumentTypeError("give at least one class name, e.g. liver,tumour")
    if not all(names):
        raise argparse.ArgumentTypeError(f"empty class name in {one_line(text, 80)!r}")
    if len(names) > MAX_LABELS:
        raise argparse.ArgumentTypeError(
            f"{len(names)} class names; a model has 1 to {MAX_LABELS} classes"
        )
    for name in names:
        if len(name) > MAX_LABEL_CHARS or one_line(name) != name:
            raise argparse.ArgumentTypeError(
                f"class name {one_line(name, 40)!r}: at most {MAX_LABEL_CHARS} printable characters"
            )
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise argparse.ArgumentTypeError(f"class name {twice!r} given twice")
    return names


def _short(value: int) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:10]}…({len(text)} digits)"


# Bounds of the options shared by several commands.
STEPS = int_range(1, 1_000_000)
SECONDS = float_range(0.0, 7 * 24 * 3600.0)
SEED = int_range(0, 2**32 - 1)
BATCH_SIZE = int_range(1, 4096)
ROUNDS = int_range(1, 1000)
SLICES_PER_ROUND = int_range(1, 4096)
CONTEXT_SLICES = int_range(0, MAX_CONTEXT_SLICES)
PATCH = int_range(*PATCH_RANGE)
SPACING = float_range(*SPACING_RANGE, lo_open=False)
IGNORE_LABEL = int_range(0, MAX_IGNORE_LABEL)
DEMO_SLICES = int_range(1, 1000)

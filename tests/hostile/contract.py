"""What every hostile case must satisfy (see the package docstring)."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

from napari_unet.cli import main


def refuse(capsys, argv: Sequence[str], *fragments: str) -> str:
    """Run ``napari-unet ARGV`` in-process; assert exit 2 and one clean line naming
    ``fragments``."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert status == 2, f"exit {status}, stderr: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {err!r}"
    assert "Traceback" not in err and "internal error" not in err, err
    assert all(ord(c) >= 32 or c == "\t" for c in err), f"control characters in {err!r}"
    for fragment in fragments:
        assert str(fragment) in err, f"{fragment!r} not in {err!r}"
    return err


def no_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Our temporary files left in ``folder`` (should be none)."""
    return [p for p in Path(folder).iterdir() if "~napari-unet-" in p.name]


class PeakMemory:
    """Peak Python/numpy heap allocation (bytes) inside a ``with`` block (tracemalloc)."""

    def __enter__(self) -> PeakMemory:
        tracemalloc.start()
        self.peak = 0
        return self

    def __exit__(self, *exc) -> None:
        self.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

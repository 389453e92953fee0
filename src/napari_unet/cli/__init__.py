"""`napari-unet` console script.

Each command group lives in its own module and registers its sub-commands with
`register(subparsers)`. Exit status: 0 success; 2 bad input or usage, with one line on
stderr naming the file and the problem; 1 internal error. Heavy imports (torch, MONAI)
happen inside the command functions, never at import time.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from napari_unet import __version__
from napari_unet.errors import InputError

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2

# Command-group modules, in help order. Each defines ``register(subparsers)``.
_GROUPS = (
    "napari_unet.cli._volume_cmds",
    "napari_unet.cli._model_cmds",
    "napari_unet.cli._train_cmds",
    "napari_unet.cli._demo_cmds",
)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one clear line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="napari-unet", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in _GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a group not written yet
            if e.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the exit status (also used in-process by the tests)."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or EXIT_OK)
    except _UsageError as e:
        print(str(e), file=sys.stderr)
        return EXIT_INPUT
    except InputError as e:
        print(f"napari-unet: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("napari-unet: interrupted", file=sys.stderr)
        return 130
    except MemoryError as e:
        print(
            f"napari-unet: error: out of memory ({e}); try a smaller input or batch size",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    except Exception as e:  # a bug: one line by default, the traceback on request
        if os.environ.get("NAPARI_UNET_DEBUG"):
            raise
        print(
            f"napari-unet: internal error: {type(e).__name__}: {e} "
            "(set NAPARI_UNET_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()

"""`napari-unet` console script.

Each command group lives in its own module and registers its sub-commands with
`register(subparsers)`. Exit status: 0 success; 2 bad input or usage, with one line on
stderr naming the file and the problem; 1 internal error (see `main`). Heavy imports
(torch, MONAI) happen inside the command functions, never at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from collections.abc import Sequence

from napari_unet import __version__
from napari_unet.cli._common import one_line
from napari_unet.errors import InputError

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2
EXIT_INTERRUPTED, EXIT_PIPE = 130, 141

# Command-group modules, in help order. Each defines ``register(subparsers)``.
_GROUPS = (
    "napari_unet.cli._volume_cmds",
    "napari_unet.cli._model_cmds",
    "napari_unet.cli._import_cmds",
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
    """Entry point. Returns the exit status (also used in-process by the tests).

    Every failure ends in one sanitised line on stderr (see `_common.one_line`):

    * 2: bad input or usage — `InputError`, a usage error, an operating-system error on
      a file the user named (permission, no space, read-only file system, missing
      folder …: "FILE: REASON"), out of memory (the input is too large: the line says
      what to try), text that cannot be encoded;
    * 141 (128 + SIGPIPE, as a Unix tool killed by SIGPIPE): stdout was closed by its
      reader (``napari-unet info x | head -1``); nothing is printed, and any output file
      written before is complete (files appear atomically);
    * 130: interrupted (Ctrl-C);
    * 1: anything else, which is a bug of ours.
    """
    _tolerate_unencodable_stdout()
    try:
        args = build_parser().parse_args(argv)
        status = int(args.func(args) or EXIT_OK)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        return _stdout_gone()
    except _UsageError as e:
        return _fail(str(e), EXIT_INPUT)
    except InputError as e:
        return _fail(f"napari-unet: error: {e}", EXIT_INPUT)
    except KeyboardInterrupt:
        return _fail("napari-unet: interrupted", EXIT_INTERRUPTED)
    except MemoryError as e:
        return _fail(_out_of_memory(str(e) or "MemoryError"), EXIT_INPUT)
    except OSError as e:
        if e.errno not in _USER_ERRNOS:
            return _internal(e)
        name = e.filename2 if e.filename2 is not None else e.filename
        reason = e.strerror or os.strerror(e.errno)
        where = f"{os.fsdecode(name)}: " if isinstance(name, str | bytes) else ""
        return _fail(f"napari-unet: error: {where}{reason}", EXIT_INPUT)
    except UnicodeError as e:
        return _fail(
            f"napari-unet: error: text that cannot be encoded or decoded ({e})", EXIT_INPUT
        )
    except Exception as e:
        if type(e).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            return _fail(_out_of_memory(str(e)), EXIT_INPUT)
        if isinstance(e, ValueError) and _stdout_closed():
            return _stdout_gone()  # print() on a closed sys.stdout
        return _internal(e)


#: Operating-system errors caused by the user's files and folders, not by our code.
_USER_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EACCES",
        "EPERM",
        "ENOSPC",
        "EDQUOT",
        "EFBIG",
        "EROFS",
        "EISDIR",
        "ENOENT",
        "ENOTDIR",
        "ENAMETOOLONG",
        "ELOOP",
        "EEXIST",
        "EIO",
        "EBUSY",
        "ETXTBSY",
        "EMFILE",
        "ENFILE",
    )
    if hasattr(errno, name)
)


def _fail(message: str, status: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        print(one_line(message), file=sys.stderr)
    return status


def _internal(e: BaseException) -> int:
    if os.environ.get("NAPARI_UNET_DEBUG"):
        raise e
    return _fail(
        f"napari-unet: internal error: {type(e).__name__}: {e} "
        "(set NAPARI_UNET_DEBUG=1 for the traceback)",
        EXIT_INTERNAL,
    )


def _out_of_memory(detail: str) -> str:
    return (
        f"napari-unet: error: out of memory ({detail}): the input is too large for this "
        "machine; crop or resample it, use a smaller --batch-size, or a machine (or GPU) "
        "with more memory"
    )


def _stdout_closed() -> bool:
    return sys.stdout is not None and bool(getattr(sys.stdout, "closed", False))


def _stdout_gone() -> int:
    """The reader of stdout went away: point stdout at devnull (as Python's docs advise
    for SIGPIPE) so that the flush at exit cannot fail again, and exit quietly."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    return EXIT_PIPE


def _tolerate_unencodable_stdout() -> None:
    """Print what the terminal cannot encode as escapes instead of failing (LANG=C)."""
    with contextlib.suppress(Exception):
        if sys.stdout.errors == "strict":
            sys.stdout.reconfigure(errors="backslashreplace")


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()

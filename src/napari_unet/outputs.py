"""Output safety shared by every writer: checks before a job, atomic writes after it.

Two promises, for the CLI, the panel and the Python API alike:

* `check_output` runs *before* any long job: the name has the right suffix, the folder
  exists and is writable (probed by creating a file there, which also catches read-only
  file systems and root-owned folders), the file does not exist unless ``overwrite``,
  and it is never one of the job's own inputs (not even with ``overwrite``).
* `atomic_output` makes a file appear whole or not at all: data go to a hidden
  temporary file in the same folder, are flushed to disk (fsync), then renamed over the
  target, and the folder entry is synced. A temporary file left by a process that was
  killed (``kill -9``, power loss) is recognised by its name and removed by the next
  write into that folder, so they never accumulate.

No torch, Qt or napari here.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from napari_unet.errors import InputError

#: Marks our temporary files: ``.NAME~napari-unet-PID-RANDOM.SUFFIX``.
_TEMP_MARK = "~napari-unet-"
_TEMP_RE = re.compile(r"^\..*~napari-unet-(\d+)-[^/]*$")
#: A temporary file of a live process older than this is stale all the same (s).
_STALE_AGE = 24 * 3600.0

PathLike = str | os.PathLike


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def check_output(
    path: PathLike,
    *,
    overwrite: bool = False,
    inputs: Iterable[PathLike | None] = (),
    suffixes: Sequence[str] = (),
    option: str = "",
) -> Path:
    """Refuse an output path before any work is done; return it as a Path.

    Args:
        path: the file to be written.
        overwrite: an existing file may be replaced (never one of ``inputs``).
        inputs: files or folders the job reads; the output may not be any of them, nor
            lie inside an input folder such as a DICOM series.
        suffixes: allowed endings (lower case), e.g. ``(".nii", ".nii.gz")``.
        option: the option that named the path (e.g. ``"--save"``), for the message.

    Raises:
        InputError: one sentence naming the path and the problem.
    """
    out = Path(path)
    what = f"{option} {out}" if option else str(out)
    if suffixes and not str(out).lower().endswith(tuple(suffixes)):
        raise InputError(f"{what}: the output must end in {' or '.join(suffixes)}")
    for source in filter(None, inputs):
        src = Path(source)
        if _same_file(out, src) or (src.is_dir() and _inside(out, src)):
            raise InputError(
                f"{what}: is also an input of this command ({src}); "
                "choose another output name (an input is never overwritten)"
            )
    if out.is_dir():
        raise InputError(f"{what}: is a folder, not a file name")
    folder = out.parent
    if not folder.is_dir():
        raise InputError(f"{what}: folder {folder} does not exist")
    if out.exists() and not overwrite:
        raise InputError(f"{what}: already exists (choose another name, or overwrite it)")
    check_writable(folder, what=what)
    return out


def check_distinct(*named: tuple[str, PathLike | None]) -> None:
    """Refuse two outputs of one command that name the same file.

    Args:
        named: ``(option, path)`` pairs; None paths are ignored.
    """
    given = [(opt, Path(p)) for opt, p in named if p is not None]
    for n, (opt_a, a) in enumerate(given):
        for opt_b, b in given[n + 1 :]:
            if _same_file(a, b):
                raise InputError(f"{a}: {opt_a} and {opt_b} name the same file; give two names")


def check_writable(folder: PathLike, *, what: str | None = None) -> None:
    """Raise InputError unless a file can be created in ``folder`` (probed for real)."""
    folder = Path(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".write-test{_TEMP_MARK}{os.getpid()}-", dir=folder)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise InputError(f"{what or folder}: cannot write in {folder} ({reason})") from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: PathLike) -> list[Path]:
    """Remove our temporary files in ``folder`` whose writer is gone; return them."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > _STALE_AGE
            if old or not _pid_alive(int(match.group(1))):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _file_mode(path: Path) -> int:
    """The mode a new file gets (umask honoured), or the replaced file's own mode."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(path: PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` whole.

    The writer writes the temporary file however it likes (nibabel, safetensors, numpy).
    Then the file is fsynced, given the replaced file's mode (or the umask's), renamed
    over ``path``, and the folder is fsynced. On any exception the temporary file is
    removed and the target is untouched.

    Args:
        path: the target file.
        suffix: the temporary file's ending (writers that pick a format by name, such as
            nibabel, need ``.nii.gz``); default: the target's own suffixes.

    Raises:
        InputError: the folder does not exist or is not writable, or the disk is full.
    """
    path = Path(path)
    folder = path.parent
    if suffix is None:
        suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix
    remove_stale_temps(folder)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name}{_TEMP_MARK}{os.getpid()}-", suffix=suffix, dir=folder
        )
    except OSError as e:
        raise InputError(f"{path}: cannot write in {folder} ({e.strerror or e})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:
            raise InputError(f"{path}: could not be written ({e.strerror or e})") from e
        raise
    _fsync_folder(folder)

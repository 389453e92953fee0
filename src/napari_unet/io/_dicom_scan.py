"""The folder walk of the DICOM reader: regular files only, bounded, loop-safe.

`walk_files` lists the files under a folder in a stable order (a folder's files sorted by
name, then its sub-folders, depth first) and never opens anything. It

* skips hidden entries and ``DICOMDIR`` silently (as before);
* reads only regular files and symbolic links to regular files: FIFOs, sockets and
  devices would block or never end, so they are skipped and reported in ``skipped``;
* follows a symbolic link to a folder at most once per real folder (a link back to an
  ancestor is a loop: skipped and reported) and lists a file reached under several names
  (links) once; broken links are reported too;
* refuses more than `MAX_DEPTH` levels of folders or more than `MAX_ENTRIES` files and
  folders with a `VolumeReadError`, instead of recursing without end.

`scan_steps` then reads the header of each file (`_dicom_header.read_header`) and groups
the image files by SeriesInstanceUID.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from napari_unet import jobs
from napari_unet.errors import VolumeReadError
from napari_unet.io._dicom_header import Header, UnreadableFile, kind_of, read_header
from napari_unet.typing import StopFn

#: Folders deeper than this below the folder that was opened are refused.
MAX_DEPTH = 32
#: Files and folders examined under one folder, at most.
MAX_ENTRIES = 100_000


@dataclass
class Walk:
    """What `walk_files` found besides the files it yields.

    Attributes:
        skipped: ``{"path", "reason"}`` for each special file, broken link or loop.
        dicomdir: a DICOMDIR index file was seen (and skipped).
        entries: files and folders examined.
    """

    skipped: list[dict[str, str]] = field(default_factory=list)
    dicomdir: bool = False
    entries: int = 0

    def skip(self, path: str | os.PathLike[str], reason: str) -> None:
        self.skipped.append({"path": os.fspath(path), "reason": reason})


def walk_files(
    root: Path, walk: Walk, *, max_depth: int | None = None, max_entries: int | None = None
) -> Iterator[Path]:
    """Regular files under ``root`` (a folder), see the module docstring.

    Args:
        root: the folder (a symbolic link to one is followed).
        walk: receives skipped entries and counts.
        max_depth: defaults to `MAX_DEPTH`.
        max_entries: defaults to `MAX_ENTRIES`.

    Raises:
        VolumeReadError: ``root`` cannot be listed, or a limit is exceeded.
    """
    max_depth = MAX_DEPTH if max_depth is None else max_depth
    max_entries = MAX_ENTRIES if max_entries is None else max_entries
    try:
        st = os.stat(root)
    except OSError as e:
        raise VolumeReadError(f"{root}: cannot read the folder ({e.strerror})") from e
    visited = {(st.st_dev, st.st_ino)}
    seen_files: dict[tuple[int, int], str] = {}
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        subfolders = []
        for path, link, st in _folder_entries(folder, root, walk, max_entries):
            mode = st.st_mode
            if stat.S_ISREG(mode):
                key = (st.st_dev, st.st_ino)
                if key in seen_files:  # a link (or hard link) to a file already listed
                    walk.skip(path, f"the same file as {seen_files[key]}, read once")
                    continue
                seen_files[key] = path.name
                yield path
            elif stat.S_ISDIR(mode):
                subfolders.append((path, link))
            else:
                walk.skip(path, f"{kind_of(mode)}, not read")
        new = _new_folders(reversed(subfolders), root, walk, visited, depth + 1, max_depth)
        stack.extend((path, depth + 1) for path in new)


def _list_folder(folder: Path, root: Path, walk: Walk) -> list[os.DirEntry[str]]:
    """The entries of ``folder`` sorted by name; none if it cannot be listed (reported
    in ``walk``).

    Raises:
        VolumeReadError: ``root`` itself cannot be listed.
    """
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        if folder == root:
            raise VolumeReadError(f"{root}: cannot read the folder ({e.strerror})") from e
        walk.skip(folder, f"cannot list the folder ({e.strerror})")
        return []


def _folder_entries(
    folder: Path, root: Path, walk: Walk, max_entries: int
) -> Iterator[tuple[Path, bool, os.stat_result]]:
    """The entries of ``folder`` to examine, sorted by name: ``(path, is a symbolic link,
    status)``, the status of a link's target. Hidden entries and DICOMDIR are left out
    (a DICOMDIR is noted in ``walk``); entries that cannot be stat'ed are reported there.

    Raises:
        VolumeReadError: ``root`` cannot be listed, or ``walk`` has counted more than
            ``max_entries`` entries.
    """
    for entry in _list_folder(folder, root, walk):
        name = entry.name
        if name.upper() == "DICOMDIR":
            walk.dicomdir = True
            continue
        if name.startswith("."):
            continue
        walk.entries += 1
        if walk.entries > max_entries:
            raise VolumeReadError(
                f"{root}: more than {max_entries} files and folders; open the folder "
                "of one series (or a few) rather than a whole archive"
            )
        path = Path(entry.path)
        link = False
        try:
            link = entry.is_symlink()
            st = os.stat(path) if link else entry.stat(follow_symlinks=False)
        except OSError as e:
            walk.skip(path, "broken symbolic link" if link else f"cannot stat ({e.strerror})")
            continue
        yield path, link, st


def _new_folders(
    subfolders: Iterable[tuple[Path, bool]],
    root: Path,
    walk: Walk,
    visited: set[tuple[int, int]],
    depth: int,
    max_depth: int,
) -> Iterator[Path]:
    """The ``(path, is a symbolic link)`` subfolders not read yet, which are added to
    ``visited`` (device, inode); a link to one already read is reported in ``walk``.

    Raises:
        VolumeReadError: a new folder lies ``depth`` > ``max_depth`` levels below ``root``.
    """
    for path, link in subfolders:
        try:
            st = os.stat(path)
        except OSError as e:
            walk.skip(path, f"cannot stat ({e.strerror})")
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited:
            if link:
                walk.skip(
                    path, "link to a folder already read (a loop or a duplicate), not followed"
                )
            continue
        if depth > max_depth:
            raise VolumeReadError(
                f"{root}: folders nested more than {max_depth} levels deep (e.g. "
                f"{path.relative_to(root).parts[0]}/…); open a folder nearer the images"
            )
        visited.add(key)
        yield path


@dataclass
class Scan:
    """Image files under a path, grouped by SeriesInstanceUID."""

    root: Path
    series: dict[str, list[Header]]
    candidates: int
    skipped: list[dict[str, str]] = field(default_factory=list)


def _nothing_found(path: Path, walk: Walk) -> str:
    message = f"no DICOM files found in {path}"
    if walk.dicomdir:
        message += " (only a DICOMDIR index: the image files it lists are not there)"
    if walk.skipped:
        shown = ", ".join(f"{Path(s['path']).name} ({s['reason']})" for s in walk.skipped[:3])
        more = f" and {len(walk.skipped) - 3} more" if len(walk.skipped) > 3 else ""
        message += f"; skipped {shown}{more}"
    return message


def scan_steps(path: Path, stop: StopFn, skip_unreadable: bool = False) -> jobs.Job[Scan]:
    """Read the headers under ``path`` and group image files by SeriesInstanceUID."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise VolumeReadError(f"{path}: no such file or folder") from None
    except (OSError, ValueError) as e:
        raise VolumeReadError(f"{path}: cannot read it ({e})") from e
    walk = Walk()
    single = stat.S_ISREG(mode)
    if single:
        files = [path]
    elif stat.S_ISDIR(mode):
        files = list(walk_files(path, walk))
    else:
        raise VolumeReadError(f"{path}: {kind_of(mode)}, neither a DICOM file nor a folder")
    series: dict[str, list[Header]] = {}
    for n, file in enumerate(files):
        if stop():
            raise jobs.Cancelled(f"reading DICOM headers in {path} was cancelled")
        try:
            header = read_header(file, single=single)
        except UnreadableFile as e:
            if single:
                raise
            if not skip_unreadable:
                raise UnreadableFile(f"{e}; remove or replace it to read the folder") from e
            walk.skip(file, str(e).removeprefix(f"{file}: "))
            header = None
        if header is not None:
            series.setdefault(header.uid, []).append(header)
        yield jobs.Progress(n + 1, len(files), "reading DICOM headers")
    if not series:
        raise VolumeReadError(_nothing_found(path, walk))
    return Scan(path, series, len(files), walk.skipped)

"""Which scans make a cohort, and what happened to each: cases and ``cohort.jsonl``.

A cohort is a list of `Case`s collected from what the user names (`collect_cases`):

* a file (NIfTI, DICOM file): one case;
* a folder: NIfTI files directly inside → one case each; else DICOM files directly
  inside → the folder is one series, one case; else each sub-folder is looked at the
  same way (two levels down at most), so ``study/patient/series/`` trees work;
* a glob (``"scans/*.nii.gz"``, quoted so that the shell leaves it alone): every match;
* a CSV or TSV manifest (``.csv``/``.tsv``): one case per row, columns ``image`` and
  optionally ``labels``, ``id``, ``slices`` ("AXIS:I,J,..." reviewed slices) and
  ``ignore_label``. With a header row the columns go by name; without one they are
  ``image[,labels][,id]``. Relative paths are relative to the manifest's folder.

A case's id is the manifest's ``id``, else the input's file or folder name without its
extension; ids become file names (characters outside ``A-Z a-z 0-9 . _ -`` turn into
``_``). Two inputs with the same name get ``-2``, ``-3`` … in input order; two manifest
rows with the same id are refused.

``OUT_DIR/cohort.jsonl`` holds one JSON object per case (`RECORD_KEYS` at least).
Records are appended as cases finish (so an interrupted run keeps what it finished), and
the file is rewritten atomically with one line per case when the run ends. Reading
takes the last record of each id and skips a damaged line (a run killed mid-write).

No torch here (a folder's DICOM check reads at most 132 bytes of 64 files).
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from napari_unet.errors import InputError
from napari_unet.outputs import atomic_output

#: The run's record file inside the output folder.
RECORD_FILE = "cohort.jsonl"
#: Keys every record has (DESIGN.md, CLI contract).
RECORD_KEYS = ("id", "input", "output", "status", "seconds", "device", "model", "uncertainty",
               "error")  # fmt: skip
STATUSES = ("done", "failed", "skipped")
MANIFEST_SUFFIXES = (".csv", ".tsv")
#: Largest manifest read (rows); a bigger one is a mistake or an attack, not a study.
MAX_ROWS = 1_000_000
_GLOB_CHARS = re.compile(r"[*?\[]")
_ID_BAD = re.compile(r"[^A-Za-z0-9._-]+")
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".ima")
_MAX_DEPTH = 2


@dataclass(frozen=True)
class Case:
    """One scan of a cohort.

    Attributes:
        id: unique name of the case (its output is ``OUT_DIR/<id>.nii.gz``).
        image: the scan: a NIfTI file, a DICOM file or a DICOM folder.
        labels: a label map on the scan's grid (training, review), or None.
        slices: reviewed slices ``"AXIS:I,J,..."`` (training only these), or None.
        ignore_label: a label value meaning "not labelled" (training), or None.
    """

    id: str
    image: str
    labels: str | None = None
    slices: str | None = None
    ignore_label: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def case_id(path: str | os.PathLike) -> str:
    """A case id from a file or folder name: the name without its image extension."""
    name = Path(path).name
    lower = name.lower()
    for suffix in _IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return clean_id(name)


def clean_id(text: str) -> str:
    """``text`` as a safe file name stem (never empty, never hidden)."""
    cleaned = _ID_BAD.sub("_", str(text)).strip("._")
    return cleaned[:120] or "case"


def is_manifest(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(MANIFEST_SUFFIXES)


def is_cohort_input(inputs: Sequence[str]) -> bool:
    """Whether ``predict``'s inputs make a cohort (an output folder) rather than one scan.

    Several inputs, a manifest, a glob that is not an existing path, or a folder that
    holds several cases (or NIfTI files) do; one file or one DICOM series folder does not.
    """
    if len(inputs) != 1:
        return True
    only = inputs[0]
    if is_manifest(only):
        return True
    path = Path(only)
    if not path.exists():
        return bool(_GLOB_CHARS.search(only))
    if path.is_dir():
        return [Path(p) for p in _expand_folder(path)] != [path]
    return False


def collect_cases(inputs: Iterable[str | os.PathLike]) -> list[Case]:
    """The cases named by files, folders, globs and manifests (see the module docstring).

    Raises:
        InputError: an input that does not exist or matches nothing, a manifest that
            cannot be read, or no case at all.
    """
    cases: list[Case] = []
    seen: set[str] = set()
    for item in inputs:
        text = os.fspath(item)
        if is_manifest(text):  # its rows as they are (one scan may have two label maps)
            cases.extend(read_manifest(text))
            continue
        for path in _expand(text):
            key = os.path.realpath(path)
            if key in seen:  # the same scan named twice (a glob and a file)
                continue
            seen.add(key)
            cases.append(Case(case_id(path), os.path.abspath(path)))
    if not cases:
        raise InputError("no scan found in the inputs given")
    return _unique_ids(cases)


def _unique_ids(cases: list[Case]) -> list[Case]:
    used: dict[str, int] = {}
    out = []
    for case in cases:
        n = used.get(case.id, 0) + 1
        used[case.id] = n
        if n > 1:
            new = f"{case.id}-{n}"
            while new in used:
                n += 1
                new = f"{case.id}-{n}"
            used[new] = 1
            case = Case(new, case.image, case.labels, case.slices, case.ignore_label)
        out.append(case)
    return out


def _expand(text: str) -> list[str]:
    path = Path(text)
    if path.exists():
        return _expand_folder(path) if path.is_dir() else [str(path)]
    if _GLOB_CHARS.search(text):
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise InputError(f"{text}: no file or folder matches this pattern")
        out: list[str] = []
        for match in matches:
            m = Path(match)
            if m.is_dir():
                out.extend(_expand_folder(m))
            elif not m.name.startswith("."):
                out.append(str(m))
        return out
    raise InputError(f"{text}: no such file or folder")


def _expand_folder(folder: Path, depth: int = 0) -> list[str]:
    """The cases inside a folder (module docstring); [] when there is none."""
    from napari_unet.io.dicom import has_preamble
    from napari_unet.io.nifti import is_nifti_path

    try:
        entries = sorted((e for e in folder.iterdir() if not e.name.startswith(".")),
                         key=lambda e: e.name)  # fmt: skip
    except OSError as e:
        raise InputError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
    files = [e for e in entries if e.is_file()]
    niftis = [str(e) for e in files if is_nifti_path(e)]
    if niftis:
        return niftis
    if any(f.suffix.lower() in (".dcm", ".ima") or has_preamble(f) for f in files[:64]):
        return [str(folder)]
    if depth >= _MAX_DEPTH:
        return []
    out: list[str] = []
    for sub in entries:
        if sub.is_dir():
            out.extend(_expand_folder(sub, depth + 1))
    return out


# --- manifests ------------------------------------------------------------------------


def read_manifest(path: str | os.PathLike) -> list[Case]:
    """Read a CSV/TSV manifest (module docstring).

    Raises:
        InputError: unreadable file, no ``image`` column, an empty image cell, a bad
            ``ignore_label``, a duplicate id — one line naming the file and the row.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text manifest (expected UTF-8 CSV or TSV)") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the manifest ({e.strerror or e})") from None
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = [
        (n, row)
        for n, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), 1)
        if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")
    ]
    if len(rows) > MAX_ROWS:
        raise InputError(f"{path}: {len(rows)} rows; a manifest may have {MAX_ROWS} at most")
    if not rows:
        raise InputError(f"{path}: the manifest is empty")
    header = [c.strip().lower() for c in rows[0][1]]
    if "image" in header:
        columns, rows = header, rows[1:]
    else:
        columns = ["image", "labels", "id"]
    unknown = [c for c in columns if c and c not in ("image", "labels", "id", "slices",
                                                     "ignore_label")]  # fmt: skip
    if unknown:
        raise InputError(
            f"{path}: unknown column {unknown[0]!r} (expected image, labels, id, slices, "
            "ignore_label)"
        )
    base = path.absolute().parent
    cases, ids = [], set()
    for n, row in rows:
        values = {c: (row[i].strip() if i < len(row) else "") for i, c in enumerate(columns)}
        where = f"{path}, line {n}"
        if len(row) > len(columns) and any(c.strip() for c in row[len(columns) :]):
            raise InputError(f"{where}: {len(row)} cells, the manifest has {len(columns)} columns")
        if not values.get("image"):
            raise InputError(f"{where}: no image given")
        image = str(base / values["image"])
        labels = str(base / values["labels"]) if values.get("labels") else None
        cid = clean_id(values["id"]) if values.get("id") else case_id(image)
        if values.get("id") and cid in ids:
            raise InputError(f"{where}: id {cid!r} is used twice")
        ids.add(cid)
        cases.append(Case(cid, image, labels, values.get("slices") or None,
                          _ignore_label(values.get("ignore_label"), where)))  # fmt: skip
    if not cases:
        raise InputError(f"{path}: the manifest has a header but no case")
    return cases


def _ignore_label(text: str | None, where: str) -> int | None:
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise InputError(f"{where}: ignore_label must be an integer from 0 to 65535, got {text!r}")
    return value


def write_manifest(path: str | os.PathLike, cases: Sequence[Case]) -> Path:
    """Write ``cases`` as a CSV manifest (absolute paths), atomically."""
    path = Path(path)
    columns = ["id", "image", "labels", "slices", "ignore_label"]
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for case in cases:
            d = case.to_dict()
            writer.writerow(["" if d[c] is None else d[c] for c in columns])
    return path


# --- records (cohort.jsonl) -------------------------------------------------------------


def read_records(out_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The last record of each case in ``OUT_DIR/cohort.jsonl`` ({} if there is none)."""
    path = Path(out_dir) / RECORD_FILE
    records: dict[str, dict[str, Any]] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return records
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed run
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records[record["id"]] = record
    return records


def append_record(out_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record as one line, flushed to disk (a crash loses no finished case)."""
    line = json.dumps(record, allow_nan=False, default=str) + "\n"
    with open(Path(out_dir) / RECORD_FILE, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def write_records(out_dir: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Rewrite ``cohort.jsonl`` with exactly these records, atomically."""
    path = Path(out_dir) / RECORD_FILE
    text = "".join(json.dumps(r, allow_nan=False, default=str) + "\n" for r in records)
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path

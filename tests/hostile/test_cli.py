"""Hostile cases for the command line (issue 11): options, outputs, inputs, the exit contract.

Every refusal goes through `tests.hostile.contract.refuse` (exit 2, one clean line naming
the option or file, no traceback) and must happen before any model is loaded or trained,
so these tests are fast. Afterwards the inputs are byte-for-byte unchanged and no output
(or temporary file) was left behind.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_unet.cli import main
from tests.conftest import write_nifti
from tests.hostile.contract import PeakMemory, no_temp_files, refuse
from tests.training.conftest import blob_pair

pytestmark = pytest.mark.timeout(120)

SHAPE = (32, 32, 6)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Valid inputs in their own folder: a scan, its labels, a 1-class 2D model, DICOM."""
    from tests.io.dicom_factory import ramp_kji, write_series

    d = tmp_path_factory.mktemp("inputs")
    image, labels = blob_pair(shape=SHAPE)
    files = {
        "img": str(write_nifti(d / "img.nii.gz", image.array, AFFINE)),
        "lab": str(write_nifti(d / "lab.nii.gz", labels.array, AFFINE)),
        "model": str(d / "model.safetensors"),
        "dcm": str(d / "ct"),
    }
    new = ["new-model", files["model"], "--dims", "2", "--labels", "fg", "--patch", "16", "16"]
    assert main(new) == 0
    write_series(d / "ct", ramp_kji((4, 8, 8)))
    return files


@pytest.fixture
def fmt(inputs, tmp_path):
    """Fill ``{img}``, ``{lab}``, ``{model}``, ``{dcm}`` and ``{out}`` (an empty folder)."""

    def fill(argv: list[str]) -> list[str]:
        return [a.format(out=tmp_path, **inputs) for a in argv]

    return fill


def _snapshot(folder: str | Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def _refuse_cleanly(capsys, inputs, tmp_path, argv, fragments) -> str:
    """`refuse`, then: inputs unchanged, nothing written into the output folder."""
    before = _snapshot(Path(inputs["img"]).parent)
    err = refuse(capsys, argv, *fragments)
    assert _snapshot(Path(inputs["img"]).parent) == before, "an input was changed"
    assert list(tmp_path.iterdir()) == [], f"left behind: {list(tmp_path.iterdir())}"
    return err


TRAIN = ["train", "{img}", "{lab}", "-o", "{out}/m.safetensors"]
SIMULATE = ["simulate", "{img}", "{lab}"]
PREDICT = ["predict", "{model}", "{img}", "-o", "{out}/seg.nii.gz"]
NEW = ["new-model", "{out}/new.safetensors", "--dims", "2", "--labels", "a"]

# --- options: refused at parse time, naming the option and the allowed range ---------------

OPTION_CASES = {
    "seconds-inf": ([*TRAIN, "--seconds", "inf"], ["--seconds", "finite"]),
    "seconds-nan": ([*TRAIN, "--seconds", "nan"], ["--seconds", "finite"]),
    "seconds-negative": ([*TRAIN, "--seconds=-5"], ["--seconds", "more than 0"]),
    "seconds-huge": ([*SIMULATE, "--seconds", "1e300"], ["--seconds", "at most"]),
    "steps-0": ([*TRAIN, "--steps", "0"], ["--steps", "from 1 to"]),
    "steps-huge": ([*TRAIN, "--steps", str(10**12)], ["--steps", "from 1 to"]),
    "steps-text": ([*TRAIN, "--steps", "many"], ["--steps", "integer"]),
    "later-steps-0": ([*SIMULATE, "--later-steps", "0"], ["--later-steps"]),
    "rounds-1e9": ([*SIMULATE, "--rounds", str(10**9)], ["--rounds", "from 1 to 1000"]),
    "rounds-0": ([*SIMULATE, "--rounds", "0"], ["--rounds"]),
    "slices-per-round-0": ([*SIMULATE, "--slices-per-round", "0"], ["--slices-per-round"]),
    "batch-size-0": ([*PREDICT, "--batch-size", "0"], ["--batch-size", "from 1 to 4096"]),
    "batch-size-huge": ([*PREDICT, "--batch-size", str(10**9)], ["--batch-size"]),
    "context-slices-1e8": ([*NEW, "--context-slices", str(10**8)], ["--context-slices", "0 to"]),
    "context-slices-negative": ([*NEW, "--context-slices=-1"], ["--context-slices"]),
    "patch-0": ([*NEW, "--patch", "0", "0"], ["--patch", "from 8 to 1024"]),
    "patch-100000": ([*NEW, "--patch", "100000", "100000"], ["--patch", "from 8 to 1024"]),
    "patch-wrong-count": ([*NEW, "--patch", "16", "16", "16"], ["patch_size"]),
    "patch-3d-too-many-voxels": (
        [
            "new-model",
            "{out}/n.safetensors",
            "--dims",
            "3",
            "--labels",
            "a",
            "--patch",
            "1024",
            "1024",
            "1024",
        ],
        ["patch_size", "voxels"],
    ),
    "spacing-nan": ([*NEW, "--spacing", "nan", "1", "1"], ["--spacing", "finite"]),
    "spacing-0": ([*NEW, "--spacing", "0", "1", "1"], ["--spacing", "at least"]),
    "spacing-1e-4": ([*NEW, "--spacing", "1e-4", "1", "1"], ["--spacing", "at least"]),
    "spacing-inf": ([*NEW, "--spacing", "1", "inf", "1"], ["--spacing"]),
    "labels-empty": (
        ["new-model", "{out}/n.safetensors", "--dims", "2", "--labels", ""],
        ["--labels"],
    ),
    "labels-commas": (
        ["new-model", "{out}/n.safetensors", "--dims", "2", "--labels", ",,"],
        ["--labels"],
    ),
    "labels-300": (
        [
            "new-model",
            "{out}/n.safetensors",
            "--dims",
            "2",
            "--labels",
            ",".join(f"c{i}" for i in range(300)),
        ],
        ["--labels", "300 class names", "255"],
    ),
    "labels-twice": (
        ["new-model", "{out}/n.safetensors", "--dims", "2", "--labels", "a,a"],
        ["twice"],
    ),
    "labels-escape": (
        ["new-model", "{out}/n.safetensors", "--dims", "2", "--labels", "a\x1b[2J\nb"],
        ["--labels", "printable"],
    ),
    "labels-names-empty": ([*TRAIN, "--labels-names", ""], ["--labels-names"]),
    "ignore-label-70000": ([*TRAIN, "--ignore-label", "70000"], ["--ignore-label", "0 to 65535"]),
    "ignore-label-negative": ([*TRAIN, "--ignore-label=-1"], ["--ignore-label"]),
    "ignore-label-huge": ([*TRAIN, "--ignore-label", "9" * 5000], ["--ignore-label"]),
    "seed-negative": ([*TRAIN, "--seed=-3"], ["--seed"]),
    "demo-seconds-inf": (["demo", "--headless", "--seconds", "inf"], ["--seconds"]),
    "demo-slices-0": (["demo", "--headless", "--slices", "0"], ["--slices"]),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_out_of_range_options_are_refused(case, capsys, inputs, tmp_path, fmt):
    argv, fragments = OPTION_CASES[case]
    _refuse_cleanly(capsys, inputs, tmp_path, fmt(argv), fragments)


# --- outputs: never over an input, never two outputs in one file, never unwritable --------

OUTPUT_CASES = {
    "predict-out-is-the-image": (
        ["predict", "{model}", "{img}", "-o", "{img}", "--overwrite"],
        ["img.nii.gz", "also an input"],
    ),
    "predict-uncertainty-is-the-image": (
        [*PREDICT, "--uncertainty", "{img}", "--overwrite"],
        ["--uncertainty", "also an input"],
    ),
    "predict-uncertainty-is-out": (
        [*PREDICT, "--uncertainty", "{out}/seg.nii.gz"],
        ["-o and --uncertainty name the same file"],
    ),
    "simulate-save-is-the-parent": (
        [*SIMULATE, "--from", "{model}", "--save", "{model}", "--overwrite"],
        ["--save", "model.safetensors", "also an input"],
    ),
    "train-out-is-the-parent": (
        ["train", "{img}", "{lab}", "-o", "{model}", "--from", "{model}", "--overwrite"],
        ["-o", "also an input"],
    ),
    "train-out-is-the-labels": (
        ["train", "{img}", "{lab}", "-o", "{lab}", "--overwrite"],
        ["lab.nii.gz", ".safetensors"],
    ),
    "convert-in-in": (["convert", "{img}", "{img}"], ["img.nii.gz", "also an input"]),
    "convert-in-in-overwrite": (
        ["convert", "{img}", "{img}", "--overwrite"],
        ["img.nii.gz", "also an input"],
    ),
    "convert-into-the-dicom-folder": (
        ["convert", "{dcm}", "{dcm}/ct.nii.gz"],
        ["ct.nii.gz", "also an input"],
    ),
    "convert-into-proc": (["convert", "{img}", "/proc/version.nii.gz"], ["/proc"]),
    "train-into-proc-before-training": (
        ["train", "{img}", "{lab}", "-o", "/proc/m.safetensors", "--steps", "1000"],
        ["/proc", "cannot write"],
    ),
    "predict-uncertainty-into-sys": (
        [*PREDICT, "--uncertainty", "/sys/unc.nii.gz"],
        ["/sys", "cannot write"],
    ),
    "simulate-save-into-proc": ([*SIMULATE, "--save", "/proc/m.safetensors"], ["/proc"]),
    "new-model-into-proc": (
        ["new-model", "/proc/m.safetensors", "--dims", "2", "--labels", "a"],
        ["/proc"],
    ),
    "bench-out-into-proc": (["bench", "--out", "/proc/bench.json"], ["/proc"]),
    "convert-parent-is-a-file": (
        ["convert", "{img}", "{img}/out.nii.gz"],
        ["img.nii.gz", "not a folder"],
    ),
    "predict-parent-missing": (
        ["predict", "{model}", "{img}", "-o", "{out}/no/such/seg.nii.gz"],
        ["does not exist"],
    ),
    "predict-out-is-a-folder": (
        ["predict", "{model}", "{img}", "-o", "{out}/", "--overwrite"],
        ["must end in"],
    ),
    "demo-out-is-a-file": (["demo", "--headless", "--out", "{img}"], ["--out", "not a folder"]),
}


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
def test_unsafe_outputs_are_refused_before_any_work(case, capsys, inputs, tmp_path, fmt):
    argv, fragments = OUTPUT_CASES[case]
    start = time.perf_counter()
    _refuse_cleanly(capsys, inputs, tmp_path, fmt(argv), fragments)
    assert time.perf_counter() - start < 10, "refused only after working"


def test_an_output_that_is_a_symlink_to_the_input_is_refused(capsys, inputs, tmp_path):
    link = tmp_path / "link.nii.gz"
    link.symlink_to(inputs["img"])
    refuse(capsys, ["convert", inputs["img"], link, "--overwrite"], "also an input")
    refuse(capsys, ["predict", inputs["model"], inputs["img"], "-o", link, "--overwrite"], "input")


EXISTING_CASES = {
    "convert": (["convert", "{img}", "{target}"], ".nii.gz"),
    "predict": (["predict", "{model}", "{img}", "-o", "{target}"], ".nii.gz"),
    "predict-uncertainty": ([*PREDICT, "--uncertainty", "{target}"], ".nii.gz"),
    "new-model": (["new-model", "{target}", "--dims", "2", "--labels", "a"], ".safetensors"),
    "train": (["train", "{img}", "{lab}", "-o", "{target}", "--steps", "1"], ".safetensors"),
    "simulate": ([*SIMULATE, "--save", "{target}", "--steps", "1"], ".safetensors"),
    "bench": (["bench", "--quick", "--out", "{target}"], ".json"),
}


@pytest.mark.parametrize("case", sorted(EXISTING_CASES))
def test_existing_outputs_are_kept_without_overwrite(case, capsys, inputs, tmp_path):
    template, suffix = EXISTING_CASES[case]
    target = tmp_path / f"existing{suffix}"
    target.write_bytes(b"precious results")
    argv = [a.format(out=tmp_path, target=target, **inputs) for a in template]
    refuse(capsys, argv, "existing", "already exists", "--overwrite")
    assert target.read_bytes() == b"precious results"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


# --- inputs: label values, NaN, labelled voxels — refused before any allocation --------------


def _write(folder: Path, name: str, array: np.ndarray) -> str:
    return str(write_nifti(folder / name, array, AFFINE))


def _labels(dtype=np.uint8) -> np.ndarray:
    return blob_pair(shape=SHAPE)[1].array.astype(dtype)


def _nan_labels():
    lab = _labels(np.float32)
    lab[3, 4, 2] = lab[5, 6, 1] = np.nan
    return lab


def _inf_image():
    img = blob_pair(shape=SHAPE)[0].array.copy()
    img[0, 0, :] = np.inf
    return img


def _some_nan_image():
    img = blob_pair(shape=SHAPE)[0].array.copy()
    img[10:12, 10:12, 3] = np.nan
    return img


def _fractional_labels():
    lab = _labels(np.float32)
    lab[0, 0, 0] = 0.5
    return lab


def _negative_labels():
    lab = _labels(np.int16)
    lab[0, 0, 0] = -1
    return lab


def _huge_label(dtype=np.int32):
    lab = _labels(dtype)
    lab[1, 1, 1] = 2**31 - 1
    return lab


def _two_classes():
    lab = _labels()
    lab[lab == 1] = 2
    return lab


INPUT_CASES = {
    # name: (argv, {file: array factory}, fragments)
    "train-nan-labels": (TRAIN, {"lab": _nan_labels}, ["lab.nii.gz", "2 voxels are NaN or Inf"]),
    "simulate-nan-truth": (SIMULATE, {"lab": _nan_labels}, ["lab.nii.gz", "NaN"]),
    "train-label-2**31-1": (TRAIN, {"lab": _huge_label}, ["lab.nii.gz", "2147483647"]),
    "train-float-label-2**31-1": (
        TRAIN,
        {"lab": lambda: _huge_label(np.float64)},
        ["lab.nii.gz", "2147483647"],
    ),
    "simulate-label-2**31-1": (SIMULATE, {"lab": _huge_label}, ["lab.nii.gz", "2147483647"]),
    "train-label-beyond-parent": (
        [*TRAIN, "--from", "{model}"],
        {"lab": _two_classes},
        ["lab.nii.gz", "label value 2 but the model has 1 classes"],
    ),
    "train-label-beyond-names": (
        [*TRAIN, "--labels-names", "liver"],
        {"lab": _two_classes},
        ["label value 2 but the model has 1 classes"],
    ),
    "train-fractional-labels": (TRAIN, {"lab": _fractional_labels}, ["lab.nii.gz", "fractional"]),
    "train-negative-labels": (TRAIN, {"lab": _negative_labels}, ["lab.nii.gz", "negative"]),
    "train-all-nan-image": (
        TRAIN,
        {"img": lambda: np.full(SHAPE, np.nan, np.float32)},
        ["img.nii.gz", f"all {np.prod(SHAPE)} voxels are NaN or Inf", "does not guess"],
    ),
    "simulate-inf-image": (SIMULATE, {"img": _inf_image}, ["img.nii.gz", "6 of", "NaN or Inf"]),
    "predict-some-nan-image": (
        PREDICT,
        {"img": _some_nan_image},
        ["img.nii.gz", "4 of 6144 voxels are NaN or Inf"],
    ),
    "train-all-ignore": (
        [*TRAIN, "--ignore-label", "9"],
        {"lab": lambda: np.full(SHAPE, 9, np.uint8)},
        ["lab.nii.gz", "no labelled voxels", "ignore label 9"],
    ),
    "train-reviewed-slices-all-ignore": (
        [*TRAIN, "--ignore-label", "7", "--slices", "2:1,2"],
        {"lab": lambda: np.broadcast_to(np.uint8([7, 7, 7, 0, 0, 0]), SHAPE).copy()},
        ["no labelled voxels in the reviewed slices"],
    ),
}


@pytest.mark.parametrize("case", sorted(INPUT_CASES))
def test_unusable_inputs_are_refused(case, capsys, inputs, tmp_path):
    template, replaced, fragments = INPUT_CASES[case]
    files = dict(inputs)
    src = tmp_path / "in"
    src.mkdir()
    for key, make in replaced.items():
        files[key] = _write(src, Path(inputs[key]).name, make())
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.format(out=out, **files) for a in template]
    refuse(capsys, argv, *fragments)
    assert list(out.iterdir()) == []


def test_label_2_31_is_refused_at_once_in_bounded_memory(capsys, tmp_path):
    import napari_unet.inference.checks
    import napari_unet.models.files
    import napari_unet.training.trainer  # noqa: F401

    image, _ = blob_pair(shape=(64, 64, 16))
    img = _write(tmp_path, "img.nii.gz", image.array)
    lab = np.zeros((64, 64, 16), np.int32)
    lab[5, 5, 5] = 2**31 - 1
    lab = _write(tmp_path, "lab.nii.gz", lab)
    argv = ["train", img, lab, "-o", tmp_path / "m.safetensors"]
    start = time.perf_counter()
    with PeakMemory() as mem:
        refuse(capsys, argv, "2147483647")
    assert time.perf_counter() - start < 2.0
    assert mem.peak < 200e6, f"peak {mem.peak / 1e6:.0f} MB"


@pytest.mark.slow
def test_all_background_reviewed_slices_warn_but_train(capsys, inputs, tmp_path):
    lab = _write(tmp_path, "bg.nii.gz", np.zeros(SHAPE, np.uint8))
    out = tmp_path / "m.safetensors"
    argv = ["train", inputs["img"], lab, "-o", out, "--slices", "2:1,2", "--steps", "1"]
    assert main([str(a) for a in [*argv, "--device", "cpu"]]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "no foreground" in err and out.exists()


# --- the exit contract: OS errors, memory, pipes, encodings, sanitised text ---------------


def _fail_replace(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[0]), None, str(args[1]))


@pytest.mark.parametrize("overwrite", [False, True])
def test_disk_full_at_rename_gives_one_line_and_leaves_nothing(
    overwrite, capsys, inputs, tmp_path, monkeypatch
):
    out = tmp_path / "out.nii.gz"
    if overwrite:
        out.write_bytes(b"old")
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr(os, "replace", _fail_replace)
    extra = ["--overwrite"] if overwrite else []
    refuse(capsys, ["convert", inputs["img"], out, *extra], "out.nii.gz", "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert no_temp_files(tmp_path) == []
    assert not overwrite or out.read_bytes() == b"old"


def test_disk_full_while_writing_gives_one_line_and_leaves_nothing(
    capsys, inputs, tmp_path, monkeypatch
):
    def half_then_full(img, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))

    monkeypatch.setattr(nib, "save", half_then_full)
    refuse(capsys, ["convert", inputs["img"], tmp_path / "o.nii.gz"], "No space left on device")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("error", "fragments"),
    [
        (
            PermissionError(errno.EACCES, "Permission denied", "/data/scan.nii"),
            ["/data/scan.nii: Permission denied"],
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"),
            ["/mnt/ro/x: Read-only file system"],
        ),
        (OSError(errno.EIO, "Input/output error"), ["Input/output error"]),
        (
            MemoryError("Unable to allocate 3.6 GiB for an array"),
            ["out of memory", "3.6 GiB", "smaller"],
        ),
        (OSError(errno.ENAMETOOLONG, "File name too long", "x" * 5000), ["File name too long"]),
    ],
)
def test_environment_errors_are_one_line_exit_2(error, fragments, capsys, inputs, monkeypatch):
    import napari_unet.io.reader

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(napari_unet.io.reader, "load_volume", fail)
    err = refuse(capsys, ["info", inputs["img"]], *fragments)
    assert len(err) <= 520


def test_our_own_bugs_stay_exit_1(capsys, inputs, monkeypatch):
    import napari_unet.io.reader

    def bug(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(napari_unet.io.reader, "load_volume", bug)
    monkeypatch.delenv("NAPARI_UNET_DEBUG", raising=False)
    assert main(["info", inputs["img"]]) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and err.count("\n") == 1


def test_a_closed_stdout_object_exits_quietly(capsys, inputs, tmp_path, monkeypatch):
    closed = open(tmp_path / "stdout.txt", "w")  # noqa: SIM115
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)
    assert main(["info", inputs["img"]]) == 141
    assert capsys.readouterr().err == ""


def test_a_pipe_whose_reader_is_gone_exits_quietly(capsys, inputs, monkeypatch):
    read_end, write_end = os.pipe()
    os.close(read_end)
    stdout = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        assert main(["info", inputs["img"], "--json"]) == 141
    finally:
        stdout.close()  # flushes into /dev/null now: no second error
    assert capsys.readouterr().err == ""


def test_head_closing_the_pipe_gives_no_traceback(inputs):
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_unet.cli", "info", inputs["img"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert err == b""


def test_text_the_terminal_cannot_encode_is_escaped(inputs, tmp_path, monkeypatch):
    named = tmp_path / "scän_✓.nii.gz"
    named.write_bytes(Path(inputs["img"]).read_bytes())
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii"))
    assert main(["info", str(named)]) == 0
    sys.stdout.flush()
    assert b"sc\\xe4n_\\u2713" in raw.getvalue()


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom: the escapes are not ISO 8859
def test_dicom_descriptions_are_printed_on_one_clean_line(capsys, tmp_path):
    from tests.io.dicom_factory import ramp_kji, write_series

    two = tmp_path / "two"
    hostile = "AX T1\x1b[2J\x1b]0;pwned\x07\nrm -rf ~\r\u202eevil"
    write_series(two / "a", ramp_kji((4, 6, 6)), description=hostile, series_number=3)
    write_series(two / "b", ramp_kji((5, 6, 6)), description="SAG T2", series_number=4)
    err = refuse(capsys, ["info", two], "AX T1", "rm -rf", "SAG T2", "--series")
    assert "\x1b" not in err and "pwned" not in err and "\u202e" not in err
    capsys.readouterr()
    write_series(tmp_path / "one", ramp_kji((4, 6, 6)), description=hostile)
    assert main(["info", str(tmp_path / "one")]) == 0
    out = capsys.readouterr().out
    assert "description: AX T1" in out and "\x1b" not in out and "\r" not in out


def test_a_file_name_with_line_breaks_stays_one_line(capsys, tmp_path):
    refuse(capsys, ["info", tmp_path / "evil\nname\x1b[31m.nii.gz"], "evil name")


# --- a writer killed with kill -9 leaves a temporary file that the next write removes ------

_KILLED_WRITER = """
import sys, time
from napari_unet.outputs import atomic_output
with atomic_output(sys.argv[1]) as tmp:
    with open(tmp, "wb") as f:
        f.write(b"x" * 5_000_000)
        f.flush()
    print("READY", flush=True)
    time.sleep(120)
"""


def test_temp_file_of_a_killed_writer_is_removed_by_the_next_write(inputs, tmp_path):
    target = tmp_path / "killed.nii.gz"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "READY"
        assert no_temp_files(tmp_path), "the writer made no temporary file"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert main(["convert", inputs["img"], str(tmp_path / "other.nii.gz")]) == 0
    assert no_temp_files(tmp_path) == []
    assert not target.exists()
    assert (tmp_path / "other.nii.gz").exists()

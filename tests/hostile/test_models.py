"""Hostile cases for model files (issue 11): tampered, truncated, odd or foreign files.

Each case writes a real file and runs ``napari-unet predict MODEL IMAGE -o OUT`` in-process
(`tests.hostile.contract.refuse`): exit status 2, one line naming the model file, no
traceback, no output written. A pickle or ``torch.save`` payload that would create a
marker file when unpickled must never run. A hypothesis test mutates a valid file and
checks that loading either succeeds or raises `ModelFileError`, within bounded memory.
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from napari_unet.cli import main
from napari_unet.errors import ModelFileError
from napari_unet.models import build_model, load_model, preset_spec, read_model_header, save_model
from napari_unet.models.files import METADATA_KEY, tensor_hash
from tests.conftest import write_nifti
from tests.hostile.contract import PeakMemory, refuse

pytestmark = pytest.mark.timeout(120)

SPEC = preset_spec(
    "unet", spatial_dims=2, labels=["organ"], channels=[4, 8], strides=[2], patch_size=(16, 16)
)
MARKER = "pwned-marker"


class _Touch:
    """A pickle payload that creates a marker file when unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


# --- building blocks -------------------------------------------------------------------


def _state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.contiguous().clone() for k, v in build_model(SPEC).state_dict().items()}


def _valid(folder: Path, name: str = "model.safetensors") -> Path:
    path = folder / name
    save_model(path, _state_dict(), SPEC, {"parent": None})
    return path


def _split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict | bytes, body: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _meta(path: Path) -> dict:
    header, _ = _split(path.read_bytes())
    return json.loads(header["__metadata__"][METADATA_KEY])


def _header_case(change: Callable[[dict], object]) -> Callable[[Path], Path]:
    """A valid file whose safetensors header JSON is changed (tensor bytes kept)."""

    def make(folder: Path) -> Path:
        path = _valid(folder)
        header, body = _split(path.read_bytes())
        change(header)
        path.write_bytes(_join(header, body))
        return path

    return make


def _meta_case(change: Callable[[dict], object]) -> Callable[[Path], Path]:
    """A valid file whose napari_unet metadata object is changed."""

    def edit(header: dict) -> None:
        meta = json.loads(header["__metadata__"][METADATA_KEY])
        change(meta)
        header["__metadata__"][METADATA_KEY] = json.dumps(meta)

    return _header_case(edit)


def _spec_case(**changes: object) -> Callable[[Path], Path]:
    return _meta_case(lambda meta: meta["spec"].update(changes))


def _bytes_case(transform: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = _valid(folder)
        path.write_bytes(transform(path.read_bytes()))
        return path

    return make


def _tensors_case(change: Callable[[dict], dict]) -> Callable[[Path], Path]:
    """A file written by safetensors from changed tensors, with a *correct* hash for them."""

    def make(folder: Path) -> Path:
        path = _valid(folder)
        meta = _meta(path)
        sd = change(_state_dict())
        meta["hash"] = tensor_hash(sd)
        save_file(sd, str(path), metadata={METADATA_KEY: json.dumps(meta)})
        return path

    return make


def _poison(value: float) -> Callable[[dict], dict]:
    def change(sd: dict) -> dict:
        name = next(k for k, v in sorted(sd.items()) if v.is_floating_point() and v.numel() > 1)
        sd[name].view(-1)[1] = value
        return sd

    return change


def _rename(sd: dict) -> dict:
    name = sorted(sd)[0]
    sd["renamed." + name] = sd.pop(name)
    return sd


def _reshape(sd: dict) -> dict:
    name = next(k for k, v in sorted(sd.items()) if v.dim() >= 2)
    sd[name] = sd[name].reshape(-1).contiguous()
    return sd


def _tensor_names(header: dict) -> list[str]:
    return sorted(k for k in header if k != "__metadata__")


def _first_tensor(header: dict) -> dict:
    return header[_tensor_names(header)[0]]


def _overlap(header: dict) -> None:
    """The last tensor's bytes moved onto the first's (same length)."""
    entry = header[_tensor_names(header)[-1]]
    start, stop = entry["data_offsets"]
    entry["data_offsets"] = [0, stop - start] if start else [1, stop + 1]


def _set_length(value: int) -> Callable[[bytes], bytes]:
    return lambda data: struct.pack("<Q", value) + data[8:]


def _header_bytes(make_raw: Callable[[int], bytes]) -> Callable[[bytes], bytes]:
    """Replace the header by ``make_raw(n)`` (same length n), keeping the tensor bytes."""

    def transform(data: bytes) -> bytes:
        (n,) = struct.unpack("<Q", data[:8])
        raw = make_raw(n)
        assert len(raw) == n
        return data[:8] + raw + data[8 + n :]

    return transform


def _truncate_at(where: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    return lambda data: data[: where(data)]


def _header_end(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


def _pickle_file(folder: Path) -> Path:
    path = folder / "evil.safetensors"
    path.write_bytes(pickle.dumps(_Touch(folder / MARKER), protocol=4))
    return path


def _torch_save_file(folder: Path) -> Path:
    path = folder / "checkpoint.safetensors"
    torch.save({"w": torch.zeros(2), "x": _Touch(folder / MARKER)}, path)
    return path


def _pickle_protocol2_tiny(folder: Path) -> Path:
    path = folder / "tiny-pickle.safetensors"
    path.write_bytes(pickle.dumps(_Touch(folder / MARKER), protocol=2))
    return path


def _empty(folder: Path) -> Path:
    path = folder / "empty.safetensors"
    path.write_bytes(b"")
    return path


def _folder(folder: Path) -> Path:
    path = folder / "folder.safetensors"
    path.mkdir()
    return path


def _missing(folder: Path) -> Path:
    return folder / "missing.safetensors"


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def _bare_safetensors(folder: Path) -> Path:
    path = folder / "bare.safetensors"
    save_file(_state_dict(), str(path))
    return path


def _huge_header(folder: Path) -> Path:
    path = folder / "huge-header.safetensors"
    raw = json.dumps({"__metadata__": {"x": "a" * (9 * 1024 * 1024)}}).encode()
    path.write_bytes(_join(raw, b""))
    return path


# name -> (make the file in a folder, a word the message must hold besides the file name)
CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated_in_length": (_bytes_case(_truncate_at(lambda d: 5)), "not a safetensors"),
    "truncated_after_length": (_bytes_case(_truncate_at(lambda d: 8)), "not a safetensors"),
    "truncated_in_header": (
        _bytes_case(_truncate_at(lambda d: _header_end(d) // 2)),
        "header length",
    ),
    "truncated_at_data": (_bytes_case(_truncate_at(_header_end)), "truncated"),
    "truncated_in_data": (_bytes_case(_truncate_at(lambda d: len(d) - 7)), "truncated"),
    "header_length_zero": (_bytes_case(_set_length(0)), "header length"),
    "header_length_one": (_bytes_case(_set_length(1)), "header length"),
    "header_length_huge": (_bytes_case(_set_length(2**63 + 5)), "header length"),
    "header_length_beyond_file": (
        _bytes_case(lambda d: _set_length(len(d) - 7)(d)),
        "header length",
    ),
    "header_length_128_beyond_file": (_bytes_case(_set_length(128 + 2**40)), "header length"),
    "header_too_large": (_huge_header, "larger than"),
    "header_not_json": (_bytes_case(_header_bytes(lambda n: b"{" + b"x" * (n - 1))), "JSON"),
    "header_not_utf8": (
        _bytes_case(_header_bytes(lambda n: b'{"\xff\xfe":' + b" " * (n - 8) + b"1}")),
        "UTF-8",
    ),
    "header_json_array": (
        _bytes_case(_header_bytes(lambda n: b"[" + b" " * (n - 2) + b"]")),
        "object",
    ),
    "header_json_string": (
        _bytes_case(_header_bytes(lambda n: b'"' + b"a" * (n - 2) + b'"')),
        "object",
    ),
    "header_nested_deep": (
        _bytes_case(_header_bytes(lambda n: (('{"a":' + _deep_json(100) + "}").ljust(n)).encode())),
        "deeper",
    ),
    "header_nested_recursion": (
        _bytes_case(lambda d: _join(('{"a":' + _deep_json(50_000) + "}").encode(), b"")),
        "deeper",
    ),
    "header_many_containers": (
        _bytes_case(lambda d: _join(b'{"a":[' + b"{}," * 300_000 + b"{}]}", b"")),
        "arrays/objects",
    ),
    "metadata_missing": (_bare_safetensors, "without napari_unet metadata"),
    "metadata_dunder_not_object": (
        _header_case(lambda h: h.update(__metadata__=[1])),
        "__metadata__",
    ),
    "metadata_not_json": (
        _header_case(lambda h: h["__metadata__"].update({METADATA_KEY: "{not json"})),
        "not JSON",
    ),
    "metadata_json_array": (
        _header_case(lambda h: h["__metadata__"].update({METADATA_KEY: "[1, 2]"})),
        "not a JSON object",
    ),
    "metadata_nested_deep": (
        _meta_case(lambda m: m["lineage"].update(deep=json.loads(_deep_json(200)))),
        "deeper",
    ),
    "format_version_newer": (_meta_case(lambda m: m.update(format_version=99)), "newer"),
    "format_version_str": (_meta_case(lambda m: m.update(format_version="1")), "format_version"),
    "format_version_missing": (_meta_case(lambda m: m.pop("format_version")), "format_version"),
    "format_version_zero": (_meta_case(lambda m: m.update(format_version=0)), "version 0"),
    "spec_missing": (_meta_case(lambda m: m.pop("spec")), "no model spec"),
    "spec_wrong_type": (_meta_case(lambda m: m.update(spec="unet")), "spec is a str"),
    "spec_list": (_meta_case(lambda m: m.update(spec=[1, 2])), "spec is a list"),
    "spec_absurd_features": (
        _spec_case(arch_args={"channels": [4, 10**6], "strides": [2]}),
        "channels",
    ),
    "spec_absurd_levels": (
        _spec_case(arch_args={"channels": [4] * 50, "strides": [2] * 49}),
        "channels",
    ),
    "spec_absurd_kernel": (
        _spec_case(arch_args={"channels": [4, 8], "strides": [2], "kernel_size": 999}),
        "kernel_size",
    ),
    "spec_absurd_prelu": (
        _spec_case(
            arch_args={
                "channels": [4, 8],
                "strides": [2],
                "act": ["prelu", {"num_parameters": 10**9}],
            }
        ),
        "act",
    ),
    "spec_absurd_spacing": (_spec_case(target_spacing=[1e6, 1.0, 1.0]), "target_spacing"),
    "spec_nan_spacing": (_spec_case(target_spacing=[1.0, float("nan"), 1.0]), "target_spacing"),
    "spec_absurd_patch": (_spec_case(patch_size=[100_000, 100_000]), "patch_size"),
    "spec_absurd_context_slices": (
        _spec_case(context_slices=1000, in_channels=2001),
        "context_slices",
    ),
    "spec_unknown_arch": (_spec_case(arch="vnet"), "arch"),
    "spec_zero_labels": (_spec_case(labels=[], colors=[]), "labels"),
    "spec_too_many_labels": (
        _spec_case(labels=[f"l{i}" for i in range(10_000)], colors=[]),
        "labels",
    ),
    "spec_label_not_text": (_spec_case(labels=[{"name": "x"}]), "labels"),
    "spec_labels_string": (_spec_case(labels="organ"), "labels"),
    "spec_spatial_dims_text": (_spec_case(spatial_dims="2"), "spatial_dims"),
    "spec_unknown_field": (_spec_case(bogus=1), "bogus"),
    "spec_normalization_nan": (
        _spec_case(normalization={"mode": "ct", "window": [float("-inf"), 100.0]}),
        "normalization.window",
    ),
    "spec_arch_args_unbuildable": (
        _spec_case(arch_args={"channels": [4, 8], "strides": [2], "nonsense": 1}),
        "cannot be built",
    ),
    "lineage_not_object": (_meta_case(lambda m: m.update(lineage="root")), "lineage"),
    "nan_weights": (_tensors_case(_poison(float("nan"))), "NaN"),
    "inf_weights": (_tensors_case(_poison(float("inf"))), "NaN or infinite"),
    "hash_removed": (_meta_case(lambda m: m.pop("hash")), "no integrity hash"),
    "hash_null": (_meta_case(lambda m: m.update(hash=None)), "no integrity hash"),
    "hash_not_hex": (_meta_case(lambda m: m.update(hash="abc")), "SHA-256"),
    "hash_number": (_meta_case(lambda m: m.update(hash=12345)), "SHA-256"),
    "hash_wrong": (_meta_case(lambda m: m.update(hash="0" * 64)), "hash"),
    "tensor_bytes_flipped": (
        _bytes_case(lambda d: d[:-3] + bytes([d[-3] ^ 0xFF]) + d[-2:]),
        "hash",
    ),
    "tensor_renamed": (_tensors_case(_rename), "unexpected"),
    "tensor_shape_changed": (_tensors_case(_reshape), "wrong shape"),
    "tensor_dtype_odd": (
        _header_case(lambda h: _first_tensor(h).update(dtype="X9")),
        "dtype",
    ),
    "tensor_dtype_not_text": (
        _header_case(lambda h: _first_tensor(h).update(dtype=4)),
        "dtype",
    ),
    "tensor_offsets_overlap": (_header_case(_overlap), "tensor data"),
    "tensor_shape_negative": (
        _header_case(lambda h: _first_tensor(h).update(shape=[-1])),
        "shape",
    ),
    "pickle_payload": (_pickle_file, "pickle"),
    "pickle_protocol2_tiny": (_pickle_protocol2_tiny, "pickle"),
    "torch_save_file": (_torch_save_file, "torch.save"),
    "empty_file": (_empty, "empty"),
    "folder_instead_of_file": (_folder, "folder"),
    "missing_file": (_missing, "no such model file"),
}


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("image")
    data = np.random.default_rng(0).normal(0, 100, (16, 16, 3)).astype(np.float32)
    return write_nifti(folder / "scan.nii.gz", data, np.diag([1.0, 1.0, 2.0, 1.0]))


def test_corpus_size() -> None:
    assert len(CASES) >= 22


def test_valid_model_predicts(tmp_path: Path, image: Path, capsys) -> None:
    """The control: the untouched file of every case works end to end."""
    model = _valid(tmp_path)
    out = tmp_path / "out.nii.gz"
    assert main(["predict", str(model), str(image), "-o", str(out)]) == 0, capsys.readouterr()
    assert out.is_file()


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_model_file_is_refused(tmp_path: Path, image: Path, capsys, case: str) -> None:
    make, word = CASES[case]
    model = make(tmp_path)
    out = tmp_path / "out.nii.gz"
    err = refuse(capsys, ["predict", model, image, "-o", out], model.name, word)
    assert len(err) < 600, err
    assert not out.exists()
    assert not (tmp_path / MARKER).exists(), "a pickle payload ran"
    with pytest.raises(ModelFileError):
        load_model(model)
    assert not (tmp_path / MARKER).exists(), "a pickle payload ran"


# --- mutations of a valid file -------------------------------------------------------


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> tuple[Path, bytes]:
    folder = tmp_path_factory.mktemp("fuzz")
    path = _valid(folder, "valid.safetensors")
    return folder, path.read_bytes()


_MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**20), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 2**20), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2**20), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 2**20), st.integers(1, 16)),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, value in mutations:
        # Half the positions land in the first 8 bytes + header, where structure lives.
        header_end = min(len(buf), 8 + 4096)
        pos = where % (header_end if where % 2 else max(len(buf), 1)) if buf else 0
        if kind == "flip" and buf:
            buf[pos] ^= 1 << value
        elif kind == "set" and buf:
            buf[pos] = value
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = bytes([value])
        elif kind == "delete":
            del buf[pos : pos + value]
    return bytes(buf)


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(mutations=st.lists(_MUTATION, min_size=1, max_size=3))
def test_mutated_model_loads_or_is_refused(small_model, mutations) -> None:
    folder, data = small_model
    path = folder / "mutated.safetensors"
    path.write_bytes(_mutate(data, mutations))
    with PeakMemory() as memory:
        try:
            read_model_header(path)
        except ModelFileError as e:
            assert "\n" not in str(e) and "mutated.safetensors" in str(e)
    assert memory.peak < 200 * 1024 * 1024, memory.peak
    try:
        loaded = load_model(path)
    except ModelFileError as e:
        assert "\n" not in str(e) and "mutated.safetensors" in str(e)
    else:
        assert loaded.spec.arch in ("unet", "resunet", "attention_unet", "classic_unet")
    assert not [p for p in folder.iterdir() if "~napari-unet-" in p.name]


def test_adversarial_headers_within_the_cap_stay_in_memory(tmp_path: Path) -> None:
    """Headers just under the size cap, built to cost the most memory when parsed."""
    from napari_unet.models.files import _MAX_HEADER

    n = _MAX_HEADER - 64
    bodies = {
        "containers": b'{"a":[' + b"{}," * 249_000 + b"1]}",
        "floats": b'{"a":[' + b"1.5," * ((n - 16) // 4) + b"1]}",
        "strings": b'{"a":[' + b'"ab",' * ((n - 16) // 5) + b"1]}",
    }
    for name, raw in bodies.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(_join(raw, b""))
        with PeakMemory() as memory, pytest.raises(ModelFileError):
            read_model_header(path)
        assert memory.peak < 200 * 1024 * 1024, (name, memory.peak)

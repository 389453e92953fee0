from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from napari_unet.errors import InputError, ModelFileError
from napari_unet.models import (
    FORMAT_VERSION,
    build_model,
    import_state_dict,
    load_model,
    preset_spec,
    read_model_header,
    save_model,
    tensor_hash,
)
from napari_unet.models.files import METADATA_KEY

SPEC = preset_spec("unet", spatial_dims=2, labels=["organ"], channels=[4, 8], strides=[2])


class _Touch:
    """A pickle payload that creates a sentinel file when unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(SPEC)


def test_round_trip(tmp_path: Path, model: torch.nn.Module) -> None:
    path = tmp_path / "m.safetensors"
    digest = save_model(path, model, SPEC, {"parent": None, "trained_on": ["scan.nii.gz"]})
    loaded = load_model(path)
    assert loaded.hash == digest == tensor_hash(model.state_dict())
    assert loaded.spec == SPEC
    assert loaded.lineage["trained_on"] == ["scan.nii.gz"]
    assert {"created", "versions"} <= set(loaded.lineage)
    assert loaded.lineage["versions"]["torch"] == torch.__version__
    assert not loaded.model.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp file left
    header = read_model_header(path)
    assert header["hash"] == digest
    # an ordinary model is written as format 2, readable by releases before format 3
    assert header["format_version"] == 2 < FORMAT_VERSION
    from safetensors import safe_open

    from napari_unet.models.files import METADATA_KEY

    with safe_open(str(path), "pt") as f:
        raw = json.loads(f.metadata()[METADATA_KEY])
    assert raw["format_version"] == 2 and "inference_style" not in raw["spec"]


def test_hash_changes_with_weights(model: torch.nn.Module) -> None:
    before = tensor_hash(model.state_dict())
    with torch.no_grad():
        next(model.parameters())[0].add_(1e-3)
    assert tensor_hash(model.state_dict()) != before


def test_failed_save_keeps_the_old_file(tmp_path: Path, model: torch.nn.Module) -> None:
    path = tmp_path / "m.safetensors"
    save_model(path, model, SPEC)
    before = path.read_bytes()
    other = preset_spec("unet", spatial_dims=2, labels=["a", "b"], channels=[4, 8], strides=[2])
    with pytest.raises(ModelFileError, match="do not match"):
        save_model(path, model, other)  # wrong spec: refused before writing
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such model file") as e:
        load_model(tmp_path / "nope.safetensors")
    assert isinstance(e.value, InputError) and "nope.safetensors" in str(e.value)


def test_pickle_payload_is_never_executed(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    for i, payload in enumerate([pickle.dumps(_Touch(sentinel), protocol=4), None]):
        path = tmp_path / f"evil{i}.safetensors"
        if payload is None:
            torch.save({"w": torch.zeros(2), "x": _Touch(sentinel)}, path)  # zip + pickle
        else:
            path.write_bytes(payload)
        with pytest.raises(ModelFileError, match="pickle"):
            load_model(path)
        assert not sentinel.exists()


def test_import_state_dict_refuses_code_and_accepts_weights(tmp_path: Path, model) -> None:
    sentinel = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Touch(sentinel)}, evil)
    with pytest.raises(ModelFileError, match="weights-only"):
        import_state_dict(evil, SPEC)
    assert not sentinel.exists()
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, good)
    loaded = import_state_dict(good, SPEC)
    assert loaded.hash == tensor_hash(model.state_dict())


def test_not_safetensors_and_missing_metadata(tmp_path: Path, model) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello world, not a model at all")
    with pytest.raises(ModelFileError, match="not a safetensors"):
        load_model(junk)
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, bare)
    with pytest.raises(ModelFileError, match="without napari_unet metadata"):
        load_model(bare)


def _rewrite(path: Path, model, meta_change) -> None:
    meta = json.loads(read_raw_meta(path))
    meta_change(meta)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        path,
        metadata={METADATA_KEY: json.dumps(meta)},
    )


def read_raw_meta(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()[METADATA_KEY]


def test_newer_format_refused(tmp_path: Path, model) -> None:
    path = tmp_path / "m.safetensors"
    save_model(path, model, SPEC)
    _rewrite(path, model, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match="newer"):
        load_model(path)


def test_tensors_not_matching_spec_refused(tmp_path: Path, model) -> None:
    path = tmp_path / "m.safetensors"
    save_model(path, model, SPEC)
    other = preset_spec("unet", spatial_dims=2, labels=["a", "b"], channels=[4, 8], strides=[2])
    # The hash stays right (it covers the tensors only): the spec mismatch is what is refused.
    _rewrite(path, model, lambda m: m.update(spec=other.to_dict()))
    with pytest.raises(ModelFileError, match="wrong shape"):
        load_model(path)


def test_tampered_tensor_bytes_refused(tmp_path: Path, model) -> None:
    path = tmp_path / "m.safetensors"
    save_model(path, model, SPEC)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="hash"):
        load_model(path)


def _header_length(path: Path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def _with_header_length(src: Path, dst: Path, length: int) -> None:
    """Copy ``src`` with its JSON header re-padded (trailing spaces) to ``length`` bytes."""
    data = src.read_bytes()
    n = _header_length(src)
    header = data[8 : 8 + n].rstrip(b" ")
    assert len(header) <= length
    dst.write_bytes(struct.pack("<Q", length) + header.ljust(length) + data[8 + n :])


def test_every_header_length_residue_loads(tmp_path: Path, model) -> None:
    """Issue 11: a header length of 128 + 256k starts the file with 0x80, like a pickle.

    safetensors pads headers to multiples of 8, so `save_model` files cover the 32
    residues mod 256 that are multiples of 8 (a lineage string of growing length moves
    the length by 8 each time); the other 224 are the same files re-padded by hand, which
    safetensors also reads. Every one must load back.
    """
    digest = tensor_hash(model.state_dict())
    residues: dict[int, Path] = {}
    for k in range(40):
        path = tmp_path / f"saved{k}.safetensors"
        save_model(path, model, SPEC, {"padding": "x" * (8 * k)})
        residues.setdefault(_header_length(path) % 256, path)
    assert sorted(residues) == list(range(0, 256, 8))
    base = residues[0]
    minimum = len(base.read_bytes()[8 : 8 + _header_length(base)].rstrip(b" "))
    for r in range(256):
        if r % 8:
            path = tmp_path / f"padded{r}.safetensors"
            _with_header_length(base, path, minimum + (r - minimum) % 256)
            residues[r] = path
    assert sorted(residues) == list(range(256))
    for r, path in sorted(residues.items()):
        assert _header_length(path) % 256 == r
        loaded = load_model(path)
        assert loaded.hash == digest, r
        assert read_model_header(path)["hash"] == digest
    first = residues[128].read_bytes()[:2]
    assert first[0] == 0x80  # what used to be refused as "a pickle"


def test_new_model_cli_with_header_length_128(tmp_path: Path, capsys) -> None:
    """The reported case: a 3-label 3D unet whose header length was 128 mod 256."""
    from napari_unet.cli import main

    out = tmp_path / "m.safetensors"
    args = ["new-model", out, "--dims", "3", "--arch", "unet", "--labels", "liver,kidney,spleen"]
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    loaded = load_model(out)
    assert loaded.spec.labels == ["liver", "kidney", "spleen"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_save_refuses_non_finite_weights(tmp_path: Path, model, value: float) -> None:
    path = tmp_path / "m.safetensors"
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(k for k, v in sorted(sd.items()) if v.is_floating_point())
    sd[name].view(-1)[0] = value
    with pytest.raises(ModelFileError, match="training diverged"):
        save_model(path, sd, SPEC)
    assert list(tmp_path.iterdir()) == []


def test_save_is_atomic_and_removes_stale_temps(tmp_path: Path, model, monkeypatch) -> None:
    # A temporary file of a writer that was killed (pid 999999999 does not exist).
    stale = tmp_path / ".m.safetensors~napari-unet-999999999-abc.safetensors"
    stale.write_bytes(b"half a model")
    path = tmp_path / "m.safetensors"
    save_model(path, model, SPEC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    before = path.read_bytes()

    import safetensors.torch

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(InputError, match="could not be written"):
        save_model(path, model, SPEC)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_missing_or_malformed_hash_refused(tmp_path: Path, model) -> None:
    path = tmp_path / "m.safetensors"
    save_model(path, model, SPEC)
    for change, word in [
        (lambda m: m.pop("hash"), "no integrity hash"),
        (lambda m: m.update(hash=None), "no integrity hash"),
        (lambda m: m.update(hash="ABC"), "SHA-256"),
    ]:
        _rewrite(path, model, change)
        with pytest.raises(ModelFileError, match=word):
            read_model_header(path)
        _rewrite(path, model, lambda m: m.update(hash=tensor_hash(model.state_dict())))
        assert load_model(path).hash == tensor_hash(model.state_dict())


def test_huge_network_in_spec_is_refused_before_allocation(tmp_path: Path, model) -> None:
    """A spec within bounds but describing a ~GB network, over a tiny file: the shapes
    are compared on the meta device, so nothing of that size is ever allocated."""
    from tests.hostile.contract import PeakMemory

    path = tmp_path / "m.safetensors"
    save_model(path, model, SPEC)
    big = preset_spec(
        "unet", spatial_dims=3, labels=["a"], channels=[1024] * 8, strides=[2] * 7
    ).to_dict()
    _rewrite(path, model, lambda m: m.update(spec=big))
    with PeakMemory() as memory, pytest.raises(ModelFileError, match="do not match"):
        load_model(path)
    assert memory.peak < 100 * 1024 * 1024

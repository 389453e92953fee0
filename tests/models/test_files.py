from __future__ import annotations

import json
import pickle
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
    assert header["format_version"] == FORMAT_VERSION and header["hash"] == digest


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
    _rewrite(path, model, lambda m: m.update(spec=other.to_dict(), hash=None))
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

"""The options that are choices (`napari_unet.typing` StrEnums): values, checks, messages,
and that every place taking one refuses a bad value early, naming the allowed ones."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_unet.typing import Device, NormMode, Precision, Strategy

ENUMS = {
    Device: ("auto", "cpu", "cuda", "mps"),
    Precision: ("auto", "fp32", "bf16", "fp16"),
    Strategy: ("worst", "uncertain", "random"),
    NormMode: ("ct", "mr", "none"),
}


@pytest.mark.parametrize("enum", list(ENUMS))
def test_members_are_their_strings(enum):
    assert enum.values() == ENUMS[enum] == tuple(m.value for m in enum)
    for member in enum:
        assert member == member.value and isinstance(member, str)
        assert str(member) == f"{member}" == member.value
        assert json.loads(json.dumps({"x": member})) == {"x": member.value}
        assert enum.check(member.value, "option") is member
        assert enum.check(member, "option") is member


@pytest.mark.parametrize("enum", list(ENUMS))
@pytest.mark.parametrize("bad", ["bogus", "", None, 3])
def test_bad_value_names_option_value_and_allowed(enum, bad):
    with pytest.raises(ValueError) as e:
        enum.check(bad, "the_option")
    message = str(e.value)
    assert message.startswith("the_option must be one of ") and repr(bad) in message
    assert all(repr(v) in message for v in ENUMS[enum])


def test_device_names():
    import torch

    assert Device.check("CUDA:1") is Device.CUDA and Device.check("cpu:0") is Device.CPU
    assert Device.check(torch.device("cpu")) is Device.CPU
    for bad in ("gpu", "auto:0", "cuda:x", "cuda:"):
        with pytest.raises(ValueError, match="device must be one of 'auto', 'cpu'"):
            Device.check(bad)


def test_norm_modes_are_the_specs():
    from napari_unet.models.spec import NORMALIZATION_MODES, Normalization

    assert set(NormMode.values()) == set(NORMALIZATION_MODES)
    for mode in NormMode:
        assert Normalization(mode=mode).mode == mode


def test_typing_imports_no_torch():
    code = "import sys, napari_unet.typing; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_engine_checks_choices_early():
    import torch

    from napari_unet.inference.device import autocast_dtype, resolve_device
    from napari_unet.inference.predict import predict_steps
    from napari_unet.io.volume import Volume
    from napari_unet.loop import Loop
    from napari_unet.loop.simulation import simulate_steps
    from napari_unet.training import TrainConfig

    assert resolve_device(Device.CPU) == torch.device("cpu")
    assert autocast_dtype(torch.device("cpu"), Precision.BF16) == torch.bfloat16
    with pytest.raises(ValueError, match=r"device must be one of .* got 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match=r"precision must be one of .*'fp16', got 'fp8'"):
        autocast_dtype(torch.device("cpu"), "fp8")
    with pytest.raises(ValueError, match="device must be one of"):
        TrainConfig(device="gpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="half")
    assert TrainConfig(device=Device.CPU, precision="fp32").device == "cpu"

    vol = Volume(np.zeros((4, 5, 6), np.float32), np.eye(4))
    loop = Loop(vol, device="cpu")
    loop.device = Device.CUDA  # a valid name; availability is checked when a job runs
    with pytest.raises(ValueError, match="device must be one of"):
        loop.device = "tpu"
    assert loop.device == "cuda"
    with pytest.raises(ValueError, match="device must be one of"):
        Loop(vol, device="gpu")

    with pytest.raises(ValueError, match="strategy must be one of 'worst', 'uncertain', 'random'"):
        next(simulate_steps(vol, vol, spec=None, strategy="best"))
    with pytest.raises(ValueError, match="precision must be one of"):
        next(predict_steps(torch.nn.Identity(), _spec(), vol, precision="int8", device="cpu"))


def _spec():
    from napari_unet.models import preset_spec

    return preset_spec("unet", spatial_dims=2, labels=["a"], channels=[4, 8], strides=[2])


@pytest.mark.parametrize("command", ["train", "simulate", "predict"])
def test_cli_refuses_unknown_device_with_exit_2(tmp_path, capsys, command):
    from napari_unet.cli import main

    args = {
        "train": ["train", "img.nii.gz", "lab.nii.gz", "-o", str(tmp_path / "m.safetensors")],
        "simulate": ["simulate", "img.nii.gz", "lab.nii.gz"],
        "predict": ["predict", "m.safetensors", "img.nii.gz", "-o", str(tmp_path / "o.nii.gz")],
    }[command]
    assert main([*args, "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "gpu" in err and "cpu" in err and "cuda" in err
    assert not list(tmp_path.iterdir())


def test_cli_refuses_unknown_strategy_with_exit_2(capsys):
    from napari_unet.cli import main

    assert main(["simulate", "img.nii.gz", "lab.nii.gz", "--strategy", "best"]) == 2
    err = capsys.readouterr().err
    assert "best" in err and "random" in err

"""Hostile cases for `napari-unet import` (issue 9): bundles and nnU-Net folders that try
to run code, or are malformed.

Each case writes a real bundle (folder or zip) or nnU-Net results folder and runs
``napari-unet import SOURCE OUT`` in-process (`tests.hostile.contract.refuse`): exit
status 2, one line naming the file and the key, no traceback, no output written. Every
payload would create a marker file if anything of it ran (a ``$`` expression calling
``os.system``, a ``_target_`` of ``os.system``, a pickle whose ``__reduce__`` touches a
file, a YAML python tag); the marker must never appear.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.hostile.contract import refuse
from tests.models.importers import factory as F

pytestmark = pytest.mark.timeout(120)

MARKER = "pwned-marker"


class _Touch:
    """A pickle payload that creates a marker file when unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _net_def() -> dict:
    return {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
            "channels": [4, 8], "strides": [2], "num_res_units": 0}  # fmt: skip


def _weights() -> dict:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(3, 1, 3, channels=[4, 8], strides=[2], num_res_units=0).state_dict()


def _bundle(tmp: Path, marker: Path, *, net=None, transforms=None, **top) -> Path:
    config = F.zoo_config(net or _net_def(), transforms or F.ct_transforms([1.5, 1.5, 2.0]),
                          [32, 32, 16])  # fmt: skip
    config.update(top)
    return F.write_bundle(tmp / "bundle", config, _weights(), meta=F.metadata(["a", "b"]))


def _shell(marker: Path) -> str:
    return f"$__import__('os').system('touch {marker}')"


def _with_net(**changes) -> Callable[[Path, Path], tuple[Path, list[str]]]:
    def make(tmp: Path, marker: Path) -> tuple[Path, list[str]]:
        net = _net_def()
        for key, value in changes.items():
            net[key] = value(marker) if callable(value) else value
        return _bundle(tmp, marker, net=net), [f"network_def#{next(iter(changes))}"]

    return make


def _target_os_system(tmp, marker):
    net = {"_target_": "os.system", "command": f"touch {marker}"}
    return _bundle(tmp, marker, net=net), ["network_def#_target_", "os.system", "not an allowed"]


def _reference_to_expression(tmp, marker):
    net = {**_net_def(), "out_channels": "@evil"}
    return _bundle(tmp, marker, net=net, evil=_shell(marker)), ["network_def#out_channels",
                                                               "expression"]  # fmt: skip


def _network_def_expression(tmp, marker):
    return _bundle(tmp, marker, network_def=_shell(marker)), ["network_def"]


def _transform_target(tmp, marker):
    transforms = [*F.ct_transforms(None), {"_target_": "os.system", "command": f"touch {marker}"}]
    return _bundle(tmp, marker, transforms=transforms), ["cannot reproduce", "os.system"]


def _transform_argument(tmp, marker):
    transforms = F.ct_transforms([1.5, 1.5, 2.0])
    transforms[3]["pixdim"] = _shell(marker)
    return _bundle(tmp, marker, transforms=transforms), ["preprocessing#transforms#3#pixdim"]


def _transforms_expression(tmp, marker):
    pre = {"_target_": "Compose", "transforms": f"${_shell(marker)[1:]} or []"}
    return _bundle(tmp, marker, preprocessing=pre), ["preprocessing#transforms", "expression"]


def _inferer_expression(tmp, marker):
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": _shell(marker)}
    return _bundle(tmp, marker, inferer=inferer), ["inferer#roi_size", "expression"]


def _pickle_payload(tmp, marker):
    folder = _bundle(tmp, marker)
    torch.save({"model": _Touch(marker)}, folder / "models" / "model.pt")
    return folder, ["models/model.pt", "weights-only"]


def _torchscript_payload(tmp, marker):
    """A TorchScript-shaped archive whose module pickle would touch the marker."""
    import pickle

    folder = _bundle(tmp, marker)
    (folder / "models" / "model.pt").unlink()
    with zipfile.ZipFile(folder / "models" / "model.ts", "w") as z:
        z.writestr("m/code/__torch__/evil.py", "def forward(self): pass\n")
        z.writestr("m/data.pkl", pickle.dumps(_Touch(marker), protocol=2))
        z.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
    return folder, ["models/model.ts", "getattr", "nothing of the archive runs"]


def _torchscript_in_model_pt(tmp, marker):
    folder = _bundle(tmp, marker)
    from monai.networks.nets import UNet

    script = torch.jit.script(UNet(3, 1, 3, channels=[4, 8], strides=[2], num_res_units=2))
    torch.jit.save(script, str(folder / "models" / "model.pt"))  # real code, wrong network
    return folder, ["tensors do not match"]


def _yaml_python_tag(tmp, marker):
    folder = F.write_bundle(tmp / "bundle", f"network_def: !!python/object/apply:os.system "
                            f"['touch {marker}']\n", _weights(),
                            config_name="inference.yaml")  # fmt: skip
    return folder, ["configs/inference.yaml", "not valid YAML"]


def _deep_json(tmp, marker):
    folder = F.write_bundle(tmp / "bundle", "[" * 100_000 + "]" * 100_000, _weights())
    return folder, ["configs/inference.json", "nested"]


def _zip_traversal(tmp, marker):
    archive = tmp / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../../escaped.json", "{}")
        z.writestr("/abs/configs/metadata.json", "{}")
    return archive, ["not a MONAI bundle"]


def _not_a_zip(tmp, marker):
    path = tmp / "bundle.zip"
    path.write_bytes(b"\x80\x04payload" * 10)
    return path, ["not a model folder or a zip archive"]


def _huge_network(tmp, marker):
    return _with_net(channels=[4, 100_000])(tmp, marker)[0], ["arch_args.channels"]


def _output_inside_source(tmp, marker):  # handled by the runner: OUT lies in the bundle
    return _bundle(tmp, marker), ["is also an input"]


# --- nnU-Net ------------------------------------------------------------------------------


def _nnunet(tmp: Path, marker: Path, *, plans_change=None, checkpoint=None) -> Path:
    props = {"mean": 40, "std": 30, "percentile_00_5": -100, "percentile_99_5": 200}
    plans = F.nnunet_plans(patch=[8, 32, 32], spacing=[2.0, 1.0, 1.0], features=[4, 8],
                           kernels=[[3, 3, 3]] * 2, strides=[[1, 1, 1], [2, 2, 2]],
                           properties=props)  # fmt: skip
    if plans_change:
        plans_change(plans)
    ck = checkpoint or {"network_weights": {"w": torch.zeros(2)}, "trainer_name": "nnUNetTrainer",
                        "init_args": {"configuration": "3d_fullres"}}  # fmt: skip
    return F.write_nnunet(tmp, torch.nn.Identity(), plans, checkpoint=ck)


def _nnunet_pickle(tmp, marker):
    folder = _nnunet(tmp, marker)
    torch.save({"network_weights": {}, "trainer": _Touch(marker)},
               folder / "fold_0" / "checkpoint_final.pth")  # fmt: skip
    return folder, ["checkpoint_final.pth", "weights-only"]


def _nnunet_class(tmp, marker):
    def change(plans):
        plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "os.system"

    return _nnunet(tmp, marker, plans_change=change), ["plans.json", "os.system"]


def _nnunet_layer(tmp, marker):
    def change(plans):
        kwargs = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
        kwargs["nonlin"] = "builtins.exec"

    return _nnunet(tmp, marker, plans_change=change), ["plans.json", "builtins.exec"]


def _nnunet_inheritance_loop(tmp, marker):
    def change(plans):
        configs = plans["configurations"]
        configs["3d_fullres"]["inherits_from"] = "3d_other"
        configs["3d_other"] = {"inherits_from": "3d_fullres"}

    return _nnunet(tmp, marker, plans_change=change), ["plans.json", "inheritance"]


CASES: dict[str, Callable[[Path, Path], tuple[Path, list[str]]]] = {
    "target_os_system": _target_os_system,
    "target_expression": _with_net(_target_=_shell),
    "argument_expression": _with_net(channels=lambda m: _shell(m) + " or [4, 8]"),
    "reference_to_expression": _reference_to_expression,
    "nested_component": _with_net(act=lambda m: {"_target_": "os.system", "command": str(m)}),
    "requires_key": _with_net(_requires_=_shell),
    "macro": _with_net(channels="%configs/other.json#channels"),
    "network_def_expression": _network_def_expression,
    "transform_target": _transform_target,
    "transform_argument": _transform_argument,
    "transforms_expression": _transforms_expression,
    "inferer_expression": _inferer_expression,
    "pickle_payload": _pickle_payload,
    "torchscript_payload": _torchscript_payload,
    "torchscript_other_network": _torchscript_in_model_pt,
    "yaml_python_tag": _yaml_python_tag,
    "deep_json": _deep_json,
    "zip_traversal": _zip_traversal,
    "not_a_zip": _not_a_zip,
    "huge_network": _huge_network,
    "output_inside_source": _output_inside_source,
    "nnunet_pickle": _nnunet_pickle,
    "nnunet_class": _nnunet_class,
    "nnunet_layer": _nnunet_layer,
    "nnunet_inheritance_loop": _nnunet_inheritance_loop,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_import_is_refused_and_nothing_runs(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / MARKER
    source, fragments = CASES[case](tmp_path, marker)
    out = source / "m.safetensors" if case == "output_inside_source" else tmp_path / "m.safetensors"
    line = refuse(capsys, ["import", source, out], *fragments)
    assert not marker.exists(), f"{case}: the payload ran"
    assert not out.exists(), f"{case}: an output was written"
    assert not (tmp_path.parent / "escaped.json").exists()
    assert len(line) < 600


def test_the_corpus_keeps_its_size():
    assert len(CASES) >= 12

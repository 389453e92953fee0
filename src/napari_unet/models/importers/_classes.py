"""Keep a subset of an imported model's classes, renamed, by cutting its output head.

``--labels liver,spleen`` keeps two classes by name; ``--labels liver=1,spleen=5``
keeps the classes whose label values are 1 and 5 and names them; ``organ=liver``
renames. The kept classes become 1, 2, … in the order given; background stays 0.

The head is cut by slicing the rows of every tensor indexed by output class (the last
convolution's weight and bias, and a per-class norm or deep-supervision head if there is
one), keeping row 0 and the kept classes. Which tensors and axes those are is found by
building the network for two different class counts on PyTorch's ``meta`` device (no
memory) and comparing shapes, so it works for every architecture `build_model` knows.
The cut is exact when no layer takes the class channels as input (true for MONAI's
networks except ``UNet`` with residual units at the top, whose last unit mixes them);
otherwise it is marked approximate in the lineage and the model should be fine-tuned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from napari_unet.errors import InputError
from napari_unet.models.spec import ModelSpec


def parse_classes(
    request: str | Sequence[str] | None, labels: Sequence[str]
) -> list[tuple[str, int]]:
    """``(new name, imported label value)`` pairs from a class request.

    Args:
        request: None (keep all), "a,b=3,c=name" or a list of such items.
        labels: the imported model's class names (value v is ``labels[v - 1]``).

    Raises:
        InputError: an unknown name or value, a class kept twice, an empty name.
    """
    if request is None:
        return [(name, v) for v, name in enumerate(labels, start=1)]
    items = request.split(",") if isinstance(request, str) else list(request)
    out: list[tuple[str, int]] = []
    for raw in items:
        item = str(raw).strip()
        new, _, old = item.partition("=")
        new, old = new.strip(), (old.strip() if _ else new.strip())
        if not new or not old:
            raise InputError(f"--labels: empty class name in {item!r}")
        value = _class_value(old, labels)
        out.append((new, value))
    names = [n for n, _ in out]
    values = [v for _, v in out]
    if len(set(names)) != len(names):
        raise InputError(f"--labels: a class name is given twice ({', '.join(names)})")
    if len(set(values)) != len(values):
        raise InputError("--labels: the same imported class is kept twice")
    return out


def _class_value(text: str, labels: Sequence[str]) -> int:
    if text.isdigit():
        value = int(text)
        if 1 <= value <= len(labels):
            return value
        raise InputError(f"--labels: class value {value} is not in 1..{len(labels)}")
    if text in labels:
        return list(labels).index(text) + 1
    lowered = [n.lower() for n in labels]
    if text.lower() in lowered:
        return lowered.index(text.lower()) + 1
    known = ", ".join(labels[:12]) + (f", … ({len(labels)} in all)" if len(labels) > 12 else "")
    raise InputError(f"--labels: {text!r} is not a class of this model (it has: {known})")


def select_classes(
    spec: ModelSpec, state_dict: Mapping[str, Any], classes: Sequence[tuple[str, int]]
) -> tuple[ModelSpec, dict[str, Any], dict[str, Any]]:
    """The spec and weights of a model that predicts only ``classes``.

    Args:
        spec: the imported model's spec.
        state_dict: its weights (matching ``spec``).
        classes: ``(new name, old label value)`` pairs (see `parse_classes`).

    Returns:
        ``(spec, state_dict, info)``; ``info`` is for the lineage: ``classes``
        (new name → old value), ``head_cut`` ("none", "exact" or "approximate") and the
        cut tensors.
    """
    import torch

    old_names = list(spec.labels)
    identity = [(n, v) for v, n in enumerate(old_names, start=1)]
    info: dict[str, Any] = {"classes": {n: v for n, v in classes}, "head_cut": "none"}
    if list(classes) == identity:
        return spec, dict(state_dict), info
    keep = [0, *(v for _, v in classes)]
    colors = [spec.colors[v - 1] for _, v in classes]
    new_spec = replace(spec, labels=[n for n, _ in classes], colors=colors)
    axes, exact = class_axes(spec)
    sd = dict(state_dict)
    index = torch.tensor(keep, dtype=torch.long)
    for key, class_dims in axes.items():
        t = sd[key]
        for a in class_dims:
            t = t.index_select(a, index)
        sd[key] = t.contiguous()
    info.update(head_cut="exact" if exact else "approximate", tensors=sorted(axes)[:16])
    return new_spec, sd, info


def class_axes(spec: ModelSpec) -> tuple[dict[str, list[int]], bool]:
    """Which axes of which tensors run over the output classes; whether only as outputs."""
    import torch

    from napari_unet.models.build import build_model

    k = len(spec.labels)
    more = replace(spec, labels=[*spec.labels, "~extra~"], colors=[])
    with torch.device("meta"):
        net = build_model(spec)
        net_more = build_model(more)
    shapes = {n: tuple(t.shape) for n, t in net.state_dict().items()}
    shapes_more = {n: tuple(t.shape) for n, t in net_more.state_dict().items()}
    modules = dict(net.named_modules())
    axes: dict[str, list[int]] = {}
    exact = True
    for name, shape in shapes.items():
        diff = [a for a, (x, y) in enumerate(zip(shape, shapes_more[name], strict=True)) if x != y]
        if not diff:
            continue
        axes[name] = diff
        module = modules.get(name.rpartition(".")[0])
        transposed = isinstance(module, torch.nn.modules.conv._ConvTransposeNd)
        output_axis = 1 if transposed and len(shape) > 2 else 0  # (in, out, *k) weights
        if any(a != output_axis for a in diff) or any(shape[a] != k + 1 for a in diff):
            exact = False
    return axes, exact

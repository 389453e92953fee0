"""`for_cpu(net)`: an inference copy of a network for the CPU, with batch norm folded into
the convolutions, activations fused into them and weights prepacked for oneDNN.

Why: in eager mode PyTorch picks oneDNN for a convolution only above a size heuristic
(batch 1 and small deep feature maps fall back to its slow im2col path), reorders the
weights on every call, and runs ``ConvTranspose`` far below the speed of a plain
convolution. Prepacking every convolution once per prediction (oneDNN's
``_convolution_pointwise`` ops, the ones ``torch.compile``'s CPU backend emits, with no
compile step) took the inference benchmark's 3D U-Net from 32–37 to 18–20 ms per
80×80×128 tile on 2 cores (timed on its own; end to end:
benchmarks/results/inference_full_cpu.json).

Networks with instance, group or layer norm are left as they are: nothing folds there,
and on nnU-Net's 3D PlainConvUNet (31 M parameters, 96³ tile) the packed copy was no
faster than eager mode (2.5 vs 2.2 s, noisy) and costs 0.4 s to build.

Nothing is changed in the network itself: the copy is rebuilt for each prediction (the
loop fine-tunes the weights between predictions), every packed layer is checked against
the layers it replaces on a random input, and a layer that does not match, or a torch
without these ops, keeps the original layer.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Iterator

import torch
from torch import nn

from napari_unet.models.build import has_sample_dependent_norm

_CONVS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)
_TOLERANCE = 1e-4  # relative to the largest output of the probe


def for_cpu(net: nn.Module) -> nn.Module | None:
    """A packed copy of an eval-mode network for float32 inference on the CPU, or None
    when nothing could be packed (no convolutions, no oneDNN, another torch) or the
    network normalises per sample (see the module docstring).

    The copy computes the same function as ``net`` up to float rounding (each packed
    layer is checked); ``net`` is not modified.
    """
    if not _available() or net.training or has_sample_dependent_norm(net):
        return None
    fast = copy.deepcopy(net)
    replaced = {}
    for chain in _chains(fast):
        for conv, norm, act in _conv_runs(chain):
            packed = _Packed.build(conv, norm, act)
            if packed is None:
                continue
            replaced[id(conv)] = packed
            for m in (norm, act):
                if m is not None:
                    replaced[id(m)] = nn.Identity()
    for conv in (m for m in fast.modules() if isinstance(m, _CONVS)):
        if id(conv) not in replaced and (packed := _Packed.build(conv, None, None)):
            replaced[id(conv)] = packed
    if not replaced:
        return None
    _swap(fast, replaced)
    return fast


_cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module | None]] = (
    weakref.WeakKeyDictionary()
)
_cache_lock = threading.Lock()


def cached_for_cpu(net: nn.Module) -> nn.Module | None:
    """`for_cpu(net)`, reused while the network's tensors are the same objects, unmodified
    (building it took ~6 ms for the 2D benchmark net, 10% of a 128×128×64 prediction).

    Any change of a weight or buffer (an optimizer step, ``load_state_dict``, ``.to()``)
    changes a tensor's identity, storage or version counter, and the copy is rebuilt.
    """
    key = _state_key(net)
    with _cache_lock:
        hit = _cache.get(net)
    if hit is not None and hit[0] == key:
        return hit[1]
    fast = for_cpu(net)
    with _cache_lock:
        _cache[net] = (key, fast)
    return fast


def _state_key(net: nn.Module) -> tuple:
    tensors = [*net.parameters(), *net.buffers()]
    return (net.training, tuple((id(t), t.data_ptr(), t._version) for t in tensors))


def _available() -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    return bool(
        torch.backends.mkldnn.is_available()
        and ops is not None
        and all(
            hasattr(ops, n)
            for n in (
                "_convolution_pointwise",
                "_convolution_transpose_pointwise",
                "_reorder_convolution_weight",
                "_reorder_convolution_transpose_weight",
            )
        )
    )


def _chains(net: nn.Module) -> Iterator[list[nn.Module]]:
    """Leaf layers in the order a plain ``nn.Sequential`` (nested ones expanded) runs
    them, once per outermost such Sequential."""
    seen: set[int] = set()
    for m in net.modules():
        if _plain_sequential(m) and id(m) not in seen:
            chain = list(_flatten(m, seen))
            if chain:
                yield chain


def _plain_sequential(m: nn.Module) -> bool:
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def _flatten(seq: nn.Module, seen: set[int]) -> Iterator[nn.Module]:
    seen.add(id(seq))
    for child in seq.children():
        if _plain_sequential(child):
            yield from _flatten(child, seen)
        else:
            yield child


def _conv_runs(
    chain: list[nn.Module],
) -> Iterator[tuple[nn.Module, nn.Module | None, nn.Module | None]]:
    """(convolution, the batch norm right after it or None, the activation after those
    or None) in a chain; dropout (identity in eval mode) is skipped over."""
    layers = [m for m in chain if not isinstance(m, nn.modules.dropout._DropoutNd)]
    for i, conv in enumerate(layers):
        if not isinstance(conv, _CONVS):
            continue
        rest = layers[i + 1 : i + 3]
        norm = rest.pop(0) if rest and _foldable(rest[0]) else None
        act = rest[0] if rest and _fusion(rest[0]) is not None else None
        yield conv, norm, act


def _foldable(m: nn.Module) -> bool:
    return isinstance(m, _NORMS) and not m.training and m.running_mean is not None


def _fusion(m: nn.Module) -> tuple[str, list[float]] | None:
    """oneDNN's post-op name and scalars for an activation, or None."""
    if isinstance(m, nn.ReLU):
        return "relu", []
    if isinstance(m, nn.LeakyReLU):
        return "leaky_relu", [float(m.negative_slope)]
    if isinstance(m, nn.PReLU) and m.weight.numel() == 1:
        return "leaky_relu", [float(m.weight.detach())]
    return None


def _swap(net: nn.Module, replaced: dict[int, nn.Module]) -> None:
    """Put each replacement wherever its original is registered (a layer can be a child
    of two modules, as in nnU-Net's ``ConvDropoutNormReLU``)."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in replaced:
                setattr(parent, name, replaced[id(child)])


class _Packed(nn.Module):
    """One convolution (plain or transposed) with batch norm folded in and an activation
    fused, weights prepacked; float32, CPU."""

    def __init__(self, conv: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None,
                 attr: str, scalars: list[float]) -> None:  # fmt: skip
        super().__init__()
        self.transposed = _transposed(conv)
        self.padding = list(conv.padding)
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = int(conv.groups)
        self.output_padding = list(getattr(conv, "output_padding", [0] * len(self.padding)))
        self.attr, self.scalars = attr, scalars
        ops = torch.ops.mkldnn
        if self.transposed:
            self.weight = ops._reorder_convolution_transpose_weight(
                weight, self.padding, self.output_padding, self.stride, self.dilation,
                self.groups)  # fmt: skip
        else:
            self.weight = ops._reorder_convolution_weight(
                weight, self.padding, self.stride, self.dilation, self.groups)  # fmt: skip
        self.bias = bias

    @classmethod
    def build(
        cls, conv: nn.Module, norm: nn.Module | None, act: nn.Module | None
    ) -> _Packed | None:
        """The packed layer for ``conv`` → ``norm`` → ``act``, or None when it cannot be
        packed or does not reproduce them on a random input."""
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            return None
        if conv.weight.dtype != torch.float32 or conv.weight.device.type != "cpu":
            return None
        if norm is not None and _transposed(conv) and conv.groups > 1:
            return None  # weight (in, out/groups, …): the generic pass packs it alone
        weight, bias = _folded(conv, norm)
        attr, scalars = _fusion(act) if act is not None else ("none", [])
        try:
            packed = cls(conv, weight, bias, attr, scalars)
            return packed if _matches(packed, conv, norm, act) else None
        except RuntimeError:
            return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ops = torch.ops.mkldnn
        if self.transposed:
            return ops._convolution_transpose_pointwise(
                x, self.weight, self.bias, self.padding, self.output_padding, self.stride,
                self.dilation, self.groups, self.attr, self.scalars, "")  # fmt: skip
        return ops._convolution_pointwise(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
            self.attr, self.scalars, "")  # fmt: skip


def _transposed(conv: nn.Module) -> bool:
    return isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d))


@torch.no_grad()
def _folded(conv: nn.Module, norm: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight and bias of ``conv`` with an eval-mode batch norm after it folded in."""
    weight = conv.weight.detach().clone()
    bias = None if conv.bias is None else conv.bias.detach().clone()
    if norm is None:
        return weight, bias
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    shape = [1] * weight.dim()
    shape[1 if _transposed(conv) else 0] = -1  # the output-channel axis
    weight = weight * scale.view(shape)
    bias = shift if bias is None else bias * scale + shift
    return weight, bias.detach()


@torch.no_grad()
def _matches(
    packed: _Packed, conv: nn.Module, norm: nn.Module | None, act: nn.Module | None
) -> bool:
    """Whether ``packed`` reproduces conv → norm → act on a small random input."""
    dims = conv.weight.dim() - 2
    x = torch.randn(2, conv.in_channels, *[7] * dims, generator=torch.Generator().manual_seed(0))
    want = conv(x)
    for m in (norm, act):
        if m is not None:
            want = m(want)
    got = packed(x)
    if got.shape != want.shape:
        return False
    scale = float(want.abs().max()) + 1e-6
    return float((got - want).abs().max()) <= _TOLERANCE * scale

"""The torch bridge: a NetworkGraph back to a runnable, masked PyTorch model.

:func:`to_model` is the inverse of :func:`n2ngraph.trace.to_graph` (DESIGN.md, "bridge"): every
``sequential`` block's mask is put on its layer with ``torch.nn.utils.parametrize``, every block
added by :func:`~n2ngraph.n2nskip.add_n2nskip` becomes an :class:`N2NSkip` module and every block
added by :func:`~n2ngraph.n2nskip.add_resskip` a :class:`ResSkip` module.

Where a skip acts (forward rule of N2NSkip, arXiv:2208.03662)
-------------------------------------------------------------
``a_{l+k} = g(z_{l+k} + g(skip(a_l)))`` with, on the traced data flow:

- ``a_l``: the source group's activation as the next weight layer receives it, i.e. the output of
  the last op aliasing the group that still has the group's layout (after BatchNorm, the
  non-linearity, pooling and dropout; before a flatten of channels);
- ``z_{l+k}``: the target group's pre-activation, the input of the first non-linearity that
  follows the target's producer. In a BatchNorm net that is the BatchNorm output
  (``z = BN(conv(x))``); in a ResNet sum group it is the residual sum (``z = bn3(conv3(x)) + x``);
  in the output layer (no non-linearity) it is the logits;
- ``g``: that non-linearity (identity for the output layer), applied inside the skip module
  as well. ResSkip adds ``a_l`` (pooled, zero-padded) without ``g`` and without weights.

Several skips into one target are chained in graph order: ``z <- z + g(skip_1(a_1))``, then
``z <- z + g(skip_2(a_2))``, ... and ``g`` is applied to the final ``z``.

Tracing contract (for :func:`n2ngraph.trace.trace`)
---------------------------------------------------
A model with skips is returned as a ``torch.fx.GraphModule`` built from the trace of the
reference (the same submodule paths, so ``state_dict`` keys stay the reference's plus
``n2nskips.<i>.*``). Each skip module has the class attribute ``n2ngraph_kind`` (``"n2nskip"``
or ``"residual"``) and is called as ``z_new = skip(a_src, z_dst)``; its attributes
``n2ngraph_block_name``, ``n2ngraph_src``, ``n2ngraph_dst``, ``n2ngraph_offset`` and
``n2ngraph_spec`` and (N2NSkip) the bool buffer ``mask`` and parameter ``weight`` give the block.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils import parametrize

from n2ngraph.graph import EdgeBlock, NetworkGraph
from n2ngraph.masks import PRUNABLE_TYPES
from n2ngraph.trace import record_shapes

__all__ = ["to_model", "N2NSkip", "ResSkip", "MaskParametrization", "INITS"]

#: Initialisations of :func:`to_model`.
INITS = ("dense", "sparse")

_ACTIVATIONS = {
    "identity": lambda x, _: x,
    "relu": lambda x, _: F.relu(x),
    "relu6": lambda x, _: F.relu6(x),
    "leaky_relu": lambda x, p: F.leaky_relu(x, p),
    "elu": lambda x, p: F.elu(x, p),
    "gelu": lambda x, _: F.gelu(x),
    "silu": lambda x, _: F.silu(x),
    "mish": lambda x, _: F.mish(x),
    "hardswish": lambda x, _: F.hardswish(x),
    "tanh": lambda x, _: torch.tanh(x),
    "sigmoid": lambda x, _: torch.sigmoid(x),
}
_ACT_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.LeakyReLU: "leaky_relu", nn.ELU: "elu",
                nn.GELU: "gelu", nn.SiLU: "silu", nn.Mish: "mish", nn.Hardswish: "hardswish",
                nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
_ACT_FUNCTIONS = {F.relu: "relu", F.relu_: "relu", torch.relu: "relu", torch.relu_: "relu",
                  F.relu6: "relu6", F.leaky_relu: "leaky_relu", F.elu: "elu", F.gelu: "gelu",
                  F.silu: "silu", F.mish: "mish", F.hardswish: "hardswish", torch.tanh: "tanh",
                  F.tanh: "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid"}
_ACT_METHODS = {"relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh",
                "sigmoid": "sigmoid", "sigmoid_": "sigmoid"}


class MaskParametrization(nn.Module):
    """``weight = original * mask`` (a ``torch.nn.utils.parametrize`` parametrization).

    The mask is a bool buffer (saved in the ``state_dict``, moved by ``.to()``); the masked
    entries of ``original`` are zeroed when the mask is put on, so they get zero gradient, zero
    momentum / Adam moments and stay exactly zero under weight decay: pruned weights stay zero.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.bool).clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


class _Skip(nn.Module):
    """Common attributes of the skip modules (see the module docstring's tracing contract)."""

    n2ngraph_kind = ""

    def __init__(self, block: EdgeBlock) -> None:
        super().__init__()
        self.n2ngraph_block_name = block.name
        self.n2ngraph_src = block.src
        self.n2ngraph_dst = block.dst
        self.n2ngraph_offset = int(block.offset)
        self.n2ngraph_spec = dict(block.spec)
        size = block.spec.get("output_size")
        self.output_size = None if size is None else tuple(int(s) for s in size)

    def _pool(self, x: torch.Tensor, dst_rank: int) -> torch.Tensor:
        if x.dim() == 4 and dst_rank == 2:  # channels -> neurons: global average pooling
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        if x.dim() == 4 and self.output_size is not None and tuple(x.shape[-2:]) != self.output_size:
            return F.adaptive_avg_pool2d(x, self.output_size)
        return x

    def extra_repr(self) -> str:
        return f"{self.n2ngraph_src!r} -> {self.n2ngraph_dst!r}"


class N2NSkip(_Skip):
    """A sparse learnable skip ``z_dst <- z_dst + g(skip(a_src))`` (arXiv:2208.03662).

    ``skip`` is a Linear ``(dst, src)`` or a stride-1 convolution ``(C_dst, C_src, f, f)`` with
    padding ``f // 2`` after adaptive average pooling to the target's spatial size (global for a
    channel source and a neuron target); the weight is ``weight * mask``, no bias.
    """

    n2ngraph_kind = "n2nskip"

    def __init__(self, block: EdgeBlock, activation: str = "relu", activation_param: float = 0.0) -> None:
        super().__init__(block)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {sorted(_ACTIVATIONS)}")
        mask = torch.from_numpy(block.mask.copy())
        self.register_buffer("mask", mask)
        self.weight = nn.Parameter(torch.zeros(mask.shape))
        self.is_conv = mask.dim() == 4
        pad = block.spec.get("padding", [mask.shape[-1] // 2] * 2) if self.is_conv else [0, 0]
        self.padding = tuple(int(p) for p in pad)
        self.activation = activation
        self.activation_param = float(activation_param)

    def forward(self, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = self._pool(a, z.dim())
        w = self.weight * self.mask
        y = F.conv2d(x, w, None, 1, self.padding) if self.is_conv else F.linear(x, w)
        return z + _ACTIVATIONS[self.activation](y, self.activation_param)


class ResSkip(_Skip):
    """A parameter-free residual skip ``z_dst <- z_dst + P(a_src)``: ``P`` pools to the target's
    spatial size (global for a neuron target) and zero-pads the channels (He et al. 2016,
    option A), source channel ``i`` landing on target channel ``i + offset``."""

    n2ngraph_kind = "residual"

    def forward(self, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = self._pool(a, z.dim())
        before = self.n2ngraph_offset
        after = z.shape[1] - x.shape[1] - before
        if before or after:
            x = F.pad(x, [0, 0] * (x.dim() - 2) + [before, after])
        return z + x


# ------------------------------------------------------------------------ helpers
def _strip_masks(module: nn.Module) -> None:
    """Remove masks already on a layer (prune buffers or parametrizations), keeping the values
    the layer computes with."""
    if hasattr(module, "weight_orig"):
        torch.nn.utils.prune.remove(module, "weight")
    if parametrize.is_parametrized(module, "weight"):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def _apply_mask(module: nn.Module, mask: torch.Tensor) -> None:
    _strip_masks(module)
    with torch.no_grad():
        module.weight.mul_(mask.to(module.weight.device))
    parametrize.register_parametrization(module, "weight", MaskParametrization(mask.to(module.weight.device)))


def _layer_of(model: nn.Module, block: EdgeBlock) -> nn.Module:
    path = block.spec.get("module", block.name)
    try:
        module = model.get_submodule(path) if path else model
    except AttributeError:
        module = None
    if not isinstance(module, PRUNABLE_TYPES):
        raise ValueError(
            f"sequential block {block.name!r} names module {path!r}, which is not a Linear/Conv2d "
            f"of {type(model).__name__}; was the graph built from this reference model?"
        )
    weight = module.parametrizations["weight"].original if parametrize.is_parametrized(module, "weight") \
        else getattr(module, "weight_orig", module.weight)
    if tuple(weight.shape) != tuple(block.mask.shape):
        raise ValueError(f"block {block.name!r} has mask shape {block.mask.shape} but module {path!r} "
                         f"has weight shape {tuple(weight.shape)}")
    return module


def _activation_of(node: fx.Node, modules: Mapping[str, nn.Module]) -> tuple[str, float] | None:
    """``(name, parameter)`` when ``node`` applies a known non-linearity, else None."""
    if node.op == "call_module":
        m = modules[node.target]
        for cls, name in _ACT_MODULES.items():
            if type(m) is cls:
                param = getattr(m, "negative_slope", getattr(m, "alpha", 0.0))
                return name, float(param)
    elif node.op == "call_function" and node.target in _ACT_FUNCTIONS:
        name = _ACT_FUNCTIONS[node.target]
        param = 0.0
        if name == "leaky_relu":
            param = node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1 else 0.01)
        elif name == "elu":
            param = node.kwargs.get("alpha", node.args[1] if len(node.args) > 1 else 1.0)
        return name, float(param)
    elif node.op == "call_method" and node.target in _ACT_METHODS:
        return _ACT_METHODS[node.target], 0.0
    return None


def _injection(chain: list[fx.Node], shape: tuple[int, ...], modules) -> tuple[fx.Node, fx.Node | None, tuple[str, float]]:
    """``(z, g_node, (g, param))`` of a target group: ``z`` is the input of the first
    non-linearity ``g_node`` of the group's chain; without one, ``z`` is the last node with the
    group's own shape and ``g`` is the identity."""
    for node in chain:
        act = _activation_of(node, modules)
        if act is not None and isinstance(node.args[0], fx.Node):
            return node.args[0], node, act
    full = [n for n in chain if n.meta.get("_n2n_shape", ())[1:] == shape]
    if not full:
        raise ValueError(f"cannot find the pre-activation of group with nodes {[n.name for n in chain]}")
    return full[-1], None, ("identity", 0.0)


def _tap(chain: list[fx.Node], rank: int) -> fx.Node:
    """The source activation ``a_l``: the last alias of the group with the group's layout."""
    ok = [n for n in chain if len(n.meta.get("_n2n_shape", ())) == rank + 1]
    if not ok:
        raise ValueError(f"cannot find the activation of group with nodes {[n.name for n in chain]}")
    return ok[-1]


def _fan_in(graph: NetworkGraph) -> dict[str, torch.Tensor]:
    """Kept fan-in of every unit of every group: kept weights (taps, folded columns) in its rows,
    summed over the sequential and n2nskip blocks into the group."""
    fan: dict[str, torch.Tensor] = {}
    for b in graph.blocks:
        if b.mask is None:
            continue
        rows = torch.as_tensor(b.mask.reshape(b.mask.shape[0], -1).sum(axis=1), dtype=torch.float64)
        fan[b.dst] = fan.get(b.dst, torch.zeros_like(rows)) + rows
    return fan


def _kaiming(shape, fan: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """N(0, 2 / fan_in) per output unit (Kaiming, ReLU gain) on the kept fan-in."""
    std = math.sqrt(2.0) / fan.clamp(min=1).sqrt()
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    return (w * std.reshape(-1, *[1] * (len(shape) - 1))).float()


# ------------------------------------------------------------------------- to_model
def to_model(graph: NetworkGraph, reference_model: nn.Module, *, init: str = "dense", seed: int = 0,
             example_input: torch.Tensor | None = None) -> nn.Module:
    """A runnable, masked copy of ``reference_model`` with the topology of ``graph``.

    Parameters
    ----------
    graph : NetworkGraph
        Traced from ``reference_model`` (its sequential blocks name the layers by module path),
        possibly with blocks added by ``add_n2nskip`` / ``add_resskip``.
    reference_model : nn.Module
        The dense reference; it is deep-copied, never modified. Masks already on it are replaced.
    init : {"dense", "sparse"}
        ``"dense"`` keeps the reference's weights (masked) and draws skip weights Kaiming-normal
        with the skip block's dense fan-in, ``N(0, 2 / (C_src f^2))``. ``"sparse"`` redraws every
        kept weight of every sequential and n2nskip block as ``N(0, 2 / n_u)`` with ``n_u`` the
        unit's *kept* fan-in: its kept weights over all blocks into its group, skips included
        (Kaiming on the mask: Lee et al. 2020, arXiv:1906.06307; Evci et al. 2022,
        arXiv:2010.03533). Biases and norm layers are left as they are.
    seed : int
        Seed of the ``torch.Generator`` drawing the skip (and, for ``"sparse"``, all) weights.
    example_input : Tensor, optional
        One input batch for the shape pass; default zeros of the input group's traced shape.

    Returns
    -------
    nn.Module
        Without added blocks: the masked deep copy (same class). With skips: a
        ``torch.fx.GraphModule`` with the reference's submodule paths plus ``n2nskips``.
        Masks are ``torch.nn.utils.parametrize`` parametrizations (:class:`MaskParametrization`)
        whose masked entries start at zero, so they stay exactly zero through SGD with momentum,
        weight decay, Adam/AdamW, AMP and gradient clipping.

    Raises
    ------
    ValueError
        ``init`` unknown, or the graph does not match the reference (a block naming a missing
        layer, a mask of the wrong shape, or the reference's traced topology differing).
    """
    from n2ngraph.trace import trace

    if not isinstance(graph, NetworkGraph):
        raise TypeError(f"graph must be a NetworkGraph, got {type(graph).__name__}")
    if not isinstance(reference_model, nn.Module):
        raise TypeError(f"reference_model must be an nn.Module, got {type(reference_model).__name__}")
    if init not in INITS:
        raise ValueError(f"init {init!r} is not one of {INITS}")
    added = [b for b in graph.blocks if b.spec.get("added_by")]
    unknown = [b.name for b in graph.blocks
               if b.kind == "n2nskip" and not b.spec.get("added_by")]
    if unknown:
        raise ValueError(f"n2nskip blocks {unknown} were not made by add_n2nskip (no spec['added_by'])")
    model = copy.deepcopy(reference_model)
    layers = {}
    for b in graph.blocks:
        if b.kind == "sequential":
            layers[b.name] = _layer_of(model, b)
            _apply_mask(layers[b.name], torch.from_numpy(b.mask.copy()))
    gen = torch.Generator().manual_seed(int(seed))
    fan = _fan_in(graph) if init == "sparse" else {}
    if init == "sparse":
        for b in graph.blocks:
            if b.kind == "sequential":
                layer = layers[b.name]
                orig = layer.parametrizations["weight"].original
                w = _kaiming(tuple(b.mask.shape), fan[b.dst], gen) * torch.from_numpy(b.mask.copy())
                with torch.no_grad():
                    orig.copy_(w.to(orig.device, orig.dtype))
    if example_input is None:
        p = next(model.parameters(), None)
        example_input = torch.zeros((1, *graph.groups[0].shape), device=None if p is None else p.device,
                                    dtype=torch.float32 if p is None else p.dtype)
    tr = trace(model, example_input=example_input)
    base = graph.replace(blocks=[b for b in graph.blocks if not b.spec.get("added_by")])
    if tr.graph != base:
        raise ValueError(
            "the graph does not match the reference model: its traced topology differs "
            f"(traced {tr.graph!r}, graph without added skips {base!r})"
        )
    if not added:
        return model
    return _with_skips(model, tr, graph, added, example_input, fan, gen)


def _with_skips(model, tr, graph, added, example_input, fan, gen) -> fx.GraphModule:
    gm: fx.GraphModule = tr.module
    shapes = record_shapes(gm, gm, example_input)
    nodes = {n.name: n for n in gm.graph.nodes}
    for n in gm.graph.nodes:
        n.meta["_n2n_shape"] = shapes.get(n.name, ())
    modules = dict(gm.named_modules())
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    skips = nn.ModuleList()
    gm.add_submodule("n2nskips", skips)
    device = example_input.device
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    state: dict[str, tuple[fx.Node, fx.Node, fx.Node | None, tuple[str, float]]] = {}
    for b in added:
        src, dst = graph.group(b.src), graph.group(b.dst)
        tap = _tap([nodes[k] for k in tr.group_nodes[b.src]], len(src.shape) or (2 if b.mask is not None and b.mask.ndim == 2 else 3))
        if b.dst not in state:
            z, g_node, act = _injection([nodes[k] for k in tr.group_nodes[b.dst]], tuple(dst.shape), modules)
            state[b.dst] = (z, z, g_node, act)
        z0, z, g_node, act = state[b.dst]
        if b.kind == "n2nskip":
            module = N2NSkip(b, *act)
            if fan:
                w = _kaiming(tuple(b.mask.shape), fan[b.dst], gen)
            else:
                dense_fan = torch.full((b.mask.shape[0],), float(math.prod(b.mask.shape[1:])))
                w = _kaiming(tuple(b.mask.shape), dense_fan, gen)
            with torch.no_grad():
                module.weight.copy_(w * module.mask)
        else:
            module = ResSkip(b)
        if module.output_size is None and len(z0.meta["_n2n_shape"]) == 4:
            module.output_size = tuple(z0.meta["_n2n_shape"][2:])
        skips.append(module.to(device=device, dtype=dtype if b.kind == "n2nskip" else None))
        after = z if order[z] >= order[tap] else tap
        if g_node is not None and order[tap] >= order[g_node]:
            raise ValueError(f"skip {b.name!r}: the source activation is computed after the target's "
                             "non-linearity; this data flow is not supported")
        with gm.graph.inserting_after(after):
            new = gm.graph.call_module(f"n2nskips.{len(skips) - 1}", (tap, z))
        order = {n: i for i, n in enumerate(gm.graph.nodes)}
        state[b.dst] = (z0, new, g_node, act)
    for z0, z, g_node, _ in state.values():
        if g_node is not None:
            g_node.replace_input_with(z0, z)
        else:
            new_nodes = {n for n in gm.graph.nodes if n.op == "call_module" and str(n.target).startswith("n2nskips.")}
            z0.replace_all_uses_with(z, delete_user_cb=lambda user: user not in new_nodes)
    for n in gm.graph.nodes:
        n.meta.pop("_n2n_shape", None)
    gm.graph.lint()
    gm.recompile()
    gm.train(model.training)
    return gm

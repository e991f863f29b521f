"""The torch bridge: a NetworkGraph back to a runnable, masked PyTorch model.

:func:`to_model` is the inverse of :func:`n2ngraph.trace.to_graph` (docs/design.md, "bridge"): every
``sequential`` block's mask is put on its layer with ``torch.nn.utils.parametrize``, every block
added by :func:`~n2ngraph.n2nskip.add_n2nskip` becomes an :class:`N2NSkip` module and every block
added by :func:`~n2ngraph.n2nskip.add_resskip` a :class:`ResSkip` module.

Where a skip acts (forward rule of N2NSkip, arXiv:2208.03662)
-------------------------------------------------------------
``a_{l+k} = g(z_{l+k} + g(skip(a_l)))`` with, on the traced data flow:

- ``a_l``: the source group's activation as the target's side of the network receives it: the
  output of the last op aliasing the group, with the group's layout (after BatchNorm, the
  non-linearity, pooling and dropout; before a flatten of channels), that every path from the
  group to ``z_{l+k}`` reads through. In a branching model (an inception block reading one
  group through a 1x1 conv on one branch and a max-pool on another) a skip into the first
  branch taps what that branch reads, not the later branch's pool;
- ``z_{l+k}``: the target group's pre-activation, the input of the first non-linearity that
  follows the target's producer, when every consumer of the group reads through it. In a
  BatchNorm net that is the BatchNorm output (``z = BN(conv(x))``); in a ResNet sum group it is
  the residual sum (``z = bn3(conv3(x)) + x``); in the output layer (no non-linearity) it is the
  logits. A group without such a non-linearity (a concatenation read by several branches, a
  non-linearity on one branch only) takes the skip at its last node, with the group's own
  shape, that every consumer reads through, and ``g`` is the identity;
- ``g``: that non-linearity (identity for the output layer), applied inside the skip module
  as well. ResSkip adds ``a_l`` (pooled, zero-padded) without ``g`` and without weights.
- Layouts: ``a_l`` and ``z_{l+k}`` may hold their channels first or last (channels-last blocks,
  tokens ``(batch, tokens, features)``); a skip computes channels first and returns ``z``'s
  layout. Onto neurons a source is averaged globally, onto pixels adaptively to the target's
  size, onto tokens its positions (raster order) are averaged to the target's token count, and
  neurons onto positions are broadcast.

Several skips into one target are chained in graph order: ``z <- z + g(skip_1(a_1))``, then
``z <- z + g(skip_2(a_2))``, ... and ``g`` is applied to the final ``z``. ``skip`` itself follows
the block's ``spec.order``: ``"pool-conv-act"`` (pool ``a_l`` to the target's size, then the
map) or the paper's ``"conv-bn-act-pool"`` (the map at the source's resolution, BatchNorm, ``g``,
adaptive max-pooling to the target's size); a skip with a stride (``spec.stride``, a skip into a
ResNet block that strides) reaches the target's size by it, without pooling; see :class:`N2NSkip`.

The modules themselves (the mask parametrization, :class:`N2NSkip`, :class:`ResSkip`), what
a skip costs and how masks hold are in :mod:`n2ngraph.skip_modules`.

Tracing contract (for :func:`n2ngraph.trace.trace`)
---------------------------------------------------
A model with skips is returned as a ``torch.fx.GraphModule`` built from the trace of the
reference (the same submodule paths, so ``state_dict`` keys stay the reference's plus
``n2nskips.<i>.*``). Each skip module has the class attribute ``n2ngraph_kind`` (``"n2nskip"``
or ``"residual"``) and is called as ``z_new = skip(a_src, z_dst)``; its attributes
``n2ngraph_block_name``, ``n2ngraph_src``, ``n2ngraph_dst``, ``n2ngraph_offset`` and
``n2ngraph_spec`` (the block's :class:`~n2ngraph.graph.LayerSpec`) and (N2NSkip) the methods ``n2ngraph_mask()`` (the dense bool mask, rebuilt
from the kept pairs) and ``n2ngraph_pair_weight()`` (``sum |w|`` per channel pair, from the current
weights) give the block.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from n2ngraph.graph import EdgeBlock, NetworkGraph
from n2ngraph.masks import FUSED_WEIGHTS, PRUNABLE_TYPES, FusedWeight, prunable_weights, weight_name
from n2ngraph.n2nskip import skip_initial_weights
from n2ngraph.recipes import SKIP_ORDERS  # orders of the ops inside an N2NSkip module (spec.order)
from n2ngraph.skip_modules import (
    _ACT_FUNCTIONS,
    _ACT_METHODS,
    _ACT_MODULES,
    DENSE_ABOVE,
    SKIP_MODES,
    MaskError,
    MaskParametrization,
    N2NSkip,
    ResSkip,
)
from n2ngraph.trace import record_shapes

__all__ = ["to_model", "N2NSkip", "ResSkip", "MaskParametrization", "MaskError", "INITS", "SKIP_ORDERS",
           "SKIP_MODES", "DENSE_ABOVE"]

#: Initialisations of :func:`to_model`.
INITS = ("dense", "sparse")



def _refuse_other_masks(module, state_dict, prefix, *args, **kwargs) -> None:
    """``load_state_dict`` pre-hook of a :func:`to_model` result: checks every mask and skip
    position of ``state_dict`` before anything is loaded, so a refused load changes nothing."""
    for path, sub in module.named_modules():
        if isinstance(sub, (MaskParametrization, N2NSkip)):
            why = sub.mask_mismatch(state_dict, f"{prefix}{path}." if path else prefix)
            if why:
                raise MaskError(why)


def _guard_loads(model: nn.Module) -> nn.Module:
    hook = getattr(model, "register_load_state_dict_pre_hook", None)
    if hook is not None:
        hook(_refuse_other_masks)
    else:  # older torch
        model._register_load_state_dict_pre_hook(_refuse_other_masks, with_module=True)
    return model


# ------------------------------------------------------------------------ helpers
def _bake_in_existing_mask(module: nn.Module, attr: str = "weight") -> None:
    """Remove a mask already on a layer's weight ``attr`` (a ``torch.nn.utils.prune`` buffer or a
    parametrization) by writing the masked values the layer computes with into the plain
    parameter."""
    if hasattr(module, f"{attr}_orig"):
        torch.nn.utils.prune.remove(module, attr)
    if parametrize.is_parametrized(module, attr):
        parametrize.remove_parametrizations(module, attr, leave_parametrized=True)


def _apply_mask(module: nn.Module, mask: torch.Tensor, attr: str = "weight") -> None:
    """Mask the weight ``attr`` of ``module`` (``weight``, or a fused weight such as
    MultiheadAttention's ``in_proj_weight``) with a :class:`MaskParametrization`."""
    _bake_in_existing_mask(module, attr)
    weight = getattr(module, attr)
    with torch.no_grad():
        weight.masked_fill_(~mask.to(weight.device), 0)
    parametrize.register_parametrization(module, attr, MaskParametrization(mask.to(weight.device)))


def _layer_of(model: nn.Module, block: EdgeBlock) -> tuple[nn.Module, str]:
    """``(module, weight attribute)`` of a sequential block: ``(Linear/Conv2d, "weight")``, or a
    fused weight (:data:`n2ngraph.masks.FUSED_WEIGHTS`) named by its parameter."""
    path = block.name if block.spec.module is None else block.spec.module
    owner, _, attr = weight_name(path).rpartition(".")
    try:
        module = model.get_submodule(owner) if owner else model
    except AttributeError:
        module = None
    fused = any(isinstance(module, cls) and attr in names for cls, names in FUSED_WEIGHTS.items())
    if not (isinstance(module, PRUNABLE_TYPES) and attr == "weight") and not fused:
        raise ValueError(
            f"sequential block {block.name!r} names module {path!r}, which is not a Linear/Conv2d "
            f"(or a fused weight: {sorted({n for v in FUSED_WEIGHTS.values() for n in v})}) of "
            f"{type(model).__name__}; was the graph built from this reference model?"
        )
    weight = module.parametrizations[attr].original if parametrize.is_parametrized(module, attr) \
        else getattr(module, f"{attr}_orig", getattr(module, attr, None))
    if weight is None or tuple(weight.shape) != tuple(block.mask.shape):
        raise ValueError(f"block {block.name!r} has mask shape {block.mask.shape} but module {path!r} "
                         f"has weight shape {None if weight is None else tuple(weight.shape)}")
    return module, attr


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


def _reads_values(user: fx.Node) -> bool:
    """``user`` consumes its input's values: it makes a tensor (a traced shape) or is the
    output, not metadata (``x.shape``, ``x.size()``)."""
    return user.op == "output" or bool(user.meta.get("_n2n_shape"))


class _Flow:
    """Data-flow reachability in an fx graph, as ancestor bitsets (bit ``i``: the ``i``-th node
    in graph order), and the exits of a node group's chain of aliases."""

    def __init__(self, graph: fx.Graph) -> None:
        self.bit: dict[fx.Node, int] = {}
        self.above: dict[fx.Node, int] = {}
        for i, node in enumerate(graph.nodes):
            above = 0
            for p in node.all_input_nodes:
                above |= self.above[p] | self.bit[p]
            self.bit[node], self.above[node] = 1 << i, above

    def reaches(self, a: fx.Node, b: fx.Node) -> bool:
        """``a`` is ``b`` or one of its ancestors."""
        return a is b or bool(self.above[b] & self.bit[a])

    def dominates(self, node: fx.Node, chain: list[fx.Node], toward: fx.Node | None = None) -> bool:
        """Every use of the group outside its chain (that leads to ``toward``, when given) reads
        ``node`` or an alias computed from it: what is added at ``node`` reaches every such
        consumer, and ``node`` is what every such consumer receives."""
        inside = set(chain)
        return all(self.reaches(node, a) for a in chain for user in a.users
                   if user not in inside and user in self.bit and _reads_values(user)
                   and (toward is None or self.reaches(user, toward)))


def _channel_axis(node: fx.Node, size: int, shape: tuple[int, ...], *, exact: bool) -> int | None:
    """Where ``node``'s activation holds the ``size`` channels of a group whose per-sample shape
    is ``shape`` (channels first): 1, -1 (channels-last, tokens ``(batch, tokens, features)``),
    or None when it holds them otherwise (a flatten, a split channel axis). ``exact``: the
    other axes must have the group's own sizes too (not pooled)."""
    have = tuple(node.meta.get("_n2n_shape", ()))[1:]
    if not have or len(have) != len(shape):
        return None
    if have[0] == size and (not exact or have == tuple(shape)):
        return 1
    if len(have) > 1 and have[-1] == size and (not exact or have[:-1] == tuple(shape[1:])):
        return -1
    return None


def _split_channels(node: fx.Node, size: int) -> bool:
    """``node``'s activation holds ``size`` channels over two or more axes after the batch."""
    have = tuple(node.meta.get("_n2n_shape", ()))
    return any(have[1] != size and math.prod(have[1:k]) == size for k in range(3, len(have) + 1)) if len(have) > 2 else False


def _injection(chain: list[fx.Node], shape: tuple[int, ...], modules,
               flow: _Flow) -> tuple[fx.Node, fx.Node | None, tuple[str, float]]:
    """``(z, g_node, (g, param))`` of a target group: ``z`` is the input of the first
    non-linearity ``g_node`` of the group's chain when every consumer of the group reads it
    through ``z``; otherwise (no non-linearity, or one on a branch only, as in a concatenation
    read by several branches) ``z`` is the last node with the group's own shape that every
    consumer reads through, and ``g`` is the identity."""
    size = shape[0] if shape else 0
    for node in chain:
        act = _activation_of(node, modules)
        if act is None or not isinstance(node.args[0], fx.Node):
            continue
        if shape and not _channel_axis(node.args[0], size, shape, exact=True):
            continue  # not the group's activation: e.g. a gate's sigmoid merged into its product
        if flow.dominates(node.args[0], chain):
            return node.args[0], node, act
        break
    full = [n for n in chain if _channel_axis(n, size, shape, exact=True) and flow.dominates(n, chain)]
    if not full:
        split = [n.name for n in chain if _split_channels(n, size)]
        why = (f" (nodes {split} hold its {size} channels over several axes, as SKNet's stacked "
               "paths do; a skip cannot be added there)" if split else "")
        raise ValueError(f"cannot find the pre-activation of group with nodes {[n.name for n in chain]}{why}")
    return full[-1], None, ("identity", 0.0)


def _tap(chain: list[fx.Node], size: int, shape: tuple[int, ...], z: fx.Node, flow: _Flow) -> fx.Node:
    """The source activation ``a_l``: the last alias of the group with the group's layout that
    every path from the group to the target's pre-activation ``z`` reads through (the
    activation as the target's side of the network receives it, not a later branch's); for a
    target on a parallel branch, the last such alias of every consumer of the group."""
    ok = [n for n in chain if _channel_axis(n, size, shape, exact=False)]
    upstream = [n for n in ok if flow.reaches(n, z) and flow.dominates(n, chain, toward=z)]
    common = [n for n in ok if flow.dominates(n, chain)]
    if not (upstream or common):
        raise ValueError(f"cannot find the activation of group with nodes {[n.name for n in chain]}")
    return (upstream or common)[-1]


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


def _init_skip(module: N2NSkip, block: EdgeBlock, fan: dict[str, torch.Tensor], gen: torch.Generator) -> None:
    """Initial kept weights of a skip: ``init="sparse"`` (``fan`` given) draws ``N(0, 2 / n_u)``
    with the destination unit's kept fan-in ``n_u``, only for the kept entries; ``init="dense"``
    takes :func:`n2ngraph.n2nskip.skip_initial_weights` (Kaiming normal with the dense fan-in),
    so the graph's pair weights are the model's initial ones."""
    if fan:  # one row per kept pair, each with its destination unit's kept fan-in
        w = _kaiming(tuple(module.weight.shape), fan[block.dst][module.dst_index.cpu()], gen)
        with torch.no_grad():
            module.weight.copy_(w)
            if module.tap_mask is not None:
                module.weight.masked_fill_(~module.tap_mask, 0)
        return
    module.set_dense_weight(np.asarray(skip_initial_weights(block), dtype=np.float32))


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
        ``"dense"`` keeps the reference's weights (masked) and starts every skip from
        :func:`n2ngraph.n2nskip.skip_initial_weights` (Kaiming normal with the skip block's dense
        fan-in, ``N(0, 2 / (C_src f^2))``, drawn from the block's own seed), so the graph's pair
        weights are the model's initial ones. ``"sparse"`` redraws every
        kept weight of every sequential and n2nskip block as ``N(0, 2 / n_u)`` with ``n_u`` the
        unit's *kept* fan-in: its kept weights over all blocks into its group, skips included
        (Kaiming on the mask: Lee et al. 2020, arXiv:1906.06307; Evci et al. 2022,
        arXiv:2010.03533). Biases and norm layers are left as they are, and so are weight
        layers outside the graph (the forward never reaches them, e.g. auxiliary heads in eval
        mode: :func:`n2ngraph.pipeline.graph_layers`).
    seed : int
        Seed of the ``torch.Generator`` drawing the weights of ``init="sparse"`` (skips included);
        ``init="dense"`` draws nothing.
    example_input : Tensor, optional
        One input batch for the shape pass; default zeros of the input group's traced shape.

    Returns
    -------
    nn.Module
        Without added blocks: the masked deep copy (same class). With skips: a
        ``torch.fx.GraphModule`` with the reference's submodule paths plus ``n2nskips``.
        Masks are ``torch.nn.utils.parametrize`` parametrizations (:class:`MaskParametrization`,
        ``where(mask, w, 0)``) whose masked entries start at zero and get zero gradient, so they
        stay exactly zero through SGD with momentum, weight decay, Adam/AdamW, AMP and gradient
        clipping; the computed weight is zero there whatever is stored. ``load_state_dict`` of a
        state with other masks or skip positions raises :class:`MaskError`.

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
    added = [b for b in graph.blocks if b.spec.added_by]
    unknown = [b.name for b in graph.blocks if b.kind == "n2nskip" and not b.spec.added_by]
    if unknown:
        raise ValueError(f"n2nskip blocks {unknown} were not made by add_n2nskip (no spec.added_by)")
    model = copy.deepcopy(reference_model)
    layers = {}
    for b in graph.blocks:
        if b.kind == "sequential":
            layers[b.name] = module, attr = _layer_of(model, b)
            _apply_mask(module, torch.from_numpy(b.mask.copy()), attr)
    gen = torch.Generator().manual_seed(int(seed))
    fan = _fan_in(graph) if init == "sparse" else {}
    if init == "sparse":
        for b in graph.blocks:
            if b.kind == "sequential":
                layer, attr = layers[b.name]
                orig = layer.parametrizations[attr].original
                w = _kaiming(tuple(b.mask.shape), fan[b.dst], gen) * torch.from_numpy(b.mask.copy())
                with torch.no_grad():
                    orig.copy_(w.to(orig.device, orig.dtype))
    if example_input is None:
        p = next(model.parameters(), None)
        example_input = torch.zeros((1, *graph.groups[0].shape), device=None if p is None else p.device,
                                    dtype=torch.float32 if p is None else p.dtype)
    tr = trace(model, example_input=example_input)
    base = graph.replace(blocks=[b for b in graph.blocks if not b.spec.added_by])
    if tr.graph != base:
        raise ValueError(
            "the graph does not match the reference model: its traced topology differs "
            f"(traced {tr.graph!r}, graph without added skips {base!r})"
        )
    if not added:
        return _guard_loads(model)
    return _guard_loads(_with_skips(model, tr, graph, added, example_input, fan, gen))


def _keep_layers(gm: fx.GraphModule, model: nn.Module) -> None:
    """Put ``model``'s own weight layers into ``gm`` at their paths. fx copies a layer whose
    weight is only read by a function (torchvision Swin's ``shifted_window_attention(x,
    qkv.weight, ...)``) as a bare module holding that weight (or its parametrization); with the
    layer itself there, its mask is found and ``state_dict`` keys are unchanged."""
    for name, layer in prunable_weights(model).items():
        module = layer.module if isinstance(layer, FusedWeight) else layer
        path = name.rpartition(".")[0] if isinstance(layer, FusedWeight) else name.removesuffix("weight").rstrip(".")
        parent, _, child = path.rpartition(".")
        try:
            holder = gm.get_submodule(parent) if parent else gm
            current = getattr(holder, child) if child else None
        except AttributeError:
            continue  # a layer the traced forward never reads
        if isinstance(current, nn.Module) and current is not module:
            setattr(holder, child, module)


def _with_skips(model, tr, graph, added, example_input, fan, gen) -> fx.GraphModule:
    gm: fx.GraphModule = tr.module
    _keep_layers(gm, model)
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
    flow = _Flow(gm.graph)  # of the traced reference, before any skip is inserted
    state: dict[str, tuple[fx.Node, fx.Node, fx.Node | None, tuple[str, float]]] = {}
    for b in added:
        src, dst = graph.group(b.src), graph.group(b.dst)
        inside = [g for g in (b.src, b.dst) if not tr.group_nodes.get(g)]
        if inside:
            raise ValueError(
                f"skip {b.name!r}: group {inside[0]!r} is computed inside a fused op (q, k, v or "
                "attention inside nn.MultiheadAttention or torchvision's shifted_window_attention) "
                "and has no activation a skip can read or add to; wire skips between the blocks' "
                "inputs and outputs (recipe wiring 'blocks', as the paper recipe does)")
        if b.dst not in state:
            z, g_node, act = _injection([nodes[k] for k in tr.group_nodes[b.dst]], tuple(dst.shape),
                                        modules, flow)
            state[b.dst] = (z, z, g_node, act)
        z0, z, g_node, act = state[b.dst]
        shape = src.shape or (src.size, *((1, 1) if b.mask is None or b.mask.ndim == 4 else ()))
        tap = _tap([nodes[k] for k in tr.group_nodes[b.src]], src.size, tuple(shape), z0, flow)
        if b.kind == "n2nskip":
            module = N2NSkip(b, *act)
            _init_skip(module, b, fan, gen)
        else:
            module = ResSkip(b)
        module.src_axis = _channel_axis(tap, src.size, tuple(shape), exact=False)
        module.dst_axis = _channel_axis(z0, dst.size, tuple(dst.shape), exact=True) if dst.shape else 1
        z_shape = z0.meta["_n2n_shape"] if module.dst_axis == 1 else \
            (z0.meta["_n2n_shape"][0], *tuple(dst.shape))
        if module.output_size is None and len(z_shape) == 4:
            module.output_size = tuple(z_shape[2:])
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
            z0.replace_all_uses_with(z, delete_user_cb=lambda user, new=new_nodes: user not in new)
    for n in gm.graph.nodes:
        n.meta.pop("_n2n_shape", None)
    gm.graph.lint()
    gm.recompile()
    gm.train(model.training)
    return gm

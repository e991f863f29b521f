"""Trace a PyTorch model into a :class:`~n2ngraph.graph.NetworkGraph`.

The model is traced with ``torch.fx.symbolic_trace`` so the real data flow is followed, not the
order in which modules were registered, and one forward pass on an example input records every
activation's shape. The walk over the fx graph applies docs/design.md's graph semantics:

- a weight layer (``nn.Linear``, ``nn.Conv2d`` incl. strided, grouped and depthwise) makes a new
  node group and a ``sequential`` block from the group it consumes;
- channel-keeping ops (BatchNorm, activations, pooling, dropout, flatten/reshape of a batch, scalar
  arithmetic) alias the group they consume;
- a flatten of a ``C x h x w`` conv output keeps channel granularity: the Linear that consumes it
  gets ``fold = h * w``;
- a residual add makes a sum group; an operand that is a weight layer's (or another sum's) output
  used nowhere else merges into it, every other operand joins through a ``residual`` block;
- a concatenation along channels makes a group whose channels are the operands' channels in order,
  joined channel to channel by ``residual`` blocks at the right offset;
- a gate (the product of activations of two groups, squeeze-excitation ``x * s``) and a
  difference make a group like a sum; the joining ``residual`` block's ``spec.op`` says
  ``"mul"`` / ``"sub"``; element-wise ops within one group alias it;
- every activation carries the tensor axis of its nodes, moved by ``permute`` / ``transpose`` and
  kept by reshapes that keep that axis whole, so a Linear on the channel axis of a channels-last
  tensor (ConvNeXt) is a channel-mixing layer;
- every output of a model returning a tuple or named tuple is traced; optional inputs left at a
  non-tensor default are not inputs; stochastic depth aliases;
- ``nn.MultiheadAttention`` is a fused q | k | v projection (``in_proj_weight``), attention and
  ``out_proj``;
- a branch on tensor shapes (``if x.shape[-2] < 7``) follows the example input (the graph holds
  the branch it takes); a branch on tensor values is refused.

Anything else raises ``ValueError`` naming the op and the module it sits in: the tracer never
returns a silently wrong graph.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from n2ngraph.graph import EdgeBlock, LayerSpec, NetworkGraph, NodeGroup
from n2ngraph.masks import (
    PRUNABLE_TYPES,
    masks_of,
    prunable_weights,
    validate_masks,
    weight_name,
    weight_of,
)
from n2ngraph.models import example_input as default_example_input

__all__ = ["Trace", "trace", "to_graph", "with_masks", "record_shapes", "SKIP_MARKER"]

#: Attribute of a skip module (``n2ngraph.bridge``) traced as a ready-made edge block: called as
#: ``skip(a_src, z_dst)`` it has ``n2ngraph_kind`` ("n2nskip" or "residual"),
#: ``n2ngraph_block_name``, ``n2ngraph_offset``, ``n2ngraph_spec`` (a :class:`LayerSpec`, or a
#: mapping read with :meth:`LayerSpec.from_dict`) and (n2nskip) either the
#: methods ``n2ngraph_mask()`` (the dense weight-shaped bool mask, rebuilt from a compact store)
#: and ``n2ngraph_pair_weight()`` (float32 ``(out, in)`` sums of ``|w|`` over kept taps), or a
#: dense ``weight`` with a bool buffer ``mask``.
SKIP_MARKER = "n2ngraph_kind"

#: Modules that keep the channel set of their input (docs/design.md: they alias the group).
_ALIAS_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Softmax, nn.LogSoftmax, nn.Identity,
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample,
)
_ALIAS_FUNCTIONS = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.gelu,
    F.silu, F.mish, F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus, torch.sigmoid,
    torch.tanh, F.sigmoid, F.tanh, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
    F.dropout, F.dropout2d, F.alpha_dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.interpolate, F.batch_norm, F.layer_norm, F.group_norm,
    torch.clone, torch.detach,
}
_ALIAS_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "softmax", "log_softmax",
    "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type_as",
    "clamp", "clamp_", "clamp_min", "clamp_min_",
}

#: The torch functions and ``Tensor`` method names of each rule of :data:`_RULES`, disjoint.
_OP_RULES: tuple[tuple[str, set, set[str]], ...] = (
    ("alias", _ALIAS_FUNCTIONS, _ALIAS_METHODS),
    ("reshape", {torch.flatten, torch.reshape, torch.squeeze},
     {"view", "reshape", "flatten", "squeeze", "reshape_as", "view_as"}),
    ("permute", {torch.permute, torch.transpose, torch.movedim, torch.swapaxes, torch.swapdims},
     {"permute", "transpose", "movedim", "swapaxes", "swapdims"}),
    ("roll", {torch.roll}, {"roll"}),
    ("reduce", {torch.mean, torch.amax, torch.sum}, {"mean", "amax", "sum"}),
    ("add", {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub},
     {"add", "add_", "sub", "sub_"}),
    ("mul", {operator.mul, operator.imul, operator.truediv, operator.itruediv, torch.mul, torch.div},
     {"mul", "mul_", "div", "div_"}),
    ("cat", {torch.cat, torch.concat}, set()),
    ("stack", {torch.stack}, set()),
    ("index", {operator.getitem}, set()),
    ("split", {torch.split, torch.chunk, torch.unbind}, {"split", "chunk", "unbind"}),
    ("attention", {F.scaled_dot_product_attention}, set()),
    ("product", {torch.einsum, torch.matmul, operator.matmul}, {"matmul"}),
    ("pad", {F.pad}, set()),
)

#: Functions of optional libraries, by ``module.qualname`` (no import of those libraries here):
#: stochastic depth / drop path alias like dropout (docs/design.md, "The model zoo").
_QUALIFIED_RULES = {
    "torchvision.ops.stochastic_depth.stochastic_depth": "alias",
    "timm.layers.drop.drop_path": "alias",
    "torchvision.models.swin_transformer._patch_merging_pad": "patch_merge",
    "torchvision.models.swin_transformer.shifted_window_attention": "window_attention",
}


#: Modules of optional libraries, by ``module.qualname``: stochastic depth / drop path modules
#: are leaves that alias (their forward draws a random tensor in training mode).
_QUALIFIED_MODULES = {
    "timm.layers.drop.DropPath": "alias",
    "torchvision.ops.stochastic_depth.StochasticDepth": "alias",
}


def _rule_table() -> dict[str, dict[Any, str]]:
    """``{fx node op: {target or module class: rule}}`` (:data:`_RULES`)."""
    table: dict[str, dict[Any, str]] = {"call_function": {}, "call_method": {}, "call_module": {}}
    for rule, functions, methods in _OP_RULES:
        table["call_function"].update(dict.fromkeys(functions, rule))
        table["call_method"].update(dict.fromkeys(methods, rule))
    table["call_module"].update({**dict.fromkeys(_ALIAS_MODULES, "alias"), nn.Flatten: "reshape",
                                 **dict.fromkeys(PRUNABLE_TYPES, "weight_layer"),
                                 nn.MultiheadAttention: "multihead_attention"})
    table["call_function"].update(_QUALIFIED_RULES)
    return table


def _function_rule(node: fx.Node) -> str | None:
    """The rule of a torch function or ``Tensor`` method node (by target, else by the target's
    qualified name for :data:`_QUALIFIED_RULES`)."""
    table = _RULES[node.op]
    rule = table.get(node.target)
    if rule is None and node.op == "call_function":
        target = node.target
        rule = table.get(f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}")
    return rule


#: The rule of every op the tracer knows (docs/design.md, "Graph semantics"), by fx node kind:
#: torch functions and ``Tensor`` methods by target, modules by class (the nearest class of the
#: module's MRO that has a rule). Each rule names a :class:`_Walker` handler:
#:
#: - ``alias``: channel-keeping ops; the output is the first activation argument's group (other
#:   activation arguments, as in ``x.type_as(y)``, only lend a dtype);
#: - ``reshape``: a flatten or reshape that keeps the channel axis whole (aliases; the batch
#:   flatten of channels before a classifier sets the fold);
#: - ``permute``: ``permute`` / ``transpose`` / ``movedim`` (aliases; moves the channel axis);
#: - ``reduce``: a mean / max / sum over axes other than the channel axis (aliases);
#: - ``add``: a residual sum or difference (a new group), or an activation plus a constant or
#:   plus activations of its own group (aliases);
#: - ``mul``: a gate, the product of activations of two groups (a new group, built like a sum),
#:   or an activation times or divided by a constant or its own group (aliases);
#: - ``cat``: concatenation along channels (a new group), or of one group along another axis
#:   (aliases: a class token prepended to a token sequence);
#: - ``stack``: groups of one width stacked on a new axis before the channel axis (SKNet's
#:   paths): a concatenation whose channel axis is split into (path, channel);
#: - ``index``: ``x[...]`` keeping the batch axis whole: aliases, or a channel range (a new group);
#: - ``split``: ``split`` / ``chunk``: pieces over channel ranges (new groups, made when used);
#:   ``unbind`` of the q | k | v axis of a split fused projection;
#: - ``attention``: ``F.scaled_dot_product_attention`` (a group joined from q, k and v);
#: - ``pad``: padding of axes other than the channel axis (aliases);
#: - ``weight_layer``: ``nn.Linear`` / ``nn.Conv2d`` (a new group and a ``sequential`` block);
#: - ``multihead_attention``: ``nn.MultiheadAttention`` (its q/k/v and output projections as
#:   weight layers around an attention group).
#:
#: A module with the :data:`SKIP_MARKER` attribute follows the ``skip`` rule whatever its class.
_RULES = _rule_table()


def _module_rule(module: nn.Module) -> str | None:
    """The rule of a module: ``skip`` for a marked skip module, else that of the nearest class
    in its MRO with one (as ``isinstance`` would match), else None."""
    if hasattr(module, SKIP_MARKER):
        return "skip"
    for c in type(module).__mro__:
        rule = _RULES["call_module"].get(c) or _QUALIFIED_MODULES.get(f"{c.__module__}.{c.__qualname__}")
        if rule is not None:
            return rule
    return None


@dataclass(frozen=True)
class Trace:
    """The result of :func:`trace`.

    Attributes
    ----------
    graph : NetworkGraph
        The traced graph.
    module : torch.fx.GraphModule
        The symbolic trace; it shares the model's submodules and parameters.
    group_nodes : dict
        ``group name -> fx node names`` whose output is that group's activation, in graph order:
        the producer first (placeholder, weight layer, add or cat), then the ops aliasing it.
        Empty for a group computed inside a fused call (q, k, v and attention inside
        ``nn.MultiheadAttention`` or torchvision's ``shifted_window_attention``).
    """

    graph: NetworkGraph
    module: fx.GraphModule
    group_nodes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class _Group:
    """A node group while walking; ``role`` says what made it: ``"input"`` (the placeholder),
    ``"layer"`` (a weight layer), ``"sum"`` (a residual add) or ``"cat"`` (a concatenation)."""

    name: str
    size: int | None
    shape: tuple[int, ...]
    role: str
    uses: int = 0
    nodes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Value:
    """An activation: the group it belongs to, how many columns fold onto each node, and the
    tensor axis that holds the group's nodes (1 for ``(batch, channels, ...)``; the last axis of
    a channels-last tensor)."""

    gid: int
    fold: int = 1
    axis: int = 1
    #: While the channel axis is split into several axes (a channel shuffle's ``view``): the
    #: ``(tensor axis, size)`` of each, most significant first; ``axis`` is then unused.
    sub: tuple[tuple[int, int], ...] | None = None
    #: The batch axis; not 0 only while the channel axis is split (``permute(2, 0, 3, 1, 4)`` of
    #: a ``(B, N, 3, heads, head_dim)`` q/k/v tensor).
    batch: int = 0


@dataclass(frozen=True)
class _Sum:
    """A residual add (or a difference, or a gate's product: ``op``) seen by the walk: its group
    and its operands' groups, merged or joined by :func:`_assemble`."""

    gid: int
    operands: tuple[int, ...]
    op: str = "add"


@dataclass
class _Walk:
    """What one walk over the fx graph found, before sums are merged (:func:`_assemble`).

    ``blocks`` holds ``(block, src gid, dst gid)``; the blocks' own ``src`` / ``dst`` are filled
    in once the groups are final.
    """

    groups: list[_Group]
    blocks: list[tuple[EdgeBlock, int, int]]
    sums: list[_Sum]
    outputs: tuple[int, ...]
    token_mixing: tuple[str, ...] = ()


#: Ops whose result depends on tensor shapes only (a branch on them follows the example input).
_SHAPE_READS = {"shape", "ndim", "size", "dim", "numel"}


def _shape_only(node: fx.Node, memo: dict[fx.Node, bool]) -> bool:
    """``node`` is computed from tensor shapes and constants only (``x.shape[-2] < 7``), never
    from tensor values: a shape read, or Python arithmetic / comparison on such results."""
    if node not in memo:
        if (node.op == "call_method" and node.target in _SHAPE_READS) or (
                node.op == "call_function" and node.target is getattr and node.args[1] in _SHAPE_READS):
            memo[node] = True
        else:
            module = getattr(node.target, "__module__", None) or ""
            arithmetic = node.op == "call_function" and module in ("_operator", "operator", "math", "builtins")
            memo[node] = arithmetic and all(_shape_only(a, memo) for a in node.all_input_nodes)
    return memo[node]


class _Tracer(fx.Tracer):
    """Keeps weight layers, marked skip modules and torch.nn modules as leaves, and remembers
    the module being traced when tracing fails.

    A branch on tensor *shapes* (timm VGG's ``if x.shape[-2] < 7``, MobileViT's ``if new_h != H``)
    is taken as the example input takes it: the shape values it reads are computed by running
    the ops traced so far on ``example_input`` (no gradient; buffers such as BatchNorm
    statistics restored afterwards), so the graph holds the branch the example input follows.
    A branch on tensor *values* is refused as torch.fx refuses it.
    """

    def __init__(self, example_input: torch.Tensor | None = None) -> None:
        super().__init__()
        self.current_path = ""
        self.example_input = example_input
        self.values: dict[fx.Node, Any] = {}
        self.shape_memo: dict[fx.Node, bool] = {}
        self.evaluating = False
        self.saved_buffers: dict[str, torch.Tensor] | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _module_rule(m) is not None or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        if self.evaluating:  # running the traced ops on the example input (:meth:`to_bool`)
            return forward(*args, **kwargs)
        outer = self.current_path
        self.current_path = self.path_of_module(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.current_path = outer

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self.evaluating:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def to_bool(self, obj: fx.Proxy) -> bool:
        if self.example_input is None or not _shape_only(obj.node, self.shape_memo):
            return super().to_bool(obj)
        return bool(self._value(obj.node))

    def _value(self, node: fx.Node) -> Any:
        """The value of ``node`` on the example input (its ancestors evaluated in graph order)."""
        if self.saved_buffers is None:
            self.saved_buffers = {k: b.detach().clone() for k, b in self.root.named_buffers()}
        needed, stack = set(), [node]
        while stack:
            n = stack.pop()
            if n not in needed and n not in self.values:
                needed.add(n)
                stack.extend(n.all_input_nodes)
        self.evaluating = True
        try:
            with torch.no_grad():
                for n in self.graph.nodes:
                    if n in needed:
                        self.values[n] = self._evaluate(n)
        finally:
            self.evaluating = False
        return self.values[node]

    def _evaluate(self, n: fx.Node) -> Any:
        args, kwargs = fx.node.map_arg((n.args, n.kwargs), lambda a: self.values[a])
        if n.op == "placeholder":
            first = next(iter(self.graph.nodes))
            return self.example_input if n is first else (n.args[0] if n.args else None)
        if n.op == "get_attr":
            value = self.root
            for atom in str(n.target).split("."):
                value = getattr(value, atom)
            return value
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        if n.op == "call_module":
            return self.root.get_submodule(n.target)(*args, **kwargs)
        raise ValueError(f"cannot evaluate fx node {n.name!r} ({n.op})")

    def restore(self) -> None:
        """Put back the buffers that evaluating on the example input changed; forget values."""
        if self.saved_buffers is not None:
            with torch.no_grad():
                for k, b in self.root.named_buffers():
                    if k in self.saved_buffers:
                        b.copy_(self.saved_buffers[k])
        self.values.clear()
        self.saved_buffers = None


def _symbolic_trace(model: nn.Module, example_input: torch.Tensor | None = None) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule):
        return model  # already traced (e.g. by the bridge): keep its graph and module paths
    tracer = _Tracer(example_input)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # noqa: BLE001 - re-raised with the module path
        where = tracer.current_path or "<top level>"
        raise ValueError(
            f"cannot trace {type(model).__name__} with torch.fx: {exc} (in module {where!r}). "
            "Data-dependent control flow (if/for on tensor values) cannot be traced; make the "
            "branch static or move it into a leaf module."
        ) from exc
    finally:
        tracer.restore()
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def record_shapes(gm: fx.GraphModule, model: nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    """Run one forward pass in eval mode (no BatchNorm statistic changes) and record the output
    shape of every tensor-valued fx node; restore each module's training flag afterwards."""
    modes = {m: m.training for m in model.modules()}
    shapes: dict[str, tuple] = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                shapes[n.name] = tuple(out.shape)
            return out

    try:
        model.eval()
        with torch.no_grad():
            _Recorder(gm).run(x)
    except Exception as exc:  # noqa: BLE001 - a shape problem in the user's input
        raise ValueError(
            f"forward pass of {type(model).__name__} on an example input of shape "
            f"{tuple(x.shape)} failed: {exc}; pass example_input= with a valid input"
        ) from exc
    finally:
        for m, mode in modes.items():
            m.training = mode
    return shapes


def _module_path(node: fx.Node) -> str:
    """Path of the innermost module whose forward made ``node`` (``""``: the top-level forward)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1]
    return path[0] if isinstance(path, tuple) else path


def _where(node: fx.Node) -> str:
    path = _module_path(node)
    return f"module {path!r}" if path else "the top-level forward"


def _op_name(node: fx.Node) -> str:
    target = node.target
    if node.op == "call_method":
        return f"Tensor.{target}"
    return getattr(target, "__name__", str(target))


def _group_name(node: fx.Node, op: str) -> str:
    """Name of a group made by an add or cat: ``"<module path>.<op>"``, or the fx node's name at
    the top level."""
    path = _module_path(node)
    return f"{path}.{op}" if path else node.name


def _pair_weight(weight: torch.Tensor, mask: torch.Tensor | None, fold: int) -> np.ndarray:
    """``sum |w|`` over kept taps (and folded columns) per channel pair, float32, chunked so
    no temporary larger than ~4M elements is made."""
    out_dim, cols = weight.shape[:2]
    per_row = max(1, weight[0].numel())
    chunk = max(1, (1 << 22) // per_row)
    result = np.empty((out_dim, cols // fold), dtype=np.float32)
    w = weight.detach()
    for lo in range(0, out_dim, chunk):
        hi = min(out_dim, lo + chunk)
        kept = w[lo:hi].abs()
        if mask is not None:
            kept = torch.where(mask[lo:hi].to(w.device), kept, 0)
        agg = kept.reshape(hi - lo, cols // fold, -1).sum(dim=2, dtype=torch.float32)
        result[lo:hi] = agg.cpu().numpy()
    result.flags.writeable = False
    return result


def _numpy_mask(mask: torch.Tensor | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        out = np.ones(shape, dtype=bool)
    else:
        out = np.array(mask.detach().cpu().numpy(), dtype=bool, copy=True)
    out.flags.writeable = False
    return out


class _Walker:
    """One walk over the fx graph, building groups and blocks (see the module docstring).

    Every call node is dispatched once, by its rule (:data:`_RULES`), to the handler of that rule
    in :attr:`_HANDLERS`; a handler gets the node and its activation arguments as
    ``(fx node, _Value)`` pairs.
    """

    def __init__(self, gm: fx.GraphModule, shapes: dict[str, tuple], masks: dict[str, torch.Tensor],
                 weight_names: dict[int, str], root: nn.Module | None = None) -> None:
        self.gm = gm
        self.root = gm if root is None else root  # the model: owns modules called functionally
        self.shapes = shapes
        self.masks = masks
        self.weight_names = weight_names
        self.modules = dict(gm.named_modules())
        self.groups: list[_Group] = []
        self.blocks: list[tuple[EdgeBlock, int, int]] = []  # (block, src gid, dst gid)
        self.values: dict[str, _Value] = {}
        self.sums: list[_Sum] = []
        self.block_names: dict[str, int] = {}
        self.group_names: set[str] = set()
        self.containers: dict[str, list[_Value]] = {}  # tuple / named tuple outputs
        self.splits: dict[str, tuple] = {}  # split node -> (value, ranges, piece template)
        self.scores: dict[str, tuple[_Value, ...]] = {}  # attention weights -> their q and k
        self.tuples: dict[str, list[_Value | None]] = {}  # module outputs read by index (MHA)
        self.token_mixing: list[str] = []  # Linear layers applied to the token axis (aliases)

    # ----------------------------------------------------------------- helpers
    def _new_group(self, name: str, size: int | None, shape: tuple, role: str, node: str) -> int:
        base, k = name, 1
        while name in self.group_names:
            name = f"{base}#{k}"
            k += 1
        self.group_names.add(name)
        self.groups.append(_Group(name, size, shape, role, nodes=[node]))
        return len(self.groups) - 1

    def _block_name(self, name: str) -> str:
        k = self.block_names.get(name, 0)
        self.block_names[name] = k + 1
        return name if k == 0 else f"{name}#{k}"

    def _activations(self, node: fx.Node) -> list[tuple[fx.Node, _Value]]:
        flat: list[Any] = []
        fx.node.map_arg((node.args, node.kwargs), flat.append)
        return [(n, self.values[n.name]) for n in flat if n.name in self.values]

    def _fail(self, node: fx.Node, why: str) -> ValueError:
        return ValueError(f"unsupported op {_op_name(node)!r} in {_where(node)}: {why}")

    def _one(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> _Value:
        if len(acts) != 1:
            raise self._fail(node, f"expected one activation input, got {len(acts)}")
        return acts[0][1]

    def _alias(self, node: fx.Node, value: _Value) -> None:
        self.values[node.name] = value
        self.groups[value.gid].nodes.append(node.name)

    def _use(self, value: _Value) -> None:
        self.groups[value.gid].uses += 1

    def _shape(self, node: fx.Node) -> tuple:
        return self.shapes.get(node.name, ())

    def _in_shape(self, node: fx.Node) -> tuple:
        arg = node.args[0] if node.args else None
        return self.shapes.get(arg.name, ()) if isinstance(arg, fx.Node) else ()

    def _group_shape(self, node: fx.Node, axis: int) -> tuple[int, ...]:
        """Per-sample shape of a new group's activation, channel axis first."""
        shape = list(self._shape(node))
        if len(shape) > 1 and 0 < axis < len(shape):
            shape.insert(1, shape.pop(axis))
        return tuple(shape[1:])

    # ----------------------------------------------------------------- walk
    def run(self) -> _Walk:
        output = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if node.name not in self.shapes and node.args:
                    continue  # an optional input left at its non-tensor default (attn_mask=None)
                if any(g.role == "input" for g in self.groups):
                    raise ValueError(
                        f"model takes more than one input ({node.name!r}); n2ngraph traces "
                        "single-input models"
                    )
                gid = self._new_group("input", None, tuple(self._shape(node)[1:]), "input", node.name)
                self.values[node.name] = _Value(gid)
            elif node.op == "call_module":
                self._call_module(node)
            elif node.op in ("call_function", "call_method"):
                self._call_function(node)
            elif node.op == "output":
                output = self._outputs(node)
        if not output:
            raise ValueError("the traced model has no output activation")
        return _Walk(self.groups, self.blocks, self.sums, output, tuple(self.token_mixing))

    def _outputs(self, node: fx.Node) -> tuple[int, ...]:
        """Groups of every returned activation (tuples and named tuples included), in order."""
        flat: list[Any] = []
        fx.node.map_arg((node.args, node.kwargs), flat.append)
        values: list[_Value] = []
        for n in flat:
            values += [self.values[n.name]] if n.name in self.values else self.containers.get(n.name, [])
        for value in values:
            if value.fold != 1 and len(values) > 1:
                raise ValueError("a model with several outputs returns a flattened conv activation")
            self._use(value)
        return tuple(dict.fromkeys(v.gid for v in values))

    def _call_module(self, node: fx.Node) -> None:
        module = self.modules[node.target]
        rule = _module_rule(module)
        if rule != "skip" and self._on_scores(node):
            return
        if rule != "skip" and not self._activations(node):
            return  # applied to constants (a parametrized weight, Swin v2's position-bias MLP)
        if rule is None:
            raise ValueError(
                f"unsupported module {type(module).__name__} at {node.target!r}: n2ngraph "
                "knows Linear, Conv2d, BatchNorm, activations, pooling, dropout and flatten"
            )
        acts = self._activations(node)
        if rule not in ("skip", "multihead_attention"):
            self._one(node, acts)  # every module but a skip and attention reads one activation
        self._check_split_axis(node, rule, acts)
        self._HANDLERS[rule](self, node, acts)

    def _call_function(self, node: fx.Node) -> None:
        target = node.target
        if target is operator.getitem and isinstance(node.args[0], fx.Node) and node.args[0].name in self.splits:
            self._piece(node, node.args[0])
            return
        if target is operator.getitem and isinstance(node.args[0], fx.Node) and node.args[0].name in self.tuples:
            item = self.tuples[node.args[0].name][node.args[1]]
            if item is not None:
                self._alias(node, item)
            elif node.users:
                raise self._fail(node, "the attention weights MultiheadAttention returns "
                                 "(need_weights=True) are used; n2ngraph traces its output only")
            return
        if self._on_scores(node):
            return
        acts = self._activations(node)
        if not acts:
            return  # shapes, sizes, constants: not activations
        if _function_rule(node) == "split":
            self._split(node, acts)
            return
        if node.name not in self.shapes:
            if target in (getattr, operator.getitem) or (node.op == "call_method" and target in ("size", "dim")):
                return  # x.size(), x.shape, x.dim(): metadata only
            if isinstance(target, type) and issubclass(target, tuple):
                self.containers[node.name] = [v for _, v in acts]  # a named tuple of outputs
                return
            raise self._fail(node, "its output is not a tensor")
        rule = _function_rule(node)
        if rule is None:
            raise self._fail(node, "n2ngraph knows weight layers, channel-keeping ops, reshapes "
                             "and permutes that keep the channel axis, residual adds, gates and "
                             "channel concatenation")
        self._check_split_axis(node, rule, acts)
        self._HANDLERS[rule](self, node, acts)

    def _check_split_axis(self, node: fx.Node, rule: str, acts: list[tuple[fx.Node, _Value]]) -> None:
        if len(acts) == 1 and rule in ("add", "mul"):
            return  # times or plus a constant (q * scale) whatever the layout
        if rule in ("add", "mul", "reduce") and acts and acts[0][1].sub and all(
                v.sub == acts[0][1].sub and not v.batch for _, v in acts):
            return  # element-wise on one split layout (SKNet's paths times their weights), or a
            # sum over the paths (:meth:`_reduce`)
        if rule not in ("alias", "reshape", "permute", "split", "index", "attention", "pad", "product",
                        "roll") and any(
                v.sub for _, v in acts):
            raise self._fail(node, "its input has the channel axis split into several axes; only "
                             "element-wise ops, permutes, q/k/v unbinding, attention and a reshape "
                             "joining them back are supported")
        if rule not in ("alias", "permute", "split", "index") and any(v.batch for _, v in acts):
            raise self._fail(node, "its input has the batch axis moved")

    # -------------------------------------------------------------- op rules
    def _on_alias(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        self._alias(node, acts[0][1])

    def _on_add(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        if len({v for _, v in acts}) == 1:
            self._alias(node, acts[0][1])  # plus a constant, or plus its own group
        else:
            self._add(node, [v for _, v in acts], "sub" if "sub" in _op_name(node) else "add")

    def _on_mul(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        if len({v for _, v in acts}) == 1:
            self._alias(node, acts[0][1])  # times a constant or its own group (x * sigmoid(x))
        elif "div" in _op_name(node):
            raise self._fail(node, "a quotient of activations of different groups has no place "
                             "in the graph semantics (docs/design.md)")
        else:
            self._add(node, [v for _, v in acts], "mul")

    def _skip(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """A marked skip module called as ``skip(a_src, z_dst)`` (``n2ngraph.bridge``): its output
        replaces ``z_dst``, so it aliases the destination group and adds one block."""
        module = self.modules[node.target]
        if len(acts) != 2:
            raise self._fail(node, f"skip module {node.target!r} must be called as skip(a, z)")
        (_, src), (_, dst) = acts
        kind = getattr(module, SKIP_MARKER)
        mask = pair = None
        if kind != "residual":
            if callable(getattr(module, "n2ngraph_mask", None)):  # compact (kept pairs only)
                mask = np.array(module.n2ngraph_mask(), dtype=bool)
                pair = np.array(module.n2ngraph_pair_weight(), dtype=np.float32)
                mask.flags.writeable = pair.flags.writeable = False
            else:  # a dense ``weight`` with a bool ``mask`` buffer
                mask = _numpy_mask(module.mask, tuple(module.weight.shape))
                pair = _pair_weight(module.weight, module.mask.to(torch.bool), 1)
        block = EdgeBlock(self._block_name(module.n2ngraph_block_name), "", "", kind, mask, pair,
                          offset=int(getattr(module, "n2ngraph_offset", 0)),
                          spec=LayerSpec.from_dict(getattr(module, "n2ngraph_spec", {})))
        self.blocks.append((block, src.gid, dst.gid))
        self._alias(node, dst)

    def _weight_layer(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """A Linear / Conv2d: checks its input (:meth:`_input_fold`), then a new group and a
        ``sequential`` block with the layer's spec (:func:`_layer_spec`) and mask
        (:meth:`_layer_mask`)."""
        value = self._one(node, acts)
        module = self.modules[node.target]
        path = str(node.target)
        weight = weight_of(module)
        linear = isinstance(module, nn.Linear) or weight.dim() == 2
        if linear and self._token_mixing(node, value):
            self.token_mixing.append(path)
            self._alias(node, value)
            return
        fold = self._input_fold(node, linear, weight, value)
        spec, conv_groups = _layer_spec(module, path, linear)
        mask, pair = self._layer_mask(module, weight, fold)
        self._use(value)
        axis = len(self._shape(node)) - 1 if linear else 1  # a Linear writes its last axis
        gid = self._new_group(path, int(weight.shape[0]), self._group_shape(node, axis), "layer", node.name)
        block = EdgeBlock(self._block_name(path), "", "", "sequential", mask, pair, conv_groups=conv_groups,
                          fold=fold, spec=spec)
        self.blocks.append((block, value.gid, gid))
        self.values[node.name] = _Value(gid, 1, axis)

    def _token_mixing(self, node: fx.Node, value: _Value) -> bool:
        """A Linear on the last axis of a ``(batch, channels, tokens)`` activation mixes tokens
        (MLP-Mixer): every channel keeps its own values, so the layer aliases the group
        (docs/design.md, "Tokens"); the trace lists it in ``provenance["token_mixing"]``."""
        in_shape = self.shapes.get(node.args[0].name, ())
        return (len(in_shape) == 3 and value.axis == 1 and value.fold == 1 and not value.sub
                and not value.batch and self.groups[value.gid].size is not None)

    def _linear_of(self, node: fx.Node, arg: Any) -> tuple[str, nn.Module]:
        """The Linear module whose weight a functional call reads (a ``get_attr`` node, or the
        parametrization of a masked weight: ``<path>.parametrizations.weight``)."""
        target = str(getattr(arg, "target", ""))
        if isinstance(arg, fx.Node) and arg.op == "call_module" and target.endswith(".parametrizations.weight"):
            target = target[: -len(".parametrizations.weight")] + ".weight"
        elif not (isinstance(arg, fx.Node) and arg.op == "get_attr" and target.endswith(".weight")):
            raise self._fail(node, f"its weight argument {arg} is not a module's weight")
        path = target[: -len(".weight")]
        try:
            module = self.root.get_submodule(path)
        except AttributeError:
            module = None
        if not isinstance(module, nn.Linear):
            raise self._fail(node, f"its weight {target!r} is not a Linear layer's")
        return path, module

    def _linear_block(self, node: fx.Node, path: str, module: nn.Linear, src: int, size: int,
                      shape: tuple[int, ...]) -> int:
        """A ``sequential`` block of a Linear called functionally; returns its new group."""
        return self._projection(node, path, weight_of(module), src, size, shape)

    def _projection(self, node: fx.Node, path: str, weight: torch.Tensor, src: int, size: int,
                    shape: tuple[int, ...]) -> int:
        """A ``sequential`` block of an ``(out, in)`` weight applied to the last axis of group
        ``src``'s activation, named by ``path`` (a Linear's module path, or a fused weight's
        name: :func:`n2ngraph.masks.weight_name`); returns its new group."""
        if self.groups[src].size != weight.shape[1]:
            raise self._fail(node, f"Linear {path!r} takes {weight.shape[1]} features, its input "
                             f"group {self.groups[src].name!r} has {self.groups[src].size}")
        mask_t = self.masks.get(weight_name(path))
        mask = _numpy_mask(mask_t, tuple(weight.shape))
        pair = _pair_weight(weight, None if mask_t is None else mask_t.to(torch.bool), 1)
        self._use(self._value_of(src))
        gid = self._new_group(path, size, shape, "layer", node.name)
        spec = LayerSpec(op="Linear", module=path)
        self.blocks.append((EdgeBlock(self._block_name(path), "", "", "sequential", mask, pair, spec=spec),
                            src, gid))
        return gid

    def _multihead_attention(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """``nn.MultiheadAttention(query, key, value)``, a leaf module, on ``(..., E)`` activations
        whose features lie on the last axis (docs/design.md, "Tokens"): the q, k and v
        projections, attention over them (:meth:`_attention_group`, head by head) and the
        ``out_proj`` Linear. With one ``in_proj_weight`` (``(3E, E)``, rows q | k | v) read from
        one input (self-attention) the projection is one weight layer into a ``3E`` group and q,
        k, v are its channel ranges, as for a fused ``qkv`` Linear; with ``q_proj_weight`` /
        ``k_proj_weight`` / ``v_proj_weight`` each is a weight layer from its own input. The
        returned attention weights (``need_weights``) may be returned unused only."""
        module = self.modules[node.target]
        path = str(node.target)
        keys = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
        args = dict(zip(keys, node.args))
        args.update(node.kwargs)
        inputs = [args.get(k) for k in keys[:3]]
        values = [self.values.get(n.name) if isinstance(n, fx.Node) else None for n in inputs]
        if any(v is None for v in values):
            raise self._fail(node, "MultiheadAttention's query, key and value must be activations")
        for k in ("key_padding_mask", "attn_mask"):
            if any(n.name in self.values for n in getattr(args.get(k), "all_input_nodes", [])) or (
                    isinstance(args.get(k), fx.Node) and args[k].name in self.values):
                raise self._fail(node, f"its {k} is computed from activations")
        for n, v in zip(inputs, values):
            if v.fold != 1 or v.sub or v.axis != len(self.shapes[n.name]) - 1:
                raise self._fail(node, f"{n.name!r} of shape {self.shapes[n.name]} does not hold its "
                                 "features on the last axis (batch, tokens, features)")
        width = int(module.embed_dim)
        q_shape = self.shapes[inputs[0].name]
        batch = 0 if getattr(module, "batch_first", False) or len(q_shape) == 2 else 1
        shape = (width, *(s for i, s in enumerate(q_shape[:-1]) if i != batch))
        fused = getattr(module, "_qkv_same_embed_dim", True) and _fused_weight(module, "in_proj_weight") is not None
        if fused:
            if len({v.gid for v in values}) != 1:
                raise self._fail(node, "query, key and value are different activations but "
                                 "MultiheadAttention projects them with one fused in_proj_weight; "
                                 "n2ngraph traces a fused projection of one input (self-attention)")
            name = f"{path}.in_proj_weight"
            big = _Value(self._projection(node, name, _fused_weight(module, "in_proj_weight"), values[0].gid,
                                          3 * width, (3 * width, *shape[1:])), 1, len(q_shape) - 1)
            parts = [self._channel_range(node, big, k * width, (k + 1) * width, name=f"{path}.{part}",
                                         shape=shape) for k, part in enumerate("qkv")]
        else:
            parts = [_Value(self._projection(node, f"{path}.{part}_proj_weight",
                                             _fused_weight(module, f"{part}_proj_weight"), v.gid, width,
                                             (width, *shape[1:]))) for part, v in zip("qkv", values)]
        att = self._attention_group(node, f"{path}.attention", parts, shape)
        self._inside([*({v.gid for v in parts} | ({big.gid} if fused else set())), att])
        out = self._projection(node, f"{path}.out_proj", weight_of(module.out_proj), att, width, shape)
        self.tuples[node.name] = [dataclasses.replace(values[0], gid=out), None]

    def _value_of(self, gid: int) -> _Value:
        return _Value(gid)

    def _attention_group(self, node: fx.Node, name: str, qkv: list[_Value], shape: tuple[int, ...]) -> int:
        """The output of attention over ``q``, ``k`` and ``v`` groups of one width: channel ``i``
        joined from ``q_i``, ``k_i`` and ``v_i`` (docs/design.md, "Tokens": attention keeps v's
        features head by head; q and k join like a gate)."""
        sizes = {self.groups[v.gid].size for v in qkv}
        if len(sizes) != 1 or any(v.fold != 1 for v in qkv):
            raise self._fail(node, "attention over q, k and v of different widths "
                             f"({[(self.groups[v.gid].name, self.groups[v.gid].size) for v in qkv]})")
        gid = self._new_group(name, sizes.pop(), shape, "sum", node.name)
        for v in qkv:
            self._use(v)
        for part, v in dict(zip("qkv", qkv)).items():
            if any(w.gid == v.gid for w in qkv[: "qkv".index(part)]):
                continue  # self-attention on one group: one join
            block = EdgeBlock(self._block_name(f"{name}.{part}"), "", "", "residual",
                              spec=LayerSpec(op="attention"))
            self.blocks.append((block, v.gid, gid))
        return gid

    def _on_scores(self, node: fx.Node) -> bool:
        """Ops on attention weights (:meth:`_product` of q and k): softmax, dropout, scaling, a
        bias or mask added, permutes and reshapes keep them attention weights; their product
        with v is attention. Returns whether ``node`` read attention weights."""
        flat: list[Any] = []
        fx.node.map_arg((node.args, node.kwargs), flat.append)
        sources = [self.scores[n.name] for n in flat if n.name in self.scores]
        if not sources:
            return False
        acts = self._activations(node)
        rule = _module_rule(self.modules[node.target]) if node.op == "call_module" else _function_rule(node)
        if rule == "product" and len(sources) == 1 and len(acts) == 1:
            self._product(node, acts)
            return True
        if acts or rule not in ("alias", "add", "mul", "reshape", "permute", "index", "pad"):
            raise self._fail(node, "attention weights (softmax(q k^T)) may only be scaled, biased, "
                             "masked, normalised, reshaped or multiplied with v")
        self.scores[node.name] = tuple(v for src in sources for v in src)
        return True

    @staticmethod
    def _channel_axes(value: _Value) -> list[int]:
        """Tensor axes of a value's channels, most significant first."""
        return [a for a, _ in value.sub] if value.sub else [value.axis]

    def _product(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """``matmul`` / ``einsum`` in attention: ``q k^T`` (both operands' innermost channel axis
        contracted) gives attention weights; weights times v (v's channel axes kept) gives an
        attention group shaped like v; anything else is refused."""
        sources = [self.scores[n.name] for n in node.all_input_nodes if n.name in self.scores]
        nodes = [n for n, _ in acts]
        if "einsum" in _op_name(node):
            eq = node.args[0].replace(" ", "")
            ins, out = eq.split("->")
            operands = [a for a in (node.args[1:] if not isinstance(node.args[1], (list, tuple)) else node.args[1])]
            letters = dict(zip([o.name for o in operands if isinstance(o, fx.Node)], ins.split(",")))
        else:
            out = None
        if not sources and len(acts) == 2:  # q k^T
            (qn, q), (kn, k) = acts
            if out is not None:
                lq, lk = letters[qn.name], letters[kn.name]
                inner_q, inner_k = lq[self._channel_axes(q)[-1]], lk[self._channel_axes(k)[-1]]
                ok = inner_q == inner_k and inner_q not in out
            else:
                ok = (self._channel_axes(q)[-1] == len(self.shapes[qn.name]) - 1
                      and self._channel_axes(k)[-1] == len(self.shapes[kn.name]) - 2)
            if ok and q.fold == k.fold == 1:
                self.scores[node.name] = (q, k)
                return
        elif len(sources) == 1 and len(acts) == 1:  # weights v
            (vn, v) = acts[0]
            axes = self._channel_axes(v)
            if out is not None:
                lv = letters[vn.name]
                if all(lv[a] in out for a in axes) and lv[v.batch] in out:
                    place = {a: out.index(lv[a]) for a in axes + [v.batch]}
                    sub = tuple((place[a], n) for a, n in v.sub) if v.sub else None
                    v = _Value(v.gid, 1, place[v.axis] if not v.sub else v.axis, sub, place[v.batch])
                    self._attend(node, sources[0], v)
                    return
            elif axes[-1] == len(self.shapes[vn.name]) - 1 and nodes[0] is node.args[1]:
                self._attend(node, sources[0], v)
                return
        raise self._fail(node, "only q k^T (attention weights) and weights times v are supported")

    def _attend(self, node: fx.Node, qk: tuple[_Value, ...], v: _Value) -> None:
        axis = v.sub[0][0] if v.sub else v.axis
        gid = self._attention_group(node, _group_name(node, "attention"), [*qk, v], self._group_shape(node, axis))
        self.values[node.name] = dataclasses.replace(v, gid=gid)

    def _on_attention(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """``F.scaled_dot_product_attention(q, k, v, ...)``: an attention group shaped like v."""
        args = dict(zip(("query", "key", "value"), node.args))
        args.update(node.kwargs)
        qkv = [self.values.get(args[k].name) if isinstance(args.get(k), fx.Node) else None
               for k in ("query", "key", "value")]
        if any(v is None for v in qkv):
            raise self._fail(node, "q, k and v must be activations")
        v = qkv[2]
        axis = v.sub[0][0] if v.sub else v.axis
        gid = self._attention_group(node, _group_name(node, "attention"), qkv, self._group_shape(node, axis))
        self.values[node.name] = dataclasses.replace(v, gid=gid)

    def _pad(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """``F.pad`` of axes other than the channel axis (padding tokens or pixels) aliases."""
        value = self._one(node, acts)
        ndim = len(self._in_shape(node))
        pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        if not isinstance(pad, (list, tuple)):
            raise self._fail(node, f"cannot read the padding {pad}")
        axes = [a for a, _ in value.sub] if value.sub else [value.axis]
        padded = {ndim - 1 - k // 2 for k, p in enumerate(pad) if not (isinstance(p, int) and p == 0)}
        if padded & set(axes) or 0 in padded:
            raise self._fail(node, f"padding {pad} pads the channel or batch axis")
        self._alias(node, value)

    def _roll(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """``torch.roll`` of axes other than the channel and batch axes (a cyclic shift of
        windows) aliases."""
        value = self._one(node, acts)
        ndim = len(self._in_shape(node))
        dims = node.kwargs.get("dims", node.args[2] if len(node.args) > 2 else None)
        dims = [dims] if isinstance(dims, int) else dims
        if not isinstance(dims, (list, tuple)) or not all(isinstance(d, int) for d in dims) or (
                {d % ndim for d in dims} & {value.batch, *self._channel_axes(value)}):
            raise self._fail(node, f"roll over dims {dims} (a flattened roll, or one of the channel "
                             "or batch axis)")
        self._alias(node, value)

    def _patch_merge(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """torchvision Swin's ``_patch_merging_pad``: the four 2 x 2 neighbours of a channels-last
        tensor concatenated along channels (``4C``): a concatenation of the group four times."""
        value = self._one(node, acts)
        in_shape, out_shape = self._in_shape(node), self._shape(node)
        last = len(in_shape) - 1
        if value.fold != 1 or value.sub or value.axis != last or out_shape[-1] != 4 * in_shape[-1]:
            raise self._fail(node, f"expected a channels-last activation and 4x its channels, got "
                             f"{in_shape} -> {out_shape}")
        self._concat(node, [value] * 4, last)

    def _window_attention(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """torchvision's ``shifted_window_attention(x, qkv_weight, proj_weight, ...)`` on a
        channels-last ``(B, H, W, C)`` tensor: the ``qkv`` Linear (``3C`` channels), attention
        (:meth:`_attention_group`), the ``proj`` Linear; windows, shifts and padding move tokens
        only."""
        value = self._one(node, acts)
        in_shape = self._in_shape(node)
        if value.fold != 1 or value.sub or value.axis != len(in_shape) - 1:
            raise self._fail(node, "expected a channels-last (B, H, W, C) activation")
        args = dict(zip(("input", "qkv_weight", "proj_weight"), node.args))
        args.update(node.kwargs)
        qkv_path, qkv = self._linear_of(node, args.get("qkv_weight"))
        proj_path, proj = self._linear_of(node, args.get("proj_weight"))
        width = proj.weight.shape[0]
        if qkv.weight.shape[0] != 3 * width or proj.weight.shape[1] != width:
            raise self._fail(node, f"qkv {tuple(qkv.weight.shape)} and proj {tuple(proj.weight.shape)} "
                             "are not a fused q | k | v projection and its output projection")
        spatial = tuple(in_shape[1:-1])
        fused = _Value(self._linear_block(node, qkv_path, qkv, value.gid, 3 * width, (3 * width, *spatial)))
        parts = [self._channel_range(node, fused, k * width, (k + 1) * width, name=_group_name(node, part),
                                     shape=(width, *spatial)) for k, part in enumerate("qkv")]
        att = self._attention_group(node, _group_name(node, "attention"), parts, (width, *spatial))
        self._inside([fused.gid, *(v.gid for v in parts), att])
        out = self._linear_block(node, proj_path, proj, att, width, (width, *spatial))
        self.values[node.name] = _Value(out, 1, len(in_shape) - 1)

    def _inside(self, gids: list[int]) -> None:
        """Mark groups computed inside one fused call (q, k, v and attention of a fused
        attention op): they have no fx node of their own (:attr:`Trace.group_nodes` lists none),
        so nothing outside can read or replace their activation."""
        for gid in gids:
            self.groups[gid].nodes.clear()

    def _input_fold(self, node: fx.Node, linear: bool, weight: torch.Tensor, value: _Value) -> int:
        """Check that a weight layer can read its input activation and return the fold: input
        columns per source node (``h * w`` for a Linear after a flatten of channels, else 1).
        The network input, still without a size, takes the layer's input width."""
        group = self.groups[value.gid]
        in_shape = self.shapes.get(node.args[0].name, ())
        path = str(node.target)
        fold = value.fold
        if linear:
            in_features = weight.shape[1]
            if len(in_shape) < 2 or (len(in_shape) > 2 and value.axis != len(in_shape) - 1):
                raise ValueError(
                    f"Linear {path!r} is applied to the last axis of an activation of shape "
                    f"{in_shape} whose nodes (group {group.name!r}) lie on axis {value.axis}; "
                    "n2ngraph supports Linear layers on the feature or channel axis (token-mixing "
                    "Linear layers are not supported)"
                )
            if group.role == "input" and group.size is None:
                group.size, fold = in_features, 1
            if group.size * fold != in_features:
                if group.role == "input" and group.size == in_features:
                    fold = 1
                else:
                    raise ValueError(
                        f"Linear {path!r} has {in_features} inputs, but its input activation "
                        f"{group.name!r} has {group.size} nodes x fold {fold}"
                    )
            return fold
        if fold != 1 or len(in_shape) != 4 or value.axis != 1:
            raise ValueError(
                f"Conv2d {path!r} is applied to an activation of shape {in_shape}; expected "
                "(batch, channels, height, width) from a channel group"
            )
        in_channels = in_shape[1]
        if group.role == "input" and group.size is None:
            group.size = in_channels
        if group.size != in_channels:
            raise ValueError(
                f"Conv2d {path!r} takes {in_channels} channels but group {group.name!r} has "
                f"{group.size} nodes (a reshape of neurons into channels is not supported)"
            )
        return fold

    def _layer_mask(self, module: nn.Module, weight: torch.Tensor,
                    fold: int) -> tuple[np.ndarray, np.ndarray]:
        """The layer's weight-shaped bool mask (all kept without one) and its pair weights."""
        pname = self.weight_names.get(id(module))
        mask_t = self.masks.get(pname) if pname else None
        mask = _numpy_mask(mask_t, tuple(weight.shape))
        pair = _pair_weight(weight, None if mask_t is None else mask_t.to(torch.bool), fold)
        return mask, pair

    def _reshape(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """A reshape keeps the group when the channel axis survives whole (the axes before it and
        after it are regrouped among themselves); a batch flatten of ``(B, C, h, w)`` folds."""
        if _op_name(node).endswith("_as"):
            acts = acts[:1]  # x.reshape_as(y): y lends a shape only
        value = self._one(node, acts)
        in_shape = self._in_shape(node)
        out_shape = self._shape(node)
        if in_shape == out_shape:
            self._alias(node, value)
            return
        group = self.groups[value.gid]
        if value.sub:
            self._join_channel_axes(node, value, in_shape, out_shape)
            return
        axis = value.axis
        if value.fold == 1 and 0 < axis < len(in_shape) and out_shape:
            before = math.prod(in_shape[:axis])
            for b in range(1, len(out_shape)):
                if math.prod(out_shape[:b]) != before:
                    continue
                if out_shape[b] == in_shape[axis]:  # the axes before it may merge the batch
                    self._alias(node, _Value(value.gid, 1, b))  # with tokens (LeViT's BatchNorm)
                    return
                if out_shape[0] != in_shape[0]:
                    continue
                for k in range(2, len(out_shape) - b + 1):  # the channel axis split in k axes
                    if math.prod(out_shape[b:b + k]) == in_shape[axis] and out_shape[b] > 1:
                        sub = tuple((b + i, out_shape[b + i]) for i in range(k))
                        self._alias(node, _Value(value.gid, 1, b, sub))
                        return
        if self._merge_into_channels(node, value, in_shape, out_shape):
            return
        if len(out_shape) == 2 and len(in_shape) >= 2 and out_shape[0] == in_shape[0]:
            if group.role == "input":
                self._alias(node, value)  # the input takes its first layer's granularity
                return
            if len(in_shape) > 2 and value.fold == 1 and axis == 1:
                self._alias(node, _Value(value.gid, math.prod(in_shape[2:])))
                return
        raise self._fail(node, f"reshape from {in_shape} to {out_shape} (nodes of group "
                         f"{group.name!r} on axis {axis}) does not keep the channel axis whole")

    #: At most this many copies of a group when a reshape merges other axes into its channel axis.
    _MAX_COPIES = 64

    def _merge_into_channels(self, node: fx.Node, value: _Value, in_shape: tuple, out_shape: tuple) -> bool:
        """A reshape merging the channel axis with neighbouring non-batch axes into one axis of
        ``m * C`` channels, in a tensor that keeps more than two axes (Swin's patch merging
        ``(B, h, w, 2, 2, C) -> (B, h, w, 4C)``): a concatenation of ``m`` copies of the group,
        copy ``p`` of channel ``c`` at the position the reshape gives it (``residual`` blocks
        with ``index``, ``spec.op="concat"``). Returns False when the reshape is not one."""
        axis, size = value.axis, self.groups[value.gid].size
        if size is None or value.fold != 1 or value.sub or len(out_shape) <= 2 or out_shape[0] != in_shape[0]:
            return False
        for lo in range(1, axis + 1):
            for hi in range(axis + 1, len(in_shape) + 1):
                merged = math.prod(in_shape[lo:hi])
                b = len(in_shape[:lo]) if tuple(out_shape[:lo]) == tuple(in_shape[:lo]) else None
                if b is None or b >= len(out_shape) or out_shape[b] != merged or merged == size:
                    continue
                if tuple(out_shape[b + 1:]) != tuple(in_shape[hi:]) or merged // size > self._MAX_COPIES:
                    continue
                dims = in_shape[lo:hi]
                k = axis - lo  # position of the channel axis among the merged ones
                others = [d for i, d in enumerate(dims) if i != k]
                gid = self._new_group(_group_name(node, "cat"), merged, self._group_shape(node, b), "cat", node.name)
                self._use(value)
                for p in range(math.prod(others)):
                    digits = list(np.unravel_index(p, others)) if others else []
                    digits.insert(k, np.arange(size))
                    index = np.ravel_multi_index(tuple(np.broadcast_arrays(*digits)), dims).astype(np.int64)
                    block = EdgeBlock(self._block_name(f"{self.groups[gid].name}.in{p}"), "", "", "residual",
                                      spec=LayerSpec(op="concat"), index=index)
                    self.blocks.append((block, value.gid, gid))
                self.values[node.name] = _Value(gid, 1, b)
                return True
        return False

    def _join_channel_axes(self, node: fx.Node, value: _Value, in_shape: tuple, out_shape: tuple) -> None:
        """A reshape joining the split channel axes back into one: the channels come out in the
        order of the axes' layout; unless that is the original order, a new group joined from
        the original by a permutation (``residual`` block with ``index``, ``spec.op="shuffle"``)."""
        axes = [a for a, _ in value.sub]
        layout = sorted(range(len(axes)), key=lambda i: axes[i])
        first = axes[layout[0]]
        size = self.groups[value.gid].size
        if [axes[i] for i in layout] != list(range(first, first + len(axes))):
            raise self._fail(node, f"the channel axes {axes} of {in_shape} are not adjacent")
        b = next((b for b in range(1, len(out_shape)) if math.prod(out_shape[:b]) == math.prod(in_shape[:first])
                  and out_shape[b] == size), None)
        if b is None or out_shape[0] != in_shape[0]:
            raise self._fail(node, f"reshape from {in_shape} to {out_shape} does not join the "
                             "split channel axes back into one")
        sizes = [n for _, n in value.sub]
        digits = np.unravel_index(np.arange(size), sizes)  # of each channel, most significant first
        new = np.ravel_multi_index(tuple(digits[i] for i in layout), tuple(sizes[i] for i in layout))
        if np.array_equal(new, np.arange(size)):
            self._alias(node, _Value(value.gid, 1, b))
            return
        self._use(value)
        gid = self._new_group(_group_name(node, "shuffle"), size, self._group_shape(node, b), "shuffle", node.name)
        block = EdgeBlock(self._block_name(self.groups[gid].name), "", "", "residual",
                          spec=LayerSpec(op="shuffle"), index=new.astype(np.int64))
        self.blocks.append((block, value.gid, gid))
        self.values[node.name] = _Value(gid, 1, b)

    def _index(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """``x[...]`` that keeps the batch and the channel axis whole (``x[:, 0]`` takes the class
        token of a token sequence): aliases, the channel axis renumbered."""
        value = self._one(node, acts)
        ndim = len(self._in_shape(node))
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        if value.sub:  # qkv[0]: q of a fused q | k | v projection
            picked = [(d, i) for d, i in enumerate(index) if not (isinstance(i, slice) and i == slice(None))]
            if len(picked) != 1 or not isinstance(picked[0][1], int) or Ellipsis in index:
                raise self._fail(node, f"index {index} of a tensor whose channel axis is split")
            value_, ranges, like = self._sub_pieces(node, value, picked[0][0])
            k = picked[0][1] % len(ranges)
            name = _group_name(node, "qkv"[k]) if len(ranges) == 3 else None
            self.values[node.name] = self._channel_range(node, value_, *ranges[k], like, name)
            return
        if sum(i is Ellipsis for i in index) > 1 or value.fold != 1 or not all(
                i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in index):
            raise self._fail(node, f"index {index}")
        if Ellipsis in index:
            k = index.index(Ellipsis)
            rest = len([i for i in index if i is not None and i is not Ellipsis])
            index = index[:k] + (slice(None),) * (ndim - rest) + index[k + 1:]
        axis, dim, new_axis, channels = value.axis, 0, None, None
        out_dim = 0
        for i in index:
            if i is None:
                out_dim += 1
                continue
            full = isinstance(i, slice) and i == slice(None)
            if dim == 0 and not full:
                raise self._fail(node, f"index {index} narrows the batch axis")
            if dim == axis:
                if not full and not (isinstance(i, slice) and i.step in (None, 1)):
                    raise self._fail(node, f"index {index} picks single channels")
                channels = None if full else i.indices(self.groups[value.gid].size)[:2]
                new_axis = out_dim
            if not isinstance(i, int):
                out_dim += 1
            dim += 1
        if new_axis is None:
            new_axis = out_dim + (axis - dim)  # the channel axis lies after the indexed ones
        value = _Value(value.gid, 1, new_axis)
        if channels is not None and channels != (0, self.groups[value.gid].size):
            self.values[node.name] = self._channel_range(node, value, *channels)
        else:
            self._alias(node, value)

    def _channel_range(self, node: fx.Node, value: _Value, start: int, stop: int,
                       like: _Value | None = None, name: str | None = None,
                       shape: tuple[int, ...] | None = None) -> _Value:
        """A group over channels ``start .. stop - 1`` of ``value``'s group (a slice, a piece of
        a split or chunk): source node ``start + i`` joins node ``i`` through a ``residual``
        block with offset ``-start`` (a node map ``index`` when ``start`` is 0)."""
        if stop <= start:
            raise self._fail(node, f"empty channel range {start}:{stop}")
        self._use(value)
        like = like or _Value(0, 1, value.axis)
        shape = self._group_shape(node, like.axis) if shape is None else shape
        gid = self._new_group(name or _group_name(node, "slice"), stop - start, shape, "slice", node.name)
        size = self.groups[value.gid].size
        index = None
        if start == 0:  # an offset >= 0 must fit whole (concatenation): map the nodes instead
            index = np.where(np.arange(size) < stop, np.arange(size), -1)
        try:
            block = EdgeBlock(self._block_name(self.groups[gid].name), "", "", "residual",
                              offset=-start, spec=LayerSpec(op="slice"), index=index)
        except ValueError as exc:
            raise self._fail(node, f"a channel range {start}:{stop} of group "
                             f"{self.groups[value.gid].name!r} needs a residual block with a negative "
                             f"offset, which this graph version refuses ({exc})") from exc
        self.blocks.append((block, value.gid, gid))
        return dataclasses.replace(like, gid=gid)

    def _split(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """``split`` / ``chunk``: along the channel axis, pieces over channel
        ranges (made when a piece is used, :meth:`_piece`); along another axis, pieces alias."""
        value = self._one(node, acts)
        in_shape = self._in_shape(node)
        name = _op_name(node)
        if "unbind" in name:
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            self.splits[node.name] = self._sub_pieces(node, value, dim)
            return
        how = node.args[1] if len(node.args) > 1 else node.kwargs.get(
            "chunks", node.kwargs.get("split_size_or_sections", node.kwargs.get("split_size")))
        dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
        if not isinstance(dim, int) or value.fold != 1 or not in_shape:
            raise self._fail(node, f"split along {dim}")
        dim %= len(in_shape)
        if dim == 0:
            raise self._fail(node, "a split of the batch axis")
        size = in_shape[dim]
        if "chunk" in name and isinstance(how, int):
            step = -(-size // how)
            sizes = [min(step, size - k) for k in range(0, size, step)]
        elif "split" in name and isinstance(how, int):
            sizes = [min(how, size - k) for k in range(0, size, how)]
        elif "split" in name and isinstance(how, (list, tuple)) and all(isinstance(k, int) for k in how):
            sizes = list(how)
        else:
            raise self._fail(node, f"cannot read the split {how!r}")
        if value.sub:
            raise self._fail(node, "a split of a tensor whose channel axis is split")
        bounds = np.cumsum([0] + sizes).tolist()
        ranges = [(a, b) for a, b in zip(bounds[:-1], bounds[1:])] if dim == value.axis else None
        self.splits[node.name] = (value, ranges, None)

    def _sub_pieces(self, node: fx.Node, value: _Value, dim: Any) -> tuple:
        """Pieces of ``unbind(dim)`` / ``x[k]`` along the most significant of the split channel
        axes (q, k and v of a fused projection): channel ranges, the other split axes kept."""
        if not value.sub or not isinstance(dim, int) or dim % (max(a for a, _ in value.sub) + 1) != value.sub[0][0]:
            raise self._fail(node, f"unbinding axis {dim}; only the leading axis of a split channel "
                             "axis (q | k | v) can be unbound")
        dim = value.sub[0][0]
        parts, size = value.sub[0][1], self.groups[value.gid].size
        width = size // parts
        rest = tuple((a - (a > dim), n) for a, n in value.sub[1:])
        batch = value.batch - (value.batch > dim)
        like = _Value(0, 1, rest[0][0], rest if len(rest) > 1 else None, batch)
        return value, [(k * width, (k + 1) * width) for k in range(parts)], like

    def _piece(self, node: fx.Node, source: fx.Node) -> None:
        """``pieces[k]`` of a split seen by :meth:`_split`."""
        value, ranges, like = self.splits[source.name]
        k = node.args[1]
        if not node.users:
            return  # a piece unpacked and dropped (``a, _ = x.chunk(2, 1)``): no group
        if ranges is None:
            self._alias(node, value)
        else:
            name = _group_name(node, "qkv"[k]) if like is not None and len(ranges) == 3 else None
            self.values[node.name] = self._channel_range(node, value, *ranges[k], like, name)

    def _permute(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """``permute`` / ``transpose`` / ``movedim``: the same group, its channel axis moved."""
        value = self._one(node, acts)
        ndim = len(self._in_shape(node))
        if value.fold != 1:
            raise self._fail(node, "permute of a flattened conv activation")
        args = [a for a in node.args[1:]] + list(node.kwargs.values())
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            args = list(args[0])
        if not all(isinstance(a, int) for a in args):
            raise self._fail(node, f"axes {args} are not constant")
        order = list(range(ndim))
        name = _op_name(node)
        if "permute" in name:
            order = [a % ndim for a in args]
        elif ("transpose" in name or "swap" in name) and len(args) == 2:
            i, j = (a % ndim for a in args)
            order[i], order[j] = order[j], order[i]
        elif "movedim" in name and len(args) == 2:
            src, dst = (a % ndim for a in args)
            order.remove(src)
            order.insert(dst, src)
        else:
            raise self._fail(node, f"cannot read the axes {args}")
        if order[0] != value.batch and not value.sub:
            raise self._fail(node, "the batch axis is moved")
        if value.sub:
            sub = tuple((order.index(a), n) for a, n in value.sub)
            self._alias(node, _Value(value.gid, 1, value.axis, sub, order.index(value.batch)))
        else:
            self._alias(node, _Value(value.gid, 1, order.index(value.axis)))

    def _reduce(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """A mean / max / sum over axes other than the batch and the channel axis (pooling)."""
        value = self._one(node, acts)
        in_shape = self._in_shape(node)
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        dims = [dims] if isinstance(dims, int) else dims
        if value.sub and len(value.sub) == 2 and isinstance(dims, (list, tuple)) and len(dims) == 1 and (
                isinstance(dims[0], int) and dims[0] % len(in_shape) == value.sub[0][0]) and "sum" in _op_name(node):
            self._sum_of_pieces(node, value, bool(keepdim))
            return
        if value.fold == 1 and isinstance(dims, (list, tuple)) and all(isinstance(d, int) for d in dims):
            dims = sorted({d % len(in_shape) for d in dims})
            if 0 not in dims and value.axis not in dims:
                axis = value.axis if keepdim else value.axis - sum(d < value.axis for d in dims)
                self._alias(node, _Value(value.gid, 1, axis))  # pooling over the other axes
                return
        raise self._fail(node, f"reduction over dims {dims} of {in_shape} does not keep the "
                         f"channel axis ({value.axis})")

    def _sum_of_pieces(self, node: fx.Node, value: _Value, keepdim: bool) -> None:
        """A sum over the leading axis of a channel axis split in two (``(B, P, C, ...)`` summed
        over ``P``: SKNet's paths): a sum group of ``C`` channels joined from each of the ``P``
        channel ranges (:meth:`_channel_range`), built like a residual sum."""
        (d, parts), (c_axis, width) = value.sub
        axis = c_axis if keepdim else c_axis - 1
        shape = self._group_shape(node, axis)
        pieces = [self._channel_range(node, value, k * width, (k + 1) * width, _Value(0, 1, axis), shape=shape)
                  for k in range(parts)]
        gid = self._new_group(_group_name(node, "add"), width, shape, "sum", node.name)
        for p in pieces:
            self._use(p)
        self.sums.append(_Sum(gid, tuple(p.gid for p in pieces), "add"))
        self.values[node.name] = _Value(gid, 1, axis)

    def _add(self, node: fx.Node, operands: list[_Value], op: str) -> None:
        """A sum group (``op``: ``"add"``, ``"sub"``, or ``"mul"`` for a gate's product)."""
        sizes = {self.groups[v.gid].size for v in operands}
        axes = {v.axis - len(self.shapes[n.name]) for n, v in self._operand_nodes(node)}
        subs = {v.sub for v in operands}
        if any(v.fold != 1 for v in operands) or len(sizes) != 1 or None in sizes or len(axes) != 1 or (
                len(subs) != 1):
            what = "gate (product)" if op == "mul" else "residual " + op
            raise self._fail(node, f"{what} of activations with different node sets "
                             f"({[(self.groups[v.gid].name, self.groups[v.gid].size) for v in operands]})")
        for v in operands:
            self._use(v)
        axis = len(self._shape(node)) + axes.pop()
        sub = subs.pop()
        shape = self._split_shape(node, sub) if sub else self._group_shape(node, axis)
        gid = self._new_group(_group_name(node, op), sizes.pop(), shape, "sum", node.name)
        self.sums.append(_Sum(gid, tuple(v.gid for v in operands), op))
        self.values[node.name] = _Value(gid, 1, axis, sub)

    def _split_shape(self, node: fx.Node, sub: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
        """Per-sample shape of a group whose channel axis is split over the ``sub`` axes: the
        channels first, then the other non-batch axes."""
        split = {a for a, _ in sub}
        return (math.prod(n for _, n in sub), *(n for a, n in enumerate(self._shape(node)) if a and a not in split))

    def _stack(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        """``torch.stack`` of groups of one width ``C`` on a new axis before their channel axis
        (``(B, P, C, h, w)``): a concatenation of the ``P`` groups (channel ``p * C + c``),
        joined channel to channel as a ``cat`` is, whose channel axis is split into ``(P, C)``."""
        operands = [v for _, v in acts]
        ndim = len(self._shape(node))
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if not isinstance(dim, int) or not operands:
            raise self._fail(node, f"stack along {dim}")
        dim %= ndim
        axes = {v.axis for v in operands}
        sizes = {self.groups[v.gid].size for v in operands}
        if (len(axes) != 1 or len(sizes) != 1 or None in sizes or any(v.fold != 1 or v.sub or v.batch for v in operands)
                or not 0 < dim <= min(axes)):
            raise self._fail(node, "only groups of one width stacked on a new axis between the batch "
                             "and the channel axis are supported")
        axis = axes.pop() + 1
        sub = ((dim, len(operands)), (axis, sizes.pop()))
        self._concat(node, operands, axis, shape=self._split_shape(node, sub))
        self.values[node.name] = _Value(self.values[node.name].gid, 1, dim, sub)

    def _operand_nodes(self, node: fx.Node) -> list[tuple[fx.Node, _Value]]:
        return [(n, v) for n, v in self._activations(node) if n.name in self.shapes]

    def _cat(self, node: fx.Node, acts: list[tuple[fx.Node, _Value]]) -> None:
        operands = [v for _, v in acts]
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        in_shapes = [self.shapes[n.name] for n, _ in acts]
        if dim < 0:
            dim += len(in_shapes[0])
        if len(set(operands)) == 1 and operands[0].fold == 1 and 0 < dim != operands[0].axis:
            self._alias(node, operands[0])  # along another axis (a class token): same channels
            return
        if dim > 0 and all(v.fold == 1 and v.axis != dim and not v.sub for v in operands):
            self._add(node, operands, "tokens")  # tokens of several groups: channel i of each
            return
        if any(v.fold != 1 or v.axis != dim for v in operands):
            raise self._fail(node, f"concatenation along dim {dim}; only concatenation of unfolded "
                             "activations along their channel axis or another axis is supported")
        self._concat(node, operands, dim)

    def _concat(self, node: fx.Node, operands: list[_Value], dim: int, shape: tuple[int, ...] | None = None) -> None:
        size = sum(self.groups[v.gid].size for v in operands)
        shape = self._group_shape(node, dim) if shape is None else shape
        gid = self._new_group(_group_name(node, "cat"), size, shape, "cat", node.name)
        offset = 0
        for k, v in enumerate(operands):
            self._use(v)
            src = self.groups[v.gid]
            block = EdgeBlock(self._block_name(f"{self.groups[gid].name}.in{k}"), "", "", "residual",
                              offset=offset, spec=LayerSpec(op="concat"))
            self.blocks.append((block, v.gid, gid))
            offset += src.size
        self.values[node.name] = _Value(gid, 1, dim)

    #: Handler of each rule of :data:`_RULES` and of ``skip``.
    _HANDLERS = {"alias": _on_alias, "reshape": _reshape, "permute": _permute, "reduce": _reduce,
                 "add": _on_add, "mul": _on_mul, "cat": _cat, "stack": _stack, "index": _index, "split": _split,
                 "window_attention": _window_attention, "patch_merge": _patch_merge,
                 "attention": _on_attention, "pad": _pad, "product": _product, "roll": _roll,
                 "weight_layer": _weight_layer, "multihead_attention": _multihead_attention,
                 "skip": _skip}


def _fused_weight(module: nn.Module, name: str) -> torch.Tensor | None:
    """The stored values of a module's fused weight ``name`` (:class:`n2ngraph.masks.FusedWeight`)."""
    from n2ngraph.masks import FusedWeight

    return weight_of(FusedWeight(module, name)) if getattr(module, name, None) is not None else None


def _layer_spec(module: nn.Module, path: str, linear: bool) -> tuple[LayerSpec, int]:
    """The spec of a traced weight layer and its convolution groups (1 for a Linear)."""
    if linear:
        return LayerSpec(op="Linear", module=path), 1
    spec = LayerSpec(op="Conv2d", module=path, kernel_size=module.kernel_size, stride=module.stride,
                     padding=module.padding, dilation=module.dilation)
    return spec, int(getattr(module, "groups", 1))


def _assemble(walk: _Walk, provenance: dict) -> tuple[NetworkGraph, dict[str, tuple[str, ...]]]:
    """Merge sum operands, drop merged groups, number nodes, and build the NetworkGraph."""
    groups = walk.groups
    root = list(range(len(groups)))

    def find(g: int) -> int:
        while root[g] != g:
            g = root[g]
        return g

    residuals: list[tuple[EdgeBlock, int, int]] = []
    for s in walk.sums:
        for k, op in enumerate(s.operands):
            grp = groups[op]
            if grp.role in ("layer", "sum") and grp.uses == 1 and s.operands.count(op) == 1:
                root[op] = s.gid
                groups[s.gid].nodes[:0] = grp.nodes
            else:
                label = "residual" if s.op == "add" else s.op
                block = EdgeBlock(f"{groups[s.gid].name}.{label}{k}", "", "", "residual",
                                  spec=LayerSpec(op=s.op))
                residuals.append((block, op, s.gid))
    kept = [g for g in range(len(groups)) if find(g) == g]
    outputs = [find(g) for g in walk.outputs]
    if kept[-1] not in outputs:
        raise ValueError(
            f"no output activation ({[groups[g].name for g in outputs]}) is the last node group "
            f"({groups[kept[-1]].name!r}); models with unused branches are not supported"
        )
    unused = [groups[g].name for g in kept if groups[g].size is None]
    if unused:
        raise ValueError(f"the input is never consumed by a weight layer ({unused})")
    position = {g: i for i, g in enumerate(kept)}
    node_groups, start = [], 0
    for g in kept:
        grp = groups[g]
        node_groups.append(NodeGroup(grp.name, start, int(grp.size), tuple(int(s) for s in grp.shape)))
        start += grp.size
    final_blocks = []
    for block, src, dst in walk.blocks + residuals:
        s, d = find(src), find(dst)
        added = bool(block.spec.added_by)  # variant blocks follow the traced ones
        final_blocks.append(((position[d], added),
                             dataclasses.replace(block, src=groups[s].name, dst=groups[d].name)))
    final_blocks.sort(key=lambda item: item[0])
    graph = NetworkGraph(tuple(node_groups), tuple(b for _, b in final_blocks), provenance)
    group_nodes = {groups[g].name: tuple(groups[g].nodes) for g in kept}
    return graph, group_nodes


def trace(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None, *,
          example_input: torch.Tensor | None = None, name: str | None = None) -> Trace:
    """Trace ``model`` into a :class:`NetworkGraph` and keep the fx trace beside it.

    Parameters
    ----------
    model : nn.Module
        Any model torch.fx can trace symbolically. It is not modified: one forward pass runs in
        eval mode under ``no_grad`` and every module's training flag is restored.
    masks : dict, optional
        ``{"<module path>.weight": bool tensor}`` for some or all Linear/Conv2d weights. Layers
        without an entry use masks already on the model (``torch.nn.utils.prune`` buffers or a
        parametrization), else are dense.
    example_input : Tensor, optional
        One input batch; by default zeros shaped for the first weight layer (32 x 32 images for
        a conv net, see :func:`n2ngraph.models.example_input`).
    name : str, optional
        Model name recorded in the graph's provenance (default: the class name).

    Returns
    -------
    Trace
        ``graph``, the fx ``module`` and ``group_nodes`` (fx node names of each group).

    Raises
    ------
    ValueError
        Untraceable control flow, an unsupported op (named, with its module path), masks that do
        not match the model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    weights = prunable_weights(model)
    if not weights:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv2d layer to trace")
    all_masks = masks_of(model)
    if masks is not None:
        all_masks.update(validate_masks(model, masks))
    x = default_example_input(model) if example_input is None else example_input
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"example_input must be a tensor, got {type(x).__name__}")
    gm = _symbolic_trace(model, x)
    shapes = record_shapes(gm, model, x)
    weight_names = {id(m): n for n, m in weights.items()}
    walk = _Walker(gm, shapes, all_masks, weight_names, model).run()
    from n2ngraph import __version__

    provenance = {"model": name or type(model).__name__, "library_version": __version__}
    if walk.token_mixing:
        provenance["token_mixing"] = list(walk.token_mixing)
    graph, group_nodes = _assemble(walk, provenance)
    return Trace(graph, gm, group_nodes)


def with_masks(graph: NetworkGraph, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> NetworkGraph:
    """The graph :func:`trace` gives for ``model`` with ``masks``, from ``graph`` already traced
    from ``model``, without tracing again: masks do not change the walk, only the masks and
    pair weights of the traced weight layers they name.

    Parameters
    ----------
    graph : NetworkGraph
        Traced from ``model`` (its traced ``sequential`` blocks name their layer by
        ``spec.module``; blocks added by a graph edit are left as they are).
    model : nn.Module
        The traced model; its weights give the pair weights.
    masks : dict
        ``{"<module path>.weight": bool tensor}``, checked as :func:`trace` checks them.
    """
    layers = prunable_weights(model)
    masks = validate_masks(model, masks)
    blocks = []
    for block in graph.blocks:
        path = block.spec.module if block.spec.module is not None else block.name
        name = weight_name(path)
        if block.kind != "sequential" or block.spec.added_by or name not in masks:
            blocks.append(block)
            continue
        mask = masks[name].to(torch.bool)
        blocks.append(block.with_mask(_numpy_mask(mask, block.mask.shape),
                                      _pair_weight(weight_of(layers[name]), mask, block.fold)))
    return graph.replace(blocks=blocks)


def to_graph(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None, *,
             example_input: torch.Tensor | None = None, name: str | None = None) -> NetworkGraph:
    """Trace ``model`` (with ``masks``) into a :class:`NetworkGraph`; see :func:`trace`.

    Examples
    --------
    >>> from n2ngraph import models, to_graph
    >>> g = to_graph(models.paper_mlp())
    >>> g.num_nodes
    4042
    """
    return trace(model, masks, example_input=example_input, name=name).graph

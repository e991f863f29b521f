"""N2NSkip and ResSkip graph variants (Subramaniam & Sharma, BMVC 2020, arXiv:2208.03662).

An N2NSkip connection is a sparse, learnable map from the activation of node group ``l`` to the
pre-activation of a later, non-consecutive group ``l + k`` (``k >= 2``)::

    a_{l+k} = g(z_{l+k} + g(skip(a_l)))

A ResSkip (the paper's ResNet-style comparison) is the parameter-free ``a_{l+k} = g(z_{l+k} + a_l)``.
This module only edits graphs (no torch import): :mod:`n2ngraph.bridge` turns the added blocks
into modules and :func:`n2ngraph.pipeline.variant` runs a whole recipe (prune, trace, add skips).

The chain of weight layers
--------------------------
Every group ``g`` gets a *depth*: the largest number of weight layers on any path from the input
to ``g``, following ``sequential`` blocks (one layer each) and ``residual`` blocks (zero layers);
``n2nskip`` blocks are ignored. The *span* of a pair ``(src, dst)`` is ``depth[dst] - depth[src]``.
For a plain chain (MLP, VGG) the depth is the position in the chain. For a ResNet the main path
runs through every group: a bottleneck adds three layers (``conv1``, ``conv2`` and the sum that
``conv3`` merges into), the identity shortcut adds none and a downsample conv is a parallel
one-layer block into the sum, so the sum sits three layers deeper than the block's input.

Wirings (where skips go)
------------------------
``"all-pairs"`` (or an integer maximum span): every pair ``(src, dst)`` with ``src`` before
``dst``, span >= 2 (and at most the maximum), not already joined by a ``sequential`` block (so a
ResNet downsample pair is excluded although its span is 3) and with a map from ``src`` to ``dst``
(a neuron group cannot feed a channel group). The paper MLP 3072-512-256-128-64-10 has 6 groups and
5 layers, so ``C(6, 2) - 5 = 10`` pairs: the 10 skip blocks of the paper's reference code.

``"blocks"`` (:func:`block_pairs`): one skip per block, read off the traced graph:

- *residual nets* (the graph has sum groups: a group fed by two or more traced blocks, not a
  concatenation): one skip per sum, from the shallowest group feeding the sum (the residual
  block's input) to the sum. ResNet50: 16 skips, ResNet18: 8. Where a downsample conv already
  joins that pair, the skip runs beside it (a 3x3 sparse conv next to the dense 1x1 shortcut).
- *plain conv chains* (VGG): the groups made by convs form *stages*, maximal runs (in graph
  order) of one spatial size; each stage's input (the group its first conv reads) feeds the first
  conv of the next stage. VGG16 and VGG19 have 5 stages, so 4 skips, as the reference code.
- *no conv layer* (MLPs): every non-consecutive pair, as ``"all-pairs"``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from n2ngraph.budget import apportion, check_density
from n2ngraph.graph import EdgeBlock, LayerSpec, NetworkGraph
from n2ngraph.recipes import GRANULARITIES, SKIP_DOWNSAMPLES, SKIP_ORDERS, WIRINGS

__all__ = ["ADDED_BY", "SKIP_ORDERS", "WIRINGS", "add_n2nskip", "add_resskip", "block_pairs",
           "chain_depths", "skip_candidates", "skip_capacity", "skip_initial_weights", "skip_pairs"]

#: ``spec.added_by`` of the blocks this module adds; the bridge builds a module for each of
#: them, while residual blocks without it are shortcuts the reference model already has.
ADDED_BY = {"n2nskip": "add_n2nskip", "resskip": "add_resskip"}
# WIRINGS (named wirings; an integer >= 2 means all pairs up to that span), SKIP_ORDERS (op orders
# of a conv skip, see add_n2nskip) and GRANULARITIES live in n2ngraph.recipes and are re-exported.

#: Layouts of a node group (:class:`~n2ngraph.graph.NodeGroup`): the channels of a conv activation
#: ``(C, h, w)``, or the neurons of a flat one. A neuron group cannot feed a channel group.
CHANNELS, NEURONS = "channels", "neurons"


# ------------------------------------------------------------------------ chain
def chain_depths(graph: NetworkGraph) -> dict[str, int]:
    """Depth of every group in the chain of weight layers (see the module docstring).

    Returns
    -------
    dict
        ``group name -> depth``; the input has depth 0.
    """
    depth = {g.name: 0 for g in graph.groups}
    incoming: dict[str, list[EdgeBlock]] = {}
    for b in graph.blocks:
        incoming.setdefault(b.dst, []).append(b)
    for g in graph.groups:  # groups are in topological order
        for b in incoming.get(g.name, ()):
            if b.kind == "sequential":
                depth[g.name] = max(depth[g.name], depth[b.src] + 1)
            elif b.kind == "residual":
                depth[g.name] = max(depth[g.name], depth[b.src])
    return depth


def _group_layouts(graph: NetworkGraph) -> dict[str, str]:
    """``group name -> layout``: :data:`CHANNELS` or :data:`NEURONS`.

    From the traced shape when known (3-D = channels), else from the masks: a group produced by
    (or, for the input, consumed by) a 4-D conv mask is a channel group.
    """
    layouts = {}
    for g in graph.groups:
        if g.shape:
            layouts[g.name] = CHANNELS if len(g.shape) == 3 else NEURONS
            continue
        into = [b for b in graph.blocks if b.dst == g.name and b.kind == "sequential"]
        if into:
            layouts[g.name] = CHANNELS if into[0].mask.ndim == 4 else NEURONS
        else:
            out = [b for b in graph.blocks if b.src == g.name and b.kind == "sequential"]
            layouts[g.name] = CHANNELS if out and out[0].mask.ndim == 4 else NEURONS
    return layouts


def _can_feed(layouts: Mapping[str, str], src: str, dst: str) -> bool:
    """Whether a skip can map group ``src`` onto group ``dst``: not neurons into channels."""
    return not (layouts[src] == NEURONS and layouts[dst] == CHANNELS)


def _traced(graph: NetworkGraph) -> list[EdgeBlock]:
    """The blocks of the reference model (not added by this module)."""
    return [b for b in graph.blocks if not b.spec.added_by]


def _check_wiring(wiring: Any) -> None:
    if not (wiring in WIRINGS or (not isinstance(wiring, (bool, str))
                                  and isinstance(wiring, numbers.Integral) and wiring >= 2)):
        raise ValueError(f"wiring must be one of {WIRINGS} or an integer >= 2 (a maximum span), "
                         f"got {wiring!r}")


def _check_span(max_span: Any) -> None:
    if max_span is not None:
        if isinstance(max_span, bool) or not isinstance(max_span, numbers.Integral) or max_span < 2:
            raise ValueError(f"max_span must be None or an integer >= 2, got {max_span!r}")


def skip_candidates(graph: NetworkGraph, *, max_span: int | None = None) -> list[tuple[str, str, int]]:
    """All-pairs candidates ``(src, dst, span)`` for skips, in (dst, src) graph order.

    See the module docstring for the rule (span >= 2, at most ``max_span``, not already joined by
    a sequential block, a map from ``src`` to ``dst`` exists).
    """
    _check_span(max_span)
    depth = chain_depths(graph)
    layouts = _group_layouts(graph)
    joined = {(b.src, b.dst) for b in graph.blocks if b.kind == "sequential"}
    names = [g.name for g in graph.groups]
    out = []
    for j, dst in enumerate(names):
        for src in names[:j]:
            span = depth[dst] - depth[src]
            if span < 2 or (max_span is not None and span > max_span) or (src, dst) in joined:
                continue
            if _can_feed(layouts, src, dst):
                out.append((src, dst, span))
    return out


def _sum_groups(graph: NetworkGraph) -> list[str]:
    """Groups fed by two or more traced blocks, none of them a concatenation: residual sums."""
    incoming: dict[str, list[EdgeBlock]] = {}
    for b in _traced(graph):
        incoming.setdefault(b.dst, []).append(b)
    return [g.name for g in graph.groups
            if len(incoming.get(g.name, ())) >= 2
            and not any(b.spec.op == "concat" for b in incoming[g.name])]


def _conv_outputs(graph: NetworkGraph) -> list[str]:
    """Groups made by a conv (the destination of a 4-D ``sequential`` mask), in graph order."""
    made = {b.dst for b in _traced(graph) if b.kind == "sequential" and b.mask.ndim == 4}
    return [g.name for g in graph.groups if g.name in made]


def block_pairs(graph: NetworkGraph) -> list[tuple[str, str, int]]:
    """``(src, dst, span)`` of the ``"blocks"`` wiring (module docstring), in graph order of ``dst``.

    Pairs of span < 2 or without a map from ``src`` to ``dst`` are left out.

    Raises
    ------
    ValueError
        A plain conv chain whose conv groups have no traced spatial size (stages cannot be found).
    """
    depth = chain_depths(graph)
    layouts = _group_layouts(graph)
    order = {g.name: i for i, g in enumerate(graph.groups)}
    traced = _traced(graph)
    sums = _sum_groups(graph)
    pairs: list[tuple[str, str]] = []
    if sums:
        for s in sums:
            sources = {b.src for b in traced if b.dst == s}
            pairs.append((min(sources, key=lambda n: (depth[n], order[n])), s))
    elif _conv_outputs(graph):
        convs = _conv_outputs(graph)
        missing = [c for c in convs if not graph.group(c).spatial]
        if missing:
            raise ValueError(f"'blocks' wiring needs the traced spatial size of conv groups {missing[:3]}; "
                             "trace the model (n2ngraph.trace.to_graph) to record shapes")
        stages: list[list[str]] = []
        for c in convs:
            if stages and graph.group(stages[-1][-1]).spatial == graph.group(c).spatial:
                stages[-1].append(c)
            else:
                stages.append([c])
        first_in = {}
        for b in traced:
            if b.kind == "sequential" and b.dst in {st[0] for st in stages}:
                prev = first_in.get(b.dst)
                if prev is None or (depth[b.src], order[b.src]) < (depth[prev], order[prev]):
                    first_in[b.dst] = b.src
        for here, nxt in zip(stages[:-1], stages[1:]):
            pairs.append((first_in[here[0]], nxt[0]))
    else:
        return skip_candidates(graph)
    out = []
    for src, dst in dict.fromkeys(pairs):
        span = depth[dst] - depth[src]
        if span >= 2 and _can_feed(layouts, src, dst):
            out.append((src, dst, span))
    return sorted(out, key=lambda p: (order[p[1]], order[p[0]]))


def skip_pairs(graph: NetworkGraph, wiring: str | int = "all-pairs") -> list[tuple[str, str, int]]:
    """``(src, dst, span)`` of every skip the wiring allows (module docstring), in graph order.

    ``wiring``: ``"all-pairs"``, ``"blocks"`` or an integer >= 2 (all pairs up to that span).
    """
    _check_wiring(wiring)
    if wiring == "all-pairs":
        return skip_candidates(graph)
    if wiring == "blocks":
        return block_pairs(graph)
    return skip_candidates(graph, max_span=int(wiring))


def _spanned(graph: NetworkGraph, src: str, dst: str) -> list[EdgeBlock]:
    """The traced blocks on the paths from ``src`` to ``dst``, in graph (topological) order."""
    traced = _traced(graph)
    fwd: dict[str, list[str]] = {}
    bwd: dict[str, list[str]] = {}
    for b in traced:
        fwd.setdefault(b.src, []).append(b.dst)
        bwd.setdefault(b.dst, []).append(b.src)

    def reach(start: str, edges: dict[str, list[str]]) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for n in edges.get(todo.pop(), ()):
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    inside = reach(src, fwd) & reach(dst, bwd)
    return [b for b in traced if b.src in inside and b.dst in inside]


def _is_conv(block: EdgeBlock) -> bool:
    return block.kind == "sequential" and block.mask.ndim == 4


def _span_kernel(graph: NetworkGraph, src: str, dst: str) -> int:
    """Largest kernel (odd) of the sequential convs on the paths from ``src`` to ``dst``; 1 if none."""
    kernels = [max(b.mask.shape[2:]) for b in _spanned(graph, src, dst) if _is_conv(b)]
    f = max(kernels, default=1)
    return f if f % 2 else f + 1


def _path_stride(graph: NetworkGraph, src: str, dst: str) -> tuple[int, int] | None:
    """Product of the conv strides along the paths from ``src`` to ``dst`` (``(2, 2)`` across a
    ResNet block that halves the resolution) when every path has the same one, else None.
    Pooling layers are not blocks: a path that pools has product ``(1, 1)`` however much it
    shrinks the map."""
    products: dict[str, set[tuple[int, int]]] = {src: {(1, 1)}}
    for b in _spanned(graph, src, dst):
        if b.src not in products:
            continue
        stride = tuple(int(v) for v in b.spec.stride) if _is_conv(b) and b.spec.stride else (1, 1)
        if len(stride) != 2:
            return None
        products.setdefault(b.dst, set()).update(
            (p[0] * stride[0], p[1] * stride[1]) for p in products[b.src])
    found = products.get(dst, set())
    return next(iter(found)) if len(found) == 1 else None


def _conv_size(size: tuple[int, ...], f: int, stride: tuple[int, int]) -> tuple[int, ...]:
    """Output size of an ``f x f`` conv with padding ``f // 2`` and ``stride``."""
    return tuple((n + 2 * (f // 2) - f) // s + 1 for n, s in zip(size, stride))


# ------------------------------------------------------------------- skip blocks
def _skip_template(graph: NetworkGraph, src: str, dst: str, span: int, layouts: Mapping[str, str],
                   kernel_size: int, order: str,
                   downsample: str = "pool") -> tuple[tuple[int, ...], LayerSpec]:
    """Mask shape and spec of the skip ``src -> dst`` (see :func:`add_n2nskip`, Notes)."""
    s, d = graph.group(src), graph.group(dst)
    common = {"added_by": ADDED_BY["n2nskip"], "span": int(span), "order": order,
              "input_size": s.spatial or None}
    if layouts[dst] == CHANNELS:
        f = kernel_size
        same = bool(s.spatial and d.spatial and s.spatial == d.spatial)
        stride = (1, 1)
        if downsample == "stride" and not same and s.spatial and d.spatial and len(s.spatial) == 2:
            path = _path_stride(graph, src, dst)
            if path and path != (1, 1) and _conv_size(s.spatial, f, path) == tuple(d.spatial):
                stride, same = path, True
        norm, pool = ("batch", "adaptive_max") if order == "conv-bn-act-pool" else (None, "adaptive_avg")
        spec = LayerSpec(op="Conv2d", kernel_size=(f, f), stride=stride, padding=(f // 2, f // 2),
                         dilation=(1, 1), norm=norm, pool=None if same else pool,
                         output_size=d.spatial or None, **common)
        return (d.size, s.size, f, f), spec
    if layouts[src] == CHANNELS:
        return (d.size, s.size), LayerSpec(op="Linear", pool="global_avg", output_size=(1, 1), **common)
    return (d.size, s.size), LayerSpec(op="Linear", **{**common, "input_size": None})


def _insert_blocks(graph: NetworkGraph, new: list[EdgeBlock]) -> tuple[EdgeBlock, ...]:
    """Existing blocks in their order, each new block after the last block whose destination
    is at or before its own (so the blocks stay in topological order of their destination and
    added blocks follow the traced ones of the same destination, as :func:`trace` emits them)."""
    pos = {g.name: i for i, g in enumerate(graph.groups)}
    blocks = list(graph.blocks)
    for b in new:
        at = 0
        for i, old in enumerate(blocks):
            if pos[old.dst] <= pos[b.dst]:
                at = i + 1
        blocks.insert(at, b)
    return tuple(blocks)


def _check_graph(graph: Any) -> None:
    if not isinstance(graph, NetworkGraph):
        raise TypeError(f"graph must be a NetworkGraph, got {type(graph).__name__}")
    added = [b.name for b in graph.blocks if b.spec.added_by]
    if added:
        raise ValueError(
            f"graph already has added skip blocks {added[:3]}{'...' if len(added) > 3 else ''}; "
            "add skips to the plain pruned graph"
        )


# ------------------------------------------------------------------ initial weights
def _kept_initial(mask: np.ndarray, name: str, init_seed: int,
                  flat: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flat (C-order) indices of the kept entries (``flat``, when the caller has them sorted)
    and their initial weights (float32)."""
    if flat is None:
        flat = np.flatnonzero(mask)
    fan_in = math.prod(mask.shape[1:])
    rng = np.random.default_rng([int(init_seed), zlib.crc32(name.encode())])
    w = rng.standard_normal(flat.size) * math.sqrt(2.0 / fan_in)
    return flat, w.astype(np.float32)


def skip_initial_weights(block: EdgeBlock) -> np.ndarray:
    """The initial weights ``w0`` of an N2NSkip block, mask-shaped, float32, exactly 0 off-mask.

    Kaiming normal with the block's *dense* fan-in, ``w0 ~ N(0, 2 / fan_in)`` with
    ``fan_in = C_src * f * f`` (conv) or ``n_src`` (Linear) (He et al. 2015, arXiv:1502.01852),
    drawn only for the kept entries, in C order, from
    ``np.random.default_rng([block.spec.init_seed, zlib.crc32(block.name)])``: the same block
    gives the same weights on every machine. ``block.pair_weight`` holds ``sum |w0|`` over the
    kept taps of each channel pair, and the bridge starts the skip module from these weights
    (``to_model(init="dense")``), so the weighted adjacency of a variant is that of its model at
    initialization.

    Raises
    ------
    ValueError
        ``block`` is not an n2nskip block made by :func:`add_n2nskip` (no ``init_seed``).
    """
    if not isinstance(block, EdgeBlock) or block.kind != "n2nskip" or block.spec.init_seed is None:
        raise ValueError("skip_initial_weights needs an n2nskip block made by add_n2nskip "
                         f"(with spec.init_seed), got {getattr(block, 'name', block)!r}")
    flat, w = _kept_initial(block.mask, block.name, block.spec.init_seed)
    out = np.zeros(block.mask.shape, dtype=np.float32)
    out.reshape(-1)[flat] = w
    return out


def _initial_pair_weight(mask: np.ndarray, name: str, init_seed: int,
                 flat: np.ndarray | None = None) -> np.ndarray:
    """``sum |w0|`` over the kept taps of each ``(out, in)`` pair, float32 ``(out, in)``;
    ``flat``: the sorted flat indices of the kept entries, when known."""
    flat, w = _kept_initial(mask, name, init_seed, flat)
    taps = math.prod(mask.shape[2:])
    if taps == 1:
        out = np.zeros(mask.shape[0] * mask.shape[1], dtype=np.float32)
        out[flat] = np.abs(w)
        return out.reshape(mask.shape[0], mask.shape[1])
    sums = np.bincount(flat // taps, weights=np.abs(w).astype(np.float64),
                       minlength=mask.shape[0] * mask.shape[1])
    return sums.astype(np.float32).reshape(mask.shape[0], mask.shape[1])


# ------------------------------------------------------------------------- masks
def _draw_uniform(rng: np.random.Generator, sizes: np.ndarray, k: int) -> list[np.ndarray]:
    """``k`` entries uniformly without replacement over the concatenated blocks; flat indices
    per block."""
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    flat = np.sort(rng.choice(int(bounds[-1]), size=int(k), replace=False))
    which = np.searchsorted(bounds, flat, side="right") - 1
    return [flat[which == j] - bounds[j] for j in range(len(sizes))]


def _draw_channels(rng: np.random.Generator, shape: tuple[int, ...], k: int) -> np.ndarray:
    """``k`` entries of a conv mask as whole kernels: ``k // taps`` random channel pairs keep all
    taps and, when ``taps`` does not divide ``k``, one more random pair keeps ``k % taps`` random
    taps (so the count is exact). Flat indices."""
    taps = math.prod(shape[2:])
    pairs = shape[0] * shape[1]
    whole, rest = divmod(int(k), taps)
    chosen = rng.choice(pairs, size=whole + (rest > 0), replace=False)
    idx = (chosen[:whole, None] * taps + np.arange(taps)).ravel()
    if rest:
        part = chosen[whole] * taps + np.sort(rng.choice(taps, size=rest, replace=False))
        idx = np.concatenate([idx, part])
    return np.sort(idx)


def _check_options(wiring, skip_kernel, skip_order, granularity, skip_downsample="pool") -> None:
    _check_wiring(wiring)
    if skip_kernel != "same" and (isinstance(skip_kernel, (bool, str))
                                  or not isinstance(skip_kernel, numbers.Integral)
                                  or skip_kernel < 1 or skip_kernel % 2 == 0):
        raise ValueError(f"skip_kernel must be 'same' or an odd integer >= 1, got {skip_kernel!r}")
    if skip_order not in SKIP_ORDERS:
        raise ValueError(f"skip_order must be one of {SKIP_ORDERS}, got {skip_order!r}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if skip_downsample not in SKIP_DOWNSAMPLES:
        raise ValueError(f"skip_downsample must be one of {SKIP_DOWNSAMPLES}, got {skip_downsample!r}")


def _skip_plan(graph: NetworkGraph, wiring, skip_kernel, skip_order, skip_downsample="pool"):
    """Candidate pairs ``(src, dst, span)`` of the wiring and each one's ``(mask shape, spec)``."""
    layouts = _group_layouts(graph)
    cands = skip_pairs(graph, wiring)
    kernels = [(_span_kernel(graph, s, d) if skip_kernel == "same" else int(skip_kernel))
               for s, d, _ in cands]
    templates = [_skip_template(graph, s, d, k, layouts, f, skip_order, skip_downsample)
                 for (s, d, k), f in zip(cands, kernels)]
    return cands, templates


def skip_capacity(graph: NetworkGraph, *, wiring: str | int = "all-pairs",
                  skip_kernel: str | int = 1, skip_order: str = "pool-conv-act") -> int:
    """Weights that the skip blocks of ``wiring`` hold when dense: the most
    :func:`add_n2nskip` can add to ``graph`` (arguments as there)."""
    _check_options(wiring, skip_kernel, skip_order, "weight")
    _, templates = _skip_plan(graph, wiring, skip_kernel, skip_order)
    return int(sum(math.prod(shape) for shape, _ in templates))


def _add_n2nskip_count(graph: NetworkGraph, n_skip: int, *, seed: int | None = 0,
                       wiring: str | int = "all-pairs", skip_kernel: str | int = 1,
                       skip_order: str = "pool-conv-act", granularity: str = "weight",
                       skip_downsample: str = "pool",
                       provenance: Mapping[str, Any] | None = None) -> NetworkGraph:
    """:func:`add_n2nskip` with the number of kept skip weights given (``n_skip``) instead of a
    density: the pipeline's entry point."""
    _check_graph(graph)
    _check_options(wiring, skip_kernel, skip_order, granularity, skip_downsample)
    n_skip = int(n_skip)
    if n_skip < 0:
        raise ValueError(f"the skip budget must be >= 0 weights, got {n_skip}")
    cands, templates = _skip_plan(graph, wiring, skip_kernel, skip_order, skip_downsample)
    sizes = np.array([math.prod(shape) for shape, _ in templates], dtype=np.int64)
    capacity = int(sizes.sum())
    if n_skip > capacity:
        raise ValueError(
            f"{n_skip} skip weights requested but the {len(cands)} candidate skip blocks of wiring "
            f"{wiring!r} hold only {capacity}; lower the skip density or choose a wider wiring"
        )
    # targets: destination groups with candidates, weighted by their sequential size
    targets = list(dict.fromkeys(d for _, d, _ in cands))
    seq_size = {t: sum(b.dense_params for b in graph.blocks if b.dst == t and b.kind == "sequential")
                for t in targets}
    cap = np.array([sizes[[i for i, c in enumerate(cands) if c[1] == t]].sum() for t in targets])
    per_target = apportion(n_skip, [seq_size[t] for t in targets], caps=cap)
    rng = np.random.default_rng(seed)
    init_seed = int(seed) if isinstance(seed, numbers.Integral) else int(rng.integers(2**31))
    new_blocks = []
    for t, k_t in zip(targets, per_target):
        idx = [i for i, c in enumerate(cands) if c[1] == t]
        if k_t == 0:
            continue
        conv = len(templates[idx[0]][0]) == 4
        if granularity == "channel" and conv:
            shares = apportion(int(k_t), sizes[idx], caps=sizes[idx])
            picks = [_draw_channels(rng, templates[i][0], int(k)) if k else np.zeros(0, np.int64)
                     for i, k in zip(idx, shares)]
        else:
            picks = _draw_uniform(rng, sizes[idx], int(k_t))
        for i, pick in zip(idx, picks):
            if pick.size == 0:
                continue  # a block without kept weights is left out
            shape, spec = templates[i]
            mask = np.zeros(int(sizes[i]), dtype=bool)
            mask[pick] = True
            mask = mask.reshape(shape)
            src, dst, _ = cands[i]
            name = f"n2nskip:{src}->{dst}"
            new_blocks.append(EdgeBlock(name, src, dst, "n2nskip", mask,
                                        pair_weight=_initial_pair_weight(mask, name, init_seed, pick),
                                        spec=dataclasses.replace(spec, init_seed=init_seed)))
    prov = {**graph.provenance, "n2nskip_params": n_skip, "n2nskip_seed": seed,
            "n2nskip_wiring": wiring, "n2nskip_skip_kernel": skip_kernel,
            "n2nskip_skip_order": skip_order, "n2nskip_granularity": granularity,
            "n2nskip_skip_downsample": skip_downsample,
            **(provenance or {})}
    return graph.replace(blocks=_insert_blocks(graph, new_blocks), provenance=prov)


def add_n2nskip(graph: NetworkGraph, density: float, *, seed: int | None = 0,
                wiring: str | int = "all-pairs", skip_kernel: str | int = 1,
                skip_order: str = "pool-conv-act", granularity: str = "weight",
                skip_downsample: str = "pool") -> NetworkGraph:
    """Add random sparse N2NSkip blocks holding ``density`` x the dense reference budget.

    Parameters
    ----------
    graph : NetworkGraph
        The (pruned) graph, without added skips.
    density : float
        Skip weights as a fraction of ``graph.dense_params``: exactly
        ``round(density * graph.dense_params)`` kept skip weights are added (Python's ``round``).
    seed : int or None
        Seed of the ``np.random.default_rng`` drawing the kept positions; also the blocks'
        ``spec.init_seed`` (:func:`skip_initial_weights`).
    wiring : {"all-pairs", "blocks"} or int >= 2
        Which pairs get a skip (module docstring): every non-consecutive pair (the reference
        code's MLP), one per block (the paper's conv nets), or every pair up to a span.
    skip_kernel : "same" or odd int
        Kernel ``f`` of conv skips (weight ``C_dst x C_src x f x f``). ``"same"``: the largest
        kernel of the sequential convs on the paths the skip spans (3 in VGG and ResNet blocks).
    skip_order : {"pool-conv-act", "conv-bn-act-pool"}
        Ops of a conv skip (Notes).
    granularity : {"weight", "channel"}
        ``"channel"``: conv skip masks keep whole kernels (``k // f^2`` random channel pairs, plus
        one pair with the remaining ``k % f^2`` taps so the count is exact), as the paper's
        reference code; ``"weight"``: taps drawn one by one. Linear skips are the same under both.
    skip_downsample : {"pool", "stride"}
        How a conv skip reaches a smaller target (Notes): ``"pool"`` as ``skip_order`` says;
        ``"stride"``: strided like the convs of the path it spans, where they account for the
        whole change of size (ResNet blocks), else as ``"pool"``.

    Returns
    -------
    NetworkGraph
        A new graph with one ``n2nskip`` block per candidate pair that received at least one
        weight (named ``"n2nskip:<src>-><dst>"``), inserted after the blocks of its destination.
        Each block has ``pair_weight`` (``sum |w0|`` over its kept taps, :func:`skip_initial_weights`),
        so ``adjacency(weighted=True)`` works on the variant.

    Notes
    -----
    *Budget.* The total is split over destination groups in proportion to the dense size of
    their sequential blocks (largest-remainder rounding; a group whose candidates are full passes
    its excess on). With ``granularity="weight"`` the kept weights of a destination are drawn
    uniformly without replacement from the entries of all its candidate blocks (every candidate
    has the same expected density); with ``"channel"`` the destination's share is first split
    over its conv candidates in proportion to their size.

    *Ops* (``block.spec``; the bridge builds them). ``"pool-conv-act"``: a conv skip between
    groups of different spatial size average-pools ``a_src`` to ``dst``'s traced size
    (``pool="adaptive_avg"``), then applies the stride-1 ``f x f`` conv with padding ``f // 2``
    and ``g``; no normalisation. ``"conv-bn-act-pool"`` (the paper's): the conv at the source
    resolution, ``BatchNorm2d(C_dst)`` (``norm="batch"``), ``g``, then adaptive max-pooling to
    ``output_size`` when the sizes differ (``pool="adaptive_max"``). With
    ``skip_downsample="stride"``, a skip whose spanned convs stride by ``s`` in all (every path
    the same ``s``, and the ``f x f`` conv with padding ``f // 2`` and stride ``s`` lands on the
    target's size) is that strided conv instead, at the target's resolution, with no pooling
    (``spec.stride = s``, ``pool=None``); the rest of its order is kept. Under both orders a skip
    from a channel group into a neuron group pools globally first (``pool="global_avg"``) and
    is a Linear ``(dst, C_src)`` without normalisation; neuron to neuron skips are Linear
    ``(dst, src)`` masks. ``g`` is the target's own non-linearity, the identity for the output
    group: a skip into the logits is linear, as in Eq. 2 of the paper (the reference MLP code
    applied ReLU there; see ``docs/recipes.md``).

    Examples
    --------
    >>> from n2ngraph import models, to_graph
    >>> g = to_graph(models.paper_mlp())
    >>> g2 = add_n2nskip(g, 0.01, seed=0)
    >>> g2.num_params - g.num_params == round(0.01 * g.dense_params)
    True
    >>> len(g2.blocks_of_kind("n2nskip"))  # C(6, 2) - 5 pairs of the 3072-512-256-128-64-10 MLP
    10
    """
    _check_graph(graph)
    density = check_density(density, allow_zero=True, allow_above_one=True)
    n_skip = round(density * graph.dense_params)
    return _add_n2nskip_count(graph, n_skip, seed=seed, wiring=wiring, skip_kernel=skip_kernel,
                              skip_order=skip_order, granularity=granularity,
                              skip_downsample=skip_downsample,
                              provenance={"n2nskip_density": density})


def add_resskip(graph: NetworkGraph, *, span: int = 2, start: int = 1) -> NetworkGraph:
    """Add parameter-free ResSkip (residual) blocks, ResNet style: ``a_{l+k} = g(z_{l+k} + a_l)``.

    Groups of the chain (ordered by depth, one group per depth: the deepest-numbered group of
    that depth) are joined from position ``start`` every ``span`` positions:
    ``c[start] -> c[start + span]``, ``c[start + span] -> c[start + 2 span]``, ... — the
    non-overlapping two-layer blocks of a ResNet for ``span=2``. ``start=1`` begins at the first
    layer's output, as a ResNet begins after its stem.

    Projection rule (parameter-free, He et al. 2016 arXiv:1512.03385 option A): a pair is joined
    only when ``src`` has no more nodes than ``dst``; source channel ``i`` joins destination
    channel ``i`` and the remaining destination channels get zero (zero padding). A smaller
    spatial size is reached by adaptive average pooling (``spec.pool``), a channel group into a
    neuron group by global average pooling. Pairs where ``src`` is wider are left out (listed in
    the provenance); a pair already joined by a block is left out too.

    Raises
    ------
    ValueError
        No pair qualifies (e.g. the paper MLP, whose widths shrink at every layer).
    """
    _check_graph(graph)
    for label, value, low in (("span", span, 2), ("start", start, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    depth = chain_depths(graph)
    layouts = _group_layouts(graph)
    by_depth: dict[int, str] = {}
    for g in graph.groups:
        by_depth[depth[g.name]] = g.name
    chain = [by_depth[k] for k in sorted(by_depth)]
    joined = {(b.src, b.dst) for b in graph.blocks}
    new, left_out = [], []
    for i in range(start, len(chain) - span, span):
        src, dst = chain[i], chain[i + span]
        s, d = graph.group(src), graph.group(dst)
        if (src, dst) in joined or not _can_feed(layouts, src, dst):
            continue
        if s.size > d.size:
            left_out.append(f"{src}->{dst}")
            continue
        pool = output_size = None
        if layouts[src] == CHANNELS and layouts[dst] == NEURONS:
            pool, output_size = "global_avg", (1, 1)
        elif layouts[src] == CHANNELS and not (s.spatial and s.spatial == d.spatial):
            pool, output_size = "adaptive_avg", d.spatial or None
        spec = LayerSpec(op="identity", added_by=ADDED_BY["resskip"], span=int(depth[dst] - depth[src]),
                         pad_channels=int(d.size - s.size), pool=pool, output_size=output_size)
        new.append(EdgeBlock(f"resskip:{src}->{dst}", src, dst, "residual", None, spec=spec))
    if not new:
        raise ValueError(
            f"no ResSkip pair qualifies with span={span}, start={start}: a residual block needs "
            f"src no wider than dst (left out for width: {left_out})"
        )
    prov = {**graph.provenance, "resskip_span": int(span), "resskip_start": int(start),
            "resskip_left_out": left_out}
    return graph.replace(blocks=_insert_blocks(graph, new), provenance=prov)

"""N2NSkip and ResSkip graph variants (Subramaniam & Sharma, BMVC 2020, arXiv:2208.03662).

An N2NSkip connection is a sparse, learnable map from the activation of node group ``l`` to the
pre-activation of a later, non-consecutive group ``l + k`` (``k >= 2``)::

    a_{l+k} = g(z_{l+k} + g(skip(a_l)))

A ResSkip (the paper's ResNet-style comparison) is the parameter-free ``a_{l+k} = g(z_{l+k} + a_l)``.
This module only edits graphs (no torch import at module level); :mod:`n2ngraph.bridge` turns the
added blocks into modules and :func:`variant` runs the paper's whole recipe.

The chain of weight layers
--------------------------
Every group ``g`` gets a *depth*: the largest number of weight layers on any path from the input
to ``g``, following ``sequential`` blocks (one layer each) and ``residual`` blocks (zero layers);
``n2nskip`` blocks are ignored. The *span* of a pair ``(src, dst)`` is ``depth[dst] - depth[src]``.
For a plain chain (MLP, VGG) the depth is the position in the chain. For a ResNet the main path
runs through every group: a bottleneck adds three layers (``conv1``, ``conv2`` and the sum that
``conv3`` merges into), the identity shortcut adds none and a downsample conv is a parallel
one-layer block into the sum, so the sum sits three layers deeper than the block's input.

A pair is a *candidate* for a skip when ``src`` precedes ``dst``, the span is at least 2 (and at
most ``max_span``), no ``sequential`` block already joins the two groups (so a ResNet downsample
pair is excluded although its span is 3) and a map exists (a neuron group cannot feed a channel
group). Skips from the input group and into the output group are allowed: the paper MLP
3072-512-256-128-64-10 has 6 groups and 5 layers, so ``C(6, 2) - 5 = 10`` candidate pairs, the
10 skip blocks of the paper's reference code, which wired every layer to every later
non-consecutive layer. That is the default here (``max_span=None``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from n2ngraph.graph import EdgeBlock, NetworkGraph

__all__ = ["add_n2nskip", "add_resskip", "variant", "chain_depths", "skip_candidates", "ADDED_BY"]

#: ``spec["added_by"]`` of the blocks this module adds; the bridge builds a module for each of
#: them, while residual blocks without it are shortcuts the reference model already has.
ADDED_BY = {"n2nskip": "add_n2nskip", "resskip": "add_resskip"}


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


def _group_kinds(graph: NetworkGraph) -> dict[str, str]:
    """``"conv"`` for channel groups, ``"feature"`` for neuron groups.

    From the traced shape when known (3-D = channels), else from the masks: a group produced by
    (or, for the input, consumed by) a 4-D conv mask is a channel group.
    """
    kinds = {}
    for g in graph.groups:
        if g.shape:
            kinds[g.name] = "conv" if len(g.shape) == 3 else "feature"
            continue
        into = [b for b in graph.blocks if b.dst == g.name and b.kind == "sequential"]
        if into:
            kinds[g.name] = "conv" if into[0].mask.ndim == 4 else "feature"
        else:
            out = [b for b in graph.blocks if b.src == g.name and b.kind == "sequential"]
            kinds[g.name] = "conv" if out and out[0].mask.ndim == 4 else "feature"
    return kinds


def skip_candidates(graph: NetworkGraph, *, max_span: int | None = None) -> list[tuple[str, str, int]]:
    """Candidate ``(src, dst, span)`` pairs for skips, in (dst, src) graph order.

    See the module docstring for the rule (span >= 2, at most ``max_span``, not already joined by
    a sequential block, a map from ``src`` to ``dst`` exists).
    """
    if max_span is not None:
        if isinstance(max_span, bool) or not isinstance(max_span, (int, np.integer)) or max_span < 2:
            raise ValueError(f"max_span must be None or an integer >= 2, got {max_span!r}")
    depth = chain_depths(graph)
    kinds = _group_kinds(graph)
    joined = {(b.src, b.dst) for b in graph.blocks if b.kind == "sequential"}
    names = [g.name for g in graph.groups]
    out = []
    for j, dst in enumerate(names):
        for src in names[:j]:
            span = depth[dst] - depth[src]
            if span < 2 or (max_span is not None and span > max_span) or (src, dst) in joined:
                continue
            if kinds[src] == "feature" and kinds[dst] == "conv":
                continue
            out.append((src, dst, span))
    return out


# ------------------------------------------------------------------- skip blocks
def _skip_template(graph: NetworkGraph, src: str, dst: str, span: int, kinds: Mapping[str, str],
                   kernel_size: int) -> tuple[tuple[int, ...], dict[str, Any]]:
    """Mask shape and spec of the skip ``src -> dst``.

    conv -> conv: a ``kernel_size`` x ``kernel_size`` convolution, stride 1, 'same' padding, after
    an adaptive average pooling of ``a_src`` to ``dst``'s spatial size when the sizes differ.
    conv -> neurons: global average pooling, then a Linear ``(dst, C_src)``.
    neurons -> neurons: a Linear ``(dst, src)``.
    """
    s, d = graph.group(src), graph.group(dst)
    spec: dict[str, Any] = {"added_by": ADDED_BY["n2nskip"], "span": int(span)}
    if kinds[dst] == "conv":
        f = kernel_size
        spec.update(type="Conv2d", kernel_size=[f, f], stride=[1, 1], padding=[f // 2, f // 2],
                    dilation=[1, 1])
        if s.spatial and d.spatial and s.spatial == d.spatial:
            spec.update(pool=None, output_size=list(d.spatial))
        else:
            spec.update(pool="adaptive_avg", output_size=list(d.spatial) if d.spatial else None)
        if s.spatial:
            spec["input_size"] = list(s.spatial)
        return (d.size, s.size, f, f), spec
    spec["type"] = "Linear"
    if kinds[src] == "conv":
        spec.update(pool="global_avg", output_size=[1, 1])
        if s.spatial:
            spec["input_size"] = list(s.spatial)
    else:
        spec["pool"] = None
    return (d.size, s.size), spec


def _hamilton(total: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Integer shares of ``total`` proportional to ``weights`` (largest remainder), each capped
    at ``caps``; what a capped share cannot take is spread over the others the same way."""
    alloc = np.zeros(len(weights), dtype=np.int64)
    left = int(total)
    open_ = caps > 0
    while left > 0:
        w = np.where(open_, weights, 0).astype(np.float64)
        if w.sum() <= 0:
            w = open_.astype(np.float64)
        exact = left * w / w.sum()
        share = np.floor(exact).astype(np.int64)
        rest = left - int(share.sum())
        order = np.argsort(-(exact - share), kind="stable")
        share[order[:rest]] += 1
        room = caps - alloc
        share = np.minimum(share, room)
        alloc += share
        left -= int(share.sum())
        open_ = (caps - alloc) > 0
        if not open_.any() and left > 0:
            raise ValueError("internal: capacity exhausted")  # guarded by the caller
    return alloc


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
    added = [b.name for b in graph.blocks if b.spec.get("added_by")]
    if added:
        raise ValueError(
            f"graph already has added skip blocks {added[:3]}{'...' if len(added) > 3 else ''}; "
            "add skips to the plain pruned graph"
        )


def _add_n2nskip_count(graph: NetworkGraph, n_skip: int, *, seed, max_span, kernel_size,
                       provenance: Mapping[str, Any]) -> NetworkGraph:
    kinds = _group_kinds(graph)
    cands = skip_candidates(graph, max_span=max_span)
    templates = [_skip_template(graph, s, d, k, kinds, kernel_size) for s, d, k in cands]
    sizes = np.array([math.prod(shape) for shape, _ in templates], dtype=np.int64)
    capacity = int(sizes.sum())
    if n_skip > capacity:
        raise ValueError(
            f"{n_skip} skip weights requested but the {len(cands)} candidate skip blocks hold only "
            f"{capacity} (max_span={max_span}); lower the skip density or raise max_span"
        )
    # targets: destination groups with candidates, weighted by their sequential size
    targets = list(dict.fromkeys(d for _, d, _ in cands))
    seq_size = {t: sum(b.dense_params for b in graph.blocks if b.dst == t and b.kind == "sequential")
                for t in targets}
    cap = np.array([sizes[[i for i, c in enumerate(cands) if c[1] == t]].sum() for t in targets])
    per_target = _hamilton(n_skip, np.array([seq_size[t] for t in targets], float), cap) if targets \
        else np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    new_blocks = []
    for t, k_t in zip(targets, per_target):
        idx = [i for i, c in enumerate(cands) if c[1] == t]
        if k_t == 0:
            continue
        bounds = np.concatenate([[0], np.cumsum(sizes[idx])])
        flat = np.sort(rng.choice(int(bounds[-1]), size=int(k_t), replace=False))
        which = np.searchsorted(bounds, flat, side="right") - 1
        for j, i in enumerate(idx):
            pick = flat[which == j] - bounds[j]
            if pick.size == 0:
                continue  # a block without kept weights is left out
            shape, spec = templates[i]
            mask = np.zeros(int(sizes[i]), dtype=bool)
            mask[pick] = True
            src, dst, _ = cands[i]
            new_blocks.append(EdgeBlock(f"n2nskip:{src}->{dst}", src, dst, "n2nskip",
                                        mask.reshape(shape), spec=spec))
    prov = {**graph.provenance, **provenance}
    return graph.replace(blocks=_insert_blocks(graph, new_blocks), provenance=prov)


def add_n2nskip(graph: NetworkGraph, density: float, *, seed: int | None = 0,
                max_span: int | None = None, kernel_size: int = 1) -> NetworkGraph:
    """Add random sparse N2NSkip blocks holding ``density`` x the dense reference budget.

    Parameters
    ----------
    graph : NetworkGraph
        The (pruned) graph, without added skips.
    density : float
        Skip weights as a fraction of ``graph.dense_params``: exactly
        ``round(density * graph.dense_params)`` kept skip weights are added (Python's ``round``).
    seed : int or None
        Seed of the ``np.random.default_rng`` drawing the kept positions.
    max_span : int, optional
        Largest span (in weight layers) of a skip; ``None`` wires every group to every later
        non-consecutive group, as the paper's reference code did.
    kernel_size : int
        Odd kernel size ``f`` of conv skips (weight ``C_dst x C_src x f x f``). Default 1: the
        cheapest map between channel sets; the spatial map is done by pooling.

    Returns
    -------
    NetworkGraph
        A new graph with one ``n2nskip`` block per candidate pair that received at least one
        weight (named ``"n2nskip:<src>-><dst>"``), inserted after the blocks of its destination.

    Notes
    -----
    Budget: the total is split over destination groups in proportion to the dense size of their
    sequential blocks (largest-remainder rounding; a group whose candidates are full passes its
    excess on). Within a destination the kept weights are drawn uniformly without replacement
    from the entries of all its candidate blocks, i.e. every candidate block has the same
    expected density.

    Spatial map (``block.spec``): a conv skip between groups of different spatial size first
    average-pools ``a_src`` to ``dst``'s traced size (``pool="adaptive_avg"``, ``output_size``;
    for the usual integer ratios this is ``avg_pool2d`` with kernel = stride = ratio) and then
    applies the stride-1 ``f x f`` convolution with padding ``f // 2``. A skip from a channel
    group into a neuron group pools globally and is a Linear ``(dst, C_src)``; neuron to neuron
    skips are Linear masks ``(dst, src)``.

    Examples
    --------
    >>> g2 = add_n2nskip(g, 0.01, seed=0)                             # doctest: +SKIP
    >>> g2.num_params - g.num_params == round(0.01 * g.dense_params)  # doctest: +SKIP
    True
    """
    _check_graph(graph)
    if isinstance(density, bool) or not isinstance(density, (int, float, np.floating, np.integer)) \
            or not math.isfinite(density) or density < 0:
        raise ValueError(f"density must be a finite number >= 0, got {density!r}")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)) \
            or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 1, got {kernel_size!r}")
    n_skip = round(float(density) * graph.dense_params)
    return _add_n2nskip_count(
        graph, n_skip, seed=seed, max_span=max_span, kernel_size=int(kernel_size),
        provenance={"n2nskip_density": float(density), "n2nskip_params": int(n_skip),
                    "n2nskip_seed": seed, "n2nskip_max_span": max_span,
                    "n2nskip_kernel_size": int(kernel_size)},
    )


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
    spatial size is reached by adaptive average pooling (``spec["pool"]``), a channel group into a
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
    kinds = _group_kinds(graph)
    by_depth: dict[int, str] = {}
    for g in graph.groups:
        by_depth[depth[g.name]] = g.name
    chain = [by_depth[k] for k in sorted(by_depth)]
    joined = {(b.src, b.dst) for b in graph.blocks}
    new, left_out = [], []
    for i in range(start, len(chain) - span, span):
        src, dst = chain[i], chain[i + span]
        s, d = graph.group(src), graph.group(dst)
        if (src, dst) in joined or (kinds[src] == "feature" and kinds[dst] == "conv"):
            continue
        if s.size > d.size:
            left_out.append(f"{src}->{dst}")
            continue
        spec: dict[str, Any] = {"added_by": ADDED_BY["resskip"], "span": int(depth[dst] - depth[src]),
                                "type": "identity", "pad_channels": int(d.size - s.size)}
        if kinds[src] == "conv" and kinds[dst] == "feature":
            spec.update(pool="global_avg", output_size=[1, 1])
        elif kinds[src] == "conv" and not (s.spatial and s.spatial == d.spatial):
            spec.update(pool="adaptive_avg", output_size=list(d.spatial) if d.spatial else None)
        else:
            spec["pool"] = None
        new.append(EdgeBlock(f"resskip:{src}->{dst}", src, dst, "residual", None, spec=spec))
    if not new:
        raise ValueError(
            f"no ResSkip pair qualifies with span={span}, start={start}: a residual block needs "
            f"src no wider than dst (left out for width: {left_out})"
        )
    prov = {**graph.provenance, "resskip_span": int(span), "resskip_start": int(start),
            "resskip_left_out": left_out}
    return graph.replace(blocks=_insert_blocks(graph, new), provenance=prov)


# ----------------------------------------------------------------------- variant
def variant(model, method: str, density: float, *, n2nskip_fraction: float = 0.5, data=None,
            seed: int = 0, scope: str = "layerwise", max_span: int | None = None,
            kernel_size: int = 1, example_input=None) -> NetworkGraph:
    """The paper's recipe in one call: prune to ``density * (1 - f)``, trace, add N2NSkip.

    Parameters
    ----------
    model : nn.Module
        The dense reference (not modified).
    method, scope, data, seed
        Passed to :func:`n2ngraph.pruning.prune`.
    density : float in (0, 1]
        Total kept fraction of the reference budget.
    n2nskip_fraction : float in [0, 1)
        ``f``, the share of the budget given to N2NSkip connections; 0 gives the plain pruned
        graph at ``density``.
    max_span, kernel_size
        Passed to :func:`add_n2nskip`.
    example_input : Tensor, optional
        Passed to :func:`n2ngraph.trace.trace`.

    Returns
    -------
    NetworkGraph
        ``num_params`` equals exactly that of the plain network pruned by ``method`` at
        ``density`` (same seed and scope): pruning budgets are exact, so that count ``P`` is
        known without pruning (:func:`n2ngraph.pruning.kept_count`), and the skips get
        ``P - P_seq`` weights, ``P_seq`` being the count kept at ``density * (1 - f)``. Provenance records model, method, density, seed, scope and
        fraction.
    """
    from n2ngraph.pruning import kept_count, prune
    from n2ngraph.trace import trace

    if isinstance(density, bool) or not isinstance(density, (int, float, np.floating)) \
            or not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    f = n2nskip_fraction
    if isinstance(f, bool) or not isinstance(f, (int, float, np.floating)) or not 0 <= f < 1:
        raise ValueError(f"n2nskip_fraction must be in [0, 1), got {f!r}")
    target = kept_count(model, float(density), scope=scope)
    masks = prune(model, method, float(density) * (1 - f), data=data, scope=scope, seed=seed)
    tr = trace(model, masks, example_input=example_input)
    graph = tr.graph
    prov = {"model": graph.provenance.get("model", type(model).__name__), "method": method,
            "density": float(density), "seed": seed, "scope": scope,
            "n2nskip_fraction": float(f), "sequential_params": graph.num_params,
            "sequential_density": float(density) * (1 - f)}
    if f == 0:
        return graph.replace(provenance={**graph.provenance, **prov, "variant": method})
    n_skip = target - graph.num_params
    if n_skip < 0:
        raise ValueError(
            f"pruning at {density * (1 - f):.4g} kept {graph.num_params} weights, more than the "
            f"{target} kept at {density}; the method's rounding makes the budget infeasible"
        )
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 1, got {kernel_size!r}")
    return _add_n2nskip_count(
        graph, n_skip, seed=seed, max_span=max_span, kernel_size=int(kernel_size),
        provenance={**prov, "variant": f"n2nskip-{method}", "n2nskip_params": int(n_skip),
                    "n2nskip_max_span": max_span, "n2nskip_kernel_size": int(kernel_size)},
    )

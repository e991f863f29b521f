"""Structural connectivity metrics of a :class:`~n2ngraph.graph.NetworkGraph`.

Pure functions of a graph, sparse throughout (``scipy.sparse.csgraph``); no torch.

Direction
---------
Edges point from a block's ``src`` group to its ``dst`` group (``graph.edge_list()``), i.e. the
way activations flow. A node is *reachable from the input* when a directed path leads to it from
some node of the input group (``graph.groups[0]``; input nodes reach themselves), and it *reaches
the output* when a directed path leads from it to some node of the output group
(``graph.groups[-1]``). Residual blocks carry paths but no weights.

Effective weights (Vysogorets & Kempe 2021, "Connectivity matters: neural network pruning
through the lens of effective sparsity", arXiv:2107.02306): a kept weight is *effective* when it
lies on some input-to-output path, i.e. its source unit is reachable from the input and its
destination unit reaches the output. Conv blocks are counted per channel pair: every kept tap of
``mask[o, i]`` is effective when channel ``i`` -> channel ``o`` lies on such a path.

Tables are returned as dicts of equal-length columns (``pandas.DataFrame(table)`` makes a frame).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from n2ngraph.graph import EdgeBlock, NetworkGraph

__all__ = [
    "connected_components",
    "dead_units",
    "degree_stats",
    "effective_density",
    "layer_collapse",
    "layer_density",
    "reachability",
    "summary",
]


# ------------------------------------------------------------------------------ helpers
def _check(graph: Any) -> NetworkGraph:
    if not isinstance(graph, NetworkGraph):
        raise TypeError(f"expected a NetworkGraph, got {type(graph).__name__}")
    return graph


def _directed(graph: NetworkGraph) -> sp.csr_array:
    """Binary directed adjacency ``D[i, j] = 1`` when an edge runs from node ``i`` to node
    ``j``, shape ``(n, n)``, CSR."""
    src, dst, _ = graph.edge_list()
    n = graph.num_nodes
    mat = sp.coo_array((np.ones(src.size), (src, dst)), shape=(n, n)).tocsr()
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat


def _reach(directed: sp.csr_array, sources: np.ndarray) -> np.ndarray:
    """Boolean ``(n,)``: nodes reachable along ``directed`` from any of ``sources``
    (breadth-first search from a virtual node joined to every source)."""
    n = directed.shape[0]
    coo = directed.tocoo()
    rows = np.concatenate([coo.row, np.full(sources.size, n)])
    cols = np.concatenate([coo.col, sources])
    aug = sp.coo_array((np.ones(rows.size), (rows, cols)), shape=(n + 1, n + 1)).tocsr()
    order = csgraph.breadth_first_order(aug, n, directed=True, return_predecessors=False)
    out = np.zeros(n + 1, dtype=bool)
    out[order] = True
    return out[:n]


def _pair_counts(block: EdgeBlock) -> np.ndarray:
    """Kept taps per channel pair, shape ``(out, in_per_group // fold)``."""
    out, cols = block.mask.shape[:2]
    return block.mask.reshape(out, cols // block.fold, -1).sum(axis=2)


def _src_rows(block: EdgeBlock, src_flags: np.ndarray) -> np.ndarray:
    """Per-source-node flags laid out like :func:`_pair_counts`: entry ``(o, c)`` is the flag
    of the source node that column ``c`` of output ``o`` reads (conv groups expanded)."""
    out = block.mask.shape[0]
    per_group = block.mask.shape[1] // block.fold
    if block.conv_groups == 1:
        return np.broadcast_to(src_flags[None, :], (out, per_group))
    by_group = src_flags.reshape(block.conv_groups, per_group)
    return by_group[np.arange(out) // (out // block.conv_groups)]


def _block_effective(
    graph: NetworkGraph, block: EdgeBlock, fwd: np.ndarray, bwd: np.ndarray
) -> int:
    src, dst = graph.group(block.src), graph.group(block.dst)
    counts = _pair_counts(block)
    ok = _src_rows(block, fwd[src.start : src.stop]) & bwd[dst.start : dst.stop][:, None]
    return int(counts[ok].sum())


# ------------------------------------------------------------------------------ metrics
def connected_components(graph: NetworkGraph) -> dict[str, Any]:
    """Connected components of the undirected graph.

    Returns
    -------
    dict
        ``n_components`` (int); ``sizes`` (int array, descending); ``labels`` (int array
        ``(n,)``, component of each node, numbered by ``scipy.sparse.csgraph``); ``isolated``
        (nodes without any edge); ``largest_fraction`` (share of nodes in the largest component).
    """
    graph = _check(graph)
    adj = graph.adjacency()
    count, labels = csgraph.connected_components(adj, directed=False)
    sizes = np.sort(np.bincount(labels, minlength=count))[::-1]
    isolated = int(np.count_nonzero(np.diff(adj.indptr) == 0))
    return {
        "n_components": int(count),
        "sizes": sizes,
        "labels": labels,
        "isolated": isolated,
        "largest_fraction": float(sizes[0] / graph.num_nodes),
    }


def reachability(graph: NetworkGraph) -> dict[str, np.ndarray]:
    """Directed reachability: ``from_input`` and ``to_output``, boolean arrays ``(n,)``.

    ``from_input[i]``: a directed path leads from some input node to node ``i``;
    ``to_output[i]``: a directed path leads from node ``i`` to some output node.
    """
    graph = _check(graph)
    d = _directed(graph)
    return {
        "from_input": _reach(d, graph.input_nodes),
        "to_output": _reach(d.T.tocsr(), graph.output_nodes),
    }


def dead_units(graph: NetworkGraph) -> dict[str, Any]:
    """Units with no directed path from any input node or to any output node.

    Returns
    -------
    dict
        ``dead`` (bool ``(n,)``); ``n_dead``; ``dead_fraction`` (of all nodes);
        ``unreachable_from_input`` and ``cannot_reach_output`` (bool ``(n,)``, the two causes);
        ``per_group`` (``{group name: dead count}``).
    """
    graph = _check(graph)
    reach = reachability(graph)
    dead = ~(reach["from_input"] & reach["to_output"])
    return {
        "dead": dead,
        "n_dead": int(dead.sum()),
        "dead_fraction": float(dead.mean()),
        "unreachable_from_input": ~reach["from_input"],
        "cannot_reach_output": ~reach["to_output"],
        "per_group": {g.name: int(dead[g.start : g.stop].sum()) for g in graph.groups},
    }


def _effective_by_block(graph: NetworkGraph) -> dict[str, int]:
    reach = reachability(graph)
    fwd, bwd = reach["from_input"], reach["to_output"]
    return {
        b.name: _block_effective(graph, b, fwd, bwd) for b in graph.blocks if b.mask is not None
    }


def effective_density(graph: NetworkGraph) -> dict[str, Any]:
    """Kept weights lying on some input-to-output path (Vysogorets & Kempe 2021,
    arXiv:2107.02306), over the dense reference budget.

    ``effective_density = effective_params / dense_params`` where ``dense_params`` counts the
    weights of the dense sequential layers (``graph.dense_params``, as ``graph.density``) and
    ``effective_params`` the kept sequential and n2nskip weights whose source unit is reachable
    from the input and whose destination unit reaches the output.

    Returns
    -------
    dict
        ``effective_params``, ``params``, ``inactive_params`` (= params - effective),
        ``dense_params``, ``density``, ``effective_density``, ``per_block``
        (``{block name: effective params}``).
    """
    graph = _check(graph)
    per_block = _effective_by_block(graph)
    effective = sum(per_block.values())
    dense = graph.dense_params
    return {
        "effective_params": effective,
        "params": graph.num_params,
        "inactive_params": graph.num_params - effective,
        "dense_params": dense,
        "density": graph.density,
        "effective_density": effective / dense if dense else 0.0,
        "per_block": per_block,
    }


def layer_collapse(graph: NetworkGraph) -> dict[str, Any]:
    """Weight layers (sequential blocks) left without any surviving path.

    A sequential block *collapses* when none of its kept weights is effective (it keeps no
    weight, or none on an input-to-output path). The network can still carry inputs to outputs
    through skip or residual blocks around a collapsed layer, so ``inputs_reach_outputs`` is
    reported beside it.

    Returns
    -------
    dict
        ``collapsed`` (names of collapsed sequential blocks, in order); ``empty`` (those keeping
        no weight at all); ``any`` (bool); ``inputs_reach_outputs`` (a directed path leads from
        some input node to some output node; not the same as one connected component: the
        undirected graph may also hold components off that path).
    """
    graph = _check(graph)
    per_block = _effective_by_block(graph)
    sequential = graph.blocks_of_kind("sequential")
    collapsed = [b.name for b in sequential if per_block[b.name] == 0]
    reach = reachability(graph)
    return {
        "collapsed": collapsed,
        "empty": [b.name for b in sequential if b.num_params == 0],
        "any": bool(collapsed),
        "inputs_reach_outputs": bool(reach["from_input"][graph.output_nodes].any()),
    }


def layer_density(graph: NetworkGraph) -> dict[str, list]:
    """Per-block density table for the blocks with weights (sequential and n2nskip).

    Returns
    -------
    dict of equal-length lists
        ``block``, ``kind``, ``src``, ``dst``, ``shape`` (mask shape), ``dense_params``,
        ``params``, ``density`` (params / dense_params of the block), ``effective_params``,
        ``effective_density`` (effective / dense_params of the block), ``pairs`` (channel pairs
        the block can join), ``kept_pairs`` (pairs with a kept tap), ``pair_density``.
    """
    graph = _check(graph)
    per_block = _effective_by_block(graph)
    columns = (
        "block",
        "kind",
        "src",
        "dst",
        "shape",
        "dense_params",
        "params",
        "density",
        "effective_params",
        "effective_density",
        "pairs",
        "kept_pairs",
        "pair_density",
    )
    table: dict[str, list] = {c: [] for c in columns}
    for b in graph.blocks:
        if b.mask is None:
            continue
        pm = b.pair_mask()
        dense = b.dense_params
        row = (
            b.name,
            b.kind,
            b.src,
            b.dst,
            tuple(b.mask.shape),
            dense,
            b.num_params,
            b.num_params / dense,
            per_block[b.name],
            per_block[b.name] / dense,
            int(pm.size),
            int(pm.sum()),
            float(pm.mean()),
        )
        for c, v in zip(columns, row):
            table[c].append(v)
    return table


def degree_stats(graph: NetworkGraph) -> dict[str, Any]:
    """Node degrees: undirected (binary adjacency), and directed fan-in / fan-out.

    ``in_degree[j]`` counts the distinct nodes with an edge into ``j`` (from earlier groups),
    ``out_degree[i]`` the distinct nodes ``i`` feeds; ``degree`` is the row sum of the binary
    symmetric adjacency.

    Returns
    -------
    dict
        ``degree``, ``in_degree``, ``out_degree`` (int arrays ``(n,)``); ``mean``, ``std``,
        ``min``, ``max`` of ``degree``; ``isolated`` (nodes of degree 0); ``per_group``: a table
        (dict of lists) with ``group``, ``size``, ``mean_degree``, ``min_degree``,
        ``max_degree``, ``mean_in``, ``mean_out``, ``isolated``.
    """
    graph = _check(graph)
    adj = graph.adjacency()
    degree = np.diff(adj.indptr).astype(np.int64)
    d = _directed(graph)
    out_degree = np.diff(d.indptr).astype(np.int64)
    in_degree = np.bincount(d.indices, minlength=graph.num_nodes).astype(np.int64)
    per_group: dict[str, list] = {
        c: []
        for c in (
            "group",
            "size",
            "mean_degree",
            "min_degree",
            "max_degree",
            "mean_in",
            "mean_out",
            "isolated",
        )
    }
    for g in graph.groups:
        sl = slice(g.start, g.stop)
        row = (
            g.name,
            g.size,
            float(degree[sl].mean()),
            int(degree[sl].min()),
            int(degree[sl].max()),
            float(in_degree[sl].mean()),
            float(out_degree[sl].mean()),
            int(np.count_nonzero(degree[sl] == 0)),
        )
        for c, v in zip(per_group, row):
            per_group[c].append(v)
    return {
        "degree": degree,
        "in_degree": in_degree,
        "out_degree": out_degree,
        "mean": float(degree.mean()),
        "std": float(degree.std()),
        "min": int(degree.min()),
        "max": int(degree.max()),
        "isolated": int(np.count_nonzero(degree == 0)),
        "per_group": per_group,
    }


def summary(graph: NetworkGraph) -> dict[str, Any]:
    """The scalar structural metrics of a graph in one flat dict (one table row per graph).

    Keys: ``nodes``, ``edges``, ``params``, ``dense_params``, ``density``, ``effective_params``,
    ``effective_density``, ``n_components``, ``largest_fraction``, ``isolated``, ``dead_units``,
    ``dead_fraction``, ``collapsed_layers``, ``inputs_reach_outputs`` (a directed path leads from
    some input to some output; ``n_components`` counts the undirected components), ``mean_degree``.
    """
    graph = _check(graph)
    comp = connected_components(graph)
    dead = dead_units(graph)
    eff = effective_density(graph)
    collapse = layer_collapse(graph)
    return {
        "nodes": graph.num_nodes,
        "edges": graph.num_edges,
        **{k: eff[k] for k in ("params", "dense_params", "density", "effective_params", "effective_density")},
        **{k: comp[k] for k in ("n_components", "largest_fraction", "isolated")},
        "dead_units": dead["n_dead"],
        "dead_fraction": dead["dead_fraction"],
        "collapsed_layers": len(collapse["collapsed"]),
        "inputs_reach_outputs": collapse["inputs_reach_outputs"],
        "mean_degree": float(2 * graph.num_edges / graph.num_nodes),
    }

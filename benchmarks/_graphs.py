"""Layered random graphs for benchmarks, tests and doc figures, built from numpy masks.

``mlp_graph`` builds a fully connected network's ``NetworkGraph`` directly (no torch, no tracer):
sequential blocks with random masks (fan-in balanced, as the paper's RP) and, optionally, random
``n2nskip`` blocks between non-consecutive groups (docs/design.md, "N2NSkip": the skip budget is spread
over target layers in proportion to their sequential size). ``layered_adjacency`` builds the
1M-node benchmark graph as a scipy sparse adjacency (dense masks would not fit in memory).
``residual_mlp_graph`` builds a transformer-MLP-shaped ``NetworkGraph`` (width -> hidden -> width
blocks with residual sums) of any size, e.g. the ~52M edges of ViT-H/14's MLP widths.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from n2ngraph.graph import EdgeBlock, NetworkGraph, NodeGroup

__all__ = ["PAPER_MLP", "layered_adjacency", "mlp_graph", "random_mask", "residual_mlp_graph"]

#: the N2NSkip paper's MLP, 3072-512-256-128-64-10 (n = 4042)
PAPER_MLP = (3072, 512, 256, 128, 64, 10)


def random_mask(out: int, inp: int, kept: int, rng: np.random.Generator, *,
                balanced: bool = True) -> np.ndarray:
    """Boolean ``(out, inp)`` mask with ``kept`` True entries: uniformly at random, or with every
    row keeping ``kept // out`` or one more (fan-in balanced, expander-style random pruning)."""
    kept = int(min(max(kept, 0), out * inp))
    mask = np.zeros((out, inp), dtype=bool)
    if not balanced:
        mask.flat[rng.choice(out * inp, size=kept, replace=False)] = True
        return mask
    per_row = np.full(out, kept // out)
    per_row[rng.choice(out, size=kept % out, replace=False)] += 1
    for o in range(out):
        mask[o, rng.choice(inp, size=min(per_row[o], inp), replace=False)] = True
    return mask


def mlp_graph(sizes: Sequence[int] = PAPER_MLP, density: float = 1.0, seed=0, *,
              skip_fraction: float = 0.0, balanced: bool = True) -> NetworkGraph:
    """NetworkGraph of an MLP pruned at random, optionally with N2NSkip blocks.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first.
    density : float
        Total kept fraction of the dense reference's weights (sequential + n2nskip).
    seed : int or Generator
    skip_fraction : float
        Share ``f`` of the budget given to n2nskip blocks: sequential layers keep
        ``density * (1 - f)`` each, skips total ``density * f`` of the dense budget, split over
        target groups in proportion to their sequential size and, within a target, over its
        non-consecutive source groups in proportion to their size.
    balanced : bool
        Fan-in balanced sequential masks (RP); skips are always uniform random.
    """
    rng = np.random.default_rng(seed)
    sizes = [int(s) for s in sizes]
    names = ["input"] + [f"fc{i}" for i in range(1, len(sizes))]
    groups, start = [], 0
    for name, size in zip(names, sizes):
        groups.append(NodeGroup(name, start, size, (size,)))
        start += size
    seq_d = density * (1.0 - skip_fraction)
    blocks = []
    for i in range(1, len(sizes)):
        out, inp = sizes[i], sizes[i - 1]
        mask = random_mask(out, inp, round(seq_d * out * inp), rng, balanced=balanced)
        blocks.append(EdgeBlock(names[i], names[i - 1], names[i], "sequential", mask))
    dense = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))  # noqa: RUF007
    budget = density * skip_fraction * dense
    targets = list(range(2, len(sizes)))
    seq_sizes = np.array([sizes[i] * sizes[i - 1] for i in targets], dtype=float)
    for i, share in zip(targets, seq_sizes / seq_sizes.sum() if targets else []):
        srcs = list(range(i - 1))
        src_w = np.array([sizes[s] for s in srcs], dtype=float)
        for s, w in zip(srcs, src_w / src_w.sum()):
            kept = round(budget * share * w)
            if kept == 0:
                continue
            mask = random_mask(sizes[i], sizes[s], kept, rng, balanced=False)
            blocks.append(EdgeBlock(f"skip_{names[s]}_{names[i]}", names[s], names[i], "n2nskip", mask))
    return NetworkGraph(tuple(groups), tuple(blocks),
                        {"model": "mlp", "density": density, "seed": str(seed),
                         "skip_fraction": skip_fraction})


def layered_adjacency(n_layers: int, width: int, fan_in: int, seed=0) -> sp.csr_array:
    """Symmetric binary adjacency of a layered random graph: ``n_layers`` groups of ``width``
    nodes, every node of layer ``l + 1`` joined to ``fan_in`` random nodes of layer ``l``
    (duplicates merged). ``n = n_layers * width``, about ``(n_layers - 1) * width * fan_in``
    edges. Built block by block in int32 to stay small in memory."""
    rng = np.random.default_rng(seed)
    n = n_layers * width
    rows, cols = [], []
    for layer in range(1, n_layers):
        dst = np.repeat(np.arange(layer * width, (layer + 1) * width, dtype=np.int32), fan_in)
        src = rng.integers((layer - 1) * width, layer * width, size=dst.size, dtype=np.int32)
        rows += [dst, src]
        cols += [src, dst]
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    del rows, cols
    W = sp.csr_array((np.ones(r.size), (r, c)), shape=(n, n))
    del r, c
    W.sum_duplicates()
    W.data[:] = 1.0
    return W


def residual_mlp_graph(width: int = 1280, hidden: int = 5120, n_blocks: int = 4) -> NetworkGraph:
    """NetworkGraph of ``n_blocks`` dense residual MLP blocks ``x + fc2(fc1(x))`` (as in a
    transformer, ViT-H/14: 1280 -> 5120 -> 1280), traced-graph style: groups ``input``,
    ``fc1_k`` (hidden) and ``sum_k`` (width); ``fc2_k`` targets the sum's group and the previous
    width group joins it by a ``residual`` block. Every mask is dense (a model at random
    initialisation), so the graph has ``n_blocks * (2 * width * hidden + width)`` edges."""
    groups = [NodeGroup("input", 0, width, (width,))]
    blocks = []
    prev, start = "input", width
    for k in range(1, n_blocks + 1):
        groups += [NodeGroup(f"fc1_{k}", start, hidden, (hidden,)),
                   NodeGroup(f"sum_{k}", start + hidden, width, (width,))]
        start += hidden + width
        blocks += [EdgeBlock(f"fc1_{k}", prev, f"fc1_{k}", "sequential", np.ones((hidden, width), bool)),
                   EdgeBlock(f"fc2_{k}", f"fc1_{k}", f"sum_{k}", "sequential",
                             np.ones((width, hidden), bool)),
                   EdgeBlock(f"sum_{k}.residual", prev, f"sum_{k}", "residual")]
        prev = f"sum_{k}"
    return NetworkGraph(tuple(groups), tuple(blocks), {"model": "residual_mlp"})

"""Figures (matplotlib, headless Agg). The only module of the library that imports matplotlib.

Adjacency figures never densify the n x n matrix: edges are binned into a ``bins x bins`` image
straight from the sparse coordinates, so a 1M-node graph draws in the memory of its edge list.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from n2ngraph.graph import BLOCK_KINDS, NetworkGraph  # noqa: E402

__all__ = ["KIND_COLORS", "adjacency_image", "plot_accuracy", "plot_adjacency", "plot_compare", "plot_scree",
           "save_figure"]

#: Colour of each block kind in adjacency figures.
KIND_COLORS = {"sequential": "#1f4e9c", "n2nskip": "#d7301f", "residual": "#2ca25f"}


def adjacency_image(graph: NetworkGraph, kind: str | None = None, *, bins: int = 600) -> np.ndarray:
    """Edge counts of ``graph`` binned into a ``(b, b)`` image, ``b = min(bins, n)``.

    Pixel ``(r, c)`` counts the directed-and-mirrored edges whose endpoints fall in node ranges
    ``r`` and ``c`` (node order as in the graph); ``kind`` restricts to one block kind.
    """
    n = graph.num_nodes
    b = max(1, min(int(bins), n))
    image = np.zeros((b, b), dtype=np.float64)
    scale = b / n
    for block in graph.blocks:
        if kind is not None and block.kind != kind:
            continue
        src_group, dst_group = graph.group(block.src), graph.group(block.dst)
        r, c, _ = block.local_pairs(src_group.size)
        rows = ((r + dst_group.start) * scale).astype(np.int64)
        cols = ((c + src_group.start) * scale).astype(np.int64)
        np.add.at(image, (rows, cols), 1.0)
        np.add.at(image, (cols, rows), 1.0)
    return image


def plot_adjacency(graphs: NetworkGraph | Sequence[NetworkGraph], titles: Sequence[str] | None = None,
                   *, bins: int = 600, panel_size: float = 4.0, path: str | os.PathLike | None = None):
    """Adjacency of one or more graphs side by side (the paper's Figure 3).

    Each panel shows the binned adjacency (nodes in topological order, input top-left), one
    colour per block kind (:data:`KIND_COLORS`), shade = log edge count per pixel, and thin
    lines at group boundaries. Returns the matplotlib Figure; saves PNG and PDF when ``path``
    is given (see :func:`save_figure`).
    """
    if isinstance(graphs, NetworkGraph):
        graphs = [graphs]
    graphs = list(graphs)
    if not graphs:
        raise ValueError("plot_adjacency needs at least one graph")
    if titles is not None and len(titles) != len(graphs):
        raise ValueError(f"{len(titles)} titles for {len(graphs)} graphs")
    fig, axes = plt.subplots(1, len(graphs), figsize=(panel_size * len(graphs), panel_size + 0.4),
                             squeeze=False)
    for k, (ax, graph) in enumerate(zip(axes[0], graphs)):
        n = graph.num_nodes
        for kind in BLOCK_KINDS:
            image = adjacency_image(graph, kind, bins=bins)
            if not image.any():
                continue
            shade = np.ma.masked_equal(np.log1p(image), 0)
            cmap = ListedColormap([KIND_COLORS[kind]])
            ax.imshow(shade, cmap=cmap, interpolation="nearest", extent=(0, n, n, 0),
                      alpha=0.85, label=kind)
        for g in graph.groups[1:]:
            ax.axhline(g.start, color="0.8", lw=0.4)
            ax.axvline(g.start, color="0.8", lw=0.4)
        ax.set_xlim(0, n)
        ax.set_ylim(n, 0)
        title = titles[k] if titles else graph.provenance.get("label", graph.provenance.get("model", ""))
        ax.set_title(f"{title}\n{graph.num_params:,} weights, density {graph.density:.3g}", fontsize=9)
        ax.set_xlabel("node")
        ax.set_ylabel("node")
    handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_COLORS[kind]) for kind in BLOCK_KINDS]
    fig.legend(handles, BLOCK_KINDS, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig, path: str | os.PathLike, *, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix in ``formats`` (atomically) and close it."""
    from n2ngraph.io import atomic_write

    base = Path(path)
    if base.suffix.lstrip(".") in formats:
        base = base.with_suffix("")
    written = []
    for fmt in formats:
        target = base.with_name(f"{base.name}.{fmt}")
        atomic_write(target, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=dpi))
        written.append(target)
    plt.close(fig)
    return written


def plot_compare(summary, *, columns: Sequence[str] | None = None,
                 path: str | os.PathLike | None = None, log: bool = True):
    """Sweep summary (``n2ngraph.compare.summarize``) against density, one panel per column.

    One colour per pruning method; solid lines for plain pruning, dashed for the N2NSkip
    variant at the same budget; error bars are the standard deviation over seeds. By default the
    panels are every ``F(t=...)`` column and the number of connected components.
    """
    if columns is None:
        columns = [c for c in summary.columns if c.startswith("F(t=") and not c.endswith("_std")]
        columns.append("n_components")
    columns = [c for c in columns if c in summary.columns]
    if not columns:
        raise ValueError("plot_compare: the summary has none of the requested columns")
    methods = list(dict.fromkeys(summary["method"]))
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        for k, method in enumerate(methods):
            for variant, style in (("plain", "-"), ("n2nskip", "--")):
                part = summary[(summary["method"] == method) & (summary["variant"] == variant)]
                if part.empty:
                    continue
                part = part.sort_values("density")
                err = part.get(f"{column}_std")
                ax.errorbar(part["density"], part[column], yerr=None if err is None else err.fillna(0),
                            color=colors(k % 10), ls=style, marker="o", ms=3, capsize=2,
                            label=f"{method}{' + N2NSkip' if variant == 'n2nskip' else ''}")
        ax.set_xscale("log")
        densities = sorted(set(summary["density"]))
        ax.set_xticks(densities, [f"{d:g}" for d in densities])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if log and (summary[column] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("density (kept fraction)")
        ax.set_title(column, fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=7,
               frameon=False)
    rows = math.ceil(len(labels) / min(6, max(1, len(labels))))
    fig.tight_layout(rect=(0, 0.05 + 0.04 * rows, 1, 1))
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_scree(curves, *, path: str | os.PathLike | None = None, log_k: bool = True):
    """Scree diagrams ``alpha(K, t)`` against ``K`` (% of the n eigenvalues), one panel per ``t``
    (the paper's Figure 4).

    ``curves`` is a long table (DataFrame) with columns ``graph``, ``t``, ``K_percent`` and
    ``alpha``; one line per graph (in order of appearance), the dense reference first by
    convention. Panel titles state ``t`` (and ``t * lambda_2`` of the reference when a
    ``t_lambda2`` column is present). Returns the Figure; saves PNG and PDF when ``path`` is given.
    """
    needed = {"graph", "t", "K_percent", "alpha"}
    missing = needed - set(curves.columns)
    if missing:
        raise ValueError(f"plot_scree: curves lack column(s) {sorted(missing)}; need {sorted(needed)}")
    times = list(dict.fromkeys(curves["t"]))
    graphs = list(dict.fromkeys(curves["graph"]))
    if not times:
        raise ValueError("plot_scree: no curves to draw")
    colors = plt.get_cmap("tab10")
    styles = ["-", "--", "-.", ":"]
    fig, axes = plt.subplots(1, len(times), figsize=(3.8 * len(times), 3.5), squeeze=False)
    for ax, t in zip(axes[0], times):
        at_t = curves[curves["t"] == t]
        for k, name in enumerate(graphs):
            part = at_t[at_t["graph"] == name].sort_values("K_percent")
            if part.empty:
                continue
            ax.plot(part["K_percent"], part["alpha"], color=colors(k % 10), ls=styles[k % 4],
                    marker="o", ms=2.5, lw=1.2, label=name)
        title = f"t = {t:.4g}"
        if "t_lambda2" in at_t.columns and at_t["t_lambda2"].notna().any():
            title += f"  (t·λ2,ref = {at_t['t_lambda2'].iloc[0]:.3g})"
        ax.set_title(title, fontsize=9)
        if log_k:
            ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("K (% of eigenvalues)")
        ax.set_ylabel("α(K, t)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_accuracy(summary, *, path: str | os.PathLike | None = None, metric: str = "test_acc"):
    """Accuracy against density, plain pruning vs N2NSkip at the same budget (the paper's
    Figure 5).

    ``summary`` is a table with columns ``method`` (base pruning method), ``variant``
    (``plain`` / ``n2nskip``; ``dense`` rows are drawn as a horizontal band), ``density``,
    ``label``, ``<metric>_mean`` and ``<metric>_std``, and optionally ``init``. One panel per base
    method (and init, when there are several); solid line plain, dashed N2NSkip; error bars are
    the standard deviation over seeds. Returns the Figure; saves PNG and PDF when ``path`` is given.
    """
    mean, std = f"{metric}_mean", f"{metric}_std"
    needed = {"method", "variant", "density", "label", mean, std}
    missing = needed - set(summary.columns)
    if missing:
        raise ValueError(f"plot_accuracy: summary lacks column(s) {sorted(missing)}; need {sorted(needed)}")
    dense = summary[summary["variant"] == "dense"]
    sparse = summary[summary["variant"] != "dense"]
    if sparse.empty:
        raise ValueError("plot_accuracy: no pruned runs to draw")
    inits = list(dict.fromkeys(sparse["init"])) if "init" in sparse.columns else [None]
    methods = list(dict.fromkeys(sparse["method"]))
    fig, axes = plt.subplots(len(inits), len(methods), figsize=(4.0 * len(methods), 3.4 * len(inits)),
                             squeeze=False)
    colors = {"plain": "#1f4e9c", "n2nskip": "#d7301f"}
    densities = sorted(set(sparse["density"]))
    for r, init in enumerate(inits):
        for c, method in enumerate(methods):
            ax = axes[r][c]
            part = sparse[sparse["method"] == method]
            if init is not None:
                part = part[part["init"] == init]
            for variant, style in (("plain", "-"), ("n2nskip", "--")):
                line = part[part["variant"] == variant].sort_values("density")
                if line.empty:
                    continue
                ax.errorbar(line["density"], line[mean], yerr=line[std].fillna(0), ls=style,
                            color=colors[variant], marker="o", ms=4, capsize=3,
                            label=str(line["label"].iloc[0]))
            if not dense.empty:
                d = dense.iloc[0]
                ax.axhline(d[mean], color="0.3", lw=1, ls=":", label="dense")
                if np.isfinite(d[std]):
                    ax.axhspan(d[mean] - d[std], d[mean] + d[std], color="0.5", alpha=0.15, lw=0)
            ax.set_xscale("log")
            ax.set_xticks(densities, [f"{x:g}" for x in densities])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel("density (kept fraction)")
            ax.set_ylabel(metric.replace("_", " "))
            title = str(method) if init is None else f"{method}, init={init}"
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig

"""Figures (matplotlib, headless). The only module of the library that imports matplotlib.

Every function draws on its own :class:`matplotlib.figure.Figure` (no ``pyplot`` state, no global
backend switch: importing n2ngraph never changes the backend a user or a notebook has chosen) and
returns it; with ``path`` it also writes PNG and PDF atomically.

Adjacency figures never densify the n x n matrix: edges are binned into a ``bins x bins`` image
straight from the sparse coordinates, so a 1M-node graph draws in the memory of its edge list.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator

from n2ngraph.graph import BLOCK_KINDS, EdgeBlock, NetworkGraph

__all__ = ["DISPLAY_KINDS", "KIND_COLORS", "TRAIN_CURVE_COLUMNS", "adjacency_image", "display_kind",
           "group_labels", "paired_delta", "plot_accuracy", "plot_accuracy_vs_distance",
           "plot_adjacency", "plot_compare", "plot_delta_f", "plot_methods", "plot_scree",
           "plot_train_curve", "save_figure", "VARIANT_COLORS"]

#: Parameter-free joins drawn apart from identity shortcuts (``add``, ``sub``), by the
#: ``spec.op`` of their ``residual`` block (docs/design.md, graph semantics): the channel joins of a
#: concatenation (of channels, or of tokens), a gate ``x * s`` (squeeze-and-excitation), channel
#: routing (a slice, split or chunk of channel ranges; a channel shuffle) and the joins of q, k and
#: v into an attention group.
_JOIN_OPS = {"concat": "concat", "tokens": "concat", "mul": "gate", "slice": "routing",
             "shuffle": "routing", "attention": "attention"}

#: Kinds drawn in adjacency figures: the graph's block kinds (:data:`~n2ngraph.graph.BLOCK_KINDS`)
#: and the joins of :data:`_JOIN_OPS`.
DISPLAY_KINDS = (*BLOCK_KINDS, *(k for k in dict.fromkeys(_JOIN_OPS.values()) if k not in BLOCK_KINDS))

#: Colour of each display kind in adjacency figures.
KIND_COLORS = {"sequential": "#1f4e9c", "n2nskip": "#d7301f", "residual": "#2ca25f",
               "concat": "#9e6ac8", "gate": "#e08214", "routing": "#8c6d31", "attention": "#17becf"}

_KIND_LABELS = {"sequential": "weight layer", "n2nskip": "N2NSkip", "residual": "residual shortcut",
                "concat": "concatenation", "gate": "gate (x * s)",
                "routing": "channel slice / shuffle", "attention": "attention (q, k, v)"}

#: Above this many node groups an adjacency figure labels stages (runs of groups of one spatial
#: size) instead of every group, so deep nets stay readable.
_MAX_LABELLED_GROUPS = 16

_F_COLUMN = re.compile(r"^F\(t=(.+)\)$")


def display_kind(block: EdgeBlock) -> str:
    """The :data:`DISPLAY_KINDS` entry of ``block``: its kind, or for a parameter-free join that
    is not a shortcut the kind its ``spec.op`` names in :data:`_JOIN_OPS` (``"concat"``,
    ``"gate"``, ``"routing"``, ``"attention"``)."""
    if block.kind == "residual" and block.spec.op in _JOIN_OPS:
        return _JOIN_OPS[block.spec.op]
    return block.kind


def _tick_text(value: float, _pos=None) -> str:
    return f"{value:g}"


def _readable_log_axis(axis, low: float | None = None, high: float | None = None) -> None:
    """Log ticks labelled as plain numbers (``0.01``, ``1``, ``100``), no minor labels: at
    every decade, and also at 2 and 5 times each decade when the data (``low`` to ``high``)
    span less than two decades, so a short range still shows several labelled ticks."""
    short = low is not None and high is not None and low > 0 and high < 100 * low
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if short else (1.0,)))
    axis.set_major_formatter(FuncFormatter(_tick_text))
    axis.set_minor_formatter(NullFormatter())


def _suptitle(fig: Figure, title: str | None) -> float:
    """Put ``title`` above the panels; returns the top of the panel area (figure fraction) for
    ``tight_layout``, which itself leaves room below a figure title."""
    if title:
        fig.suptitle(title, fontsize=9)
    return 1.0


# ------------------------------------------------------------------------------- adjacency
def adjacency_image(graph: NetworkGraph, kind: str | None = None, *, bins: int = 600) -> np.ndarray:
    """Edge counts of ``graph`` binned into a ``(b, b)`` image, ``b = min(bins, n)``.

    Pixel ``(r, c)`` counts the directed-and-mirrored edges whose endpoints fall in node ranges
    ``r`` and ``c`` (node order as in the graph); ``kind`` restricts to one entry of
    :data:`DISPLAY_KINDS` (``"residual"`` then excludes concatenation joins).
    """
    if kind is not None and kind not in DISPLAY_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {DISPLAY_KINDS}")
    n = graph.num_nodes
    b = max(1, min(int(bins), n))
    image = np.zeros((b, b), dtype=np.float64)
    scale = b / n
    for block in graph.blocks:
        if kind is not None and display_kind(block) != kind:
            continue
        src_group, dst_group = graph.group(block.src), graph.group(block.dst)
        r, c, _ = block.local_pairs(src_group.size, dst_group.size)
        rows = ((r + dst_group.start) * scale).astype(np.int64)
        cols = ((c + src_group.start) * scale).astype(np.int64)
        np.add.at(image, (rows, cols), 1.0)
        np.add.at(image, (cols, rows), 1.0)
    return image


def group_labels(graph: NetworkGraph) -> dict[str, str]:
    """Display name of every node group: its name (the module path of the layer that writes it,
    ``layer2.0.conv1``), except where that path is only indices (the layers of a bare
    ``nn.Sequential``: ``1``, ``3``, ``5``), which are named by layer type and rank instead
    (``Linear 1``, ``Linear 2``, ...). ``input`` stays ``input``."""
    writers: dict[str, str] = {}
    for block in graph.blocks:
        if block.kind == "sequential":
            writers.setdefault(block.dst, block.spec.op or "layer")
    counts: dict[str, int] = {}
    labels = {}
    for g in graph.groups:
        op = writers.get(g.name)
        if op is not None and all(part.isdigit() for part in g.name.split(".")):
            counts[op] = counts.get(op, 0) + 1
            labels[g.name] = f"{op} {counts[op]}"
        else:
            labels[g.name] = g.name
    return labels


def _stages(groups) -> list[list]:
    """``[key, [groups]]`` runs of consecutive groups with one traced spatial size (``key``;
    ``"features"`` for neuron groups). A run between two runs of one size (the 1 x 1 squeeze of
    a squeeze-and-excitation block inside a stage) is part of that stage."""
    stages: list[list] = []
    for g in groups:
        key = g.spatial if g.spatial else "features"
        if stages and stages[-1][0] == key:
            stages[-1][1].extend([g])
        elif len(stages) >= 2 and stages[-2][0] == key:  # A B A: B was a detour inside A
            detour = stages.pop()
            stages[-1][1].extend([*detour[1], g])
        else:
            stages.append([key, [g]])
    return stages


def _main_module(members, depth: int) -> str:
    """The module path (first ``depth`` parts of the group names) holding most of the nodes of
    ``members``."""
    nodes: dict[str, int] = {}
    for g in members:
        prefix = ".".join(g.name.split(".")[:depth])
        nodes[prefix] = nodes.get(prefix, 0) + g.size
    return max(nodes, key=nodes.get)


def _layer_marks(graph: NetworkGraph) -> tuple[list[int], list[tuple[float, str]]]:
    """Boundary positions and ``(centre, label)`` ticks for the axes of an adjacency figure.

    Up to :data:`_MAX_LABELLED_GROUPS` groups (or a deeper net of one spatial size): every group
    is bounded and labelled with its display name (:func:`group_labels`). Deeper nets: groups
    are gathered into stages
    (consecutive groups with the same traced spatial size, and the neuron groups after them),
    each labelled by the top-level module holding most of its nodes (``layer2 (16x16)``).
    Labels of groups too thin to hold their own (centres within 3% of the nodes of the previous
    label) are joined to that label (``a, b``; ``a … c`` for three or more).
    """
    groups = graph.groups
    names = group_labels(graph)
    stages = _stages(groups) if len(groups) > _MAX_LABELLED_GROUPS else []
    if len(stages) < 2:  # few groups, or a deep net of one spatial size (a deep MLP)
        bounds = [g.start for g in groups[1:]]
        spans = [(g.start, g.stop, names[g.name]) for g in groups]
    else:
        bounds = [members[0].start for _, members in stages[1:]]
        names_at = {depth: [_main_module(members, depth) for _, members in stages] for depth in (1, 2)}
        # one top-level module for every stage (torchvision's `features`) says little: name the
        # stages one level down when those names are words (`features.denseblock2`), not indices
        spatial = [k for k, (key, _) in enumerate(stages) if key != "features" and names_at[1][k] != "input"]
        deeper = len(spatial) > 1 and len({names_at[1][k] for k in spatial}) == 1 and not any(
            names_at[2][k].split(".")[-1].isdigit() for k in spatial)
        spans = []
        for k, (key, members) in enumerate(stages):
            where = "x".join(map(str, key)) if key != "features" else "neurons"
            spans.append((members[0].start, members[-1].stop,
                          f"{names_at[2 if deeper else 1][k]} ({where})"))
    runs: list[tuple[float, list[str]]] = []  # (centre, labels too close to stand apart)
    gap = 0.03 * graph.num_nodes
    for start, stop, label in spans:
        centre = (start + stop) / 2
        if runs and centre - runs[-1][0] < gap:
            runs[-1][1].append(label)
        else:
            runs.append((centre, [label]))
    ticks = [(centre, ", ".join(labels) if len(labels) <= 2 else f"{labels[0]} … {labels[-1]}")
             for centre, labels in runs]
    return bounds, ticks


def plot_adjacency(graphs: NetworkGraph | Sequence[NetworkGraph], titles: Sequence[str] | None = None,
                   *, bins: int = 600, panel_size: float = 4.5, path: str | os.PathLike | None = None,
                   title: str | None = None) -> Figure:
    """Adjacency of one or more graphs side by side (the paper's Figure 3).

    Each panel shows the binned adjacency (nodes in topological order, the input top-left), one
    colour per kind of connection (:data:`KIND_COLORS`; the legend lists only kinds present),
    shade = log edge count per pixel. Axes are labelled with the layers (node groups) the nodes
    belong to; nets with more than 16 groups are labelled and bounded by stage (groups of one
    spatial size). ``title`` goes above all panels; ``titles`` name the panels (default: the
    graph's provenance). Returns the Figure; saves PNG and PDF when ``path`` is given.
    """
    if isinstance(graphs, NetworkGraph):
        graphs = [graphs]
    graphs = list(graphs)
    if not graphs:
        raise ValueError("plot_adjacency needs at least one graph")
    if titles is not None and len(titles) != len(graphs):
        raise ValueError(f"{len(titles)} titles for {len(graphs)} graphs")
    fig = Figure(figsize=(panel_size * len(graphs) + 1.2, panel_size + 1.6))
    axes = fig.subplots(1, len(graphs), squeeze=False)[0]
    present: list[str] = []
    for k, (ax, graph) in enumerate(zip(axes, graphs)):
        n = graph.num_nodes
        for kind in DISPLAY_KINDS:
            image = adjacency_image(graph, kind, bins=bins)
            if not image.any():
                continue
            if kind not in present:
                present.append(kind)
            shade = np.ma.masked_equal(np.log1p(image), 0)
            ax.imshow(shade, cmap=ListedColormap([KIND_COLORS[kind]]), interpolation="nearest",
                      extent=(0, n, n, 0), alpha=0.85)
        bounds, ticks = _layer_marks(graph)
        for b in bounds:
            ax.axhline(b, color="0.75", lw=0.4)
            ax.axvline(b, color="0.75", lw=0.4)
        ax.set_xlim(0, n)
        ax.set_ylim(n, 0)
        positions, labels = zip(*ticks)
        ax.set_xticks(positions, labels, rotation=90, fontsize=5)
        ax.set_yticks(positions, labels, fontsize=5)
        ax.tick_params(length=0)
        prov = graph.provenance
        name = titles[k] if titles else prov.get("label", prov.get("model", ""))
        ax.set_title(f"{name}\n{graph.num_params:,} weights, density {graph.density:.3g}", fontsize=8)
        ax.set_xlabel("source layer (nodes in topological order)", fontsize=7)
        if k == 0:
            ax.set_ylabel("target layer", fontsize=7)
    handles = [Rectangle((0, 0), 1, 1, color=KIND_COLORS[kind]) for kind in present]
    fig.legend(handles, [_KIND_LABELS[kind] for kind in present], loc="lower center",
               ncol=max(1, len(present)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, _suptitle(fig, title)))
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, *, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix in ``formats`` (atomically); returns the paths."""
    from n2ngraph.io import atomic_write

    base = Path(path)
    if base.suffix.lstrip(".") in formats:
        base = base.with_suffix("")
    written = []
    for fmt in formats:
        target = base.with_name(f"{base.name}.{fmt}")
        atomic_write(target, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=dpi))
        written.append(target)
    return written


# --------------------------------------------------------------------------------- sweeps
_LAMBDA_2 = re.compile(r"(?<![A-Za-z_])l2\b")

#: Display names of sweep columns (y-axis labels and panel titles).
_COLUMN_LABELS = {"n_components": "connected components", "dead_units": "dead units",
                  "dead_fraction": "dead fraction of units", "effective_density": "effective density",
                  "collapsed_layers": "collapsed layers", "lambda_2": "λ2", "lambda_2/ref": "λ2 / λ2(ref)",
                  "isolated": "isolated units", "saturation_time": "saturation time"}


def _column_title(column: str) -> str:
    """Panel title of a sweep column: ``F(t=1/λ2)`` for ``F(t=1/l2)`` (also with a prefix such as
    ``trained F(t=1/l2)``), names in words."""
    if _F_COLUMN.match(column.removeprefix("trained ")):
        return _LAMBDA_2.sub("λ2", column)
    return _COLUMN_LABELS.get(column, column.replace("_", " "))


def _column_label(column: str) -> str:
    """y-axis label of a sweep column."""
    match = _F_COLUMN.match(column)
    if match:
        return f"F at t = {_LAMBDA_2.sub('λ2', match.group(1))}\n(lower: closer to reference)"
    return _column_title(column)


def _distinct(table, key: str) -> list[str]:
    if key not in getattr(table, "columns", ()):
        return []
    return list(dict.fromkeys(str(v) for v in table[key]))


def _sweep_title(table, title: str | None) -> str | None:
    """``title``, or what the sweep in ``table`` is: model, recipe, calibration data (when a
    data-driven pruning method is drawn), seeds, and ``lambda_2`` of the reference (from the
    columns and from ``table.attrs``, the sweep's metadata, where present)."""
    if title is not None:
        return title
    attrs = getattr(table, "attrs", None) or {}
    config = attrs.get("config") or {}
    parts = []
    models = _distinct(table, "model") or ([str(config["model"])] if config.get("model") else [])
    if models:
        parts.append(f"model {', '.join(models)}")
    recipes = _distinct(table, "recipe")
    if recipes:
        parts.append(f"recipe {', '.join(recipes)}")
    dataset = config.get("dataset")
    if dataset:
        from n2ngraph.pruning import METHODS

        data_driven = [m for m in _distinct(table, "method") if m in METHODS and METHODS[m].needs_data]
        if data_driven:
            parts.append(f"calibration data {dataset} ({', '.join(data_driven)})")
    if "seeds" in getattr(table, "columns", ()):
        seeds = int(np.nanmax(np.asarray(table["seeds"], float)))
    elif "seed" in getattr(table, "columns", ()):
        seeds = len(set(table["seed"]))
    else:
        seeds = 0
    if seeds:
        parts.append(f"{seeds} seed{'s' if seeds != 1 else ''}")
    lam = attrs.get("lambda_2_reference")
    if lam is not None and np.isfinite(lam):
        parts.append(f"λ2(reference) = {lam:.4g}")
    return ", ".join(parts) or None


def _varying_columns(table, columns: Sequence[str]) -> tuple[list[str], dict[str, float]]:
    """Split ``columns`` of ``table`` into those worth a panel and ``{column: value}`` of those
    whose value is the same in every row (and whose spread over seeds, if given, is zero): a
    panel of them shows nothing, a note says the value. When every column is constant, all keep
    their panels and no note is made."""
    constant = {}
    for column in columns:
        values = np.asarray(table[column], float)
        std = np.asarray(table[f"{column}_std"], float) if f"{column}_std" in table.columns else np.zeros(1)
        finite = values[np.isfinite(values)]
        if finite.size == values.size and finite.size and np.ptp(finite) == 0 \
                and not np.nan_to_num(std).any():
            constant[column] = float(finite[0])
    if len(constant) == len(columns):
        return list(columns), {}
    return [c for c in columns if c not in constant], constant


def _series(summary, method: str, variant: str, column: str):
    """The rows of one method and variant by density, and the error bars of ``column`` (its
    ``_std`` column, NaN as 0; None without one)."""
    part = summary[(summary["method"] == method) & (summary["variant"] == variant)].sort_values("density")
    std = part.get(f"{column}_std")
    return part, None if std is None else np.nan_to_num(np.asarray(std, float))


def _with_note(heading: str | None, constant: dict[str, float]) -> str | None:
    if not constant:
        return heading
    note = "not drawn, the same in every cell: " + ", ".join(
        f"{_column_title(c)} = {v:g}" for c, v in constant.items())
    return f"{heading}\n{note}" if heading else note


def _method_colors(methods: Sequence[str]) -> dict[str, tuple]:
    palette = colormaps["tab10"]
    return {m: palette(k % 10) for k, m in enumerate(methods)}


def _variant_legend(fig: Figure, methods: Sequence[str], colors: dict, *,
                    styles: str | None = "lines") -> int:
    """One legend: a colour per method, then how each variant is drawn (``styles``: ``"lines"``
    solid / dashed, ``"markers"`` circles / squares, None: not shown)."""
    handles = [Line2D([], [], color=colors[m], lw=2) for m in methods]
    labels = list(methods)
    if styles == "lines":
        handles += [Line2D([], [], color="0.2", ls="-", marker="o", ms=3),
                    Line2D([], [], color="0.2", ls="--", marker="s", ms=3)]
        labels += ["plain pruning (solid)", "+ N2NSkip, same budget (dashed)"]
    elif styles == "markers":
        handles += [Line2D([], [], color="0.2", ls="none", marker="o", ms=4),
                    Line2D([], [], color="0.2", ls="none", marker="s", ms=4)]
        labels += ["plain pruning (circle)", "+ N2NSkip, same budget (square)"]
    ncol = min(8, len(labels))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    return math.ceil(len(labels) / ncol)


def _panel_grid(panels: int) -> tuple[Figure, np.ndarray]:
    """A figure with ``panels`` axes, at most four per row, rows as full as possible; spare
    axes are hidden."""
    nrows = math.ceil(panels / 4)
    ncols = math.ceil(panels / nrows)  # balanced rows: 6 panels as 2 x 3, not 4 + 2
    fig = Figure(figsize=(3.9 * ncols, 3.3 * nrows + 0.9))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes


def plot_compare(summary, *, columns: Sequence[str] | None = None,
                 path: str | os.PathLike | None = None, log: bool = True,
                 title: str | None = None) -> Figure:
    """Sweep summary (``n2ngraph.compare.summarize``) against density, one panel per column.

    One colour per pruning method; solid lines for plain pruning, dashed for the N2NSkip
    variant at the same budget (both shown in the legend); error bars are the standard deviation
    over seeds (``<column>_std``). By default the panels are every ``F(t=...)`` column and the
    number of connected components. A sweep at a single density is drawn per method instead of
    against density (circles plain, squares N2NSkip). A column is drawn on a log axis when
    ``log`` and its values are positive and span more than a factor of 10. A column with the
    same value in every row gets no panel; the title says its value. The title (default: model,
    recipe, calibration data, seeds, ``lambda_2`` of the reference, :func:`_sweep_title`) goes
    above the panels.
    """
    if columns is None:
        columns = [c for c in summary.columns if _F_COLUMN.match(c) and not c.endswith("_std")]
        columns.append("n_components")
    columns = [c for c in columns if c in summary.columns]
    if not columns:
        raise ValueError("plot_compare: the summary has none of the requested columns")
    columns, constant = _varying_columns(summary, columns)
    methods = list(dict.fromkeys(summary["method"]))
    colors = _method_colors(methods)
    densities = sorted(set(float(d) for d in summary["density"]))
    single = len(densities) == 1
    fig, axes = _panel_grid(len(columns))
    for ax, column in zip(axes, columns):
        for k, method in enumerate(methods):
            for variant, style, marker, shift in (("plain", "-", "o", -0.12), ("n2nskip", "--", "s", 0.12)):
                part, err = _series(summary, method, variant, column)
                if part.empty:
                    continue
                x = np.full(len(part), k + shift) if single else np.asarray(part["density"], float)
                ax.errorbar(x, np.asarray(part[column], float), yerr=err, color=colors[method],
                            ls="none" if single else style, marker=marker, ms=4, capsize=2, lw=1.2)
        if single:
            ax.set_xticks(range(len(methods)), methods, rotation=30, fontsize=7)
            ax.set_xlabel(f"method (density {densities[0]:g})", fontsize=8)
        else:
            ax.set_xscale("log")
            ax.set_xticks(densities, [f"{d:g}" for d in densities])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel("density (kept fraction)", fontsize=8)
        _value_axis(ax, np.asarray(summary[column], float), log)
        ax.set_ylabel(_column_label(column), fontsize=8)
        ax.set_title(_column_title(column), fontsize=9)
        ax.grid(alpha=0.3)
    rows = _variant_legend(fig, methods, colors, styles="markers" if single else "lines")
    heading = _with_note(_sweep_title(summary, title), constant)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * rows, 1, _suptitle(fig, heading)))
    if path is not None:
        save_figure(fig, path)
    return fig


def _value_axis(ax, values: np.ndarray, log: bool) -> None:
    """A log y-axis with readable ticks when ``log`` and the finite ``values`` are positive and
    span more than a factor of 10; linear otherwise."""
    values = values[np.isfinite(values)]
    if log and values.size and (values > 0).all() and values.max() > 10 * values.min():
        ax.set_yscale("log")
        _readable_log_axis(ax.yaxis, float(values.min()), float(values.max()))


#: Colours of the two variants where each panel shows one method (plain blue, N2NSkip red).
VARIANT_COLORS = {"plain": "#1f4e9c", "n2nskip": "#d7301f"}


def plot_methods(summary, metrics: Sequence[str], *, path: str | os.PathLike | None = None,
                 log: bool = True, title: str | None = None) -> Figure:
    """Many metrics of a sweep over pruning methods, one small panel per metric and method.

    Rows are ``metrics`` (columns of ``summary``, a sweep summary as for :func:`plot_compare`),
    columns are the pruning methods; each panel draws plain pruning (solid, blue) and its
    N2NSkip variant at the same budget (dashed, red) against density, with the standard
    deviation over seeds as error bars, so the claim (N2NSkip closer to the reference at equal
    budget) is read within a panel and the methods are compared along a row (one y-scale per
    row). A metric with the same value in every row gets no panel (the title says its value).
    A sweep at a single density has nothing to draw against density: it is drawn by
    :func:`plot_compare` (methods along the x-axis), one panel per metric.
    """
    metrics = [c for c in metrics if c in summary.columns]
    if not metrics:
        raise ValueError("plot_methods: the summary has none of the requested metrics")
    densities = sorted(set(float(d) for d in summary["density"]))
    if len(densities) == 1:
        return plot_compare(summary, columns=metrics, path=path, log=log, title=title)
    metrics, constant = _varying_columns(summary, metrics)
    methods = list(dict.fromkeys(summary["method"]))
    fig = Figure(figsize=(2.2 * len(methods) + 1.0, 1.75 * len(metrics) + 1.3))
    axes = fig.subplots(len(metrics), len(methods), squeeze=False, sharex=True, sharey="row")
    for r, metric in enumerate(metrics):
        for c, method in enumerate(methods):
            ax = axes[r][c]
            for variant, style, marker in (("plain", "-", "o"), ("n2nskip", "--", "s")):
                part, err = _series(summary, method, variant, metric)
                if part.empty:
                    continue
                ax.errorbar(np.asarray(part["density"], float), np.asarray(part[metric], float),
                            yerr=err, color=VARIANT_COLORS[variant], ls=style, marker=marker, ms=3,
                            capsize=1.5, lw=1.1)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if r == 0:
                ax.set_title(method, fontsize=9)
            if c == 0:
                ax.set_ylabel(_column_label(metric), fontsize=7)
            if r == len(metrics) - 1:
                ax.set_xlabel("density", fontsize=7)
        _value_axis(axes[r][0], np.asarray(summary[metric], float), log)
    axes[0][0].set_xscale("log")
    axes[0][0].set_xticks(densities, [f"{d:g}" for d in densities])
    axes[0][0].xaxis.set_minor_locator(NullLocator())
    handles = [Line2D([], [], color=VARIANT_COLORS["plain"], ls="-", marker="o", ms=3),
               Line2D([], [], color=VARIANT_COLORS["n2nskip"], ls="--", marker="s", ms=3)]
    fig.legend(handles, ["plain pruning", "+ N2NSkip, same budget"], loc="lower center", ncol=2,
               fontsize=8, frameon=False)
    heading = _with_note(_sweep_title(summary, title), constant)
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, _suptitle(fig, heading)))
    if path is not None:
        save_figure(fig, path)
    return fig


def paired_delta(table, column: str, *, confidence: float = 0.95) -> list[dict]:
    """``F(X) - F(N2NSkip-X)`` per method and density, paired by seed.

    For every (method, density) with both variants at a seed, ``delta_s = plain_s - n2nskip_s``;
    returns one record per (method, density) with ``mean``, ``n`` (paired seeds), ``low`` and
    ``high``, the two-sided Student-t interval ``mean -+ t_{(1+c)/2, n-1} sd / sqrt(n)`` at
    ``confidence`` ``c`` (NaN with a single seed). Positive means N2NSkip is closer to the
    reference.
    """
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    values: dict[tuple, dict[str, float]] = {}
    for method, variant, density, seed, value in zip(table["method"], table["variant"],
                                                     table["density"], table["seed"], table[column]):
        values.setdefault((method, float(density), seed), {})[variant] = float(value)
    deltas: dict[tuple, list[float]] = {}
    for (method, density, _), pair in values.items():
        if "plain" in pair and "n2nskip" in pair:
            deltas.setdefault((method, density), []).append(pair["plain"] - pair["n2nskip"])
    out = []
    for (method, density), d in deltas.items():
        d = np.asarray(d)
        mean = float(d.mean())
        if d.size > 1:
            half = float(stats.t.ppf((1 + confidence) / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
        else:
            half = math.nan
        out.append({"method": method, "density": density, "mean": mean, "n": int(d.size),
                    "low": mean - half, "high": mean + half})
    return out


def plot_delta_f(table, *, columns: Sequence[str] | None = None, confidence: float = 0.95,
                 path: str | os.PathLike | None = None, title: str | None = None) -> Figure:
    """The paper's claim at a glance: ``F(X) - F(N2NSkip-X)`` per method and density.

    ``table`` has one row per cell (``results.csv`` of a sweep: ``method``, ``variant``,
    ``density``, ``seed`` and the ``F(t=...)`` columns). One panel per ``F`` column; per density a
    group of points, one per method, each the mean paired difference over seeds with its
    ``confidence`` interval (:func:`paired_delta`); the zero line is drawn. Points above zero:
    N2NSkip is closer to the reference at the same budget.
    """
    if columns is None:
        columns = [c for c in table.columns if _F_COLUMN.match(c) and not c.endswith("_std")]
    columns = [c for c in columns if c in table.columns]
    if not columns:
        raise ValueError("plot_delta_f: the table has no F(t=...) columns")
    methods = list(dict.fromkeys(table["method"]))
    colors = _method_colors(methods)
    densities = sorted(set(float(d) for d in table["density"]), reverse=True)
    fig, axes = _panel_grid(len(columns))
    width = 0.8 / max(1, len(methods))
    seeds = 0
    for ax, column in zip(axes, columns):
        records = paired_delta(table, column, confidence=confidence)
        for r in records:
            i, k = densities.index(r["density"]), methods.index(r["method"])
            x = i - 0.4 + width * (k + 0.5)
            err = None
            if np.isfinite(r["low"]):
                err = [[r["mean"] - r["low"]], [r["high"] - r["mean"]]]
            ax.errorbar([x], [r["mean"]], yerr=err, color=colors[r["method"]], marker="o", ms=4,
                        capsize=2, ls="none")
            seeds = max(seeds, r["n"])
        ax.axhline(0.0, color="0.2", lw=0.8)
        ax.set_xticks(range(len(densities)), [f"{d:g}" for d in densities])
        ax.set_xlabel("density (kept fraction)", fontsize=8)
        ax.set_ylabel("F(plain) - F(N2NSkip)\n> 0: N2NSkip closer to reference", fontsize=7)
        ax.set_title(_column_title(column), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    rows = _variant_legend(fig, methods, colors, styles=None)
    heading = _sweep_title(table, title)
    interval = f"mean over {seeds} paired seeds, {confidence:.0%} t-interval" if seeds > 1 \
        else "one seed: no interval"
    heading = f"{heading}\n{interval}" if heading else interval
    fig.tight_layout(rect=(0, 0.04 + 0.035 * rows, 1, _suptitle(fig, heading)))
    if path is not None:
        save_figure(fig, path)
    return fig


# ----------------------------------------------------------------------- scree, accuracy
def plot_scree(curves, *, path: str | os.PathLike | None = None, log_k: bool = True,
               title: str | None = None) -> Figure:
    """Scree diagrams ``alpha(K, t)`` against ``K`` (% of the n eigenvalues), one panel per ``t``
    (the paper's Figure 4).

    ``curves`` is a long table (DataFrame) with columns ``graph``, ``t``, ``K_percent`` and
    ``alpha``; one line per graph (in order of appearance), the dense reference first by
    convention. Panel titles state ``t`` (and ``t * lambda_2`` of the reference when a
    ``t_lambda2`` column is present); ``title`` goes above the panels. Returns the Figure; saves PNG and PDF when ``path`` is given.
    """
    needed = {"graph", "t", "K_percent", "alpha"}
    missing = needed - set(curves.columns)
    if missing:
        raise ValueError(f"plot_scree: curves lack column(s) {sorted(missing)}; need {sorted(needed)}")
    times = list(dict.fromkeys(curves["t"]))
    graphs = list(dict.fromkeys(curves["graph"]))
    if not times:
        raise ValueError("plot_scree: no curves to draw")
    colors = colormaps["tab10"]
    styles = ["-", "--", "-.", ":"]
    fig = Figure(figsize=(3.8 * len(times), 3.5 + (0.3 if title else 0)))
    axes = fig.subplots(1, len(times), squeeze=False)
    for ax, t in zip(axes[0], times):
        at_t = curves[curves["t"] == t]
        for k, name in enumerate(graphs):
            part = at_t[at_t["graph"] == name].sort_values("K_percent")
            if part.empty:
                continue
            ax.plot(part["K_percent"], part["alpha"], color=colors(k % 10), ls=styles[k % 4],
                    marker="o", ms=2.5, lw=1.2, label=name)
        panel = f"t = {t:.4g}"
        if "t_lambda2" in at_t.columns and at_t["t_lambda2"].notna().any():
            panel += f"  (t·λ2,ref = {at_t['t_lambda2'].iloc[0]:.3g})"
        ax.set_title(panel, fontsize=9)
        if log_k:
            ax.set_xscale("log")
            _readable_log_axis(ax.xaxis)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("K (% of eigenvalues)")
        ax.set_ylabel("α(K, t)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, _suptitle(fig, title)))
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_accuracy(summary, *, path: str | os.PathLike | None = None, metric: str = "test_acc",
                  title: str | None = None, ylabel: str | None = None) -> Figure:
    """Accuracy against density, plain pruning vs N2NSkip at the same budget (the paper's
    Figure 5).

    ``summary`` is a table with columns ``method`` (base pruning method), ``variant``
    (``plain`` / ``n2nskip``; ``dense`` rows are drawn as a horizontal band), ``density``,
    ``label``, ``<metric>_mean`` and ``<metric>_std``, and optionally ``init``. One panel per base
    method (and init, when there are several); solid line plain, dashed N2NSkip; error bars are
    the standard deviation over seeds. ``title`` (the dataset, the epochs, the recipe) goes
    above the panels; ``ylabel`` names the metric with its unit (default: the metric's name in
    words). Returns the Figure; saves PNG and PDF when ``path`` is given.
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
    fig = Figure(figsize=(4.0 * len(methods), 3.4 * len(inits) + (0.4 if title else 0)))
    axes = fig.subplots(len(inits), len(methods), squeeze=False)
    colors = VARIANT_COLORS
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
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel("density (kept fraction)")
            ax.set_ylabel(ylabel or metric.replace("_acc", " accuracy").replace("_", " "))
            plain = part.loc[part["variant"] == "plain", "label"]
            name = str(method) if plain.empty or str(plain.iloc[0]) == str(method) \
                else f"{plain.iloc[0]} ({method})"
            ax.set_title(name if init is None else f"{name}, {init} init", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, _suptitle(fig, title)))
    if path is not None:
        save_figure(fig, path)
    return fig


# ------------------------------------------------------------------------------- training
#: Columns a training log needs for :func:`plot_train_curve` (see
#: :data:`n2ngraph.training.LOG_COLUMNS`; accuracies are fractions in [0, 1]).
TRAIN_CURVE_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")


def plot_train_curve(log, *, title: str | None = None, path: str | os.PathLike | None = None) -> Figure:
    """Accuracy and loss per epoch of one training run (a ``log.csv`` of
    :func:`n2ngraph.training.train`).

    Two panels against the epoch (1-based, after the epoch's last step): accuracy in % (train
    and test) and cross-entropy loss (train and test). The best test accuracy is marked and
    named; epochs where the learning rate changes (column ``lr``, when present) are drawn as
    faint vertical lines. A test split that was not evaluated (NaN) is left out. Saves PNG and
    PDF when ``path`` is given.

    Raises
    ------
    ValueError
        The log lacks a column of :data:`TRAIN_CURVE_COLUMNS` or has no rows.
    """
    missing = [c for c in TRAIN_CURVE_COLUMNS if c not in log.columns]
    if missing:
        raise ValueError(f"plot_train_curve: the log lacks column(s) {missing}; a training log "
                         f"has {list(TRAIN_CURVE_COLUMNS)}")
    if len(log) == 0:
        raise ValueError("plot_train_curve: the log has no epochs")
    epoch = np.asarray(log["epoch"], float)
    fig = Figure(figsize=(9.0, 3.6))
    acc_ax, loss_ax = fig.subplots(1, 2)
    styles = {"train": ("#1f4e9c", "-", "o"), "test": ("#d7301f", "--", "s")}
    marker = len(log) <= 30
    for split, (color, ls, mk) in styles.items():
        acc = 100 * np.asarray(log[f"{split}_acc"], float)
        loss = np.asarray(log[f"{split}_loss"], float)
        if np.isfinite(acc).any():
            acc_ax.plot(epoch, acc, color=color, ls=ls, marker=mk if marker else None, ms=3, label=split)
        if np.isfinite(loss).any():
            loss_ax.plot(epoch, loss, color=color, ls=ls, marker=mk if marker else None, ms=3, label=split)
    test = 100 * np.asarray(log["test_acc"], float)
    if np.isfinite(test).any():
        best = int(np.nanargmax(test))
        acc_ax.plot([epoch[best]], [test[best]], marker="*", ms=11, color="#d7301f", ls="none",
                    label=f"best test {test[best]:.2f}% (epoch {epoch[best]:g})")
    if "lr" in log.columns and len(log) > 1:
        lr = np.asarray(log["lr"], float)
        for k in np.flatnonzero(np.diff(lr) != 0) + 1:
            for ax in (acc_ax, loss_ax):
                ax.axvline(epoch[k] - 0.5, color="0.6", lw=0.8, ls=":")
    positive = np.asarray(log[["train_loss", "test_loss"]], float)
    positive = positive[np.isfinite(positive)]
    if positive.size and (positive > 0).all() and positive.max() > 10 * positive.min():
        loss_ax.set_yscale("log")
        _readable_log_axis(loss_ax.yaxis, float(positive.min()), float(positive.max()))
    for ax, label in ((acc_ax, "accuracy (%)"), (loss_ax, "cross-entropy loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    acc_ax.set_title("accuracy", fontsize=9)
    loss_ax.set_title("loss", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, _suptitle(fig, title)))
    if path is not None:
        save_figure(fig, path)
    return fig


def _distance_summary(table, keys: list[str], distance: str, accuracy: str):
    """Mean and sample std (ddof=1; 0 for one seed) of ``distance`` and ``accuracy`` per
    ``keys``, and the number of rows averaged (``n``)."""
    grouped = table.groupby(keys, sort=False, dropna=False)
    out = grouped[[distance, accuracy]].agg(["mean", "std"])
    out.columns = [f"{c}_{s}" for c, s in out.columns]
    out["n"] = grouped.size()
    return out.reset_index().fillna({f"{distance}_std": 0.0, f"{accuracy}_std": 0.0})


def plot_accuracy_vs_distance(table, *, distance: str = "trained F(t=inf)",
                              accuracy: str = "final_test_acc", path: str | os.PathLike | None = None,
                              title: str | None = None, log: bool = True) -> Figure:
    """Accuracy against connectivity distance: does a variant closer to the reference train
    better? (the paper's argument, arXiv:2208.03662, Table 3 beside Figure 5).

    Parameters
    ----------
    table : pandas.DataFrame
        One row per trained cell, with columns ``method``, ``variant`` (``plain``, ``n2nskip``;
        ``dense`` rows are drawn as a horizontal band at their accuracy), ``density``,
        ``distance`` and ``accuracy``; optional ``init`` (one panel per init when several) and
        ``seed`` (rows of one method, variant, density and init are averaged over seeds).
    distance : str
        Any F column: ``"trained F(t=inf)"`` (trained, weighted, the paper's Table 3 measure),
        ``"F(t=1/l2)"`` (at initialisation), ...
    accuracy : str
        ``"final_test_acc"`` (after the last epoch) or ``"best_test_acc"``; fractions in [0, 1]
        are drawn in %.
    path : path, optional
        Save PNG and PDF.
    title : str, optional
        Above the panel(s).
    log : bool
        Log x-axis when the distances are positive and span more than a factor of 10.

    Returns
    -------
    Figure
        One point per method x variant x density (x init): the mean over seeds with the
        standard deviations of both as error bars; one colour per method, circles for plain
        pruning and squares for N2NSkip at the same budget, the density written beside each
        point, and thin lines joining the densities of one method and variant.

    Raises
    ------
    ValueError
        A needed column is missing, or no row has both a finite distance and accuracy.
    """
    needed = ["method", "variant", "density", distance, accuracy]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"plot_accuracy_vs_distance: the table lacks column(s) {missing}; "
                         f"columns are {list(table.columns)}")
    percent = bool(np.nanmax(np.abs(np.asarray(table[accuracy], float)), initial=0) <= 1)
    scale = 100.0 if percent else 1.0
    dense = table[table["variant"] == "dense"]
    cells = table[(table["variant"] != "dense")]
    cells = cells[np.isfinite(np.asarray(cells[distance], float))
                  & np.isfinite(np.asarray(cells[accuracy], float))]
    if cells.empty:
        raise ValueError(f"plot_accuracy_vs_distance: no pruned cell has both {distance!r} and "
                         f"{accuracy!r}")
    if np.ptp(np.asarray(cells[distance], float)) == 0:
        import warnings

        warnings.warn(f"plot_accuracy_vs_distance: {distance!r} is {float(cells[distance].iloc[0]):g} for "
                      "every cell, so the figure cannot tell them apart (F(t=inf) is 0 on connected "
                      "graphs: S(inf) = 1 1^T A / n); choose another F column", stacklevel=2)
    has_init = "init" in cells.columns
    inits = list(dict.fromkeys(cells["init"])) if has_init else [None]
    keys = ["init", "method", "variant", "density"] if has_init else ["method", "variant", "density"]
    summary = _distance_summary(cells, keys, distance, accuracy)
    methods = list(dict.fromkeys(summary["method"]))
    colors = _method_colors(methods)
    fig = Figure(figsize=(5.2 * len(inits), 4.4 + (0.3 if title else 0)))
    axes = fig.subplots(1, len(inits), squeeze=False)[0]
    x_all = np.asarray(summary[f"{distance}_mean"], float)
    for ax, init in zip(axes, inits):
        part = summary if init is None else summary[summary["init"] == init]
        for method in methods:
            for variant, style, marker in (("plain", "-", "o"), ("n2nskip", "--", "s")):
                line = part[(part["method"] == method) & (part["variant"] == variant)]
                line = line.sort_values("density")
                if line.empty:
                    continue
                x = np.asarray(line[f"{distance}_mean"], float)
                y = scale * np.asarray(line[f"{accuracy}_mean"], float)
                ax.errorbar(x, y, xerr=np.asarray(line[f"{distance}_std"], float),
                            yerr=scale * np.asarray(line[f"{accuracy}_std"], float),
                            color=colors[method], ls=style, lw=0.8, marker=marker, ms=5, capsize=2)
                for xi, yi, d in zip(x, y, line["density"]):
                    ax.annotate(f"{float(d):g}", (xi, yi), xytext=(4, 3), textcoords="offset points",
                                fontsize=6, color=colors[method])
        d_part = dense if init is None or "init" not in dense.columns else dense[dense["init"] == init]
        d_acc = scale * np.asarray(d_part[accuracy], float) if not d_part.empty else np.array([])
        d_acc = d_acc[np.isfinite(d_acc)]
        if d_acc.size:
            ax.axhline(d_acc.mean(), color="0.3", lw=1, ls=":")
            if d_acc.size > 1:
                ax.axhspan(d_acc.mean() - d_acc.std(ddof=1), d_acc.mean() + d_acc.std(ddof=1),
                           color="0.5", alpha=0.15, lw=0)
        finite = x_all[np.isfinite(x_all)]
        if log and finite.size and (finite > 0).all() and finite.max() > 10 * finite.min():
            ax.set_xscale("log")
            _readable_log_axis(ax.xaxis, float(finite.min()), float(finite.max()))
        words = accuracy.replace("_acc", " accuracy").replace("_", " ")
        ax.set_ylabel(f"{words} (%)" if percent else words)
        ax.set_xlabel(f"{_column_title(distance)}  (lower: closer to the dense reference)", fontsize=8)
        ax.grid(alpha=0.3)
        if init is not None:
            ax.set_title(f"{init} init", fontsize=9)
    handles = [Line2D([], [], color=colors[m], lw=2) for m in methods]
    labels = list(methods)
    handles += [Line2D([], [], color="0.2", ls="-", marker="o", ms=4),
                Line2D([], [], color="0.2", ls="--", marker="s", ms=4)]
    labels += ["plain pruning (circle)", "+ N2NSkip, same budget (square)"]
    if not dense.empty:
        handles.append(Line2D([], [], color="0.3", ls=":"))
        labels.append("dense reference")
    ncol = min(len(labels), 3 * len(inits))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    rows = math.ceil(len(labels) / ncol)
    heading = title if title is not None else _sweep_title(table, None)
    fig.tight_layout(rect=(0, 0.02 + 0.04 * rows, 1, _suptitle(fig, heading)))
    if path is not None:
        save_figure(fig, path)
    return fig

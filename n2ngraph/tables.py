"""Summary tables of a graph (pandas). Tables are built here so the core never imports pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd

from n2ngraph.graph import NetworkGraph

__all__ = ["group_table", "block_table", "layer_table", "markdown_document", "markdown_table",
           "write_table"]


def group_table(graph: NetworkGraph) -> pd.DataFrame:
    """One row per node group: name, node range, size, traced shape, and the degree of its nodes
    in the binary adjacency (mean, min, max)."""
    degree = np.asarray(graph.adjacency().sum(axis=1)).ravel()
    rows = []
    for g in graph.groups:
        d = degree[g.start:g.stop]
        rows.append({
            "group": g.name, "first_node": g.start, "nodes": g.size,
            "shape": "x".join(map(str, g.shape)), "degree_mean": float(d.mean()),
            "degree_min": int(d.min()), "degree_max": int(d.max()),
        })
    return pd.DataFrame(rows)


def block_table(graph: NetworkGraph) -> pd.DataFrame:
    """One row per edge block: kind, groups joined, mask shape, kept and dense weights, density,
    and node-pair edges (channel pairs with any kept tap).

    ``density`` (kept / dense weights of the block) is defined only for blocks with weights: a
    ``residual`` block has none, so its density is missing (empty in the CSV, ``-`` in the
    Markdown table), never a NaN that reads like a failed computation.
    """
    rows = []
    for b in graph.blocks:
        src = graph.group(b.src)
        edges = len(b.local_pairs(src.size, graph.group(b.dst).size)[0])
        rows.append({
            "block": b.name, "kind": b.kind, "src": b.src, "dst": b.dst,
            "mask_shape": "" if b.mask is None else "x".join(map(str, b.mask.shape)),
            "kept_weights": b.num_params, "dense_weights": b.dense_params,
            "density": b.num_params / b.dense_params if b.dense_params else None,
            "edges": edges,
        })
    rows.append({
        "block": "total", "kind": "", "src": "", "dst": "", "mask_shape": "",
        "kept_weights": graph.num_params, "dense_weights": graph.dense_params,
        "density": graph.density, "edges": graph.num_edges,
    })
    return pd.DataFrame(rows)


def layer_table(graph: NetworkGraph) -> pd.DataFrame:
    """Kept fraction per weight layer, as pruning tools print it: one row per block with weights
    (``sequential`` layers of the model, then ``n2nskip`` connections) and a total row.

    Columns: ``layer`` (the model's module path, or the skip block's name), ``kind``, ``shape``
    (the weight's shape ``out x in x kh x kw``), ``kept`` and ``weights`` (kept and dense weights
    of the layer) and ``kept_fraction = kept / weights``. The total row's ``weights`` is the
    dense reference's (sequential layers only, the budget of docs/design.md), so its
    ``kept_fraction`` is the graph's density, skips included.
    """
    rows = []
    for kind in ("sequential", "n2nskip"):
        for b in graph.blocks:
            if b.kind != kind or b.mask is None:
                continue
            rows.append({
                "layer": b.spec.module if kind == "sequential" and b.spec.module else b.name,
                "kind": kind, "shape": "x".join(map(str, b.mask.shape)), "kept": b.num_params,
                "weights": b.dense_params, "kept_fraction": b.num_params / b.dense_params,
            })
    rows.append({"layer": "total", "kind": "", "shape": "", "kept": graph.num_params,
                 "weights": graph.dense_params, "kept_fraction": graph.density})
    return pd.DataFrame(rows)


def write_table(table: pd.DataFrame, path_without_suffix, *, float_format: str = "%.6g",
                title: str | None = None, markdown: pd.DataFrame | str | None = None,
                notes: str | None = None) -> list:
    """Write ``table`` as CSV and Markdown (``.csv``, ``.md``) atomically; returns the paths.

    The CSV holds every column of ``table``. The Markdown file holds :func:`markdown_document`
    of ``markdown`` (a shorter view for reading, e.g. ``mean ± std`` cells; default ``table``
    itself) with ``title`` above it (what the CSV cannot say: the model, the recipe, the
    reference's ``lambda_2``, the stated times) and ``notes`` below it; or ``markdown`` itself
    when it is a string (a document made elsewhere, e.g. ``n2ngraph.compare.sweep_markdown``).
    """
    from pathlib import Path

    from n2ngraph.io import atomic_write

    base = Path(path_without_suffix)
    csv_path = atomic_write(base.with_name(base.name + ".csv"),
                            lambda tmp: table.to_csv(tmp, index=False, float_format=float_format))
    if isinstance(markdown, str):
        if title or notes:
            raise ValueError("write_table: give title and notes with a table to show, not with a "
                             "ready Markdown document (markdown=str)")
        md = markdown
    else:
        md = markdown_document(table if markdown is None else markdown, title=title, notes=notes,
                               float_format=float_format)
    md_path = atomic_write(base.with_name(base.name + ".md"),
                           lambda tmp: Path(tmp).write_text(md, encoding="utf-8"))
    return [csv_path, md_path]


def markdown_document(table: pd.DataFrame, *, title: str | None = None, notes: str | None = None,
                      float_format: str = "%.6g") -> str:
    """``title``, the table as :func:`markdown_table` and ``notes``, separated by blank lines."""
    parts = [p.strip() for p in (title, markdown_table(table, float_format), notes) if p and p.strip()]
    return "\n\n".join(parts) + "\n"


def markdown_table(table: pd.DataFrame, float_format: str = "%.6g") -> str:
    """``table`` as a GitHub Markdown table whose columns are padded to one width, so the text
    reads as a table in a terminal too (no dependency on the optional ``tabulate`` package).

    Floats are written with ``float_format``; a missing value (None, NaN, NA) is written ``-``.

    Examples
    --------
    >>> print(markdown_table(pd.DataFrame({"kind": ["sequential", "residual"],
    ...                                    "density": [0.25, None]})), end="")
    | kind       | density |
    |------------|---------|
    | sequential | 0.25    |
    | residual   | -       |
    """
    def cell(v) -> str:
        if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)):
            return "-"
        if isinstance(v, (float, np.floating)):
            return float_format % v
        return str(v).replace("|", "\\|")

    header = [str(c) for c in table.columns]
    body = [[cell(v) for v in row] for row in table.itertuples(index=False)]
    widths = [max([len(h), *(len(r[k]) for r in body)]) for k, h in enumerate(header)]

    def line(cells) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in body)]) + "\n"

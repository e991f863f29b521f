"""Summary tables of a graph (pandas). Tables are built here so the core never imports pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd

from n2ngraph.graph import NetworkGraph

__all__ = ["group_table", "block_table", "write_table"]


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
    and node-pair edges (channel pairs with any kept tap)."""
    rows = []
    for b in graph.blocks:
        src = graph.group(b.src)
        edges = len(b.local_pairs(src.size)[0])
        rows.append({
            "block": b.name, "kind": b.kind, "src": b.src, "dst": b.dst,
            "mask_shape": "" if b.mask is None else "x".join(map(str, b.mask.shape)),
            "kept_weights": b.num_params, "dense_weights": b.dense_params,
            "density": b.num_params / b.dense_params if b.dense_params else float("nan"),
            "edges": edges,
        })
    rows.append({
        "block": "total", "kind": "", "src": "", "dst": "", "mask_shape": "",
        "kept_weights": graph.num_params, "dense_weights": graph.dense_params,
        "density": graph.density, "edges": graph.num_edges,
    })
    return pd.DataFrame(rows)


def write_table(table: pd.DataFrame, path_without_suffix, *, float_format: str = "%.6g",
                title: str | None = None) -> list:
    """Write ``table`` as CSV and Markdown (``.csv``, ``.md``) atomically; returns the paths.

    ``title``: a paragraph above the Markdown table (what the CSV cannot say: the model, the
    recipe, the reference's ``lambda_2``, the stated times).
    """
    from pathlib import Path

    from n2ngraph.io import atomic_write

    base = Path(path_without_suffix)
    csv_path = atomic_write(base.with_name(base.name + ".csv"),
                            lambda tmp: table.to_csv(tmp, index=False, float_format=float_format))
    md = _markdown(table, float_format)
    if title:
        md = f"{title.strip()}\n\n{md}"
    md_path = atomic_write(base.with_name(base.name + ".md"),
                           lambda tmp: Path(tmp).write_text(md, encoding="utf-8"))
    return [csv_path, md_path]


def _markdown(table: pd.DataFrame, float_format: str) -> str:
    """A GitHub Markdown table (no dependency on the optional ``tabulate`` package)."""
    def cell(v) -> str:
        if isinstance(v, (float, np.floating)):
            return float_format % v
        return str(v)

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"

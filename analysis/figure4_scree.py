"""Figure 4 of the N2NSkip paper (arXiv 2208.03662): scree diagrams over t.

For the dense reference, the network pruned at initialization to ``density`` and its N2NSkip
variant at the same budget, the scree value (docs/paper.md)::

    alpha(K, t) = sum_{k=2}^{K+1} exp(-t lambda_k) / sum_{k=2}^{n} exp(-t lambda_k)

(eigenvalues of ``L = D - W`` ascending, ``lambda_1 = 0`` excluded, extra zeros of a disconnected
graph kept) is computed by ``n2ngraph.diffusion.scree`` for ``K`` on a grid of percentages of
``n`` and for each ``t``. The times are stated: absolute ``times`` when given, else
``t = c / lambda_2(reference)`` for ``c`` in ``t_lambda2``. A curve that rises to 1 at small
``K`` means the heat kernel's trace is held by a few slow modes (poorly connected parts of the
graph); the reference's curve is the target.

Run (from the repository root)::

    python -m analysis.figure4_scree            # paper MLP (4042 nodes), RP at 2%: dense eigvalsh x 3
    python -m analysis.figure4_scree --small    # LeNet-300-100, seconds

Writes ``results/figure4-<hash>/``: ``figure4.png|pdf``, ``scree.csv|md`` (every curve point),
``scree_summary.csv|md`` (per graph and t: lambda_2, components, and the smallest K% holding
half and 90% of the trace), ``config.json`` (with the resolved times).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.common import (
    GraphSettings,
    base_parser,
    comma_list,
    config_from_args,
    graph_title,
    recipe_columns,
    results_dir,
    save_config,
)

__all__ = ["K_PERCENT", "SMALL", "Config", "main", "scree_curves"]

ARTIFACT = "figure4"

#: Default grid of K as a percentage of the n eigenvalues.
K_PERCENT = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0,
             100.0)


@dataclass(frozen=True)
class Config(GraphSettings):
    """Settings of Figure 4: the graphs' :class:`~analysis.common.GraphSettings` (RP at 2%) and

    Attributes
    ----------
    k_percent : tuple of float
        ``K`` grid in % of ``n``; ``K = round(p / 100 * n)`` clipped to ``[1, n - 1]``.
    times : tuple of float or None
        Absolute diffusion times; ``None`` uses ``t_lambda2``.
    t_lambda2 : tuple of float
        Times in units of ``1 / lambda_2`` of the dense reference.
    method_scree : str
        ``n2ngraph.diffusion.scree`` method (``auto``: exact eigvalsh up to 5000 nodes).
    """

    density: float = 0.02
    k_percent: tuple[float, ...] = K_PERCENT
    times: tuple[float, ...] | None = None
    t_lambda2: tuple[float, ...] = (1.0, 10.0, 100.0)
    method_scree: str = "auto"


#: Seconds on a CPU: LeNet-300-100 (1194 nodes) at 2%.
SMALL = Config(model="lenet300")


def scree_curves(graphs, times, k_percent, *, method: str = "auto", t_lambda2=None):
    """Long table of ``alpha(K, t)``: one row per (graph, t, K).

    Parameters
    ----------
    graphs : list of (str, NetworkGraph)
        Labelled graphs on any node sets.
    times : sequence of float
        Diffusion times.
    k_percent : sequence of float
        ``K`` in % of each graph's ``n`` (duplicates after rounding are dropped).
    t_lambda2 : sequence of float, optional
        ``t * lambda_2(reference)`` for each time, copied into the table.
    """
    import numpy as np
    import pandas as pd

    from n2ngraph.diffusion import scree

    rows = []
    for label, graph in graphs:
        n = graph.num_nodes
        ks = np.unique(np.clip(np.rint(np.asarray(k_percent) / 100 * n), 1, n - 1).astype(np.int64))
        alpha = np.atleast_2d(scree(graph, ks, np.asarray(times, float), method=method))
        for j, t in enumerate(times):
            for i, k in enumerate(ks):
                row = {"graph": label, "t": float(t)}
                if t_lambda2 is not None:
                    row["t_lambda2"] = float(t_lambda2[j])
                row.update({"K": int(k), "K_percent": 100 * k / n, "alpha": float(alpha[i, j])})
                rows.append(row)
    return pd.DataFrame(rows)


def _summary(curves, graphs, lam2s):
    import numpy as np
    import pandas as pd

    from n2ngraph.metrics import connected_components

    comps = {label: connected_components(g)["n_components"] for label, g in graphs}
    rows = []
    for (label, t), part in curves.groupby(["graph", "t"], sort=False):
        part = part.sort_values("K")
        row = {"graph": label, "t": t}
        if "t_lambda2" in part:
            row["t_lambda2"] = part["t_lambda2"].iloc[0]
        row.update({"lambda_2": lam2s[label], "n_components": comps[label]})
        for level in (0.5, 0.9):
            hit = part[part["alpha"] >= level]
            row[f"K%_alpha>={level:g}"] = float(hit["K_percent"].iloc[0]) if len(hit) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def main(config: Config = Config()) -> Path:
    """Compute and draw Figure 4; returns the results folder."""
    from analysis.figure3_adjacency import build_graphs
    from n2ngraph.compare import stated_times
    from n2ngraph.diffusion import algebraic_connectivity
    from n2ngraph.plotting import plot_scree
    from n2ngraph.recipes import resolve_recipe
    from n2ngraph.tables import write_table

    out = results_dir(ARTIFACT, config)
    graphs = build_graphs(config)
    times, lam2_ref = stated_times(graphs[0][1], config.times, config.t_lambda2)
    t_lambda2 = [t * lam2_ref for t in times]
    curves = scree_curves(graphs, times, config.k_percent, method=config.method_scree,
                          t_lambda2=t_lambda2)
    lam2s = {label: lam2_ref if k == 0 else float(algebraic_connectivity(g))
             for k, (label, g) in enumerate(graphs)}
    recipe = recipe_columns(resolve_recipe(config.recipe, n2nskip_fraction=config.n2nskip_fraction))
    write_table(curves.assign(**recipe), out / "scree")
    write_table(_summary(curves, graphs, lam2s).assign(**recipe), out / "scree_summary",
                title=f"{graph_title(config)}; λ2(reference) = {lam2_ref:.4g}",
                notes="K%_alpha>=a: the smallest K (% of the eigenvalues, on the K grid of the "
                      "config) at which alpha(K, t) reaches a; '-' where it is not reached.")
    plot_scree(curves, path=out / ARTIFACT,
               title=f"{graph_title(config)}\nλ2(reference) = {lam2_ref:.4g}")
    save_config(out, ARTIFACT, config, times=list(times), lambda_2_reference=lam2_ref)
    return out


def _parse(argv=None) -> Config:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--method")
    parser.add_argument("--density", type=float)
    parser.add_argument("--times", type=comma_list(float),
                        help="absolute diffusion times, comma-separated")
    args = parser.parse_args(argv)
    return config_from_args(SMALL if args.small else Config(), args,
                            ("model", "method", "density", "times", "recipe", "results_root"))


if __name__ == "__main__":
    folder = main(_parse())
    print((folder / "scree_summary.md").read_text())
    print(f"results in {folder}")

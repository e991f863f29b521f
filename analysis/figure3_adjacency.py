"""Figure 3 of the N2NSkip paper (arXiv 2208.03662): adjacency of reference, pruned and N2NSkip.

The dense reference, the network pruned at initialization to ``density`` by ``method``, and the
N2NSkip variant at the same total budget (pruned to ``density * (1 - f)``, plus random N2NSkip
connections holding ``f`` of the budget; ``n2ngraph.pipeline.variant`` under the config's recipe)
are traced and drawn side by side (``n2ngraph.plotting.plot_adjacency``: nodes in topological order, sequential edges blue,
N2NSkip edges red). A table gives each panel's structure (``n2ngraph.metrics.summary``).

Run (from the repository root)::

    python -m analysis.figure3_adjacency            # paper MLP 3072-512-256-128-64-10, RP at 10%
    python -m analysis.figure3_adjacency --small    # LeNet-300-100, seconds

Writes ``results/figure3-<hash>/``: ``figure3.png|pdf``, ``graphs.csv|md``, ``config.json``.
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
    config_from_args,
    graph_title,
    paper_label,
    recipe_columns,
    results_dir,
    save_config,
)

__all__ = ["SMALL", "Config", "build_graphs", "main"]

ARTIFACT = "figure3"

#: Columns of ``graphs.md`` (the short view; ``graphs.csv`` has every column).
SHORT_COLUMNS = ("panel", "params", "n2nskip_params", "density", "edges", "n_components", "isolated",
                 "dead_units", "effective_density", "collapsed_layers", "inputs_reach_outputs")


@dataclass(frozen=True)
class Config(GraphSettings):
    """Settings of Figure 3: the panels' :class:`~analysis.common.GraphSettings` (the paper's
    Figure 3 uses RP, ``expander``, at 10%) and

    Attributes
    ----------
    bins : int
        Adjacency image resolution (pixels per side).
    """

    bins: int = 600


#: Seconds on a CPU: LeNet-300-100 (784-300-100-10).
SMALL = Config(model="lenet300", density=0.1, bins=300)


def build_graphs(config: GraphSettings):
    """``[(label, graph)]`` for the reference, the pruned network and its N2NSkip variant
    (any config with the fields of :class:`~analysis.common.GraphSettings`)."""
    from n2ngraph.models import resolve_model
    from n2ngraph.pipeline import calibration_batch, variant
    from n2ngraph.pruning import METHODS
    from n2ngraph.recipes import resolve_recipe
    from n2ngraph.trace import to_graph

    if config.method not in METHODS:
        raise ValueError(f"unknown pruning method {config.method!r}; valid methods are {sorted(METHODS)}")
    model = resolve_model(config.model, seed=config.seed)
    data = None
    if METHODS[config.method].needs_data:
        data = calibration_batch(model, config.dataset, config.batch_size, config.seed)
    reference = to_graph(model, name=config.model)
    kw = {"data": data, "seed": config.seed,
          "recipe": resolve_recipe(config.recipe, n2nskip_fraction=config.n2nskip_fraction)}
    pruned = variant(model, config.method, config.density, skips=False, **kw)
    skipped = variant(model, config.method, config.density, skips=True, **kw)
    return [("reference (dense)", reference),
            (f"{paper_label(config.method, 'plain')} {config.density:g}", pruned),
            (f"{paper_label(config.method, 'n2nskip')} {config.density:g}", skipped)]


def main(config: Config = Config()) -> Path:
    """Draw Figure 3 and its structure table; returns the results folder."""
    import pandas as pd

    from n2ngraph import metrics
    from n2ngraph.plotting import plot_adjacency
    from n2ngraph.recipes import resolve_recipe
    from n2ngraph.tables import write_table

    out = results_dir(ARTIFACT, config)
    panels = build_graphs(config)
    recipe = recipe_columns(resolve_recipe(config.recipe, n2nskip_fraction=config.n2nskip_fraction))
    rows = []
    for label, graph in panels:
        row = {"panel": label, **recipe, **metrics.summary(graph)}
        row["n2nskip_params"] = sum(b.num_params for b in graph.blocks_of_kind("n2nskip"))
        rows.append(row)
    table = pd.DataFrame(rows)
    write_table(table, out / "graphs", markdown=table[[c for c in SHORT_COLUMNS if c in table.columns]],
                title=f"{graph_title(config)}. Recipe fields: {recipe['recipe_fields']}",
                notes="params: kept weights (n2nskip_params of them on N2NSkip connections); "
                      "dead units: on no input-to-output path; effective density: kept weights on "
                      "an input-to-output path / dense weights. Every column is in graphs.csv.")
    plot_adjacency([g for _, g in panels], [label for label, _ in panels], bins=config.bins,
                   path=out / ARTIFACT, title=graph_title(config))
    save_config(out, ARTIFACT, config)
    return out


def _parse(argv=None) -> Config:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--method")
    parser.add_argument("--density", type=float)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    return config_from_args(SMALL if args.small else Config(), args,
                            ("model", "method", "density", "seed", "recipe", "results_root"))


if __name__ == "__main__":
    folder = main(_parse())
    print((folder / "graphs.md").read_text())
    print(f"results in {folder}")

"""Beyond the paper: all six pruning methods, with and without N2NSkip, on every connectivity metric.

Random (uniform), expander (the paper's RP), magnitude, SNIP (the paper's CSP), GraSP and SynFlow
(``n2ngraph.pruning.METHODS``), each at every density, plain and with half of the budget on random
N2NSkip connections (same total kept weights), are swept by ``n2ngraph.compare`` and compared on:

- ``F(t)`` to the dense reference at the stated ``t`` (``c / lambda_2(reference)``) and at ``inf``;
- connected components and isolated units (``n2ngraph.metrics.connected_components``);
- dead units: no directed path from the input or to the output (``metrics.dead_units``);
- effective density: kept weights on some input-to-output path (Vysogorets & Kempe 2021,
  arXiv:2107.02306; ``metrics.effective_density``);
- layer collapse: weight layers left without a surviving path (Tanaka et al. 2020,
  arXiv:2006.05467; ``metrics.layer_collapse``).

Run (from the repository root)::

    python -m analysis.methods_comparison           # paper MLP, 6 methods x 3 densities x 3 seeds
    python -m analysis.methods_comparison --small   # LeNet-300-100, 1 density, 1 seed, inline

Writes ``results/methods-<hash>/``: ``methods.csv`` (mean and std over seeds of every metric per
method x variant x density), ``methods.md`` (the short view: at most 12 columns of ``mean ± std``,
F defined and lambda_2 of the reference stated above it; ``n2ngraph.compare.readable_table``),
``cells.csv|md`` (one row per cell), ``methods.png|pdf`` (one panel per metric and
method: plain vs N2NSkip against density; ``n2ngraph.plotting.plot_methods``), ``delta_F.png|pdf``
(F(X) - F(N2NSkip-X) per method and density with 95% intervals over seeds), ``sweep/`` (the
cells, resumable) and ``config.json`` (with the resolved times).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from n2ngraph.compare import CompareConfig

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.common import (
    SweepSettings,
    base_parser,
    comma_list,
    config_from_args,
    paper_label,
    plural,
    results_dir,
    save_config,
    sweep_config,
)

__all__ = ["METRICS", "SMALL", "Config", "main", "methods_table"]

ARTIFACT = "methods"

#: Structural metrics reported beside F (columns of ``n2ngraph.compare.run_cell`` rows).
METRICS = ("n_components", "isolated", "dead_units", "dead_fraction", "effective_density",
           "collapsed_layers", "lambda_2", "saturation_time")


@dataclass(frozen=True)
class Config(SweepSettings):
    """Settings of the comparison: the sweep's :class:`~analysis.common.SweepSettings` (fields as
    in ``n2ngraph.compare.CompareConfig``; ``t_lambda2`` here 1 and 3 only) and the model,
    methods (all six, magnitude beside the random ones), densities, seeds and ``scope`` of
    score-based pruners (None keeps the recipe's)."""

    model: str = CompareConfig.model
    methods: tuple[str, ...] = ("random", "expander", "magnitude", "snip", "grasp", "synflow")
    densities: tuple[float, ...] = CompareConfig.densities
    seeds: int = CompareConfig.seeds
    t_lambda2: tuple[float, ...] = (1.0, 3.0)
    scope: str | None = CompareConfig.scope


#: Seconds: LeNet-300-100, 2% density, one seed, in this process.
SMALL = Config(model="lenet300", densities=(0.02,), seeds=1, batch_size=32, inline=True)


def methods_table(summary):
    """One row per (recipe x) method x variant x density: the F columns (``t`` in their names)
    and :data:`METRICS`, each as mean and std over seeds, plus the paper's label."""
    keep = [c for c in ("recipe",) if c in summary.columns] + ["method", "variant", "density", "seeds"]
    values = [c for c in summary.columns if c.startswith("F(t=") and not c.endswith("_std")]
    values += [c for c in METRICS if c in summary.columns]
    cols = keep + [c for v in values for c in (v, f"{v}_std") if c in summary.columns]
    table = summary[cols].copy()
    table.insert(0, "label", [paper_label(m, v) for m, v in zip(table["method"], table["variant"])])
    return table


def figure_title(config: Config, times) -> str:
    """What the figures show: model, recipe, calibration data (for data-driven methods),
    seeds, and the stated times in units of ``1/lambda_2`` of the reference."""
    from n2ngraph.pruning import METHODS
    from n2ngraph.recipes import resolve_recipe

    recipe = resolve_recipe(config.recipe, n2nskip_fraction=config.n2nskip_fraction)
    parts = [f"model {config.model}", f"recipe {recipe.name} (N2NSkip share "
             f"{recipe.n2nskip_fraction:g} of the budget)"]
    data_driven = [m for m in config.methods if m in METHODS and METHODS[m].needs_data]
    if data_driven:
        parts.append(f"calibration data {config.dataset}, batch {config.batch_size} "
                     f"({', '.join(data_driven)})")
    parts.append(plural(config.seeds, "seed"))
    line = ", ".join(parts)
    if config.times is None:
        lam2 = config.t_lambda2[0] / times[0]
        line += (f"\nt in units of 1/λ2 of the reference (λ2 = {lam2:.4g}): "
                 + ", ".join(f"{c:g}/λ2 = {t:.4g}" for c, t in zip(config.t_lambda2, times)))
    return line


def main(config: Config = Config()) -> Path:
    """Run the sweep (finished cells are reused) and write the comparison; returns the folder."""
    from n2ngraph.compare import caption, readable_table, run_sweep
    from n2ngraph.plotting import plot_delta_f, plot_methods
    from n2ngraph.tables import write_table

    out = results_dir(ARTIFACT, config)
    cc = sweep_config(config)
    table, summary, times = run_sweep(cc, out / "sweep", scheduler=config.scheduler,
                                      workers=config.workers, progress=False, inline=config.inline)
    write_table(table, out / "cells", markdown=readable_table(table),
                title=caption(table.attrs, per_cell=True),
                notes="Every column is in cells.csv.")
    methods = methods_table(summary)
    if "recipe_fields" in table.columns:
        methods.insert(list(methods.columns).index("recipe") + 1 if "recipe" in methods.columns
                       else 0, "recipe_fields", table["recipe_fields"].iloc[0])
    write_table(methods, out / ARTIFACT, markdown=readable_table(summary),
                title=caption(summary.attrs),
                notes=f"Every column (each with its std over seeds: {', '.join(METRICS)}) is in "
                      f"{ARTIFACT}.csv; one row per cell in cells.csv.")
    f_cols = [c for c in summary.columns if c.startswith("F(t=") and not c.endswith("_std")]
    title = figure_title(config, times)
    plot_methods(summary, [*f_cols, "n_components", "dead_fraction", "effective_density",
                           "collapsed_layers"], path=out / ARTIFACT, title=title)
    plot_delta_f(table, path=out / "delta_F", title=title)
    save_config(out, ARTIFACT, config, times=list(times))
    return out


def _parse(argv=None) -> Config:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--methods", type=comma_list(str))
    parser.add_argument("--densities", type=comma_list(float))
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--dataset", help="calibration data of snip and grasp (n2ngraph.data spec; "
                        f"default {Config.dataset})")
    parser.add_argument("--inline", action="store_true", help="run cells in this process (no Dask)")
    args = parser.parse_args(argv)
    return config_from_args(SMALL if args.small else Config(), args,
                            ("model", "methods", "densities", "seeds", "dataset", "recipe",
                             "results_root"))


if __name__ == "__main__":
    folder = main(_parse())
    print((folder / "methods.md").read_text())
    print(f"results in {folder}")

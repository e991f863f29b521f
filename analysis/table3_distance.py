"""Table 3 of the N2NSkip paper (arXiv 2208.03662): connectivity distance F per method x density.

For each model (the paper: VGG19 and ResNet50, at channel level), each method (RP = ``expander``,
CSP = ``snip``) with and without N2NSkip (same total budget, the recipe's share of it on random
N2NSkip connections), and each density, the heat-diffusion distance to the dense reference
``F(t) = ||S_ref(t) - S(t)||_2`` (docs/paper.md) is computed by the sweep engine
``n2ngraph.compare`` (one idempotent cell per model x method x density x seed x variant). Every
graph is built by ``n2ngraph.pipeline.variant`` under one recipe (``--recipe``, default
``paper``; ``docs/recipes.md``), and every table names the recipe and its fields.

The paper does not state ``t``; here every F comes with its ``t``, both absolute and as
``t * lambda_2(reference)`` (default ``t = 1, 3, 100 / lambda_2``; the last is the saturated
regime the paper's Table 3 describes), with ``F(t = inf)`` (heat trapped by disconnection), the
number of connected components, ``lambda_2`` relative to the reference and the signed share of
heat that has left the inputs relative to the reference (> 0: spreads faster). The paper's
F values were measured on trained networks; these are at initialization.

VGG19 is the authors' CIFAR VGG19 (``analysis.common:vgg19_reference``: a 512-512-10
classifier, 20.3M weights), not torchvision's 4096-unit ImageNet head (``vgg19``, 139.6M at 10
classes) whose count the paper quotes: ``docs/recipes.md`` explains the choice.

Run (from the repository root)::

    python -m analysis.table3_distance                       # VGG19 + ResNet50, paper recipe; heavy
    python -m analysis.table3_distance --recipe all-pairs    # the same under the all-pairs recipe
    python -m analysis.table3_distance --small               # VGG16 (CIFAR head) + ResNet18, ~1 min

Writes ``results/table3-<hash>/``: ``table3.csv|md`` (wide: one row per model x t x method, one
column per density, ``mean ± std`` over seeds), ``distance.csv|md`` (long: every number),
``table3_<model>.png|pdf`` (F and components against density), ``sweeps/<model>/`` (the cells),
and ``config.json`` (with the recipe and the resolved times per model).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.common import (
    SweepSettings,
    base_parser,
    comma_list,
    config_from_args,
    paper_label,
    recipe_columns,
    results_dir,
    save_config,
    sweep_config,
)

__all__ = ["SMALL", "Config", "distance_table", "main", "wide_table"]

ARTIFACT = "table3"


@dataclass(frozen=True)
class Config(SweepSettings):
    """Settings of Table 3: the sweep's :class:`~analysis.common.SweepSettings` (recipe,
    ``n2nskip_fraction``, times, SNIP's calibration batch: MNIST-5k digits padded to 3 x 32 x 32
    for CIFAR-shaped nets, ``weighted``, how cells run) and

    Attributes
    ----------
    models : tuple of str
        Model specs (``n2ngraph.models.resolve_model``): the paper's VGG19 as its authors' code
        builds it (``analysis.common:vgg19_reference``) and ``resnet50``.
    methods : tuple of str
        Pruning methods; the paper's RP and CSP are ``expander`` and ``snip``.
    densities : tuple of float
        Total kept fractions (the paper: 50%, 10%, 5%, 2%).
    seeds : int
        Seeds 0 .. seeds-1 per cell.
    """

    models: tuple[str, ...] = ("analysis.common:vgg19_reference", "resnet50")
    methods: tuple[str, ...] = ("expander", "snip")
    densities: tuple[float, ...] = (0.5, 0.1, 0.05, 0.02)
    seeds: int = 1


#: About a minute on 2 CPU cores: VGG16 with the CIFAR head and ResNet18, densities 10% and 2%.
SMALL = Config(models=("analysis.common:vgg16_cifar", "resnet18"), densities=(0.1, 0.02),
               batch_size=16, inline=True)


def _model_name(spec: str) -> str:
    return spec.rpartition(":")[2] if ":" in spec else spec


def distance_table(summary, model: str, times, labels, lam2: float, recipe: dict):
    """Long table from a sweep summary (``n2ngraph.compare.summarize``): one row per
    method x variant x density x t, with the recipe (``recipe``: its table columns), ``t``,
    ``t * lambda_2``, F mean and std over seeds, the signed escaped-heat difference to the
    reference (> 0: heat leaves the inputs faster), ``lambda_2`` relative to the reference and
    the mean number of connected components; ``t = inf`` rows carry ``F(t=inf)``."""
    import pandas as pd

    rows = []
    for r in summary.to_dict("records"):
        for t, lab in [*zip(times, labels), (float("inf"), "inf")]:
            col = f"F(t={lab})"
            rows.append({
                **recipe, "model": model, "label": paper_label(r["method"], r["variant"]),
                "method": r["method"], "variant": r["variant"], "density": r["density"],
                "seeds": r["seeds"], "t": t, "t_lambda2": t * lam2, "F_mean": r[col],
                "F_std": r.get(f"{col}_std", float("nan")),
                "escaped-ref": r.get(f"escaped-ref(t={lab})", float("nan")),
                "lambda_2/ref": r.get("lambda_2/ref", float("nan")),
                "n_components": r["n_components"], "lambda_2": r["lambda_2"],
            })
    return pd.DataFrame(rows)


def wide_table(long):
    """The paper's layout: one row per recipe x model x t x method label, one column per density,
    each cell ``mean ± std`` over seeds (``mean`` alone for one seed), 2 significant digits; the
    recipe's fields in the last column."""
    import numpy as np
    import pandas as pd

    def fmt(mean, std):
        return f"{mean:.2g}" if not np.isfinite(std) else f"{mean:.2g} ± {std:.1g}"

    densities = sorted(set(long["density"]), reverse=True)
    rows = []
    for (recipe, model, t, label), part in long.groupby(["recipe", "model", "t", "label"], sort=False):
        row = {"recipe": recipe, "model": model, "t": f"{t:.4g}",
               "t*lambda_2": f"{part['t_lambda2'].iloc[0]:.3g}", "method": label}
        by = {r["density"]: r for r in part.to_dict("records")}
        for d in densities:
            row[f"{d:g}"] = fmt(by[d]["F_mean"], by[d]["F_std"]) if d in by else ""
        row["recipe_fields"] = part["recipe_fields"].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


def main(config: Config = Config()) -> Path:
    """Run the sweeps (resuming finished cells) and write Table 3; returns the results folder."""
    import pandas as pd

    from n2ngraph.compare import run_sweep, time_labels
    from n2ngraph.plotting import plot_compare
    from n2ngraph.recipes import resolve_recipe
    from n2ngraph.tables import write_table

    out = results_dir(ARTIFACT, config)
    recipe = resolve_recipe(config.recipe, n2nskip_fraction=config.n2nskip_fraction)
    columns = recipe_columns(recipe)
    longs, stated = [], {}
    for spec in config.models:
        cc = sweep_config(config, model=spec)
        name = _model_name(spec)
        table, summary, times = run_sweep(cc, out / "sweeps" / name, scheduler=config.scheduler,
                                          workers=config.workers, progress=False,
                                          inline=config.inline)
        labels = time_labels(times, None if config.times is not None else config.t_lambda2)
        lam2 = float(table["lambda_2_ref"].iloc[0])
        stated[name] = {"times": list(times), "labels": list(labels), "lambda_2_reference": lam2}
        longs.append(distance_table(summary, name, times, labels, lam2, columns))
        plot_compare(summary, path=out / f"{ARTIFACT}_{name}")
    long = pd.concat(longs, ignore_index=True)
    write_table(long, out / "distance")
    write_table(wide_table(long), out / ARTIFACT)
    save_config(out, ARTIFACT, config, recipe=recipe.to_json(), stated_times=stated)
    return out


def _parse(argv=None) -> Config:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=comma_list(str))
    parser.add_argument("--methods", type=comma_list(str), help="pruning methods (default expander,snip)")
    parser.add_argument("--densities", type=comma_list(float))
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--workers", type=int, help="Dask worker processes (default 2)")
    parser.add_argument("--inline", action="store_true", help="run cells in this process (no Dask)")
    args = parser.parse_args(argv)
    return config_from_args(SMALL if args.small else Config(), args,
                            ("models", "methods", "densities", "seeds", "recipe", "workers",
                             "results_root"))


if __name__ == "__main__":
    folder = main(_parse())
    print((folder / "table3.md").read_text())
    print(f"results in {folder}")

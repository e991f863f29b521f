"""Table 3 of the N2NSkip paper (arXiv 2208.03662): connectivity distance F per method x density.

For each model (the paper: VGG19 and ResNet50, at channel level), each method (RP = ``expander``,
CSP = ``snip``) with and without N2NSkip (same total budget, half of it on random N2NSkip
connections), and each density, the heat-diffusion distance to the dense reference
``F(t) = ||S_ref(t) - S(t)||_2`` (PAPER.md) is computed by the sweep engine
``n2ngraph.compare`` (one idempotent cell per model x method x density x seed x variant). The
paper does not state ``t``; here every F comes with its ``t``, both absolute and as
``t * lambda_2(reference)`` (default ``t = 1 / lambda_2`` and ``3 / lambda_2``), and with
``F(t = inf)`` (heat trapped by disconnection) and the number of connected components beside it.

Run (from the repository root)::

    python -m analysis.table3_distance           # VGG19 (torchvision head, 143M) + ResNet50; heavy
    python -m analysis.table3_distance --small   # VGG16 (CIFAR head) + ResNet18, 2 densities, ~1 min

Writes ``results/table3-<hash>/``: ``table3.csv|md`` (wide: one row per model x t x method, one
column per density, ``mean ± std`` over seeds), ``distance.csv|md`` (long: every number),
``table3_<model>.png|pdf`` (F and components against density), ``sweeps/<model>/`` (the cells),
and ``config.json`` (with the resolved times per model).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.common import (
    base_parser,
    config_from_args,
    paper_label,
    results_dir,
    save_config,
)

__all__ = ["SMALL", "Config", "distance_table", "main", "wide_table"]

ARTIFACT = "table3"


@dataclass(frozen=True)
class Config:
    """Settings of Table 3.

    Attributes
    ----------
    models : tuple of str
        Model specs (``n2ngraph.models.resolve_model``); the paper's are ``vgg19`` (torchvision
        head, 143M weights) and ``resnet50``.
    methods : tuple of str
        Pruning methods; the paper's RP and CSP are ``expander`` and ``snip``.
    densities : tuple of float
        Total kept fractions (the paper: 50%, 10%, 5%, 2%).
    seeds : int
        Seeds 0 .. seeds-1 per cell.
    n2nskip_fraction : float
        Share of the budget on N2NSkip connections in the N2NSkip rows.
    times, t_lambda2 : tuple of float
        Absolute times, or (when ``times`` is None) multiples of ``1 / lambda_2(reference)``.
    dataset, batch_size : str, int
        Calibration batch of SNIP (MNIST-5k digits, padded to 3 x 32 x 32 for CIFAR-shaped nets).
    weighted : bool
        ``|w|``-weighted adjacency instead of binary.
    inline, workers, scheduler
        How cells run (``n2ngraph.compare.run_sweep``); not part of the results' identity.
    """

    models: tuple[str, ...] = ("vgg19", "resnet50")
    methods: tuple[str, ...] = ("expander", "snip")
    densities: tuple[float, ...] = (0.5, 0.1, 0.05, 0.02)
    seeds: int = 1
    n2nskip_fraction: float = 0.5
    times: tuple[float, ...] | None = None
    t_lambda2: tuple[float, ...] = (1.0, 3.0)
    dataset: str = "mnist5k"
    batch_size: int = 128
    weighted: bool = False
    inline: bool = False
    workers: int = 2
    scheduler: str | None = None
    results_root: str = "results"


#: About a minute on 2 CPU cores: VGG16 with the CIFAR head and ResNet18, densities 10% and 2%.
SMALL = Config(models=("analysis.common:vgg16_cifar", "resnet18"), densities=(0.1, 0.02),
               batch_size=16, inline=True)


def _compare_config(config: Config, model: str):
    from n2ngraph.compare import CompareConfig

    return CompareConfig(model=model, methods=config.methods, densities=config.densities,
                         seeds=config.seeds, n2nskip_fraction=config.n2nskip_fraction,
                         times=config.times, t_lambda2=config.t_lambda2, weighted=config.weighted,
                         dataset=config.dataset, batch_size=config.batch_size)


def _model_name(spec: str) -> str:
    return spec.rpartition(":")[2] if ":" in spec else spec


def distance_table(summary, model: str, times, lam2: float):
    """Long table from a sweep summary (``n2ngraph.compare.summarize``): one row per
    method x variant x density x t, with ``t``, ``t * lambda_2``, F mean and std over seeds,
    ``F(t=inf)`` and the mean number of connected components."""
    import pandas as pd

    rows = []
    for r in summary.to_dict("records"):
        for t in [*times, float("inf")]:
            col = f"F(t={t:g})" if t != float("inf") else "F(t=inf)"
            rows.append({
                "model": model, "label": paper_label(r["method"], r["variant"]),
                "method": r["method"], "variant": r["variant"], "density": r["density"],
                "seeds": r["seeds"], "t": t, "t_lambda2": t * lam2, "F_mean": r[col],
                "F_std": r.get(f"{col}_std", float("nan")),
                "n_components": r["n_components"], "lambda_2": r["lambda_2"],
            })
    return pd.DataFrame(rows)


def wide_table(long):
    """The paper's layout: one row per model x t x method label, one column per density, each
    cell ``mean ± std`` over seeds (``mean`` alone for one seed), 2 significant digits."""
    import numpy as np
    import pandas as pd

    def fmt(mean, std):
        return f"{mean:.2g}" if not np.isfinite(std) else f"{mean:.2g} ± {std:.1g}"

    densities = sorted(set(long["density"]), reverse=True)
    rows = []
    for (model, t, label), part in long.groupby(["model", "t", "label"], sort=False):
        row = {"model": model, "t": f"{t:.4g}", "t*lambda_2": f"{part['t_lambda2'].iloc[0]:.3g}",
               "method": label}
        by = {r["density"]: r for r in part.to_dict("records")}
        for d in densities:
            row[f"{d:g}"] = fmt(by[d]["F_mean"], by[d]["F_std"]) if d in by else ""
        rows.append(row)
    return pd.DataFrame(rows)


def main(config: Config = Config()) -> Path:
    """Run the sweeps (resuming finished cells) and write Table 3; returns the results folder."""
    import pandas as pd

    from n2ngraph.compare import reference_graph, run_sweep, stated_times
    from n2ngraph.plotting import plot_compare
    from n2ngraph.tables import write_table

    out = results_dir(ARTIFACT, config)
    longs, stated = [], {}
    for spec in config.models:
        cc = _compare_config(config, spec)
        times, lam2 = stated_times(reference_graph(cc), config.times, config.t_lambda2,
                                   weighted=cc.weighted)
        name = _model_name(spec)
        stated[name] = {"times": list(times), "lambda_2_reference": lam2}
        _, summary = run_sweep(cc, out / "sweeps" / name, scheduler=config.scheduler,
                               workers=config.workers, progress=False, inline=config.inline,
                               times=times)
        longs.append(distance_table(summary, name, times, lam2))
        plot_compare(summary, path=out / f"{ARTIFACT}_{name}")
    long = pd.concat(longs, ignore_index=True)
    write_table(long, out / "distance")
    write_table(wide_table(long), out / ARTIFACT)
    save_config(out, ARTIFACT, config, stated_times=stated)
    return out


def _parse(argv=None) -> Config:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=lambda s: tuple(s.split(",")))
    parser.add_argument("--densities", type=lambda s: tuple(float(v) for v in s.split(",")))
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--inline", action="store_true", help="run cells in this process (no Dask)")
    args = parser.parse_args(argv)
    return config_from_args(SMALL if args.small else Config(), args, ('models', 'densities', 'seeds', 'results_root'))


if __name__ == "__main__":
    folder = main(_parse())
    print((folder / "table3.md").read_text())
    print(f"results in {folder}")

"""``n2ngraph compare``: compare pruning methods with and without N2NSkip, end to end.

The embedded default is the paper's MLP (3072-512-256-128-64-10) under the ``paper`` recipe, six
pruning methods, densities 0.1 / 0.05 / 0.02, three seeds, each with and without N2NSkip, with
SNIP/GraSP calibrated on the bundled MNIST-5k images; cells run on a local Dask cluster of two
workers. See ``n2ngraph.compare`` for what a cell measures, how times are stated and what the
output folder holds. Every bad argument gives one line on stderr and exit code 2, before any
file is written or any worker started.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _model_arg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from n2ngraph.compare import DEFAULT_METHODS

    def one_line_error(message: str):
        parser.exit(2, f"n2ngraph compare: error: {message}\n")

    parser.error = one_line_error  # one clear line, as for every other bad argument
    parser.add_argument("--model", default="paper_mlp", help="paper_mlp, lenet300, vgg16, vgg19, "
                        "resnet18, resnet50, or 'package.module:factory' (default paper_mlp)")
    parser.add_argument("--model-arg", type=_model_arg, action="append", default=[],
                        metavar="KEY=VALUE", help="keyword argument of the model factory (VALUE "
                        "read as JSON when it parses, else a string); repeatable")
    parser.add_argument("--recipe", default="paper",
                        help="how variants are built: paper or all-pairs (default paper)")
    parser.add_argument("--methods", type=_names, default=DEFAULT_METHODS,
                        help=f"comma-separated pruning methods (default {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--densities", type=_floats, default=(0.1, 0.05, 0.02),
                        help="comma-separated total densities (default 0.1,0.05,0.02)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--times", type=_floats, default=None,
                        help="absolute diffusion times for F (default: stated in units of "
                        "1/lambda_2 of the dense reference, see --t-lambda2)")
    parser.add_argument("--t-lambda2", type=_floats, default=(1.0, 3.0, 100.0),
                        help="times in units of 1/lambda_2 of the reference (default 1,3,100)")
    parser.add_argument("--weighted", action="store_true", help="weighted adjacency (|w| sums)")
    parser.add_argument("--variants", type=_names, default=("plain", "n2nskip"),
                        help="plain, n2nskip or both (default both)")
    parser.add_argument("--n2nskip-fraction", type=float, default=None,
                        help="share of the budget given to N2NSkip connections (default: the "
                        "recipe's, 0.5); another value renames the recipe NAME-fF")
    parser.add_argument("--dataset", default="mnist5k",
                        help="calibration data for snip/grasp (default mnist5k, bundled)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="calibration batch size (default 128)")
    parser.add_argument("--scope", default=None, help="scope of score-based pruners, layerwise or "
                        "global (default: the recipe's); another value renames the recipe")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default results/compare-MODEL-HASH); relative to "
                        "this directory, wherever the workers run")
    parser.add_argument("--scheduler", default=None,
                        help="Dask scheduler address (default: a LocalCluster on this machine)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/BLAS threads per Dask worker (default 1)")
    parser.add_argument("--inline", action="store_true", help="run cells in this process, no Dask")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from n2ngraph.compare import CompareConfig, reference_graph, run_sweep
    from n2ngraph.io import check_output_folder

    for flag in ("workers", "threads", "seeds", "batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be an integer >= 1, got {getattr(args, flag)}")
    f = args.n2nskip_fraction
    if f is not None and not (math.isfinite(f) and 0 < f < 1):
        raise ValueError(f"--n2nskip-fraction must lie in (0, 1), got {f}")
    kwargs = {}
    for key, value in args.model_arg:
        if key in kwargs:
            raise ValueError(f"--model-arg {key} given twice")
        kwargs[key] = value
    config = CompareConfig(
        model=args.model, model_kwargs=kwargs, recipe=args.recipe, methods=args.methods,
        densities=args.densities, seeds=args.seeds, variants=args.variants,
        n2nskip_fraction=args.n2nskip_fraction, times=args.times, t_lambda2=args.t_lambda2,
        weighted=args.weighted, dataset=args.dataset, batch_size=args.batch_size, scope=args.scope,
    )
    out = (args.out or Path("results") / config.label).resolve()
    check_output_folder(out)
    reference_graph(config)  # a model name or factory that fails, fails here, before any file
    table, summary, _ = run_sweep(config, out, scheduler=args.scheduler, workers=args.workers,
                                  threads=args.threads, progress=not args.no_progress,
                                  inline=args.inline)
    from n2ngraph.compare import caption
    from n2ngraph.plotting import plot_compare, plot_delta_f

    plot_compare(summary, path=out / "compare")
    figures = ["compare.png|pdf"]
    if {"plain", "n2nskip"} <= set(table["variant"]):
        plot_delta_f(table, path=out / "delta_F")  # the claim: F(X) - F(N2NSkip-X) > 0
        figures.append("delta_F.png|pdf")
    stat = [c for c in summary.columns if not c.endswith("_std")
            and c.startswith(("F(t=", "escaped-ref(t="))]
    cols = ["method", "variant", "density", "seeds", *stat, "lambda_2/ref", "n_components",
            "dead_units", "effective_density"]
    print(caption(table.attrs))
    print(summary[[c for c in cols if c in summary.columns]].to_string(index=False,
                                                                       float_format="%.4g"))
    print(f"wrote {out}/ config.json results.csv|md summary.csv|md {' '.join(figures)} "
          f"({len(table)} cells in cells/)", file=sys.stdout)
    return 0

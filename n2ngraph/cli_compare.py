"""``n2ngraph compare``: compare pruning methods with and without N2NSkip, end to end.

The embedded default is the paper's MLP (3072-512-256-128-64-10), six pruning methods, densities
0.1 / 0.05 / 0.02, three seeds, each with and without N2NSkip, with SNIP/GraSP calibrated on the
bundled MNIST-5k images; cells run on a local Dask cluster of two workers. See
``n2ngraph.compare`` for what a cell measures and how times are stated.
"""

from __future__ import annotations

import argparse
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from n2ngraph.compare import DEFAULT_METHODS

    parser.add_argument("--model", default="paper_mlp", help="paper_mlp, lenet300, vgg16, vgg19, "
                        "resnet18, resnet50, or 'package.module:factory' (default paper_mlp)")
    parser.add_argument("--methods", type=_names, default=DEFAULT_METHODS,
                        help=f"comma-separated pruning methods (default {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--densities", type=_floats, default=(0.1, 0.05, 0.02),
                        help="comma-separated total densities (default 0.1,0.05,0.02)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--times", type=_floats, default=None,
                        help="absolute diffusion times for F (default: 1/lambda_2 and 3/lambda_2 "
                        "of the dense reference)")
    parser.add_argument("--weighted", action="store_true", help="weighted adjacency (|w| sums)")
    parser.add_argument("--variants", type=_names, default=("plain", "n2nskip"),
                        help="plain, n2nskip or both (default both)")
    parser.add_argument("--n2nskip-fraction", type=float, default=0.5,
                        help="share of the budget given to N2NSkip connections (default 0.5)")
    parser.add_argument("--dataset", default="mnist5k",
                        help="calibration data for snip/grasp (default mnist5k, bundled)")
    parser.add_argument("--scope", default="layerwise", help="layerwise or global (default layerwise)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default results/compare-MODEL-HASH)")
    parser.add_argument("--scheduler", default=None,
                        help="Dask scheduler address (default: a LocalCluster on this machine)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    parser.add_argument("--inline", action="store_true", help="run cells in this process, no Dask")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from n2ngraph.compare import CompareConfig, reference_graph, run_sweep
    from n2ngraph.io import check_output_folder
    from n2ngraph.plotting import plot_compare

    config = CompareConfig(
        model=args.model, methods=args.methods, densities=args.densities, seeds=args.seeds,
        variants=args.variants, n2nskip_fraction=args.n2nskip_fraction, times=args.times,
        weighted=args.weighted, dataset=args.dataset, scope=args.scope,
    )
    out = args.out or Path("results") / config.label
    check_output_folder(out)
    reference_graph(config)  # a model name or factory that fails, fails here, before any file
    table, summary = run_sweep(config, out, scheduler=args.scheduler, workers=args.workers,
                               progress=not args.no_progress, inline=args.inline)
    plot_compare(summary, path=out / "compare")
    f_cols = [c for c in summary.columns if c.startswith("F(t=") and not c.endswith("_std")]
    cols = ["method", "variant", "density", "seeds", *f_cols, "n_components", "dead_units",
            "effective_density"]
    print(summary[[c for c in cols if c in summary.columns]].to_string(index=False,
                                                                       float_format="%.4g"))
    print(f"wrote {out}/ results.csv summary.csv compare.png ({len(table)} cells)", file=sys.stdout)
    return 0

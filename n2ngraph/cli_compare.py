"""``n2ngraph compare``: compare pruning methods with and without N2NSkip, end to end.

The embedded default is the paper's MLP (3072-512-256-128-64-10) under the ``paper`` recipe, six
pruning methods, densities 0.1 / 0.05 / 0.02, three seeds, each with and without N2NSkip, with
SNIP/GraSP calibrated on the bundled MNIST-5k images; cells run on a local Dask cluster of two
workers. ``--train-epochs N`` also trains every variant and the dense reference of each seed
(accuracy and ``trained`` connectivity columns, accuracy-against-F figures; ``--data``,
``--init``, ``--input-shape``, ``--device``), and ``--save-graphs`` writes every cell's graph.
See ``n2ngraph.compare`` for what a cell measures, how times are stated, how training cells run
and resume, and what the output folder holds. Every bad argument gives one line on stderr and
exit code 2, before any file is written or any worker started.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
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


def _input_shape(text: str) -> tuple[int, ...]:
    from n2ngraph.models import parse_input_shape

    try:
        return parse_input_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _defaults() -> dict:
    """Defaults of the sweep options: :class:`~n2ngraph.compare.CompareConfig`'s fields and
    :func:`~n2ngraph.compare.run_sweep`'s keywords (their one home; never retyped here)."""
    import inspect

    from n2ngraph.compare import CompareConfig, run_sweep

    found = {name: p.default for name, p in inspect.signature(run_sweep).parameters.items()
             if p.default is not inspect.Parameter.empty}
    found.update({f.name: f.default for f in dataclasses.fields(CompareConfig)
                  if f.default is not dataclasses.MISSING})
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``compare`` options to ``parser``; defaults are the sweep's own (:func:`_defaults`)."""
    d = _defaults()

    def joined(values) -> str:
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    parser.add_argument("--model", default=d["model"], help="paper_mlp, lenet300, vgg16, vgg19, "
                        f"resnet18, resnet50, or 'package.module:factory' (default {d['model']})")
    parser.add_argument("--model-arg", type=_model_arg, action="append", default=[],
                        metavar="KEY=VALUE", help="keyword argument of the model factory (VALUE "
                        "read as JSON when it parses, else a string); repeatable")
    parser.add_argument("--recipe", default=d["recipe"],
                        help=f"how variants are built: paper or all-pairs (default {d['recipe']})")
    parser.add_argument("--methods", type=_names, default=d["methods"],
                        help=f"comma-separated pruning methods (default {joined(d['methods'])})")
    parser.add_argument("--densities", type=_floats, default=d["densities"],
                        help=f"comma-separated total densities (default {joined(d['densities'])})")
    parser.add_argument("--seeds", type=int, default=d["seeds"], help=f"number of seeds (default {d['seeds']})")
    parser.add_argument("--times", type=_floats, default=d["times"],
                        help="absolute diffusion times for F (default: stated in units of "
                        "1/lambda_2 of the dense reference, see --t-lambda2)")
    parser.add_argument("--t-lambda2", type=_floats, default=d["t_lambda2"],
                        help=f"times in units of 1/lambda_2 of the reference (default {joined(d['t_lambda2'])})")
    parser.add_argument("--weighted", action="store_true", default=d["weighted"],
                        help="weighted adjacency (|w| sums)")
    parser.add_argument("--variants", type=_names, default=d["variants"],
                        help=f"plain, n2nskip or both (default {joined(d['variants'])})")
    parser.add_argument("--n2nskip-fraction", type=float, default=d["n2nskip_fraction"],
                        help="share of the budget given to N2NSkip connections (default: the "
                        "recipe's); another value renames the recipe NAME-fF")
    parser.add_argument("--data", "--dataset", dest="dataset", default=d["dataset"],
                        help="dataset spec: calibration data of snip/grasp and, with --train-epochs, "
                        f"the training and test data (default {d['dataset']}, bundled)")
    parser.add_argument("--train-epochs", type=int, default=d["train_epochs"], metavar="N",
                        help="also train every cell's variant for N epochs (the paper's SGD recipe) and "
                        "the dense reference once per seed; adds accuracy and 'trained' connectivity "
                        f"columns (default {d['train_epochs']}: connectivity only)")
    parser.add_argument("--init", choices=("dense", "sparse"), default=d["init"],
                        help=f"initialisation of the trained sparse models (default {d['init']})")
    parser.add_argument("--input-shape", type=_input_shape, default=d["input_shape"], metavar="C,H,W",
                        help="per-sample input shape the model is traced with (default: 32x32 images "
                        "for a conv net, or the data's shape when training)")
    parser.add_argument("--device", default=d["device"],
                        help=f"training device of the cells: auto, cpu, cuda, cuda:N (default {d['device']})")
    parser.add_argument("--save-graphs", action="store_true", default=d["save_graphs"],
                        help="also write every cell's graph to OUT/graphs/ (.npz)")
    parser.add_argument("--batch-size", type=int, default=d["batch_size"],
                        help=f"calibration batch size (default {d['batch_size']})")
    parser.add_argument("--scope", default=d["scope"], help="scope of score-based pruners, layerwise or "
                        "global (default: the recipe's); another value renames the recipe")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default results/compare-MODEL-HASH); relative to "
                        "this directory, wherever the workers run")
    parser.add_argument("--scheduler", default=d["scheduler"],
                        help="Dask scheduler address (default: a LocalCluster on this machine)")
    parser.add_argument("--workers", type=int, default=d["workers"],
                        help=f"LocalCluster workers (default {d['workers']})")
    parser.add_argument("--threads", type=int, default=d["threads"],
                        help=f"torch/BLAS threads per Dask worker (default {d['threads']})")
    parser.add_argument("--inline", action="store_true", default=d["inline"],
                        help="run cells in this process, no Dask")
    parser.add_argument("--no-progress", action="store_false", dest="progress", default=d["progress"],
                        help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the sweep of parsed ``args``, write tables and figures, print the summary; returns 0.
    Bad values raise ``ValueError`` before any file is written (reported by :func:`n2ngraph.cli.main`)."""
    from n2ngraph.compare import CompareConfig, reference_graph, run_sweep
    from n2ngraph.io import check_output_folder

    for flag in ("workers", "threads", "seeds", "batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be an integer >= 1, got {getattr(args, flag)}")
    if args.train_epochs < 0:
        raise ValueError(f"--train-epochs must be an integer >= 0, got {args.train_epochs}")
    f = args.n2nskip_fraction
    if f is not None and not (math.isfinite(f) and 0 < f < 1):
        raise ValueError(f"--n2nskip-fraction must lie in (0, 1), got {f}")
    kwargs = {}
    for key, value in args.model_arg:
        if key in kwargs:
            raise ValueError(f"--model-arg {key} given twice")
        kwargs[key] = value
    given = vars(args)  # every CompareConfig field with an option of the same name
    config = CompareConfig(model_kwargs=kwargs, **{f.name: given[f.name] for f in dataclasses.fields(CompareConfig)
                                                   if f.name in given})
    out = (args.out or Path("results") / config.label).resolve()
    check_output_folder(out)
    if config.training:
        from n2ngraph.training import resolve_device

        resolve_device(args.device)  # cuda asked for on a machine without it
        _check_fits(config)  # model, graph and data shapes agree, before any file or worker
    reference_graph(config)  # a model name or factory that fails, fails here, before any file
    table, summary, _ = run_sweep(config, out, scheduler=args.scheduler, workers=args.workers,
                                  threads=args.threads, progress=args.progress,
                                  inline=args.inline, device=args.device, save_graphs=args.save_graphs)
    from n2ngraph.compare import sweep_markdown
    from n2ngraph.plotting import plot_compare, plot_delta_f

    plot_compare(summary, path=out / "compare")
    figures = ["compare"]
    if {"plain", "n2nskip"} <= set(table["variant"]):
        plot_delta_f(table, path=out / "delta_F")  # the claim: F(X) - F(N2NSkip-X) > 0
        figures.append("delta_F")
    if config.training:
        figures += _accuracy_figures(table, out)
    print(sweep_markdown(summary), end="")  # the text of summary.md
    print(_wrote(out, table, figures))
    return 0


def _check_fits(config) -> None:
    """Refuse, in one line (:func:`n2ngraph.training.check_input_fits`), a traced graph, model
    and training data whose shapes or class counts disagree."""
    from n2ngraph.compare import _model, _splits, model_setup, reference_graph
    from n2ngraph.training import check_input_fits

    kwargs, _ = model_setup(config)
    check_input_fits(_model(config.model, kwargs, 0), _splits(config.dataset)[0],
                     graph=reference_graph(config), name=config.model)


def _accuracy_figures(table, out: Path) -> list[str]:
    """Final test accuracy against ``F`` at initialisation and against ``trained F``, at the
    middle stated time, where plain and N2NSkip variants differ most (docs/diffusion.md)
    (``n2ngraph.plotting.plot_accuracy_vs_distance``: one colour per method, mean over seeds
    with error bars); returns the figure names written."""
    import pandas as pd

    from n2ngraph import plotting

    training = table.attrs["training"]
    acc = training["dense_final_test_acc"]
    same = {c: table[c].iloc[0] for c in ("model", "recipe", "init", "data") if c in table.columns}
    dense = pd.DataFrame({**same, "method": "dense", "variant": "dense", "density": 1.0,
                          "seed": range(len(acc)), "final_test_acc": acc})
    frame = pd.concat([table, dense], ignore_index=True)  # the dense references: a band
    names = []
    for prefix, name in (("F(t=", "accuracy_vs_F"), ("trained F(t=", "accuracy_vs_trained_F")):
        columns = [c for c in table.columns if c.startswith(prefix) and not c.endswith("inf)")]
        if columns:
            plotting.plot_accuracy_vs_distance(frame, distance=columns[(len(columns) - 1) // 2],
                                               accuracy="final_test_acc", path=out / name)
            names.append(name)
    return names


def _wrote(out: Path, table, figures) -> str:
    """The closing lines: every file the run wrote, by folder."""
    written = [Path(p) for p in table.attrs["files"]]
    written += [out / f"{name}.{ext}" for name in figures for ext in ("png", "pdf")
                if (out / f"{name}.{ext}").exists()]  # plotting.save_figure's formats
    by_folder: dict[Path, list[str]] = {}
    runs: dict[Path, int] = {}
    for p in written:
        if p.parent.parent.name == "runs":  # one line for all the run folders of a config
            runs[p.parent.parent] = runs.get(p.parent.parent, 0) + (p.name == "log.csv")
            continue
        by_folder.setdefault(p.parent, []).append(p.name)
    for folder, count in runs.items():
        by_folder[folder] = [f"{count} run folder{'' if count == 1 else 's'} <run>/log.csv, run.json"]
    graphs = by_folder.get(out / "graphs")
    if graphs:
        by_folder[out / "graphs"] = [f"{len(graphs)} graph file{'' if len(graphs) == 1 else 's'} "
                                     "<method>-<variant>-d<density>-s<seed>-<cell id>.npz"]
    lines = [f"wrote {out}/"]
    for folder, names in sorted(by_folder.items(), key=lambda kv: kv[0] != out):
        where = "" if folder == out else f"{folder.relative_to(out)}/: "
        lines.append(f"  {where}{' '.join(names)}")
    cells = len(set(table["cell_id"]))
    lines.append(f"  cells/: {cells} cell file{'' if cells == 1 else 's'} of this config "
                 "(<cell id>.json, one per method, density, seed and variant)")
    return "\n".join(lines)

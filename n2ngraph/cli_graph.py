"""``n2ngraph graph MODEL``: trace a model (dense, pruned, or pruned with N2NSkip) and write its graph.

::

    n2ngraph graph MODEL [--method M --density D [--n2nskip] [--recipe R]] [--seed S]
                         [--data NAME] [--input-shape C,H,W] [--model-kwargs JSON] [--out DIR]

Without ``--method`` the dense model is traced. With ``--method`` and ``--density`` the variant a
table row of ``n2ngraph compare`` stands for is built (:func:`n2ngraph.pipeline.variant`): the
plain pruned network, or with ``--n2nskip`` the recipe's N2NSkip variant at the same total
budget. Its per-layer kept-fraction table (:func:`n2ngraph.tables.layer_table`) is printed, as
pruning tools do.

Shapes: ``--data`` builds the model for that dataset (``num_classes``, ``in_features``,
``in_channels`` where the factory takes them, as ``n2ngraph train`` does) and, for a conv net,
traces it at the data's image size; ``--input-shape`` gives the traced shape explicitly (and the
model's ``in_features`` / ``in_channels`` from it, where the factory takes them). Data-driven
methods (``snip``, ``grasp``) score on a calibration batch of ``--data``
(:func:`n2ngraph.pipeline.calibration_batch`).

Writes into ``--out`` (default ``results/graph-MODEL[-METHOD-DENSITY[-n2nskip]-sSEED]``):
``groups.csv|md``, ``blocks.csv|md``, ``layers.csv|md``, ``adjacency.png|pdf``, ``graph.npz``
and ``config.json``. The graph's provenance records the model spec, its keywords, the data and
the traced input shape, so ``n2ngraph train --graph OUT/graph.npz --data NAME`` rebuilds the
same model without being told. A model that cannot be built or traced is a user error: one line
on stderr, exit code 2 (through :func:`n2ngraph.cli.main`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
from pathlib import Path

__all__ = ["CALIBRATION_BATCH", "add_arguments", "default_out", "run"]

#: Images in the calibration batch of data-driven pruning methods (that of ``n2ngraph compare``).
CALIBRATION_BATCH = 128


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``graph`` options; the seed, recipe and figure defaults are those of
    :func:`~n2ngraph.models.resolve_model`, :func:`~n2ngraph.pipeline.variant` and
    :func:`~n2ngraph.plotting.plot_adjacency`."""
    from n2ngraph.models import resolve_model
    from n2ngraph.pipeline import variant
    from n2ngraph.plotting import plot_adjacency

    seed = inspect.signature(resolve_model).parameters["seed"].default
    recipe = inspect.signature(variant).parameters["recipe"].default
    bins = inspect.signature(plot_adjacency).parameters["bins"].default
    parser.add_argument("model", help="registered model name (paper_mlp, lenet300, vgg16, vgg19, "
                        "resnet18, resnet50) or a factory 'package.module:function' (found in the "
                        "current directory too)")
    parser.add_argument("--method", default=None,
                        help="prune with this method (random, expander = the paper's RP, magnitude, "
                             "snip = the paper's CSP, grasp, synflow); needs --density")
    parser.add_argument("--density", type=float, default=None,
                        help="total kept fraction of the weights, in (0, 1] (skips included)")
    parser.add_argument("--n2nskip", action="store_true",
                        help="add N2NSkip connections at the same total budget (the recipe's share)")
    parser.add_argument("--recipe", default=recipe,
                        help=f"how the variant is built: paper or all-pairs (default {recipe})")
    parser.add_argument("--seed", type=int, default=seed,
                        help=f"seed of the model's initialisation, the pruning and the skips (default {seed})")
    parser.add_argument("--data", default=None,
                        help="dataset the model is built and traced for (mnist5k, mnist5k:pad=2, digits, "
                             "cifar10:PATH, synthetic:...), and the calibration data of snip/grasp")
    parser.add_argument("--input-shape", default=None, metavar="C,H,W",
                        help="shape of one input sample to trace at, e.g. 1,28,28 (default: the data's "
                             "for a conv net, else the model's guess: 32 x 32 images)")
    parser.add_argument("--model-kwargs", default="{}",
                        help="JSON keywords for the model factory, e.g. '{\"head\": \"cifar\"}'")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default results/graph-MODEL[-METHOD-DENSITY[-n2nskip]-sSEED])")
    parser.add_argument("--bins", type=int, default=bins,
                        help=f"pixels per side of the adjacency figure (default {bins})")


def default_out(args: argparse.Namespace) -> Path:
    """``results/graph-MODEL`` for the dense graph, ``results/graph-MODEL-METHOD-D[-n2nskip]-sS``
    for a variant (``:`` and ``/`` of a factory spec become ``-``)."""
    label = args.model.replace(":", "-").replace("/", "-")
    if args.method is not None:
        label += f"-{args.method}-{args.density:g}{'-n2nskip' if args.n2nskip else ''}-s{args.seed}"
    return Path("results") / f"graph-{label}"


def _check_options(args: argparse.Namespace) -> None:
    """Refuse option combinations that say nothing, before building anything."""
    from n2ngraph.budget import check_density
    from n2ngraph.recipes import get_recipe

    if args.method is None:
        given = [flag for flag, on in (("--density", args.density is not None), ("--n2nskip", args.n2nskip))
                 if on]
        if given:
            raise ValueError(f"{' and '.join(given)} need --method (e.g. --method expander, the paper's RP)")
        return
    from n2ngraph.pruning import METHODS

    if args.method not in METHODS:
        raise ValueError(f"unknown pruning method {args.method!r}; valid methods are {sorted(METHODS)}")
    if args.density is None:
        raise ValueError(f"--method {args.method} needs --density (a kept fraction in (0, 1], e.g. 0.05)")
    check_density(args.density)
    get_recipe(args.recipe)
    if METHODS[args.method].needs_data and args.data is None:
        raise ValueError(f"method {args.method!r} scores weights on data: give --data (e.g. mnist5k)")


def _traced_shape(model, input_shape, train_set) -> tuple[int, ...] | None:
    """The shape one sample is traced at: for a model whose first weight layer is a conv,
    ``--input-shape`` or else the data's sample shape; for a fully connected model the flat
    ``(C*H*W,)`` of either (the graph's input group then has one node per value, which fits the
    data's images, :func:`n2ngraph.training.check_input_fits`; and the bridge maps skips out of a
    flat input group); None: the model's own guess (:func:`n2ngraph.models.example_input`)."""
    from torch import nn

    shape = tuple(input_shape) if input_shape is not None else (
        None if train_set is None else tuple(train_set.sample_shape))
    if shape is None:
        return None
    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
    if isinstance(first, nn.Linear):
        return (math.prod(shape),) if input_shape is not None else None
    return shape


def _trace_error(spec: str, exc: Exception) -> ValueError:
    return ValueError(f"cannot trace model {spec!r}: {type(exc).__name__}: "
                      f"{' '.join(str(exc).split())[:300]}")


def _build_graph(args: argparse.Namespace):
    """The graph ``args`` ask for, its model and its traced input shape (or None: the guess)."""
    import sys
    import warnings

    from n2ngraph.cli_train import parse_model_kwargs
    from n2ngraph.data import input_shape as data_shape
    from n2ngraph.data import load_dataset
    from n2ngraph.models import data_defaults, example_input, parse_input_shape, resolve_model

    kwargs = parse_model_kwargs(args.model_kwargs)
    given = None if args.input_shape is None else parse_input_shape(args.input_shape)
    train_set = None if args.data is None else load_dataset(args.data, train=True, augment=False)
    defaults = {} if given is None else data_defaults(given)
    if train_set is not None:
        defaults = {**data_defaults(data_shape(train_set), train_set.num_classes), **defaults}
    model = resolve_model(args.model, seed=args.seed, defaults=defaults, **kwargs)
    shape = _traced_shape(model, given, train_set)
    x = None if shape is None else example_input(model, input_shape=shape)
    try:
        if args.method is None:
            from n2ngraph.trace import to_graph

            graph = to_graph(model, example_input=x, name=args.model)
        else:
            from n2ngraph.pipeline import calibration_batch, variant
            from n2ngraph.pruning import METHODS

            data = None
            if METHODS[args.method].needs_data:
                data = calibration_batch(model, train_set, CALIBRATION_BATCH, args.seed, input_shape=shape)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                graph = variant(model, args.method, args.density, recipe=args.recipe, skips=args.n2nskip,
                                seed=args.seed, data=data, example_input=x)
            for w in caught:
                print(f"n2ngraph graph: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    except (ValueError, TypeError):
        raise
    except Exception as exc:  # noqa: BLE001 - the user's model cannot be traced: one line, exit 2
        raise _trace_error(args.model, exc) from None
    traced = tuple(graph.groups[0].shape) if x is not None else None
    graph = graph.replace(provenance={
        **graph.provenance, "model": args.model, "model_kwargs": kwargs, "data": args.data,
        "input_shape": None if traced is None else list(traced)})
    return graph, model, traced


def _title(args: argparse.Namespace, graph) -> str:
    if args.method is None:
        return f"model {args.model}, dense, seed {args.seed}"
    what = "N2NSkip-" + args.method if args.n2nskip else args.method
    return (f"model {args.model}, {what} at density {args.density:g} (recipe {args.recipe}), "
            f"seed {args.seed}: {graph.num_params:,} of {graph.dense_params:,} weights")


def _kept_text(layers) -> str:
    """The layer table as printed: kept fractions in %, counts with thousands separators."""
    shown = layers.assign(kept=[f"{v:,}" for v in layers["kept"]],
                          weights=[f"{v:,}" for v in layers["weights"]],
                          kept_fraction=[f"{100 * v:.2f}%" for v in layers["kept_fraction"]])
    return shown.rename(columns={"kept_fraction": "kept %"}).to_string(index=False)


def run(args: argparse.Namespace) -> int:
    """Build the graph of parsed ``args`` and write its tables, figure and graph; returns 0."""
    _check_options(args)
    from n2ngraph.cli_train import parse_model_kwargs
    from n2ngraph.io import atomic_write, check_output_folder, save_graph
    from n2ngraph.plotting import plot_adjacency, save_figure
    from n2ngraph.tables import block_table, group_table, layer_table, write_table

    out = args.out or default_out(args)
    graph, _, traced = _build_graph(args)
    check_output_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    groups, blocks, layers = group_table(graph), block_table(graph), layer_table(graph)
    title = _title(args, graph)
    written = [*write_table(groups, out / "groups"), *write_table(blocks, out / "blocks"),
               *write_table(layers, out / "layers", title=title)]
    label = args.model if args.method is None else f"{args.method} {args.density:g}" + (
        " + N2NSkip" if args.n2nskip else "")
    figure = plot_adjacency([graph], [label], bins=args.bins, title=title)
    written += save_figure(figure, out / "adjacency")
    written.append(save_graph(graph, out / "graph.npz"))
    config = {"command": "graph", "model": args.model, "model_kwargs": parse_model_kwargs(args.model_kwargs),
              "seed": args.seed, "bins": args.bins, "method": args.method, "density": args.density,
              "n2nskip": args.n2nskip, "recipe": args.recipe if args.method else None, "data": args.data,
              "input_shape": None if traced is None else list(traced)}
    written.append(atomic_write(out / "config.json",
                                lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2))))
    shape = "x".join(map(str, graph.groups[0].shape))
    print(f"{args.model}: {graph.num_nodes} nodes in {len(graph.groups)} groups, "
          f"{graph.num_edges} edges, {graph.num_params} weights, traced on inputs {shape}")
    if args.method is not None:
        print(f"density {graph.density:.4g}: {graph.num_params:,} of {graph.dense_params:,} weights kept "
              f"({100 * graph.density:.2f}%)")
    print(_kept_text(layers))
    print(f"wrote {out}/ {' '.join(Path(p).name for p in written)}")
    return 0

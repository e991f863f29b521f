"""``n2ngraph graph MODEL``: trace a model, write summary tables, the adjacency figure and the graph.

Writes into ``--out`` (default ``results/graph-MODEL``): ``groups.csv|md``, ``blocks.csv|md``,
``adjacency.png|pdf``, ``graph.npz`` and ``config.json``. A model that cannot be built or traced is
a user error: one line on stderr, exit code 2 (through :func:`n2ngraph.cli.main`).
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``graph`` options; the seed and figure defaults are those of
    :func:`~n2ngraph.models.resolve_model` and :func:`~n2ngraph.plotting.plot_adjacency`."""
    from n2ngraph.models import resolve_model
    from n2ngraph.plotting import plot_adjacency

    seed = inspect.signature(resolve_model).parameters["seed"].default
    bins = inspect.signature(plot_adjacency).parameters["bins"].default
    parser.add_argument("model", help="registered model name (paper_mlp, lenet300, vgg16, vgg19, "
                        "resnet18, resnet50) or a factory 'package.module:function'")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default results/graph-MODEL)")
    parser.add_argument("--seed", type=int, default=seed, help=f"seed of the model's initialisation (default {seed})")
    parser.add_argument("--bins", type=int, default=bins,
                        help=f"pixels per side of the adjacency figure (default {bins})")


def run(args: argparse.Namespace) -> int:
    """Trace the model of parsed ``args`` and write its tables, figure and graph; returns 0."""
    from n2ngraph.io import atomic_write, check_output_folder, save_graph
    from n2ngraph.models import resolve_model
    from n2ngraph.plotting import plot_adjacency, save_figure
    from n2ngraph.tables import block_table, group_table, write_table
    from n2ngraph.trace import to_graph

    label = args.model.replace(":", "-").replace("/", "-")
    out = args.out or Path("results") / f"graph-{label}"
    model = resolve_model(args.model, seed=args.seed)
    try:
        graph = to_graph(model, name=args.model)
    except (ValueError, TypeError):
        raise
    except Exception as exc:  # noqa: BLE001 - the user's model cannot be traced: one line, exit 2
        raise ValueError(f"cannot trace model {args.model!r}: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]}") from None
    check_output_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    groups, blocks = group_table(graph), block_table(graph)
    written = [*write_table(groups, out / "groups"), *write_table(blocks, out / "blocks")]
    figure = plot_adjacency([graph], [args.model], bins=args.bins,
                            title=f"model {args.model}, dense, seed {args.seed}")
    written += save_figure(figure, out / "adjacency")
    written.append(save_graph(graph, out / "graph.npz"))
    config = {"command": "graph", "model": args.model, "seed": args.seed, "bins": args.bins}
    written.append(atomic_write(out / "config.json",
                                lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2))))
    print(f"{args.model}: {graph.num_nodes} nodes in {len(graph.groups)} groups, "
          f"{graph.num_edges} edges, {graph.num_params} weights")
    print(blocks.to_string(index=False))
    print(f"wrote {out}/ {' '.join(Path(p).name for p in written)}")
    return 0

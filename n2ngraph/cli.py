"""The ``n2ngraph`` command: ``n2ngraph SUBCOMMAND ...`` (also ``python -m n2ngraph``).

Subcommands live in their own modules, each with ``add_arguments(parser)`` and ``run(args) -> int``;
this module only dispatches. A user error (a bad argument, or a graph, checkpoint or dataset file
that fails to load) prints one line on stderr and exits with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import zipfile
from importlib import import_module

__all__ = ["main", "SUBCOMMANDS"]

#: subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "compare": ("n2ngraph.cli_compare", "compare pruning methods with and without N2NSkip (the main job)"),
    "graph": ("n2ngraph.cli_graph", "trace a model to a graph: summary tables, adjacency figure, .npz"),
    "train": ("n2ngraph.cli_train", "train a graph variant as a masked PyTorch model"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="n2ngraph",
        description="Connectivity of sparse neural networks: trace, prune, N2NSkip, heat diffusion.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in SUBCOMMANDS.items():
        try:
            mod = import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


#: Errors reported as a user error (one line, exit code 2) rather than a traceback: bad values
#: and files that fail to load (every loader raises ``ValueError`` subclasses naming the file;
#: the others are a safety net for errors raised by third-party readers).
USER_ERRORS = (ValueError, TypeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"n2ngraph {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"n2ngraph {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

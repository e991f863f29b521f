"""The ``n2ngraph`` command: ``n2ngraph SUBCOMMAND ...`` (also ``python -m n2ngraph``).

Subcommands live in their own modules, each with ``add_arguments(parser)`` and ``run(args) -> int``
(and optionally ``interrupt_hint(args) -> str``, what to tell a user who pressed Ctrl-C). This
module dispatches, and it is the one place where errors become messages: a user error (a bad
argument, or a graph, checkpoint or dataset file that fails to load) prints one line on stderr
and exits with code 2, never a traceback; an interrupt prints one line and exits with 130.
Subcommands raise; they never print errors or choose exit codes themselves.

Only the chosen subcommand's module is imported (its options may read defaults from heavy
modules, e.g. ``train`` from :class:`n2ngraph.training.TrainConfig`), so ``n2ngraph --help``
stays fast. A subcommand whose module is missing is an installation error and raises.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import zipfile
from importlib import import_module

from n2ngraph import __version__

__all__ = ["main", "SUBCOMMANDS", "USER_ERRORS"]

#: subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "compare": ("n2ngraph.cli_compare", "compare pruning methods with and without N2NSkip (the main job)"),
    "graph": ("n2ngraph.cli_graph", "trace a model (dense, pruned, or with N2NSkip) to a graph: tables, "
              "per-layer kept fractions, adjacency figure, .npz"),
    "train": ("n2ngraph.cli_train", "train a graph variant as a masked PyTorch model (log, checkpoint, "
              "accuracy/loss curve)"),
}

#: Errors reported as a user error (one line, exit code 2) rather than a traceback: bad values
#: and files that fail to load (every loader raises ``ValueError`` subclasses naming the file;
#: the others are a safety net for errors raised by third-party readers).
USER_ERRORS = (ValueError, TypeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="n2ngraph",
        description="Connectivity of sparse neural networks: trace, prune, N2NSkip, heat diffusion.",
    )
    parser.add_argument("--version", action="version", version=f"n2ngraph {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name != chosen:
            continue  # argparse dispatches on the first positional: only `chosen` can run
        mod = import_module(module)

        def error(message: str, name: str = name, p: argparse.ArgumentParser = p):
            p.exit(2, f"n2ngraph {name}: error: {_one_line(message)}\n")

        p.error = error  # a bad argument is one line too, as every other user error
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _interrupt_hint=getattr(mod, "interrupt_hint", None))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (0, 2 user error, 130 interrupted).

    Examples
    --------
    >>> main(["graph", "no_such_model"])  # one line on stderr names the valid models
    2
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as exc:
        message = _one_line(exc) or type(exc).__name__
        print(f"n2ngraph {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = args._interrupt_hint(args) if args._interrupt_hint is not None else ""
        print(f"n2ngraph {args.command}: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

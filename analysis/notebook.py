"""What every notebook in ``notebooks/`` shares: where results go and how a driver's are shown.

A notebook puts the repository root on ``sys.path`` (it lives in ``notebooks/``), then::

    from analysis.notebook import in_results, show

    out = figure3_adjacency.main(in_results(config))
    show(out, tables=["graphs"], figures=["figure3"])

Notebooks only import and show (``analysis/`` drivers compute and write); the results folder is
``<repository>/results`` unless the environment variable ``N2NGRAPH_RESULTS`` names another (CI
points it at a temporary folder).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_VARIABLE", "ROOT", "in_results", "results_root", "show"]

#: The repository root (the parent of ``analysis/``).
ROOT = Path(__file__).resolve().parents[1]

#: Environment variable that overrides the results folder.
RESULTS_VARIABLE = "N2NGRAPH_RESULTS"


def results_root() -> Path:
    """The folder notebooks write into: ``$N2NGRAPH_RESULTS``, else ``<repository>/results``."""
    return Path(os.environ.get(RESULTS_VARIABLE, str(ROOT / "results")))


def in_results(config: Any) -> Any:
    """A driver's ``config`` with its ``results_root`` set to :func:`results_root`."""
    return dataclasses.replace(config, results_root=str(results_root()))


def show(out: str | os.PathLike, tables: Iterable[str] = (), figures: Iterable[str] = ()) -> None:
    """Display a driver's results from its folder ``out``: each table ``<name>.csv`` under a
    bold caption, then each figure ``<name>.png`` (which must exist and be non-empty), then the
    folder's path.

    Raises
    ------
    FileNotFoundError
        A named table or figure is not in ``out``.
    ValueError
        A figure file is empty.
    """
    import pandas as pd
    from IPython.display import Image, Markdown, display

    out = Path(out)
    for name in tables:
        display(Markdown(f"**{name}**"), pd.read_csv(out / f"{name}.csv"))
    for name in figures:
        path = out / f"{name}.png"
        if path.stat().st_size == 0:
            raise ValueError(f"figure {path} is empty")
        display(Image(filename=str(path)))
    print("results in", out)

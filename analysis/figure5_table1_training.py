"""Figure 5 and Table 1 of the N2NSkip paper (arXiv 2208.03662), from training logs.

Reads a folder of training runs -- each a folder holding the per-epoch ``log.csv`` written by
``n2ngraph.training.train`` -- and reports the final test accuracy (after the last epoch: no
selection on the test set) per method x variant x density, as mean ± sample standard deviation
(ddof=1) over seeds: Table 1 (one row per method, one column per density) and Figure 5 (accuracy
against density, plain pruning vs N2NSkip at the same budget, dense baseline as a band).

A run's identity (``method``, ``variant`` in {plain, n2nskip, dense}, ``density``, ``seed``;
optional ``init`` and ``label``) is read from, in order:

1. ``<run>/run.json`` (written by ``analysis/mnist_reproduction.py`` in its ``runs/<id>/``, hence
   by :func:`make_demo_logs`, or by hand for one's own runs);
2. ``<run>.json`` beside the run folder (``cells/<id>/log.csv`` with ``cells/<id>.json``, the
   layout of results of ``analysis/mnist_reproduction.py`` before it ran on the sweep engine).

Run (from the repository root)::

    python -m analysis.figure5_table1_training --logs analysis/results/mnist_reproduction/<name>/runs
    python -m analysis.figure5_table1_training --small   # trains a demo study on digits first

Writes ``results/figure5-<hash>/``: ``table1.csv|md`` (wide), ``accuracy.csv|md`` (long: mean,
std, n per group), ``runs.csv|md`` (one row per run), ``figure5.png|pdf``, ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.common import base_parser, paper_label, plural, results_dir, save_config

__all__ = ["Config", "figure_title", "find_runs", "main", "make_demo_logs", "summarize_runs", "table1"]

ARTIFACT = "figure5"
RUN_META = "run.json"
_REQUIRED = ("method", "variant", "density", "seed")
#: The ``recipe`` of runs whose metadata does not name one.
UNRECORDED = "(unrecorded)"


@dataclass(frozen=True)
class Config:
    """Settings of Figure 5 / Table 1.

    Attributes
    ----------
    logs : str
        Folder searched recursively for runs (folders with a ``log.csv``).
    metric : str
        Log column reported (``test_acc``, ``train_acc``, ...); accuracies are fractions in the
        logs and reported in %.
    """

    logs: str = "analysis/results/mnist_reproduction"
    metric: str = "test_acc"
    results_root: str = "results"


def _meta(run: Path) -> dict:
    for path in (run / RUN_META, run.with_name(run.name + ".json")):
        if path.is_file():
            meta = json.loads(path.read_text())
            missing = [k for k in _REQUIRED if k not in meta]
            if missing:
                raise ValueError(f"{path} lacks {missing}; a run needs {list(_REQUIRED)}")
            return meta
    raise ValueError(f"run {str(run)!r} has a log.csv but no metadata: write {RUN_META} inside it "
                     f"or {run.name}.json beside it with {list(_REQUIRED)}")


def find_runs(logs: str | Path, metric: str = "test_acc"):
    """One row per run under ``logs``: its identity, ``label`` (the paper's name), ``model`` and
    ``dataset`` (:data:`UNRECORDED` when its metadata does not say), ``epochs`` (finished, from
    the log) and the final ``metric`` in % (last epoch of ``log.csv``), sorted; raises
    ValueError when there is no run, a run lacks metadata, or the metric is not a log column."""
    import pandas as pd

    root = Path(logs)
    if not root.is_dir():
        raise ValueError(f"log folder {str(root)!r} does not exist")
    rows = []
    for log in sorted(root.rglob("log.csv")):
        run = log.parent
        meta = _meta(run)
        frame = pd.read_csv(log)
        if metric not in frame.columns:
            raise ValueError(f"{log} has no column {metric!r}; columns are {list(frame.columns)}")
        if frame.empty:
            continue
        value = float(frame[metric].iloc[-1])
        if metric.endswith("_acc"):
            value *= 100
        rows.append({
            "label": meta.get("label") or paper_label(meta["method"], meta["variant"]),
            "method": meta["method"], "variant": meta["variant"], "density": float(meta["density"]),
            "init": meta.get("init", "dense"), "seed": int(meta["seed"]),
            "recipe": meta.get("recipe", UNRECORDED), "recipe_fields": meta.get("recipe_fields", ""),
            "model": meta.get("model", UNRECORDED), "dataset": meta.get("dataset", UNRECORDED),
            "epochs": int(frame["epoch"].iloc[-1]), metric: value,
            "run": str(run.relative_to(root)),
        })
    if not rows:
        raise ValueError(f"no training runs (folders with a log.csv) under {str(root)!r}")
    table = pd.DataFrame(rows)
    return table.sort_values(["recipe", "init", "variant", "method", "density", "seed"],
                             ascending=[True, True, True, True, False, True]).reset_index(drop=True)


def summarize_runs(runs, metric: str = "test_acc"):
    """Mean, sample std (ddof=1; NaN for one seed) and count of ``metric`` per
    recipe x init x method x variant x density (and label)."""
    keys = ["recipe", "init", "method", "variant", "density", "label"]
    grouped = runs.groupby(keys, sort=False)[metric]
    out = grouped.agg(["mean", "std", "size"]).reset_index()
    return out.rename(columns={"mean": f"{metric}_mean", "std": f"{metric}_std", "size": "n"})


def table1(summary, metric: str = "test_acc"):
    """The paper's Table 1 layout: one row per recipe x init x label, one column per density, each
    cell ``mean ± std`` (1 decimal; the dense baseline in its own row, under its density 1)."""
    import numpy as np
    import pandas as pd

    mean, std = f"{metric}_mean", f"{metric}_std"
    densities = sorted(set(summary["density"]), reverse=True)
    order = {"RP": 0, "N2NSkip-RP": 1, "CSP": 2, "N2NSkip-CSP": 3}
    rows = []
    keys = summary[["recipe", "init", "label"]].drop_duplicates()
    keys = keys.assign(o=[(lab != "dense", order.get(lab, 9), lab) for lab in keys["label"]])
    for recipe, init, label in keys.sort_values(["recipe", "init", "o"])[
            ["recipe", "init", "label"]].itertuples(index=False):
        part = summary[(summary["recipe"] == recipe) & (summary["init"] == init)
                       & (summary["label"] == label)]
        by = {r["density"]: r for r in part.to_dict("records")}
        row = {"recipe": recipe, "init": init, "method": label}
        for d in densities:
            if d in by:
                s = by[d][std]
                row[f"{d:g}"] = f"{by[d][mean]:.1f} ± {s:.1f}" if np.isfinite(s) else f"{by[d][mean]:.1f}"
            else:
                row[f"{d:g}"] = ""
        row["seeds"] = int(part["n"].max())
        rows.append(row)
    return pd.DataFrame(rows)


def make_demo_logs(folder: str | Path, config=None) -> Path:
    """Run a training study (``analysis.mnist_reproduction``, default its ``DEMO``: seconds on a
    CPU) with its results under ``folder``; finished runs are not retrained. Returns the study's
    results folder, whose ``runs/<id>/`` hold ``log.csv`` and ``run.json``."""
    from analysis import mnist_reproduction

    config = mnist_reproduction.DEMO if config is None else config
    return mnist_reproduction.main(dataclasses.replace(config, results_root=str(folder)))


def figure_title(runs) -> str:
    """What Figure 5 shows, from the runs themselves: dataset, model, epochs trained, recipe,
    seeds (each value, or each of several when the runs differ), and what is reported."""
    def values(column: str) -> str:
        return ", ".join(str(v) for v in dict.fromkeys(runs[column]))

    epochs = sorted(set(int(e) for e in runs["epochs"]))
    trained = plural(epochs[0], "epoch") if len(epochs) == 1 else f"{', '.join(map(str, epochs))} epochs"
    seeds = runs.groupby(["recipe", "init", "method", "variant", "density"])["seed"].nunique()
    counted = plural(int(seeds.max()), "seed") if seeds.min() == seeds.max() \
        else f"{int(seeds.min())}-{int(seeds.max())} seeds"
    return (f"dataset {values('dataset')}, model {values('model')}, {trained}, recipe "
            f"{values('recipe')}, {counted}\naccuracy after the last epoch, mean ± std over seeds")


def main(config: Config = Config()) -> Path:
    """Read the runs under ``config.logs`` and write Table 1 and Figure 5; returns the folder."""
    from n2ngraph.plotting import plot_accuracy
    from n2ngraph.tables import write_table

    runs = find_runs(config.logs, config.metric)
    summary = summarize_runs(runs, config.metric)
    out = results_dir(ARTIFACT, config)
    write_table(runs, out / "runs", markdown=runs.drop(columns="recipe_fields"),
                notes="The recipes' fields are in runs.csv.")
    write_table(summary, out / "accuracy")
    write_table(table1(summary, config.metric), out / "table1")
    words = config.metric.replace("_acc", " accuracy").replace("_", " ")
    plot_accuracy(summary, metric=config.metric, path=out / ARTIFACT, title=figure_title(runs),
                  ylabel=f"{words} (%)" if config.metric.endswith("_acc") else words)
    save_config(out, ARTIFACT, config, runs=len(runs))
    return out


def _parse(argv=None) -> Config:
    parser = base_parser(__doc__.split("\n\n")[0], recipe=False)
    parser.add_argument("--logs", help="folder of training runs (searched recursively)")
    parser.add_argument("--metric", help="log column to report (default test_acc)")
    args = parser.parse_args(argv)
    root = args.results_root or Config.results_root
    changes = {k: v for k, v in {"logs": args.logs, "metric": args.metric}.items() if v is not None}
    if args.small and args.logs is None:
        changes["logs"] = str(make_demo_logs(Path(root) / "demo-logs"))
    return dataclasses.replace(Config(), results_root=root, **changes)


if __name__ == "__main__":
    folder = main(_parse())
    print((folder / "table1.md").read_text())
    print(f"results in {folder}")

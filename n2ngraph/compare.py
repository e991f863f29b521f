"""Compare pruning methods end to end: one sweep of independent, idempotent cells.

A *cell* is one (model, method, density, seed, variant) combination. Running it builds the
seeded model, prunes it (with a calibration batch from the bundled dataset for data-driven
methods), traces it, adds N2NSkip connections for the ``n2nskip`` variant (same total budget,
``n2ngraph.n2nskip.variant``), and measures:

- heat diffusion against the dense reference: ``F(t) = ||S_ref(t) - S(t)||_2`` at the sweep's
  stated times and at ``t = inf``, the saturation time, ``lambda_2`` (``n2ngraph.diffusion``);
- structure: connected components, isolated and dead units, effective density, collapsed
  layers (``n2ngraph.metrics``).

Each finished cell is written atomically to ``cells/<cell id>.json`` in the output folder, so a
sweep killed at any point resumes without recomputing or duplicating a cell. Cells run on a Dask
distributed cluster: a ``LocalCluster`` on this machine by default, or any scheduler address.

Times
-----
Unless ``times`` is given, ``F`` is stated at ``t = c / lambda_2(reference)`` for each ``c`` in
``t_lambda2`` (default 1 and 3: ``docs/diffusion.md`` found that RP and N2NSkip-RP separate best
around ``t * lambda_2 ~ 1.3-3.4``). The absolute times are resolved once, written to the config
and named in every column (``F(t=0.1234)``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CompareConfig",
    "Cell",
    "VARIANTS",
    "cells_of",
    "run_cell",
    "run_sweep",
    "load_cells",
    "summarize",
    "calibration_batch",
    "reference_graph",
    "resolve_times",
    "stated_times",
]

#: Graph variants of a pruned network: plain pruning, or the paper's recipe (half the budget
#: pruned by the method, half as random N2NSkip connections).
VARIANTS = ("plain", "n2nskip")

DEFAULT_METHODS = ("random", "expander", "snip", "grasp", "synflow", "magnitude")


@dataclass(frozen=True)
class CompareConfig:
    """Everything a sweep depends on (saved as ``config.json`` beside the results).

    Attributes
    ----------
    model : str
        Registered model name or ``package.module:factory``.
    methods : tuple of str
        Pruning methods (``n2ngraph.pruning.METHODS``).
    densities : tuple of float
        Total kept fraction of the dense sequential weights, in (0, 1].
    seeds : int
        Seeds 0 .. seeds-1; a seed fixes the model's initialisation, the calibration batch, the
        pruning and the skips.
    variants : tuple of str
        Subset of :data:`VARIANTS`.
    n2nskip_fraction : float
        Share of the budget given to N2NSkip connections in the ``n2nskip`` variant.
    times : tuple of float or None
        Absolute diffusion times for ``F``; ``None`` resolves ``t_lambda2 / lambda_2(reference)``.
    t_lambda2 : tuple of float
        Times in units of ``1 / lambda_2`` of the reference, used when ``times`` is None.
    weighted : bool
        Weighted adjacency (``|w|`` sums) instead of binary.
    dataset : str
        Dataset spec (``n2ngraph.data``) for the calibration batch of snip and grasp.
    batch_size : int
        Calibration batch size.
    scope : str
        Pruning scope, ``layerwise`` or ``global``.
    saturation_rtol : float
        Saturation time is the smallest ``t`` with ``||S(t) - S(inf)|| <= saturation_rtol * ||A||``.
    """

    model: str = "paper_mlp"
    methods: tuple[str, ...] = DEFAULT_METHODS
    densities: tuple[float, ...] = (0.1, 0.05, 0.02)
    seeds: int = 3
    variants: tuple[str, ...] = VARIANTS
    n2nskip_fraction: float = 0.5
    times: tuple[float, ...] | None = None
    t_lambda2: tuple[float, ...] = (1.0, 3.0)
    weighted: bool = False
    dataset: str = "mnist5k"
    batch_size: int = 128
    scope: str = "layerwise"
    saturation_rtol: float = 1e-3

    def __post_init__(self) -> None:
        from n2ngraph.pruning import METHODS, SCOPES

        for name in ("methods", "densities", "variants", "t_lambda2"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.times is not None:
            object.__setattr__(self, "times", tuple(float(t) for t in self.times))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown pruning method(s) {unknown}; valid methods are {sorted(METHODS)}")
        bad = [d for d in self.densities if not (isinstance(d, (int, float)) and 0 < d <= 1)]
        if bad or not self.densities:
            raise ValueError(f"densities must lie in (0, 1], got {list(self.densities)}")
        wrong = [v for v in self.variants if v not in VARIANTS]
        if wrong or not self.variants:
            raise ValueError(f"unknown variant(s) {wrong}; valid variants are {list(VARIANTS)}")
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}; valid scopes are {list(SCOPES)}")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds!r}")
        if not 0 < self.n2nskip_fraction < 1:
            raise ValueError(f"n2nskip_fraction must lie in (0, 1), got {self.n2nskip_fraction}")
        ts = self.times if self.times is not None else self.t_lambda2
        if not ts or any(not (t > 0) or math.isnan(t) for t in ts):
            raise ValueError(f"diffusion times must be positive numbers, got {list(ts)}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def label(self) -> str:
        """A short folder name for the config: model plus a hash of the whole config."""
        digest = hashlib.sha1(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:8]
        return f"compare-{self.model.replace(':', '-').replace('/', '-')}-{digest}"


@dataclass(frozen=True)
class Cell:
    """One independent unit of a sweep."""

    method: str
    density: float
    seed: int
    variant: str

    @property
    def cell_id(self) -> str:
        return f"{self.method}-d{self.density:g}-s{self.seed}-{self.variant}"


def cells_of(config: CompareConfig) -> list[Cell]:
    """All cells of a sweep, in a fixed order (method, density, seed, variant)."""
    return [Cell(m, float(d), s, v) for m in config.methods for d in config.densities
            for s in range(config.seeds) for v in config.variants]


# ------------------------------------------------------------------------------ building
def calibration_batch(model, dataset: str, batch_size: int, seed: int):
    """A ``(inputs, targets)`` batch from ``dataset`` shaped for ``model``.

    Images are drawn without replacement with a seeded generator. When the model expects
    ``3 x 32 x 32`` images (CIFAR-shaped, e.g. the paper MLP's 3072 inputs) and the dataset has
    ``1 x 28 x 28`` digits (MNIST), each digit is zero-padded to 32 x 32 and repeated over three
    channels; any other mismatch raises ``ValueError``.
    """
    import torch

    from n2ngraph.data import load_dataset
    from n2ngraph.models import example_input

    data = load_dataset(dataset, train=True, augment=False)
    images, labels = data.tensors
    gen = torch.Generator().manual_seed(int(seed))
    index = torch.randperm(len(labels), generator=gen)[:batch_size]
    x, y = images[index], labels[index]
    want = tuple(example_input(model).shape[1:])
    have = tuple(x.shape[1:])
    if want == have or (len(want) == 1 and math.prod(have) == want[0]):
        return x, y
    if have == (1, 28, 28) and (want == (3, 32, 32) or want == (3072,)):
        x = torch.nn.functional.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1)
        return x, y
    raise ValueError(f"dataset {dataset!r} gives images of shape {have}, but the model expects "
                     f"inputs of shape {want}; choose a matching --dataset")


def _model(config: CompareConfig, seed: int):
    from n2ngraph.models import resolve_model

    return resolve_model(config.model, seed=seed)


def reference_graph(config: CompareConfig, seed: int = 0):
    """The dense reference graph of the sweep's model (seeded init; weights matter only when
    ``config.weighted``)."""
    from n2ngraph.trace import to_graph

    return to_graph(_model(config, seed), name=config.model)


def stated_times(reference, times, t_lambda2, *, weighted: bool = False) -> tuple[tuple[float, ...], float]:
    """Absolute diffusion times and ``lambda_2`` of the ``reference`` graph.

    ``times`` (absolute) wins when given; otherwise ``t = c / lambda_2(reference)`` for each
    ``c`` in ``t_lambda2``, rounded to 6 significant digits so the column names stay short.
    """
    from n2ngraph.diffusion import algebraic_connectivity

    lam2 = float(algebraic_connectivity(reference, weighted=weighted))
    if times is not None:
        return tuple(float(t) for t in times), lam2
    if lam2 <= 0:
        raise ValueError("the dense reference graph is disconnected (lambda_2 = 0); give absolute times")
    return tuple(float(f"{c / lam2:.6g}") for c in t_lambda2), lam2


def resolve_times(config: CompareConfig) -> tuple[float, ...]:
    """Absolute diffusion times: ``config.times``, or ``t_lambda2 / lambda_2(reference)``."""
    if config.times is not None:
        return tuple(config.times)
    return stated_times(reference_graph(config), None, config.t_lambda2, weighted=config.weighted)[0]


_REFERENCE_CACHE: dict = {}


def _reference_signature(config: CompareConfig, seed: int, times: tuple[float, ...]):
    """``S_ref`` at ``times`` (and inf), cached per worker process."""
    from n2ngraph.diffusion import heat_signature

    key = (json.dumps(config.to_json(), sort_keys=True), seed if config.weighted else 0, times)
    if key not in _REFERENCE_CACHE:
        ref = reference_graph(config, seed if config.weighted else 0)
        grid = np.array(list(times) + [np.inf])
        _REFERENCE_CACHE.clear()
        _REFERENCE_CACHE[key] = (ref, heat_signature(ref, grid, weighted=config.weighted))
    return _REFERENCE_CACHE[key]


def _graph_of(config: CompareConfig, cell: Cell):
    """The cell's graph: plain pruning at the density, or the N2NSkip recipe at the same budget."""
    from n2ngraph.n2nskip import variant

    model = _model(config, cell.seed)
    data = None
    from n2ngraph.pruning import METHODS

    if METHODS[cell.method].needs_data:
        data = calibration_batch(model, config.dataset, config.batch_size, cell.seed)
    fraction = config.n2nskip_fraction if cell.variant == "n2nskip" else 0.0
    graph = variant(model, cell.method, cell.density, n2nskip_fraction=fraction, data=data,
                    seed=cell.seed, scope=config.scope)
    return graph.replace(provenance={**graph.provenance, "model": config.model,
                                     "variant": cell.variant})


def run_cell(config: CompareConfig | dict, cell: Cell | dict, times: Sequence[float],
             out_dir: str | os.PathLike | None = None) -> dict:
    """Compute one cell's row; when ``out_dir`` is given, also write ``cells/<id>.json``
    atomically (an existing file is returned as is, never recomputed)."""
    import torch

    from n2ngraph import metrics
    from n2ngraph.diffusion import algebraic_connectivity, heat_signature, saturation_time

    config = config if isinstance(config, CompareConfig) else CompareConfig(**config)
    cell = cell if isinstance(cell, Cell) else Cell(**cell)
    times = tuple(float(t) for t in times)
    path = None
    if out_dir is not None:
        path = Path(out_dir) / "cells" / f"{cell.cell_id}.json"
        if path.exists():
            return json.loads(path.read_text())
    torch.set_num_threads(1)
    start = time.perf_counter()
    ref, s_ref = _reference_signature(config, cell.seed, times)
    graph = _graph_of(config, cell)
    grid = np.array(list(times) + [np.inf])
    s = heat_signature(graph, grid, weighted=config.weighted)
    distance = np.linalg.norm(s_ref - s, axis=1)
    sources = np.zeros(graph.num_nodes)
    sources[graph.input_nodes] = 1.0
    eps = config.saturation_rtol * float(np.linalg.norm(sources))
    row = {
        "model": config.model, "method": cell.method, "variant": cell.variant,
        "density": cell.density, "seed": cell.seed,
        "params": graph.num_params, "dense_params": graph.dense_params,
        "actual_density": graph.density,
        "skip_params": sum(b.num_params for b in graph.blocks_of_kind("n2nskip")),
    }
    for t, f in zip(times, distance[:-1]):
        row[f"F(t={t:g})"] = float(f)
    row["F(t=inf)"] = float(distance[-1])
    row["saturation_time"] = float(saturation_time(graph, eps, weighted=config.weighted))
    row["lambda_2"] = float(algebraic_connectivity(graph, weighted=config.weighted))
    structure = metrics.summary(graph)
    for key in ("params", "dense_params", "density"):  # already in the row, under clearer names
        structure.pop(key)
    row.update(structure)
    row["seconds"] = round(time.perf_counter() - start, 3)
    row["cell_id"] = cell.cell_id
    if path is not None:
        from n2ngraph.io import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(row, sort_keys=False)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return row


def load_cells(out_dir: str | os.PathLike):
    """All finished cells of a sweep folder as a DataFrame (one row per cell, sorted)."""
    import pandas as pd

    rows = []
    for path in sorted((Path(out_dir) / "cells").glob("*.json")):
        rows.append(json.loads(path.read_text()))
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values(["method", "variant", "density", "seed"], ascending=[True, False, False, True])
        table = table.reset_index(drop=True)
    return table


def summarize(table):
    """Mean and standard deviation over seeds per method x variant x density."""
    keys = ["method", "variant", "density"]
    numeric = [c for c in table.columns if c not in keys + ["model", "seed", "cell_id"]
               and np.issubdtype(table[c].dtype, np.number)]
    grouped = table.groupby(keys, sort=False)[numeric]
    mean, std = grouped.mean(), grouped.std(ddof=1)
    out = mean.copy()
    for c in numeric:
        out[f"{c}_std"] = std[c]
    out.insert(0, "seeds", grouped.size())
    return out.reset_index()


# --------------------------------------------------------------------------------- sweep
def _connect(scheduler: str | None, workers: int):
    """A Dask client: to ``scheduler`` or to a new LocalCluster of ``workers`` processes."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise ValueError(f"cannot reach Dask scheduler {scheduler!r}: {exc}") from exc
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster), cluster


def run_sweep(config: CompareConfig, out_dir: str | os.PathLike, *, scheduler: str | None = None,
              workers: int = 2, progress: bool = True, inline: bool = False,
              times: Sequence[float] | None = None):
    """Run every unfinished cell of ``config`` and return ``(table, summary)`` DataFrames.

    ``out_dir`` receives ``config.json``, ``cells/*.json``, ``results.csv|md`` and
    ``summary.csv|md``. ``inline=True`` runs cells in this process (no Dask), for debugging.
    """
    from tqdm.auto import tqdm

    from n2ngraph.io import atomic_write
    from n2ngraph.tables import write_table

    out = Path(out_dir)
    times = resolve_times(config) if times is None else tuple(float(t) for t in times)
    todo = [c for c in cells_of(config) if not (out / "cells" / f"{c.cell_id}.json").exists()]
    client = cluster = None
    if todo and not inline:
        client, cluster = _connect(scheduler, workers)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    meta = {"config": config.to_json(), "times": list(times)}
    atomic_write(out / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    bar = tqdm(total=len(cells_of(config)), initial=len(cells_of(config)) - len(todo),
               desc="cells", disable=not progress, unit="cell")
    try:
        if inline:
            for cell in todo:
                run_cell(config, cell, times, out)
                bar.update()
        elif todo:
            from distributed import as_completed

            cfg = config.to_json()
            futures = [client.submit(run_cell, cfg, dataclasses.asdict(c), times, str(out),
                                     key=f"n2ngraph-{config.label}-{c.cell_id}", pure=False)
                       for c in todo]
            for future in as_completed(futures):
                future.result()
                bar.update()
    finally:
        bar.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    table = load_cells(out)
    summary = summarize(table)
    write_table(table, out / "results")
    write_table(summary, out / "summary")
    return table, summary

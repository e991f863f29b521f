"""Compare pruning methods end to end: one sweep of independent, idempotent cells.

A *cell* is one (model, recipe, method, density, seed, variant) combination. Running it builds
the seeded model, prunes it under the sweep's recipe (``n2ngraph.recipes``; a calibration batch
from the dataset for data-driven methods), traces it, adds N2NSkip connections for the
``n2nskip`` variant at the same total budget (``n2ngraph.pipeline.variant``), and measures:

- heat diffusion against the dense reference: ``F(t) = ||S_ref(t) - S(t)||_2`` at the stated
  times and at ``t = inf``; ``lambda_2`` and ``lambda_2/ref`` (the variant's algebraic
  connectivity over the reference's); the signed escaped-heat difference
  ``escaped-ref(t) = heat_escaped(g, t) - heat_escaped(reference, t)`` (the fraction of the
  initial heat that has left the input nodes by ``t``: ``> 0`` spreads faster than the
  reference, ``< 0`` slower), which tells apart the two ways of being far from the reference
  that ``F`` alone cannot; the saturation time (``n2ngraph.diffusion``);
- structure: connected components, isolated and dead units, effective density, collapsed
  layers (``n2ngraph.metrics``).

Times
-----
Unless absolute ``times`` are given, times are stated in units of the reference's relaxation
time: ``t = c / lambda_2(reference)`` for each ``c`` in ``t_lambda2`` (default 1, 3 and 100;
``docs/diffusion.md`` found that RP and N2NSkip-RP separate best around ``t * lambda_2 ~ 1.3-3.4``,
and at 100 the reference has saturated, so ``F`` there measures what the variant still lacks).
Columns are named by the stated unit (``F(t=3/l2)``); the absolute times and ``lambda_2`` of the
reference are in every config file, in the Markdown tables' header and in ``table.attrs``. With
absolute ``times`` the columns say ``F(t=0.5)``.

``F`` comes from ``connectivity_distance`` with the reference's signature computed once, and the
signed measure from ``heat_escaped(..., reference=...)``: both work on the exact saturated part
and the decaying part of each signature, so values far below ``||S||`` (``F`` at
``t lambda_2 >= 100``) keep their accuracy; ``docs/diffusion.md`` states the absolute floor.

A cell is its whole config
--------------------------
A cell's identity is a digest (SHA-256, first 20 hex digits) of its *cell config*, everything
that changes its numbers: the model name and factory arguments, the recipe's name and fields
(wiring, skip kernel and order, granularity, dense layers, scope, skip fraction), method, exact
density (JSON writes the float's ``repr``, so 0.1 and 0.10000001 differ), seed, variant,
``weighted``, the absolute times and their labels, the reference's seed, the calibration batch
(dataset, batch size and a SHA-256 of its contents, data-driven methods only), the saturation
tolerance and :data:`CELL_FORMAT`; the traced input shape when one is set; in a training sweep
also the data, the training settings (less device and progress), ``init`` and the identity of
the trained dense reference. Two configs never share a cell unless every one of these agrees,
and then the cell's numbers are the same.

Output folder
-------------
::

    OUT/
      cells/<cell digest>.json      {"format", "id", "config": cell config, "row": results row}
      configs/<config digest>/      one folder per config ever run into OUT (digest of the
                                    config's fields and its cell ids):
          config.json               the config, its recipe, times, lambda_2 of the reference,
                                    the ids of its cells
          results.csv|md            one row per cell of this config only
          summary.csv|md            mean and std over seeds
                                    (the CSV files hold every column; the Markdown files a
                                    readable view of at most MAX_COLUMNS columns, ``mean ±
                                    std`` cells, under a header defining F and stating
                                    lambda_2 of the reference: :func:`sweep_markdown`)
      config.json, results.*, summary.*   the latest run (same files as its
                                    configs/<digest>/; ``config.json`` is removed before the
                                    tables are rewritten and written last, so it never
                                    describes tables it did not produce)
      compare.png|pdf, delta_F.png|pdf   figures of the latest run (``n2ngraph compare``:
                                    ``n2ngraph.plotting.plot_compare`` and ``plot_delta_f``)

With ``train_epochs > 0`` (``n2ngraph compare --train-epochs N``), also::

      references/<cell id>.pt       trained weights of each seed's dense reference (state_dict,
                                    read back with ``torch.load(weights_only=True)``)
      checkpoints/<cell id>/        a cell being trained (``n2ngraph.training.train``'s folder:
                                    config.json, log.csv, checkpoint.pt), removed when it is done
      dense.csv|md, configs/<digest>/dense.*   the dense references' accuracy, one row per seed
      configs/<digest>/runs/<run>/  log.csv and run.json of every trained cell and reference
                                    (``<method>_<variant>_d<density>_<init>_s<seed>``,
                                    ``dense_s<seed>``; the layout ``analysis/figure5_table1_training``
                                    reads)
      accuracy_vs_F.png|pdf, accuracy_vs_trained_F.png|pdf   final test accuracy against ``F``
                                    and ``trained F`` at the middle stated time

With ``save_graphs`` (``--save-graphs``): ``graphs/<method>-<variant>-d<density>-s<seed>-<id>.npz``.

Training
--------
With ``train_epochs = N > 0`` a cell also maps its graph to a masked model
(:func:`n2ngraph.bridge.to_model`, ``init`` dense or sparse), trains it on ``dataset`` for ``N``
epochs with the paper's optimizer and schedule (:class:`~n2ngraph.training.TrainConfig`'s
defaults: SGD, momentum 0.9, lr 0.05 halved every 30 epochs, weight decay 5e-4, batch 128; the
seed of the cell) and records :data:`ACCURACY_COLUMNS` (``final_test_acc`` after the last
epoch, ``best_test_acc`` over epochs; fractions). It then re-traces the trained model and
measures it against the trained dense reference of its seed (:mod:`n2ngraph.trained`, the
paper's Table 3 measurement on the weighted adjacency): ``trained F(t=c/l2)`` for each ``c`` of
``t_lambda2``, ``trained F(t=inf)``, ``trained lambda_2``, ``trained lambda_2/ref``. The dense
reference of each seed is a cell of its own (:func:`reference_spec`), trained once before the
variants and shared by all of them; its identity is part of theirs. The factory gets
``num_classes``, ``in_features`` and ``in_channels`` from the data when it takes them, and a
conv net is traced on the data's sample shape (:func:`model_setup`).

Checkpoints: a worker trains a cell in ``OUT/checkpoints/<cell id>/`` (``OUT`` resolved on the
client) and, when a killed sweep is run again, resumes it from its last finished epoch (exactly:
``n2ngraph.training`` restores the optimizer, schedule and RNG states). On one machine, a
LocalCluster, that needs nothing. On a multi-machine cluster, put ``OUT`` on a folder every
worker sees at the same path (a shared file system) for half-trained cells to resume; a worker
that cannot create the folder trains in a temporary one with a warning, and a killed cell then
restarts from its first epoch. Results never depend on it: rows and the reference weights are
shipped back to the client, which writes every other file.

A rerun computes the cells its config lacks and builds its tables from its own cells only. A
cell file that cannot be read, is truncated, or lacks anything its config needs (``{}``, another
format, a row without some column) is recomputed, with a warning naming the file.

Running cells
-------------
:func:`run_cells` is the package's one sweep engine (``analysis/mnist_reproduction.py`` runs its
training cells on it too). Cells run on a Dask distributed cluster: a ``LocalCluster`` on this machine by default, or any
scheduler address. Everything a cell needs travels with the task (its config, the reference
graph with its signature, the calibration batch, a trained reference), and each worker returns
the cell's row and any file it made (trained weights, graphs); the client writes every result
file, atomically, as results arrive. Paths are resolved on the client; workers write only the
checkpoints of cells they are training (see "Training"), so workers need no shared file system
and can be started in any directory. A sweep killed at any point resumes without recomputing or
losing a finished cell. Torch and BLAS thread counts are set once per worker by a worker plugin (``threads``);
``inline=True`` runs cells in the calling process and changes none of its settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import numbers
import os
import pickle
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from n2ngraph.budget import check_density
from n2ngraph.pipeline import VARIANTS as PIPELINE_VARIANTS

__all__ = [
    "ACCURACY_COLUMNS",
    "CELL_FORMAT",
    "MAX_TIME",
    "CompareConfig",
    "Cell",
    "VARIANTS",
    "cells_of",
    "cell_config",
    "cell_digest",
    "caption",
    "MAX_COLUMNS",
    "readable_table",
    "sweep_markdown",
    "run_cell",
    "run_cells",
    "run_sweep",
    "load_cells",
    "summarize",
    "reference_graph",
    "resolve_times",
    "stated_times",
    "time_labels",
    "model_setup",
    "train_settings",
    "reference_spec",
    "run_reference_cell",
    "load_trained_reference",
    "run_options",
    "graph_file",
    "reference_file",
    "run_name",
]

#: Graph variants of a pruned network: plain pruning, or the recipe's N2NSkip variant (part of
#: the budget pruned by the method, the rest as random N2NSkip connections); the vocabulary of
#: :data:`n2ngraph.pipeline.VARIANTS`, which also names the graphs' provenance.
VARIANTS = PIPELINE_VARIANTS

DEFAULT_METHODS = ("random", "expander", "snip", "grasp", "synflow", "magnitude")

#: Version of the cell file layout and of what a row holds; part of every cell's identity, so a
#: new version recomputes old cells instead of mixing them in.
CELL_FORMAT = 2

#: Largest accepted diffusion time (absolute, or in units of 1/lambda_2). Beyond it every graph
#: this package traces has saturated to double precision (lambda_2 of a connected graph of n
#: unit-weight nodes is at least 4 / n^2), so ``F(t=inf)``, always reported, says the same; and
#: ``t * ||L||`` stays far from overflow.
MAX_TIME = 1e12


#: Fields added with training, left out of :meth:`CompareConfig.to_json` at these defaults.
_NEW_FIELDS = {"train_epochs": 0, "init": "dense", "input_shape": None}

#: TrainConfig fields that do not change a cell's numbers, left out of its identity.
_TRAIN_FREE = ("progress", "device", "eval_batch_size", "num_workers", "preload", "compile")

#: Initialisations of trained sparse models (:data:`n2ngraph.bridge.INITS`; not imported from
#: there, so that importing this module stays free of torch).
INITS = ("dense", "sparse")


def _check_times(values, what: str) -> tuple[float, ...]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError(f"{what} must be numbers, got {v!r}")
        v = float(v)
        if not (math.isfinite(v) and 0 < v <= MAX_TIME):
            raise ValueError(f"{what} must be finite numbers in (0, {MAX_TIME:g}] (F(t=inf) is always "
                             f"reported), got {v!r}")
        out.append(v)
    if not out:
        raise ValueError(f"{what} must hold at least one number")
    if len(set(out)) != len(out):
        raise ValueError(f"{what} holds a repeated value: {out}")
    return tuple(out)


@dataclass(frozen=True)
class CompareConfig:
    """Everything a sweep depends on (saved in ``configs/<digest>/config.json``).

    Attributes
    ----------
    model : str
        Registered model name or ``package.module:factory``.
    model_kwargs : dict
        Keyword arguments of the model factory (JSON values), e.g. ``{"num_classes": 100}``.
    recipe : str
        Name in ``n2ngraph.recipes.RECIPES`` (default ``"paper"``): how plain and N2NSkip graphs
        are built. ``n2nskip_fraction`` and ``scope`` derive a renamed recipe from it.
    methods : tuple of str
        Pruning methods (``n2ngraph.pruning.METHODS``).
    densities : tuple of float
        Total kept fraction of the dense sequential weights, in (0, 1].
    seeds : int
        Seeds 0 .. seeds-1; a seed fixes the model's initialisation, the calibration batch, the
        pruning and the skips.
    variants : tuple of str
        Subset of :data:`VARIANTS`.
    n2nskip_fraction : float or None
        Share of the budget given to N2NSkip connections; None keeps the recipe's. Another
        value uses the recipe renamed ``"<name>-f<fraction>"``.
    times : tuple of float or None
        Absolute diffusion times; ``None`` states times as ``t_lambda2 / lambda_2(reference)``.
    t_lambda2 : tuple of float
        Times in units of ``1 / lambda_2`` of the reference, used when ``times`` is None.
    weighted : bool
        Weighted adjacency (``|w|`` sums over kept taps; N2NSkip blocks carry the pair weights
        of their initial draw) instead of binary. The reference is then the dense model of each
        cell's seed.
    dataset : str
        Dataset spec (``n2ngraph.data``) for the calibration batch of data-driven methods, and
        the training and test data of ``train_epochs > 0``.
    batch_size : int
        Calibration batch size.
    scope : str or None
        Scope of score-based pruners; None keeps the recipe's, another value uses the recipe
        renamed ``"<name>-<scope>"``.
    saturation_rtol : float
        Saturation time is the smallest ``t`` with ``||S(t) - S(inf)|| <= saturation_rtol * ||A||``.
    train_epochs : int >= 0
        0 (default): connectivity only. ``N > 0``: every cell also trains its variant for ``N``
        epochs on ``dataset`` (:func:`n2ngraph.training.train`, the paper's optimizer and
        schedule: :class:`~n2ngraph.training.TrainConfig`'s defaults), and the dense reference
        of each seed is trained once; rows gain accuracy and ``trained`` connectivity columns
        (module docstring, "Training"). The model factory then also gets ``num_classes`` and
        ``in_features`` / ``in_channels`` from the data where it takes them and ``model_kwargs``
        does not give them (as ``n2ngraph train`` does).
    init : {"dense", "sparse"}
        Initialisation of the trained sparse models (:func:`n2ngraph.bridge.to_model`).
    input_shape : tuple of int or None
        Per-sample input shape ``(C, H, W)`` (or ``(features,)``) the model is traced with. None:
        :func:`n2ngraph.models.example_input`'s guess (32 x 32 images for a conv net), or, when
        training a conv net, the data's sample shape.
    """

    model: str = "paper_mlp"
    model_kwargs: dict = field(default_factory=dict)
    recipe: str = "paper"
    methods: tuple[str, ...] = DEFAULT_METHODS
    densities: tuple[float, ...] = (0.1, 0.05, 0.02)
    seeds: int = 3
    variants: tuple[str, ...] = VARIANTS
    n2nskip_fraction: float | None = None
    times: tuple[float, ...] | None = None
    t_lambda2: tuple[float, ...] = (1.0, 3.0, 100.0)
    weighted: bool = False
    dataset: str = "mnist5k"
    batch_size: int = 128
    scope: str | None = None
    saturation_rtol: float = 1e-3
    train_epochs: int = 0
    init: str = "dense"
    input_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        from n2ngraph.data import parse_spec
        from n2ngraph.models import parse_input_shape
        from n2ngraph.pruning import METHODS

        for name in ("methods", "densities", "variants", "t_lambda2"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ValueError(f"{name} must be a sequence, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty string, got {self.model!r}")
        if not isinstance(self.model_kwargs, dict) or not all(isinstance(k, str) for k in self.model_kwargs):
            raise ValueError(f"model_kwargs must be a dict with string keys, got {self.model_kwargs!r}")
        try:
            json.dumps(self.model_kwargs, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model_kwargs must hold JSON values: {exc}") from None
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown pruning method(s) {unknown}; valid methods are {sorted(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods holds a repeated name: {list(self.methods)}")
        if not self.densities:
            raise ValueError("densities must hold at least one density in (0, 1]")
        object.__setattr__(self, "densities", tuple(check_density(d, name="each of densities")
                                                    for d in self.densities))
        if len(set(self.densities)) != len(self.densities):
            raise ValueError(f"densities holds a repeated value: {list(self.densities)}")
        wrong = [v for v in self.variants if v not in VARIANTS]
        if wrong or not self.variants or len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants must be distinct names from {list(VARIANTS)}, got {list(self.variants)}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, numbers.Integral) or self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds!r}")
        object.__setattr__(self, "seeds", int(self.seeds))
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, numbers.Integral) \
                or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        object.__setattr__(self, "batch_size", int(self.batch_size))
        if self.times is not None:
            object.__setattr__(self, "times", _check_times(tuple(self.times), "diffusion times"))
        object.__setattr__(self, "t_lambda2", _check_times(self.t_lambda2, "t_lambda2 (times in units of 1/lambda_2)"))
        if not isinstance(self.weighted, bool):
            raise ValueError(f"weighted must be True or False, got {self.weighted!r}")
        r = self.saturation_rtol
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0 < r < 1:
            raise ValueError(f"saturation_rtol must lie in (0, 1), got {r!r}")
        parse_spec(self.dataset)
        self.resolved_recipe  # noqa: B018 - validates recipe, n2nskip_fraction and scope
        e = self.train_epochs
        if isinstance(e, bool) or not isinstance(e, numbers.Integral) or e < 0:
            raise ValueError(f"train_epochs must be an integer >= 0 (0: no training), got {e!r}")
        object.__setattr__(self, "train_epochs", int(e))
        if self.init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {self.init!r}")
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", parse_input_shape(self.input_shape))

    @property
    def resolved_recipe(self):
        """The :class:`~n2ngraph.recipes.Recipe` the cells use: ``recipe`` with this config's
        ``n2nskip_fraction`` and ``scope`` when they differ from its own, renamed
        (:func:`n2ngraph.recipes.resolve_recipe`)."""
        from n2ngraph.recipes import resolve_recipe

        return resolve_recipe(self.recipe, n2nskip_fraction=self.n2nskip_fraction, scope=self.scope)

    def to_json(self) -> dict:
        """The fields as JSON values; ``train_epochs``, ``init`` and ``input_shape`` only where
        they differ from their defaults (so configs of earlier versions keep their digests and
        folder names)."""
        out = dataclasses.asdict(self)
        for name in _NEW_FIELDS:
            if out[name] == _NEW_FIELDS[name]:
                del out[name]
        if out.get("input_shape") is not None:
            out["input_shape"] = list(out["input_shape"])
        return out

    @property
    def training(self) -> bool:
        """Whether the cells train their variants (``train_epochs > 0``)."""
        return self.train_epochs > 0

    @property
    def label(self) -> str:
        """A short folder name for the config: model plus a hash of the whole config."""
        digest = hashlib.sha1(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:8]
        return f"compare-{self.model.replace(':', '-').replace('/', '-')}-{digest}"


@dataclass(frozen=True)
class Cell:
    """One independent unit of a sweep (its identity is :func:`cell_digest` of :func:`cell_config`)."""

    method: str
    density: float
    seed: int
    variant: str

    @property
    def label(self) -> str:
        """A readable name (not unique across configs)."""
        return f"{self.method}-d{self.density!r}-s{self.seed}-{self.variant}"


def cells_of(config: CompareConfig) -> list[Cell]:
    """All cells of a sweep, in a fixed order (method, density, seed, variant)."""
    return [Cell(m, float(d), s, v) for m in config.methods for d in config.densities
            for s in range(config.seeds) for v in config.variants]


def time_labels(times: Sequence[float], t_lambda2: Sequence[float] | None = None) -> tuple[str, ...]:
    """Column labels of the stated times: ``"3/l2"`` for times in units of ``1/lambda_2``
    (``t_lambda2`` given), else the absolute time (``"0.5"``), written so that distinct times get
    distinct labels."""
    def short(v: float) -> str:
        text = f"{v:g}"
        return text if float(text) == v else repr(float(v))

    if t_lambda2 is not None:
        return tuple(f"{short(c)}/l2" for c in t_lambda2)
    return tuple(short(float(t)) for t in times)


def cell_config(config: CompareConfig, cell: Cell, times: Sequence[float], labels: Sequence[str],
                calibration: dict | None = None) -> dict:
    """The cell config: everything that changes the cell's numbers (see the module docstring).

    ``calibration`` is ``{"dataset", "batch_size", "sha256"}`` of the cell seed's calibration
    batch, for data-driven methods (ignored for the others).
    """
    from n2ngraph.pruning import METHODS

    needs_data = METHODS[cell.method].needs_data
    kwargs, shape = model_setup(config)
    spec = {
        "format": CELL_FORMAT,
        "model": config.model,
        "model_kwargs": kwargs,
        "recipe": config.resolved_recipe.to_json(),
        "method": cell.method,
        "density": float(cell.density),
        "seed": int(cell.seed),
        "variant": cell.variant,
        "weighted": bool(config.weighted),
        "times": [float(t) for t in times],
        "time_labels": list(labels),
        "reference_seed": int(cell.seed) if config.weighted else 0,
        "calibration": dict(calibration) if needs_data else None,
        "saturation_rtol": float(config.saturation_rtol),
    }
    if shape is not None:
        spec["input_shape"] = list(shape)
    if config.training:
        spec.update(data=config.dataset, train=train_settings(config), init=config.init,
                    trained_reference=cell_digest(reference_spec(config, cell.seed)),
                    trained_t_lambda2=[float(c) for c in config.t_lambda2])
    return spec


def train_settings(config: CompareConfig) -> dict:
    """The training hyperparameters of a cell's identity: :class:`~n2ngraph.training.TrainConfig`
    with ``epochs = config.train_epochs`` (the paper's optimizer and schedule otherwise), less
    the settings that do not change the numbers (device, progress, ...)."""
    from n2ngraph.training import TrainConfig

    settings = dataclasses.asdict(TrainConfig(epochs=config.train_epochs))
    return {k: v for k, v in settings.items() if k not in _TRAIN_FREE}


def reference_spec(config: CompareConfig, seed: int) -> dict:
    """The cell config of the trained dense reference of ``seed`` (``train_epochs > 0``): model,
    factory keywords, input shape, data, training settings, seed and the times of the trained
    connectivity columns (``t_lambda2``, in units of ``1/lambda_2`` of the trained reference)."""
    kwargs, shape = model_setup(config)
    return {"format": CELL_FORMAT, "cell": "trained-reference", "model": config.model,
            "model_kwargs": kwargs, "input_shape": None if shape is None else list(shape),
            "data": config.dataset, "train": train_settings(config), "seed": int(seed),
            "t_lambda2": [float(c) for c in config.t_lambda2]}


def cell_digest(spec: dict) -> str:
    """The cell's id: SHA-256 (first 20 hex digits) of its cell config as canonical JSON
    (sorted keys, no spaces), so the order of the keys does not matter.

    Examples
    --------
    >>> cell_digest({"format": 2, "seed": 0})
    '840171328cba0a0b2a02'
    >>> cell_digest({"seed": 0, "format": 2}) == cell_digest({"format": 2, "seed": 0})
    True
    """
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------ building
def _model(model: str, model_kwargs: dict, seed: int):
    from n2ngraph.models import resolve_model

    return resolve_model(model, seed=seed, **model_kwargs)


@functools.lru_cache(maxsize=4)
def _splits(dataset: str):
    """Training and test split of ``dataset``, loaded once per process."""
    from n2ngraph.data import load_dataset

    return load_dataset(dataset, train=True), load_dataset(dataset, train=False)


_SETUPS: dict[str, tuple[dict, tuple[int, ...] | None]] = {}


def model_setup(config: CompareConfig) -> tuple[dict, tuple[int, ...] | None]:
    """The model factory's keywords and the traced input shape of a sweep's cells.

    Keywords: ``config.model_kwargs``; when training, plus ``num_classes``, ``in_features`` and
    ``in_channels`` of ``config.dataset`` (:func:`n2ngraph.models.data_defaults`) where the
    factory takes them and ``model_kwargs`` does not give them. Input shape: ``config.input_shape``; else, when
    training a model whose first weight layer is a Conv2d, the data's sample shape; else None
    (:func:`n2ngraph.models.example_input` decides).
    """
    key = json.dumps([config.model, config.model_kwargs, config.dataset, config.training,
                      config.input_shape], sort_keys=True)
    if key in _SETUPS:
        return _SETUPS[key]
    kwargs, shape = dict(config.model_kwargs), config.input_shape
    if config.training:
        import inspect

        from n2ngraph.models import data_defaults, model_factory

        train_set, _ = _splits(config.dataset)
        try:
            params = inspect.signature(model_factory(config.model)).parameters
        except (TypeError, ValueError):
            params = {}
        defaults = data_defaults(train_set.sample_shape, train_set.num_classes)
        kwargs = {**{k: v for k, v in defaults.items() if k in params}, **kwargs}
        if shape is None:
            from torch import nn

            first = next((m for m in _model(config.model, kwargs, 0).modules()
                          if isinstance(m, (nn.Linear, nn.Conv2d))), None)
            if isinstance(first, nn.Conv2d):
                shape = tuple(train_set.sample_shape)
    _SETUPS[key] = (kwargs, shape)
    return kwargs, shape


def _example(shape) -> object:
    """One zero input of per-sample ``shape``, or None (the tracer's guess)."""
    if shape is None:
        return None
    import torch

    return torch.zeros((1, *shape))


def reference_graph(config: CompareConfig, seed: int = 0):
    """The dense reference graph of the sweep's model (seeded init; weights matter only when
    ``config.weighted``), traced on :func:`model_setup`'s input shape."""
    from n2ngraph.trace import to_graph

    kwargs, shape = model_setup(config)
    return to_graph(_model(config.model, kwargs, seed), example_input=_example(shape), name=config.model)


def stated_times(reference, times, t_lambda2, *, weighted: bool = False) -> tuple[tuple[float, ...], float]:
    """Absolute diffusion times and ``lambda_2`` of the ``reference`` graph.

    ``times`` (absolute) wins when given; otherwise ``t = c / lambda_2(reference)`` for each
    ``c`` in ``t_lambda2``, rounded to 6 significant digits so the values stay readable.
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


def _escaped_vs(reference: dict, g, grid, weighted: bool) -> np.ndarray:
    """``heat_escaped(g, t) - heat_escaped(reference, t)`` for each ``t`` in ``grid``, from the
    decaying parts of both signatures (accurate also where both are nearly saturated), with
    the reference's precomputed signature on the same grid."""
    from n2ngraph.diffusion import heat_escaped

    escaped = heat_escaped(g, grid, weighted=weighted, reference=reference["graph"],
                           reference_signature=reference["signature"])
    return np.atleast_1d(np.asarray(escaped, dtype=float))


def _reference_data(config: CompareConfig, seed: int, times: Sequence[float], lam2=None,
                    ref=None) -> dict:
    """What every cell compares against: the dense reference graph of ``seed``, its signature at
    ``times`` and ``inf`` and its ``lambda_2``."""
    from n2ngraph.diffusion import algebraic_connectivity, heat_signature

    if ref is None:
        ref = reference_graph(config, seed)
    grid = np.array([*times, np.inf])
    if lam2 is None:
        lam2 = float(algebraic_connectivity(ref, weighted=config.weighted))
    return {
        "graph": ref,
        "signature": heat_signature(ref, grid, weighted=config.weighted),
        "lambda_2": float(lam2),
    }


def _calibration(config: CompareConfig, seed: int):
    """The seed's calibration batch as numpy arrays and the record that identifies it."""
    from n2ngraph.pipeline import calibration_batch

    kwargs, shape = model_setup(config)
    model = _model(config.model, kwargs, 0)  # only its input shape is used
    x, y = calibration_batch(model, config.dataset, config.batch_size, seed, input_shape=shape)
    x = np.ascontiguousarray(x.detach().cpu().numpy())
    y = np.ascontiguousarray(y.detach().cpu().numpy())
    h = hashlib.sha256()
    for a in (x, y):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    record = {"dataset": config.dataset, "batch_size": config.batch_size, "sha256": h.hexdigest()}
    return (x, y), record


def _graph_of(spec: dict, data, model=None):
    """The cell's graph: plain pruning at the density, or the recipe's N2NSkip variant at the
    same budget."""
    from n2ngraph.pipeline import variant
    from n2ngraph.recipes import Recipe

    recipe = dict(spec["recipe"])
    recipe["dense_layers"] = tuple(recipe["dense_layers"])
    if model is None:
        model = _model(spec["model"], spec["model_kwargs"], spec["seed"])
    if data is not None:
        import torch

        data = (torch.from_numpy(np.array(data[0])), torch.from_numpy(np.array(data[1])))
    graph = variant(model, spec["method"], spec["density"], recipe=Recipe(**recipe),
                    skips=spec["variant"] == "n2nskip", seed=spec["seed"], data=data,
                    example_input=_example(spec.get("input_shape")))
    return graph.replace(provenance={**graph.provenance, "model": spec["model"]})


def _row_columns(labels: Sequence[str]) -> list[str]:
    """Columns every complete row has."""
    return ["cell_id", "model", "recipe", "recipe_fields", "method", "variant", "density", "seed",
            "params", "dense_params", "actual_density", "skip_params",
            *[f"F(t={lab})" for lab in labels], "F(t=inf)",
            *[f"escaped-ref(t={lab})" for lab in labels],
            "lambda_2", "lambda_2/ref", "lambda_2_ref", "saturation_time", "seconds"]


def run_cell(spec: dict, reference: dict, data=None, trained=None, options: dict | None = None):
    """Compute one cell and return its results row (nothing is written).

    Parameters
    ----------
    spec : dict
        The cell config (:func:`cell_config`).
    reference : dict or bytes
        The dense reference of ``spec["reference_seed"]``: ``graph``, ``signature``
        (``heat_signature(graph, [*spec["times"], inf])``, shape ``(T + 1, n)``) and
        ``lambda_2``, as the sweep's client computes them once; or that dict pickled, as the
        sweep ships it to Dask workers (Dask's array serialization would drop the exact
        saturated and decaying parts that the signature carries, and with them the accuracy of
        ``F`` at large ``t``).
    data : tuple of arrays, optional
        ``(inputs, targets)`` calibration batch for data-driven methods.
    trained : dict, optional
        For a training cell (``"train"`` in ``spec``): :func:`n2ngraph.trained.trained_reference`
        of the trained dense model of the cell's seed.
    options : dict, optional
        How to run, not what to compute (:func:`run_options`): where checkpoints go, the
        training device, whether to return the graph file.

    Returns
    -------
    dict, or (dict, files)
        One row: identity columns, budgets, ``F(t=<label>)``, ``F(t=inf)``,
        ``escaped-ref(t=<label>)``, ``lambda_2``, ``lambda_2/ref``, ``lambda_2_ref``,
        ``saturation_time``, the structural metrics of ``n2ngraph.metrics.summary``, ``seconds``;
        for a training cell also :data:`ACCURACY_COLUMNS`, ``init``, ``data``, the ``trained``
        columns (:func:`n2ngraph.trained.trained_columns`) and ``log`` (the per-epoch log as
        records). With ``options["save_graphs"]`` also ``files``, ``{"graphs/<name>.npz":
        bytes}`` for the client to write (:func:`run_cells`).
    """
    from n2ngraph import metrics
    from n2ngraph.diffusion import algebraic_connectivity, saturation_time

    start = time.perf_counter()
    if isinstance(reference, (bytes, bytearray)):
        reference = pickle.loads(reference)  # our own client's object (see the docstring)
    weighted = spec["weighted"]
    times, labels = spec["times"], spec["time_labels"]
    model = _model(spec["model"], spec["model_kwargs"], spec["seed"])
    graph = _graph_of(spec, data, model)
    grid = np.array([*times, np.inf])
    distance = _distance(reference, graph, grid, weighted)
    escaped = _escaped_vs(reference, graph, grid, weighted)[:-1]  # the grid ends at t = inf
    sources = np.zeros(graph.num_nodes)
    sources[graph.input_nodes] = 1.0
    eps = spec["saturation_rtol"] * float(np.linalg.norm(sources))
    lam2 = float(algebraic_connectivity(graph, weighted=weighted))
    lam2_ref = float(reference["lambda_2"])
    recipe = spec["recipe"]
    row = {
        "cell_id": cell_digest(spec), "model": spec["model"], "recipe": recipe["name"],
        "recipe_fields": json.dumps({k: v for k, v in recipe.items() if k != "name"},
                                    sort_keys=True, separators=(",", ":")),
        "method": spec["method"], "variant": spec["variant"],
        "density": spec["density"], "seed": spec["seed"],
        "params": graph.num_params, "dense_params": graph.dense_params,
        "actual_density": graph.density,
        "skip_params": sum(b.num_params for b in graph.blocks_of_kind("n2nskip")),
    }
    for lab, f in zip(labels, distance[:-1]):
        row[f"F(t={lab})"] = float(f)
    row["F(t=inf)"] = float(distance[-1])
    for lab, e in zip(labels, escaped):
        row[f"escaped-ref(t={lab})"] = float(e)
    row["lambda_2"] = lam2
    row["lambda_2/ref"] = lam2 / lam2_ref if lam2_ref > 0 else float("nan")
    row["lambda_2_ref"] = lam2_ref
    row["saturation_time"] = float(saturation_time(graph, eps, weighted=weighted))
    structure = metrics.summary(graph)
    for key in ("params", "dense_params", "density"):  # already in the row, under clearer names
        structure.pop(key)
    row.update(structure)
    if "train" in spec:
        row.update(_train_variant(spec, graph, model, trained, options or {}))
    row["seconds"] = round(time.perf_counter() - start, 3)
    if options and options.get("save_graphs"):
        return row, {graph_file(spec): _graph_bytes(graph)}
    return row


#: Accuracy columns of a training cell's row (fractions in [0, 1]; ``final``: after the last
#: epoch, no selection on the test set; ``best``: the highest test accuracy of any epoch).
ACCURACY_COLUMNS = ("final_test_acc", "best_test_acc", "final_train_acc", "final_train_loss",
                    "train_epochs", "train_seconds")


def run_options(out_dir, *, device: str = "auto", save_graphs: bool = False) -> dict:
    """What a cell needs to know about how to run (not part of its identity): ``checkpoints``
    (the folder of half-trained cells, ``OUT/checkpoints``), the training ``device`` and
    ``save_graphs``."""
    return {"checkpoints": str(Path(out_dir).resolve() / "checkpoints"), "device": device,
            "save_graphs": bool(save_graphs)}


def graph_file(spec: dict) -> str:
    """Where ``--save-graphs`` puts a cell's graph, relative to the output folder:
    ``graphs/<method>-<variant>-d<density>-s<seed>-<first 8 digits of the cell id>.npz``."""
    return (f"graphs/{spec['method']}-{spec['variant']}-d{spec['density']:g}-s{spec['seed']}-"
            f"{cell_digest(spec)[:8]}.npz")


def _graph_bytes(graph) -> bytes:
    """The graph's ``.npz`` file (:func:`n2ngraph.io.save_graph`) as bytes."""
    import tempfile

    from n2ngraph.io import save_graph

    with tempfile.TemporaryDirectory() as scratch:
        return Path(save_graph(graph, Path(scratch) / "graph.npz")).read_bytes()


def _train(model, spec: dict, options: dict, digest: str):
    """Train ``model`` as ``spec`` says, resuming from ``<checkpoints>/<digest>/`` when a killed
    run left a checkpoint there; the folder is removed once training has finished. Returns the
    per-epoch log (DataFrame, ``n2ngraph.training.LOG_COLUMNS``)."""
    import shutil
    import tempfile

    from n2ngraph.training import CHECKPOINT_NAME, TrainConfig, train

    train_set, test_set = _splits(spec["data"])
    config = TrainConfig(**spec["train"], device=options.get("device", "auto"), progress=False)
    scratch = None if options.get("checkpoints") else tempfile.mkdtemp(prefix="n2ngraph-cell-")
    folder = Path(options.get("checkpoints") or scratch) / digest
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a worker that cannot reach the client's folder: no resume
        warnings.warn(f"cannot write checkpoints to {folder} ({exc}); training cell {digest} without "
                      "them (a killed run restarts from its first epoch)", stacklevel=2)
        scratch = tempfile.mkdtemp(prefix="n2ngraph-cell-")
        folder = Path(scratch) / digest
    run = dict(out_dir=folder, seed=int(spec["seed"]), identity={"cell": digest})
    try:
        log = train(model, train_set, test_set, config, resume=True, **run)
    except ValueError as exc:
        if not (folder / CHECKPOINT_NAME).exists():
            raise
        warnings.warn(f"cannot resume cell {digest} from {folder / CHECKPOINT_NAME} ({exc}); "
                      "training it from the start", stacklevel=2)
        shutil.rmtree(folder)
        log = train(model, train_set, test_set, config, **run)
    shutil.rmtree(scratch or folder, ignore_errors=True)
    return log


def _accuracy(log) -> dict:
    """:data:`ACCURACY_COLUMNS` of a training log."""
    last = log.iloc[-1] if len(log) else None
    return {"final_test_acc": float(last["test_acc"]) if last is not None else float("nan"),
            "best_test_acc": float(log["test_acc"].max()) if len(log) else float("nan"),
            "final_train_acc": float(last["train_acc"]) if last is not None else float("nan"),
            "final_train_loss": float(last["train_loss"]) if last is not None else float("nan"),
            "train_epochs": int(len(log)), "train_seconds": round(float(log["seconds"].sum()), 3)}


def _train_variant(spec: dict, graph, reference_model, trained: dict, options: dict) -> dict:
    """Map the cell's graph to a masked model (:func:`n2ngraph.bridge.to_model`), train it and
    measure it against the trained dense reference: the training columns of the row."""
    from n2ngraph.bridge import to_model
    from n2ngraph.trained import trained_connectivity

    if isinstance(trained, (bytes, bytearray)):
        trained = pickle.loads(trained)  # our own client's object
    example = _example(spec.get("input_shape"))
    model = to_model(graph, reference_model, init=spec["init"], seed=spec["seed"], example_input=example)
    log = _train(model, spec, options, cell_digest(spec))
    model.cpu()
    return {**_accuracy(log), "init": spec["init"], "data": spec["data"],
            **trained_connectivity(model, trained, example_input=example),
            "log": log.to_dict("records")}


def run_reference_cell(spec: dict, options: dict | None = None):
    """Train the dense reference of one seed (:func:`reference_spec`) and measure it.

    Returns
    -------
    row : dict
        ``cell_id``, ``model``, ``seed``, :data:`ACCURACY_COLUMNS`, ``trained lambda_2`` and
        ``trained times`` (of its weighted Laplacian, :func:`n2ngraph.trained.trained_reference`),
        ``weights_sha256`` and ``log`` (records).
    files : dict
        ``{"references/<cell id>.pt": bytes}``: the trained ``state_dict`` (``torch.save``; read
        back with ``weights_only=True``), from which the client rebuilds the trained reference.
    """
    import io as _io

    import torch

    from n2ngraph.trained import trained_reference

    start = time.perf_counter()
    digest = cell_digest(spec)
    model = _model(spec["model"], spec["model_kwargs"], spec["seed"])
    log = _train(model, spec, options or {}, digest)
    model.cpu()
    ref = trained_reference(model, spec["t_lambda2"], example_input=_example(spec["input_shape"]))
    buffer = _io.BytesIO()
    torch.save(model.state_dict(), buffer)
    weights = buffer.getvalue()
    row = {"cell_id": digest, "model": spec["model"], "seed": spec["seed"], "variant": "dense",
           **_accuracy(log), "trained lambda_2": ref["lambda_2"], "trained times": list(ref["times"]),
           "weights_sha256": hashlib.sha256(weights).hexdigest(), "log": log.to_dict("records"),
           "seconds": round(time.perf_counter() - start, 3)}
    return row, {reference_file(digest): weights}


def reference_file(digest: str) -> str:
    """The trained dense reference's weights, relative to the output folder."""
    return f"references/{digest}.pt"


def load_trained_reference(out_dir, spec: dict) -> dict:
    """:func:`n2ngraph.trained.trained_reference` of the trained dense model that
    :func:`run_reference_cell` stored for ``spec`` in ``out_dir`` (read with
    ``torch.load(weights_only=True)``: nothing is unpickled)."""
    import torch

    from n2ngraph.trained import trained_reference

    model = _model(spec["model"], spec["model_kwargs"], spec["seed"])
    state = torch.load(Path(out_dir) / reference_file(cell_digest(spec)), map_location="cpu",
                       weights_only=True)
    model.load_state_dict(state)
    return trained_reference(model, spec["t_lambda2"], example_input=_example(spec["input_shape"]))


def _distance(reference: dict, graph, grid, weighted: bool) -> np.ndarray:
    """``F`` on ``grid`` against the precomputed reference signature."""
    from n2ngraph.diffusion import connectivity_distance

    return np.asarray(connectivity_distance(reference["graph"], graph, grid, weighted=weighted,
                                            reference_signature=reference["signature"]))


# ----------------------------------------------------------------------------- cell files
def _cell_path(out: Path, digest: str) -> Path:
    return out / "cells" / f"{digest}.json"


def _read_cell(path: Path, spec: dict, digest: str, check) -> dict | None:
    """The row of a complete cell file for ``spec``; None (with a warning naming the file) when
    the file is unreadable, truncated or incomplete (``check``), None silently when it does not
    exist."""
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = f"unreadable ({type(exc).__name__}: {exc})"
    else:
        reason = _incomplete(doc, spec, digest, check)
        if reason is None:
            return doc["row"]
    warnings.warn(f"cell file {path} is {reason}; recomputing it", stacklevel=4)
    return None


def _incomplete(doc, spec: dict, digest: str, check) -> str | None:
    """Why ``doc`` is not the finished cell ``spec``, or None: the engine's own checks of the
    file, then the sweep's ``check(spec, row)``."""
    if not isinstance(doc, dict) or not doc:
        return "empty or not a JSON object"
    if doc.get("format") != spec["format"]:
        return f"of format {doc.get('format')!r}, not {spec['format']}"
    if doc.get("id") != digest or doc.get("config") != spec:
        return "for another cell config"
    row = doc.get("row")
    if not isinstance(row, dict):
        return "without a results row"
    return None if check is None else check(spec, row)


def _row_problem(spec: dict, row: dict) -> str | None:
    """Why a stored row of :func:`run_cell` is incomplete, or None."""
    columns = _row_columns(spec["time_labels"])
    if "train" in spec:
        from n2ngraph.trained import trained_columns

        labels = time_labels((), spec["trained_t_lambda2"])
        columns += [*ACCURACY_COLUMNS, "init", "data", "log", *trained_columns(labels)]
    missing = [c for c in columns if c not in row]
    if missing:
        return f"incomplete (no {', '.join(missing[:4])}{'...' if len(missing) > 4 else ''})"
    if row["cell_id"] != cell_digest(spec):
        return "for another cell"
    numbers_ = [c for c in _row_columns(spec["time_labels"]) if c.startswith(("F(", "escaped-"))]
    if not all(isinstance(row[c], (int, float)) and not isinstance(row[c], bool) for c in numbers_):
        return "incomplete (non-numeric distances)"
    return None


def _write_files(out: Path, files: dict) -> None:
    """Write ``{relative path: bytes}`` under ``out`` atomically; a path leaving ``out`` is refused."""
    from n2ngraph.io import atomic_write

    for name, data in files.items():
        path = (out / name).resolve()
        if out not in path.parents:
            raise ValueError(f"a cell returned the file {name!r}, which is not inside {out}")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp, data=data: Path(tmp).write_bytes(data))


def _write_cell(out: Path, digest: str, spec: dict, row: dict) -> None:
    from n2ngraph.io import atomic_write

    text = json.dumps({"format": spec["format"], "id": digest, "config": spec, "row": row})
    atomic_write(_cell_path(out, digest), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def load_cells(out_dir: str | os.PathLike, ids: Sequence[str] | None = None):
    """Finished cells of a sweep folder as a DataFrame (one row per cell, sorted).

    ``ids``: only these cells (a config's, see ``configs/<digest>/config.json``); default every
    complete cell file in ``cells/`` except the trained dense references (``dense.csv``).
    Unreadable files are skipped with a warning. Training logs are left out (``runs/``).
    """
    import pandas as pd

    folder = Path(out_dir) / "cells"
    paths = [folder / f"{i}.json" for i in ids] if ids is not None else sorted(folder.glob("*.json"))
    rows = []
    for path in paths:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            config = doc.get("config")
            if ids is None and isinstance(config, dict) and config.get("cell") == "trained-reference":
                continue
            rows.append({k: v for k, v in doc["row"].items() if k != "log"})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"skipping cell file {path}: {type(exc).__name__}: {exc}", stacklevel=2)
    return _sorted_table(pd.DataFrame(rows))


def _renamed(table):
    """``table`` with the columns of earlier versions under their present names (rows of old
    and new cells in one table fill one column)."""
    for old, new in _RENAMED_COLUMNS.items():
        if old not in table.columns:
            continue
        if new in table.columns:
            table = table.assign(**{new: table[new].where(table[new].notna(), table[old])})
            table = table.drop(columns=old)
        else:
            table = table.rename(columns={old: new})
    return table


def _sorted_table(table):
    table = _renamed(table)
    if not table.empty:
        table = table.sort_values(["method", "variant", "density", "seed"],
                                  ascending=[True, False, False, True], kind="stable")
        table = table.reset_index(drop=True)
    return table


def summarize(table):
    """Mean and standard deviation over seeds per (model, recipe, init, data,) method x variant x
    density (``init`` and ``data`` in training sweeps)."""
    keys = [k for k in ("model", "recipe", "init", "data") if k in table.columns] + ["method", "variant", "density"]
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    numeric = [c for c in table.columns if c not in keys + ["seed", "cell_id"]
               and is_numeric_dtype(table[c]) and not is_bool_dtype(table[c])]
    grouped = table.groupby(keys, sort=False)[numeric]
    mean, std = grouped.mean(), grouped.std(ddof=1)
    out = mean.copy()
    for c in numeric:
        out[f"{c}_std"] = std[c]
    out.insert(0, "seeds", grouped.size())
    out = out.reset_index()
    out.attrs = dict(table.attrs)
    return out


# --------------------------------------------------------------------------------- sweep
def _thread_plugin(threads: int):
    """A Dask worker plugin that sets torch and BLAS threads once per worker process."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class ThreadLimits(WorkerPlugin):
        name = "n2ngraph-thread-limits"

        def __init__(self, n: int):
            self.n = n

        def setup(self, worker):
            import torch

            torch.set_num_threads(self.n)
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # pragma: no cover - BLAS keeps the worker's environment
                return
            threadpool_limits(limits=self.n)

    return ThreadLimits(threads)


def _shared(value):
    """Identity: the task that holds an input many cells share."""
    return value


def _run_packed(run, spec: dict, *packed: bytes) -> dict:
    """``run(spec, *inputs)`` on a Dask worker, the shared inputs unpickled from the bytes the
    client shipped (see :func:`run_cells`)."""
    return run(spec, *(pickle.loads(p) for p in packed))  # our own client's objects


def _connect(scheduler: str | None, workers: int):
    """A Dask client: to ``scheduler`` or to a new LocalCluster of ``workers`` processes."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise ValueError(f"cannot reach Dask scheduler {scheduler!r}: {exc}") from exc
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=40)
    return Client(cluster), cluster


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    return int(value)


def run_cells(run, specs: Sequence[dict], out_dir: str | os.PathLike, *, inputs=None, load=None,
              check=None, scheduler: str | None = None, workers: int = 2, threads: int = 1,
              progress: bool = True, inline: bool = False) -> list[dict]:
    """The sweep engine: run every cell of ``specs`` that ``out_dir/cells`` lacks, store each
    row atomically as it arrives, and return the rows of all cells in the order of ``specs``.

    Every sweep of the package runs on it: :func:`run_sweep` (connectivity cells) and the
    training cells of ``analysis/mnist_reproduction.py``. A cell is independent and idempotent,
    named by :func:`cell_digest` of its spec, and stored as ``cells/<digest>.json`` holding
    ``{"format", "id", "config": spec, "row"}``; a killed sweep resumes without recomputing or
    losing a finished cell, and a file that is unreadable, for another spec or whose row
    ``check`` refuses is recomputed with a warning naming it.

    Parameters
    ----------
    run : callable
        ``run(spec, *inputs) -> row`` (a JSON-ready dict), or ``-> (row, files)`` with ``files``
        a dict ``{relative path: bytes}`` that the client writes under ``out_dir`` (atomically,
        before the cell file, so a stored cell always has its files): how a worker ships back
        what does not fit in a row (trained weights, graphs) without a shared file system. On
        Dask ``run`` runs in a worker process, so it must be importable there (a module-level
        function of an installed module).
    specs : sequence of dict
        Cell specs: JSON-ready, holding everything that changes the cell's row, with a
        ``"format"`` entry (the version of what the row holds; part of the identity).
    out_dir : path
        Folder of ``cells/``, resolved here, on the client: workers never write there (their
        ``files`` come back to the client), so they need no shared file system.
    inputs : callable, optional
        ``inputs(spec) -> tuple of str``: the keys of the shared inputs the cell needs, passed
        to ``run`` after the spec in that order. Default: none.
    load : callable, optional
        ``load(key) -> value``: builds a shared input on the client, once per sweep and only for
        keys that a cell still to run needs. On Dask each value travels pickled once per worker
        (not through Dask's own serialization, which may drop attributes of exact objects such
        as a heat signature's saturated and decaying parts).
    check : callable, optional
        ``check(spec, row) -> str or None``: why a stored row is incomplete, or None.
    scheduler : str, optional
        Dask scheduler address; default a LocalCluster of ``workers`` processes.
    workers, threads : int >= 1
        LocalCluster workers; torch and BLAS threads of each worker (set by a worker plugin).
    progress : bool
        Show a progress bar.
    inline : bool
        Run the cells in this process, no Dask; the caller's thread settings stay.

    Returns
    -------
    list of dict
        ``rows[i]`` is the row of ``specs[i]``.

    Raises
    ------
    ValueError
        An unreachable scheduler (before any file is written), or ``workers``/``threads`` below 1.
    """
    from tqdm.auto import tqdm

    workers = _positive_int(workers, "workers")
    threads = _positive_int(threads, "threads")
    out = Path(out_dir).resolve()
    needs = inputs if inputs is not None else (lambda spec: ())
    ids = [cell_digest(spec) for spec in specs]
    rows: dict[str, dict] = {}
    for spec, digest in zip(specs, ids):
        row = _read_cell(_cell_path(out, digest), spec, digest, check)
        if row is not None:
            rows[digest] = row
    todo = list({d: s for s, d in zip(specs, ids) if d not in rows}.items())
    client = cluster = None
    if todo and not inline:  # an unreachable scheduler fails here, before any file is written
        client, cluster = _connect(scheduler, workers)
    bar = None
    try:
        (out / "cells").mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(set(ids)), initial=len(set(ids)) - len(todo), desc="cells",
                   disable=not progress, unit="cell")
        shared = {key: load(key) for key in dict.fromkeys(k for _, s in todo for k in needs(s))}

        def finish(digest, spec, result):
            row = result
            if isinstance(result, tuple):
                row, files = result
                _write_files(out, files)
            _write_cell(out, digest, spec, row)
            rows[digest] = row
            bar.update()

        if inline:
            for digest, spec in todo:
                finish(digest, spec, run(spec, *(shared[k] for k in needs(spec))))
        elif todo:
            import cloudpickle  # as Dask pickles; the standard pickler misses mappingproxy
            from distributed import as_completed

            client.register_plugin(_thread_plugin(threads))
            # shared inputs are tasks of their own (not scattered): they reach the workers once
            # each, and a scheduler with no worker yet just queues the sweep until one joins
            with warnings.catch_warnings():
                # shared inputs (reference signatures) may be large on purpose
                warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
                futures_of = {key: client.submit(_shared, cloudpickle.dumps(value), pure=False,
                                                 key=f"n2ngraph-{key}-{uuid.uuid4().hex}")
                              for key, value in shared.items()}
            futures = {}
            for digest, spec in todo:
                fut = client.submit(_run_packed, run, spec, *(futures_of[k] for k in needs(spec)),
                                    key=f"n2ngraph-cell-{digest}", pure=False)
                futures[fut] = (digest, spec)
            for fut in as_completed(futures):
                digest, spec = futures[fut]
                finish(digest, spec, fut.result())
    finally:
        if bar is not None:
            bar.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    return [rows[d] for d in ids]


#: Most columns of a Markdown table and of the printed summary; the CSV files keep every column.
MAX_COLUMNS = 12

#: Columns of rows written by earlier versions, under their present names (a reader of old
#: cell files sees the new name).
_RENAMED_COLUMNS = {"connected": "inputs_reach_outputs"}

#: How a variant is named in readable tables ("snip + N2NSkip").
_VARIANT_SUFFIX = {"plain": "", "n2nskip": " + N2NSkip"}

#: Fractions the short tables show in % (under the names of :data:`_SHORT_NAMES`).
_PERCENT = ("final_test_acc", "best_test_acc")

#: Readable names of the structural columns shown in the short tables.
_SHORT_NAMES = {"final_test_acc": "final acc %", "best_test_acc": "best acc %",
                "n_components": "components",
                "dead_units": "dead units", "effective_density": "effective density"}

_F_DEFINITION = ("F(t) = ||S_ref(t) - S(t)||_2: distance between the heat signatures "
                "S(t) = exp(-tL) A of the dense reference and of the pruned graph (A: unit heat "
                "on the input nodes, L the graph Laplacian); lower is closer to the dense network.")


def caption(meta: dict, *, per_cell: bool = False) -> str:
    """The two-line header of a sweep's Markdown tables and printed summary: what ``F`` is;
    the model, recipe, ``lambda_2`` of the reference and the times (in units of
    ``1/lambda_2`` when so stated), and what a row holds."""
    lam = meta["lambda_2_reference"]
    pairs = ", ".join(f"{lab} = {t:.4g}" for lab, t in zip(meta["time_labels"], meta["times"]))
    if meta.get("times_in_units_of_1/lambda_2", True):
        when = f"t in units of 1/lambda_2 (l2): {pairs}"
    else:
        when = (f"t absolute: {', '.join(meta['time_labels'])} "
                f"(t * lambda_2 = {', '.join(f'{t * lam:.3g}' for t in meta['times'])})")
    if per_cell:
        rows = "one row per cell (one seed)"
    elif meta["config"].get("seeds") == 1:
        rows = "one seed (n = 1), so no std"
    else:
        rows = "mean ± std over n seeds"
    return (f"{_F_DEFINITION}\n\n"
            f"{meta['config']['model']}, recipe {meta['recipe']['name']}, "
            f"{'weighted' if meta['config']['weighted'] else 'binary'} adjacency: "
            f"lambda_2(reference) = {lam:.6g}; {when}; {rows}.{_training_caption(meta)}")


def _training_caption(meta: dict) -> str:
    """The caption's paragraph on training (empty without training)."""
    t = meta.get("training")
    if not t:
        return ""
    acc = 100 * np.array(t["dense_final_test_acc"], dtype=float)
    dense = f"{acc.mean():.2f}" + (f" ± {acc.std(ddof=1):.2f}" if len(acc) > 1 else "")
    lam = np.array(t["trained_lambda_2_reference"], dtype=float)
    return (f"\n\nTrained {t['epochs']} epoch{'s' if t['epochs'] != 1 else ''} on {t['data']} "
            f"({t['settings']['optimizer']}, lr {t['settings']['lr']:g}, {t['settings']['schedule']} schedule; "
            f"init {t['init']}); the dense reference of each seed reaches {dense} % final test accuracy. "
            f"trained F is measured on the weighted adjacency of the trained networks against the "
            f"trained dense reference of the same seed, t in units of 1/lambda_2 of that reference "
            f"(lambda_2 = {', '.join(f'{v:.4g}' for v in lam)} by seed).")


def _short_columns(frame) -> tuple[list[str], list[str]]:
    """Columns of ``frame`` the short table shows (at most :data:`MAX_COLUMNS` with the three
    identity columns), and the ``F`` columns left out for lack of room."""
    value = [c for c in frame.columns if not c.endswith("_std")]
    f_cols = [c for c in value if c.startswith("F(t=") and c != "F(t=inf)"]
    if "final_test_acc" in value:
        return _trained_short_columns(value, f_cols)
    escaped = [c for c in value if c.startswith("escaped-ref(t=")]
    room = MAX_COLUMNS - 3  # method, density, n or seed
    shown_f, dropped = f_cols[:room], f_cols[room:]
    room -= len(shown_f)
    # by priority: the saturated distance, connectivity, structure; then the signed measure at
    # the middle stated time (where plain and N2NSkip variants differ most, docs/diffusion.md)
    extras = ["F(t=inf)", "lambda_2/ref", "n_components", "dead_units", "effective_density",
              *escaped[(len(escaped) - 1) // 2:][:1]]
    chosen = [c for c in extras if c in frame.columns][:max(room, 0)]
    order = [*shown_f, *(c for c in ("F(t=inf)", *escaped) if c in chosen),
             *(c for c in chosen if not c.startswith(("F(", "escaped-")))]
    return order, dropped


def _trained_short_columns(value: list[str], f_cols: list[str]) -> tuple[list[str], list[str]]:
    """The short view of a training sweep: accuracy first, then by priority ``F`` at the middle
    stated time, the ``trained F`` at every stated time, ``trained F(t=inf)``, ``trained
    lambda_2/ref``, the other ``F``, ``F(t=inf)``."""
    trained = [c for c in value if c.startswith("trained F(t=") and c != "trained F(t=inf)"]
    middle = f_cols[(len(f_cols) - 1) // 2:][:1]
    priority = ["final_test_acc", "best_test_acc", *middle, *trained, "trained F(t=inf)",
                "trained lambda_2/ref", *(c for c in f_cols if c not in middle), "F(t=inf)"]
    chosen = set([c for c in dict.fromkeys(priority) if c in value][:MAX_COLUMNS - 3])
    order = [c for c in ("final_test_acc", "best_test_acc", *f_cols, "F(t=inf)", *trained,
                         "trained F(t=inf)", "trained lambda_2/ref") if c in chosen]
    return order, [c for c in f_cols if c not in chosen]


def _number(v: float, digits: int = 4) -> str:
    return f"{v:.{digits}g}"


def readable_table(frame):
    """The short view of a sweep table that ``summary.md``, ``results.md`` and the printed
    summary show: at most :data:`MAX_COLUMNS` columns, one ``mean ± std`` cell per quantity.

    ``frame`` is a summary (:func:`summarize`, with ``seeds``) or a results table (one row per
    cell, with ``seed``). Rows: per method, density (descending), then variant, so that a
    method and its N2NSkip variant at the same budget are neighbours. Columns: ``method``
    (``"snip + N2NSkip"`` for the N2NSkip variant), ``density``, ``n`` (seeds) or ``seed``,
    ``F`` at every stated time (as many as fit), then as room allows ``F(t=inf)``, the signed
    escaped-heat difference at the middle stated time (the earlier of two), ``lambda_2/ref``,
    components, dead units and effective density. A summary cell reads
    ``mean ± std`` (std over seeds, ``ddof=1``); with one seed (``n = 1``) just the mean. A
    quantity that is not defined (``lambda_2/ref`` of a disconnected reference) reads ``-``.
    """
    import pandas as pd

    per_cell = "seeds" not in frame.columns
    columns, _ = _short_columns(frame)
    count = "seed" if per_cell else "n"
    methods = list(dict.fromkeys(frame["method"])) if "method" in frame.columns else []
    records = sorted(frame.to_dict("records"), key=lambda r: (  # a method's variants side by side
        methods.index(r["method"]), -float(r["density"]),
        VARIANTS.index(r["variant"]) if r["variant"] in VARIANTS else len(VARIANTS),
        r.get("seed", 0)))
    rows = []
    for r in records:
        n = 1 if per_cell else int(r["seeds"])
        row = {"method": f"{r['method']}{_VARIANT_SUFFIX.get(r['variant'], ' ' + str(r['variant']))}",
               "density": f"{float(r['density']):g}",
               count: int(r["seed"]) if per_cell else n}
        for c in columns:
            mean, std = r[c], r.get(f"{c}_std")
            if c in _PERCENT and mean is not None:  # accuracies read in %
                mean, std = 100 * float(mean), None if std is None else 100 * float(std)
            if mean is None or not math.isfinite(float(mean)):
                text = None if mean is None or math.isnan(float(mean)) else str(float(mean))
            else:
                text = _number(float(mean))
                if n > 1 and std is not None and math.isfinite(float(std)):
                    text += f" ± {_number(float(std), 2)}"
            row[_SHORT_NAMES.get(c, c)] = text
        rows.append(row)
    names = ["method", "density", count, *(_SHORT_NAMES.get(c, c) for c in columns)]
    return pd.DataFrame(rows, columns=names)


def _notes(frame) -> str:
    """What the short table's columns mean, below it; where the rest is."""
    columns, dropped = _short_columns(frame)
    said = []
    if any(c.startswith("escaped-ref") for c in columns):
        said.append("escaped-ref(t): share of the input heat that has left the input nodes by t, "
                    "minus the reference's (> 0: spreads faster)")
    if "lambda_2/ref" in columns:
        said.append("lambda_2/ref: algebraic connectivity over the reference's")
    if "final_test_acc" in columns:
        said.append("final acc %: test accuracy after the last epoch (no selection on the test set); "
                    "best acc %: the highest test accuracy of any epoch")
    if any(c.startswith("trained ") for c in columns):
        said.append("trained F, trained lambda_2/ref: the same measures on the weighted adjacency "
                    "(|w| of the trained weights) against the trained dense reference of the seed, "
                    "t in units of 1/lambda_2 of that reference")
    if "n_components" in columns:
        said.append("components: connected components")
    if "dead_units" in columns:
        said.append("dead units: units on no input-to-output path")
    if "effective_density" in columns:
        said.append("effective density: kept weights on an input-to-output path / dense weights")
    name = "results.csv" if "seeds" not in frame.columns else "summary.csv"
    rest = f"Every column{' (with its std)' if name == 'summary.csv' else ''} is in {name}"
    if dropped:
        rest += f", F at {len(dropped)} more times too"
    return "; ".join(said) + (". " if said else "") + rest + "."


def sweep_markdown(frame) -> str:
    """The Markdown text of ``summary.md`` (``frame`` a summary) or ``results.md`` (a results
    table): :func:`caption`, :func:`readable_table` and a note on its columns. ``frame.attrs``
    holds the sweep's metadata (as :func:`run_sweep` returns it)."""
    from n2ngraph.tables import markdown_document

    per_cell = "seeds" not in frame.columns
    return markdown_document(readable_table(frame), title=caption(frame.attrs, per_cell=per_cell),
                             notes=_notes(frame))


def run_sweep(config: CompareConfig, out_dir: str | os.PathLike, *, scheduler: str | None = None,
              workers: int = 2, threads: int = 1, progress: bool = True, inline: bool = False,
              times: Sequence[float] | None = None, device: str = "auto", save_graphs: bool = False):
    """Run every cell of ``config`` that ``out_dir`` lacks; build this config's tables.

    Parameters
    ----------
    config : CompareConfig
    out_dir : path
        The output folder (layout in the module docstring), resolved here, on the client.
    scheduler : str, optional
        Dask scheduler address; default a LocalCluster of ``workers`` processes.
    workers : int >= 1
        LocalCluster workers.
    threads : int >= 1
        Torch and BLAS threads of each Dask worker (set by a worker plugin).
    inline : bool
        Run cells in this process, no Dask (debugging); the caller's thread settings stay.
    times : sequence of float, optional
        Absolute times overriding the config's (columns ``F(t=<t>)``).
    device : str
        Training device of the cells (``"auto"``: CUDA where the worker has it); not part of a
        cell's identity.
    save_graphs : bool
        Also write each cell's graph to ``graphs/`` (:func:`graph_file`; cells computed earlier
        have theirs rebuilt here, on the client).

    Returns
    -------
    table, summary : DataFrame
        One row per cell of this config; mean and std over seeds. ``attrs`` holds the config
        file's content (times, labels, ``lambda_2`` of the reference, recipe; when training
        also the trained dense references); ``table.attrs`` also ``files``, the paths of the
        tables, config files, run logs and graphs written.
    times : tuple of float
        The absolute times the sweep used.
    """
    from n2ngraph.io import atomic_write
    from n2ngraph.pruning import METHODS
    from n2ngraph.tables import write_table

    workers = _positive_int(workers, "workers")
    threads = _positive_int(threads, "threads")
    out = Path(out_dir).resolve()
    if times is not None:
        times = _check_times(tuple(times), "diffusion times")
    given = times if times is not None else config.times
    ref0 = reference_graph(config, 0)
    times, lam2 = stated_times(ref0, given, config.t_lambda2, weighted=config.weighted)
    labels = time_labels(times, None if given is not None else config.t_lambda2)
    recipe = config.resolved_recipe
    options = run_options(out, device=device, save_graphs=save_graphs)
    engine = dict(scheduler=scheduler, workers=workers, threads=threads, progress=progress, inline=inline)

    calib, records = {}, {}
    if any(METHODS[m].needs_data for m in config.methods):
        for s in range(config.seeds):
            calib[s], records[s] = _calibration(config, s)
    specs = [cell_config(config, c, times, labels, records.get(c.seed)) for c in cells_of(config)]
    ids = [cell_digest(s) for s in specs]

    dense_rows, ref_specs = [], {}
    if config.training:  # the dense reference of each seed, trained once and shared
        ref_specs = {s: reference_spec(config, s) for s in range(config.seeds)}
        dense_rows = run_cells(run_reference_cell, list(ref_specs.values()), out,
                               inputs=lambda spec: ("options",), load=lambda key: options,
                               check=functools.partial(_reference_problem, out), **engine)
    extra = config.training or save_graphs

    def inputs(spec: dict) -> tuple[str, ...]:
        data = (f"calibration-{spec['seed']}",) if spec["calibration"] else ()
        if not extra:
            return (f"reference-{spec['reference_seed']}", *data)
        trained = f"trained-{spec['seed']}" if config.training else "none"
        return (f"reference-{spec['reference_seed']}", *(data or ("none",)), trained, "options")

    def load(key: str):
        if key in ("none", "options"):
            return options if key == "options" else None
        what, seed = key.rsplit("-", 1)
        if what == "calibration":
            return calib[int(seed)]
        if what == "trained":
            return load_trained_reference(out, ref_specs[int(seed)])
        return _reference_data(config, int(seed), times, *((lam2, ref0) if seed == "0" else ()))

    rows = run_cells(run_cell, specs, out, inputs=inputs, load=load, check=_row_problem, **engine)
    with contextlib.suppress(OSError):  # empty once every cell has finished training
        (out / "checkpoints").rmdir()

    import pandas as pd

    # a config's identity: its fields and its cells (which hold the times and calibration data)
    config_id = hashlib.sha256(json.dumps({"config": config.to_json(), "cells": ids},
                                          sort_keys=True).encode()).hexdigest()[:12]
    meta = {
        "config": config.to_json(), "config_id": config_id, "recipe": recipe.to_json(),
        "times": list(times), "time_labels": list(labels),
        "times_in_units_of_1/lambda_2": given is None,
        "lambda_2_reference": lam2, "weighted": config.weighted, "cell_format": CELL_FORMAT,
        "cells": ids,
    }
    if config.training:
        meta["training"] = _training_meta(config, dense_rows)
    table = _sorted_table(pd.DataFrame([{k: v for k, v in r.items() if k != "log"} for r in rows]))
    table.attrs = {k: v for k, v in meta.items() if k != "cells"}
    summary = summarize(table)
    meta_text = json.dumps(meta, indent=2)
    own = out / "configs" / config_id
    own.mkdir(parents=True, exist_ok=True)
    written = []
    if config.training:
        written += _write_runs(own / "runs", rows, dense_rows, config)
    if save_graphs:
        written += _save_graphs(out, specs, rows, calib)
    for folder in (own, out):
        if folder == out:
            (out / "config.json").unlink(missing_ok=True)
        for frame, name in ((table, "results"), (summary, "summary")):
            written += write_table(frame, folder / name, markdown=sweep_markdown(frame))
        if dense_rows:
            written += write_table(_dense_table(dense_rows), folder / "dense")
        written.append(atomic_write(folder / "config.json", lambda tmp: Path(tmp).write_text(meta_text)))
    table.attrs["files"] = [str(p) for p in written]
    return table, summary, tuple(times)


def _reference_problem(out: Path, spec: dict, row: dict) -> str | None:
    """Why a stored trained-reference cell is incomplete, or None: a missing column, or its
    weights file missing or not the one the row names."""
    missing = [c for c in (*ACCURACY_COLUMNS, "trained lambda_2", "weights_sha256", "log") if c not in row]
    if missing:
        return f"incomplete (no {', '.join(missing)})"
    path = out / reference_file(cell_digest(spec))
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return f"without its weights file {path}"
    return None if digest == row["weights_sha256"] else f"not matched by its weights file {path}"


def _dense_table(dense_rows: list[dict]):
    """One row per seed: the trained dense reference's accuracy and weighted ``lambda_2``."""
    import pandas as pd

    keep = ["model", "seed", *ACCURACY_COLUMNS, "trained lambda_2", "cell_id"]
    return pd.DataFrame([{k: r[k] for k in keep} for r in dense_rows])


def _training_meta(config: CompareConfig, dense_rows: list[dict]) -> dict:
    """What the config file and the tables' header say about training: settings, data, init,
    and the dense references (accuracy, ``lambda_2`` and times of the trained columns)."""
    acc = np.array([r["final_test_acc"] for r in dense_rows], dtype=float)
    return {
        "epochs": config.train_epochs, "data": config.dataset, "init": config.init,
        "settings": train_settings(config),
        "t_lambda2": list(config.t_lambda2),
        "dense_final_test_acc": [float(a) for a in acc],
        "dense_best_test_acc": [float(r["best_test_acc"]) for r in dense_rows],
        "trained_lambda_2_reference": [float(r["trained lambda_2"]) for r in dense_rows],
        "trained_times": [list(r["trained times"]) for r in dense_rows],
        "reference_cells": [r["cell_id"] for r in dense_rows],
    }


def run_name(row: dict) -> str:
    """The folder of a trained cell's log under ``runs/``: ``<method>_<variant>_d<density>_<init>_s<seed>``
    (``dense_s<seed>`` for a dense reference), as ``analysis/mnist_reproduction.py`` names runs."""
    if row.get("variant") == "dense":
        return f"dense_s{row['seed']}"
    return f"{row['method']}_{row['variant']}_d{row['density']:g}_{row['init']}_s{row['seed']}"


def _write_runs(folder: Path, rows, dense_rows, config: CompareConfig) -> list[Path]:
    """``runs/<run name>/log.csv`` and ``run.json`` for every trained cell and dense reference,
    the layout ``analysis/figure5_table1_training.py`` reads."""
    import pandas as pd

    from n2ngraph.io import atomic_write

    recipe = config.resolved_recipe
    written = []
    dense = [{**r, "method": "none", "density": 1.0, "init": "dense"} for r in dense_rows]
    for row in [*rows, *dense]:
        meta = {k: v for k, v in row.items() if k != "log" and not k.startswith(("F(", "escaped-", "trained F("))}
        meta.update(model=config.model, dataset=config.dataset, epochs=config.train_epochs,
                    recipe=recipe.name)
        run = folder / run_name(row)
        run.mkdir(parents=True, exist_ok=True)
        log = pd.DataFrame(row["log"]).to_csv(index=False)
        written.append(atomic_write(run / "log.csv", lambda tmp, text=log: Path(tmp).write_text(text)))
        text = json.dumps(meta, indent=2, default=str)
        written.append(atomic_write(run / "run.json", lambda tmp, text=text: Path(tmp).write_text(text)))
    return written


def _save_graphs(out: Path, specs, rows, calib) -> list[Path]:
    """The ``graphs/`` file of every cell; cells computed before (or by a run without
    ``save_graphs``) have their graph rebuilt here."""
    written = []
    for spec in specs:
        path = out / graph_file(spec)
        if not path.exists():
            data = calib.get(spec["seed"]) if spec["calibration"] else None
            _write_files(out, {graph_file(spec): _graph_bytes(_graph_of(spec, data))})
        written.append(path)
    return written

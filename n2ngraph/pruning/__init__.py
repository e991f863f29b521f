"""Pruning at initialization: one boolean mask per prunable weight.

``prune(model, method, density)`` scores every weight of every ``nn.Linear`` / ``nn.Conv2d`` with
a registered method and keeps the highest scores, ``density`` being the kept fraction. Scoring is
separated from thresholding (the scorers live in ``_scorers``, budgets and ties in ``_threshold``).

Methods (``METHODS``)
---------------------
========== ================================================================== ========
name       keep-score                                                         data
========== ================================================================== ========
random     uniform random (a uniformly random subset of the budget)            no
expander   random with equal fan-in per output unit (the N2NSkip paper's RP)    no
magnitude  ``|w|``                                                            no
snip       ``|w * dL/dw|`` on a batch (Lee et al. 2019; the paper's CSP)        yes
grasp      ``w * (H g)``; removes the highest ``-w * (H g)`` (Wang et al. 2020)  yes
synflow    ``|w * dR/dw|``, ``R`` the positive linearised net, iterative        no
========== ================================================================== ========

Scopes (``SCOPES``): ``"layerwise"`` keeps ``round(density * n_l)`` weights of every layer;
``"global"`` keeps ``round(density * n)`` weights in total under one threshold.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from n2ngraph.masks import prunable_weights, validate_masks, weight_of
from n2ngraph.pruning._scorers import (
    as_batches,
    prepare_synflow,
    score_grasp,
    score_magnitude,
    score_random,
    score_snip,
    score_synflow,
    scoring_copy,
)
from n2ngraph.pruning._threshold import budget, select_per_unit, select_top

__all__ = ["METHODS", "SCOPES", "PruningMethod", "budget", "prune", "score"]

#: Pruning scopes: one budget per layer, or one threshold over the whole model.
SCOPES = ("layerwise", "global")


@dataclass(frozen=True)
class PruningMethod:
    """A registered pruning method.

    Parameters
    ----------
    score : callable
        ``score(model, weights, *, data, rng, **options) -> {name: keep-score tensor}`` (higher
        = keep); see ``n2ngraph.pruning._scorers``. Extra keyword-only parameters of ``score``
        are the method's options, passed through :func:`prune`.
    needs_data : bool
        ``prune`` requires ``data`` (a batch or an iterable of batches).
    uses_model : bool
        The score runs the network: it is computed on a private copy of the model
        (:func:`~n2ngraph.pruning._scorers.scoring_copy`), never on the model itself.
    rounds : int
        Default number of pruning rounds. With ``R > 1`` round ``r`` keeps ``density ** (r / R)``
        of the weights among those kept by round ``r - 1`` (the exponential schedule of SynFlow),
        rescoring the masked network each round.
    per_unit : bool
        Keep an equal number of weights per output unit (the scores are not used).
    prepare : callable, optional
        ``prepare(copy)`` transforms the private copy once before scoring.
    reference : str
        The paper implemented.
    """

    score: Callable[..., dict[str, torch.Tensor]]
    needs_data: bool = False
    uses_model: bool = False
    rounds: int = 1
    per_unit: bool = False
    prepare: Callable[[nn.Module], None] | None = None
    reference: str = ""

    def options(self) -> tuple[str, ...]:
        """Names of the method's keyword options (besides ``rounds``)."""
        import inspect

        params = inspect.signature(self.score).parameters.values()
        return tuple(
            p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in ("data", "rng")
        )


#: Registry of pruning methods: name -> :class:`PruningMethod`.
METHODS: dict[str, PruningMethod] = {
    "random": PruningMethod(score_random, reference="uniform random pruning"),
    "expander": PruningMethod(
        score_random,
        per_unit=True,
        reference="random pruning with equal fan-in (expander-like; Prabhu et al. 2018, "
        "arXiv:1711.05929), the RP of Subramaniam & Sharma 2020, arXiv:2208.03662",
    ),
    "magnitude": PruningMethod(score_magnitude, reference="magnitude pruning at initialization"),
    "snip": PruningMethod(
        score_snip,
        needs_data=True,
        uses_model=True,
        reference="Lee, Ajanthan & Torr 2019, SNIP, arXiv:1810.02340",
    ),
    "grasp": PruningMethod(
        score_grasp,
        needs_data=True,
        uses_model=True,
        reference="Wang, Zhang & Grosse 2020, GraSP, arXiv:2002.07376",
    ),
    "synflow": PruningMethod(
        score_synflow,
        uses_model=True,
        rounds=100,
        prepare=prepare_synflow,
        reference="Tanaka, Kunin, Yamins & Ganguli 2020, SynFlow, arXiv:2006.05467",
    ),
}


# -------------------------------------------------------------------------- validation
def _method(method: str) -> PruningMethod:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; valid methods are {sorted(METHODS)}")
    return METHODS[method]


def _density(density: Any) -> float:
    if isinstance(density, bool) or not isinstance(density, numbers.Real):
        raise TypeError(f"density must be a number in (0, 1], got {type(density).__name__}")
    value = float(density)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ValueError(f"density must lie in (0, 1] (the kept fraction), got {density!r}")
    return value


def _modules(model: Any) -> dict[str, nn.Module]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules = prunable_weights(model)
    if not modules:
        raise ValueError(
            f"{type(model).__name__} has no prunable weights (no nn.Linear or nn.Conv2d layer)"
        )
    return modules


def _options(name: str, spec: PruningMethod, options: dict) -> tuple[int, dict]:
    options = dict(options)
    rounds = options.pop("rounds", spec.rounds)
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if spec.per_unit and rounds != 1:
        raise ValueError(f"method {name!r} is one-shot; rounds must be 1, got {rounds}")
    valid = spec.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"method {name!r} got unknown options {unknown}; its options are {['rounds', *valid]}"
        )
    return int(rounds), options


class _Scoring:
    """The tensors a method scores: a private copy's leaf weights, or the model's own weights
    (read-only) for methods that do not run the network."""

    def __init__(self, model: nn.Module, spec: PruningMethod, data: Any, device: torch.device):
        if spec.uses_model:
            self.model = scoring_copy(model)
            if spec.prepare is not None:
                spec.prepare(self.model)
            self.weights = {n: m.weight for n, m in prunable_weights(self.model).items()}
        else:
            self.model = model
            self.weights = {n: weight_of(m).detach() for n, m in prunable_weights(model).items()}
        self.spec = spec
        self.data = None
        if data is not None and (spec.needs_data or spec.uses_model):
            self.data = as_batches(data, device, limit=None if spec.needs_data else 1)

    def apply(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Zero the pruned weights of the private copy (no-op for read-only weights)."""
        if not self.spec.uses_model:
            return
        with torch.no_grad():
            for name, w in self.weights.items():
                w.mul_(masks[name].to(w.device))

    def score(self, rng: np.random.Generator, options: dict) -> dict[str, torch.Tensor]:
        return self.spec.score(self.model, self.weights, data=self.data, rng=rng, **options)


def _check_data(name: str, spec: PruningMethod, data: Any) -> None:
    if spec.needs_data and data is None:
        raise ValueError(
            f"method {name!r} needs data: pass data=(inputs, targets) or an iterable of such "
            "batches (a DataLoader)"
        )


# ------------------------------------------------------------------------------ public
def kept_count(model: nn.Module, density: float, *, scope: str = "layerwise") -> int:
    """Weights that :func:`prune` keeps at ``density``, whatever the method: the budgets are exact.

    ``layerwise``: ``sum_l budget(n_l, density)`` over the prunable weights' sizes ``n_l``;
    ``global``: ``budget(sum_l n_l, density)`` (:func:`budget` rounds half up).
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid scopes are {list(SCOPES)}")
    density = _density(density)
    sizes = [weight_of(m).numel() for m in _modules(model).values()]
    if scope == "global":
        return budget(sum(sizes), density)
    return sum(budget(n, density) for n in sizes)


def prune(
    model: nn.Module,
    method: str,
    density: float,
    *,
    data: Any = None,
    scope: str = "layerwise",
    seed: int | None = 0,
    **options: Any,
) -> dict[str, torch.Tensor]:
    """Masks keeping a ``density`` fraction of the prunable weights of ``model``.

    Parameters
    ----------
    model : nn.Module
        Its ``nn.Linear`` and ``nn.Conv2d`` weights are pruned (``n2ngraph.masks``). Never
        modified: networks are scored on a private copy (weights, BatchNorm statistics,
        training mode, ``requires_grad`` and the global random state are left as they were).
    method : str
        A key of :data:`METHODS`: ``random``, ``expander``, ``magnitude``, ``snip``, ``grasp``,
        ``synflow``.
    density : float in (0, 1]
        Kept fraction (``sparsity = 1 - density``).
    data : (inputs, targets) or iterable of them, optional
        Required by ``snip`` and ``grasp``; every batch the iterable yields is used and the
        loss averaged over them (pass ``itertools.islice(loader, n)`` to use ``n``). Only its
        first batch's input shape is used by ``synflow``; ignored by the others.
    scope : {"layerwise", "global"}
        ``layerwise``: each layer keeps ``round(density * n_l)`` weights (within half a weight
        of its density); ``global``: ``round(density * n)`` in total under one threshold.
    seed : int
        Seeds a ``numpy.random.Generator`` for random scores, random fan-in and tie breaking.
    **options
        ``rounds`` (any method but ``expander``; default 100 for ``synflow``, 1 otherwise);
        ``loss`` (``snip``, ``grasp``: ``loss(outputs, targets)``, default cross-entropy);
        ``temperature`` (``grasp``, default 200 as in the authors' code; 1 gives the plain
        equation); ``input_shape`` (``synflow``, per-sample input shape).

    Returns
    -------
    dict
        ``{"<module path>.weight": bool tensor}``, one per prunable weight in module order, of
        the weight's shape and on its device; ``True`` = kept.

    Raises
    ------
    ValueError
        Unknown method or scope (the valid names are listed), density outside (0, 1], ``data``
        missing for ``snip``/``grasp``, a model without Linear/Conv2d layers.
    TypeError
        ``model`` is not an ``nn.Module``, ``density`` is not a number, badly shaped ``data``,
        an option the method does not have.

    Notes
    -----
    *Budgets are exact.* Scores tied at the threshold are taken in a seeded random order, so a
    layer keeps exactly ``floor(density * n_l + 1/2)`` weights (``layerwise``) and the model
    exactly ``floor(density * n + 1/2)`` (``global``), whatever the ties. Same seed, same masks.
    Random numbers are drawn on the CPU, so ``random``, ``expander`` and ``magnitude`` give the
    same masks on CPU and GPU; gradient-based scores can differ between devices in their last
    bits, which may swap weights lying at the threshold.

    *Expander* gives every output unit of a layer ``floor`` or ``ceil`` of ``k_l / out`` kept
    weights (a conv: kept ``(in, kh, kw)`` taps per output channel), chosen uniformly at random;
    under ``global`` scope the total budget is split over layers in proportion to their size.

    *Iterative pruning.* With ``rounds = R``, round ``r`` keeps ``density ** (r / R)`` of each
    budget among the weights kept by round ``r - 1`` (pruning never revives a weight), after
    rescoring the network with the pruned weights at zero. SynFlow's 100 rounds are the paper's.

    *GraSP's sign.* Wang et al. score ``S(-w) = -w * (H g)`` and remove the highest scores;
    :func:`score` returns the keep-score ``w * (H g) = -S``.

    *SynFlow* scores the copy linearised as in :func:`~n2ngraph.pruning._scorers.prepare_synflow`
    (float64, ``|w|``, no biases, normalisation layers as identities) on one all-ones input.

    *Scoring conditions.* SNIP and GraSP run the copy in the model's own training mode (a new
    model is in training mode: BatchNorm uses batch statistics), with dropout off. Masks already
    on the model (``torch.nn.utils.prune`` buffers, parametrizations) are ignored: scores are
    those of the dense weights and the result replaces the old masks rather than refining them.

    *Layer collapse.* No guard is applied: at extreme densities a layer can lose every weight
    (SNIP, GraSP and magnitude under ``global`` scope tend to empty the largest layers first,
    Tanaka et al. 2020), and under ``layerwise`` scope a layer with ``density * n_l < 1/2``
    keeps nothing. The masks are returned as scored; check them with
    :func:`n2ngraph.metrics.layer_collapse`. SynFlow's iterative conservation avoids collapse.

    References
    ----------
    Lee et al. 2019, arXiv:1810.02340; Wang et al. 2020, arXiv:2002.07376; Tanaka et al. 2020,
    arXiv:2006.05467; Subramaniam & Sharma 2020, arXiv:2208.03662.

    Examples
    --------
    >>> from n2ngraph.models import lenet300
    >>> masks = prune(lenet300(), "random", 0.1, seed=0)
    >>> int(masks["1.weight"].sum()), masks["1.weight"].numel()
    (23520, 235200)
    """
    spec = _method(method)
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid scopes are {list(SCOPES)}")
    density = _density(density)
    modules = _modules(model)
    rounds, options = _options(method, spec, options)
    _check_data(method, spec, data)
    targets = {name: weight_of(m) for name, m in modules.items()}
    rng = np.random.default_rng(seed)

    if density == 1.0:
        masks = {n: torch.ones(w.shape, dtype=torch.bool) for n, w in targets.items()}
    elif spec.per_unit:
        masks = select_per_unit({n: w.shape for n, w in targets.items()}, density, scope, rng)
    else:
        device = next(iter(targets.values())).device
        scoring = _Scoring(model, spec, data, device)
        masks = None
        for r in range(1, rounds + 1):
            if masks is not None:
                scoring.apply(masks)
            scores = scoring.score(rng, options)
            masks = select_top(scores, density ** (r / rounds), scope, rng, current=masks)
        del scoring
    return {
        name: masks[name].to(device=w.device, dtype=torch.bool).contiguous()
        for name, w in targets.items()
    }


def score(
    model: nn.Module,
    method: str,
    *,
    data: Any = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    seed: int | None = 0,
    **options: Any,
) -> dict[str, torch.Tensor]:
    """One round of keep-scores of ``method`` (higher = keep), the quantity :func:`prune`
    thresholds.

    Parameters
    ----------
    model, method, data, seed, **options
        As in :func:`prune` (no ``rounds``).
    masks : dict name -> bool tensor, optional
        Score the network with these weights pruned (set to zero); names as in
        ``n2ngraph.masks.prunable_weights``. Missing names are dense.

    Returns
    -------
    dict
        ``{"<module path>.weight": tensor}`` of each weight's shape: ``|w * dL/dw|`` (snip),
        ``w * (H g)`` (grasp, the negative of the paper's ``S``), ``|w * dR/dw|`` (synflow),
        ``|w|`` (magnitude), uniform keys in [0, 1) (random and expander, float32 on the CPU).
        Model-based scores are on the weight's device, in float64 for synflow.
    """
    spec = _method(method)
    modules = _modules(model)
    if "rounds" in options:
        raise TypeError("score computes one round; 'rounds' is an option of prune")
    _, options = _options(method, spec, options)
    _check_data(method, spec, data)
    device = weight_of(next(iter(modules.values()))).device
    scoring = _Scoring(model, spec, data, device)
    if masks is not None:
        masks = validate_masks(model, masks)
        if spec.uses_model:
            full = {n: masks.get(n, torch.ones((), dtype=torch.bool)) for n in modules}
            scoring.apply(full)
        else:
            scores = scoring.score(np.random.default_rng(seed), options)
            return {n: s * masks[n].to(s.device) if n in masks else s for n, s in scores.items()}
    return scoring.score(np.random.default_rng(seed), options)

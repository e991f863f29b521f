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
``"global"`` keeps ``round(density * n)`` weights in total under one threshold. Layers named
in ``dense`` are kept whole and paid from that budget; ``granularity="channel"`` makes the
random methods keep whole conv kernels (:data:`CHANNEL_METHODS`). :func:`kept_count` predicts
the kept count of any call without pruning.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from n2ngraph.budget import apportion, check_density
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
from n2ngraph.pruning._threshold import (
    array_ops,
    budget,
    select_alive,
    select_channels,
    select_per_unit,
    select_subset,
)
from n2ngraph.recipes import GRANULARITIES, SCOPES

__all__ = [
    "CHANNEL_METHODS",
    "GRANULARITIES",
    "METHODS",
    "SCOPES",
    "PruningMethod",
    "budget",
    "kept_count",
    "prune",
    "score",
]

#: The methods that accept ``granularity="channel"`` (the random ones; scored methods rank
#: single weights and raise ValueError when asked for channels).
CHANNEL_METHODS = ("random", "expander")


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
    subset : bool
        The scores are i.i.d. uniform: one round keeps a uniformly random subset of each
        budget, drawn directly (``Generator.choice``) instead of scoring every weight.
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
    subset: bool = False
    prepare: Callable[[nn.Module], None] | None = None
    reference: str = ""

    def options(self) -> tuple[str, ...]:
        """Names of the method's keyword options (besides ``rounds``)."""
        params = inspect.signature(self.score).parameters.values()
        return tuple(
            p.name
            for p in params
            if p.kind is p.KEYWORD_ONLY and p.name not in ("data", "rng", "alive")
        )


#: Registry of pruning methods: name -> :class:`PruningMethod`.
METHODS: dict[str, PruningMethod] = {
    "random": PruningMethod(score_random, subset=True, reference="uniform random pruning"),
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


def _modules(model: Any) -> dict[str, nn.Module]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules = prunable_weights(model)
    if not modules:
        raise ValueError(
            f"{type(model).__name__} has no prunable weights (no nn.Linear or nn.Conv2d layer)"
        )
    return modules


#: How a round before the last treats the scores tied at its threshold (``ties``, see
#: :func:`prune`), as the ``drop_ties`` rule of the selection.
TIES = {"drop": "all", "drop-zero": "zero", "random": None}
#: The former ``zero_ties`` option's values as ``ties`` values.
_ZERO_TIES = {"drop": "drop-zero", "random": "random"}


def _options(name: str, spec: PruningMethod, options: dict) -> tuple[int, str, dict]:
    options = dict(options)
    rounds = options.pop("rounds", spec.rounds)
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if spec.per_unit and rounds != 1:
        raise ValueError(f"method {name!r} is one-shot; rounds must be 1, got {rounds}")
    if "zero_ties" in options and not spec.per_unit:
        zero_ties = options.pop("zero_ties")
        if zero_ties not in _ZERO_TIES:
            raise ValueError(f"zero_ties must be one of {list(_ZERO_TIES)}, got {zero_ties!r}")
        if "ties" in options:
            raise TypeError("pass ties or zero_ties (its former name), not both")
        warnings.warn(
            f"zero_ties={zero_ties!r} is deprecated; use ties={_ZERO_TIES[zero_ties]!r}",
            DeprecationWarning,
            stacklevel=3,
        )
        options["ties"] = _ZERO_TIES[zero_ties]
    ties = "drop" if spec.per_unit else options.pop("ties", "drop")
    if not isinstance(ties, str) or ties not in TIES:
        raise ValueError(f"ties must be one of {list(TIES)}, got {ties!r}")
    valid = spec.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        generic = ["rounds"] if spec.per_unit else ["rounds", "ties"]
        raise TypeError(
            f"method {name!r} got unknown options {unknown}; its options are {[*generic, *valid]}"
        )
    return int(rounds), ties, options


class _Scoring:
    """The tensors a method scores: a private copy's leaf weights, or the model's own weights
    (read-only) for methods that do not run the network."""

    def __init__(self, model: nn.Module, spec: PruningMethod, data: Any, device: torch.device):
        #: weights whose storage is the model's own (copied before any write)
        self.shared: set[str] = set()
        if spec.uses_model:
            # a method that edits the copy's weights (prepare) gets its own; others read the
            # model's weights through new leaf tensors
            self.model = scoring_copy(model, share_weights=spec.prepare is None)
            if spec.prepare is not None:
                spec.prepare(self.model)
            self.weights = {n: m.weight for n, m in prunable_weights(self.model).items()}
            if spec.prepare is None:
                self.shared = set(self.weights)
        else:
            self.model = model
            self.weights = {n: weight_of(m).detach() for n, m in prunable_weights(model).items()}
        self.spec = spec
        self.data = None
        if data is not None and (spec.needs_data or spec.uses_model):
            self.data = as_batches(data, device, limit=None if spec.needs_data else 1)

    def apply(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Zero the pruned weights of the private copy (no-op for read-only weights); layers
        missing from ``masks`` are left dense."""
        if not self.spec.uses_model:
            return
        with torch.no_grad():
            for name, mask in masks.items():
                w = self._writable(name)
                w.mul_(mask.to(w.device))

    def score(self, rng: np.random.Generator, options: dict) -> dict[str, torch.Tensor]:
        return self.spec.score(self.model, self.weights, data=self.data, rng=rng, **options)

    def alive_scores(
        self,
        rng: np.random.Generator,
        options: dict,
        alive: Mapping[str, torch.Tensor | None],
    ) -> dict[str, torch.Tensor]:
        """1-D keep-scores of the weights still alive (``alive[name]``: increasing flat
        indices, ``None`` for all), for the layers named in ``alive`` only."""
        if "alive" in inspect.signature(self.spec.score).parameters:
            return self.spec.score(
                self.model, self.weights, data=self.data, rng=rng, alive=alive, **options
            )
        scores = self.score(rng, options)
        return {
            n: scores[n].detach().flatten() if idx is None else scores[n].detach().flatten()[idx]
            for n, idx in alive.items()
        }

    def prune(self, pruned: Mapping[str, torch.Tensor]) -> None:
        """Zero the weights at the flat indices ``pruned[name]`` of the private copy."""
        if not self.spec.uses_model:
            return
        with torch.no_grad():
            for name, idx in pruned.items():
                if idx.numel():
                    self._writable(name).view(-1).index_fill_(0, idx, 0)

    def _writable(self, name: str) -> torch.Tensor:
        """The copy's weight ``name``, given storage of its own first if it shares the model's."""
        w = self.weights[name]
        if name in self.shared:
            w.data = w.data.clone()
            self.shared.discard(name)
        return w


def _check_data(name: str, spec: PruningMethod, data: Any) -> None:
    if spec.needs_data and data is None:
        raise ValueError(
            f"method {name!r} needs data: pass data=(inputs, targets) or an iterable of such "
            "batches (a DataLoader)"
        )


# ---------------------------------------------------------------------------- budgets
def _layer_names(modules: Mapping[str, nn.Module], items: Any, what: str) -> frozenset[str]:
    """``items`` (module paths, or weight names as in ``prunable_weights``) as weight names;
    ``what`` names the argument in errors (``"dense"``, ``"layers"``)."""
    if isinstance(items, str):
        raise TypeError(f"{what} must be a sequence of module paths, got the string {items!r}")
    try:
        items = list(items)
    except TypeError:
        raise TypeError(
            f"{what} must be a sequence of module paths, got {type(items).__name__}"
        ) from None
    paths = {n.removesuffix(".weight") if n != "weight" else "": n for n in modules}
    out = set()
    for item in items:
        if item in modules:
            out.add(item)
        elif item in paths:
            out.add(paths[item])
        else:
            raise ValueError(
                f"{what} layer {item!r} is not a prunable layer of the model; valid module paths "
                f"are {list(paths)}"
            )
    return frozenset(out)


def _selected(model: Any, layers: Any) -> dict[str, nn.Module]:
    """The prunable weights of ``model`` that a call prunes and counts: all of them
    (``layers=None``) or those named in ``layers``, in module order."""
    modules = _modules(model)
    if layers is None:
        return modules
    names = _layer_names(modules, layers, "layers")
    if not names:
        raise ValueError("layers is empty; name at least one prunable layer (or pass layers=None)")
    return {n: m for n, m in modules.items() if n in names}


def _dense_names(modules: Mapping[str, nn.Module], dense: Any, everything: Mapping[str, nn.Module]
                 ) -> frozenset[str]:
    """``dense`` as weight names among ``modules`` (the selected layers of ``everything``)."""
    names = _layer_names(everything, dense, "dense")
    outside = sorted(names - set(modules))
    if outside:
        raise ValueError(f"dense layers {outside} are not among the layers pruned ({list(modules)})")
    return names


def _check_layout(scope: Any, granularity: Any) -> None:
    """Check ``scope`` (:data:`SCOPES`) and ``granularity`` (:data:`GRANULARITIES`), the
    vocabularies of :mod:`n2ngraph.recipes`, and that channel granularity is layerwise."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid scopes are {list(SCOPES)}")
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"unknown granularity {granularity!r}; valid granularities are {list(GRANULARITIES)}"
        )
    if granularity == "channel" and scope != "layerwise":
        raise ValueError(
            "granularity='channel' budgets every layer in channel pairs and needs "
            f"scope='layerwise', got scope={scope!r}"
        )


@dataclass(frozen=True)
class _Plan:
    """Exact budgets of one call of :func:`prune` (shared with :func:`kept_count`).

    ``free`` are the layers that are pruned, ``dense`` those kept whole; ``density`` is the
    density of the free layers (the input density when nothing is dense); ``total`` the kept
    weights of the free layers under ``global`` scope, ``layers`` their kept weights per layer
    under ``layerwise`` scope (for channel granularity, whole kernels: ``pairs`` per conv).
    """

    shapes: dict[str, torch.Size]
    dense: frozenset[str]
    density: float
    scope: str
    total: int
    layers: dict[str, int]
    pairs: dict[str, int]
    in_channels: dict[str, int]

    @property
    def free(self) -> list[str]:
        return [n for n in self.shapes if n not in self.dense]

    @property
    def sizes(self) -> dict[str, int]:
        """Weights of each free layer."""
        return {n: math.prod(self.shapes[n]) for n in self.free}

    @property
    def budgets(self) -> int | dict[str, int]:
        """The exact kept weights of the free layers: ``total`` under ``global`` scope, one
        threshold over them; ``layers`` under ``layerwise`` scope."""
        return self.total if self.scope == "global" else self.layers

    def kept(self) -> int:
        dense = sum(math.prod(self.shapes[n]) for n in self.dense)
        return dense + (self.total if self.scope == "global" else sum(self.layers.values()))


def _plan(
    modules: Mapping[str, nn.Module],
    density: float,
    scope: str,
    granularity: str,
    dense: Any,
    everything: Mapping[str, nn.Module] | None = None,
) -> _Plan:
    shapes = {n: weight_of(m).shape for n, m in modules.items()}
    dense_names = _dense_names(modules, dense, modules if everything is None else everything)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    n_dense = sum(sizes[n] for n in dense_names)
    n_free = sum(sizes.values()) - n_dense
    free = [n for n in shapes if n not in dense_names]
    if not dense_names:
        free_density, total = density, budget(n_free, density)
    else:
        overall = budget(sum(sizes.values()), density)
        if n_dense > overall:
            raise ValueError(
                f"the dense layers {sorted(dense_names)} hold {n_dense:,} weights, more than the "
                f"budget of {overall:,} at density {density:g}; lower their number or raise the "
                "density"
            )
        total = overall - n_dense
        free_density = total / n_free if n_free else 1.0
    layers: dict[str, int] = {}
    pairs: dict[str, int] = {}
    in_channels: dict[str, int] = {}
    for name in free:
        module = modules[name]
        if granularity == "channel" and isinstance(module, nn.Conv2d):
            shape = shapes[name]
            pairs[name] = budget(shape[0] * shape[1], free_density)
            in_channels[name] = module.in_channels
            layers[name] = pairs[name] * math.prod(shape[2:])
        else:
            layers[name] = budget(sizes[name], free_density)
    return _Plan(shapes, dense_names, free_density, scope, total, layers, pairs, in_channels)


# ------------------------------------------------------------------------------ public
def kept_count(
    model: nn.Module,
    density: float,
    *,
    scope: str = "layerwise",
    granularity: str = "weight",
    dense: Any = (),
    layers: Any = None,
) -> int:
    """Weights that :func:`prune` keeps with the same arguments, whatever the method (for
    ``granularity="channel"``: whatever method of :data:`CHANNEL_METHODS`): budgets are exact.

    With nothing dense, ``layerwise`` keeps ``sum_l budget(n_l, density)`` and ``global``
    ``budget(sum_l n_l, density)`` (:func:`budget` rounds half up), the sums over the pruned
    layers (all prunable layers, or those named in ``layers``). Dense layers are paid from
    ``budget(N, density)``; see :func:`prune` for the rest.

    Examples
    --------
    LeNet-300-100 has 235,200 + 30,000 + 1,000 weights; at density 0.1 each layer keeps a tenth:

    >>> from n2ngraph.models import lenet300
    >>> kept_count(lenet300(), 0.1)
    26620
    >>> kept_count(lenet300(), 0.1, dense=["5"])  # the classifier whole, paid from the budget
    26620
    >>> kept_count(lenet300(), 0.1, layers=["1", "3"])  # the classifier outside the budget
    26520
    """
    _check_layout(scope, granularity)
    density = check_density(density)
    modules = _selected(model, layers)
    return _plan(modules, density, scope, granularity, dense, _modules(model)).kept()


def prune(
    model: nn.Module,
    method: str,
    density: float,
    *,
    data: Any = None,
    scope: str = "layerwise",
    seed: int | None = 0,
    granularity: str = "weight",
    dense: Any = (),
    layers: Any = None,
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
    granularity : {"weight", "channel"}
        ``"channel"`` (``random`` and ``expander`` only, ``layerwise`` scope, one round): every
        conv layer keeps whole kernels, a kept channel pair ``(o, i)`` keeps all its taps; see
        Notes. Linear layers are pruned weight by weight either way. The scored methods
        (``magnitude``, ``snip``, ``grasp``, ``synflow``) rank single weights and raise
        ``ValueError`` for ``"channel"`` (:data:`CHANNEL_METHODS` lists the ones that accept it).
    dense : sequence of str
        Layers kept whole, by module path (``"features.0"``) or weight name
        (``"features.0.weight"``), as in :func:`n2ngraph.masks.prunable_weights`. Their weights
        are paid from the total budget; see Notes.
    layers : sequence of str, optional
        Prune only these layers (module paths or weight names): the budget, the ``global``
        threshold and the result cover them alone, and the other prunable layers get no mask
        (they stay as they are wherever masks are applied). :func:`n2ngraph.pipeline.variant`
        passes the layers of the traced graph, so that weight layers the forward never reaches
        (e.g. auxiliary heads in eval mode) take no part in the budget. Default: every
        prunable layer.
    **options
        ``rounds`` (any method but ``expander``; default 100 for ``synflow``, 1 otherwise);
        ``loss`` (``snip``, ``grasp``: ``loss(outputs, targets)``, default cross-entropy);
        ``temperature`` (``grasp``, default 200 as in the authors' code; 1 gives the plain
        equation); ``input_shape`` (``synflow``, per-sample input shape); ``dtype``
        (``synflow``: ``"float32"``, the default, or ``"float64"``; see Notes); ``ties``
        (any method but ``expander``; ``"drop"``, the default, ``"drop-zero"`` or
        ``"random"``: how a round before the last treats scores tied at its threshold, see
        Notes; ``zero_ties``, its former name, is deprecated).

    Returns
    -------
    dict
        ``{"<module path>.weight": bool tensor}``, one per prunable weight in module order, of
        the weight's shape and on its device; ``True`` = kept. With ``layers``, only those.

    Raises
    ------
    ValueError
        Unknown method, scope or granularity (the valid names are listed), density outside
        (0, 1], ``data`` missing for ``snip``/``grasp``, a model without Linear/Conv2d layers,
        ``granularity="channel"`` with a scored method, ``global`` scope or ``rounds > 1``, an
        unknown ``dense`` or ``layers`` entry, empty ``layers``, dense layers outside
        ``layers`` or holding more weights than the budget.
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

    *Dense layers.* The model keeps ``K = round(density * N)`` weights in all, ``N`` the
    prunable weights. The layers in ``dense`` keep their ``N_dense`` weights and the others share
    ``K - N_dense``: under ``layerwise`` scope each of them keeps ``round(d' * n_l)`` with
    ``d' = (K - N_dense) / (N - N_dense)``, under ``global`` scope exactly ``K - N_dense`` under
    one threshold over them. ``ValueError`` when ``N_dense > K``. With nothing dense,
    ``d' = density``. Iterative methods keep the dense layers whole in every round.

    *Channel granularity.* A conv weight ``(C_out, C_in / groups, kh, kw)`` keeps
    ``round(d' * C_out * C_in / groups)`` channel pairs, each with its whole ``kh x kw``
    kernel: a uniformly random set of pairs (``random``), or (``expander``) pairs with equal
    fan-in (every output channel keeps ``floor`` or ``ceil`` of ``pairs / C_out`` input
    channels) when ``C_in > C_out``, else equal fan-out (every input channel of the weight
    feeds ``floor`` or ``ceil`` of ``pairs / (C_in / groups)`` output channels), so that the
    narrower side of the layer is covered evenly. The layer then keeps ``pairs * kh * kw``
    weights, which :func:`kept_count` predicts.

    *Expander* gives every output unit of a layer ``floor`` or ``ceil`` of ``k_l / out`` kept
    weights (a conv: kept ``(in, kh, kw)`` taps per output channel), chosen uniformly at random;
    under ``global`` scope the total budget is split over layers in proportion to their size.

    *Iterative pruning.* With ``rounds = R``, round ``r`` rescores the network with the
    weights pruned so far at zero and keeps, among the weights still alive (pruning never
    revives a weight), ``n - int((1 - d_r) * n)`` of each budget's ``n`` weights (a layer's, or
    all free weights under ``global`` scope), ``d_r = density ** (r / R)`` (the exponential
    schedule; SynFlow's 100 rounds are the paper's). This is Synaptic-Flow's rule (the authors'
    code counts the weights to remove, ``int`` truncating), not ``round(d_r * n)``: a one-weight
    difference in one round changes the next round's scores, and over 100 rounds such
    differences compound into visibly different masks; with
    the reference's rule the masks are the reference's. The last round keeps the exact budget
    above. Each round thresholds only the alive weights' scores and zeroes in the scoring copy
    only the weights it prunes.

    *Ties* (rounds before the last). Synaptic-Flow's code prunes in round ``r`` every score
    at or below the ``k_r``-th smallest (``k_r = int((1 - d_r) * n)``), so a group of equal
    scores straddling the round's budget goes whole and the round keeps fewer weights than
    its budget. ``ties="drop"`` (default) does the same. Such ties are common: a weight
    scoring exactly zero carries no signal (SynFlow: no path flow), and on VGG-16 with
    32 x 32 inputs the last conv layer's 1,310,720 taps that no max-pool window selects all
    score zero and go in round 1; equal non-zero float32 scores among 14.7M weights meet a
    round's threshold every few rounds, and keeping one of them at random where the
    reference drops both changes every later round (VGG-16 at 1%: Jaccard 0.925 against the
    reference's masks with such ties broken at random; 1.0000 with its rule). ``ties="drop-zero"`` drops only zero-scored
    ties and breaks others at random; ``ties="random"`` keeps each round's budget exactly,
    taking tied weights at random. No round keeps fewer than the final budget (tied weights
    fill up to it, at random), and the last round is exact either way: where the reference
    ends with fewer weights than its budget (more zero-flow weights than pruned ones),
    n2ngraph keeps the same positive-flow weights plus zero-flow ones drawn at random.

    *GraSP's sign.* Wang et al. score ``S(-w) = -w * (H g)`` and remove the highest scores;
    :func:`score` returns the keep-score ``w * (H g) = -S``.

    *SynFlow* scores the copy linearised as in :func:`~n2ngraph.pruning._scorers.prepare_synflow`
    (``|w|``, no biases, BatchNorm as its evaluation-mode scale ``|gamma| / sqrt(|var| + eps)``
    as Synaptic-Flow applies it, other normalisation layers as identities) on one all-ones
    input, in float32 as Synaptic-Flow's code does (``dtype="float64"``: float64; a round that
    overflows float32 is computed again in float64, and so are the later rounds: see
    :func:`~n2ngraph.pruning._scorers.score_synflow`). The reference takes ``|b|`` for biases
    and ``|beta|``, ``|running_mean|`` for BatchNorm shifts where n2ngraph zeroes them; at
    initialisation (zero biases, unit statistics) that is the same network, computed by the
    same kernels, so each round's scores are the reference's bit for bit and, with its round
    budgets and ties, so are the masks (measured against Synaptic-Flow @ 9dfa57a, global
    scope: identical on ResNet-20 at 1% and 10% and on VGG-16 at 1%; on VGG-16 at 10% the
    reference's last round keeps one weight more, ``n - int((1 - d) n)`` against the exact
    ``round(d n)``, and n2ngraph's masks are its masks less that weight. The reference's own
    float32 and float64 runs agree at Jaccard 0.905 on VGG-16 at 1%: near-ties compound over
    100 rounds).

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
    _check_layout(scope, granularity)
    if granularity == "channel" and method not in CHANNEL_METHODS:
        raise ValueError(
            f"granularity='channel' applies to the random methods {list(CHANNEL_METHODS)}; "
            f"{method!r} ranks single weights: pass granularity='weight'"
        )
    density = check_density(density)
    modules = _selected(model, layers)
    rounds, ties, options = _options(method, spec, options)
    if granularity == "channel" and rounds != 1:
        raise ValueError(f"granularity='channel' is one-shot; rounds must be 1, got {rounds}")
    _check_data(method, spec, data)
    targets = {name: weight_of(m) for name, m in modules.items()}
    rng = np.random.default_rng(seed)

    plan = _plan(modules, density, scope, granularity, dense, _modules(model))
    if density == 1.0:
        masks = {n: torch.ones(shape, dtype=torch.bool) for n, shape in plan.shapes.items()}
    else:
        masks = {n: torch.ones(plan.shapes[n], dtype=torch.bool) for n in plan.dense}
        if granularity == "channel":
            masks.update(_prune_channels(spec, plan, rng))
        elif spec.per_unit:
            masks.update(_prune_per_unit(plan, rng))
        elif spec.subset and rounds == 1:
            masks.update(_prune_subset(plan, rng))
        else:
            masks.update(_prune_scored(model, spec, plan, rounds, ties, data, rng, options))
    return {
        name: masks[name].to(device=w.device, dtype=torch.bool).contiguous()
        for name, w in targets.items()
    }


def _prune_per_unit(plan: _Plan, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Expander masks (equal fan-in) of the free layers."""
    shapes = {n: plan.shapes[n] for n in plan.free}
    if plan.scope == "layerwise":
        budgets = plan.layers
    else:
        sizes = list(plan.sizes.values())
        budgets = dict(zip(shapes, apportion(plan.total, sizes, rng=rng).tolist()))
    return select_per_unit(shapes, budgets, rng)


def _prune_subset(plan: _Plan, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Uniformly random masks of the free layers: ``k`` of ``n`` indices drawn without
    replacement per layer (``layerwise``), or over all free weights at once (``global``), by
    :func:`~n2ngraph.pruning._threshold.select_subset` (no key per weight)."""
    shapes = {n: plan.shapes[n] for n in plan.free}
    sizes = plan.sizes
    if plan.scope == "global":
        flat = select_subset(sum(sizes.values()), plan.total, rng)
        parts, start = {}, 0
        for name, n in sizes.items():
            parts[name], start = flat[start : start + n], start + n
    else:
        parts = {name: select_subset(n, plan.layers[name], rng) for name, n in sizes.items()}
    return {name: torch.from_numpy(parts[name]).reshape(shapes[name]) for name in shapes}


def _split(idx: torch.Tensor | None, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alive, pruned)`` flat indices after a round: ``idx`` the alive indices before it
    (``None``: all), ``kept`` a bool over them. numpy on the CPU (``torch.nonzero`` and boolean
    indexing are several times slower there; :func:`~n2ngraph.pruning._threshold.array_ops`)."""
    k, ops = array_ops(kept)
    if idx is None:
        alive, pruned = ops.where(k), ops.where(~k)
    else:
        i, _ = array_ops(idx)
        alive, pruned = i[k], i[~k]
    return ops.tensor(alive), ops.tensor(pruned)


def _prune_scored(
    model: nn.Module,
    spec: PruningMethod,
    plan: _Plan,
    rounds: int,
    ties: str,
    data: Any,
    rng: np.random.Generator,
    options: dict,
) -> dict[str, torch.Tensor]:
    """Masks of the free layers by a scored method, in ``rounds`` rounds.

    Each layer's alive weights are held as increasing flat indices; a round scores and
    thresholds only those (the dead ones would score zero, or ``-inf`` in a full array, and are
    never kept again) and zeroes in the scoring copy only the weights it prunes.
    """
    free = plan.free
    device = weight_of(next(iter(prunable_weights(model).values()))).device
    scoring = _Scoring(model, spec, data, device)
    final = plan.budgets
    alive: dict[str, torch.Tensor | None] = dict.fromkeys(free)
    sizes = plan.sizes
    for r in range(1, rounds + 1):
        values = scoring.alive_scores(rng, options, alive)
        budgets = _round_budgets(plan, r, rounds)
        # Synaptic-Flow prunes every score <= its threshold in a round that prunes at all.
        rule = None if r == rounds else TIES[ties]
        drop: str | None | dict[str, str | None]
        if plan.scope == "global":
            drop = rule if budgets < sum(sizes.values()) else None
        else:
            drop = {n: rule if budgets[n] < sizes[n] else None for n in free}
        keep = select_alive(values, budgets, rng, drop_ties=drop, at_least=final)
        del values
        if r == rounds:
            break
        pruned = {}
        for name in free:
            alive[name], pruned[name] = _split(alive[name], keep[name])
        scoring.prune(pruned)
        del pruned
    del scoring
    masks = {}
    for name in free:
        if alive[name] is None:
            masks[name] = keep[name].reshape(plan.shapes[name])
            continue
        idx = alive[name][keep[name].to(alive[name].device)]
        flat = torch.zeros(sizes[name], dtype=torch.bool, device=idx.device)
        flat[idx] = True
        masks[name] = flat.reshape(plan.shapes[name])
    return masks


def _round_budgets(plan: _Plan, r: int, rounds: int) -> int | dict[str, int]:
    """Budgets of round ``r`` of ``rounds`` under the exponential schedule.

    Before the last round, ``n - int((1 - d ** (r / rounds)) * n)`` of ``n`` free weights (a
    layer's, or all of them under ``global`` scope), ``d`` the free layers' density: Synaptic-
    Flow's rule (it counts the weights to remove, truncated). The last round keeps the plan's
    exact budgets (``round(d * n)``).
    """
    if r == rounds:
        return plan.budgets
    d = plan.density ** (r / rounds)

    def keep(n: int) -> int:
        return n - int((1.0 - d) * n)

    if plan.scope == "global":
        return keep(sum(plan.sizes.values()))
    return {n: keep(size) for n, size in plan.sizes.items()}


def _prune_channels(
    spec: PruningMethod, plan: _Plan, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """Random (or expander) masks whose conv layers keep whole kernels (``plan.pairs``)."""
    masks: dict[str, torch.Tensor] = {}
    for name in plan.free:
        shape = plan.shapes[name]
        if name in plan.pairs:
            equal = None
            if spec.per_unit:
                equal = "in" if plan.in_channels[name] > shape[0] else "out"
            masks[name] = select_channels(shape, plan.pairs[name], rng, equal=equal)
        elif spec.per_unit:
            masks.update(select_per_unit({name: shape}, {name: plan.layers[name]}, rng))
        else:
            keep = select_subset(math.prod(shape), plan.layers[name], rng)
            masks[name] = torch.from_numpy(keep).reshape(shape)
    return masks


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
        Model-based scores are on the weight's device; synflow's in float32 (float64 with
        ``dtype="float64"`` or where float32 overflows).

    Examples
    --------
    >>> layer = nn.Linear(3, 2)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))
    >>> score(layer, "magnitude")["weight"].tolist()
    [[1.0, 2.0, 0.5], [0.0, 3.0, 1.0]]
    >>> # keep 3 of 6: the 3, the 2 and one of the two 1s (a tie, drawn with the seed)
    >>> prune(layer, "magnitude", 0.5, seed=0)["weight"].tolist()
    [[False, True, False], [False, True, True]]
    """
    spec = _method(method)
    modules = _modules(model)
    if "rounds" in options:
        raise TypeError("score computes one round; 'rounds' is an option of prune")
    _, _, options = _options(method, spec, options)
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

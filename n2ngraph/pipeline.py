"""The whole recipe in one call: prune a model, trace it, add N2NSkip connections.

:func:`variant` builds the graph a table row stands for, plain (``skips=False``: the RP / CSP
baseline) or with N2NSkip connections at the same total budget (``skips=True``), under one named
:class:`~n2ngraph.recipes.Recipe` (``docs/recipes.md``). :func:`dense_layer_names` finds the
layers a recipe keeps dense by their role in the traced graph, :func:`graph_layers` the layers
the budget covers (those in the traced graph), and :func:`calibration_batch`
draws the batch that data-driven pruners (SNIP, GraSP) score on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

from n2ngraph.budget import check_density
from n2ngraph.graph import NetworkGraph
from n2ngraph.recipes import DENSE_ROLES, Recipe, get_recipe

__all__ = ["RANDOM_METHODS", "VARIANTS", "calibration_batch", "dense_layer_names", "graph_layers",
           "variant"]

#: Methods whose masks are random (no score): always pruned layerwise, and the ones a recipe's
#: ``granularity`` applies to.
RANDOM_METHODS = ("random", "expander")

#: What a graph built by :func:`variant` is, recorded as its provenance ``"variant"`` and used as
#: the ``variant`` column of every sweep table: the plain pruned network (``skips=False``) or the
#: recipe's N2NSkip variant at the same budget (``skips=True``). The pruning method is recorded
#: apart, as ``"method"``.
VARIANTS = ("plain", "n2nskip")


def _role_blocks(graph: NetworkGraph, role: str) -> list:
    """The sequential blocks that play ``role`` in ``graph`` (see :func:`dense_layer_names`)."""
    from n2ngraph.n2nskip import _sum_groups, chain_depths

    seq = [b for b in graph.blocks if b.kind == "sequential" and not b.spec.added_by]
    if role == "stem":
        convs = [b for b in seq if b.mask.ndim == 4]
        return convs[:1]
    if role == "classifier":
        out = graph.groups[-1].name
        return [b for b in seq if b.dst == out]
    depth = chain_depths(graph)
    found = []
    for s in _sum_groups(graph):
        into = [b for b in graph.blocks if b.dst == s and not b.spec.added_by]
        deepest = max(depth[b.src] for b in into)
        found += [b for b in into if b.kind == "sequential" and depth[b.src] < deepest]
    return found


def dense_layer_names(model_or_graph: Any, roles: Iterable[str]) -> tuple[str, ...]:
    """Module paths of the layers that play ``roles`` in a conv net, found on its traced graph.

    Roles (names never matter, only the graph):

    - ``"stem"``: the first conv (the first ``sequential`` block with a 4-D mask);
    - ``"classifier"``: the weight layer(s) into the output group (the logits);
    - ``"downsample"``: a ``sequential`` block into a residual sum that runs parallel to a deeper
      path into the same sum (a ResNet 1x1 projection shortcut).

    Parameters
    ----------
    model_or_graph : nn.Module or NetworkGraph
        A model is traced dense (:func:`n2ngraph.trace.to_graph`).
    roles : iterable of {"stem", "downsample", "classifier"}

    Returns
    -------
    tuple of str
        Module paths (``block.spec.module``) in graph order, each once. Empty for a network
        without conv layers: recipes keep layers dense on conv nets only.

    Raises
    ------
    ValueError
        An unknown role (the valid ones are listed).
    """
    roles = tuple(roles) if not isinstance(roles, str) else (roles,)
    bad = [r for r in roles if r not in DENSE_ROLES]
    if bad:
        raise ValueError(f"unknown layer role(s) {bad}; valid roles are {list(DENSE_ROLES)}")
    if isinstance(model_or_graph, NetworkGraph):
        graph = model_or_graph
    else:
        from n2ngraph.trace import to_graph

        graph = to_graph(model_or_graph)
    if not roles or not any(b.kind == "sequential" and b.mask.ndim == 4 for b in graph.blocks):
        return ()
    picked = {id(b) for r in roles for b in _role_blocks(graph, r)}
    return tuple(dict.fromkeys(b.spec.module or b.name for b in graph.blocks if id(b) in picked))


def variant(model, method: str, density: float, *, recipe: str | Recipe = "paper",
            skips: bool = True, seed: int = 0, data=None, example_input=None) -> NetworkGraph:
    """The graph of ``model`` pruned by ``method`` at ``density`` under ``recipe``, with or without
    N2NSkip connections at the same total budget.

    Parameters
    ----------
    model : nn.Module
        The dense reference (not modified).
    method : str
        A pruning method (:data:`n2ngraph.pruning.METHODS`); the paper's RP is ``"expander"``,
        its CSP ``"snip"``.
    density : float in (0, 1]
        Total kept fraction of the reference's weights (sequential + skips).
    recipe : str or Recipe
        A name in :data:`n2ngraph.recipes.RECIPES` (``"paper"``, ``"all-pairs"``) or a Recipe.
    skips : bool
        ``False``: the plain pruned graph at ``density`` (the baseline row). ``True``: prune at
        ``density * (1 - f)`` (``f = recipe.n2nskip_fraction``) and add N2NSkip connections
        holding exactly the difference, so both rows keep the same number of weights. When
        the recipe's skip blocks cannot hold that share even dense (e.g. VGG19's 4 stage skips
        hold 9.5% of its weights, less than the 25% of a 50% variant), they are filled and the
        network is pruned to the density that keeps the rest, with a warning; provenance
        ``n2nskip_fraction_effective`` records the share the skips got.
    seed : int
        Seed of the pruning and of the skip positions and initial weights.
    data : (inputs, targets) or iterable of batches, optional
        For data-driven methods (``snip``, ``grasp``); see :func:`calibration_batch`.
    example_input : Tensor, optional
        Passed to :func:`n2ngraph.trace.trace`.

    Returns
    -------
    NetworkGraph
        ``num_params`` equals the plain graph's at ``density`` (same method, seed and recipe):
        budgets are exact, so that count ``P`` is known without pruning
        (:func:`n2ngraph.pruning.kept_count`) and the skips get ``P - P_seq`` weights.
        Provenance records ``recipe`` (name), ``recipe_fields``, ``model``, ``method``,
        ``density``, ``seed``, ``scope``, ``granularity``, ``dense_layers`` (module paths),
        ``sequential_params``, ``sequential_density``, ``n2nskip_fraction`` (requested),
        ``n2nskip_fraction_effective`` (skips only), ``outside_graph`` (module paths of the
        weight layers outside the graph, see Notes) and ``variant`` (``"plain"`` or
        ``"n2nskip"``, :data:`VARIANTS`).

    Notes
    -----
    How the recipe acts: random methods (``random``, ``expander``) prune layerwise with the
    recipe's ``granularity``; score-based methods use the recipe's ``scope`` at weight
    granularity. On conv nets the layers of ``recipe.dense_layers``
    (:func:`dense_layer_names`) are kept whole and paid from the budget; the skips follow
    ``wiring``, ``skip_kernel``, ``skip_order``, ``skip_downsample`` and, for conv skips, ``granularity``
    (:func:`n2ngraph.n2nskip.add_n2nskip`).

    The budget is the graph's: ``density`` is the kept fraction of the weights of the layers in
    the traced graph (:func:`graph_layers`), and pruning and :func:`~n2ngraph.pruning.kept_count`
    cover exactly those layers. A weight layer the traced forward never reaches (an auxiliary
    head in eval mode, a layer the forward skips) takes no part in it: it is left unpruned, named
    in a warning and in provenance ``outside_graph``, and its weights are neither counted nor
    given to the skips. Trace the mode that uses it (``model.train()``) to have it in the graph.

    Raises
    ------
    ValueError
        Unknown recipe or method, density outside (0, 1], dense layers larger than the budget,
        a skip budget the wiring cannot hold, or a weight layer applied more than once in the
        forward (:func:`graph_layers`).
    TypeError
        ``density`` is not a real number (:func:`n2ngraph.budget.check_density`).

    Examples
    --------
    Plain random pruning (RP) and N2NSkip-RP at 10% keep the same number of weights:

    >>> from n2ngraph import models
    >>> model = models.lenet300()
    >>> plain = variant(model, "expander", 0.1, skips=False, seed=0)
    >>> skipped = variant(model, "expander", 0.1, seed=0)
    >>> skipped.num_params == plain.num_params
    True
    >>> plain.provenance["variant"], skipped.provenance["variant"]
    ('plain', 'n2nskip')
    """
    from n2ngraph.n2nskip import _add_n2nskip_count, skip_capacity
    from n2ngraph.pruning import kept_count, prune
    from n2ngraph.trace import trace, with_masks

    r = get_recipe(recipe)
    density = check_density(density)
    is_random = method in RANDOM_METHODS
    scope = "layerwise" if is_random else r.scope
    granularity = r.granularity if is_random else "weight"
    reference = trace(model, example_input=example_input).graph
    layers, outside = graph_layers(model, reference)
    if outside:
        warnings.warn(_outside_message(model, outside, reference.provenance.get("token_mixing", ())),
                      stacklevel=2)
    dense = dense_layer_names(reference, r.dense_layers) if r.dense_layers else ()
    opts = {"scope": scope, "granularity": granularity, "dense": dense, "layers": layers}
    f = r.n2nskip_fraction if skips else 0.0
    seq_density = density * (1 - f)
    _check_dense_fits(model, r, dense, layers, density, seq_density)
    masks = prune(model, method, seq_density, data=data, seed=seed, **opts)
    graph = with_masks(reference, model, masks)
    prov = {"model": graph.provenance.get("model", type(model).__name__), "method": method,
            "density": density, "seed": seed, "scope": scope, "granularity": granularity,
            "dense_layers": list(dense), "recipe": r.name, "recipe_fields": r.to_json(),
            "sequential_params": graph.num_params, "sequential_density": seq_density,
            "n2nskip_fraction": f,
            "outside_graph": [n.removesuffix(".weight") for n in outside]}
    if not skips:
        return graph.replace(provenance={**graph.provenance, **prov, "variant": "plain"})
    target = kept_count(model, density, **opts)
    n_skip = target - graph.num_params
    if n_skip < 0:
        raise ValueError(
            f"pruning at {seq_density:.4g} kept {graph.num_params} weights, more than the "
            f"{target} kept at {density}; the method's rounding makes the budget infeasible"
        )
    layout = {"wiring": r.wiring, "skip_kernel": r.skip_kernel, "skip_order": r.skip_order}
    capacity = skip_capacity(graph, **layout)
    if n_skip > capacity:
        if capacity == 0:
            raise ValueError(f"wiring {r.wiring!r} finds no skip pairs in this model; use "
                             "skips=False or another recipe")
        seq_density = _fill_density(model, density, seq_density, target - capacity, opts)
        warnings.warn(
            f"recipe {r.name!r}: its skip blocks hold only {capacity:,} weights, less than "
            f"{n_skip:,} ({f:g} of the budget at density {density:g}); the skips are filled and "
            f"the network is pruned to {seq_density:.4g} instead of {density * (1 - f):.4g}, "
            "so the total stays the plain network's", stacklevel=2)
        masks = prune(model, method, seq_density, data=data, seed=seed, **opts)
        graph = with_masks(reference, model, masks)
        n_skip = target - graph.num_params
        prov.update(sequential_params=graph.num_params, sequential_density=seq_density)
    prov["n2nskip_fraction_effective"] = n_skip / target if target else 0.0
    return _add_n2nskip_count(
        graph, n_skip, seed=seed, granularity=r.granularity, skip_downsample=r.skip_downsample,
        provenance={**prov, "variant": "n2nskip"}, **layout,
    )


def graph_layers(model, graph: NetworkGraph) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The prunable weights of ``model`` inside and outside its traced ``graph``.

    Parameters
    ----------
    model : nn.Module
    graph : NetworkGraph
        Traced from ``model`` (its traced ``sequential`` blocks name their module by
        ``spec.module``; blocks added by a graph edit are ignored).

    Returns
    -------
    inside, outside : tuple of str
        Weight names as in :func:`n2ngraph.masks.prunable_weights` (``"features.0.weight"``), in
        module order: the layers the graph holds (what :func:`~n2ngraph.pruning.prune` and
        :func:`~n2ngraph.pruning.kept_count` take as ``layers``) and those it does not.

    Raises
    ------
    ValueError
        A weight layer is applied more than once in the forward (the graph has one block per
        call, pruning one mask per weight, so their budgets would differ), or a block names a
        module that is not a prunable layer of ``model``.
    """
    from collections import Counter

    from n2ngraph.masks import prunable_weights, weight_name

    weights = prunable_weights(model)
    paths = [b.spec.module if b.spec.module is not None else b.name for b in graph.blocks
             if b.kind == "sequential" and not b.spec.added_by]
    reused = sorted(p for p, k in Counter(paths).items() if k > 1)
    if reused:
        raise ValueError(f"weight layers {reused} are applied more than once in the forward; the "
                         "graph has one block per call but pruning one mask per weight, so their "
                         "budgets cannot agree (n2ngraph supports each weight layer used once)")
    names = {weight_name(p) for p in paths}
    unknown = sorted(names - set(weights))
    if unknown:
        raise ValueError(f"the graph's layers {unknown} are not prunable weights of "
                         f"{type(model).__name__}; was the graph traced from this model?")
    return (tuple(n for n in weights if n in names), tuple(n for n in weights if n not in names))


def _outside_message(model, outside: tuple[str, ...], token_mixing: Iterable[str] = ()) -> str:
    """The warning for weight layers outside the graph: token-mixing Linear layers (they mix
    positions, not features, so the graph has no edges for them; docs/design.md, "Tokens") and
    layers the traced forward never reaches (e.g. auxiliary heads), each with its weight count."""
    from n2ngraph.masks import prunable_weights, weight_name, weight_of

    weights = prunable_weights(model)
    mixing = {weight_name(p) for p in token_mixing}

    def listed(names):
        count = sum(weight_of(weights[n]).numel() for n in names)
        return f"{[n.removesuffix('.weight') for n in names]} ({count:,} weights)"

    parts = []
    tokens = [n for n in outside if n in mixing]
    unreached = [n for n in outside if n not in mixing]
    if tokens:
        parts.append(f"token-mixing Linear layers {listed(tokens)} mix tokens, not features, so the "
                     "graph has no edges for them; they are left dense, outside the budget.")
    if unreached:
        mode = "training" if model.training else "eval"
        parts.append(f"weight layers {listed(unreached)} are not in the traced graph (its forward "
                     f"in {mode} mode never reaches them, e.g. auxiliary heads); the budget covers "
                     "the graph's layers only, these are left unpruned and their weights are not "
                     "given to the skips. Trace the mode that uses them to include them.")
    return f"{type(model).__name__}: " + " ".join(parts)


def _check_dense_fits(model, r: Recipe, dense: tuple[str, ...], layers: tuple[str, ...],
                      density: float, seq_density: float) -> None:
    """Refuse, in the recipe's words, dense layers holding more than the sequential budget."""
    if not dense:
        return
    from n2ngraph.masks import prunable_weights, weight_name, weight_of
    from n2ngraph.pruning import budget

    weights = prunable_weights(model)
    n_dense = sum(weight_of(weights[weight_name(p)]).numel() for p in dense)
    total = budget(sum(weight_of(weights[n]).numel() for n in layers), seq_density)
    if n_dense > total:
        share = "" if seq_density == density else f" ({seq_density:g} after the skips' share)"
        raise ValueError(
            f"recipe {r.name!r} keeps layers {list(dense)} dense ({n_dense:,} weights), more than the "
            f"{total:,} weights the network keeps at density {density:g}{share}; raise the density "
            f"or use a recipe without dense layers, e.g. dataclasses.replace(RECIPES[{r.name!r}], "
            f"dense_layers=(), name='{r.name}-sparse')")


def _fill_density(model, density: float, low: float, at_least: int, opts: dict) -> float:
    """The smallest sequential density in ``[low, density]`` (to 1e-12) at which pruning keeps
    at least ``at_least`` weights (``kept_count`` is exact and non-decreasing in the density)."""
    from n2ngraph.pruning import kept_count

    lo, hi = low, density
    while hi - lo > 1e-12:
        mid = (lo + hi) / 2
        if kept_count(model, mid, **opts) >= at_least:
            hi = mid
        else:
            lo = mid
    return hi


def calibration_batch(model, dataset, batch_size: int, seed: int, *, input_shape=None):
    """A ``(inputs, targets)`` batch from the training split of ``dataset``, shaped for ``model``:
    the one way every sweep, driver and notebook draws the batch that data-driven pruners (SNIP,
    GraSP) score on.

    Parameters
    ----------
    model : nn.Module
        Only its input shape is used (:func:`n2ngraph.models.example_input`).
    dataset : str or TensorDataset
        A dataset spec (:func:`n2ngraph.data.load_dataset`; its training split is loaded without
        augmentation) or an already loaded in-memory dataset whose ``tensors`` are
        ``(images, labels)`` (e.g. :class:`n2ngraph.data.ImageDataset`; its ``batch_transform``
        is not applied).
    batch_size : int
        Number of images, at most the dataset's size.
    seed : int
        The images are ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        [:batch_size]``: drawn without replacement, the same for the same seed.
    input_shape : tuple of int, optional
        The per-sample input shape the model is traced and trained at, e.g. ``(1, 28, 28)``
        (``--input-shape``); by default the model's guess (32 x 32 images for a conv net).

    Returns
    -------
    inputs : Tensor, shape ``(batch_size, *input_shape)``
    targets : Tensor of int64, shape ``(batch_size,)``

    Raises
    ------
    ValueError
        The images fit the model's input neither as they are, flattened, nor by the one
        conversion below.

    Notes
    -----
    When the model expects ``3 x 32 x 32`` images (CIFAR-shaped, e.g. the paper MLP's 3072
    inputs) and the dataset has ``1 x 28 x 28`` digits (MNIST), each digit is zero-padded to
    32 x 32 and repeated over three channels.
    """
    import torch

    from n2ngraph.data import load_dataset
    from n2ngraph.models import example_input

    data = load_dataset(dataset, train=True, augment=False) if isinstance(dataset, str) else dataset
    images, labels = data.tensors
    gen = torch.Generator().manual_seed(int(seed))
    index = torch.randperm(len(labels), generator=gen)[:batch_size]
    x, y = images[index], labels[index]
    want = tuple(example_input(model, input_shape=input_shape).shape[1:])
    have = tuple(x.shape[1:])
    if want == have or (len(want) == 1 and math.prod(have) == want[0]):
        return x, y
    if have == (1, 28, 28) and (want == (3, 32, 32) or want == (3072,)):
        x = torch.nn.functional.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1)
        return x, y
    name = dataset if isinstance(dataset, str) else type(dataset).__name__
    raise ValueError(f"dataset {name!r} gives images of shape {have}, but the model expects "
                     f"inputs of shape {want}; pass a dataset whose images have that shape")

"""Scorers: one function per pruning criterion (the scoring half of pruning).

Every scorer has the signature ``score(model, weights, *, data, rng, **options)`` and returns
*keep-scores* ``{name: tensor}`` of each weight's shape: the higher, the more a weight deserves to
be kept. ``weights`` maps the mask names to the tensors to score; for the scorers that run the
network (``snip``, ``grasp``, ``synflow``) ``model`` is a private copy made by
:func:`scoring_copy` and ``weights`` are its leaf parameters, which the scorer may use freely.
``data`` is a list of ``(inputs, targets)`` batches already on the model's device, or ``None``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from n2ngraph.masks import FusedWeight, prunable_weights

__all__ = [
    "SYNFLOW_DTYPES",
    "as_batches",
    "prepare_synflow",
    "score_grasp",
    "score_magnitude",
    "score_random",
    "score_snip",
    "score_synflow",
    "scoring_copy",
]

#: Normalisation layers replaced by identities in SynFlow's linearised network (BatchNorm
#: with running statistics is kept as its evaluation-mode scale instead: :func:`prepare_synflow`).
_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


#: SynFlow's scoring precisions (:func:`score_synflow`'s ``dtype``).
SYNFLOW_DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: Attribute a scoring copy carries once SynFlow fell back to float64 on it.
_FLOAT64_FALLBACK = "_n2ngraph_synflow_float64"

#: GraSP's softmax temperature in the authors' released code (github.com/alecwangcq/GraSP).
GRASP_TEMPERATURE = 200.0


# ------------------------------------------------------------------------------ inputs
def _is_batch(obj: Any) -> bool:
    return (
        isinstance(obj, (tuple, list))
        and len(obj) == 2
        and isinstance(obj[0], torch.Tensor)
        and isinstance(obj[1], torch.Tensor)
    )


def as_batches(data: Any, device: torch.device, *, limit: int | None = None) -> list[tuple]:
    """``data`` as a list of ``(inputs, targets)`` batches on ``device``.

    ``data`` is one ``(inputs, targets)`` pair of tensors or an iterable of such pairs (a
    ``DataLoader``); every batch it yields is used (at most ``limit``).
    """
    if _is_batch(data):
        items: Iterable = [data]
    elif isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise TypeError(
            f"data must be an (inputs, targets) tuple of tensors or an iterable of such batches, "
            f"got {type(data).__name__}"
        )
    else:
        items = data
    batches = []
    for i, batch in enumerate(items):
        if limit is not None and i >= limit:
            break
        if not _is_batch(batch):
            raise TypeError(
                f"data batch {i} is a {type(batch).__name__}; each batch must be an "
                "(inputs, targets) pair of tensors"
            )
        batches.append((batch[0].to(device), batch[1].to(device)))
    if not batches:
        raise ValueError("data yielded no batches; pass at least one (inputs, targets) batch")
    return batches


def _restore_dense_weight(module: nn.Module, name: str = "weight") -> None:
    """Make a (copied) module's weight ``name`` a plain dense parameter again: undo
    ``torch.nn.utils.prune`` (mask set to ones first) and parametrizations of it."""
    from torch.nn.utils import parametrize
    from torch.nn.utils import prune as torch_prune

    if parametrize.is_parametrized(module, name):
        # Not parametrize.remove_parametrizations: it deletes the ``name`` property from the
        # module's class, a class the copy shares with the original model.
        cls = module.__class__
        original = module.parametrizations[name].original
        if len(module.parametrizations) == 1:
            module.__class__ = cls.__bases__[0]
            del module._modules["parametrizations"]
        else:
            attrs = {k: v for k, v in cls.__dict__.items() if k != name}
            module.__class__ = type(cls.__name__, cls.__bases__, attrs)
            del module.parametrizations[name]
        module.register_parameter(name, original)
    if hasattr(module, f"{name}_orig") and hasattr(module, f"{name}_mask"):
        with torch.no_grad():
            getattr(module, f"{name}_mask").fill_(1)
        torch_prune.remove(module, name)


def _owner(module: nn.Module | FusedWeight) -> tuple[nn.Module, str]:
    """The module holding a prunable weight and the weight's attribute name."""
    if isinstance(module, FusedWeight):
        return module.module, module.name
    return module, "weight"


def scoring_copy(model: nn.Module, *, share_weights: bool = False) -> nn.Module:
    """A private dense copy of ``model`` to score on.

    The copy keeps the model's training mode for normalisation layers, turns dropout off (so
    scores are deterministic and the global random state is untouched), drops masks already on
    the model (scores are those of the dense network) and needs no gradient except for the
    prunable weights. Whatever scoring does to it (BatchNorm statistics, gradients) never
    reaches ``model``. With ``share_weights`` its parameters are new leaf tensors that share
    the model's storage (no copy of the weights, for scorers that only read them: the caller
    must replace a shared tensor's ``data`` before writing to it); buffers are copied either
    way.
    """
    if share_weights:
        shared = {id(p): nn.Parameter(p.detach(), requires_grad=False) for p in model.parameters()}
        work = _tree_copy(model, shared, {})
    else:
        # Tensors computed from parameters and cached as attributes (torch.nn.utils.prune's
        # ``weight`` = ``weight_orig * weight_mask``) refuse deepcopy: copy them detached.
        memo = {
            id(v): v.detach().clone()
            for m in model.modules()
            for v in vars(m).values()
            if isinstance(v, torch.Tensor) and not v.is_leaf
        }
        work = copy.deepcopy(model, memo)
    for module in prunable_weights(work).values():
        _restore_dense_weight(*_owner(module))
    for module in work.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    for p in work.parameters():
        p.requires_grad_(False)
        p.grad = None
    for module in prunable_weights(work).values():
        module.weight.requires_grad_(True)
    return work


def _tree_copy(module: nn.Module, params: dict[int, nn.Parameter], memo: dict) -> nn.Module:
    """A copy of a module tree for :func:`scoring_copy` with shared weights: new module
    objects with their own attribute, parameter, buffer, submodule and hook dictionaries,
    parameters mapped through ``params`` (by id), buffers cloned, other attributes shared.
    A few times faster than ``copy.deepcopy`` (which visits every attribute)."""
    done = memo.get(id(module))
    if done is not None:
        return done
    cls = type(module)
    new = cls.__new__(cls)
    memo[id(module)] = new
    state = {k: v.copy() if isinstance(v, dict) else v for k, v in module.__dict__.items()}
    for k, p in module._parameters.items():
        state["_parameters"][k] = None if p is None else params[id(p)]
    for k, b in module._buffers.items():
        state["_buffers"][k] = None if b is None else b.clone()
    for k, m in module._modules.items():
        state["_modules"][k] = None if m is None else _tree_copy(m, params, memo)
    new.__dict__.update(state)
    return new


def _loss_fn(loss: Callable | None) -> Callable:
    if loss is None:
        return F.cross_entropy
    if not callable(loss):
        raise TypeError(f"loss must be a callable loss(outputs, targets) -> scalar, got {loss!r}")
    return loss


def _grads(output: torch.Tensor, params: list[torch.Tensor], **kwargs) -> list[torch.Tensor]:
    grads = torch.autograd.grad(output, params, allow_unused=True, **kwargs)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def _mean_gradient(
    params: list[torch.Tensor], data: list[tuple], objective: Callable[..., torch.Tensor]
) -> list[torch.Tensor]:
    """``d/dw`` of the mean over the batches of ``objective(x, y)``, one backward pass per
    batch (the batches' gradients summed in batch order)."""
    with torch.enable_grad():
        if len(data) == 1:
            return _grads(objective(*data[0]), params)
        total = [torch.zeros_like(p) for p in params]
        for x, y in data:
            value = objective(x, y) / len(data)
            for acc, g in zip(total, _grads(value, params)):
                acc += g
    return total


def _products(
    weights: dict[str, torch.Tensor], factors: list[torch.Tensor], *, absolute: bool
) -> dict[str, torch.Tensor]:
    """``f * w`` (``|f * w|`` if ``absolute``) per weight, shaped as the weight. On the CPU the
    layers' results are consecutive views of one buffer, which a global threshold reads
    without concatenating them (:func:`~n2ngraph.pruning._threshold.select_alive`); elsewhere
    they are computed in place of ``factors``."""
    items = [(n, w.detach(), f) for (n, w), f in zip(weights.items(), factors)]
    dtypes = {f.dtype for _, _, f in items} | {w.dtype for _, w, _ in items}
    if items[0][1].device.type != "cpu" or len(dtypes) != 1:
        out = {n: f.mul_(w) if f.is_contiguous() else f * w for n, w, f in items}
        return {n: v.abs_() for n, v in out.items()} if absolute else out
    buf = torch.empty(sum(w.numel() for _, w, _ in items), dtype=items[0][1].dtype)
    out, start = {}, 0
    for name, w, f in items:
        seg = buf[start : start + w.numel()].view(w.shape)
        start += w.numel()
        torch.mul(f, w, out=seg)
        out[name] = seg.abs_() if absolute else seg
    return out


def _hessian_times(
    value: torch.Tensor, params: list[torch.Tensor], vector: list[torch.Tensor] | None
) -> list[torch.Tensor] | None:
    """The Hessian-vector product ``H v`` of ``value`` over ``params`` by double
    backpropagation, ``v = vector`` (``None``: ``v`` is ``value``'s own gradient, detached).

    Returns ``None`` when ``value`` is linear in ``params`` (``H = 0``).
    """
    with torch.enable_grad():
        grads = torch.autograd.grad(value, params, create_graph=True, allow_unused=True)
        fixed = [None if g is None else g.detach() for g in grads] if vector is None else vector
        z = sum(
            (g * v).sum() for g, v in zip(grads, fixed) if g is not None and g.requires_grad
        )
        if not (isinstance(z, torch.Tensor) and z.requires_grad):
            return None
        return _grads(z, params)


# ----------------------------------------------------------------------------- scorers
def score_random(model, weights, *, data, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Uniform random keys in [0, 1) (float32, on the CPU): keeping the top ``k`` keeps a
    uniformly random ``k``-subset."""
    return {
        name: torch.from_numpy(rng.random(tuple(w.shape), dtype=np.float32))
        for name, w in weights.items()
    }


def score_magnitude(model, weights, *, data, rng) -> dict[str, torch.Tensor]:
    """``|w|``."""
    return {name: w.detach().abs() for name, w in weights.items()}


def score_snip(
    model, weights, *, data, rng, loss: Callable | None = None
) -> dict[str, torch.Tensor]:
    """SNIP connection sensitivity ``|w * dL/dw|`` (Lee et al. 2019, arXiv:1810.02340, eq. 6).

    ``L`` is the mean over the batches of ``loss(model(x), y)`` (cross-entropy by default). The
    paper divides by the sum of all scores; that does not change the ranking and is omitted.
    """
    loss_fn = _loss_fn(loss)
    grads = _mean_gradient(list(weights.values()), data, lambda x, y: loss_fn(model(x), y))
    return _products(weights, grads, absolute=True)


def _twice_differentiable() -> contextlib.AbstractContextManager:
    """Attention computed by ``scaled_dot_product_attention``'s math kernel, the one with a
    double backward (the fused CPU kernels have none), for GraSP's Hessian-vector product."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: no kernel choice
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def score_grasp(
    model,
    weights,
    *,
    data,
    rng,
    loss: Callable | None = None,
    temperature: float = GRASP_TEMPERATURE,
) -> dict[str, torch.Tensor]:
    """GraSP keep-score ``w * (H g)`` (Wang et al. 2020, arXiv:2002.07376, eq. 8).

    ``g = dL/dw`` and ``H = d^2 L / dw^2`` over the prunable weights (the Hessian-gradient
    product by double backpropagation), ``L`` the mean over the batches of
    ``loss(model(x) / temperature, y)``. The paper scores ``S(-w) = -w * (H g)`` and removes the
    weights with the *highest* ``S``; the keep-score returned here is ``-S``, so keeping the
    highest keep-scores is the paper's rule.
    """
    loss_fn = _loss_fn(loss)
    if not (
        isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    params = list(weights.values())

    def objective(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(model(x) / temperature, y)

    with torch.enable_grad(), _twice_differentiable():
        if len(data) == 1:
            # One batch: the gradient of the double-backward pass is g itself (no separate pass).
            hg = _hessian_times(objective(*data[0]), params, None)
        else:
            g = _mean_gradient(params, data, objective)
            hg = [torch.zeros_like(p) for p in params]
            for x, y in data:
                h = _hessian_times(objective(x, y) / len(data), params, g)
                for acc, hi in zip(hg, h or ()):
                    acc += hi
    if hg is None:  # the loss is linear in the weights: H g = 0
        hg = [torch.zeros_like(p) for p in params]
    return _products(weights, hg, absolute=False)


def _running_scale(module: nn.Module) -> bool:
    """``module`` is a BatchNorm that normalises with running statistics in evaluation mode."""
    return (
        isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.track_running_stats
        and module.running_var is not None
    )


def prepare_synflow(model: nn.Module) -> None:
    """Linearise a scoring copy in place for SynFlow (Tanaka et al. 2020, arXiv:2006.05467).

    The network becomes the paper's ``R = 1^T (prod_l |W_l|) 1``: evaluation mode, every
    prunable weight replaced by its absolute value and its bias set to zero, any other
    parameter replaced by its absolute value. A BatchNorm with running statistics stays, in
    evaluation mode, as the diagonal layer ``x * |gamma| / sqrt(|running_var| + eps)`` (its
    shift zeroed: ``beta = running_mean = 0``), the scale Synaptic-Flow's code applies (it
    takes ``|.|`` of every parameter and buffer and scores in evaluation mode; at
    initialisation, ``1 / sqrt(1 + eps)`` per layer, computed by the same ``batch_norm``
    kernel, so the float rounding is the reference's). Other normalisation layers (LayerNorm,
    GroupNorm, InstanceNorm, BatchNorm without running statistics) normalise each sample,
    which is not linear: they become identities. With a positive input every ReLU is then the
    identity and max-pooling is positively homogeneous, so ``R`` sums the weight products of
    all input-output paths. The precision is left to :func:`score_synflow` (its ``dtype``).

    Where Synaptic-Flow differs: it takes ``|b|`` and ``|beta|``, ``|running_mean|`` rather
    than zeroing them. They are zero at initialisation (the same network); on a trained model
    its shifts ``|beta| - |mean| * scale`` can be negative and switch ReLUs off, so that its
    ``R`` is no longer a sum over paths.
    """
    model.eval()
    for name, module in list(model.named_modules()):
        if not name or not isinstance(module, _NORM_TYPES):
            continue
        if _running_scale(module):
            with torch.no_grad():
                module.running_var.abs_()
                module.running_mean.zero_()
                if module.bias is not None:
                    module.bias.zero_()
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    done = set()  # prunable weights and their biases, by tensor (a fused weight is a view)
    with torch.no_grad():
        for module in prunable_weights(model).values():
            module.weight.abs_()
            done.add(id(module.weight))
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
                done.add(id(module.bias))
        for p in model.parameters():
            if id(p) not in done:
                p.abs_()


def _alive_products(weights, grads, alive) -> dict[str, torch.Tensor]:
    """``g * w`` at the alive indices of the layers named in ``alive``, 1-D. On the CPU the
    layers' products are consecutive views of one buffer (the global threshold then needs no
    concatenation), gathered with numpy. ``g, w >= 0`` in the linearised network: no ``abs``.
    """
    items = [(n, w.detach().reshape(-1), g.reshape(-1)) for (n, w), g in zip(weights.items(), grads)]
    items = [(n, w, g) for n, w, g in items if n in alive]
    if items[0][1].device.type != "cpu":
        return {
            n: g * w if alive[n] is None else g[alive[n]] * w[alive[n]] for n, w, g in items
        }
    sizes = [w.numel() if alive[n] is None else alive[n].numel() for n, w, _ in items]
    buf = np.empty(sum(sizes), dtype=torch.empty((), dtype=items[0][1].dtype).numpy().dtype)
    whole = torch.from_numpy(buf)  # the layers' scores are views of one storage
    out, start = {}, 0
    for (name, w, g), size in zip(items, sizes):
        seg = buf[start : start + size]
        out[name] = whole[start : start + size]
        start += size
        idx = alive[name]
        if idx is None:
            np.multiply(g.numpy(), w.numpy(), out=seg)
        else:
            i = idx.numpy()
            np.take(g.numpy(), i, out=seg)
            seg *= np.take(w.numpy(), i)
    return out


def _synflow_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in SYNFLOW_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in SYNFLOW_DTYPES:
        return SYNFLOW_DTYPES[dtype]
    raise ValueError(f"dtype must be one of {list(SYNFLOW_DTYPES)}, got {dtype!r}")


def _cast(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast ``model``'s floating-point parameters and buffers to ``dtype`` in place, keeping
    the parameter objects (the scorer's ``weights`` stay valid); exact from float32 up."""
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None and p.is_floating_point():
                p.data = p.data.to(dtype)
        for key, b in module._buffers.items():
            if b is not None and b.is_floating_point():
                module._buffers[key] = b.to(dtype)


def _path_sum(model, params, shape, dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``R`` for an all-ones input of ``shape`` and ``dR/dw`` (none when ``R`` is not
    finite), in ``dtype``."""
    if params[0].dtype != dtype:
        _cast(model, dtype)
    x = torch.ones(shape, dtype=dtype, device=params[0].device)
    with torch.enable_grad():
        r = model(x).sum()
    if not torch.isfinite(r):
        return r, []
    return r, _grads(r, params)


def _synflow_products(weights, grads, alive) -> dict[str, torch.Tensor]:
    """``|w * dR/dw|``: at the alive indices (1-D, see :func:`_alive_products`) or whole."""
    if alive is not None:
        return _alive_products(weights, grads, alive)
    # in place where autograd handed back a plain dense gradient (saves a copy)
    return {
        name: (g.mul_(w.detach()) if g.is_contiguous() else g * w.detach()).abs_()
        for (name, w), g in zip(weights.items(), grads)
    }


def _all_finite(scores: dict[str, torch.Tensor]) -> bool:
    """No score is infinite or NaN (their sums are finite: one pass each, conservative)."""
    return bool(torch.isfinite(torch.stack([s.sum() for s in scores.values()])).all())


def score_synflow(
    model,
    weights,
    *,
    data,
    rng,
    input_shape: tuple[int, ...] | None = None,
    dtype: str | torch.dtype = "float32",
    alive: dict[str, torch.Tensor | None] | None = None,
) -> dict[str, torch.Tensor]:
    """SynFlow score ``|w * dR/dw|`` with ``R`` the linearised network's output summed for an
    all-ones input (Tanaka et al. 2020, arXiv:2006.05467, Algorithm 1). Data-free.

    ``input_shape`` is the per-sample input shape; by default that of the first batch of
    ``data`` when given, else the model's :func:`n2ngraph.models.example_input` (a 32 x 32
    image for a conv net). ``model`` must have gone through :func:`prepare_synflow`.
    ``alive`` (used by iterative pruning): ``{name: increasing flat indices or None}``; the
    scores of those weights only are returned, 1-D, for the layers it names.

    ``dtype`` is the precision of ``R`` and the scores. ``"float32"`` (default) is what the
    authors' code computes in (Synaptic-Flow: its ``model.double()`` is commented out) and about
    twice as fast as float64 on the CPU. Where float32 overflows (``R`` is a product of layer
    sums: deep unnormalised networks), a call whose ``R`` or scores are not finite is computed
    again in float64, and the copy stays in float64 for every later call, so deep networks are
    scored as before rather than refused. ``"float64"`` scores in float64 throughout
    (n2ngraph's default before this option came). The two precisions give the same masks up
    to the rounding of near-ties, which compounds over the rounds (VGG-16 at 1%: Jaccard 0.905
    between Synaptic-Flow's own float32 and float64 runs; ResNet-20: identical). In float32
    each round's scores are the reference's bit for bit (the same kernels on the same
    network, :func:`prepare_synflow`).
    Scores are returned in the precision they were computed in.
    """
    from n2ngraph.models import example_input

    params = list(weights.values())
    want = torch.float64 if getattr(model, _FLOAT64_FALLBACK, False) else _synflow_dtype(dtype)
    if input_shape is None:
        input_shape = tuple(data[0][0].shape[1:]) if data else tuple(example_input(model).shape[1:])
    try:
        shape = (1, *(int(s) for s in input_shape))
    except TypeError:
        raise TypeError(f"input_shape must be a tuple of ints, got {input_shape!r}") from None
    r, grads = _path_sum(model, params, shape, want)
    scores = _synflow_products(weights, grads, alive) if grads else None
    if want != torch.float64 and (scores is None or not _all_finite(scores)):
        setattr(model, _FLOAT64_FALLBACK, True)
        r, grads = _path_sum(model, params, shape, torch.float64)
        scores = _synflow_products(weights, grads, alive) if grads else None
    if scores is None:
        raise ValueError(
            f"SynFlow's path sum R = {r.item()} overflowed float64 on this model; the network "
            "is too deep for an unnormalised path sum"
        )
    return scores

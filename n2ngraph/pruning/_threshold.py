"""Turning scores into masks with exact budgets (the thresholding half of pruning).

Every selector keeps the *highest* scores. Budgets are exact: a layer (``layerwise``) or the whole
model (``global``) keeps ``round(density * n)`` weights, where ``round`` rounds halves up. Scores
tied at the threshold are broken by a seeded random order (``numpy.random.Generator``), so ties
never move the kept count and the same seed gives the same masks on every device. Only the
rounds of iterative pruning before the last may drop a whole tie group instead, as
Synaptic-Flow's code does (``drop_ties``; ``prune``'s ``ties`` option).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "array_ops",
    "budget",
    "select_alive",
    "select_channels",
    "select_per_unit",
    "select_subset",
    "select_top",
]


def budget(n: int, density: float) -> int:
    """Weights kept out of ``n`` at ``density``: ``floor(density * n + 1/2)``, within ``[0, n]``.

    Examples
    --------
    >>> budget(10, 0.25), budget(10, 0.24)  # halves round up
    (3, 2)
    """
    return min(n, max(0, math.floor(density * n + 0.5)))


#: Below this size a plain ``numpy.partition`` is used (see :func:`_kth_largest_numpy`).
_SAMPLED_SELECT_MIN = 1 << 22
#: Sample size of the bracketing step of :func:`_kth_largest_numpy`.
_SAMPLE = 1 << 17


def _kth_largest_numpy(arr: np.ndarray, k: int) -> float:
    """The ``k``-th largest entry of a 1-D array, exactly (``1 <= k <= arr.size``).

    Large arrays are bracketed first: the order statistics of a random sample give bounds
    ``lo <= v <= hi`` around the answer ``v`` with a margin of ~8 standard deviations of the
    sample rank, so that only the entries in ``[lo, hi]`` are partitioned (Floyd & Rivest's
    sampling idea). When the bracket misses (about never) the whole array is partitioned. The
    sample comes from a fixed private generator: the result is exact whatever the sample, and
    the caller's random stream is not consumed.
    """
    n = arr.size
    if n >= _SAMPLED_SELECT_MIN:
        sample = np.sort(arr[np.random.default_rng(0).integers(0, n, _SAMPLE)])
        pos = (n - k) / n * (_SAMPLE - 1)
        margin = 4 * math.sqrt(_SAMPLE) + 8
        lo_i, hi_i = math.floor(pos - margin), math.ceil(pos + margin)
        if lo_i <= 0:  # the answer may lie below every sampled value: no lower bound
            above = int(np.count_nonzero(arr > sample[hi_i]))
            band = arr[arr <= sample[hi_i]]
        elif hi_i >= _SAMPLE - 1:  # ... or above every sampled value: no upper bound
            above = 0
            band = arr[arr >= sample[lo_i]]
        else:
            lo, hi = sample[lo_i], sample[hi_i]
            above = int(np.count_nonzero(arr > hi))
            band = arr[(arr >= lo) & (arr <= hi)]
        if 1 <= k - above <= band.size:
            return _partition_kth(band, k - above)
    return _partition_kth(arr, k)


def _partition_kth(arr: np.ndarray, k: int) -> float:
    """The ``k``-th largest entry of ``arr`` by introselect (``numpy.partition``)."""
    floor = arr.min()
    at_floor = int(np.count_nonzero(arr == floor))
    if k > arr.size - at_floor:
        return floor
    if at_floor > 1:
        # Many copies of one value (the -inf of already-pruned weights, zero scores) make
        # introselect 20-50x slower; the answer lies above the minimum, so drop its copies.
        arr = arr[arr > floor]
    return np.partition(arr, arr.size - k)[arr.size - k]


@dataclass(frozen=True)
class _ArrayOps:
    """The few array operations that numpy and torch spell differently, for the selection
    (:func:`_top_k`) and the alive/pruned split of iterative rounds (``pruning._split``).

    The selection itself (comparisons, boolean indexing, the seeded tie draw) is written once
    over either array type (:func:`_select`); numpy serves CPU tensors (its comparisons, ``flatnonzero`` and
    introselect are several times faster than torch's there, and its large arrays do not
    page-fault anew on every call), torch serves tensors on other devices.
    """

    #: ``full(like, value)``: a 1-D bool vector of ``like``'s size (and device), all ``value``.
    full: Callable[[Any, bool], Any]
    #: ``kth_largest(arr, k)``: the exact ``k``-th largest entry, ``1 <= k < arr.size``.
    kth_largest: Callable[[Any, int], Any]
    #: ``count(keep)``: the number of True entries of a bool vector.
    count: Callable[[Any], int]
    #: ``where(keep)``: the flat indices of the True entries, increasing.
    where: Callable[[Any], Any]
    #: ``indices(like, idx)``: the int64 numpy array ``idx`` as an index of ``like``.
    indices: Callable[[Any, np.ndarray], Any]
    #: ``tensor(arr)``: the result as a torch tensor (sharing memory).
    tensor: Callable[[Any], torch.Tensor]


_NUMPY_OPS = _ArrayOps(
    full=lambda like, value: np.full(like.size, value, dtype=bool),
    kth_largest=_kth_largest_numpy,
    count=lambda keep: int(np.count_nonzero(keep)),
    where=np.flatnonzero,
    indices=lambda like, idx: idx,
    tensor=torch.from_numpy,
)

_TORCH_OPS = _ArrayOps(
    full=lambda like, value: torch.full(
        (like.numel(),), value, dtype=torch.bool, device=like.device
    ),
    kth_largest=lambda flat, k: torch.kthvalue(flat, flat.numel() - k + 1).values,
    count=lambda keep: int(torch.count_nonzero(keep)),
    where=lambda keep: torch.nonzero(keep).flatten(),
    indices=lambda like, idx: torch.from_numpy(idx).to(like.device),
    tensor=lambda t: t,
)


def array_ops(tensor: torch.Tensor) -> tuple[Any, _ArrayOps]:
    """``tensor`` as the array type that serves its device, and the operations on it: a numpy
    view of a CPU tensor (no copy), the tensor itself on other devices."""
    if tensor.device.type == "cpu":
        return tensor.numpy(), _NUMPY_OPS
    return tensor, _TORCH_OPS


def _top_k(
    flat: torch.Tensor,
    k: int,
    rng: np.random.Generator,
    what: str,
    *,
    drop_ties: str | None = None,
    at_least: int = 0,
) -> torch.Tensor:
    """Boolean mask of exactly ``k`` entries of ``flat`` holding its highest values.

    Entries equal to the ``k``-th largest value (the threshold) are taken in a seeded random
    order when they do not all fit, unless ``drop_ties`` says to drop them all (fewer than
    ``k`` kept: Synaptic-Flow's rule, which prunes every score ``<=`` the ``(n - k)``-th
    smallest): ``"all"`` whatever the threshold, ``"zero"`` when it is zero. With
    ``k >= n`` the threshold is taken to be zero (it lies among already-pruned weights, which
    score zero). Either way at least ``at_least`` entries are kept (tied entries at random). The mask is on ``flat``'s
    device; CPU and other devices make the same selection with the same random draws
    (:class:`_ArrayOps`).
    """
    flat = flat.detach()
    if flat.dtype == torch.bfloat16:  # numpy has no bfloat16
        flat = flat.float()
    arr, ops = array_ops(flat)
    return ops.tensor(_select(arr, k, rng, what, drop_ties, at_least, ops))


#: :func:`_top_k`'s ``drop_ties`` values.
DROP_TIES = (None, "zero", "all")


def _select(arr: Any, k: int, rng: np.random.Generator, what: str, drop_ties: str | None,
            at_least: int, ops: _ArrayOps) -> Any:
    """:func:`_top_k` on a 1-D numpy array or torch tensor ``arr`` (``ops`` matching it)."""
    if drop_ties not in DROP_TIES:
        raise ValueError(f"drop_ties must be one of {list(DROP_TIES)}, got {drop_ties!r}")
    n = len(arr)
    total = arr.sum()  # one pass, no allocation: only a NaN sum needs the full check
    if total != total and (arr != arr).any():
        raise ValueError(f"scores of {what} contain NaN; the scoring method failed on this model")
    if k >= n and drop_ties is None:
        return ops.full(arr, True)
    if k <= 0:
        return ops.full(arr, False)
    beyond = k >= n  # the threshold lies among the already-pruned weights, which score zero
    if beyond:
        threshold, k = 0, n
    else:
        threshold = ops.kth_largest(arr, k)
    keep = arr > threshold
    above = ops.count(keep)
    need = k - above
    if need > 0:
        ties = ops.where(arr == threshold)
        # Synaptic-Flow prunes every score <= its k-th smallest: a tie group straddling the
        # budget's boundary goes whole
        straddles = beyond or len(ties) > need
        if straddles and (drop_ties == "all" or (drop_ties == "zero" and threshold == 0)):
            need = max(0, min(k, at_least) - above)
        if need > 0:
            pick = rng.choice(len(ties), size=need, replace=False, shuffle=False)
            keep[ties[ops.indices(ties, np.sort(pick))]] = True
    return keep


def _tiled(parts: list[torch.Tensor]) -> torch.Tensor | None:
    """The 1-D tensor that ``parts`` tile end to end in one buffer (consecutive views of one
    storage, as :func:`~n2ngraph.pruning._scorers.score_synflow` returns them), else None."""
    first = parts[0]
    if any(p.dim() != 1 or not p.is_contiguous() or p.dtype != first.dtype for p in parts):
        return None
    ptr, item = first.data_ptr(), first.element_size()
    for p in parts:
        if p.untyped_storage().data_ptr() != first.untyped_storage().data_ptr():
            return None
        if p.data_ptr() != ptr:
            return None
        ptr += p.numel() * item
    total = sum(p.numel() for p in parts)
    return first.as_strided((total,), (1,))


def select_alive(
    values: Mapping[str, torch.Tensor],
    budgets: int | Mapping[str, int],
    rng: np.random.Generator,
    *,
    drop_ties: str | None | Mapping[str, str | None] = None,
    at_least: int | Mapping[str, int] = 0,
) -> dict[str, torch.Tensor]:
    """Keep the highest of the scores of the weights still alive.

    Parameters
    ----------
    values : mapping name -> 1-D tensor
        Keep-scores of each layer's alive weights, in increasing order of their flat index
        (so that ties are met in the same order as in the full weight).
    budgets : int or mapping name -> int
        Kept weights per layer (``layerwise``) or in total under one threshold (``global``);
        a budget above the alive count keeps them all.
    rng : numpy.random.Generator
        Breaks ties at the threshold.
    drop_ties, at_least
        See :func:`_top_k` (per layer, or for the whole model under one threshold).

    Returns
    -------
    dict name -> 1-D bool tensor over the alive weights (``True`` = still kept).
    """
    if not isinstance(budgets, int):
        def per_layer(option):  # one value for every layer, or a mapping name -> value
            return option if isinstance(option, Mapping) else dict.fromkeys(values, option)

        floors, drops = per_layer(at_least), per_layer(drop_ties)
        return {
            name: _top_k(
                v, budgets[name], rng, f"layer {name!r}",
                drop_ties=drops[name], at_least=floors[name],
            )
            for name, v in values.items()
        }
    flat = _tiled(list(values.values()))
    if flat is None:
        devices = {v.device for v in values.values()}
        device = next(iter(devices)) if len(devices) == 1 else torch.device("cpu")
        dtype = functools.reduce(torch.promote_types, [v.dtype for v in values.values()])
        parts = [v.to(device=device, dtype=dtype) for v in values.values()]
        flat = parts[0] if len(parts) == 1 else torch.cat(parts)
        del parts
    keep_all = _top_k(
        flat, budgets, rng, "the model", drop_ties=drop_ties, at_least=int(at_least)
    )
    out: dict[str, torch.Tensor] = {}
    start = 0
    for name, v in values.items():
        out[name] = keep_all[start : start + v.numel()].to(v.device)
        start += v.numel()
    return out


def select_top(
    scores: Mapping[str, torch.Tensor],
    budgets: int | Mapping[str, int],
    rng: np.random.Generator,
) -> dict[str, torch.Tensor]:
    """Keep the highest scores: ``budgets[name]`` weights of each layer, or ``budgets`` in all.

    One-shot :func:`select_alive` on whole weights: ``scores`` maps names to keep-scores of
    the weights' shapes; returns bool masks of those shapes, on the scores' devices.
    """
    keep = select_alive({n: s.detach().flatten() for n, s in scores.items()}, budgets, rng)
    return {n: keep[n].reshape(s.shape) for n, s in scores.items()}


def select_subset(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """A 1-D boolean array of size ``n`` with a uniformly random ``k``-subset True.

    One ``Generator.choice(n, k, replace=False, shuffle=False)`` draw: its cost grows with
    ``k`` (Floyd's algorithm, or a partial shuffle for large ``k``), not with ``n`` keys and a
    selection over them.

    Examples
    --------
    >>> keep = select_subset(10, 3, np.random.default_rng(0))
    >>> keep.shape, int(keep.sum())
    ((10,), 3)
    """
    keep = np.zeros(n, dtype=bool)
    keep[rng.choice(n, size=k, replace=False, shuffle=False)] = True
    return keep


#: Random keys drawn per chunk of rows in :func:`_equal_rows` (bounds memory at ~64 MB).
_CHUNK = 1 << 23


def _equal_rows(rows: int, cols: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(rows, cols)`` boolean matrix with ``k`` True entries, ``floor(k / rows)`` or
    ``ceil(k / rows)`` in every row (the rows that get one more drawn at random), placed
    uniformly at random within each row."""
    mask = np.zeros((rows, cols), dtype=bool)
    base, extra = divmod(k, rows)
    if base >= cols:
        mask[:] = True
        return mask
    plus_one = np.zeros(rows, dtype=bool)
    plus_one[rng.choice(rows, size=extra, replace=False, shuffle=False)] = True
    step = max(1, _CHUNK // cols)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        keys = rng.random((r1 - r0, cols))
        order = np.argpartition(keys, base, axis=1)
        local = np.arange(r1 - r0)[:, None]
        mask[r0:r1][local, order[:, :base]] = True
        sel = plus_one[r0:r1]
        mask[r0:r1][np.nonzero(sel)[0], order[sel, base]] = True
    return mask


def select_per_unit(
    shapes: Mapping[str, torch.Size],
    budgets: Mapping[str, int],
    rng: np.random.Generator,
) -> dict[str, torch.Tensor]:
    """Random masks with equal fan-in per output unit (expander-style random pruning).

    Each weight is viewed as ``(out, fan_in)`` (a conv's fan-in is its ``in x kh x kw`` taps).
    A layer's budget ``budgets[name]`` is spread over its ``out`` rows as evenly as possible:
    every row keeps ``floor(k_l / out)`` or ``ceil(k_l / out)`` weights (the rows that get one
    more are drawn at random), chosen uniformly at random within the row.

    Returns masks on the CPU.
    """
    out: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        rows = shape[0]
        mask = _equal_rows(rows, math.prod(shape) // rows, budgets[name], rng)
        out[name] = torch.from_numpy(mask).reshape(shape)
    return out


def select_channels(
    shape: torch.Size,
    pairs: int,
    rng: np.random.Generator,
    *,
    equal: str | None = None,
) -> torch.Tensor:
    """A conv mask keeping ``pairs`` whole kernels: channel pair ``(o, i)`` keeps all its taps
    or none.

    Parameters
    ----------
    shape : (C_out, C_in / groups, kh, kw)
        The conv weight's shape.
    pairs : int
        Kept channel pairs, at most ``C_out * C_in / groups``.
    equal : {None, "in", "out"}
        ``None``: a uniformly random ``pairs``-subset of the pairs. ``"in"``: equal fan-in, every
        output channel keeps ``floor`` or ``ceil`` of ``pairs / C_out`` input channels;
        ``"out"``: equal fan-out, every input channel (column of the weight) feeds ``floor`` or
        ``ceil`` of ``pairs / (C_in / groups)`` output channels. Chosen uniformly at random.

    Returns
    -------
    bool tensor of ``shape``, on the CPU.
    """
    c_out, c_in = shape[0], shape[1]
    if equal is None:
        grid = select_subset(c_out * c_in, pairs, rng).reshape(c_out, c_in)
    elif equal == "in":
        grid = _equal_rows(c_out, c_in, pairs, rng)
    else:
        grid = np.ascontiguousarray(_equal_rows(c_in, c_out, pairs, rng).T)
    return torch.from_numpy(grid)[:, :, None, None].expand(tuple(shape)).contiguous()

"""Parameter budgets: the one check of a density and the one integer split of a budget.

Every module that takes a density (pruning, N2NSkip, the pipeline, the sweep) validates it here,
so the accepted range and the error text are the same everywhere; every module that splits an
integer budget over layers, targets or rows does it with :func:`apportion`. Nothing here imports
torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_density", "apportion"]


def check_density(value: Any, *, name: str = "density", allow_zero: bool = False,
                  allow_above_one: bool = False) -> float:
    """Return ``value`` as a float after checking it is a valid kept fraction.

    Parameters
    ----------
    value : real number
        The density: the fraction of weights kept (``sparsity = 1 - density``).
    name : str
        What to call the value in the error message (e.g. ``"n2nskip density"``).
    allow_zero : bool
        Accept 0 (no weights at all, e.g. an N2NSkip share of nothing). By default the range
        is ``(0, 1]``.
    allow_above_one : bool
        Accept values above 1 (a budget stated relative to another count). By default at most 1.

    Raises
    ------
    TypeError
        ``value`` is not a real number (``bool`` is refused too).
    ValueError
        ``value`` is not finite or lies outside the accepted range, which the message states.

    Examples
    --------
    >>> check_density(0.1)
    0.1
    >>> check_density(0, allow_zero=True)
    0.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    number = float(value)
    low = "[0" if allow_zero else "(0"
    high = "inf)" if allow_above_one else "1]"
    inside = (number >= 0 if allow_zero else number > 0) and (allow_above_one or number <= 1)
    if not (math.isfinite(number) and inside):
        raise ValueError(f"{name} must lie in {low}, {high} (the kept fraction), got {value!r}")
    return number


def apportion(total: int, weights: Sequence[float] | np.ndarray, *,
              caps: Sequence[int] | np.ndarray | None = None,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """Split the integer ``total`` into integer shares proportional to ``weights``.

    Hamilton's largest-remainder method: share ``i`` is ``floor(total * w_i / sum(w))`` and the
    units left over go to the largest fractional remainders. With ``caps``, no share exceeds
    ``caps[i]``; what a capped share cannot take is split again over the open ones in the same
    way, until the total is placed.

    Parameters
    ----------
    total : int
        Units to place, ``>= 0``.
    weights : sequence of float, shape ``(n,)``
        Non-negative weights; where every open weight is 0 the open shares are split equally.
    caps : sequence of int, shape ``(n,)``, optional
        Most units each share may take.
    rng : numpy.random.Generator, optional
        Orders equal remainders at random (one ``rng.random(n)`` draw per round that has a
        remainder to place). Without it equal remainders go to the lower index.

    Returns
    -------
    ndarray of int64, shape ``(n,)``
        Shares summing to ``total``.

    Raises
    ------
    ValueError
        ``total`` is negative, a weight is negative, or ``caps`` sum to less than ``total``.

    Examples
    --------
    >>> apportion(10, [1, 1, 1]).tolist()
    [4, 3, 3]
    >>> apportion(10, [5, 1, 1], caps=[2, 10, 10]).tolist()
    [2, 5, 3]
    """
    weight = np.asarray(weights, dtype=np.float64)
    total = int(total)
    if total < 0:
        raise ValueError(f"the total to apportion must be >= 0, got {total}")
    if weight.ndim != 1 or not np.all(np.isfinite(weight)) or np.any(weight < 0):
        raise ValueError("apportion weights must be a 1-d sequence of finite numbers >= 0")
    cap = None if caps is None else np.asarray(caps, dtype=np.int64)
    if cap is not None and int(np.maximum(cap, 0).sum()) < total:
        raise ValueError(f"cannot place {total} units: the caps hold only {int(np.maximum(cap, 0).sum())}")
    alloc = np.zeros(len(weight), dtype=np.int64)
    is_open = np.ones(len(weight), dtype=bool) if cap is None else cap > 0
    left = total
    while left > 0:
        w = np.where(is_open, weight, 0.0)
        if w.sum() <= 0:
            w = is_open.astype(np.float64)
        exact = left * w / w.sum()
        share = np.floor(exact).astype(np.int64)
        rest = left - int(share.sum())
        if rest > 0:
            remainder = exact - share
            order = (np.argsort(-remainder, kind="stable") if rng is None
                     else np.lexsort((rng.random(len(weight)), -remainder)))
            share[order[:rest]] += 1
        if cap is not None:
            share = np.minimum(share, cap - alloc)
            is_open = (cap - alloc - share) > 0
        alloc += share
        left -= int(share.sum())
    return alloc

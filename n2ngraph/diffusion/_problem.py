"""Input handling shared by every engine: graph or adjacency -> Laplacian, null space, sources, times.

Everything here is O(nnz); no engine work, no torch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = [
    "DECAY_FLOOR",
    "DiffusionAccuracyWarning",
    "HeatProblem",
    "adjacency_of",
    "as_sources",
    "as_times",
    "build_problem",
    "warn_caller",
    "laplacian_matrix",
    "power_of_two_scale",
    "safe_norms",
]


#: the decaying part ``exp(-tL) v`` is resolved to relative accuracy down to this fraction of
#: ``||v||``; below it, it counts as 0 (absolute error <= DECAY_FLOOR * ||v||). 1e-150 is far
#: below any F worth reporting (at t lambda_2 = 300 the decaying part is still about 1e-130) and
#: far above the float64 underflow (1e-308), so squares of the floor stay representable.
DECAY_FLOOR = 1e-150


#: an adjacency counts as symmetric when ``max |W - W^T| <= SYMMETRY_RTOL * max(max W, 1)``:
#: about 1e4 units of roundoff, room for a matrix symmetrised in floating point, far below any
#: asymmetry that changes the heat flow
SYMMETRY_RTOL = 1e-12


class DiffusionAccuracyWarning(RuntimeWarning):
    """An engine stopped before reaching the requested accuracy (the estimate is in the message)."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def warn_caller(message: str, category: type[Warning] = DiffusionAccuracyWarning) -> None:
    """``warnings.warn`` attributed to the first frame outside ``n2ngraph.diffusion``: the line
    that called the public function, however deep inside the package the warning arises."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


@contextlib.contextmanager
def quiet_scipy():
    """Drop warnings raised inside scipy calls; engines check their own accuracy and warn with
    :class:`DiffusionAccuracyWarning` where it matters, so scipy's internal notices (sparse
    efficiency, ARPACK notices, expm_multiply trace notes) never reach users."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _is_graph(g) -> bool:
    from n2ngraph.graph import NetworkGraph

    return isinstance(g, NetworkGraph)


def _check_block_weights(g) -> None:
    """Refuse negative or non-finite pair weights, naming the block and the channel pair."""
    for b in g.blocks:
        pw = b.pair_weight
        if b.mask is None or pw is None:
            continue
        kept = b.pair_mask()
        bad = kept & ~(np.isfinite(pw) & (pw >= 0))
        if bad.any():
            r, c = (int(i[0]) for i in np.nonzero(bad))
            raise ValueError(
                f"block {b.name!r} ({b.src} -> {b.dst}) has pair weight {float(pw[r, c])!r} at "
                f"(out {r}, in {c}); heat diffusion needs finite weights >= 0 (0 is allowed: "
                "the pair then carries no heat)"
            )


def adjacency_of(g, *, weighted: bool) -> sp.csr_array:
    """Validated symmetric, non-negative CSR adjacency of a NetworkGraph or a sparse matrix.

    Weights must be finite and ``>= 0``; a zero weight is allowed and joins nothing (the pair
    carries no heat, as if it were absent). A NetworkGraph's pair weights are checked block by
    block (the error names the block); a sparse matrix's entries are checked one by one (the
    error names the entry).
    """
    if _is_graph(g):
        if weighted:
            _check_block_weights(g)
        W = sp.csr_array(g.adjacency(weighted=weighted))
        _check_degrees(W)
        return W
    if not sp.issparse(g):
        raise TypeError(
            f"expected a n2ngraph.NetworkGraph or a scipy.sparse adjacency matrix, got "
            f"{type(g).__name__}"
        )
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"adjacency must be square, got shape {g.shape}")
    W = sp.csr_array(g, dtype=np.float64, copy=True)
    W.sum_duplicates()
    if W.nnz:
        bad = ~np.isfinite(W.data) | (W.data < 0)
        if bad.any():
            k = int(np.argmax(bad))
            row = int(np.searchsorted(W.indptr, k, side="right") - 1)
            value = float(W.data[k])
            what = "non-finite" if not np.isfinite(value) else "negative"
            raise ValueError(
                f"adjacency has {what} weight {value!r} at entry ({row}, {int(W.indices[k])}); "
                "heat diffusion needs finite weights >= 0"
            )
    diff = abs(W - W.T)
    scale = W.data.max() if W.nnz else 0.0
    if diff.nnz and diff.max() > SYMMETRY_RTOL * max(scale, 1.0):
        raise ValueError(
            f"adjacency is not symmetric (max |W - W.T| = {diff.max():.3g}); pass an undirected "
            "graph, e.g. W.maximum(W.T) or (W + W.T) / 2"
        )
    if W.diagonal().any():
        warn_caller(
            "adjacency has self-loops; they are dropped (a NetworkGraph adjacency never has any)",
            UserWarning,
        )
        W = sp.csr_array(W - sp.diags_array(W.diagonal()))
    W.eliminate_zeros()
    _check_degrees(W)
    return W


def _check_degrees(W: sp.csr_array) -> None:
    with np.errstate(over="ignore"):
        d = np.asarray(W.sum(axis=1)).ravel()
    if d.size and not np.all(np.isfinite(d)):
        i = int(np.argmax(~np.isfinite(d)))
        raise ValueError(
            f"the degree of node {i} overflows float64 (sum of its weights); rescale the weights"
        )


@dataclass
class HeatProblem:
    """A Laplacian with the quantities every engine needs.

    ``L`` is CSR float64, ``labels`` the connected-component label of each node, ``null`` the
    per-node null-space weights (1 for ``D - W``, ``sqrt(d)`` for the normalized Laplacian, 1 on
    isolated nodes), so component ``c``'s null vector is ``null * (labels == c)``.
    ``lam_max`` is a guaranteed upper bound of the spectrum (Gershgorin: ``2 max d``, or 2).
    ``decay_lb`` is a guaranteed lower bound of the smallest non-zero eigenvalue (Mohar 1991,
    doi:10.1007/BF01789463: ``lambda_2 >= 4 / (n_c diam) >= 4 / n_c^2`` on a connected graph of
    ``n_c`` nodes; times ``w_min`` for weights, divided by ``max d`` for the normalized Laplacian),
    so ``||exp(-tL) v'|| <= exp(-t decay_lb) ||v'||`` for ``v'`` off the null space.
    """

    L: sp.csr_array
    labels: np.ndarray
    n_components: int
    null: np.ndarray
    lam_max: float
    normalized: bool
    decay_lb: float = 0.0

    @property
    def n(self) -> int:
        return self.L.shape[0]

    @property
    def nnz(self) -> int:
        return int(self.L.nnz)

    @functools.cached_property
    def null_norms2(self) -> np.ndarray:
        """Squared norm of each component's null vector, shape ``(n_components,)``: the
        denominators of the projection on the null space (every backend uses these)."""
        u = self.null
        return np.bincount(self.labels, weights=u * u, minlength=self.n_components)

    def null_part(self, v: np.ndarray) -> np.ndarray:
        """Orthogonal projection of ``v`` (shape ``(n,)`` or ``(k, n)``) on the null space of L."""
        u = self.null
        denom = self.null_norms2
        v2 = np.atleast_2d(v)
        out = np.empty_like(v2, dtype=np.float64)
        for i, row in enumerate(v2):
            coef = np.bincount(self.labels, weights=u * row, minlength=self.n_components) / denom
            out[i] = coef[self.labels] * u
        return out.reshape(np.shape(v))

    def split(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(P0 v, v - P0 v)``: the exact saturation part and the part that diffuses."""
        v0 = self.null_part(v)
        return v0, v - v0


def laplacian_matrix(W: sp.csr_array, *, normalized: bool) -> tuple[sp.csr_array, np.ndarray]:
    """``L = D - W`` or ``I - D^-1/2 W D^-1/2`` (0 on the diagonal of isolated nodes), and ``d``."""
    d = np.asarray(W.sum(axis=1)).ravel()
    n = W.shape[0]
    if not normalized:
        L = sp.csr_array(sp.diags_array(d, format="csr") - W)
    else:
        with np.errstate(divide="ignore"):
            s = np.where(d > 0, 1.0 / np.sqrt(d), 0.0)
        S = sp.diags_array(s, format="csr")
        L = sp.csr_array(sp.diags_array((d > 0).astype(np.float64), format="csr") - S @ W @ S)
    L.sum_duplicates()
    L.sort_indices()
    if L.indices.dtype != np.int32 and n < 2**31 - 1 and L.nnz < 2**31 - 1:
        L.indices = L.indices.astype(np.int32)
        L.indptr = L.indptr.astype(np.int32)
    return L, d


def build_problem(g, *, weighted: bool = False, normalized: bool = False) -> HeatProblem:
    """The :class:`HeatProblem` of a graph or adjacency. A NetworkGraph is immutable, so its
    problem is cached beside its adjacency (``g._cache``), as PyGSP caches L and lambda_max."""
    key = ("n2ngraph.diffusion.problem", bool(weighted), bool(normalized))
    cache = getattr(g, "_cache", None) if _is_graph(g) else None
    if cache is not None and key in cache:
        return cache[key]
    W = adjacency_of(g, weighted=weighted)
    L, d = laplacian_matrix(W, normalized=normalized)
    # W is symmetric, so strong components of the directed view are the components; this
    # avoids the transpose that directed=False builds (3x faster on the dense paper MLP)
    n_comp, labels = connected_components(W, directed=True, connection="strong")
    if normalized:
        null = np.where(d > 0, np.sqrt(d), 1.0)
        lam_max = 2.0 if W.nnz else 0.0
    else:
        null = np.ones(W.shape[0])
        lam_max = 2.0 * float(d.max()) if W.nnz else 0.0
    if not np.isfinite(lam_max):
        raise ValueError("the Laplacian's spectral bound 2 max(d) overflows float64; rescale the weights")
    decay_lb = 0.0
    if W.nnz:
        largest = float(np.bincount(labels).max())
        decay_lb = 4.0 * float(W.data.min()) / largest**2
        if normalized:
            decay_lb /= float(d.max())
    problem = HeatProblem(L, labels.astype(np.intp), int(n_comp), null, lam_max, bool(normalized),
                          decay_lb)
    if cache is not None:
        cache[key] = problem
    return problem


def _float64_copy(x, overflow: Callable[[], str], not_numeric: Callable[[], str]) -> np.ndarray:
    """``x`` as a new float64 array; ``ValueError(overflow())`` when a value overflows float64
    (e.g. ``10**400`` as an int), ``TypeError(not_numeric())`` when it is not numeric."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # numpy's overflow notice
            return np.array(x, dtype=np.float64)
    except (OverflowError, RuntimeWarning):
        raise ValueError(overflow()) from None
    except (TypeError, ValueError):
        raise TypeError(not_numeric()) from None


def as_times(t) -> tuple[np.ndarray, bool]:
    """Validate diffusion times: float64 1-D array (``inf`` allowed) and whether ``t`` was scalar."""
    times = _float64_copy(
        t, lambda: f"t = {t!r} overflows float64; diffusion times must be finite or inf",
        lambda: f"t must be a number or a 1-D array of numbers, got {t!r}")
    scalar = times.ndim == 0
    if times.ndim > 1:
        raise ValueError(f"t must be a scalar or a 1-D array, got shape {times.shape}")
    times = np.atleast_1d(times)
    if np.isnan(times).any():
        raise ValueError("t contains NaN; diffusion times must be >= 0 (inf allowed)")
    if np.isneginf(times).any():
        raise ValueError("t contains -inf; diffusion times must be >= 0 (inf allowed)")
    if (times < 0).any():
        raise ValueError(f"t must be >= 0 (inf allowed), got {times[times < 0][0]:g}")
    return times, scalar


def safe_norms(X: np.ndarray) -> np.ndarray:
    """2-norms of the rows of ``X`` (or of a vector) without underflow or overflow of the
    squares: each row is divided by its largest entry first (as LAPACK's ``dnrm2`` does)."""
    X = np.asarray(X, dtype=np.float64)
    X2 = np.atleast_2d(X)
    peak = np.max(np.abs(X2), axis=1) if X2.shape[1] else np.zeros(X2.shape[0])
    safe = np.where(peak > 0, peak, 1.0)
    out = peak * np.linalg.norm(X2 / safe[:, None], axis=1)
    return out[0] if X.ndim == 1 else out


def power_of_two_scale(A: np.ndarray) -> float:
    """A power of two ``s`` with ``max |A| / s`` in ``[0.5, 1)`` (1 for ``A = 0``): diffusion is
    linear, so engines work on ``A / s`` (exact: only the exponent changes) and results are
    multiplied back. Sources as large as ``1e300``, whose squares overflow, and subnormal
    sources then behave like any others."""
    peak = float(np.max(np.abs(A))) if A.size else 0.0
    if peak == 0.0:
        return 1.0
    return float(np.ldexp(1.0, np.frexp(peak)[1]))


def as_sources(g, sources, n: int) -> np.ndarray:
    """Initial heat ``A``, shape ``(n,)``: ``sources`` or the graph's input-node indicator."""
    if sources is None:
        if not _is_graph(g):
            raise ValueError(
                "sources is required with a sparse adjacency (a NetworkGraph defaults to its "
                "input nodes); pass a length-n vector of initial heat"
            )
        A = np.zeros(n)
        A[g.input_nodes] = 1.0
        return A
    A = _float64_copy(
        sources, lambda: "sources overflow float64; initial heat must be finite",
        lambda: f"sources must be a length-{n} numeric vector, got {type(sources).__name__}")
    if A.shape != (n,):
        raise ValueError(f"sources must have shape ({n},) (one value per node), got {A.shape}")
    if not np.all(np.isfinite(A)):
        i = int(np.argmax(~np.isfinite(A)))
        raise ValueError(
            f"sources[{i}] = {A[i]!r}; initial heat must be finite (large finite values are fine)"
        )
    return A

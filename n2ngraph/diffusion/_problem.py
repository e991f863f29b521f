"""Input handling shared by every engine: graph or adjacency -> Laplacian, null space, sources, times.

Everything here is O(nnz); no engine work, no torch.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = ["DiffusionAccuracyWarning", "HeatProblem", "as_sources", "as_times", "build_problem"]


class DiffusionAccuracyWarning(RuntimeWarning):
    """An engine stopped before reaching the requested accuracy (the estimate is in the message)."""


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


def adjacency_of(g, *, weighted: bool) -> sp.csr_array:
    """Validated symmetric, non-negative CSR adjacency of a NetworkGraph or a sparse matrix."""
    if _is_graph(g):
        return sp.csr_array(g.adjacency(weighted=weighted))
    if not sp.issparse(g):
        raise TypeError(
            f"expected a n2ngraph.NetworkGraph or a scipy.sparse adjacency matrix, got "
            f"{type(g).__name__}"
        )
    W = sp.csr_array(g, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"adjacency must be square, got shape {W.shape}")
    W.sum_duplicates()
    if W.nnz and not np.all(np.isfinite(W.data)):
        raise ValueError("adjacency has non-finite entries (NaN or inf); weights must be finite")
    if W.nnz and W.data.min() < 0:
        raise ValueError(
            f"adjacency has negative weight {W.data.min():g}; heat diffusion needs weights >= 0"
        )
    diff = abs(W - W.T)
    scale = W.data.max() if W.nnz else 0.0
    if diff.nnz and diff.max() > 1e-12 * max(scale, 1.0):
        raise ValueError(
            f"adjacency is not symmetric (max |W - W.T| = {diff.max():.3g}); pass an undirected "
            "graph, e.g. W.maximum(W.T) or (W + W.T) / 2"
        )
    if W.diagonal().any():
        warnings.warn(
            "adjacency has self-loops; they are dropped (a NetworkGraph adjacency never has any)",
            UserWarning,
            stacklevel=4,
        )
        W = sp.csr_array(W - sp.diags_array(W.diagonal()))
        W.eliminate_zeros()
    return W


@dataclass
class HeatProblem:
    """A Laplacian with the quantities every engine needs.

    ``L`` is CSR float64, ``labels`` the connected-component label of each node, ``null`` the
    per-node null-space weights (1 for ``D - W``, ``sqrt(d)`` for the normalized Laplacian, 1 on
    isolated nodes), so component ``c``'s null vector is ``null * (labels == c)``.
    ``lam_max`` is a guaranteed upper bound of the spectrum (Gershgorin: ``2 max d``, or 2).
    """

    L: sp.csr_array
    labels: np.ndarray
    n_components: int
    null: np.ndarray
    lam_max: float
    normalized: bool

    @property
    def n(self) -> int:
        return self.L.shape[0]

    @property
    def nnz(self) -> int:
        return int(self.L.nnz)

    def null_part(self, v: np.ndarray) -> np.ndarray:
        """Orthogonal projection of ``v`` (shape ``(n,)`` or ``(k, n)``) on the null space of L."""
        u = self.null
        denom = np.bincount(self.labels, weights=u * u, minlength=self.n_components)
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
    problem = HeatProblem(L, labels.astype(np.intp), int(n_comp), null, lam_max, bool(normalized))
    if cache is not None:
        cache[key] = problem
    return problem


def as_times(t) -> tuple[np.ndarray, bool]:
    """Validate diffusion times: float64 1-D array (``inf`` allowed) and whether ``t`` was scalar."""
    try:
        times = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"t must be a number or a 1-D array of numbers, got {t!r}") from None
    scalar = times.ndim == 0
    if times.ndim > 1:
        raise ValueError(f"t must be a scalar or a 1-D array, got shape {times.shape}")
    times = np.atleast_1d(times)
    if np.isnan(times).any():
        raise ValueError("t contains NaN; diffusion times must be >= 0 (inf allowed)")
    if (times < 0).any():
        raise ValueError(f"t must be >= 0 (inf allowed), got {times[times < 0][0]:g}")
    return times, scalar


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
    try:
        A = np.array(sources, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"sources must be a length-{n} numeric vector, got {type(sources).__name__}") from None
    if A.shape != (n,):
        raise ValueError(f"sources must have shape ({n},) (one value per node), got {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError("sources contain NaN or inf; initial heat must be finite")
    return A

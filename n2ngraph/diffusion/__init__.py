"""Heat-diffusion connectivity analysis (PAPER.md, "Heat-diffusion connectivity analysis").

A network is an undirected graph with symmetric adjacency ``W`` (``NetworkGraph.adjacency``,
nodes in the graph's node order: group by group, topological), degrees ``D``, Laplacian
``L = D - W`` (or ``I - D^-1/2 W D^-1/2`` with ``normalized=True``). The heat signature is

    S(t) = exp(-t L) A,

``A`` the initial heat (by default 1 on the input group, 0 elsewhere). This module computes
``S`` sparse, for a whole grid of ``t`` at once, with one of several engines (``ENGINES``),
plus the quantities built on it: the connectivity distance ``F``, scree diagrams, the saturation
time and the algebraic connectivity. See ``docs/diffusion.md`` for what ``F`` means and which
``t`` to use.

Every function takes a :class:`~n2ngraph.graph.NetworkGraph` or a symmetric, non-negative
``scipy.sparse`` adjacency (then ``sources`` is required). torch is imported only by the
``torch`` engine.

References
----------
A. Subramaniam and A. Sharma, "N2NSkip: Learning Highly Sparse Networks using Neuron-to-Neuron
Skip Connections", BMVC 2020, arXiv:2208.03662.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from n2ngraph.diffusion._chebyshev import chebyshev_engine, chebyshev_terms
from n2ngraph.diffusion._expm import DENSE_MAX_NODES, dense_engine, expm_engine
from n2ngraph.diffusion._krylov import (
    DEFAULT_BASIS_BYTES,
    Lanczos,
    NumpyBackend,
    _run_to_tolerance,
    basis_steps,
)
from n2ngraph.diffusion._problem import (
    DiffusionAccuracyWarning,
    HeatProblem,
    adjacency_of,
    as_sources,
    as_times,
    build_problem,
    laplacian_matrix,
)
from n2ngraph.diffusion._scree import algebraic_connectivity_of, scree_values

__all__ = [
    "ENGINES",
    "DiffusionAccuracyWarning",
    "algebraic_connectivity",
    "connectivity_distance",
    "heat_signature",
    "laplacian",
    "saturation_time",
    "scree",
]

#: default relative accuracy of the iterative engines (well inside the 1e-8 the tests demand)
DEFAULT_RTOL = 1e-10


# ------------------------------------------------------------------------------------- engines
def _krylov(problem, v, times, *, rtol, v0_norm, max_basis_bytes=DEFAULT_BASIS_BYTES, **_):
    lz = Lanczos(NumpyBackend(problem), v, basis_steps(problem.n, max_basis_bytes))
    ok = _run_to_tolerance(lz, times, v0_norm, rtol)
    return lz.evaluate(times), lz.bound(times), ok


def _chebyshev(problem, v, times, *, rtol, v0_norm, **_):
    return chebyshev_engine(problem, v, times, rtol=rtol, v0_norm=v0_norm)


def _expm(problem, v, times, **_):
    return expm_engine(problem, v, times), None, True


def _dense(problem, v, times, **_):
    return dense_engine(problem, v, times), None, True


def _torch(problem, v, times, *, rtol, v0_norm, device=None,
           max_basis_bytes=DEFAULT_BASIS_BYTES, **_):
    from n2ngraph.diffusion._torch import torch_engine

    S, lz, ok = torch_engine(problem, v, times, rtol=rtol, v0_norm=v0_norm, device=device,
                             max_basis_bytes=max_basis_bytes)
    return S, lz.bound(times), ok


# Rough per-operation costs (nanoseconds on one core) for method='auto'; only their ratios matter.
_NS_PER_NNZ = 1.5  # sparse matvec, memory bound
_NS_PER_VEC_ENTRY = 0.5  # streaming a dense vector (axpy, dot, reorthogonalisation)
_NS_PER_EIGH_FLOP = 0.1  # dense eigh with vectors, per n^3


def _predicted_costs(problem: HeatProblem, times: np.ndarray, rtol: float) -> dict[str, float]:
    n, nnz, T = problem.n, problem.nnz, len(times)
    mv = _NS_PER_NNZ * nnz + _NS_PER_VEC_ENTRY * n
    costs = {}
    costs["dense"] = _NS_PER_EIGH_FLOP * n**3 + _NS_PER_VEC_ENTRY * T * n * n if n <= DENSE_MAX_NODES else np.inf
    K = chebyshev_terms(problem.lam_max, float(times[-1]), rtol)
    costs["chebyshev"] = K * (mv + _NS_PER_VEC_ENTRY * T * n)
    # Al-Mohy & Higham: about 1.5 t ||A||_1 matvecs for double precision (||L||_1 <= lam_max)
    costs["expm_multiply"] = (1.5 * float(times[-1]) * problem.lam_max + 10 * T) * mv
    return costs


def _auto(problem, v, times, *, rtol, v0_norm, max_basis_bytes=DEFAULT_BASIS_BYTES, **_):
    """Krylov first, with a work budget equal to the cheapest alternative's predicted cost; if
    Lanczos has not converged within it (or within the basis memory), that alternative runs.
    So ``auto`` costs at most about twice the best predicted engine, and usually the adaptive
    Krylov cost, which is far smaller on the highly degenerate spectra of layered networks."""
    costs = _predicted_costs(problem, times, rtol)
    n = problem.n
    if n <= 64:
        return _dense(problem, v, times)
    if "torch" in sys.modules and n >= 200_000:  # a GPU pays only on large graphs
        import torch

        if torch.cuda.is_available():
            return _torch(problem, v, times, rtol=rtol, v0_norm=v0_norm,
                          max_basis_bytes=max_basis_bytes)
    alt = min(costs, key=costs.get)
    mv = _NS_PER_NNZ * problem.nnz + 6 * _NS_PER_VEC_ENTRY * n
    lz = Lanczos(NumpyBackend(problem), v, basis_steps(n, max_basis_bytes))
    ok = _run_to_tolerance(lz, times, v0_norm, rtol, max_work=costs[alt],
                           step_cost=(mv, 4 * _NS_PER_VEC_ENTRY * n))
    if ok:
        return lz.evaluate(times), lz.bound(times), True
    del lz
    return ENGINES[alt](problem, v, times, rtol=rtol, v0_norm=v0_norm)


#: engine name -> callable ``(problem, v, times, *, rtol, v0_norm, **options)`` returning
#: ``(exp(-t L) v for each t, error bound per t or None, accuracy met)``.
ENGINES: dict[str, Callable[..., Any]] = {
    "auto": _auto,
    "krylov": _krylov,
    "chebyshev": _chebyshev,
    "expm_multiply": _expm,
    "torch": _torch,
    "dense": _dense,
}


def _engine(method: str):
    if not isinstance(method, str) or method not in ENGINES:
        raise ValueError(f"method {method!r} is not one of {sorted(ENGINES)}")
    return ENGINES[method]


# ---------------------------------------------------------------------------------- public API
def laplacian(g, *, normalized: bool = False, weighted: bool = False) -> sp.csr_array:
    """Graph Laplacian of a network graph.

    ``L = D - W`` with ``W`` the symmetric adjacency (binary, or ``|w|``-weighted with
    ``weighted=True``) and ``D = diag(W 1)``; with ``normalized=True``,
    ``L = I - D^{-1/2} W D^{-1/2}`` (isolated nodes get a zero row, the networkx convention).

    Parameters
    ----------
    g : NetworkGraph or scipy.sparse matrix
        The graph, or a symmetric non-negative adjacency of shape ``(n, n)``.
    normalized : bool
        Symmetric normalized Laplacian instead of ``D - W``.
    weighted : bool
        Use ``g.adjacency(weighted=True)`` (ignored for a sparse adjacency, used as given).

    Returns
    -------
    scipy.sparse.csr_array
        Shape ``(n, n)``, float64, nodes in the graph's node order.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> laplacian(sp.csr_array(np.array([[0, 1.0], [1.0, 0]]))).toarray()
    array([[ 1., -1.],
           [-1.,  1.]])
    """
    L, _ = laplacian_matrix(adjacency_of(g, weighted=weighted), normalized=normalized)
    return L


def _signature(g, t, sources, method, weighted, normalized, rtol, device, max_basis_bytes):
    engine = _engine(method)
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    times, scalar = as_times(t)
    problem = build_problem(g, weighted=weighted, normalized=normalized)
    A = as_sources(g, sources, problem.n)
    v0, vr = problem.split(A)
    out = np.empty((len(times), problem.n))
    out[times == 0] = A
    out[np.isinf(times)] = v0
    finite = np.isfinite(times) & (times > 0)
    if finite.any():
        uniq, inverse = np.unique(times[finite], return_inverse=True)
        if np.linalg.norm(vr) == 0.0 or problem.lam_max == 0.0:
            out[finite] = v0
        else:
            S, bound, ok = engine(problem, vr, uniq, rtol=rtol, v0_norm=float(np.linalg.norm(v0)),
                                  device=device, max_basis_bytes=max_basis_bytes)
            if not ok:
                worst = "unknown" if bound is None else f"{np.max(bound):.3g}"
                warnings.warn(
                    f"heat_signature(method={method!r}) stopped before reaching rtol={rtol:g} "
                    f"(largest absolute error bound {worst}); raise max_basis_bytes or use "
                    "method='chebyshev' or 'dense'",
                    DiffusionAccuracyWarning,
                    stacklevel=3,
                )
            out[finite] = v0 + S[inverse]
    return out, scalar, problem


def heat_signature(
    g,
    t,
    *,
    sources=None,
    method: str = "auto",
    weighted: bool = False,
    normalized: bool = False,
    rtol: float = DEFAULT_RTOL,
    device: str | None = None,
    max_basis_bytes: float = DEFAULT_BASIS_BYTES,
) -> np.ndarray:
    """Heat signature ``S(t) = exp(-t L) A`` for one ``t`` or a grid of times.

    The null space of ``L`` (constants on each connected component, ``sqrt(d)`` for the
    normalized Laplacian) is split off analytically: ``A = P0 A + A'``, ``S(t) = P0 A +
    exp(-t L) A'``, so ``t = 0`` returns ``A`` exactly, ``t = inf`` returns ``P0 A`` exactly
    (the per-component mean of the sources for ``L = D - W``; from connected components, no
    diffusion), and only ``A'`` goes through an engine.

    Parameters
    ----------
    g : NetworkGraph or scipy.sparse matrix
        The graph, or a symmetric non-negative adjacency ``(n, n)`` (then ``sources`` is required).
    t : float or array_like of shape (T,)
        Diffusion times, ``>= 0``; ``inf`` allowed. Repeated and unsorted values are fine.
    sources : array_like of shape (n,), optional
        Initial heat ``A``. Default: 1 on ``g.input_nodes``, 0 elsewhere.
    method : {"auto", "krylov", "chebyshev", "expm_multiply", "torch", "dense"}
        Engine (``ENGINES``). ``krylov``: Lanczos with full reorthogonalisation, one basis for all
        ``t``, stopped by a rigorous a posteriori bound. ``chebyshev``: Chebyshev series with an a
        priori truncation bound. ``expm_multiply``: scipy's Al-Mohy-Higham algorithm, times chained
        (cost grows with ``t * ||L||_1``). ``torch``: the Lanczos engine on torch sparse tensors
        (``device``, CUDA when available). ``dense``: ``eigh`` of the dense ``L`` (small graphs,
        the paper's route, the reference). ``auto``: Krylov within the predicted cost of the
        cheapest alternative, else that alternative.
    weighted, normalized : bool
        Which Laplacian (see :func:`laplacian`).
    rtol : float
        Target of the iterative engines: ``||S_engine(t) - S(t)||_2 <= rtol * ||S(t)||_2`` for every
        ``t``. ``expm_multiply`` and ``dense`` are accurate to about unit roundoff times their
        condition and ignore it.
    device : str, optional
        torch device for ``method="torch"``.
    max_basis_bytes : float
        Memory cap of the Krylov basis (default 2 GiB); at the cap ``krylov`` warns with its
        error bound and ``auto`` switches to Chebyshev.

    Returns
    -------
    ndarray
        Shape ``(n,)`` for scalar ``t``, ``(T, n)`` for an array (rows in the order of ``t``),
        nodes in the graph's node order.

    Raises
    ------
    ValueError
        Negative or NaN ``t``; ``sources`` of the wrong length; an adjacency that is not square,
        symmetric and non-negative; an unknown ``method``.

    Warns
    -----
    DiffusionAccuracyWarning
        An iterative engine stopped before ``rtol`` (basis memory cap, series length cap).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> W = sp.csr_array(np.array([[0, 1.0], [1.0, 0]]))
    >>> heat_signature(W, [0.0, np.inf], sources=[1.0, 0.0])
    array([[1. , 0. ],
           [0.5, 0.5]])
    """
    out, scalar, _ = _signature(g, t, sources, method, weighted, normalized, rtol, device,
                                max_basis_bytes)
    return out[0] if scalar else out


def _node_set(g):
    if hasattr(g, "groups") and hasattr(g, "num_nodes"):
        return tuple((grp.name, grp.size) for grp in g.groups)
    if sp.issparse(g):
        return ("adjacency", g.shape[0])
    raise TypeError(f"expected a NetworkGraph or a scipy.sparse adjacency, got {type(g).__name__}")


def connectivity_distance(reference, g, t, *, sources=None, **options) -> float | np.ndarray:
    """Connectivity distance ``F(t) = ||S_ref(t) - S(t)||_2`` (PAPER.md, N2NSkip eq. for F).

    Both signatures are computed with the same options, the same ``t`` and the same sources (by
    default the input nodes, which coincide because the node sets must). Lower ``F`` means
    connectivity closer to the reference. At ``t = inf``, ``F`` is 0 for a connected ``g`` and
    measures the heat trapped by disconnection otherwise; at finite ``t`` it measures how fast
    heat spreads (``docs/diffusion.md`` recommends ``t`` of about 1-4 / lambda_2 of the reference).

    Parameters
    ----------
    reference, g : NetworkGraph or scipy.sparse matrix
        Graphs on the same node set: NetworkGraphs with the same groups (names and sizes), or
        adjacencies of the same shape.
    t : float or array_like of shape (T,)
        Diffusion times (see :func:`heat_signature`).
    sources : array_like of shape (n,), optional
        Initial heat, shared by both graphs.
    **options
        ``method``, ``weighted``, ``normalized``, ``rtol``, ``device`` as in :func:`heat_signature`.

    Returns
    -------
    float or ndarray of shape (T,)
    """
    a, b = _node_set(reference), _node_set(g)
    if a != b:
        raise ValueError(
            "connectivity_distance needs graphs on the same node set; the reference has groups "
            f"{a[:6]}{'...' if len(a) > 6 else ''} and g has {b[:6]}{'...' if len(b) > 6 else ''}"
        )
    if sources is None and not sp.issparse(reference):
        sources = as_sources(reference, None, reference.num_nodes)
    s_ref = heat_signature(reference, t, sources=sources, **options)
    s = heat_signature(g, t, sources=sources, **options)
    dist = np.linalg.norm(s_ref - s, axis=-1)
    return float(dist) if np.ndim(dist) == 0 else dist


def scree(g, K, t, *, weighted: bool = False, normalized: bool = False, method: str = "auto",
          n_probes: int = 64, seed=None, return_error: bool = False):
    """Scree diagram value ``alpha(K, t)`` (PAPER.md)::

        alpha(K, t) = sum_{k=2}^{K+1} exp(-t lambda_k) / sum_{k=2}^{n} exp(-t lambda_k),

    eigenvalues of ``L`` ascending, ``lambda_1 = 0`` excluded (for a disconnected graph the
    other zeros are kept, as in the paper). Evaluated shifted by ``lambda_2`` (numerator and
    denominator multiplied by ``exp(t lambda_2)``), so large ``t`` neither underflows nor gives
    0/0; ``t = inf`` is the limit: the share of the first ``K`` among the eigenvalues equal to
    ``lambda_2``. The null space is exact: the ``c`` smallest eigenvalues (``c`` components) are 0.

    Parameters
    ----------
    g : NetworkGraph or scipy.sparse matrix
    K : int or array_like of int
        Number of eigenvalues in the numerator, ``1 <= K <= n - 1``. A percentage ``p`` of the
        ``n`` eigenvalues is ``K = round(p / 100 * n)``.
    t : float or array_like of shape (T,)
        Diffusion times ``>= 0`` (``inf`` allowed).
    method : {"auto", "exact", "approx"}
        ``exact``: dense ``eigvalsh`` (``n <= 20000``). ``approx``: the ``max(K) + 1`` smallest
        eigenvalues by shift-invert Lanczos with the null space deflated exactly, plus a stochastic
        Lanczos quadrature estimate (Ubaru, Chen & Saad 2017, doi:10.1137/16M1104974) of the
        remaining trace ``tr(exp(-t (L - lambda_2)) (I - V V^T))`` with the found eigenvectors
        projected out of ``n_probes`` Rademacher probes. ``auto``: exact up to 5000 nodes.
    n_probes : int
        Probes of the trace estimate (``approx`` only).
    seed : int or numpy Generator, optional
        Probe randomness (``approx`` only).
    return_error : bool
        Also return an error estimate of the same shape: 0 for ``exact`` (up to rounding), for
        ``approx`` two standard errors of the trace estimate propagated to ``alpha``.

    Returns
    -------
    ndarray or float
        Shape ``(len(K), T)`` with array ``K`` and ``t``, squeezed where either is scalar.
    """
    if method not in ("auto", "exact", "approx"):
        raise ValueError(f"scree method {method!r} is not one of ['approx', 'auto', 'exact']")
    times, t_scalar = as_times(t)
    K_arr = np.asarray(K)
    if K_arr.dtype.kind not in "iu" or K_arr.ndim > 1:
        raise TypeError(
            f"K must be an int or a 1-D array of ints (a percentage p is K = round(p / 100 * n)), got {K!r}"
        )
    k_scalar = K_arr.ndim == 0
    K_arr = np.atleast_1d(K_arr).astype(np.int64)
    problem = build_problem(g, weighted=weighted, normalized=normalized)
    if problem.n < 2:
        raise ValueError("scree needs a graph with at least 2 nodes")
    if K_arr.min() < 1 or K_arr.max() > problem.n - 1:
        raise ValueError(f"K must be in [1, n - 1] = [1, {problem.n - 1}], got {K_arr.tolist()}")
    if method == "auto":
        method = "exact" if problem.n <= 5000 else "approx"
    alpha, err = scree_values(problem, K_arr, times, method=method, n_probes=n_probes, seed=seed)
    if t_scalar:
        alpha, err = alpha[:, 0], err[:, 0]
    if k_scalar:
        alpha, err = alpha[0], err[0]
    if np.ndim(alpha) == 0:
        alpha, err = float(alpha), float(err)
    return (alpha, err) if return_error else alpha


def saturation_time(g, eps: float, *, sources=None, weighted: bool = False,
                    normalized: bool = False, rtol: float = 1e-6) -> float:
    """Smallest ``t`` with ``||S(t) - S(inf)||_2 <= eps`` (DESIGN.md, "Heat diffusion").

    ``||S(t) - S(inf)|| = ||exp(-t L) A'||`` (``A'`` the sources minus their null-space part) is
    non-increasing in ``t`` because ``L >= 0``, so the crossing is unique. A Lanczos basis is
    built to an absolute accuracy of ``rtol * eps`` at a bracketing time (grown by factors of 4
    from ``ln(||A'|| / eps) / lambda_max``), then the crossing is found by Brent's method on the
    small tridiagonal problem. Returns 0.0 when ``||A'|| <= eps`` already.

    Parameters
    ----------
    g : NetworkGraph or scipy.sparse matrix
    eps : float
        Absolute tolerance on the 2-norm, ``> 0``.
    sources, weighted, normalized
        As in :func:`heat_signature`.
    rtol : float
        Relative accuracy of the returned time's defining norm.

    Returns
    -------
    float
    """
    from scipy.optimize import brentq

    if not (isinstance(eps, (int, float, np.floating)) and np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    problem = build_problem(g, weighted=weighted, normalized=normalized)
    A = as_sources(g, sources, problem.n)
    _, vr = problem.split(A)
    r0 = float(np.linalg.norm(vr))
    if r0 <= eps:
        return 0.0
    lz = Lanczos(NumpyBackend(problem), vr, basis_steps(problem.n, DEFAULT_BASIS_BYTES))
    # ||exp(-tL) A'|| >= exp(-t lam_max) ||A'||: no crossing before t_lo
    t_lo = np.log(r0 / eps) / problem.lam_max
    t_hi = t_lo
    tol = rtol * eps
    for _ in range(400):
        if not lz.run(np.array([t_hi]), tol) and not lz.breakdown:
            warnings.warn(
                f"saturation_time: Krylov basis cap reached before accuracy {tol:.3g} at "
                f"t={t_hi:.3g}", DiffusionAccuracyWarning, stacklevel=2,
            )
        if lz.norm(np.array([t_hi]))[0] <= eps:
            break
        t_lo, t_hi = t_hi, 4.0 * t_hi
    else:  # pragma: no cover - needs lambda_2 below ~1e-240
        raise ValueError("saturation_time: heat does not saturate within t = 1e240")
    if t_hi == t_lo:
        return float(t_hi)

    def gap(logt):
        return np.log(max(lz.norm(np.array([np.exp(logt)]))[0], 1e-300) / eps)

    if gap(np.log(t_lo)) <= 0:
        return float(t_lo)
    return float(np.exp(brentq(gap, np.log(t_lo), np.log(t_hi), xtol=1e-13, rtol=1e-13)))


def algebraic_connectivity(g, *, weighted: bool = False, normalized: bool = False,
                           rtol: float = 1e-10) -> float:
    """Algebraic connectivity ``lambda_2`` (Fiedler 1973, doi:10.21136/CMJ.1973.101168).

    The second-smallest eigenvalue of ``L``: 0 exactly when the graph is disconnected (read off
    the connected components, no eigensolve). For a connected graph: dense ``eigvalsh`` up to
    2000 nodes, else Lanczos on a random start vector with the constants projected out, stopped
    when the smallest Ritz value's residual bound ``beta_m |Q_m1|`` is below ``rtol * theta``
    (Ritz values of the deflated operator are >= lambda_2, and within the residual of it).

    Parameters
    ----------
    g : NetworkGraph or scipy.sparse matrix
        At least 2 nodes.
    weighted, normalized : bool
        Which Laplacian.
    rtol : float
        Relative accuracy.

    Returns
    -------
    float
    """
    problem = build_problem(g, weighted=weighted, normalized=normalized)
    return algebraic_connectivity_of(problem, rtol=rtol)

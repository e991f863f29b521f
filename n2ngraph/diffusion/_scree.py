"""Spectra: scree diagrams alpha(K, t) and the algebraic connectivity lambda_2.

Measured pitfalls designed around: ``eigsh(which="SA")`` misses repeated eigenvalues of
layered (MLP) graphs, whose spectra are highly degenerate; shift-invert Lanczos on the deflated
operator finds them (LOBPCG with large blocks stalled here). The null space (one constant per component) is known exactly and deflated
analytically. Scree sums are shifted by lambda_2 so large ``t`` does not underflow.
"""

from __future__ import annotations

import numpy as np

from n2ngraph.diffusion._expm import dense_spectrum
from n2ngraph.diffusion._krylov import Lanczos, NumpyBackend
from n2ngraph.diffusion._problem import quiet_scipy, warn_caller

__all__ = [
    "LAMBDA2_DENSE_MAX_NODES",
    "SCREE_EXACT_MAX_NODES",
    "algebraic_connectivity_of",
    "scree_values",
    "smallest_eigenpairs",
]

#: eigenvalues closer than this (relative to lam_max) count as tied in the t = inf limit
_TIE = 1e-9

#: ``scree(method="auto")`` is exact (dense ``eigvalsh``: O(n^3) time, 8 n^2 bytes) up to this
#: many nodes (200 MB, seconds); beyond it the O(nnz)-per-step approximation, which reports its
#: own error, is the cheaper route
SCREE_EXACT_MAX_NODES = 5000
#: ``approx`` solves for at most this many eigenpairs by shift-invert Lanczos: ARPACK's work and
#: memory grow with ``q * ncv * n`` (``ncv ~ 2q``), past which ``exact`` on a smaller graph or a
#: smaller K is the better route
APPROX_MAX_EIGENPAIRS = 2000
#: extra Lanczos vectors ARPACK keeps beyond the ``q`` wanted (``ncv = max(2 q + 20, 40)``):
#: the usual ``ncv > 2 q`` advice with room for the clustered spectra of layered graphs
ARPACK_EXTRA_VECTORS = 20
ARPACK_MIN_VECTORS = 40
#: ``smallest_eigenpairs`` warns when an eigen-residual ``||L x - lambda x||`` exceeds this
#: fraction of ``lam_max``: such eigenvalues are off by up to that much, visible in alpha
EIGEN_RESIDUAL_WARN = 1e-6
#: shift of the shift-invert solve, relative to ``lam_max``: small enough that ``(L + s I)^-1``
#: separates the smallest eigenvalues well, large enough that ``L + s I`` factors stably
SHIFT_INVERT_REL = 1e-4
#: stochastic Lanczos quadrature: at most this many Lanczos steps per probe, checked every
#: ``SLQ_STEPS_PER_CHECK`` steps, stopped once the quadrature changes by less than ``SLQ_RTOL``
#: (m-point Gauss quadrature of exp converges superlinearly in m, so the cap is rarely reached
#: and only bounds the basis memory, 400 n floats)
SLQ_MAX_STEPS = 400
SLQ_STEPS_PER_CHECK = 10
SLQ_RTOL = 1e-10
#: ``return_error`` reports this many standard errors of the trace estimate (a 3-sigma bound)
ERROR_STANDARD_ERRORS = 3.0
#: ``algebraic_connectivity`` uses dense ``eigvalsh`` up to this many nodes (32 MB, well under
#: the cost of setting up a converged Lanczos run), Lanczos beyond it
LAMBDA2_DENSE_MAX_NODES = 2000
#: Lanczos steps of the lambda_2 solve between two convergence checks
LAMBDA2_STEPS_PER_CHECK = 8


def _alpha_from(lam_rest: np.ndarray, K: np.ndarray, times: np.ndarray, lam_max: float,
                tail: np.ndarray | None = None) -> np.ndarray:
    """alpha(K, t) from ascending eigenvalues lambda_2.. (all of them, or the first few plus the
    shifted tail sum ``tail[t]``), shape ``(len(K), T)``."""
    shift = lam_rest[0]
    d = lam_rest - shift
    out = np.empty((len(K), len(times)))
    for j, t in enumerate(times):
        if np.isinf(t):
            w = (d <= _TIE * max(lam_max, 1.0)).astype(float)
        else:
            w = np.exp(-t * d)
        cum = np.cumsum(w)
        total = cum[-1] + (0.0 if tail is None else tail[j])
        out[:, j] = cum[K - 1] / total
    return out


def smallest_eigenpairs(problem, q: int, *, seed=None,
                        tol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """The ``q`` smallest eigenpairs of ``L`` on the complement of its null space.

    Shift-invert Lanczos (ARPACK ``eigsh`` on ``P (L + s I)^-1 P``, sparse LU of ``L + s I``,
    ``s = SHIFT_INVERT_REL lam_max``, ``P`` the projector off the exact null space). Measured on the paper
    MLP at 2% and on layered graphs it recovers the repeated eigenvalues to ~1e-13, where plain
    ``eigsh(which="SA")`` misses them and LOBPCG with large blocks stalled. The sparse LU's
    fill-in limits this to graphs of up to a few 1e5 nodes.
    """
    from scipy.sparse import csc_matrix, eye_array
    from scipy.sparse.linalg import LinearOperator, eigsh, splu

    n = problem.n
    rng = np.random.default_rng(seed)
    shift = SHIFT_INVERT_REL * max(problem.lam_max, 1e-300)

    def project(x):
        return x - problem.null_part(x)

    with quiet_scipy():
        lu = splu(csc_matrix(problem.L + shift * eye_array(n)))
        op = LinearOperator((n, n), matvec=lambda x: project(lu.solve(project(np.ravel(x)))),
                            dtype=np.float64)
        v0 = project(rng.standard_normal(n))
        ncv = min(n - problem.n_components, max(2 * q + ARPACK_EXTRA_VECTORS, ARPACK_MIN_VECTORS))
        mu, V = eigsh(op, k=q, which="LM", v0=v0, ncv=ncv, tol=tol, maxiter=50 * n)
    lam = 1.0 / mu - shift
    order = np.argsort(lam)
    lam, V = lam[order], V[:, order]
    res = np.linalg.norm(problem.L @ V - V * lam, axis=0)
    if res.max() > EIGEN_RESIDUAL_WARN * max(problem.lam_max, 1.0):
        warn_caller(
            f"partial eigensolve: largest eigen-residual {res.max():.3g}; scree values may be "
            "inaccurate"
        )
    return np.maximum(lam, 0.0), V


def scree_values(problem, K: np.ndarray, times: np.ndarray, *, method: str, n_probes: int,
                 seed) -> tuple[np.ndarray, np.ndarray]:
    """``(alpha, error)`` of shape ``(len(K), T)``."""
    if method == "exact":
        lam = dense_spectrum(problem, vectors=False, what="the exact spectrum")
        return _alpha_from(lam[1:], K, times, problem.lam_max), np.zeros((len(K), len(times)))
    if not isinstance(n_probes, (int, np.integer)) or n_probes < 2:
        raise ValueError(f"n_probes must be an int >= 2, got {n_probes!r}")
    n, c = problem.n, problem.n_components
    p = int(K.max()) + 1  # eigenvalues lambda_1 .. lambda_{K+1}
    q = p - c  # non-zero ones needed
    if q > 0 and (q + ARPACK_EXTRA_VECTORS > n - c or q > APPROX_MAX_EIGENPAIRS):
        raise ValueError(
            f"scree(method='approx') solves for the max(K) + 1 = {p} smallest eigenvalues; that "
            f"is too many for n={n} (at most "
            f"{min(APPROX_MAX_EIGENPAIRS, n - c - ARPACK_EXTRA_VECTORS)} non-zero ones); use "
            "method='exact' or a smaller K"
        )
    rng = np.random.default_rng(seed)
    if q > 0:
        lam_nz, V = smallest_eigenpairs(problem, q, seed=rng)
    else:
        lam_nz, V = np.zeros(0), np.zeros((n, 0))
    lam = np.concatenate([np.zeros(c), lam_nz])[:p]
    lam_rest = lam[1:]
    shift = lam_rest[0]
    tail = np.zeros((n_probes, len(times)))
    finite = np.isfinite(times)
    for i in range(n_probes):
        z = rng.choice([-1.0, 1.0], size=n)
        z = z - problem.null_part(z)
        if V.shape[1]:
            z = z - V @ (V.T @ z)
        lz = Lanczos(NumpyBackend(problem), z, min(n, SLQ_MAX_STEPS))
        prev = None
        while True:
            lz.extend(SLQ_STEPS_PER_CHECK)
            theta, Q = lz.ritz()
            quad = lz.beta0**2 * (Q[0] ** 2) @ np.exp(
                -np.outer(np.maximum(theta, 0.0) - shift, times[finite]).clip(-700, None)
            ) if finite.any() else np.zeros(0)
            if lz.exhausted or (prev is not None and np.allclose(quad, prev, rtol=SLQ_RTOL, atol=0)):
                break
            prev = quad
        tail[i, finite] = quad
    zero_t = times == 0
    tail[:, zero_t] = n - p  # trace of the projector off the known eigenvectors, exact
    est = tail.mean(axis=0)
    se = tail.std(axis=0, ddof=1) / np.sqrt(n_probes)
    se[zero_t] = 0.0
    est[~finite] = 0.0  # tail eigenvalues exceed lambda_{K+1} >= lambda_2: no weight at t = inf
    alpha = _alpha_from(lam_rest, K, times, problem.lam_max, tail=est)
    shifted = np.exp(-np.outer(np.where(finite, times, 0.0), lam_rest - shift)).sum(axis=1)
    denom = shifted + est
    err = ERROR_STANDARD_ERRORS * alpha * (se / denom)[None, :]
    return alpha, err


def algebraic_connectivity_of(problem, *, rtol: float = 1e-10, max_steps: int = 3000) -> float:
    """lambda_2 of ``problem.L`` (see ``n2ngraph.diffusion.algebraic_connectivity``)."""
    n = problem.n
    if n < 2:
        raise ValueError("algebraic connectivity needs a graph with at least 2 nodes")
    if problem.n_components > 1:
        return 0.0
    if n <= LAMBDA2_DENSE_MAX_NODES:
        return float(dense_spectrum(problem, vectors=False, what="the exact spectrum")[1])
    rng = np.random.default_rng(0)
    v = rng.standard_normal(n)
    v -= problem.null_part(v)
    lz = Lanczos(NumpyBackend(problem), v, min(n, max_steps))
    while True:
        lz.extend(LAMBDA2_STEPS_PER_CHECK)
        theta, Q = lz.ritz()
        i = int(np.argmin(theta))
        resid = (lz.beta[-1] if not lz.breakdown else 0.0) * abs(Q[-1, i])
        if resid <= rtol * max(theta[i], 1e-300) or lz.exhausted:
            if resid > rtol * max(theta[i], 1e-300):
                warn_caller(f"algebraic_connectivity: Lanczos stopped with residual {resid:.3g}")
            return float(max(theta[i], 0.0))

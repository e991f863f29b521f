"""expm_multiply engine (the design card's choice) and the dense eigendecomposition reference.

``expm_multiply`` (Al-Mohy & Higham 2011, doi:10.1137/100788860) picks a Taylor degree ``m`` and
``s`` scaling steps from norm estimates so that the backward error is below the unit roundoff;
its work is about ``s * m`` matvecs and grows with ``t * ||L||_1``. Times are processed in
ascending order and chained, ``S(t_k) = exp(-(t_k - t_{k-1}) L) S(t_{k-1})``, so a grid costs
about as much as its largest ``t``; an equally spaced grid uses scipy's own grid form.

The dense route is the paper's: ``L = U diag(lambda) U^T`` (LAPACK ``eigh``), then
``S(t) = P0 A + U' diag(exp(-t lambda')) U'^T A`` where the null space ``P0`` (per-component
constants) is applied analytically and the ``c`` numerically-zero eigenpairs (``c`` = number of
components) are dropped, rather than trusting ``lambda_1 ~ -1e-12`` at large ``t``. Backward
stable: errors are ``O(n u ||L||)`` in the eigenvalues and ``O(n u ||L|| / gap)`` in the vectors.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import expm_multiply

from n2ngraph.diffusion._problem import quiet_scipy

__all__ = ["DENSE_MAX_NODES", "dense_engine", "dense_spectrum", "expm_engine"]

#: the dense engine refuses larger graphs: an n x n float64 matrix and its eigenvectors take
#: 2 * 8 n^2 bytes (6.4 GB at 20000 nodes) and eigh about 10 minutes on one core there
DENSE_MAX_NODES = 20_000

#: matvecs per unit of ``t ||L||_1`` that Al-Mohy & Higham's algorithm takes in double
#: precision on long legs (its Taylor degree over the step it allows, about 1.5 as observed
#: here); the cost model of ``auto`` and the work cap of ``expm_multiply`` both use it
EXPM_MATVECS_PER_TNORM = 1.5


def expm_engine(problem, v: np.ndarray, times: np.ndarray, **_):
    """``exp(-t L) v`` for sorted positive finite ``times``, shape ``(T, n)``."""
    A = (-problem.L).tocsr()
    trace = float(A.diagonal().sum())
    out = np.empty((len(times), v.size))
    with quiet_scipy():
        steps = np.diff(times)
        if len(times) > 2 and np.allclose(steps, steps[0], rtol=1e-12, atol=0.0):  # equal spacing
            w = expm_multiply(A * times[0], v, traceA=trace * times[0])
            out[:] = expm_multiply(A, w, start=0.0, stop=times[-1] - times[0], num=len(times),
                                   endpoint=True, traceA=trace)
            return out
        w, prev = v, 0.0
        for i, t in enumerate(times):
            dt = t - prev
            w = expm_multiply(A * dt, w, traceA=trace * dt)
            w = w - problem.null_part(w)  # keep rounding out of the null space
            out[i] = w
            prev = t
    return out


def dense_spectrum(problem, *, vectors: bool = True, what: str = "method='dense'"):
    """Eigenvalues (ascending) of the dense Laplacian, with the ``c`` smallest (the null space,
    ``c`` components) set to exactly 0, and the eigenvectors when ``vectors`` (LAPACK ``eigh``;
    ``eigvalsh`` without them). ``what`` names the caller in the size error."""
    from scipy.linalg import eigh, eigvalsh

    if problem.n > DENSE_MAX_NODES:
        raise ValueError(
            f"{what} builds an n x n matrix; n={problem.n} > {DENSE_MAX_NODES}. Use "
            "method='krylov', 'chebyshev' or 'auto' (heat_signature) or 'approx' (scree)"
        )
    with quiet_scipy():
        if vectors:
            lam, U = eigh(problem.L.toarray())
        else:
            lam, U = eigvalsh(problem.L.toarray()), None
    lam[: problem.n_components] = 0.0
    lam = np.maximum(lam, 0.0)
    return (lam, U) if vectors else lam


def dense_engine(problem, v: np.ndarray, times: np.ndarray, **_):
    """``exp(-t L) v`` via the dense eigendecomposition, shape ``(T, n)``."""
    lam, U = dense_spectrum(problem)
    c = problem.n_components
    lam, U = lam[c:], U[:, c:]
    coef = U.T @ v
    return (np.exp(-np.outer(times, lam)) * coef[None, :]) @ U.T

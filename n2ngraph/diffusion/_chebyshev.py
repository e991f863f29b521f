"""Chebyshev engine: exp(-tL) v as a Chebyshev series in L, shared by a whole t-grid.

With ``lam_max >= ||L||`` (Gershgorin) and ``X = 2 L / lam_max - I`` (spectrum in [-1, 1]),
``a = t lam_max / 2``, the Jacobi-Anger expansion gives (Tal-Ezer & Kosloff 1984,
doi:10.1063/1.448136; Hammond, Vandergheynst & Gribonval 2011, doi:10.1016/j.acha.2010.04.005)::

    exp(-t L) = exp(-a (X + I)) = ive(0, a) I + 2 sum_{k>=1} (-1)^k ive(k, a) T_k(X),

``ive`` the exponentially scaled modified Bessel function. Every ``T_k(X) v`` is computed once by
the three-term recurrence and serves every ``t``. Error control (a priori): ``|T_k(X)| <= 1`` on
the spectrum, so truncating after ``K`` terms errs by at most ``2 ||v|| sum_{k>K} ive(k, a)``;
``K`` is the smallest index bringing that below ``rtol`` times a lower bound of ``||S(t)||``.
``K`` grows like ``sqrt(2 a ln(1/rtol))``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ive

__all__ = ["chebyshev_engine", "chebyshev_terms"]

#: hard cap on series length (each term is one sparse matvec): the series for ``a = t lam_max
#: / 2`` needs about ``a`` terms once ``a`` is large, so this is where a leg of ``t`` costs more
#: than 2e5 matvecs and Lanczos (whose steps grow like ``sqrt(a)``) is the engine to use
MAX_TERMS = 200_000

# Where to stop looking for the truncation index (``kmax``), a safe overestimate of it. The
# magnitudes ``ive(k, a)`` fall off in ``k`` like a Gaussian of standard deviation ``sqrt(a)``
# (for ``k << a``) and faster than geometrically beyond ``k ~ a``:
#: ``a + KMAX_SIGMAS sqrt(a) + KMAX_PAD`` lies past every term above ``exp(-KMAX_SIGMAS^2 / 2)``
#: ~ 1e-31 (12 standard deviations) for any ``a``; the pad covers small ``a``, where the
#: Gaussian picture fails and ~60 terms reach the float64 floor
KMAX_SIGMAS = 12.0
KMAX_PAD = 60.0
#: ... and ``KMAX_SAFETY * (sqrt(2 a (ln(1/tol) + KMAX_TOL_NATS)) + KMAX_PAD)``, the Gaussian
#: estimate of where the terms drop below ``tol`` (``ln(1/tol)`` widened by ``KMAX_TOL_NATS``
#: nats), 4 times over, is smaller for large ``a``; the index actually used is the first whose
#: tail is below ``tol`` (``_coefficients``), so these only bound the search
KMAX_SAFETY = 4.0
KMAX_TOL_NATS = 5.0
#: never search fewer terms than this
KMAX_MIN = 8


def _coefficients(a: float, tol: float) -> tuple[np.ndarray, float]:
    """Series coefficients ``c_k`` for ``exp(-a (x + 1))`` truncated where the tail <= tol."""
    if a == 0.0:
        return np.ones(1), 0.0
    kmax = int(min(MAX_TERMS, np.ceil(a + KMAX_SIGMAS * np.sqrt(a) + KMAX_PAD),
                   np.ceil(np.sqrt(2.0 * a * (np.log(1.0 / max(tol, 1e-300)) + KMAX_TOL_NATS))
                           + KMAX_PAD) * KMAX_SAFETY))
    kmax = max(kmax, KMAX_MIN)
    k = np.arange(kmax + 1)
    mag = ive(k, a)
    mag[1:] *= 2.0
    # tail[K] = sum_{k > K} |c_k|; the remainder beyond kmax is below mag[kmax] * (geometric bound)
    tail = np.concatenate([np.cumsum(mag[::-1])[::-1][1:], [0.0]]) + mag[-1]
    ok = np.nonzero(tail <= tol)[0]
    K = int(ok[0]) if ok.size else kmax
    c = mag[: K + 1] * np.where(k[: K + 1] % 2, -1.0, 1.0)
    return c, float(tail[K])


def chebyshev_terms(lam_max: float, t: float, tol: float) -> int:
    """Series length needed for ``exp(-tL)`` to absolute tolerance ``tol`` (per unit ``||v||``)."""
    return _coefficients(0.5 * t * lam_max, tol)[0].size


def chebyshev_engine(problem, v: np.ndarray, times: np.ndarray, *, rtol: float, v0_norm: float,
                     max_terms: int = MAX_TERMS, norm_floor=None):
    """``exp(-t L) v`` for sorted positive finite ``times``, shape ``(T, n)``; also the per-t
    truncation bounds and whether every bound met its target. ``norm_floor`` (per t) is an
    estimate of ``||exp(-tL) v||`` to aim the truncation at, used where it exceeds the a priori
    lower bound ``exp(-t lam_max) ||v||``."""
    lam = problem.lam_max
    vnorm = float(np.linalg.norm(v))
    out = np.zeros((len(times), v.size))
    if lam == 0.0 or vnorm == 0.0:
        out[:] = v
        return out, np.zeros(len(times)), True
    coefs, bounds, met = [], [], True
    est = np.zeros(len(times)) if norm_floor is None else np.broadcast_to(norm_floor, len(times))
    for t, guess in zip(times, est):
        # ||S(t)|| >= sqrt(||P0 v||^2 + exp(-2 t lam_max) ||v'||^2)
        floor = max(np.sqrt(v0_norm**2 + np.exp(-2.0 * t * lam) * vnorm**2), float(guess))
        c, tail = _coefficients(0.5 * t * lam, rtol * floor / vnorm)
        met = met and c.size <= max_terms and tail * vnorm <= rtol * floor
        coefs.append(c[:max_terms])
        bounds.append(tail * vnorm)
    K = max(c.size for c in coefs)
    C = np.zeros((len(times), K))
    for i, c in enumerate(coefs):
        C[i, : c.size] = c
    L = problem.L
    scale = 2.0 / lam
    t_prev = v.copy()
    out += C[:, [0]] * t_prev
    if K > 1:
        t_cur = scale * (L @ v) - v
        out += C[:, [1]] * t_cur
        for k in range(2, K):
            t_next = 2.0 * (scale * (L @ t_cur) - t_cur) - t_prev
            t_prev, t_cur = t_cur, t_next
            out += C[:, [k]] * t_cur
    bounds = np.array(bounds)
    return out, bounds, bool(met)

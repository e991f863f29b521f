"""Lanczos (Krylov) engine: one basis serves a whole t-grid.

For symmetric ``L`` and a start vector ``v`` orthogonal to the null space, ``m`` Lanczos steps with
full reorthogonalisation give ``L V_m = V_m T_m + beta_m v_{m+1} e_m^T`` and the approximation
(Saad 1992, SIAM J. Numer. Anal. 29(1):209, doi:10.1137/0729014; Hochbruck & Lubich 1997,
doi:10.1137/S0036142995280572)::

    exp(-t L) v  ~=  ||v|| V_m exp(-t T_m) e_1 = ||v|| V_m Q exp(-t Theta) Q^T e_1.

Error control (a posteriori, residual based; Botchev, Grimm & Hochbruck 2013,
doi:10.1137/120889009): the approximation ``y(t)`` solves ``y' = -L y + r(t)`` with residual
``r(s) = -beta_m ||v|| (e_m^T exp(-s T_m) e_1) v_{m+1}``. Because ``||exp(-sL)|| <= 1`` for
``L >= 0``, the error obeys::

    ||e(t)|| <= int_0^t ||r(s)|| ds <= beta_m ||v|| sum_k |Q_mk Q_1k| (1 - exp(-t theta_k)) / theta_k,

which is computed from the small tridiagonal ``T_m`` for every ``t`` at once.

Large ``t``: ``v_{m+1}`` is orthogonal to the null space, so with ``sigma`` at most the smallest
eigenvalue of ``L`` that the start vector reaches, ``||exp(-(t-s)L) v_{m+1}|| <= exp(-(t-s) sigma)``
and the bound sharpens to::

    ||e(t)|| <= beta_m ||v|| exp(-t sigma) int_0^t |e_m^T exp(-s (T_m - sigma)) e_1| ds,

which decays like the answer itself: the relative accuracy of ``exp(-tL) v`` (the decaying part
``S(t) - S(inf)``) then holds at any ``t``, not only while it is large. ``sigma`` is the smallest
Ritz value minus its residual ``beta_m |Q_m1|`` (there is an eigenvalue within the residual of
every Ritz value; Lanczos finds the bottom of the reachable spectrum first), shrunk by 0.1%, and
never less than the guaranteed ``HeatProblem.decay_lb``; ``sigma = 0`` gives the plain bound.
Iteration stops when the bound is below ``rtol * ||exp(-tL) v||`` (or ``DECAY_FLOOR * ||v||``)
for all requested times, or at breakdown (an invariant subspace: the answer is then exact).

This is the one Lanczos driver of the package: :func:`lanczos_legs` runs it leg by leg
(``_legs``) on any :class:`KrylovBackend`; :class:`NumpyBackend` (scipy sparse, CPU) and
``_torch.TorchBackend`` (torch sparse CSR, any device) implement the protocol, so the
``krylov``, ``torch`` and ``auto`` engines (``_engines``) differ only in the backend they pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from scipy.linalg import eigh_tridiagonal
from scipy.special import gammainc

from n2ngraph.diffusion._legs import KRYLOV_LEG_DECAY, chained
from n2ngraph.diffusion._problem import DECAY_FLOOR, safe_norms

__all__ = [
    "DEFAULT_BASIS_BYTES",
    "PROBE_STEPS",
    "KrylovBackend",
    "Lanczos",
    "NumpyBackend",
    "basis_steps",
    "lanczos_legs",
    "probe",
    "run_to_tolerance",
    "slowest_rate",
]

#: default memory cap for the stored Krylov basis (the 1M-node benchmark must stay under 4 GB)
DEFAULT_BASIS_BYTES = 2**31

#: Lanczos steps of the probe run before the first leg: enough for the smallest Ritz value to
#: settle near the slowest decay rate on the layered graphs measured (it sets the first leg's
#: length, which later legs correct), and often enough for an exact breakdown on dense layered
#: graphs (an invariant subspace of a few dimensions), while costing a negligible 24 matvecs
PROBE_STEPS = 24

#: breakdown (an invariant subspace: the result is exact) when ``beta_j <= BREAKDOWN_RTOL *
#: lam_max``: about 500 units of roundoff of a matvec with ``||L|| <= lam_max``, so a beta this
#: small is rounding, not a new direction
BREAKDOWN_RTOL = 1e-13

#: the shifted bound's ``sigma`` (module docstring) is used only after this many steps, and once
#: the smallest Ritz pair's residual is below ``SHIFT_CONVERGED`` times its value; ``sigma`` is
#: that Ritz value minus its residual, shrunk by ``SHIFT_MARGIN`` (a margin against the rounding
#: of the small eigenproblem). Before that the proven ``HeatProblem.decay_lb`` is used.
SHIFT_MIN_STEPS = 16
SHIFT_CONVERGED = 0.1
SHIFT_MARGIN = 1e-3

#: the a posteriori bound costs an eigendecomposition of ``T_m`` and a quadrature, so it is
#: checked after every step up to ``CHECK_EVERY_STEP_UNTIL`` steps (small bases: stop at once),
#: then every 4th step up to ``CHECK_EVERY_4_UNTIL``, then every 8th (at most 7 extra steps)
CHECK_EVERY_STEP_UNTIL = 8
CHECK_EVERY_4_UNTIL = 32

#: quadrature nodes per decade of s for the residual integral
_NODES_PER_DECADE = 48
#: the quadrature grid starts this fraction below ``min(t, 1 / lam_max)``: the integrand is
#: increasing from 0 there and below ``(s lam_max)^(m-1)``, so ``[0, s_min]`` adds at most
#: ``1e-6 s_min`` relative
_QUAD_START_REL = 1e-6
#: at most this many decades of ``s`` (float64 spans about 630)
_QUAD_MAX_DECADES = 700.0
#: arguments of ``exp`` are capped here (``exp(700) ~ 1e304`` < the float64 maximum
#: ``exp(709.8)``); the Taylor bound ``exp(x) P(m-1, x)`` is evaluated only for ``x = s lam_max``
#: below ``_TAYLOR_MAX_X``, with room to spare before ``exp(x)`` overflows; beyond it the
#: integrand's own bound 1 is used
_EXP_MAX_ARG = 700.0
_TAYLOR_MAX_X = 600.0


def _residual_integral(theta, q_first, q_last, m, lam_max, t, shift=0.0):
    """``exp(-t sigma) int_0^t |e_m^T exp(-s (T_m - sigma)) e_1| ds`` for each ``t`` (trapezoid
    on a geometric grid), ``sigma = shift <= min(theta)``.

    The integrand is evaluated as ``|sum_k Q_mk Q_1k exp(-s (theta_k - sigma))|``, whose
    cancellation leaves rounding noise of ~1e-16 at small ``s``; there the exact Taylor bound
    ``|e_m^T exp(-sT) e_1| <= sum_{j >= m-1} (s ||T||)^j / j!`` (``e_m^T T^j e_1 = 0`` for
    ``j < m - 1``), times ``exp(s sigma)``, is smaller and is used instead. The integrand is at
    most 1 (``T_m - sigma >= 0``), so the result is also at most ``t exp(-t sigma)``; this keeps
    any finite ``t`` free of overflow.
    """
    t = np.asarray(t, float)
    out = np.zeros(t.shape)
    pos = t > 0
    if not pos.any():
        return out
    tp = t[pos]
    lam = max(lam_max, 1e-300)
    t_max = float(tp.max())
    s_min = max(min(float(tp.min()), 1.0 / lam) * _QUAD_START_REL, 1e-300)
    decades = min(max(np.log10(t_max) - np.log10(s_min), 1.0), _QUAD_MAX_DECADES)
    nodes = int(decades * _NODES_PER_DECADE) + 2
    grid = np.unique(np.concatenate([np.geomspace(s_min, t_max, nodes), tp]))
    w = q_first * q_last
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        h = np.abs(np.exp(-np.outer(grid, np.maximum(theta - shift, 0.0))) @ w)
        x = grid * lam
        taylor = np.where(x < _TAYLOR_MAX_X,
                          np.exp(np.minimum(x, _TAYLOR_MAX_X)) * gammainc(max(m - 1, 1), x), np.inf)
        taylor = taylor * np.exp(np.minimum(grid * shift, _EXP_MAX_ARG))
        h = np.minimum(np.minimum(h, taylor), 1.0)
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (h[1:] + h[:-1]) * np.diff(grid))])
        cum += s_min * h[0]  # [0, s_min]: the integrand is increasing from 0 there
        integral = np.minimum(np.interp(tp, grid, cum), tp)
        out[pos] = integral * np.exp(-tp * shift)
    return out


class KrylovBackend(Protocol):
    """Where the Lanczos vectors live and how they are combined: the only thing that differs
    between the numpy/scipy engine and the torch engine.

    A backend holds ``problem`` (the :class:`~n2ngraph.diffusion._problem.HeatProblem`) and a
    basis of ``cap`` vectors of length ``n``. Its vectors (``Vec``: a numpy array, a torch
    tensor) support ``v - a * w`` and ``v / a`` with Python floats ``a``; all scalars returned
    to :class:`Lanczos` are Python floats and the small tridiagonal problem stays in numpy.
    """

    problem: Any

    def alloc(self, cap: int, n: int) -> None:
        """Reserve the basis: ``cap`` vectors of length ``n``."""

    def vec(self, x: np.ndarray) -> Any:
        """A float64 numpy vector as a backend vector."""

    def matvec(self, x: Any) -> Any:
        """``L x``."""

    def project(self, x: Any) -> Any:
        """``x`` minus its orthogonal projection on the null space of ``L`` (may work in place)."""

    def set(self, j: int, x: Any) -> None:
        """Store ``x`` as basis vector ``j``."""

    def get(self, j: int) -> Any:
        """Basis vector ``j``."""

    def dot(self, x: Any, y: Any) -> float:
        """``x^T y``."""

    def norm(self, x: Any) -> float:
        """``||x||_2``."""

    def reorth(self, w: Any, j: int) -> Any:
        """``w`` orthogonalised against basis vectors ``0..j`` (classical Gram-Schmidt, twice)."""

    def combine(self, C: np.ndarray) -> np.ndarray:
        """``C @ V[:m]`` as a numpy array of shape ``(T, n)``, ``C`` of shape ``(T, m)``."""


class NumpyBackend:
    """:class:`KrylovBackend` on numpy arrays and the scipy sparse ``L``; the basis is a
    preallocated ``(cap, n)`` array (pages are only committed as rows are written)."""

    def __init__(self, problem):
        self.problem = problem
        self.L = problem.L
        self._u = problem.null
        self._denom = problem.null_norms2

    def alloc(self, cap: int, n: int) -> None:
        self.V = np.empty((cap, n))

    def vec(self, x: np.ndarray) -> np.ndarray:
        return np.array(x, dtype=np.float64)

    def matvec(self, x):
        return self.L @ x

    def project(self, x):
        labels, u = self.problem.labels, self._u
        coef = np.bincount(labels, weights=u * x, minlength=self.problem.n_components) / self._denom
        x -= coef[labels] * u
        return x

    def set(self, j: int, x) -> None:
        self.V[j] = x

    def get(self, j: int):
        return self.V[j]

    def dot(self, x, y) -> float:
        return float(x @ y)

    def norm(self, x) -> float:
        return float(np.linalg.norm(x))

    def reorth(self, w, j: int):
        """Classical Gram-Schmidt twice (CGS2) against rows ``0..j``."""
        Vj = self.V[: j + 1]
        for _ in range(2):
            w -= (Vj @ w) @ Vj
        return w

    def combine(self, C: np.ndarray) -> np.ndarray:
        return C @ self.V[: C.shape[1]]


class Lanczos:
    """Lanczos process on the projected start vector ``v`` (orthogonal to ``null(L)``).

    ``extend`` runs more steps; ``bound(t)``, ``norm(t)`` and ``evaluate(t)`` use the current
    tridiagonal matrix. ``exhausted`` is True at breakdown (exact) or when ``max_steps`` is used.
    """

    def __init__(self, backend: KrylovBackend, v: np.ndarray, max_steps: int, *,
                 breakdown_tol: float | None = None, shifted: bool = True):
        n = v.shape[0]
        self.b = backend
        self.shifted = shifted
        self.beta0 = float(safe_norms(v))
        self.max_steps = max(1, min(int(max_steps), n))
        self.alpha: list[float] = []
        self.beta: list[float] = []  # beta[j] couples v_j and v_{j+1}
        self.breakdown = self.beta0 == 0.0
        lam = max(backend.problem.lam_max, 1e-300)
        self._tiny = breakdown_tol if breakdown_tol is not None else BREAKDOWN_RTOL * lam
        self._cache = None
        self.work = 0.0  # modelled cost spent so far (used by method='auto')
        if not self.breakdown:
            backend.alloc(self.max_steps + 1, n)
            backend.set(0, backend.vec(v / self.beta0))

    @property
    def steps(self) -> int:
        return len(self.alpha)

    @property
    def exhausted(self) -> bool:
        return self.breakdown or self.steps >= self.max_steps

    def extend(self, k: int = 1) -> None:
        b = self.b
        for _ in range(k):
            if self.exhausted:
                return
            j = self.steps
            vj = b.get(j)
            w = b.matvec(vj)
            a = b.dot(vj, w)
            w = w - a * vj
            if j > 0:
                w = w - self.beta[j - 1] * b.get(j - 1)
            w = b.project(w)
            w = b.reorth(w, j)
            beta = b.norm(w)
            self.alpha.append(a)
            self.beta.append(beta)
            self._cache = None
            if beta <= self._tiny:
                self.breakdown = True
                self.beta[-1] = 0.0
                return
            if j + 1 < self.max_steps:
                b.set(j + 1, w / beta)

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values ``theta`` (ascending) and eigenvectors ``Q`` of the tridiagonal ``T_m``."""
        if self._cache is None:
            m = self.steps
            if m == 1:
                theta, Q = np.array(self.alpha), np.ones((1, 1))
            else:
                theta, Q = eigh_tridiagonal(np.array(self.alpha), np.array(self.beta[: m - 1]))
            self._cache = (theta, Q)
        return self._cache

    def _weights(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``exp(-t Theta) Q^T e_1`` for each t (shape ``(T, m)``) and ``Q``: ``exp(-t T_m) e_1``
        in the Ritz basis."""
        theta, Q = self.ritz()
        return np.exp(-np.outer(t, np.maximum(theta, 0.0))) * Q[0][None, :], Q

    def coefficients(self, t: np.ndarray) -> np.ndarray:
        """``||v|| exp(-t T_m) e_1`` for each t, shape ``(T, m)``."""
        weights, Q = self._weights(t)
        return self.beta0 * weights @ Q.T

    def norm(self, t: np.ndarray) -> np.ndarray:
        """``||exp(-t T_m) e_1|| ||v||`` ~= ``||exp(-tL) v||``, shape ``(T,)``."""
        if self.beta0 == 0.0:
            return np.zeros(len(t))
        return self.beta0 * safe_norms(self._weights(t)[0])

    def bound(self, t: np.ndarray, *, shifted: bool | None = None) -> np.ndarray:
        """A posteriori error bound of ``evaluate(t)`` (module docstring), shape ``(T,)``.
        ``shifted=False``: the plain bound (``sigma = 0``), rigorous without any estimate."""
        t = np.asarray(t, float)
        if self.beta0 == 0.0 or self.breakdown:
            return np.zeros(len(t))
        theta, Q = self.ritz()
        sigma = self.shift() if (self.shifted if shifted is None else shifted) else 0.0
        integral = _residual_integral(theta, Q[0], Q[-1], self.steps, self.b.problem.lam_max, t,
                                      shift=sigma)
        return self.beta0 * self.beta[-1] * integral

    def shift(self) -> float:
        """``sigma`` of the large-t bound (module docstring): a lower estimate of the smallest
        eigenvalue the start vector reaches, from the smallest Ritz pair and its residual. Used
        only once that pair is converged to ``SHIFT_CONVERGED`` (and after ``SHIFT_MIN_STEPS``
        steps); until then the proven ``decay_lb``."""
        lb = self.b.problem.decay_lb
        if self.steps < SHIFT_MIN_STEPS:
            return lb
        theta, Q = self.ritz()
        i = int(np.argmin(theta))
        resid = self.beta[-1] * abs(Q[-1, i])
        if not resid <= SHIFT_CONVERGED * theta[i]:
            return lb
        est = (float(theta[i]) - resid) * (1.0 - SHIFT_MARGIN)
        return min(max(est, lb), max(float(theta[i]), 0.0))

    def evaluate(self, t: np.ndarray) -> np.ndarray:
        """``exp(-t L) v`` for each t, shape ``(T, n)``."""
        if self.beta0 == 0.0:
            raise ValueError("zero start vector")
        return self.b.combine(self.coefficients(t))

    def run(self, t: np.ndarray, target, *, max_work: float = np.inf,
            step_cost: tuple[float, float] = (0.0, 0.0), abs_target=None) -> bool:
        """Extend until ``bound(t) <= target`` (True) or until exhausted/over ``max_work`` (False).

        ``target`` is an array or a callable returning one (re-evaluated at every check, as it
        may depend on the current estimate of the answer). With ``abs_target`` the plain bound
        must also be below it (``bound(t, shifted=False) <= abs_target``)."""
        t = np.asarray(t, float)

        def met() -> bool:
            if not np.all(self.bound(t) <= (target() if callable(target) else target)):
                return False
            if abs_target is None or not self.shifted:
                return True
            goal = abs_target() if callable(abs_target) else abs_target
            return bool(np.all(self.bound(t, shifted=False) <= goal))

        while True:
            m = self.steps
            check = (m <= CHECK_EVERY_STEP_UNTIL or (m <= CHECK_EVERY_4_UNTIL and m % 4 == 0)
                     or m % 8 == 0 or self.exhausted)
            if m and check:
                if met():
                    return True
                if self.exhausted:
                    return bool(self.breakdown)
            if self.exhausted:
                return bool(self.breakdown)
            cost = step_cost[0] + step_cost[1] * (m + 1)
            if self.work + cost > max_work:
                return False
            self.extend(1)
            self.work += cost

    def targets(self, t: np.ndarray, v0_norm: float, rtol: float) -> np.ndarray:
        """``rtol * ||S(t)||`` with ``||S||^2 = ||P0 v||^2 + ||exp(-tL) v'||^2`` (current estimate;
        ``v0_norm = 0`` asks for accuracy relative to the decaying part alone), at least
        ``DECAY_FLOOR * ||v'||``."""
        est = self.norm(t) if self.steps else np.full(len(t), self.beta0)
        floor = max(DECAY_FLOOR * self.beta0, np.finfo(float).tiny)
        return np.maximum(rtol * np.hypot(v0_norm, est), floor)


def basis_steps(n: int, max_basis_bytes: float, itemsize: int = 8) -> int:
    """Largest basis that fits ``max_basis_bytes``."""
    return max(2, int(max_basis_bytes // (itemsize * max(n, 1))) - 1)


def run_to_tolerance(lz: Lanczos, times: np.ndarray, v0_norm: float, rtol: float,
                     max_work: float = np.inf,
                     step_cost: tuple[float, float] = (0.0, 0.0)) -> bool:
    """Extend ``lz`` until, for every time, the decaying part is within ``rtol`` of its own norm
    (shifted bound) and, rigorously, within ``rtol * ||S(t)||`` (plain bound, ``||S||`` including
    the null-space part of norm ``v0_norm``). Targets follow the current estimate of the answer."""
    return lz.run(times, lambda: lz.targets(times, 0.0, rtol), max_work=max_work,
                  step_cost=step_cost, abs_target=lambda: lz.targets(times, v0_norm, rtol))


def probe(problem, v: np.ndarray, max_steps: int = PROBE_STEPS) -> Lanczos:
    """A short Lanczos run (``PROBE_STEPS`` steps, at most ``max_steps``) on ``v``, on the CPU.

    At breakdown (``.breakdown``: an invariant subspace, common on dense layered graphs) it is
    the exact answer for every ``t``; otherwise :func:`slowest_rate` reads the first leg's
    length off it."""
    lz = Lanczos(NumpyBackend(problem), v, min(max_steps, PROBE_STEPS), shifted=False)
    lz.extend(PROBE_STEPS)
    return lz


def slowest_rate(problem, lz: Lanczos) -> float:
    """Estimate of the slowest decay rate of the start vector: the smallest Ritz value, at least
    the proven ``decay_lb`` (and a positive number, so a leg length ``decay / rate`` is finite)."""
    theta, _ = lz.ritz()
    return max(float(theta.min()), problem.decay_lb, 1e-300 * max(problem.lam_max, 1.0))


#: ``leg_budget(rel_times) -> (max_work, fallback)`` of :func:`lanczos_legs`
LegBudget = Callable[[np.ndarray], tuple[float, Callable | None]]


def lanczos_legs(problem, v: np.ndarray, times: np.ndarray, *, rtol: float, v0_norm: float,
                 max_basis_bytes: float = DEFAULT_BASIS_BYTES,
                 backend: Callable[[Any], KrylovBackend] = NumpyBackend,
                 leg_budget: LegBudget | None = None,
                 step_cost: tuple[float, float] = (0.0, 0.0)):
    """``exp(-t L) v`` for sorted positive finite ``times`` by Lanczos, leg by leg: the driver
    every Krylov engine runs.

    A :func:`probe` first: at breakdown it is the exact answer for every ``t``. Otherwise the
    time axis is cut into legs of about ``KRYLOV_LEG_DECAY`` nats (``_legs.chained``, first leg
    from :func:`slowest_rate`); each leg builds one basis on ``backend(problem)`` of at most
    ``basis_steps(n, max_basis_bytes)`` vectors and extends it until
    :func:`run_to_tolerance` holds for every time of the leg.

    Parameters
    ----------
    problem : HeatProblem
    v : ndarray of shape (n,)
        Start vector, orthogonal to the null space of ``L``.
    times : ndarray of shape (T,)
        Sorted, positive, finite.
    rtol, v0_norm : float
        Accuracy target and the norm of the null-space part of the sources (``Lanczos.targets``).
    max_basis_bytes : float
        Memory cap of one leg's basis (float64 vectors of length ``n``).
    backend : callable
        ``backend(problem)`` returns the :class:`KrylovBackend` a leg runs on.
    leg_budget : callable, optional
        ``leg_budget(rel_times) -> (max_work, fallback)``: a leg stops extending once its
        modelled work (``step_cost`` per step: ``matvec + per_vector * (m + 1)``) would exceed
        ``max_work``; an unconverged leg is then handed to ``fallback(w, rel_times, scale)``
        (same contract as a ``chained`` step) when one is given.

    Returns
    -------
    D : ndarray of shape (T, n)
    bound : ndarray of shape (T,) or None
        Accumulated a posteriori error bound (None where a fallback without one ran).
    ok : bool
        Every leg met its target.
    """
    steps = basis_steps(problem.n, max_basis_bytes)
    first = probe(problem, v, steps)
    if first.breakdown:
        return first.evaluate(times), np.zeros(len(times)), True
    rate = slowest_rate(problem, first)

    def step(w, rel, scale):
        max_work, fallback = (np.inf, None) if leg_budget is None else leg_budget(rel)
        lz = Lanczos(backend(problem), w, steps)
        ok = run_to_tolerance(lz, rel, v0_norm / scale, rtol, max_work=max_work,
                              step_cost=step_cost)
        if ok or fallback is None:
            return lz.evaluate(rel), lz.bound(rel), ok
        del lz  # its basis, before the fallback allocates its own
        return fallback(w, rel, scale)

    return chained(step, problem, v, times, decay=KRYLOV_LEG_DECAY, rate=rate)

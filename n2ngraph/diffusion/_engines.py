"""Diffusion engines: the registry behind ``heat_signature(method=...)``, the step function of
each engine, the cost model, and ``auto``.

Every engine computes the decaying part ``exp(-tL) v`` of a start vector ``v`` orthogonal to
the null space, for sorted positive finite times, to ``rtol`` relative to its own norm
(``v0_norm = 0``) or to ``rtol * sqrt(v0_norm^2 + ||exp(-tL) v||^2)`` when a null-space norm is
given, and returns ``(exp(-tL) v for each t, error bound per t or None, accuracy met)``.

=================  ====================================================================
engine             how
=================  ====================================================================
``krylov``         the Lanczos driver (``_krylov.lanczos_legs``) on ``NumpyBackend``
``torch``          the same driver on ``_torch.TorchBackend`` (CUDA when available)
``chebyshev``      Chebyshev series (``_chebyshev``), legs of ``LEG_DECAY`` nats
``expm_multiply``  scipy's Al-Mohy-Higham algorithm (``_expm``), legs of ``LEG_DECAY`` nats
``dense``          ``eigh`` of the dense Laplacian (``_expm``), every ``t`` at once
``auto``           from the problem and the hardware only (:func:`auto_choice`), then
                   Krylov within a budget set by the cost model, else the cheapest other
=================  ====================================================================

:func:`decaying_part` is what the public API calls: it handles ``t = 0``, ``t = inf``,
repeated times and the proven saturation time, runs the engine on the rest and warns when the
engine stopped short of ``rtol``.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from n2ngraph.diffusion._chebyshev import chebyshev_engine, chebyshev_terms
from n2ngraph.diffusion._expm import (
    DENSE_MAX_NODES,
    EXPM_MATVECS_PER_TNORM,
    dense_engine,
    expm_engine,
)
from n2ngraph.diffusion._krylov import DEFAULT_BASIS_BYTES, lanczos_legs, probe, slowest_rate
from n2ngraph.diffusion._legs import LEG_DECAY, chained
from n2ngraph.diffusion._problem import DECAY_FLOOR, HeatProblem, safe_norms, warn_caller

__all__ = [
    "AUTO_DENSE_MAX_NODES",
    "DEFAULT_RTOL",
    "ENGINES",
    "TORCH_MIN_NODES",
    "auto_choice",
    "cuda_available",
    "decaying_part",
    "get_engine",
    "predicted_costs",
]

#: default relative accuracy of the iterative engines (well inside the 1e-8 the tests demand)
DEFAULT_RTOL = 1e-10

#: ``expm_multiply`` refuses a leg that would need more than about this many matvecs (hours on
#: any graph; the Krylov engines reach such times in a few legs)
EXPM_MAX_WORK = 1e10


# ----------------------------------------------------------------------------- step functions
def _rate(problem: HeatProblem, v: np.ndarray) -> float:
    """The first leg's decay-rate estimate for the engines that do not run Lanczos themselves."""
    return slowest_rate(problem, probe(problem, v))


def _krylov(problem, v, times, *, rtol, v0_norm, max_basis_bytes=DEFAULT_BASIS_BYTES, **_):
    return lanczos_legs(problem, v, times, rtol=rtol, v0_norm=v0_norm,
                        max_basis_bytes=max_basis_bytes)


def _torch(problem, v, times, *, rtol, v0_norm, device=None,
           max_basis_bytes=DEFAULT_BASIS_BYTES, **_):
    from n2ngraph.diffusion._torch import TorchBackend

    built: list[TorchBackend] = []

    def backend(p):  # one backend for every leg: L is copied to the device once
        if not built:
            built.append(TorchBackend(p, device))
        return built[0]

    return lanczos_legs(problem, v, times, rtol=rtol, v0_norm=v0_norm,
                        max_basis_bytes=max_basis_bytes, backend=backend)


def _chebyshev(problem, v, times, *, rtol, **_):
    def step(w, rel, scale):
        # each leg to rtol relative to its own result: aimed at the decay a leg is cut for
        # (w has norm 1), then, if the result is smaller, at the observed norms
        with np.errstate(all="ignore"):
            D, bound, _ = chebyshev_engine(problem, w, rel, rtol=rtol, v0_norm=0.0,
                                           norm_floor=np.exp(-2.0 * LEG_DECAY))
        if not np.all(np.isfinite(D)):
            raise ValueError(
                f"method='chebyshev' cannot reach t = {rel[-1]:.3g} past a leg start on this graph "
                f"(t lam_max / 2 = {0.5 * rel[-1] * problem.lam_max:.3g}: its slowest decay rate is "
                f"tiny against lam_max = {problem.lam_max:.3g}, and the series would need more than "
                "its term cap); use method='krylov', 'auto' or 'dense'"
            )
        norms = safe_norms(D)
        if np.any(bound > rtol * norms):
            D, bound, _ = chebyshev_engine(problem, w, rel, rtol=rtol, v0_norm=0.0,
                                           norm_floor=0.5 * norms)
            norms = safe_norms(D)
        return D, bound, bool(np.all(bound <= rtol * np.maximum(norms, DECAY_FLOOR)))

    return chained(step, problem, v, times, rate=_rate(problem, v))


def _expm(problem, v, times, **_):
    def step(w, rel, scale):
        work = EXPM_MATVECS_PER_TNORM * rel[-1] * problem.lam_max
        if work > EXPM_MAX_WORK:
            raise ValueError(
                f"method='expm_multiply' needs about {EXPM_MATVECS_PER_TNORM} t ||L||_1 = "
                f"{work:.3g} matvecs for a leg of t = {rel[-1]:.3g} on "
                "this graph (its slowest decay rate is tiny against ||L||); use method='krylov', "
                "'auto' or 'dense'"
            )
        return expm_engine(problem, w, rel), None, True

    return chained(step, problem, v, times, rate=_rate(problem, v))


def _dense(problem, v, times, **_):
    return dense_engine(problem, v, times), None, True


# --------------------------------------------------------------------------------- cost model
# Rough per-operation costs (nanoseconds on one core) for method='auto'; only their ratios matter.
_NS_PER_NNZ = 1.5  # sparse matvec, memory bound
_NS_PER_VEC_ENTRY = 0.5  # streaming a dense vector (axpy, dot, reorthogonalisation)
_NS_PER_EIGH_FLOP = 0.1  # dense eigh with vectors, per n^3

#: a Lanczos step streams about this many length-n vectors besides the matvec (two axpys, the
#: dot, the null-space projection, the norm, the scaling of the new basis vector)
LANCZOS_VECTOR_PASSES = 6
#: ... and, for its reorthogonalisation, this many per stored basis vector (CGS2: two passes,
#: each reading the basis twice, for ``V w`` and ``(V w) V``)
REORTH_PASSES = 4
#: a Chebyshev run in legs of ``LEG_DECAY`` nats (for relative accuracy) costs about this many
#: times one series over ``[0, t]`` (the legs restart the series, each with its own ramp-up)
CHEBYSHEV_LEG_OVERHEAD = 3.0
#: matvecs of ``expm_multiply``'s norm estimates, paid once per time of the grid
EXPM_SETUP_MATVECS = 10
#: the Chebyshev term estimate is taken at ``t`` at most this (the series is capped at
#: ``MAX_TERMS`` long before; this keeps ``a = t lam_max / 2`` finite)
COST_T_CAP = 1e12
#: Krylov's work budget in units of the cheapest alternative's predicted cost (the predictions
#: are rough; Lanczos is usually much faster than they suggest and Chebyshev legs slower)
KRYLOV_BUDGET = 4.0

#: ``auto`` takes ``dense`` outright up to this many nodes: an eigh of 64 x 64 (tens of
#: microseconds) costs less than building a Lanczos basis and its error bound
AUTO_DENSE_MAX_NODES = 64
#: ... or whenever the dense route is the cheapest and predicted under this many nanoseconds
#: (1 ms): one eigh then beats any iteration, whose fixed costs are of that order
TINY_PROBLEM_NS = 1e6
#: ``auto`` runs on a CUDA GPU (``torch``) from this many nodes: below it the CPU Lanczos run
#: takes well under a second (0.1 s on the 4042-node paper MLP, docs/diffusion.md), less than
#: importing torch, copying ``L`` to the device and launching a few kernels per step
TORCH_MIN_NODES = 200_000


def predicted_costs(problem: HeatProblem, times: np.ndarray, rtol: float) -> dict[str, float]:
    """Modelled cost (ns) of ``dense``, ``chebyshev`` and ``expm_multiply`` over ``times``."""
    n, nnz, T = problem.n, problem.nnz, len(times)
    mv = _NS_PER_NNZ * nnz + _NS_PER_VEC_ENTRY * n
    # the legs of chebyshev / expm_multiply stop once the decaying part is below DECAY_FLOOR
    t_max = min(float(times[-1]), -np.log(DECAY_FLOOR) / max(problem.decay_lb, 1e-300))
    costs = {}
    costs["dense"] = (_NS_PER_EIGH_FLOP * n**3 + _NS_PER_VEC_ENTRY * T * n * n
                      if n <= DENSE_MAX_NODES else np.inf)
    K = chebyshev_terms(problem.lam_max, min(t_max, COST_T_CAP), rtol)
    costs["chebyshev"] = CHEBYSHEV_LEG_OVERHEAD * K * (mv + _NS_PER_VEC_ENTRY * T * n)
    # Al-Mohy & Higham: matvecs grow with t ||L||_1 (||L||_1 <= lam_max)
    costs["expm_multiply"] = (EXPM_MATVECS_PER_TNORM * t_max * problem.lam_max
                              + EXPM_SETUP_MATVECS * T) * mv
    return costs


@functools.cache
def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device: a fact about the machine, not about
    which modules happen to be imported. torch is found with ``importlib.util.find_spec`` and
    imported (once per process) only when it is installed; ``auto`` asks only for graphs of at
    least ``TORCH_MIN_NODES`` nodes, so the diffusion core never imports torch on small ones."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def auto_choice(problem: HeatProblem, times: np.ndarray, rtol: float) -> str:
    """What ``auto`` runs, from the problem's size and spectrum bounds and the hardware only.

    ``"dense"`` for at most ``AUTO_DENSE_MAX_NODES`` nodes; ``"torch"`` from ``TORCH_MIN_NODES``
    nodes when a CUDA device is present (:func:`cuda_available`); ``"dense"`` when it is the
    cheapest predicted route and under ``TINY_PROBLEM_NS``; else ``"krylov"`` (with the
    per-leg fallback of ``_auto``).
    """
    n = problem.n
    if n <= AUTO_DENSE_MAX_NODES:
        return "dense"
    if n >= TORCH_MIN_NODES and cuda_available():
        return "torch"
    costs = predicted_costs(problem, times, rtol)
    alt = min(costs, key=costs.get)
    if alt == "dense" and costs["dense"] < TINY_PROBLEM_NS:
        return "dense"
    return "krylov"


class _UseDense(Exception):
    """A Krylov leg of ``auto`` ran out of budget where ``dense`` is the cheapest alternative."""


def _auto(problem, v, times, *, rtol, v0_norm, max_basis_bytes=DEFAULT_BASIS_BYTES, **_):
    """Per leg, Krylov first, with a work budget of ``KRYLOV_BUDGET`` times the cheapest
    alternative's predicted cost; if Lanczos has not converged within it (or within the basis
    memory), that alternative runs the leg (dense: one eigendecomposition for every time). So
    ``auto`` costs at most a few times the best predicted engine, and usually the adaptive
    Krylov cost, which is far smaller on the highly degenerate spectra of layered networks."""
    choice = auto_choice(problem, times, rtol)
    if choice == "dense":
        return _dense(problem, v, times)
    if choice == "torch":
        return _torch(problem, v, times, rtol=rtol, v0_norm=v0_norm,
                      max_basis_bytes=max_basis_bytes)
    n = problem.n
    step_cost = (_NS_PER_NNZ * problem.nnz + LANCZOS_VECTOR_PASSES * _NS_PER_VEC_ENTRY * n,
                 REORTH_PASSES * _NS_PER_VEC_ENTRY * n)

    def leg_budget(rel):
        leg_costs = predicted_costs(problem, rel, rtol)
        alt = min(leg_costs, key=leg_costs.get)

        def fallback(w, rel, scale):
            if alt == "dense":  # one eigendecomposition serves every time: not per leg
                raise _UseDense
            return ENGINES[alt](problem, w, rel, rtol=rtol, v0_norm=v0_norm / scale)

        return KRYLOV_BUDGET * leg_costs[alt], fallback

    try:
        return lanczos_legs(problem, v, times, rtol=rtol, v0_norm=v0_norm,
                            max_basis_bytes=max_basis_bytes, leg_budget=leg_budget,
                            step_cost=step_cost)
    except _UseDense:
        return _dense(problem, v, times)


# ----------------------------------------------------------------------------------- registry
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


def get_engine(method: str) -> Callable[..., Any]:
    """The engine registered as ``method``; ``ValueError`` listing the valid names otherwise."""
    if not isinstance(method, str) or method not in ENGINES:
        raise ValueError(f"method {method!r} is not one of {sorted(ENGINES)}")
    return ENGINES[method]


def decaying_part(problem: HeatProblem, vr: np.ndarray, times: np.ndarray, *, method: str,
                  rtol: float, v0_norm: float, device, max_basis_bytes: float,
                  scale: float) -> np.ndarray:
    """``exp(-tL) vr`` for every entry of ``times``, shape ``(T, n)``, by engine ``method``.

    ``vr`` is orthogonal to the null space (scaled sources, see ``heat_signature``); ``times``
    are validated (``as_times``: any order, repeats, 0 and ``inf``). ``t = 0`` gives ``vr``,
    ``t = inf`` and every time past the proven saturation time (``||exp(-tL) vr|| <=
    DECAY_FLOOR ||vr||`` from ``HeatProblem.decay_lb``) give 0 without running an engine; the
    engine sees the other times once each, sorted. ``v0_norm`` is the norm of the null-space
    part (the engines' absolute target), ``scale`` the power of two the sources were divided by
    (it only scales the error quoted in the warning).

    Warns
    -----
    DiffusionAccuracyWarning
        The engine stopped before ``rtol`` (basis memory cap, series length cap).
    """
    engine = get_engine(method)
    D = np.zeros((len(times), problem.n))
    D[times == 0] = vr
    finite = np.isfinite(times) & (times > 0)
    vr_norm = float(np.linalg.norm(vr))
    if not (finite.any() and vr_norm > 0.0 and problem.lam_max > 0.0):
        return D
    uniq, inverse = np.unique(times[finite], return_inverse=True)
    # ||exp(-tL) vr|| <= exp(-t decay_lb) ||vr|| <= DECAY_FLOOR ||vr|| from here on: exactly
    # saturated, whatever t (1e300, float max), without running an engine
    t_sat = -np.log(DECAY_FLOOR) / problem.decay_lb if problem.decay_lb > 0 else np.inf
    run = uniq < t_sat
    Du = np.zeros((len(uniq), problem.n))
    if run.any():
        Dr, bound, ok = engine(problem, vr, uniq[run], rtol=rtol, v0_norm=v0_norm, device=device,
                               max_basis_bytes=max_basis_bytes)
        if not ok:
            worst = "unknown" if bound is None else f"{np.max(bound) * scale:.3g}"
            warn_caller(
                f"heat_signature(method={method!r}) stopped before reaching rtol={rtol:g} "
                f"(largest absolute error bound {worst}); raise max_basis_bytes or use "
                "method='chebyshev' or 'dense'"
            )
        Du[run] = Dr
    D[finite] = Du[inverse]
    return D

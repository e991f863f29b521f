"""Time legs for the engines whose work grows with ``t ||L||`` (Chebyshev, expm_multiply).

``exp(-tL) v = exp(-(t - t_k) L) w_k`` with ``w_k = exp(-t_k L) v``: the time axis is cut into
legs ``[t_k, t_{k+1}]`` over which the decaying part shrinks by about ``exp(-LEG_DECAY)``, and each
leg starts from the previous leg's end. Two things follow:

- Relative accuracy of the decaying part at any ``t``. A Chebyshev series summed in floating
  point, and expm_multiply's Taylor steps, err by about ``u ||w_k||`` (``u`` the unit roundoff)
  whatever their truncation, so one run from ``t = 0`` cannot resolve ``exp(-tL) v`` once it is
  below ``u ||v||``; per leg the error stays about ``u exp(LEG_DECAY)`` relative to the result.
  Lanczos legs (``KRYLOV_LEG_DECAY``) are longer: see ``_krylov`` for their large-t bound.
- Any finite ``t``. Once ``||w_k|| <= DECAY_FLOOR ||v||`` the rest is 0 (``exp(-sL)`` is a
  contraction), so the legs end after about ``345 / LEG_DECAY`` steps instead of an
  amount of work proportional to ``t``.

The first leg length comes from the smallest Ritz value of a short Lanczos run (an estimate of
the slowest decay rate); later legs adapt to the decay observed on the previous one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from n2ngraph.diffusion._krylov import DECAY_FLOOR, Lanczos, NumpyBackend
from n2ngraph.diffusion._problem import safe_norms

__all__ = ["KRYLOV_LEG_DECAY", "LEG_DECAY", "chained", "rate_estimate"]

#: target decay (in nats) of the decaying part over one Chebyshev or expm_multiply leg (both err
#: by about u ||start of the leg||, so about u exp(15) relative to the result)
LEG_DECAY = 15.0
#: ... over one Lanczos leg (its result is formed at its own scale; the length is limited by how
#: well one basis resolves the slowest modes, see ``_krylov``)
KRYLOV_LEG_DECAY = 100.0


def rate_estimate(problem, v: np.ndarray, steps: int = 24) -> float:
    """Smallest Ritz value of ``steps`` Lanczos steps on ``v``: about the slowest decay rate."""
    lz = Lanczos(NumpyBackend(problem), v, min(steps, problem.n), shifted=False)
    lz.extend(steps)
    theta, _ = lz._eig()
    return max(float(theta.min()), problem.decay_lb, 1e-300 * max(problem.lam_max, 1.0))


def chained(step: Callable, problem, v: np.ndarray, times: np.ndarray, *,
            decay: float = LEG_DECAY, rate: float | None = None, first: float | None = None):
    """``exp(-tL) v`` for sorted positive finite ``times`` by legs (module docstring).

    ``step(w, rel_times, scale) -> (D, bound or None, ok)`` evaluates ``exp(-s L) w`` at the
    sorted offsets ``rel_times`` for a unit vector ``w`` (``scale``: the norm it was divided by) (each leg starts from the previous leg's end
    divided by its norm, so no leg sees numbers near the underflow threshold). Returns ``(D of
    shape (T, n), accumulated error bound per t or None, all legs met their target)``. The
    first leg aims at ``first`` nats (default ``decay``); later legs grow by at most 4x each.
    """
    T, n = len(times), v.size
    out = np.zeros((T, n))
    bounds = np.zeros(T)
    have_bound = True
    ok = True
    floor = DECAY_FLOOR * float(safe_norms(v))
    rate = rate_estimate(problem, v) if rate is None else rate
    tau = (decay if first is None else first) / rate
    t_c, w, i, carried = 0.0, v, 0, 0.0
    while i < T:
        wn = float(safe_norms(w))
        if wn <= floor:  # the rest is below the floor: 0, with error at most ||w||
            bounds[i:] = carried + wn
            break
        tau = max(tau, 1e-12 * t_c)  # keep legs longer than the rounding of t_c
        end = t_c + tau
        j = int(np.searchsorted(times, end, side="right"))
        rel = times[i:j] - t_c
        last_leg = j >= T
        if not last_leg:
            rel = np.append(rel, end - t_c)
        D, bound, leg_ok = step(w / wn, rel, wn)
        D = D - problem.null_part(D)  # rounding must not build up a part that never decays
        end_norm = float(safe_norms(D[-1]))
        if end_norm < np.exp(-2.0 * decay) and tau * rate > 1e-6:
            tau *= 0.25  # decayed too much over this leg: shorter legs keep the relative accuracy
            continue
        D *= wn
        ok = ok and bool(leg_ok)
        k = j - i
        out[i:j] = D[:k]
        if bound is None:
            have_bound = False
        else:
            bound = np.asarray(bound) * wn
            bounds[i:j] = carried + bound[:k]
            if not last_leg:
                carried += float(bound[-1])
        if last_leg:
            break
        observed = -np.log(max(end_norm, 1e-300))
        tau *= float(np.clip(decay / max(observed, 1e-3), 0.25, 4.0))
        t_c, w, i = end, D[-1], j
    return out, (bounds if have_bound else None), ok

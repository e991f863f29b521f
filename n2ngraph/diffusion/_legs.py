"""Time legs: every engine but ``dense`` runs ``exp(-tL) v`` leg by leg along the time axis.

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

The first leg length comes from an estimate of the slowest decay rate (the smallest Ritz value
of a short Lanczos run, ``_krylov.probe``); later legs adapt to the decay observed on the previous
one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from n2ngraph.diffusion._problem import DECAY_FLOOR, safe_norms

__all__ = ["KRYLOV_LEG_DECAY", "LEG_DECAY", "chained"]

#: target decay (in nats) of the decaying part over one Chebyshev or expm_multiply leg (both err
#: by about u ||start of the leg||, so about u exp(15) relative to the result)
LEG_DECAY = 15.0
#: ... over one Lanczos leg (its result is formed at its own scale; the length is limited by how
#: well one basis resolves the slowest modes, see ``_krylov``)
KRYLOV_LEG_DECAY = 100.0

#: a leg whose decaying part shrank by more than ``LEG_REDO_FACTOR`` times its target (in nats)
#: lost relative accuracy at its end: it is redone, ``LEG_SHRINK`` times as long. Twice the
#: target still leaves the leg's rounding (u exp(2 decay)) below the accuracy the engines aim at.
LEG_REDO_FACTOR = 2.0
LEG_SHRINK = 0.25
#: legs shorter than this many time constants (``tau * rate``) are never shortened further: the
#: decay over them is already below 1e-6 nats, so the rate estimate, not the length, is at fault
MIN_LEG_RATE_PRODUCT = 1e-6
#: the next leg's length is the last one's times ``decay / observed decay``, clipped to
#: ``[1 / LEG_GROWTH, LEG_GROWTH]`` so one odd leg cannot throw the schedule off
LEG_GROWTH = 4.0
#: a leg is at least this fraction of its start time, so ``t_c + tau`` is not lost to rounding
MIN_LEG_REL = 1e-12


def chained(step: Callable, problem, v: np.ndarray, times: np.ndarray, *, rate: float,
            decay: float = LEG_DECAY, first: float | None = None):
    """``exp(-tL) v`` for sorted positive finite ``times`` by legs (module docstring).

    ``step(w, rel_times, scale) -> (D, bound or None, ok)`` evaluates ``exp(-s L) w`` at the
    sorted offsets ``rel_times`` for a unit vector ``w`` (``scale``: the norm it was divided by;
    each leg starts from the previous leg's end divided by its norm, so no leg sees numbers near
    the underflow threshold). ``rate`` is an
    estimate of the slowest decay rate of ``v`` (``_krylov.probe``). Returns ``(D of shape (T, n),
    accumulated error bound per t or None, all legs met their target)``. The first leg aims at
    ``first`` nats (default ``decay``); later legs grow by at most ``LEG_GROWTH`` each.
    """
    T, n = len(times), v.size
    out = np.zeros((T, n))
    bounds = np.zeros(T)
    have_bound = True
    ok = True
    floor = DECAY_FLOOR * float(safe_norms(v))
    tau = (decay if first is None else first) / rate
    t_c, w, i, carried = 0.0, v, 0, 0.0
    while i < T:
        wn = float(safe_norms(w))
        if wn <= floor:  # the rest is below the floor: 0, with error at most ||w||
            bounds[i:] = carried + wn
            break
        tau = max(tau, MIN_LEG_REL * t_c)  # keep legs longer than the rounding of t_c
        end = t_c + tau
        j = int(np.searchsorted(times, end, side="right"))
        rel = times[i:j] - t_c
        last_leg = j >= T
        if not last_leg:
            rel = np.append(rel, end - t_c)
        D, bound, leg_ok = step(w / wn, rel, wn)
        D = D - problem.null_part(D)  # rounding must not build up a part that never decays
        end_norm = float(safe_norms(D[-1]))
        if end_norm < np.exp(-LEG_REDO_FACTOR * decay) and tau * rate > MIN_LEG_RATE_PRODUCT:
            tau *= LEG_SHRINK  # decayed too much over this leg: shorter legs keep the relative accuracy
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
        growth = decay / max(observed, 1e-3)  # 1e-3 nats: a leg that barely decayed
        tau *= float(np.clip(growth, 1.0 / LEG_GROWTH, LEG_GROWTH))
        t_c, w, i = end, D[-1], j
    return out, (bounds if have_bound else None), ok

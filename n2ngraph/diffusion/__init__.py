"""Heat-diffusion connectivity analysis (docs/paper.md, "Heat-diffusion connectivity analysis").

A network is an undirected graph with symmetric adjacency ``W`` (``NetworkGraph.adjacency``,
nodes in the graph's node order: group by group, topological), degrees ``D``, Laplacian
``L = D - W`` (or ``I - D^-1/2 W D^-1/2`` with ``normalized=True``). The heat signature is

    S(t) = exp(-t L) A,

``A`` the initial heat (by default 1 on the input group, 0 elsewhere). This module computes
``S`` sparse, for a whole grid of ``t`` at once, with one of several engines (``ENGINES``),
plus the quantities built on it: the connectivity distance ``F``, the fraction of heat that has
escaped the sources (signed against a reference, it says which way ``F`` differs), scree
diagrams, the saturation time and the algebraic connectivity. See ``docs/diffusion.md`` for what ``F`` means and which
``t`` to use.

Every function takes a :class:`~n2ngraph.graph.NetworkGraph` or a symmetric, non-negative
``scipy.sparse`` adjacency (then ``sources`` is required). torch is imported only by the
``torch`` engine, and by ``method="auto"`` on graphs of at least ``TORCH_MIN_NODES`` (2e5)
nodes, to ask whether a CUDA device is present (``_engines``).

References
----------
A. Subramaniam and A. Sharma, "N2NSkip: Learning Highly Sparse Networks using Neuron-to-Neuron
Skip Connections", BMVC 2020, arXiv:2208.03662.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from n2ngraph.diffusion._engines import DEFAULT_RTOL, ENGINES, decaying_part, get_engine
from n2ngraph.diffusion._krylov import DEFAULT_BASIS_BYTES, Lanczos, NumpyBackend, basis_steps
from n2ngraph.diffusion._problem import (
    DiffusionAccuracyWarning,
    adjacency_of,
    as_sources,
    as_times,
    build_problem,
    laplacian_matrix,
    power_of_two_scale,
    warn_caller,
)
from n2ngraph.diffusion._scree import (
    SCREE_EXACT_MAX_NODES,
    algebraic_connectivity_of,
    scree_values,
)

__all__ = [
    "ENGINES",
    "DiffusionAccuracyWarning",
    "HeatSignature",
    "algebraic_connectivity",
    "connectivity_distance",
    "heat_escaped",
    "heat_signature",
    "laplacian",
    "saturation_time",
    "scree",
]

#: saturation_time brackets the crossing by growing ``t`` by this factor per try, at most
#: ``SATURATION_MAX_TRIES`` times: ``4^400 ~ 1e240`` past the first guess, beyond any ``t``
#: at which a float64 graph can still hold heat off saturation
SATURATION_GROWTH = 4.0
SATURATION_MAX_TRIES = 400


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


class _Parts:
    """What a signature is made of (scaled units): ``S = scale * (saturated + decaying)`` for
    ``0 < t < inf``, ``S = sources`` at ``t = 0`` and ``scale * saturated`` at ``t = inf``."""

    __slots__ = ("decaying", "digest", "saturated", "scale", "sources", "times")

    def __init__(self, times, sources, scale, saturated, decaying):
        self.times, self.sources, self.scale = times, sources, scale
        self.saturated, self.decaying = saturated, decaying
        self.digest = None


def _digest(a: np.ndarray) -> bytes:
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(a).view(np.uint8), digest_size=16).digest()


class HeatSignature(np.ndarray):
    """The array that :func:`heat_signature` returns: a plain float64 ``ndarray`` of shape
    ``(T, n)`` or ``(n,)`` that also remembers its exact saturated part ``S(inf)`` and its
    decaying part ``S(t) - S(inf)``, each to its own relative accuracy.

    :func:`connectivity_distance` (``reference_signature=``) and :func:`heat_escaped` use those
    parts, so differences that are far below the rounding of ``S`` itself (``F`` at
    ``t lambda_2 >= 100`` is often below ``1e-16 ||S||``) stay accurate. Any new array derived
    from it (a slice, ``S + 0``, a copy) is an ordinary signature without the parts, and an
    edited signature is detected (its checksum) and treated as a plain array. The parts survive
    pickling (e.g. to Dask workers).
    """

    def __array_finalize__(self, obj):
        self._parts = None

    def __reduce__(self):
        fn, args, state = super().__reduce__()
        return fn, args, (state, self._parts)

    def __setstate__(self, state):
        base, parts = state
        super().__setstate__(base)
        self._parts = parts

    def parts(self) -> _Parts | None:
        """The decomposition, or None when this array is derived from a signature or edited."""
        p = getattr(self, "_parts", None)
        if p is None or p.digest != _digest(np.asarray(self)):
            return None
        return p


def _signature_parts(g, t, sources, method, weighted, normalized, rtol, device, max_basis_bytes):
    """``(times, scalar, problem, parts)``; the engines only ever see the decaying part of the
    sources scaled by a power of two, at times below the proven saturation time."""
    get_engine(method)
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    times, scalar = as_times(t)
    problem = build_problem(g, weighted=weighted, normalized=normalized)
    A = as_sources(g, sources, problem.n)
    scale = power_of_two_scale(A)
    As = A / scale  # exact: a power of two
    v0, vr = problem.split(As)
    D = decaying_part(problem, vr, times, method=method, rtol=rtol,
                      v0_norm=float(np.linalg.norm(v0)), device=device,
                      max_basis_bytes=max_basis_bytes, scale=scale)
    return times, scalar, problem, _Parts(times, A, scale, v0, D)


def _assemble(parts: _Parts, scalar: bool) -> HeatSignature:
    times = parts.times
    with np.errstate(over="ignore", invalid="ignore"):
        out = (parts.saturated[None, :] + parts.decaying) * parts.scale
        out[np.isinf(times)] = parts.saturated * parts.scale
    out[times == 0] = parts.sources
    if not np.all(np.isfinite(out)):
        raise ValueError(
            "the heat signature is not finite: it overflows float64 (sources near the float64 "
            "limit, amplified by the normalized Laplacian); scale the sources down"
        )
    sig = (out[0] if scalar else out).view(HeatSignature)
    parts.digest = _digest(np.asarray(sig))
    sig._parts = parts
    return sig


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
    diffusion), and only ``A'`` goes through an engine, in legs of time (``_legs``) and only up
    to the proven time after which ``||exp(-tL) A'|| <= 1e-150 ||A'||`` (``HeatProblem.decay_lb``):
    any finite ``t`` returns the saturated limit there, without NaN or overflow.

    Parameters
    ----------
    g : NetworkGraph or scipy.sparse matrix
        The graph, or a symmetric non-negative adjacency ``(n, n)`` (then ``sources`` is required).
    t : float or array_like of shape (T,)
        Diffusion times, ``>= 0``; any finite value (``1e300`` gives the saturated limit) and
        ``inf`` (the exact limit). Repeated and unsorted values are fine.
    sources : array_like of shape (n,), optional
        Initial heat ``A``, finite. Default: 1 on ``g.input_nodes``, 0 elsewhere. Engines work
        on ``A / 2^k`` (``max |A| / 2^k`` in ``[0.5, 1)``, exact), so huge or subnormal sources
        are fine.
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
        Target of the iterative engines, relative to the decaying part ``D(t) = S(t) - S(inf)``:
        ``||D_engine(t) - D(t)||_2 <= rtol * ||D(t)||_2 + 1e-150 ||A||`` for every ``t`` (so also
        ``<= rtol * ||S(t)||``). ``dense`` is accurate to about unit roundoff times its condition
        and ignores it; ``expm_multiply`` reaches about ``1e-9`` relative on ``D`` (legs).
    device : str, optional
        torch device for ``method="torch"``.
    max_basis_bytes : float
        Memory cap of the Krylov basis (default 2 GiB); at the cap ``krylov`` warns with its
        error bound and ``auto`` switches to Chebyshev.

    Returns
    -------
    HeatSignature
        A float64 ndarray of shape ``(n,)`` for scalar ``t``, ``(T, n)`` for an array (rows in
        the order of ``t``), nodes in the graph's node order. It also carries ``S(inf)`` and
        ``S(t) - S(inf)`` separately (``.parts()``), which :func:`connectivity_distance` uses
        when it is passed as ``reference_signature``.

    Raises
    ------
    ValueError
        Negative, NaN, ``-inf`` or overflowing ``t``; non-finite ``sources`` or ones of the wrong
        length; an adjacency that is not square, symmetric, finite and non-negative (negative or
        non-finite pair weights name their block); an unknown ``method``; a result beyond the
        float64 range.

    Warns
    -----
    DiffusionAccuracyWarning
        An iterative engine stopped before ``rtol`` (basis memory cap, series length cap).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> W = sp.csr_array(np.array([[0, 1.0], [1.0, 0]]))
    >>> np.asarray(heat_signature(W, [0.0, np.inf], sources=[1.0, 0.0]))
    array([[1. , 0. ],
           [0.5, 0.5]])
    """
    _, scalar, _, parts = _signature_parts(g, t, sources, method, weighted, normalized, rtol,
                                           device, max_basis_bytes)
    return _assemble(parts, scalar)


def _node_set(g):
    if hasattr(g, "groups") and hasattr(g, "num_nodes"):
        return tuple((grp.name, grp.size) for grp in g.groups)
    if sp.issparse(g):
        return ("adjacency", g.shape[0])
    raise TypeError(f"expected a NetworkGraph or a scipy.sparse adjacency, got {type(g).__name__}")


def connectivity_distance(reference, g, t, *, sources=None, reference_signature=None,
                          **options) -> float | np.ndarray:
    """Connectivity distance ``F(t) = ||S_ref(t) - S(t)||_2`` (docs/paper.md, N2NSkip eq. for F).

    Both signatures are computed with the same options, the same ``t`` and the same sources (by
    default the input nodes, which coincide because the node sets must). Lower ``F`` means
    connectivity closer to the reference. At ``t = inf``, ``F`` is 0 for a connected ``g`` and
    measures the heat trapped by disconnection otherwise; at finite ``t`` it measures how fast
    heat spreads (``docs/diffusion.md`` recommends ``t`` of about 1-4 / lambda_2 of the reference,
    and explains when ``F`` alone cannot tell faster from slower spreading).

    ``F`` is computed from the parts of the signatures: ``S(inf)`` (exact, from connected
    components) and the decaying part ``S(t) - S(inf)`` (to ``rtol`` relative to its own norm).
    When both graphs have the same components, ``S_ref(inf) = S(inf)`` bit for bit and
    ``F = ||(S_ref - S_ref(inf)) - (S - S(inf))||``, so ``F`` stays accurate far below the
    rounding of ``S``: its absolute error is at most about
    ``rtol (||S_ref(t) - S_ref(inf)|| + ||S(t) - S(inf)||) + 2e-150 ||A||``.

    Parameters
    ----------
    reference, g : NetworkGraph or scipy.sparse matrix
        Graphs on the same node set: NetworkGraphs with the same groups (names and sizes), or
        adjacencies of the same shape.
    t : float or array_like of shape (T,)
        Diffusion times (see :func:`heat_signature`).
    sources : array_like of shape (n,), optional
        Initial heat, shared by both graphs.
    reference_signature : array of shape (T, n) (or (n,) for scalar ``t``), optional
        ``heat_signature(reference, t, ...)`` computed before, with the same ``t``, sources and
        options; it is used instead of recomputing (e.g. one reference for many variants). The
        array that :func:`heat_signature` returns keeps the accuracy above; any other array
        (a copy, a loaded file) is used as it is, and ``F`` is then limited to about
        ``1e-16 ||S||`` absolute.
    **options
        ``method``, ``weighted``, ``normalized``, ``rtol``, ``device``, ``max_basis_bytes`` as in
        :func:`heat_signature`.

    Returns
    -------
    float or ndarray of shape (T,)

    Raises
    ------
    ValueError
        Other node sets; a ``reference_signature`` of the wrong shape, with non-finite entries,
        or made at other times or from other sources; ``F`` beyond the float64 range.
    """
    a, b = _node_set(reference), _node_set(g)
    if a != b:
        raise ValueError(
            "connectivity_distance needs graphs on the same node set; the reference has groups "
            f"{a[:6]}{'...' if len(a) > 6 else ''} and g has {b[:6]}{'...' if len(b) > 6 else ''}"
        )
    if sources is None and not sp.issparse(reference):
        sources = as_sources(reference, None, reference.num_nodes)
    sig_args = _signature_args(options)
    _, scalar, problem, parts = _signature_parts(g, t, sources, *sig_args)
    ref_parts, ref_plain = _reference_of(reference, reference_signature, t, sig_args, scalar,
                                         problem, parts)
    with np.errstate(over="ignore", invalid="ignore"):
        if ref_parts is not None:
            dist = _distance_from_parts(ref_parts, parts)
        else:
            S = _assemble(parts, False)
            dist = np.linalg.norm(np.asarray(ref_plain) - np.asarray(S), axis=-1)
    if not np.all(np.isfinite(dist)):
        raise ValueError("F overflows float64 (sources near the float64 limit); scale the sources down")
    return float(dist[0]) if scalar else dist


def _signature_args(options):
    allowed = {"method", "weighted", "normalized", "rtol", "device", "max_basis_bytes"}
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"unexpected options {sorted(unknown)}; accepted: {sorted(allowed)}")
    return (options.get("method", "auto"), options.get("weighted", False),
            options.get("normalized", False), options.get("rtol", DEFAULT_RTOL),
            options.get("device"), options.get("max_basis_bytes", DEFAULT_BASIS_BYTES))


def _reference_of(reference, reference_signature, t, sig_args, scalar, problem, parts):
    """The reference's ``(parts, None)``, computed with the same sources and options as
    ``parts``, or, from a precomputed ``reference_signature``, ``(its parts or None, the array
    as (T, n))``."""
    if reference_signature is None:
        return _signature_parts(reference, t, parts.sources, *sig_args)[3], None
    return _reference_parts(reference_signature, parts.times, scalar, problem.n, parts)


def _reference_parts(sig, times, scalar, n, parts):
    """Validate a precomputed reference signature; its parts when it still has them."""
    expected = (n,) if scalar else (len(times), n)
    arr = np.asarray(sig)
    if arr.shape != expected:
        raise ValueError(
            f"reference_signature must have shape {expected} (heat_signature(reference, t) for "
            f"these t), got {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise ValueError("reference_signature must be a finite numeric array")
    ref = sig.parts() if isinstance(sig, HeatSignature) else None
    if ref is not None:
        if not np.array_equal(ref.times, times):
            raise ValueError(
                "reference_signature was computed at other times than t: "
                f"{ref.times[:4].tolist()} vs {times[:4].tolist()}"
            )
        if not np.array_equal(ref.sources, parts.sources):
            raise ValueError("reference_signature was computed from other sources than these")
    return ref, arr.reshape(len(times), n)


def _distance_from_parts(ref: _Parts, cur: _Parts) -> np.ndarray:
    times = cur.times
    scale = cur.scale  # same sources, same scale
    d0 = ref.saturated - cur.saturated
    diff = d0[None, :] + (ref.decaying - cur.decaying)
    diff[np.isinf(times)] = d0
    dist = np.linalg.norm(diff, axis=1) * scale
    dist[times == 0] = 0.0  # both are the sources, exactly
    return dist


def heat_escaped(g, t, *, sources=None, weighted: bool = False, normalized: bool = False,
                 reference=None, reference_signature=None, **options) -> float | np.ndarray:
    """Fraction of the initial heat that has left the source nodes by time ``t``::

        escaped(t) = 1 - sum_{i in sources} S_i(t) / sum(A),

    ``S(t) = exp(-tL) A`` (:func:`heat_signature`), "sources" the nodes where ``A != 0`` (by
    default the input nodes, ``A`` their indicator). It is 0 at ``t = 0`` and grows towards
    ``1 - sum_{i in sources} S_i(inf) / sum(A)``: for a connected graph with ``L = D - W`` and the
    default sources, ``1 - n_sources / n``. For ``L = D - W`` and ``A >= 0`` it lies in ``[0, 1]``
    (heat is conserved and stays non-negative).

    ``escaped(g, t) - escaped(reference, t)`` says which way ``g`` differs from the reference,
    which ``F`` cannot: ``> 0`` when heat leaves the sources faster than in the reference,
    ``< 0`` when slower (``docs/diffusion.md``).

    Parameters
    ----------
    g : NetworkGraph or scipy.sparse matrix
    t : float or array_like of shape (T,)
        Diffusion times ``>= 0`` (``inf`` allowed).
    sources : array_like of shape (n,), optional
        Initial heat ``A`` (required for a sparse adjacency); ``sum(A)`` must not be 0.
    weighted, normalized : bool
        Which Laplacian (see :func:`laplacian`).
    reference : NetworkGraph or scipy.sparse matrix, optional
        If given, return ``escaped(g, t) - escaped(reference, t)``, computed from the decaying
        parts (accurate where both are saturated to within ``1e-16``, where subtracting two
        results of this function would only return rounding).
    reference_signature : ndarray of shape (T, n) or (n,), optional
        ``heat_signature(reference, t, ...)`` computed before, with the same sources and options,
        used instead of recomputing the reference's (as in :func:`connectivity_distance`);
        needs ``reference``. A signature that kept its exact parts gives the same accuracy as
        recomputing; any other array is used as given.
    **options
        ``method``, ``rtol``, ``device``, ``max_basis_bytes`` as in :func:`heat_signature`.

    Returns
    -------
    float or ndarray of shape (T,)

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> W = sp.csr_array(np.array([[0, 1.0], [1.0, 0]]))
    >>> heat_escaped(W, [0.0, np.inf], sources=[1.0, 0.0])
    array([0. , 0.5])
    """
    if reference_signature is not None and reference is None:
        raise ValueError("heat_escaped(reference_signature=...) needs reference= as well")
    sig_args = _signature_args({**options, "weighted": weighted, "normalized": normalized})
    times, scalar, problem, parts = _signature_parts(g, t, sources, *sig_args)
    total = float(np.sum(parts.sources / parts.scale))
    if total == 0.0:
        raise ValueError("heat_escaped needs sources whose sum is not 0 (it divides by sum(A))")
    on = parts.sources != 0
    kept0 = float(np.sum(parts.saturated[on]))
    kept_d = parts.decaying[:, on].sum(axis=1)
    if reference is None:
        out = 1.0 - (kept0 + kept_d) / total
        out[np.isinf(times)] = 1.0 - kept0 / total
    else:
        if _node_set(reference) != _node_set(g):
            raise ValueError("heat_escaped(reference=...) needs graphs on the same node set")
        ref, ref_plain = _reference_of(reference, reference_signature, t, sig_args, scalar,
                                       problem, parts)
        if ref is not None:
            r0 = float(np.sum(ref.saturated[on]))
            out = ((r0 - kept0) + (ref.decaying[:, on].sum(axis=1) - kept_d)) / total
            out[np.isinf(times)] = (r0 - kept0) / total
        else:  # a plain array, in the sources' own units
            ref_kept = np.asarray(ref_plain)[:, on].sum(axis=1) / parts.scale
            out = (ref_kept - (kept0 + kept_d)) / total
            out[np.isinf(times)] = (ref_kept[np.isinf(times)] - kept0) / total
    out[times == 0] = 0.0
    if reference is None and not normalized and np.all(parts.sources >= 0):
        np.clip(out, 0.0, 1.0, out=out)  # exact property there; only rounding can leave it
    return float(out[0]) if scalar else out


def scree(g, K, t, *, weighted: bool = False, normalized: bool = False, method: str = "auto",
          n_probes: int = 64, seed=None, return_error: bool = False):
    """Scree diagram value ``alpha(K, t)`` (docs/paper.md)::

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
        projected out of ``n_probes`` Rademacher probes. ``auto``: exact up to 5000 nodes
        (``_scree.SCREE_EXACT_MAX_NODES``).
    n_probes : int
        Probes of the trace estimate (``approx`` only).
    seed : int or numpy Generator, optional
        Probe randomness (``approx`` only).
    return_error : bool
        Also return an error estimate of the same shape: 0 for ``exact`` (up to rounding), for
        ``approx`` three standard errors of the trace estimate propagated to ``alpha``.

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
        method = "exact" if problem.n <= SCREE_EXACT_MAX_NODES else "approx"
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
    """Smallest ``t`` with ``||S(t) - S(inf)||_2 <= eps`` (docs/design.md, "Heat diffusion").

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
    lz = Lanczos(NumpyBackend(problem), vr, basis_steps(problem.n, DEFAULT_BASIS_BYTES),
                 shifted=False)
    # ||exp(-tL) A'|| >= exp(-t lam_max) ||A'||: no crossing before t_lo
    t_lo = np.log(r0 / eps) / problem.lam_max
    t_hi = t_lo
    tol = rtol * eps
    for _ in range(SATURATION_MAX_TRIES):
        if not lz.run(np.array([t_hi]), tol) and not lz.breakdown:
            warn_caller(
                f"saturation_time: Krylov basis cap reached before accuracy {tol:.3g} at "
                f"t={t_hi:.3g}"
            )
        if lz.norm(np.array([t_hi]))[0] <= eps:
            break
        t_lo, t_hi = t_hi, SATURATION_GROWTH * t_hi
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

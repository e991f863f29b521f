"""Heat diffusion: every engine against dense scipy.linalg.expm, edge cases, F, scree, lambda_2."""

import subprocess
import sys
import warnings
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import scipy.linalg as sl
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from n2ngraph.diffusion import (
    ENGINES,
    DiffusionAccuracyWarning,
    algebraic_connectivity,
    connectivity_distance,
    heat_escaped,
    heat_signature,
    laplacian,
    saturation_time,
    scree,
)
from n2ngraph.graph import EdgeBlock, NetworkGraph, NodeGroup

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._graphs import PAPER_MLP, layered_adjacency, mlp_graph

TIMES = np.logspace(-3, 3, 7)
ENGINE_NAMES = sorted(ENGINES)


def adj(n, edges, weights=None):
    r, c = zip(*edges)
    w = np.ones(len(edges)) if weights is None else np.asarray(weights, float)
    W = sp.coo_array((w, (r, c)), shape=(n, n)).tocsr()
    return sp.csr_array(W + W.T)


def path(n):
    return adj(n, [(i, i + 1) for i in range(n - 1)])


def star(n):
    return adj(n, [(0, i) for i in range(1, n)])


def disconnected():
    # a path 0-1-2-3, a triangle 4-5-6, isolated node 7
    return adj(8, [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (4, 6)])


def weighted(seed=3, n=30):
    rng = np.random.default_rng(seed)
    edges = {(i, j) for i, j in rng.integers(0, n, size=(80, 2)) if i != j}
    edges = sorted((min(e), max(e)) for e in edges)
    edges = sorted(set(edges))
    return adj(n, edges, rng.uniform(0.01, 5.0, size=len(edges)))


def expm_reference(W, A, times, normalized=False):
    L = laplacian(W, normalized=normalized).toarray()
    return np.array([sl.expm(-t * L) @ A if np.isfinite(t) else np.nan * A for t in times])


def rel_err(S, ref):
    return np.linalg.norm(S - ref, axis=-1) / np.linalg.norm(ref, axis=-1)


@pytest.fixture(scope="module")
def small_mlp():
    """A scaled-down paper MLP (paper shape / 16) at 2% with N2NSkip blocks: n = 261."""
    return mlp_graph((192, 32, 16, 8, 4, 10), 0.1, seed=0, skip_fraction=0.5)


CASES = {
    "path": lambda: (path(12), np.eye(12)[0]),
    "star": lambda: (star(9), np.eye(9)[3]),
    "disconnected": lambda: (disconnected(), np.array([1.0, 0, 0, 0, 2, 0, 0, 5])),
    "weighted": lambda: (weighted(), np.random.default_rng(0).uniform(size=30)),
}


# ------------------------------------------------------------------------ agreement with expm
@pytest.mark.parametrize("method", ENGINE_NAMES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_engines_match_dense_expm(method, case):
    W, A = CASES[case]()
    ref = expm_reference(W, A, TIMES)
    S = heat_signature(W, TIMES, sources=A, method=method)
    assert S.shape == (len(TIMES), W.shape[0])
    assert rel_err(S, ref).max() < 1e-8


@pytest.fixture(scope="module")
def small_mlp_reference(small_mlp):
    A = np.zeros(small_mlp.num_nodes)
    A[small_mlp.input_nodes] = 1
    return expm_reference(small_mlp.adjacency(), A, TIMES)


@pytest.mark.parametrize("method", ENGINE_NAMES)
def test_engines_match_expm_on_pruned_mlp_with_skips(method, small_mlp, small_mlp_reference):
    S = heat_signature(small_mlp, TIMES, method=method)
    assert rel_err(S, small_mlp_reference).max() < 1e-8


@pytest.mark.parametrize("method", ["krylov", "chebyshev", "dense", "torch"])
def test_normalized_laplacian_engines(method):
    W, A = CASES["disconnected"]()
    ref = expm_reference(W, A, TIMES, normalized=True)
    S = heat_signature(W, TIMES, sources=A, method=method, normalized=True)
    assert rel_err(S, ref).max() < 1e-8


def test_normalized_laplacian_matches_networkx():
    W = disconnected()
    ref = nx.normalized_laplacian_matrix(nx.from_scipy_sparse_array(W)).toarray()
    np.testing.assert_allclose(laplacian(W, normalized=True).toarray(), ref, atol=1e-14)


def test_paper_mlp_2pct_krylov_vs_chebyshev():
    """Two independent algorithms (adaptive Lanczos, a priori Chebyshev) on the full paper MLP."""
    g = mlp_graph(PAPER_MLP, 0.02, seed=1)
    S_k = heat_signature(g, TIMES, method="krylov")
    S_c = heat_signature(g, TIMES, method="chebyshev")
    assert rel_err(S_k, S_c).max() < 1e-8


@pytest.mark.slow
def test_paper_mlp_2pct_matches_expm():
    g = mlp_graph(PAPER_MLP, 0.02, seed=1)
    W = g.adjacency()
    A = np.zeros(g.num_nodes)
    A[g.input_nodes] = 1
    times = np.array([1e-3, 1.0, 1e3])
    ref = expm_reference(W, A, times)
    for method in ("auto", "krylov", "chebyshev", "dense", "torch"):
        assert rel_err(heat_signature(g, times, method=method), ref).max() < 1e-8, method


def test_auto_on_dense_paper_mlp_is_exact_and_krylov_breaks_down():
    g = mlp_graph(PAPER_MLP, 1.0, seed=0)
    S = heat_signature(g, [0.01, 1.0, 100.0], method="auto")
    # dense complete-bipartite layers: heat conserved, and at t=100 fully saturated
    np.testing.assert_allclose(S.sum(axis=1), 3072.0, rtol=1e-12)
    np.testing.assert_allclose(S[-1], 3072.0 / 4042.0, rtol=1e-9)


# ---------------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("method", ENGINE_NAMES)
def test_t0_returns_sources_exactly_and_tinf_is_component_mean(method):
    W, A = CASES["disconnected"]()
    S = heat_signature(W, [0.0, np.inf], sources=A, method=method)
    assert np.array_equal(S[0], A)
    expected = np.array([0.25] * 4 + [2 / 3] * 3 + [5.0])
    np.testing.assert_allclose(S[1], expected, rtol=1e-15)


def test_large_t_tends_to_component_mean():
    W, A = CASES["disconnected"]()
    S = heat_signature(W, [1e3, np.inf], sources=A)
    np.testing.assert_allclose(S[0], S[1], atol=1e-12)


def test_default_sources_are_input_nodes(small_graph):
    S0 = heat_signature(small_graph, 0.0)
    np.testing.assert_array_equal(S0, [1, 1, 1, 0, 0, 0])
    W = small_graph.adjacency()
    np.testing.assert_allclose(
        heat_signature(small_graph, 0.7), heat_signature(W, 0.7, sources=S0), rtol=1e-14
    )


def test_shapes_order_and_duplicates():
    W, A = CASES["path"]()
    t = [5.0, 0.1, 5.0, 0.0]
    S = heat_signature(W, t, sources=A)
    assert S.shape == (4, 12)
    np.testing.assert_allclose(S[0], S[2], rtol=0)
    assert rel_err(S[1], heat_signature(W, 0.1, sources=A)) < 1e-9
    assert heat_signature(W, 0.1, sources=A).shape == (12,)


def test_isolated_nodes_keep_their_heat():
    W = sp.csr_array((5, 5))
    A = np.arange(5.0)
    np.testing.assert_array_equal(heat_signature(W, [0.0, 1.0, np.inf], sources=A), [A, A, A])


@pytest.mark.parametrize("bad_t", [-1.0, np.nan, [0.1, -0.1], [[1.0]]])
def test_bad_times(bad_t):
    W, A = CASES["path"]()
    with pytest.raises(ValueError, match="t"):
        heat_signature(W, bad_t, sources=A)


def test_bad_adjacency_and_sources():
    with pytest.raises(ValueError, match="not symmetric"):
        heat_signature(sp.csr_array(np.array([[0, 1.0], [0, 0]])), 1.0, sources=[1, 0])
    with pytest.raises(ValueError, match="negative weight"):
        heat_signature(sp.csr_array(np.array([[0, -1.0], [-1.0, 0]])), 1.0, sources=[1, 0])
    with pytest.raises(ValueError, match="square"):
        heat_signature(sp.csr_array(np.ones((2, 3))), 1.0, sources=[1, 0])
    with pytest.raises(ValueError, match=r"shape \(12,\)"):
        heat_signature(path(12), 1.0, sources=np.ones(11))
    with pytest.raises(ValueError, match="sources is required"):
        heat_signature(path(12), 1.0)
    with pytest.raises(ValueError, match="finite"):
        heat_signature(path(3), 1.0, sources=[1, np.nan, 0])
    with pytest.raises(TypeError, match="NetworkGraph"):
        heat_signature(np.eye(3), 1.0, sources=[1, 0, 0])
    with pytest.raises(ValueError, match=r"'krylov'"):
        heat_signature(path(3), 1.0, sources=[1, 0, 0], method="lanczos")


def test_self_loops_are_dropped_with_a_warning():
    W = sp.csr_array(path(4) + sp.eye_array(4))
    with pytest.warns(UserWarning, match="self-loops"):
        S = heat_signature(W, 0.5, sources=np.eye(4)[0])
    np.testing.assert_allclose(S, heat_signature(path(4), 0.5, sources=np.eye(4)[0]), rtol=1e-14)


@pytest.mark.parametrize("method", ENGINE_NAMES)
def test_no_warnings_leak(method, small_mlp):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        heat_signature(small_mlp, TIMES, method=method)


def test_accuracy_warning_when_basis_capped(small_mlp):
    with pytest.warns(DiffusionAccuracyWarning, match="rtol") as record:
        heat_signature(small_mlp, 100.0, method="krylov", max_basis_bytes=3 * 8 * 261)
    assert record[0].filename == __file__  # attributed to the caller's line, not the package


def test_auto_falls_back_when_basis_capped(small_mlp):
    ref = heat_signature(small_mlp, TIMES, method="dense")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        S = heat_signature(small_mlp, TIMES, method="auto", max_basis_bytes=3 * 8 * 261)
    assert rel_err(S, ref).max() < 1e-8


def test_weighted_network_graph():
    groups = (NodeGroup("input", 0, 3), NodeGroup("h", 3, 2))
    mask = np.array([[1, 1, 0], [0, 1, 1]], bool)
    pw = np.array([[0.5, 2.0, 0.0], [0.0, 1.0, 3.0]], np.float32)
    g = NetworkGraph(groups, (EdgeBlock("h", "input", "h", "sequential", mask, pw),))
    L = laplacian(g, weighted=True).toarray()
    assert L[0, 3] == -0.5 and L[4, 4] == 4.0
    A = np.array([1.0, 1, 1, 0, 0])
    np.testing.assert_allclose(
        heat_signature(g, 2.0, weighted=True), sl.expm(-2.0 * L) @ A, rtol=1e-10
    )


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 25), st.floats(0.05, 0.6), st.integers(0, 10_000), st.floats(1e-3, 1e3))
def test_properties_conservation_decay_agreement(n, p, seed, t):
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)) < p, 1)
    W = sp.csr_array((upper | upper.T).astype(float))
    A = rng.random(n)
    S = heat_signature(W, [t / 2, t, np.inf], sources=A, method="krylov")
    np.testing.assert_allclose(S.sum(axis=1), A.sum(), rtol=1e-9)  # 1^T L = 0: heat conserved
    d = np.linalg.norm(S[:2] - S[2], axis=1)
    assert d[1] <= d[0] * (1 + 1e-9) + 1e-12  # ||S(t) - S(inf)|| never increases
    ref = heat_signature(W, t, sources=A, method="dense")
    assert np.linalg.norm(S[1] - ref) <= 1e-8 * np.linalg.norm(ref)


def test_core_does_not_import_torch():
    code = (
        "import sys, numpy as np, scipy.sparse as sp; import n2ngraph; "
        "from n2ngraph import heat_signature, scree, algebraic_connectivity; "
        "W = sp.csr_array(np.array([[0, 1.0], [1.0, 0]])); heat_signature(W, 1.0, sources=[1, 0]); "
        "n = 300; P = sp.diags_array([np.ones(n - 1), np.ones(n - 1)], offsets=[-1, 1]); "
        "heat_signature(sp.csr_array(P), [0.1, 10.0], sources=np.eye(n)[0]); "  # auto -> krylov
        "assert 'torch' not in sys.modules and 'pandas' not in sys.modules "
        "and 'matplotlib' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------- distance F
def test_connectivity_distance():
    ref = mlp_graph((40, 12, 6, 3), 1.0, seed=0)
    g = mlp_graph((40, 12, 6, 3), 0.1, seed=0)
    assert connectivity_distance(ref, ref, [0.1, 1.0]).tolist() == [0.0, 0.0]
    t = np.array([0.1, 1.0, np.inf])
    F = connectivity_distance(ref, g, t)
    S_ref, S = heat_signature(ref, t, method="dense"), heat_signature(g, t, method="dense")
    np.testing.assert_allclose(F, np.linalg.norm(S_ref - S, axis=1), rtol=1e-8, atol=1e-12)
    assert isinstance(connectivity_distance(ref, g, 1.0), float)
    # F(inf) = 0 when the pruned graph stays connected, > 0 when heat is trapped
    from n2ngraph.diffusion._problem import build_problem

    assert (build_problem(g).n_components == 1) == (F[2] < 1e-12)


def test_connectivity_distance_trapped_heat_hand_computed():
    # reference: path 0-1-2-3; pruned: edge (1, 2) removed. Sources on node 0.
    A = np.eye(4)[0]
    pruned = adj(4, [(0, 1), (2, 3)])
    F = connectivity_distance(path(4), pruned, np.inf, sources=A)
    # S_ref(inf) = 1/4 everywhere; S(inf) = (1/2, 1/2, 0, 0)
    assert pytest.approx(np.linalg.norm([0.25, 0.25, -0.25, -0.25]), rel=1e-15) == F


def test_connectivity_distance_refuses_other_node_sets():
    a = mlp_graph((40, 12, 6, 3), 1.0)
    b = mlp_graph((40, 12, 7, 3), 1.0)
    with pytest.raises(ValueError, match="same node set"):
        connectivity_distance(a, b, 1.0)
    with pytest.raises(ValueError, match="same node set"):
        connectivity_distance(path(4), path(5), 1.0, sources=np.ones(4))


# -------------------------------------------------------------------------------- scree
def test_scree_hand_computed_path3():
    # P3 has eigenvalues 0, 1, 3
    t = np.array([0.0, 0.5, 40.0, np.inf])
    alpha = scree(path(3), 1, t)
    expected = np.exp(-t[:3]) / (np.exp(-t[:3]) + np.exp(-3 * t[:3]))
    np.testing.assert_allclose(alpha[:3], expected, rtol=1e-12)
    assert alpha[3] == 1.0
    assert scree(path(3), 2, 7.0) == 1.0


def test_scree_large_t_no_underflow_and_disconnected():
    alpha = scree(disconnected(), [1, 2, 3, 7], [1e4, np.inf])
    assert np.isfinite(alpha).all()
    # spectrum: 0, 0, 0 (3 components) then positive: lambda_2 = lambda_3 = 0 share the limit
    np.testing.assert_allclose(alpha[:, 1], [0.5, 1.0, 1.0, 1.0])


def test_scree_approx_within_its_error():
    W = layered_adjacency(6, 120, 4, seed=0)
    K = np.array([5, 20, 60])
    t = np.array([0.0, 0.05, 0.5, 5.0])
    exact = scree(W, K, t, method="exact")
    approx, err = scree(W, K, t, method="approx", n_probes=96, seed=0, return_error=True)
    assert np.all(np.abs(approx - exact) <= err + 1e-9)
    np.testing.assert_allclose(approx[:, 0], K / (W.shape[0] - 1), rtol=1e-12)
    assert np.abs(approx - exact).max() < 0.05


def test_scree_bad_K():
    with pytest.raises(TypeError, match="round"):
        scree(path(5), 0.5, 1.0)
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        scree(path(5), 5, 1.0)


# ------------------------------------------------------------------- saturation, lambda_2
def test_saturation_time_two_nodes_hand_computed():
    # L = [[1,-1],[-1,1]], A = (1, 0): S(t) - S(inf) = e^{-2t} (1/2, -1/2)
    eps = 1e-4
    t = saturation_time(path(2), eps, sources=[1.0, 0.0])
    assert t == pytest.approx(np.log(1 / (eps * np.sqrt(2))) / 2, rel=1e-8)
    assert saturation_time(path(2), 1.0, sources=[1.0, 0.0]) == 0.0
    with pytest.raises(ValueError, match="eps"):
        saturation_time(path(2), 0.0, sources=[1.0, 0.0])


def test_saturation_time_is_the_crossing(small_mlp):
    eps = 1e-3
    t = saturation_time(small_mlp, eps)
    S = heat_signature(small_mlp, [t * 0.99, t, t * 1.01, np.inf], method="dense")
    d = np.linalg.norm(S[:3] - S[3], axis=1)
    assert d[0] > eps >= d[2]
    assert d[1] == pytest.approx(eps, rel=1e-5)


@pytest.mark.parametrize("n", [2, 5, 40])
def test_algebraic_connectivity_path_and_complete(n):
    assert algebraic_connectivity(path(n)) == pytest.approx(2 - 2 * np.cos(np.pi / n), rel=1e-10)
    K = sp.csr_array(np.ones((n, n)) - np.eye(n))
    assert algebraic_connectivity(K) == pytest.approx(n, rel=1e-10)


def test_algebraic_connectivity_disconnected_is_zero():
    assert algebraic_connectivity(disconnected()) == 0.0
    with pytest.raises(ValueError, match="2 nodes"):
        algebraic_connectivity(sp.csr_array((1, 1)))


def test_algebraic_connectivity_lanczos_on_hypercube():
    # Q_12: n = 4096 (> dense limit), eigenvalues 2k with binomial multiplicities: lambda_2 = 2
    W = sp.csr_array(nx.to_scipy_sparse_array(nx.hypercube_graph(12), dtype=float))
    assert algebraic_connectivity(W) == pytest.approx(2.0, rel=1e-9)


def test_lazy_top_level_exports():
    import n2ngraph

    for name in ("laplacian", "heat_signature", "connectivity_distance", "scree",
                 "saturation_time", "algebraic_connectivity"):
        assert getattr(n2ngraph, name) is globals()[name]


# ------------------------------------------------- huge t, huge sources, large-t accuracy
def _eigh_decaying(W, A, times, normalized=False):
    """Reference for the decaying part S(t) - S(inf) in extended form: eigh of the dense
    Laplacian, the null space dropped, exp(-t lambda) summed mode by mode (accurate relative to
    its own size however small it is)."""
    from n2ngraph.diffusion._problem import build_problem

    problem = build_problem(W, normalized=normalized)
    lam, U = sl.eigh(laplacian(W, normalized=normalized).toarray())
    c = problem.n_components
    lam, U = lam[c:], U[:, c:]
    coef = U.T @ (A - problem.null_part(A))
    with np.errstate(under="ignore"):
        return (np.exp(-np.outer(times, lam)) * coef) @ U.T, problem.null_part(A)


HUGE_T = [1e10, 1e300, np.finfo(float).max]


@pytest.mark.parametrize("method", ENGINE_NAMES)
def test_huge_finite_t_is_the_saturated_limit(method, small_mlp):
    S = heat_signature(small_mlp, [1.0, *HUGE_T, np.inf], method=method)
    assert np.isfinite(S).all()
    for row in S[1:4]:
        np.testing.assert_array_equal(row, S[4])
    W, A = CASES["disconnected"]()
    S = heat_signature(W, HUGE_T, sources=A, method=method)
    expected = np.array([0.25] * 4 + [2 / 3] * 3 + [5.0])
    np.testing.assert_allclose(S, np.tile(expected, (3, 1)), rtol=1e-15)


@pytest.mark.parametrize("bad_t", [np.nan, -np.inf, 10**400, [1.0, np.nan]])
def test_non_finite_or_overflowing_t_is_refused(bad_t):
    W, A = CASES["path"]()
    with pytest.raises(ValueError, match="t"):
        heat_signature(W, bad_t, sources=A)


@pytest.mark.parametrize("method", ENGINE_NAMES)
def test_huge_sources_are_scaled_not_overflowed(method):
    W, A = CASES["weighted"]()
    times = TIMES[:5]
    S = heat_signature(W, times, sources=A, method=method)
    big = heat_signature(W, times, sources=A * 2.0**1000, method=method)  # squares overflow
    assert np.isfinite(big).all()
    np.testing.assert_allclose(big / 2.0**1000, S, rtol=1e-12, atol=0)
    huge = heat_signature(W, 1.0, sources=np.full(30, 1e300), method=method)
    np.testing.assert_allclose(huge, 1e300, rtol=1e-12)
    tiny = heat_signature(W, 1.0, sources=A * 1e-310, method=method)  # subnormal
    np.testing.assert_allclose(tiny / 1e-310, heat_signature(W, 1.0, sources=A, method=method),
                               rtol=1e-6)
    F = connectivity_distance(W, path(30), 1.0, sources=A * 1e300, method=method)
    assert np.isfinite(F) and F > 1e299


@pytest.mark.parametrize("bad", [[np.inf, 0, 0], [np.nan, 1, 0], [10**400, 0, 0]])
def test_non_finite_sources_are_refused(bad):
    with pytest.raises(ValueError, match="finite"):
        heat_signature(path(3), 1.0, sources=bad)


LARGE_T_CASES = {
    "path": lambda: (path(12), np.eye(12)[0]),
    "disconnected": lambda: (disconnected(), np.array([1.0, 0, 0, 0, 2, 0, 0, 5])),
    "weighted": lambda: (weighted(), np.random.default_rng(0).uniform(size=30)),
    "mlp": lambda: (mlp_graph((48, 16, 8, 4), 0.3, seed=2, skip_fraction=0.5).adjacency(),
                    np.r_[np.ones(48), np.zeros(28)]),
}


@pytest.mark.parametrize("method", ENGINE_NAMES)
@pytest.mark.parametrize("case", sorted(LARGE_T_CASES))
def test_decaying_part_relative_accuracy_at_large_t(method, case):
    """S(t) - S(inf) to ~rtol of its own size at t lambda_2 from 1 to 300 (down to ~1e-130),
    where it is far below the rounding of S itself."""
    W, A = LARGE_T_CASES[case]()
    lam2 = min(x for x in np.linalg.eigvalsh(laplacian(W).toarray()) if x > 1e-9)
    # expm_multiply's work grows with t ||L||: up to t lambda_2 = 100 only, to keep tests fast
    times = np.array([1.0, 10.0, 100.0] + ([] if method == "expm_multiply" else [300.0])) / lam2
    ref, sat = _eigh_decaying(W, A, times)
    S = heat_signature(W, times, sources=A, method=method)
    parts = S.parts()
    D = parts.decaying * parts.scale
    np.testing.assert_array_equal(parts.saturated * parts.scale, sat)
    assert (rel_err(D, ref) < 1e-8).all(), rel_err(D, ref)
    # F between two graphs with the same components = the difference of decaying parts
    W2 = sp.csr_array(W * 1.5)
    ref2, _ = _eigh_decaying(W2, A, times)
    F = connectivity_distance(W, W2, times, sources=A, method=method)
    F_ref = np.linalg.norm(ref - ref2, axis=1)
    np.testing.assert_allclose(F, F_ref, rtol=1e-7)
    assert F[-1] < 1e-30  # far below the 1e-16 * ||S|| that subtracting signatures could give


def test_connectivity_distance_with_reference_signature(small_mlp):
    ref_graph = mlp_graph((192, 32, 16, 8, 4, 10), 1.0, seed=0)
    t = np.array([0.0, 0.01, 0.1, 1.0, 30.0, np.inf])
    F = connectivity_distance(ref_graph, small_mlp, t)
    S_ref = heat_signature(ref_graph, t)
    np.testing.assert_array_equal(connectivity_distance(ref_graph, small_mlp, t,
                                                        reference_signature=S_ref), F)
    # pickling keeps the parts (Dask workers); a plain copy is used as it is
    import pickle

    again = pickle.loads(pickle.dumps(S_ref))
    np.testing.assert_array_equal(connectivity_distance(ref_graph, small_mlp, t,
                                                        reference_signature=again), F)
    plain = np.array(S_ref)
    np.testing.assert_allclose(connectivity_distance(ref_graph, small_mlp, t,
                                                     reference_signature=plain), F,
                               rtol=1e-10, atol=1e-13)
    edited = heat_signature(ref_graph, t)
    edited[1, 0] += 1.0  # checksum no longer matches: treated as a plain array
    assert edited.parts() is None
    s1 = connectivity_distance(ref_graph, small_mlp, 1.0, reference_signature=S_ref[3].copy())
    assert s1 == pytest.approx(F[3], rel=1e-10)
    with pytest.raises(ValueError, match="shape"):
        connectivity_distance(ref_graph, small_mlp, t, reference_signature=S_ref[:3])
    with pytest.raises(ValueError, match="other times"):
        connectivity_distance(ref_graph, small_mlp, t * 2, reference_signature=S_ref)
    with pytest.raises(ValueError, match="finite"):
        connectivity_distance(ref_graph, small_mlp, t, reference_signature=plain * np.nan)


# ---------------------------------------------------------------------------- heat_escaped
def test_heat_escaped_with_reference_signature(small_mlp):
    ref_graph = mlp_graph((192, 32, 16, 8, 4, 10), 1.0, seed=0)
    t = np.array([0.0, 0.01, 0.1, 1.0, 30.0, np.inf])
    expected = heat_escaped(small_mlp, t, reference=ref_graph)
    S_ref = heat_signature(ref_graph, t)
    np.testing.assert_array_equal(
        heat_escaped(small_mlp, t, reference=ref_graph, reference_signature=S_ref), expected)
    plain = np.array(S_ref)  # no parts: used as given, to the rounding of S
    np.testing.assert_allclose(
        heat_escaped(small_mlp, t, reference=ref_graph, reference_signature=plain), expected,
        rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="needs reference"):
        heat_escaped(small_mlp, t, reference_signature=S_ref)
    with pytest.raises(ValueError, match="other times"):
        heat_escaped(small_mlp, t * 2, reference=ref_graph, reference_signature=S_ref)


@pytest.mark.parametrize("case", sorted(CASES))
def test_heat_escaped_matches_dense_expm(case):
    W, A = CASES[case]()
    A = np.abs(A)
    on = A != 0
    times = np.array([0.0, 1e-3, 0.1, 1.0, 10.0])
    ref = expm_reference(W, A, times)
    expected = 1.0 - ref[:, on].sum(axis=1) / A.sum()
    got = heat_escaped(W, times, sources=A)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert got[0] == 0.0 and np.all((got >= 0) & (got <= 1))
    sat = heat_signature(W, np.inf, sources=A)
    assert heat_escaped(W, np.inf, sources=A) == pytest.approx(1 - sat[on].sum() / A.sum(), abs=1e-15)


def test_heat_escaped_network_graph_defaults(small_mlp):
    n, k = small_mlp.num_nodes, small_mlp.input_nodes.size
    e = heat_escaped(small_mlp, [0.0, 1.0, np.inf])
    assert e[0] == 0.0 and 0 < e[1] < e[2]
    sat = heat_signature(small_mlp, np.inf)
    assert e[2] == pytest.approx(1 - sat[small_mlp.input_nodes].sum() / k, rel=1e-12)
    connected = mlp_graph((192, 32, 16, 8, 4, 10), 1.0, seed=0)
    assert heat_escaped(connected, np.inf) == pytest.approx(1 - k / n, rel=1e-12)  # spreads evenly
    assert isinstance(heat_escaped(small_mlp, 1.0), float)
    ref = mlp_graph((192, 32, 16, 8, 4, 10), 1.0, seed=0)
    t = np.array([0.1, 1.0, 1e3])
    diff = heat_escaped(small_mlp, t, reference=ref)
    np.testing.assert_allclose(diff[:2], heat_escaped(small_mlp, t[:2]) - heat_escaped(ref, t[:2]),
                               atol=1e-12)
    with pytest.raises(ValueError, match="sum"):
        heat_escaped(path(3), 1.0, sources=[1.0, -1.0, 0.0])


# ------------------------------------------------------------------------ weight validation
@pytest.mark.parametrize("bad", [-0.5, np.inf, np.nan])
def test_bad_pair_weights_name_the_block(bad):
    groups = (NodeGroup("input", 0, 3), NodeGroup("h", 3, 2))
    mask = np.array([[1, 1, 0], [0, 1, 1]], bool)
    pw = np.array([[0.5, 2.0, 0.0], [0.0, 1.0, 3.0]], np.float32)
    block = EdgeBlock("fc1", "input", "h", "sequential", mask, pw)
    g = NetworkGraph(groups, (block,))
    # NetworkGraph refuses such weights itself; diffusion checks again (e.g. a block edited after)
    bad_pw = pw.copy()
    bad_pw[1, 1] = bad
    object.__setattr__(block, "pair_weight", bad_pw)
    with pytest.raises(ValueError, match=r"block 'fc1'.*\(out 1, in 1\)"):
        laplacian(g, weighted=True)
    with pytest.raises(ValueError, match="block 'fc1'"):
        heat_signature(g, 1.0, weighted=True)
    heat_signature(g, 1.0)  # the binary adjacency does not use the weights


def test_zero_pair_weights_carry_no_heat():
    groups = (NodeGroup("input", 0, 2), NodeGroup("h", 2, 1))
    pw = np.array([[1.0, 0.0]], np.float32)
    g = NetworkGraph(groups, (EdgeBlock("fc1", "input", "h", "sequential", np.ones((1, 2), bool), pw),))
    L = laplacian(g, weighted=True).toarray()
    assert L[1].tolist() == [0.0, 0.0, 0.0]  # node 1 joined only by a zero weight: isolated


@pytest.mark.parametrize("value", [-1.0, np.inf, np.nan])
def test_bad_sparse_weights_name_the_entry(value):
    W = sp.csr_array(np.array([[0, 1.0, 0], [1.0, 0, value], [0, value, 0]]))
    with pytest.raises(ValueError, match=r"entry \(1, 2\)"):
        laplacian(W)


def test_signed_escaped_difference_at_large_t_matches_eigh():
    W, A = LARGE_T_CASES["mlp"]()
    W2 = sp.csr_array(W * 1.5)  # spreads 1.5x faster, same components
    lam2 = min(x for x in np.linalg.eigvalsh(laplacian(W).toarray()) if x > 1e-9)
    t = np.array([1.0, 30.0, 100.0]) / lam2
    D, _ = _eigh_decaying(W, A, t)
    D2, _ = _eigh_decaying(W2, A, t)
    on = A != 0
    expected = (D[:, on].sum(axis=1) - D2[:, on].sum(axis=1)) / A.sum()
    got = heat_escaped(W2, t, sources=A, reference=W)
    np.testing.assert_allclose(got, expected, rtol=1e-7)
    assert np.all(got > 0)  # faster than the reference, even where both are within 1e-40 of saturation


def test_engines_refuse_legs_beyond_their_work_caps():
    # lambda_2 / lambda_max ~ 1e-200: Chebyshev and expm_multiply would need ~1e200 matvecs
    W = sp.csr_array(np.array([[0, 1e-200, 0], [1e-200, 0, 1.0], [0, 1.0, 0]]))
    for method in ("chebyshev", "expm_multiply"):
        with pytest.raises(ValueError, match="krylov"):
            heat_signature(W, 1e100, sources=[1.0, 0, 0], method=method)
    S = heat_signature(W, [1e100, 1e300], sources=[1.0, 0, 0], method="krylov")
    np.testing.assert_allclose(S[0], [1.0, 0, 0], atol=1e-12)  # exp(-1e100 * ~1e-200) ~ 1
    np.testing.assert_allclose(S[1], 1 / 3, rtol=1e-12)


# ------------------------------------------------------------- engines: driver, backends, auto
def test_one_lanczos_driver_over_the_backend_protocol(small_mlp):
    """krylov and torch are the one driver (lanczos_legs) on two KrylovBackend implementations;
    any object with the protocol's methods can carry the vectors."""
    from n2ngraph.diffusion import _krylov, _torch
    from n2ngraph.diffusion._problem import build_problem

    protocol = {m for m in vars(_krylov.KrylovBackend) if not m.startswith("_")} - {"problem"}
    assert protocol == {"alloc", "vec", "matvec", "project", "set", "get", "dot", "norm",
                        "reorth", "combine"}
    for backend in (_krylov.NumpyBackend, _torch.TorchBackend):
        assert protocol <= set(vars(backend)), backend
    assert not hasattr(_krylov, "krylov_engine") and not hasattr(_torch, "torch_engine")

    calls = []

    class Counting(_krylov.NumpyBackend):
        def matvec(self, x):
            calls.append(1)
            return super().matvec(x)

    problem = build_problem(small_mlp)
    A = np.zeros(small_mlp.num_nodes)
    A[small_mlp.input_nodes] = 1.0
    v0, vr = problem.split(A / 2.0)
    D, bound, ok = _krylov.lanczos_legs(problem, vr, TIMES, rtol=1e-10,
                                        v0_norm=float(np.linalg.norm(v0)), backend=Counting)
    assert ok and calls and bound.shape == TIMES.shape
    S = heat_signature(small_mlp, TIMES, method="krylov")
    np.testing.assert_array_equal(2.0 * (v0 + D), np.asarray(S))


def test_auto_choice_depends_on_problem_and_hardware_only(monkeypatch):
    import importlib.util

    from n2ngraph.diffusion import _engines
    from n2ngraph.diffusion._problem import build_problem

    small = build_problem(path(_engines.AUTO_DENSE_MAX_NODES))
    big = build_problem(path(_engines.AUTO_DENSE_MAX_NODES + 200))
    monkeypatch.setattr(_engines, "TORCH_MIN_NODES", big.n)
    monkeypatch.setitem(sys.modules, "torch", None)  # "imported or not" must not matter
    monkeypatch.setattr(_engines, "cuda_available", lambda: False)
    assert _engines.auto_choice(small, TIMES, 1e-10) == "dense"
    assert _engines.auto_choice(big, TIMES, 1e-10) == "krylov"
    monkeypatch.setattr(_engines, "cuda_available", lambda: True)
    assert _engines.auto_choice(small, TIMES, 1e-10) == "dense"
    assert _engines.auto_choice(big, TIMES, 1e-10) == "torch"
    monkeypatch.undo()

    # the hardware question is asked of the installation, not of sys.modules
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    _engines.cuda_available.cache_clear()
    try:
        assert _engines.cuda_available() is False
    finally:
        monkeypatch.undo()
        _engines.cuda_available.cache_clear()


def test_auto_on_a_cuda_machine_runs_the_torch_engine(monkeypatch, small_mlp):
    """With a CUDA device reported, auto hands large graphs to the torch engine (here on the CPU
    build of torch: the backend falls back to the CPU device), and the answer is unchanged."""
    pytest.importorskip("torch")
    from n2ngraph.diffusion import _engines, _torch

    built = []

    class Recording(_torch.TorchBackend):
        def __init__(self, problem, device=None):
            built.append(device)
            super().__init__(problem, "cpu" if device is None else device)

    monkeypatch.setattr(_engines, "cuda_available", lambda: True)
    monkeypatch.setattr(_engines, "TORCH_MIN_NODES", small_mlp.num_nodes)
    monkeypatch.setattr(_torch, "TorchBackend", Recording)
    S = heat_signature(small_mlp, TIMES, method="auto")
    assert len(built) == 1  # one backend (one copy of L to the device) for every leg
    ref = heat_signature(small_mlp, TIMES, method="dense")
    assert rel_err(S, ref).max() < 1e-8

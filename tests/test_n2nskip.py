"""N2NSkip / ResSkip graph edits: wirings, exact budgets, spatial maps, initial skip weights."""

import itertools

import numpy as np
import pytest

from n2ngraph.graph import EdgeBlock, LayerSpec, NetworkGraph, NodeGroup
from n2ngraph.n2nskip import (
    _add_n2nskip_count,
    add_n2nskip,
    add_resskip,
    block_pairs,
    chain_depths,
    skip_candidates,
    skip_initial_weights,
    skip_pairs,
)


def _mlp_graph(sizes, density=1.0, seed=0):
    """A hand-built MLP graph: groups input, l1, ..., with random masks at ``density``."""
    rng = np.random.default_rng(seed)
    groups, start = [], 0
    names = ["input"] + [f"l{i}" for i in range(1, len(sizes))]
    for name, size in zip(names, sizes):
        groups.append(NodeGroup(name, start, size, (size,)))
        start += size
    blocks = [EdgeBlock(names[i + 1], names[i], names[i + 1], "sequential",
                        rng.random((sizes[i + 1], sizes[i])) < density, spec=LayerSpec(op="Linear"))
              for i in range(len(sizes) - 1)]
    return NetworkGraph(groups, blocks, {"model": "hand"})


def _conv_graph():
    """input(3, 16x16) -conv-> c1(8, 16x16) -[pool]conv-> c2(16, 8x8) -[pool]conv-> c3(16, 4x4)
    -flatten(fold 16)-> fc(10)."""
    shapes = {"input": (3, 16, 16), "c1": (8, 16, 16), "c2": (16, 8, 8), "c3": (16, 4, 4), "fc": (10,)}
    groups, start = [], 0
    for name, shape in shapes.items():
        groups.append(NodeGroup(name, start, shape[0], shape))
        start += shape[0]
    ones = lambda *s: np.ones(s, bool)  # noqa: E731
    blocks = [
        EdgeBlock("c1", "input", "c1", "sequential", ones(8, 3, 3, 3)),
        EdgeBlock("c2", "c1", "c2", "sequential", ones(16, 8, 3, 3)),
        EdgeBlock("c3", "c2", "c3", "sequential", ones(16, 16, 3, 3)),
        EdgeBlock("fc", "c3", "fc", "sequential", ones(10, 256), fold=16),
    ]
    return NetworkGraph(groups, blocks)


def test_paper_mlp_has_ten_skip_blocks_and_none_consecutive():
    g = _mlp_graph([3072, 512, 256, 128, 64, 10], density=0.05)
    pairs = skip_candidates(g)
    # 6 groups, 5 layers: C(6, 2) - 5 = 10 non-consecutive pairs (the paper's 10 skip blocks)
    expected = {(a, b) for a, b in itertools.combinations([x.name for x in g.groups], 2)} - {
        (b.src, b.dst) for b in g.blocks}
    assert {(s, d) for s, d, _ in pairs} == expected and len(pairs) == 10
    g2 = add_n2nskip(g, 0.02, seed=3)
    skips = g2.blocks_of_kind("n2nskip")
    assert len(skips) == 10
    depth = chain_depths(g)
    assert all(depth[b.dst] - depth[b.src] >= 2 for b in skips)
    assert all(b.mask.shape == (g.group(b.dst).size, g.group(b.src).size) for b in skips)


@pytest.mark.parametrize("density", [0.0, 1e-4, 0.013, 0.1])
def test_budget_is_exact(density):
    g = _mlp_graph([100, 40, 30, 20, 10], density=0.1)
    g2 = add_n2nskip(g, density, seed=1)
    assert g2.num_params - g.num_params == round(density * g.dense_params)
    # the original blocks are untouched and keep their order
    assert [b.name for b in g2.blocks if b.kind == "sequential"] == [b.name for b in g.blocks]
    assert all(a.same_topology(b) for a, b in zip(g.blocks, g2.blocks_of_kind("sequential")))


def test_spread_proportional_to_sequential_size():
    # targets l2 (seq 200*100), l3 (50*200), l4 (10*50): shares 20000 : 10000 : 500 of the budget
    g = _mlp_graph([300, 100, 200, 50, 10])
    g2 = add_n2nskip(g, 0.01, seed=0)
    total = round(0.01 * g.dense_params)
    seq = {"l2": 200 * 100, "l3": 50 * 200, "l4": 10 * 50}
    got = {t: sum(b.num_params for b in g2.blocks_of_kind("n2nskip") if b.dst == t) for t in seq}
    assert sum(got.values()) == total
    for t in seq:
        assert abs(got[t] - total * seq[t] / sum(seq.values())) <= 1


def test_capacity_overflow_is_passed_on_and_too_much_is_refused():
    g = _mlp_graph([4, 4, 4, 100])  # candidates: input->l2 (16), input->l3 (400), l1->l3 (400)
    cap = 16 + 400 + 400
    g2 = add_n2nskip(g, cap / g.dense_params, seed=0)
    assert all(b.mask.all() for b in g2.blocks_of_kind("n2nskip"))
    with pytest.raises(ValueError, match="hold only"):
        add_n2nskip(g, (cap + 1) / g.dense_params)


def test_same_seed_same_skips_other_seed_other_skips():
    g = _mlp_graph([50, 40, 30, 20, 10])
    a, b, c = (add_n2nskip(g, 0.05, seed=s) for s in (7, 7, 8))
    assert a == b and a != c


def test_max_span_limits_pairs():
    g = _mlp_graph([50, 40, 30, 20, 10])
    spans = {b.spec.span for b in add_n2nskip(g, 0.05, wiring=2).blocks_of_kind("n2nskip")}
    assert spans == {2}
    with pytest.raises(ValueError, match="wiring"):
        add_n2nskip(g, 0.05, wiring=1)
    with pytest.raises(ValueError, match="max_span"):
        skip_candidates(g, max_span=1)


def test_conv_skips_record_spatial_map():
    g = _conv_graph()
    g2 = add_n2nskip(g, 0.05, seed=0, skip_kernel=3)
    by = {(b.src, b.dst): b for b in g2.blocks_of_kind("n2nskip")}
    # pairs: input->c2, input->c3, c1->c3, input->fc, c1->fc, c2->fc
    assert set(by) == {("input", "c2"), ("input", "c3"), ("c1", "c3"), ("input", "fc"),
                       ("c1", "fc"), ("c2", "fc")}
    b = by[("c1", "c3")]
    assert b.mask.shape == (16, 8, 3, 3)
    assert b.spec.pool == "adaptive_avg" and b.spec.output_size == (4, 4)
    assert b.spec.input_size == (16, 16) and b.spec.padding == (1, 1)
    fc = by[("c1", "fc")]
    assert fc.mask.shape == (10, 8) and fc.spec.pool == "global_avg" and fc.fold == 1
    # the graph's adjacency gains exactly the skip's channel pairs
    extra = g2.adjacency() - g.adjacency()
    assert extra.min() >= 0


def test_resskip_pairs_and_projection():
    g = _conv_graph()
    g2 = add_resskip(g, span=2, start=0)
    res = [b for b in g2.blocks if b.kind == "residual"]
    # chain input, c1, c2, c3, fc: input(3)->c2(16) and c2(16)->fc(10: too narrow, left out)
    assert [(b.src, b.dst) for b in res] == [("input", "c2")]
    assert res[0].spec.pad_channels == 13 and g2.provenance["resskip_left_out"] == ["c2->fc"]
    assert g2.num_params == g.num_params
    with pytest.raises(ValueError, match="no ResSkip pair"):
        add_resskip(_mlp_graph([30, 20, 10, 5]))


def test_resnet_chain_depth_rule():
    """A residual block: in -> a -> b -(conv)-> sum, in -(identity)-> sum; sum -> out."""
    groups = [NodeGroup("input", 0, 4), NodeGroup("a", 4, 4), NodeGroup("sum", 8, 4),
              NodeGroup("out", 12, 2)]
    blocks = [EdgeBlock("a", "input", "a", "sequential", np.ones((4, 4), bool)),
              EdgeBlock("b", "a", "sum", "sequential", np.ones((4, 4), bool)),
              EdgeBlock("sum.residual1", "input", "sum", "residual"),
              EdgeBlock("out", "sum", "out", "sequential", np.ones((2, 4), bool))]
    g = NetworkGraph(groups, blocks)
    assert chain_depths(g) == {"input": 0, "a": 1, "sum": 2, "out": 3}
    assert [(s, d) for s, d, _ in skip_candidates(g)] == [("input", "sum"), ("input", "out"), ("a", "out")]


def test_bad_input():
    g = _mlp_graph([10, 8, 6, 4])
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"density must lie in \[0, inf\)"):
            add_n2nskip(g, bad)
    for bad in ("0.1", None, True):
        with pytest.raises(TypeError, match="density must be a real number"):
            add_n2nskip(g, bad)
    with pytest.raises(ValueError, match="skip_kernel"):
        add_n2nskip(g, 0.01, skip_kernel=2)
    with pytest.raises(ValueError, match="skip_order"):
        add_n2nskip(g, 0.01, skip_order="act-conv")
    with pytest.raises(ValueError, match="granularity"):
        add_n2nskip(g, 0.01, granularity="kernel")
    with pytest.raises(TypeError):
        add_n2nskip("graph", 0.1)
    with pytest.raises(ValueError, match="already has added skip"):
        add_n2nskip(add_n2nskip(g, 0.05), 0.05)


# ----------------------------------------------------------------- blocks wiring
def _groups(shapes):
    groups, start = [], 0
    for name, shape in shapes.items():
        groups.append(NodeGroup(name, start, shape[0], shape))
        start += shape[0]
    return groups


def _residual_graph():
    """A hand-made residual net (shapes as the tracer records them)::

        input(3, 8x8) -stem 3x3-> stem(4, 8x8)
        block 1: stem -a 3x3-> a(4) -b 3x3-> s1 (sum), stem -(identity)-> s1
        block 2: s1 -c 5x5, stride 2-> c(8, 4x4) -d 3x3-> s2 (sum), s1 -ds 1x1, stride 2-> s2
        s2 -fc (fold 16)-> fc(10)
    """
    groups = _groups({"input": (3, 8, 8), "stem": (4, 8, 8), "a": (4, 8, 8), "s1": (4, 8, 8),
                      "c": (8, 4, 4), "s2": (8, 4, 4), "fc": (10,)})
    ones = lambda *s: np.ones(s, bool)  # noqa: E731
    conv = lambda name, src, dst, shape: EdgeBlock(  # noqa: E731
        name, src, dst, "sequential", ones(*shape), spec=LayerSpec(op="Conv2d", module=name))
    blocks = [
        conv("stem", "input", "stem", (4, 3, 3, 3)),
        conv("a", "stem", "a", (4, 4, 3, 3)),
        conv("b", "a", "s1", (4, 4, 3, 3)),
        EdgeBlock("s1.residual1", "stem", "s1", "residual", spec=LayerSpec(op="add")),
        conv("c", "s1", "c", (8, 4, 5, 5)),
        conv("d", "c", "s2", (8, 8, 3, 3)),
        conv("ds", "s1", "s2", (8, 4, 1, 1)),
        EdgeBlock("fc", "s2", "fc", "sequential", ones(10, 128), fold=16,
                  spec=LayerSpec(op="Linear", module="fc")),
    ]
    return NetworkGraph(groups, blocks)


def _vgg_graph():
    """A hand-made VGG: stages [c1, c2] (16x16), [c3, c4] (8x8), [c5] (4x4), then a Linear."""
    groups = _groups({"input": (3, 16, 16), "c1": (4, 16, 16), "c2": (4, 16, 16), "c3": (8, 8, 8),
                      "c4": (8, 8, 8), "c5": (16, 4, 4), "fc": (10,)})
    chain = ["input", "c1", "c2", "c3", "c4", "c5"]
    blocks = [EdgeBlock(d, s, d, "sequential", np.ones((groups[i + 1].size, groups[i].size, 3, 3), bool))
              for i, (s, d) in enumerate(zip(chain[:-1], chain[1:]))]
    blocks.append(EdgeBlock("fc", "c5", "fc", "sequential", np.ones((10, 16), bool)))
    return NetworkGraph(groups, blocks)


def test_blocks_wiring_of_a_residual_net():
    g = _residual_graph()
    # one skip per sum, from the shallowest group feeding it: stem (depth 1) -> s1 (depth 3);
    # s1 (3) -> s2 (5), beside the 1x1 downsample that already joins the pair
    assert block_pairs(g) == [("stem", "s1", 2), ("s1", "s2", 2)]
    g2 = add_n2nskip(g, 0.05, seed=0, wiring="blocks", skip_kernel="same",
                     skip_order="conv-bn-act-pool")
    by = {(b.src, b.dst): b for b in g2.blocks_of_kind("n2nskip")}
    assert set(by) == {("stem", "s1"), ("s1", "s2")}
    # "same": the largest kernel of the convs inside the span (b: 3; c: 5, d: 3, ds: 1)
    assert by[("stem", "s1")].mask.shape == (4, 4, 3, 3)
    assert by[("s1", "s2")].mask.shape == (8, 4, 5, 5)
    s = by[("s1", "s2")].spec
    assert (s.order, s.norm, s.pool, s.output_size, s.input_size, s.padding) == \
        ("conv-bn-act-pool", "batch", "adaptive_max", (4, 4), (8, 8), (2, 2))
    s = by[("stem", "s1")].spec
    assert s.pool is None and s.output_size == (8, 8) and s.stride == (1, 1)
    assert g2.num_params - g.num_params == round(0.05 * g.dense_params)


def test_blocks_wiring_of_a_plain_conv_chain():
    g = _vgg_graph()
    # stages [c1, c2], [c3, c4], [c5]: input -> c3 (span 3), c2 -> c5 (span 3); none into fc
    assert block_pairs(g) == [("input", "c3", 3), ("c2", "c5", 3)]
    assert skip_pairs(g, "blocks") == block_pairs(g)
    g2 = add_n2nskip(g, 0.02, wiring="blocks", skip_kernel="same")
    assert {(b.src, b.dst) for b in g2.blocks_of_kind("n2nskip")} <= {("input", "c3"), ("c2", "c5")}


def test_blocks_wiring_of_an_mlp_is_all_pairs():
    g = _mlp_graph([3072, 512, 256, 128, 64, 10], density=0.05)
    assert block_pairs(g) == skip_candidates(g) and len(block_pairs(g)) == 10
    a = add_n2nskip(g, 0.02, seed=3, wiring="blocks", skip_kernel="same",
                    skip_order="conv-bn-act-pool", granularity="channel")
    b = add_n2nskip(g, 0.02, seed=3)
    assert [x.name for x in a.blocks] == [x.name for x in b.blocks]
    assert all(x.same_topology(y) for x, y in zip(a.blocks, b.blocks))
    assert all(x.spec.norm is None and x.spec.op == "Linear" for x in a.blocks_of_kind("n2nskip"))


def test_channel_granularity_keeps_whole_kernels_and_exact_count():
    g = _vgg_graph()
    for n in (9 * 7, 9 * 7 + 4, 200):
        g2 = _add_n2nskip_count(g, n, seed=1, wiring="blocks", skip_kernel=3, granularity="channel")
        skips = g2.blocks_of_kind("n2nskip")
        assert sum(b.num_params for b in skips) == n
        for b in skips:
            taps = b.mask.reshape(*b.mask.shape[:2], -1).sum(axis=2)
            partial = np.count_nonzero((taps > 0) & (taps < 9))
            assert partial <= 1  # whole kernels, but for one pair holding the remainder


def test_skip_initial_weights_and_pair_weight():
    g = _residual_graph()
    g2 = add_n2nskip(g, 0.1, seed=5, wiring="blocks", skip_kernel="same")
    g3 = add_n2nskip(g, 0.1, seed=5, wiring="blocks", skip_kernel="same")
    for b, b3 in zip(g2.blocks_of_kind("n2nskip"), g3.blocks_of_kind("n2nskip")):
        assert b.spec.init_seed == 5
        w = skip_initial_weights(b)
        assert w.dtype == np.float32 and w.shape == b.mask.shape
        assert np.array_equal(w, skip_initial_weights(b3))  # deterministic
        assert np.all(w[~b.mask] == 0) and np.all(w[b.mask] != 0)
        expected = np.abs(w).reshape(*b.mask.shape[:2], -1).sum(axis=2)
        np.testing.assert_allclose(b.pair_weight, expected, rtol=1e-6)
    other = add_n2nskip(g, 0.1, seed=6, wiring="blocks", skip_kernel="same")
    assert not np.array_equal(skip_initial_weights(other.blocks_of_kind("n2nskip")[0]),
                              skip_initial_weights(g2.blocks_of_kind("n2nskip")[0]))
    with pytest.raises(ValueError, match="init_seed"):
        skip_initial_weights(g.blocks[0])


def test_skip_initial_weights_are_kaiming_with_the_dense_fan_in():
    g = _mlp_graph([400, 300, 200, 100])
    g2 = add_n2nskip(g, 0.3, seed=0)
    b = max(g2.blocks_of_kind("n2nskip"), key=lambda b: b.num_params)
    w = skip_initial_weights(b)[b.mask]
    assert abs(w.std() / np.sqrt(2 / b.mask.shape[1]) - 1) < 0.05 and abs(w.mean()) < 0.01


def test_weighted_adjacency_of_a_variant_uses_the_skip_pair_weights():
    g = _mlp_graph([20, 16, 12, 8])
    g = g.replace(blocks=[EdgeBlock(b.name, b.src, b.dst, b.kind, b.mask,
                                    pair_weight=np.ones(b.mask.shape, np.float32)) for b in g.blocks])
    g2 = add_n2nskip(g, 0.2, seed=0)
    A = g2.adjacency(weighted=True).tocsr()
    b = g2.blocks_of_kind("n2nskip")[0]
    s, d = g2.group(b.src), g2.group(b.dst)
    o, i = np.nonzero(b.pair_mask())
    np.testing.assert_allclose(A[d.start + o, s.start + i], b.pair_weight[o, i], rtol=1e-6)

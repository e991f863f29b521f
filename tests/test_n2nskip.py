"""N2NSkip / ResSkip graph variants: candidate pairs, exact budgets, spatial maps, variant()."""

import itertools

import numpy as np
import pytest

from n2ngraph.graph import EdgeBlock, NetworkGraph, NodeGroup
from n2ngraph.n2nskip import add_n2nskip, add_resskip, chain_depths, skip_candidates, variant


def _mlp_graph(sizes, density=1.0, seed=0):
    """A hand-built MLP graph: groups input, l1, ..., with random masks at ``density``."""
    rng = np.random.default_rng(seed)
    groups, start = [], 0
    names = ["input"] + [f"l{i}" for i in range(1, len(sizes))]
    for name, size in zip(names, sizes):
        groups.append(NodeGroup(name, start, size, (size,)))
        start += size
    blocks = [EdgeBlock(names[i + 1], names[i], names[i + 1], "sequential",
                        rng.random((sizes[i + 1], sizes[i])) < density, spec={"type": "Linear"})
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
    with pytest.raises(ValueError, match="candidate skip blocks hold only"):
        add_n2nskip(g, (cap + 1) / g.dense_params)


def test_same_seed_same_skips_other_seed_other_skips():
    g = _mlp_graph([50, 40, 30, 20, 10])
    a, b, c = (add_n2nskip(g, 0.05, seed=s) for s in (7, 7, 8))
    assert a == b and a != c


def test_max_span_limits_pairs():
    g = _mlp_graph([50, 40, 30, 20, 10])
    spans = {b.spec["span"] for b in add_n2nskip(g, 0.05, max_span=2).blocks_of_kind("n2nskip")}
    assert spans == {2}
    with pytest.raises(ValueError, match="max_span"):
        add_n2nskip(g, 0.05, max_span=1)


def test_conv_skips_record_spatial_map():
    g = _conv_graph()
    g2 = add_n2nskip(g, 0.05, seed=0, kernel_size=3)
    by = {(b.src, b.dst): b for b in g2.blocks_of_kind("n2nskip")}
    # pairs: input->c2, input->c3, c1->c3, input->fc, c1->fc, c2->fc
    assert set(by) == {("input", "c2"), ("input", "c3"), ("c1", "c3"), ("input", "fc"),
                       ("c1", "fc"), ("c2", "fc")}
    b = by[("c1", "c3")]
    assert b.mask.shape == (16, 8, 3, 3)
    assert b.spec["pool"] == "adaptive_avg" and b.spec["output_size"] == [4, 4]
    assert b.spec["input_size"] == [16, 16] and b.spec["padding"] == [1, 1]
    fc = by[("c1", "fc")]
    assert fc.mask.shape == (10, 8) and fc.spec["pool"] == "global_avg" and fc.fold == 1
    # the graph's adjacency gains exactly the skip's channel pairs
    extra = g2.adjacency() - g.adjacency()
    assert extra.min() >= 0


def test_resskip_pairs_and_projection():
    g = _conv_graph()
    g2 = add_resskip(g, span=2, start=0)
    res = [b for b in g2.blocks if b.kind == "residual"]
    # chain input, c1, c2, c3, fc: input(3)->c2(16) and c2(16)->fc(10: too narrow, left out)
    assert [(b.src, b.dst) for b in res] == [("input", "c2")]
    assert res[0].spec["pad_channels"] == 13 and g2.provenance["resskip_left_out"] == ["c2->fc"]
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
    for bad in (-0.1, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="density"):
            add_n2nskip(g, bad)
    with pytest.raises(ValueError, match="kernel_size"):
        add_n2nskip(g, 0.01, kernel_size=2)
    with pytest.raises(TypeError):
        add_n2nskip("graph", 0.1)
    with pytest.raises(ValueError, match="already has added skip"):
        add_n2nskip(add_n2nskip(g, 0.05), 0.05)


# ------------------------------------------------------------------------- variant
torch = pytest.importorskip("torch")


@pytest.mark.parametrize("method", ["random", "expander", "magnitude"])
@pytest.mark.parametrize("density", [0.1, 0.02])
def test_variant_matches_plain_budget_exactly(method, density):
    from n2ngraph import models
    from n2ngraph.pruning import prune

    model = models.build_model("lenet300", seed=0)
    plain = prune(model, method, density, seed=0)
    target = sum(int(m.sum()) for m in plain.values())
    g = variant(model, method, density, n2nskip_fraction=0.5, seed=0)
    assert g.num_params == target
    assert g.provenance["method"] == method and g.provenance["n2nskip_fraction"] == 0.5
    assert g.provenance["density"] == density and g.provenance["seed"] == 0
    skips = g.blocks_of_kind("n2nskip")
    assert skips and sum(b.num_params for b in skips) == target - g.provenance["sequential_params"]
    g0 = variant(model, method, density, n2nskip_fraction=0.0, seed=0)
    assert not g0.blocks_of_kind("n2nskip") and g0.num_params == target


def test_variant_bad_input():
    from n2ngraph import models

    model = models.lenet300()
    with pytest.raises(ValueError, match="n2nskip_fraction"):
        variant(model, "random", 0.1, n2nskip_fraction=1.0)
    with pytest.raises(ValueError, match="density"):
        variant(model, "random", 1.5)

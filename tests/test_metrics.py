"""Structural metrics on hand-built graphs with known answers, and against networkx references."""

import itertools
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest

from n2ngraph import metrics
from n2ngraph.graph import EdgeBlock, NetworkGraph, NodeGroup


def chain(sizes, masks, kinds=None, extra=()):
    """A chain of groups g0 -> g1 -> ... with one sequential block per consecutive pair."""
    groups, start = [], 0
    for i, s in enumerate(sizes):
        groups.append(NodeGroup(f"g{i}", start, s))
        start += s
    blocks = [
        EdgeBlock(f"b{i}", f"g{i}", f"g{i + 1}", "sequential", np.asarray(m, bool))
        for i, m in enumerate(masks)
    ]
    return NetworkGraph(tuple(groups), tuple(blocks) + tuple(extra))


# ------------------------------------------------------------------- known answers
@pytest.fixture
def dead_unit_graph():
    """g0(2) -> g1(3) -> g2(1).

    h0 fed by x0, feeds out; h1 fed by x1 but feeds nothing (cannot reach the output);
    h2 feeds out but is fed by nothing (unreachable from the input).
    """
    m1 = [[1, 0], [0, 1], [0, 0]]  # rows h0 h1 h2, cols x0 x1
    m2 = [[1, 0, 1]]  # out <- h0, h2
    return chain([2, 3, 1], [m1, m2])


def test_dead_units_known(dead_unit_graph):
    d = metrics.dead_units(dead_unit_graph)
    # nodes: x0=0 x1=1 h0=2 h1=3 h2=4 out=5; x1 -> h1 -> (nothing): x1 and h1 dead; h2 dead
    np.testing.assert_array_equal(d["dead"], [False, True, False, True, True, False])
    assert d["n_dead"] == 3
    np.testing.assert_array_equal(d["unreachable_from_input"], [0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(d["cannot_reach_output"], [0, 1, 0, 1, 0, 0])
    assert d["per_group"] == {"g0": 1, "g1": 2, "g2": 0}
    assert d["dead_fraction"] == pytest.approx(0.5)


def test_effective_density_known(dead_unit_graph):
    e = metrics.effective_density(dead_unit_graph)
    # kept: x0->h0, x1->h1, h0->out, h2->out; effective: x0->h0, h0->out only
    assert e["params"] == 4 and e["effective_params"] == 2 and e["inactive_params"] == 2
    assert e["dense_params"] == 6 + 3
    assert e["effective_density"] == pytest.approx(2 / 9)
    assert e["density"] == pytest.approx(4 / 9)
    assert e["per_block"] == {"b0": 1, "b1": 1}


def test_collapsed_layer():
    """The middle layer keeps weights, but none on a path: it collapses; so does the network."""
    m1 = [[1, 1], [0, 0]]  # only h0 is fed
    m2 = [[0, 1], [0, 1]]  # only h1 feeds on (h1 is unreachable)
    m3 = [[1, 1]]
    g = chain([2, 2, 2, 1], [m1, m2, m3])
    c = metrics.layer_collapse(g)
    assert c["collapsed"] == ["b0", "b1", "b2"]  # no input-output path at all: every layer
    assert c["empty"] == [] and c["any"] and not c["inputs_reach_outputs"]
    assert metrics.effective_density(g)["effective_params"] == 0
    assert metrics.dead_units(g)["n_dead"] == g.num_nodes


def test_empty_layer_collapse_only_that_layer_with_skip():
    """An empty layer bridged by an n2nskip: that layer collapses, the network stays connected."""
    skip = EdgeBlock("skip", "g0", "g2", "n2nskip", np.array([[1, 0]], bool))
    g = chain([2, 2, 1], [[[1, 1], [0, 1]], [[0, 0]]], extra=(skip,))
    c = metrics.layer_collapse(g)
    assert c["collapsed"] == ["b0", "b1"]  # b0's weights end in units that reach no output
    assert c["empty"] == ["b1"] and c["inputs_reach_outputs"]
    e = metrics.effective_density(g)
    assert e["effective_params"] == 1 and e["per_block"]["skip"] == 1
    # x0 reaches the output via the skip; x1 and both hidden units are dead
    np.testing.assert_array_equal(metrics.dead_units(g)["dead"], [0, 1, 1, 1, 0])


def test_inputs_reach_outputs_is_not_one_component():
    """x0 -> h0 -> y and nothing else: inputs reach the output although x1 and h1 are isolated,
    so the undirected graph has 3 components ({x0, h0, y}, {x1}, {h1})."""
    g = chain([2, 2, 1], [[[1, 0], [0, 0]], [[1, 0]]])
    s = metrics.summary(g)
    assert s["inputs_reach_outputs"] and s["n_components"] == 3 and s["isolated"] == 2
    assert "connected" not in s  # the old name said something else than it meant
    cut = chain([2, 2, 1], [[[1, 0], [0, 0]], [[0, 1]]])  # h0 feeds nothing, h1 is fed nothing
    assert not metrics.summary(cut)["inputs_reach_outputs"]


def test_two_components():
    g = chain([2, 2, 2], [np.eye(2), np.eye(2)])
    c = metrics.connected_components(g)
    assert c["n_components"] == 2
    np.testing.assert_array_equal(c["sizes"], [3, 3])
    assert c["isolated"] == 0 and c["largest_fraction"] == pytest.approx(0.5)
    assert c["labels"][0] == c["labels"][2] == c["labels"][4]
    assert c["labels"][1] == c["labels"][3] == c["labels"][5] != c["labels"][0]


def test_residual_block_carries_paths_but_no_weights(residual_graph):
    """x -(conv a)-> a -(conv y, fully pruned)-> y, plus a residual a -> y (ResNet shortcut)."""
    g = residual_graph
    c = metrics.layer_collapse(g)
    assert c["collapsed"] == ["y"] and c["inputs_reach_outputs"]
    assert metrics.dead_units(g)["n_dead"] == 0
    e = metrics.effective_density(g)
    assert e["effective_params"] == 11 and e["params"] == 11
    assert e["dense_params"] == 72 and e["effective_density"] == pytest.approx(11 / 72)
    table = metrics.layer_density(g)
    assert table["block"] == ["a", "y"]  # the residual block has no weights: no row
    assert table["kept_pairs"] == [2, 0] and table["pairs"] == [4, 4]
    assert table["effective_params"] == [11, 0]


def test_conv_taps_count_per_channel_pair():
    """Effective weights of a conv count every kept tap of a live channel pair."""
    m1 = np.zeros((2, 1, 3, 3), bool)
    m1[0, 0, :2, :2] = True  # 4 taps x0 -> c0
    m1[1, 0, 0, 0] = True  # 1 tap x0 -> c1
    m2 = np.zeros((1, 2, 3, 3), bool)
    m2[0, 0, :, 0] = True  # 3 taps c0 -> out; c1 feeds nothing
    g = chain([1, 2, 1], [m1, m2])
    assert metrics.effective_density(g)["per_block"] == {"b0": 4, "b1": 3}


def test_fold_and_groups():
    """A Linear after a flatten (fold) and a grouped conv map columns to the right channels."""
    groups = (NodeGroup("x", 0, 2), NodeGroup("c", 2, 4), NodeGroup("f", 6, 2))
    conv = np.zeros((4, 1, 1, 1), bool)  # conv_groups=2: c0,c1 read x0; c2,c3 read x1
    conv[0] = conv[3] = True
    lin = np.zeros((2, 4 * 3), bool)  # fold 3: columns 3c..3c+2 belong to channel c
    lin[0, 0:3] = True  # f0 <- c0 (3 columns)
    lin[1, 3] = True  # f1 <- c1 (c1 is fed by nothing: ineffective)
    lin[1, 9:11] = True  # f1 <- c3 (2 columns)
    blocks = (
        EdgeBlock("c", "x", "c", "sequential", conv, conv_groups=2),
        EdgeBlock("f", "c", "f", "sequential", lin, fold=3),
    )
    g = NetworkGraph(groups, blocks)
    e = metrics.effective_density(g)
    assert e["per_block"] == {"c": 2, "f": 5}
    assert metrics.dead_units(g)["per_group"] == {"x": 0, "c": 2, "f": 0}


def test_degree_stats_small_graph(small_graph):
    d = metrics.degree_stats(small_graph)
    # edges (0,3) (2,3) (1,4) (3,5) (4,5) (0,5)
    np.testing.assert_array_equal(d["degree"], [2, 1, 1, 3, 2, 3])
    np.testing.assert_array_equal(d["in_degree"], [0, 0, 0, 2, 1, 3])
    np.testing.assert_array_equal(d["out_degree"], [2, 1, 1, 1, 1, 0])
    assert d["mean"] == pytest.approx(2.0) and d["min"] == 1 and d["max"] == 3
    assert d["isolated"] == 0
    assert d["per_group"]["group"] == ["input", "h", "out"]
    assert d["per_group"]["mean_in"] == [0.0, 1.5, 3.0]
    assert d["per_group"]["mean_degree"] == pytest.approx([4 / 3, 2.5, 3.0])


def test_layer_density_small_graph(small_graph):
    t = metrics.layer_density(small_graph)
    assert t["block"] == ["h", "out", "skip"]
    assert t["kind"] == ["sequential", "sequential", "n2nskip"]
    assert t["params"] == [3, 2, 1] and t["dense_params"] == [6, 2, 3]
    assert t["density"] == pytest.approx([0.5, 1.0, 1 / 3])
    assert t["effective_params"] == [3, 2, 1]
    assert len({len(v) for v in t.values()}) == 1  # a table: equal-length columns


def test_summary_small_graph(small_graph):
    s = metrics.summary(small_graph)
    assert s["n_components"] == 1 and s["dead_units"] == 0 and s["inputs_reach_outputs"]
    assert s["params"] == 6 and s["dense_params"] == 8 and s["effective_density"] == 0.75
    assert s["edges"] == 6 and s["mean_degree"] == pytest.approx(2.0)


def test_single_group_and_isolated_nodes():
    g = NetworkGraph((NodeGroup("x", 0, 3),), ())
    assert metrics.connected_components(g)["n_components"] == 3
    assert metrics.connected_components(g)["isolated"] == 3
    assert metrics.dead_units(g)["n_dead"] == 0  # input is the output
    assert metrics.effective_density(g)["effective_density"] == 0.0
    assert metrics.layer_collapse(g) == {
        "collapsed": [],
        "empty": [],
        "any": False,
        "inputs_reach_outputs": True,
    }


def test_bad_input():
    with pytest.raises(TypeError, match="NetworkGraph"):
        metrics.dead_units(np.eye(3))


# --------------------------------------------------------- against networkx references
def _reference(g: NetworkGraph):
    """Reachability, components and effective counts by networkx on a DiGraph."""
    dg = nx.DiGraph()
    dg.add_nodes_from(range(g.num_nodes))
    src, dst, _ = g.edge_list()
    dg.add_edges_from(zip(src.tolist(), dst.tolist()))
    inputs, outputs = set(g.input_nodes.tolist()), set(g.output_nodes.tolist())
    fwd = set(inputs)
    for i in inputs:
        fwd |= nx.descendants(dg, i)
    bwd = set(outputs)
    for o in outputs:
        bwd |= nx.ancestors(dg, o)
    effective = 0
    for b in g.blocks:
        if b.mask is None:
            continue
        s0, d0 = g.group(b.src).start, g.group(b.dst).start
        for o, i in zip(*np.nonzero(b.mask.reshape(b.mask.shape[0], b.mask.shape[1], -1).any(2))):
            taps = int(b.mask[o, i].sum())
            if s0 + i in fwd and d0 + o in bwd:
                effective += taps
    n_comp = nx.number_connected_components(dg.to_undirected())
    return fwd, bwd, effective, n_comp


@pytest.mark.parametrize("seed", range(6))
def test_against_networkx(seed):
    rng = np.random.default_rng(seed)
    sizes = [5, 7, 6, 4]
    density = rng.uniform(0.05, 0.4)
    masks = [rng.random((b, a)) < density for a, b in itertools.pairwise(sizes)]
    skip = EdgeBlock("skip", "g0", "g2", "n2nskip", rng.random((6, 5)) < density)
    res = EdgeBlock("res", "g3", "g4", "residual")  # identity shortcut around the last layer
    g = chain(sizes + [4], masks + [rng.random((4, 4)) < density], extra=(skip, res))
    fwd, bwd, effective, n_comp = _reference(g)
    reach = metrics.reachability(g)
    assert set(np.nonzero(reach["from_input"])[0].tolist()) == fwd
    assert set(np.nonzero(reach["to_output"])[0].tolist()) == bwd
    assert metrics.effective_density(g)["effective_params"] == effective
    assert metrics.connected_components(g)["n_components"] == n_comp
    alive = fwd & bwd
    assert metrics.dead_units(g)["n_dead"] == g.num_nodes - len(alive)
    deg = metrics.degree_stats(g)
    nxg = g.to_networkx()
    np.testing.assert_array_equal(deg["degree"], [nxg.degree(i) for i in range(g.num_nodes)])


def test_metrics_does_not_import_torch():
    code = "import sys, n2ngraph.metrics; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

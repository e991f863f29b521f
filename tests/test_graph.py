"""NetworkGraph: validation, adjacency against hand-computed matrices, equality, immutability."""

import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from n2ngraph.graph import EdgeBlock, LayerSpec, NetworkGraph, NodeGroup


def test_small_graph_adjacency_is_hand_computed(small_graph):
    expected = np.zeros((6, 6))
    for i, j in [(0, 3), (2, 3), (1, 4), (3, 5), (4, 5), (0, 5)]:
        expected[i, j] = expected[j, i] = 1
    adj = small_graph.adjacency()
    assert isinstance(adj, sp.csr_array)
    assert adj.dtype == np.float64
    np.testing.assert_array_equal(adj.toarray(), expected)
    assert small_graph.num_edges == 6
    assert small_graph.num_nodes == 6
    assert small_graph.num_params == 6  # 3 + 2 sequential, 1 skip
    assert small_graph.dense_params == 8
    assert small_graph.density == pytest.approx(6 / 8)
    np.testing.assert_array_equal(small_graph.input_nodes, [0, 1, 2])
    np.testing.assert_array_equal(small_graph.output_nodes, [5])


def test_adjacency_symmetric_no_self_loops(small_graph):
    adj = small_graph.adjacency()
    assert (adj != adj.T).nnz == 0
    assert not adj.diagonal().any()


def test_duplicate_pairs_count_once_and_weights_add():
    groups = (NodeGroup("a", 0, 2), NodeGroup("b", 2, 2))
    blocks = (
        EdgeBlock("seq", "a", "b", "sequential", np.eye(2, dtype=bool),
                  pair_weight=np.array([[0.5, 0], [0, 2.0]], np.float32)),
        EdgeBlock("res", "a", "b", "residual"),
    )
    g = NetworkGraph(groups, blocks)
    assert g.num_edges == 2
    np.testing.assert_array_equal(g.adjacency().toarray()[:2, 2:], np.eye(2))
    np.testing.assert_allclose(g.adjacency(weighted=True).toarray()[:2, 2:], np.diag([1.5, 3.0]))


def test_grouped_conv_and_fold_pairs():
    # grouped conv: 4 -> 4 channels, 2 groups, 1x1 kernel, all kept
    groups = (NodeGroup("x", 0, 4), NodeGroup("y", 4, 4), NodeGroup("z", 8, 1))
    conv = EdgeBlock("conv", "x", "y", "sequential", np.ones((4, 2, 1, 1), bool), conv_groups=2)
    # linear after flattening y (4 channels x 3 positions), only column 7 (channel 2) kept
    lin_mask = np.zeros((1, 12), bool)
    lin_mask[0, 7] = True
    lin = EdgeBlock("fc", "y", "z", "sequential", lin_mask, fold=3)
    g = NetworkGraph(groups, (conv, lin))
    dense = g.adjacency().toarray()
    expected_xy = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_array_equal(dense[4:8, 0:4], expected_xy)
    np.testing.assert_array_equal(dense[8, 4:8], [0, 0, 1, 0])


@pytest.mark.parametrize(
    "groups, blocks, message",
    [
        ((NodeGroup("a", 0, 2), NodeGroup("a", 2, 1)), (), "duplicate group"),
        ((NodeGroup("a", 1, 2),), (), "contiguous"),
        ((NodeGroup("a", 0, 2), NodeGroup("b", 2, 1)),
         (EdgeBlock("e", "a", "c", "sequential", np.ones((1, 2), bool)),), "unknown group"),
        ((NodeGroup("a", 0, 2), NodeGroup("b", 2, 1)),
         (EdgeBlock("e", "b", "a", "sequential", np.ones((2, 1), bool)),), "precede"),
        ((NodeGroup("a", 0, 2), NodeGroup("b", 2, 1)),
         (EdgeBlock("e", "a", "b", "sequential", np.ones((1, 3), bool)),), "mask"),
        ((NodeGroup("a", 0, 2), NodeGroup("b", 2, 1)),
         (EdgeBlock("e", "a", "b", "residual"),), "do not fit"),
    ],
)
def test_invalid_graphs_raise(groups, blocks, message):
    with pytest.raises(ValueError, match=message):
        NetworkGraph(groups, blocks)


def test_invalid_blocks_raise():
    with pytest.raises(ValueError, match="kind"):
        EdgeBlock("e", "a", "b", "dense", np.ones((1, 1), bool))
    with pytest.raises(TypeError, match="bool"):
        EdgeBlock("e", "a", "b", "sequential", np.ones((1, 1)))
    with pytest.raises(ValueError, match="mask=None"):
        EdgeBlock("e", "a", "b", "residual", np.ones((1, 1), bool))


def test_graph_is_immutable(small_graph):
    mask = small_graph.blocks[0].mask
    with pytest.raises(ValueError):
        mask[0, 0] = False
    with pytest.raises(dataclasses.FrozenInstanceError):
        small_graph.groups = ()
    source = np.ones((1, 2), bool)
    block = EdgeBlock("b", "h", "out", "sequential", source)
    source[0, 0] = False  # editing the caller's array does not reach the block
    assert block.mask.all()


def test_equality_ignores_weights_and_provenance(small_graph):
    blocks = [b.with_mask(b.mask, np.full(b.pair_mask().shape, 3.0)) for b in small_graph.blocks]
    other = small_graph.replace(blocks=blocks, provenance={"model": "other"})
    assert other == small_graph
    changed = small_graph.blocks[2].with_mask(np.array([[0, 1, 0]], bool))
    assert small_graph.replace(blocks=small_graph.blocks[:2] + (changed,)) != small_graph


def test_with_blocks_returns_new_graph(small_graph):
    base = small_graph.replace(blocks=small_graph.blocks[:2])
    extended = base.with_blocks(small_graph.blocks[2:], method="hand")
    assert extended == small_graph
    assert len(base.blocks) == 2
    assert extended.provenance["method"] == "hand"


def test_to_networkx(small_graph):
    nxg = small_graph.to_networkx()
    assert nxg.number_of_nodes() == 6
    assert nxg.number_of_edges() == small_graph.num_edges
    assert nxg.nodes[4] == {"group": "h", "index": 1}


def test_single_group_graph_has_no_edges():
    g = NetworkGraph((NodeGroup("only", 0, 3),), ())
    assert g.num_edges == 0
    assert g.adjacency().shape == (3, 3)
    assert g.density == 0.0


@pytest.mark.parametrize("value, ok", [(0.0, True), (-0.0, True), (1e-45, True), (3e38, True), (-1e-30, False),
                                       (np.nan, False), (np.inf, False), (-np.inf, False), (1e39, False)])
def test_pair_weights_must_be_finite_and_non_negative(value, ok):
    """Pair weights are sums of |w|: finite and >= 0 as float32 (1e39 overflows float32 to inf).
    Zero is allowed (a kept weight may be 0); it drops out of the weighted adjacency."""
    weights = np.ones((2, 3), np.float64)
    weights[1, 2] = value
    mask = np.ones((2, 3), bool)
    if ok:
        block = EdgeBlock("e", "a", "b", "sequential", mask, weights)
        g = NetworkGraph((NodeGroup("a", 0, 3), NodeGroup("b", 3, 2)), (block,))
        assert (g.adjacency(weighted=True).data >= 0).all()
    else:
        with pytest.raises(ValueError, match=r"pair_weight\[1, 2\].*finite and >= 0"):
            EdgeBlock("e", "a", "b", "sequential", mask, weights)


def test_pair_weight_shape_and_residual_weights_are_refused():
    with pytest.raises(ValueError, match="pair_weight shape"):
        EdgeBlock("e", "a", "b", "sequential", np.ones((2, 3), bool), np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match="pair_weight=None"):
        EdgeBlock("e", "a", "b", "residual", None, np.ones((1, 1), np.float32))


def test_groups_and_blocks_check_their_field_types():
    assert NodeGroup("a", np.int64(0), np.int32(3), (np.int64(3),)) == NodeGroup("a", 0, 3, (3,))
    assert type(NodeGroup("a", np.int64(0), 3).start) is int
    for bad in ({"size": 2.0}, {"size": True}, {"start": "0"}, {"name": 7}, {"shape": (1.5,)}, {"shape": (-1,)}):
        kwargs = {"name": "a", "start": 0, "size": 2, "shape": (), **bad}
        with pytest.raises(TypeError):
            NodeGroup(**kwargs)
    for bad in ({"conv_groups": 1.0}, {"fold": True}, {"offset": "0"}, {"name": None}, {"src": 1}):
        kwargs = {"name": "e", "src": "a", "dst": "b", "kind": "sequential", "mask": np.ones((1, 1), bool), **bad}
        with pytest.raises(TypeError):
            EdgeBlock(**kwargs)


class _Untraceable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.fc(x)
        return -self.fc(x)


def _untraceable():
    return _Untraceable()


@pytest.mark.parametrize("spec, words", [("test_graph:_untraceable", "cannot trace"),
                                         ("os.path:join", "raised TypeError"),
                                         ("no_such_module_xyz:f", "cannot import")])
def test_graph_command_reports_bad_models_in_one_line(tmp_path, capsys, spec, words):
    from n2ngraph import cli

    assert cli.main(["graph", spec, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("n2ngraph graph: error:") and words in err, err


# ------------------------------------------------------------------------ LayerSpec
def test_layer_spec_is_typed_and_round_trips_through_json():
    spec = LayerSpec(op="Conv2d", module="features.0", kernel_size=np.int64(3), stride=[2, 2],
                     padding="same", span=np.int32(2))
    assert spec.kernel_size == (3,) and spec.stride == (2, 2) and spec.padding == "same"
    assert type(spec.span) is int and spec.norm is None
    data = spec.to_dict()
    assert data == {"op": "Conv2d", "module": "features.0", "kernel_size": [3], "stride": [2, 2],
                    "padding": "same", "span": 2}
    assert LayerSpec.from_dict(json.loads(json.dumps(data))) == spec
    assert LayerSpec.from_dict({"type": "add"}) == LayerSpec(op="add")  # files of version 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.op = "Linear"


@pytest.mark.parametrize("data, error, words", [
    ({"op": 3}, TypeError, "op must be a str"),
    ({"stride": [1.5]}, TypeError, "stride must be an int or a sequence of ints"),
    ({"span": True}, TypeError, "span must be an int"),
    ({"colour": "red"}, ValueError, r"unknown layer spec keys \['colour'\]; accepted keys are"),
    ({"op": "add", "type": "add"}, ValueError, "both 'op' and its former name 'type'"),
    (["op"], TypeError, "must be a LayerSpec or a mapping"),
])
def test_layer_spec_refuses_bad_fields(data, error, words):
    with pytest.raises(error, match=words):
        LayerSpec.from_dict(data)


def test_block_spec_is_a_layer_spec_and_not_topology():
    mask = np.ones((1, 1), bool)
    a = EdgeBlock("e", "a", "b", "sequential", mask, spec=LayerSpec(op="Linear", module="fc"))
    b = EdgeBlock("e", "a", "b", "sequential", mask)
    assert a.spec.module == "fc" and b.spec == LayerSpec() and a.same_topology(b)
    with pytest.raises(TypeError, match="spec must be a LayerSpec.*from_dict"):
        EdgeBlock("e", "a", "b", "sequential", mask, spec={"op": "Linear"})
    assert a.with_mask(~mask).spec is a.spec


# ------------------------------------------------------------ adjacency against the edge list
def _random_graph(seed):
    """Channel groups with every block layout: dense and grouped/depthwise convs, a Linear with
    fold, residual blocks at offsets, a skip duplicating a sequential block's pairs, and pair
    weights with exact zeros."""
    rng = np.random.default_rng(seed)
    sizes = {"x": 6, "a": 8, "b": 8, "c": 16, "s": 6, "p": 8, "d": 5, "out": 3}
    groups, start = [], 0
    for name, size in sizes.items():
        groups.append(NodeGroup(name, start, size))
        start += size

    def block(name, src, dst, kind, shape, **kw):
        mask = rng.random(shape) < 0.4
        pm = mask.reshape(shape[0], shape[1] // kw.get("fold", 1), -1).any(axis=2)
        pw = np.where(rng.random(pm.shape) < 0.2, 0.0, rng.random(pm.shape)).astype(np.float32)
        return EdgeBlock(name, src, dst, kind, mask, pair_weight=pw, **kw)

    blocks = [
        block("a", "x", "a", "sequential", (8, 6, 3, 3)),
        block("b", "a", "b", "sequential", (8, 2, 3, 3), conv_groups=4),
        block("dw", "a", "b", "n2nskip", (8, 1, 1, 1), conv_groups=8),
        EdgeBlock("ab.res", "a", "b", "residual"),
        EdgeBlock("c.in0", "a", "c", "residual"),
        EdgeBlock("c.in1", "b", "c", "residual", offset=8),
        EdgeBlock("s.slice", "c", "s", "residual", offset=-3),  # s = c[:, 3:9]
        EdgeBlock("p.shuffle", "b", "p", "residual", index=rng.permutation(8)),
        block("s.out", "s", "out", "sequential", (3, 6)),
        block("d", "c", "d", "sequential", (5, 16 * 4), fold=4),
        block("skip", "x", "d", "n2nskip", (5, 6, 1, 1)),
        block("out", "d", "out", "sequential", (3, 5)),
        block("out2", "d", "out", "n2nskip", (3, 5)),
    ]
    return NetworkGraph(tuple(groups), tuple(blocks))


@pytest.mark.parametrize("chunk", [None, 1, 7])
@pytest.mark.parametrize("seed", range(4))
def test_adjacency_equals_the_global_edge_list_construction(seed, chunk, monkeypatch):
    from benchmarks.adjacency import edge_list_adjacency
    from n2ngraph import graph as graph_module

    if chunk is not None:  # split groups into row slices of at most `chunk` entries
        monkeypatch.setattr(graph_module, "_CHUNK_ENTRIES", chunk)
    g = _random_graph(seed)
    for weighted in (False, True):
        got, want = g.adjacency(weighted=weighted), edge_list_adjacency(g, weighted)
        assert got.has_canonical_format
        assert got.shape == want.shape and got.dtype == want.dtype == np.float64
        np.testing.assert_array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_array_equal(got.data, want.data)
        assert (got != got.T).nnz == 0


def test_adjacency_of_graphs_without_edges_and_isolated_groups():
    g = NetworkGraph((NodeGroup("a", 0, 3), NodeGroup("b", 3, 2), NodeGroup("c", 5, 1)),
                     (EdgeBlock("c", "a", "c", "sequential", np.zeros((1, 3), bool)),))
    adj = g.adjacency()
    assert adj.shape == (6, 6) and adj.nnz == 0
    np.testing.assert_array_equal(adj.indptr, np.zeros(7))


def test_channel_ranges_and_node_maps_of_residual_blocks():
    # x (6) -> y = x[:, 2:5] (3 nodes) and z = x[:, [1, 0, 5, 4, 3, 2]] restricted to 4 nodes
    groups = (NodeGroup("x", 0, 6), NodeGroup("y", 6, 3), NodeGroup("z", 9, 4))
    index = np.array([1, 0, -1, -1, 3, 2])  # x0 -> z1, x1 -> z0, x4 -> z3, x5 -> z2
    blocks = (EdgeBlock("slice", "x", "y", "residual", offset=-2),
              EdgeBlock("map", "x", "z", "residual", index=index))
    g = NetworkGraph(groups, blocks)
    expected = np.zeros((13, 13))
    for i, j in [(2, 6), (3, 7), (4, 8), (0, 10), (1, 9), (4, 12), (5, 11)]:
        expected[i, j] = expected[j, i] = 1
    np.testing.assert_array_equal(g.adjacency().toarray(), expected)
    np.testing.assert_array_equal(g.adjacency(weighted=True).toarray(), expected)
    r, c, _ = blocks[0].local_pairs(6, 3)
    assert r.tolist() == [0, 1, 2] and c.tolist() == [2, 3, 4]
    with pytest.raises(ValueError, match="pass dst_size"):
        blocks[0].local_pairs(6)
    assert blocks[1].index.dtype == np.int64 and not blocks[1].index.flags.writeable
    other = dataclasses.replace(blocks[1], index=np.array([0, 1, -1, -1, 3, 2]))
    assert g != g.replace(blocks=(blocks[0], other)) and g == g.replace(blocks=blocks)


@pytest.mark.parametrize("block, message", [
    (EdgeBlock("r", "x", "y", "residual", offset=-6), "joins none"),
    (EdgeBlock("r", "x", "y", "residual", offset=1), "do not fit"),
    (EdgeBlock("r", "x", "y", "residual", index=np.array([0, 1, 2, 3, 4])), "index of 5 entries"),
    (EdgeBlock("r", "x", "y", "residual", index=np.array([0, 1, 2, 3, 4, 3])), "must map"),
])
def test_residual_node_maps_must_fit_their_groups(block, message):
    with pytest.raises(ValueError, match=message):
        NetworkGraph((NodeGroup("x", 0, 6), NodeGroup("y", 6, 3)), (block,))


def test_residual_node_maps_refuse_bad_values():
    with pytest.raises(ValueError, match="negative offsets take channel ranges of residual"):
        EdgeBlock("e", "a", "b", "sequential", np.ones((1, 1), bool), offset=-1)
    with pytest.raises(ValueError, match="offset 0 only"):
        EdgeBlock("e", "a", "b", "residual", offset=1, index=np.arange(3))
    with pytest.raises(TypeError, match="1-d integer array"):
        EdgeBlock("e", "a", "b", "residual", index=np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="-1 means none"):
        EdgeBlock("e", "a", "b", "residual", index=np.array([0, -2]))

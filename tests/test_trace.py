"""to_graph: hand-computed adjacency for MLP, conv taps, residual and concat; real models; errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from n2ngraph import models
from n2ngraph.graph import LayerSpec
from n2ngraph.trace import to_graph, trace


def test_tiny_mlp_adjacency_and_weights(tiny_mlp):
    mask0 = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    g = to_graph(tiny_mlp, {"0.weight": mask0})
    assert [x.name for x in g.groups] == ["input", "0", "2"]
    assert [x.size for x in g.groups] == [4, 3, 2]
    expected = np.zeros((9, 9))
    for o, i in zip(*np.nonzero(mask0.numpy())):
        expected[4 + o, i] = expected[i, 4 + o] = 1
    expected[7:9, 4:7] = 1
    expected[4:7, 7:9] = 1
    np.testing.assert_array_equal(g.adjacency().toarray(), expected)
    w0 = tiny_mlp[0].weight.detach().numpy() * mask0.numpy()
    np.testing.assert_allclose(g.adjacency(weighted=True).toarray()[4:7, 0:4], np.abs(w0), rtol=1e-6)
    assert g.num_params == int(mask0.sum()) + 6


def test_paper_mlp_counts():
    g = to_graph(models.paper_mlp())
    assert g.num_nodes == 4042
    assert g.num_edges == 3072 * 512 + 512 * 256 + 256 * 128 + 128 * 64 + 64 * 10
    assert g.groups[0].size == 3072  # features, not channels: first layer is Linear


def test_conv_edge_when_any_tap_kept_and_weight_sums_taps():
    conv = nn.Conv2d(2, 3, 3, bias=False)
    model = nn.Sequential(conv)
    mask = torch.zeros(3, 2, 3, 3, dtype=torch.bool)
    mask[0, 1, 2, 2] = True  # one tap: edge (out 0, in 1)
    mask[2, 0] = True  # all taps: edge (out 2, in 0)
    g = to_graph(model, {"0.weight": mask}, example_input=torch.zeros(1, 2, 8, 8))
    block = g.adjacency().toarray()[2:5, 0:2]
    np.testing.assert_array_equal(block, [[0, 1], [0, 0], [1, 0]])
    w = conv.weight.detach().abs()
    weighted = g.adjacency(weighted=True).toarray()[2:5, 0:2]
    assert weighted[0, 1] == pytest.approx(float(w[0, 1, 2, 2]), rel=1e-6)
    assert weighted[2, 0] == pytest.approx(float(w[2, 0].sum()), rel=1e-6)
    assert g.blocks[0].spec.op == "Conv2d" and g.blocks[0].conv_groups == 1


def test_depthwise_conv_joins_channel_to_channel():
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, groups=6, stride=2))
    g = to_graph(model, example_input=torch.zeros(1, 3, 8, 8))
    dw = g.adjacency().toarray()[9:15, 3:9]
    np.testing.assert_array_equal(dw, np.eye(6))
    assert g.groups[-1].shape == (6, 3, 3)


class FlattenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(2 * 2 * 2, 3)

    def forward(self, x):
        x = self.pool(F.relu(self.conv(x)))
        x = x.view(x.size(0), -1)
        return self.fc(x)


def test_flatten_linear_folds_onto_channels():
    model = FlattenNet()
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[0, 5] = True  # column 5 = channel 1 (4 columns per channel)
    mask[2, 0] = mask[2, 1] = True  # both channel 0
    g = to_graph(model, {"fc.weight": mask}, example_input=torch.zeros(1, 1, 4, 4))
    assert [x.size for x in g.groups] == [1, 2, 3]
    fc = g.block("fc")
    assert fc.fold == 4 and fc.src == "conv"
    np.testing.assert_array_equal(g.adjacency().toarray()[3:6, 1:3], [[0, 1], [0, 0], [1, 0]])
    w = model.fc.weight.detach().abs()
    assert g.adjacency(weighted=True)[5, 1] == pytest.approx(float(w[2, 0] + w[2, 1]), rel=1e-6)


class ResidualNet(nn.Module):
    """y = relu(conv2(a)) + a, a = relu(conv1(x)); a also feeds conv2 (docs/design.md's example)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 1, bias=False)
        self.conv2 = nn.Conv2d(2, 2, 1, bias=False)

    def forward(self, x):
        a = F.relu(self.conv1(x))
        return F.relu(self.conv2(a)) + a


def test_residual_add_hand_computed():
    g = to_graph(ResidualNet(), example_input=torch.zeros(1, 1, 4, 4))
    assert [x.name for x in g.groups] == ["input", "conv1", "add"]
    kinds = {b.name: (b.kind, b.src, b.dst) for b in g.blocks}
    assert kinds["conv2"] == ("sequential", "conv1", "add")
    residual = [b for b in g.blocks if b.kind == "residual"]
    assert len(residual) == 1 and (residual[0].src, residual[0].dst) == ("conv1", "add")
    expected = np.zeros((5, 5))
    pairs = [(0, 1), (0, 2)] + [(1 + i, 3 + j) for i in range(2) for j in range(2)]
    for i, j in pairs:
        expected[i, j] = expected[j, i] = 1
    np.testing.assert_array_equal(g.adjacency().toarray(), expected)
    # the residual edge a_i -> y_i coincides with conv2's (i, i) pair: weight 1 + |w_ii|
    w2 = g.block("conv2").pair_weight
    weighted = g.adjacency(weighted=True).toarray()
    assert weighted[3, 1] == pytest.approx(1 + w2[0, 0], rel=1e-6)
    assert weighted[4, 1] == pytest.approx(w2[1, 0], rel=1e-6)


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1)
        self.b = nn.Conv2d(1, 3, 1)
        self.c = nn.Conv2d(5, 1, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), F.relu(self.b(x))], dim=1))


def test_concat_joins_channel_to_channel_at_offset():
    g = to_graph(ConcatNet(), example_input=torch.zeros(1, 1, 2, 2))
    assert [x.name for x in g.groups] == ["input", "a", "b", "cat", "c"]
    assert [x.size for x in g.groups] == [1, 2, 3, 5, 1]
    res = [b for b in g.blocks if b.kind == "residual"]
    assert [(b.src, b.offset) for b in res] == [("a", 0), ("b", 2)]
    adj = g.adjacency().toarray()
    np.testing.assert_array_equal(adj[6:11, 1:6], np.eye(5))  # a(1-2), b(3-5) -> cat(6-10)
    np.testing.assert_array_equal(adj[11, 6:11], np.ones(5))


def test_resnet_residual_blocks_where_the_adds_are():
    m = models.resnet18()
    g = to_graph(m)
    adds = [x.name for x in g.groups if x.name.endswith(".add")]
    assert len(adds) == 8  # one sum per basic block
    residual = g.blocks_of_kind("residual")
    # blocks with a downsample shortcut merge both convs into the sum: no identity edge there
    assert len(residual) == 5
    assert {b.dst for b in residual} == {"layer1.0.add", "layer1.1.add", "layer2.1.add",
                                          "layer3.1.add", "layer4.1.add"}
    ds = g.block("layer2.0.downsample.0")
    assert ds.kind == "sequential" and ds.dst == "layer2.0.add" and ds.src == "layer1.1.add"
    assert g.block("layer2.0.conv2").dst == "layer2.0.add"
    assert g.dense_params == sum(p.numel() for n, p in m.named_parameters()
                                 if n.endswith("weight") and p.dim() > 1)


def test_vgg19_flatten_folds_to_512_channels():
    g = to_graph(models.vgg19())
    fc = g.block("classifier.0")
    assert fc.fold == 49 and g.group(fc.src).size == 512
    assert g.dense_params == 139_597_504 + 0  # torchvision-shaped, 10 classes


def test_trace_leaves_model_untouched():
    m = models.resnet18()
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    to_graph(m, example_input=torch.randn(2, 3, 32, 32))
    assert m.training and all(x.training for x in m.modules())
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_torch_prune_buffers_are_read(tiny_mlp):
    torch_prune.random_unstructured(tiny_mlp[0], "weight", amount=0.5)
    g = to_graph(tiny_mlp)
    np.testing.assert_array_equal(g.block("0").mask, tiny_mlp[0].weight_mask.bool().numpy())
    assert g.num_params == 6 + 6


def test_group_nodes_list_aliases():
    t = trace(FlattenNet(), example_input=torch.zeros(1, 1, 4, 4))
    assert t.group_nodes["conv"][0] == "conv"
    assert "pool" in t.group_nodes["conv"] and "view" in t.group_nodes["conv"]


class Quotient(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) / torch.sigmoid(x)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return x


class Sorter(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.sort(self.fc(x), dim=1).values


def test_unsupported_ops_name_the_op():
    with pytest.raises(ValueError, match="truediv.*quotient"):
        to_graph(Quotient())
    with pytest.raises(ValueError, match="sort"):
        to_graph(Sorter())
    with pytest.raises(ValueError, match="control flow"):
        to_graph(Branchy())
    with pytest.raises(ValueError, match="Embedding"):
        to_graph(nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 2)),
                 example_input=torch.zeros(1, 3, dtype=torch.long))


def test_bad_masks_and_models(tiny_mlp):
    with pytest.raises(ValueError, match="valid names"):
        to_graph(tiny_mlp, {"fc.weight": torch.ones(3, 4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        to_graph(tiny_mlp, {"0.weight": torch.ones(4, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="no Linear or Conv2d"):
        to_graph(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match="nn.Module"):
        to_graph("vgg19")
    with pytest.raises(ValueError, match="example input"):
        to_graph(tiny_mlp, example_input=torch.zeros(1, 7))


class _DenseSkip(nn.Module):
    """A skip module of the tracing contract in its plain form: dense ``weight`` and bool ``mask``."""

    n2ngraph_kind = "n2nskip"
    n2ngraph_block_name = "n2nskip:input->1"
    n2ngraph_offset = 0
    n2ngraph_spec = {"added_by": "add_n2nskip", "type": "Linear", "order": "pool-conv-act"}

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[0.5, 0.0, -2.0, 0.0], [0.0, 0.0, 0.0, 1.5]]))
        self.register_buffer("mask", torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool))

    def forward(self, a, z):
        return z + F.linear(a, self.weight * self.mask)


class _CompactSkip(_DenseSkip):
    """The same block stored as kept positions (as n2ngraph.bridge.N2NSkip does)."""

    def n2ngraph_mask(self):
        return self.mask.numpy().copy()

    def n2ngraph_pair_weight(self):
        return (self.weight * self.mask).abs().detach().numpy()


@pytest.mark.parametrize("skip_cls", [_DenseSkip, _CompactSkip])
def test_skip_modules_are_read_back_as_blocks(skip_cls):
    class WithSkip(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc0 = nn.Linear(4, 3)
            self.fc1 = nn.Linear(3, 2)
            self.skip = skip_cls()

        def forward(self, x):
            return self.skip(x, self.fc1(F.relu(self.fc0(x))))

    g = to_graph(WithSkip(), example_input=torch.zeros(1, 4))
    assert [b.kind for b in g.blocks] == ["sequential", "sequential", "n2nskip"]
    skip = g.blocks[-1]
    assert (skip.name, skip.src, skip.dst) == ("n2nskip:input->1", "input", "fc1")
    np.testing.assert_array_equal(skip.mask, [[1, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(skip.pair_weight, [[0.5, 0, 2.0, 0], [0, 0, 0, 1.5]])
    assert skip.spec == LayerSpec(op="Linear", added_by="add_n2nskip", order="pool-conv-act")


def test_rule_table_is_one_dispatch():
    """Every op target has one rule and every rule one handler of the walk."""
    from n2ngraph.trace import _OP_RULES, _RULES, _module_rule, _Walker

    for i, (rule, functions, methods) in enumerate(_OP_RULES):
        for other, functions2, methods2 in _OP_RULES[i + 1:]:
            assert not functions & functions2 and not methods & methods2, (rule, other)
    rules = {r for table in _RULES.values() for r in table.values()}
    assert set(_Walker._HANDLERS) == rules | {"skip"}

    class MyReLU(nn.ReLU):  # a subclass follows its nearest base with a rule, as isinstance would
        pass

    assert _module_rule(MyReLU()) == "alias" and _module_rule(nn.Conv2d(1, 1, 1)) == "weight_layer"
    assert _module_rule(_DenseSkip()) == "skip" and _module_rule(nn.LSTM(1, 1)) is None


@pytest.mark.parametrize("name", ["paper_mlp", "resnet18"])
def test_with_masks_equals_tracing_again(name):
    """Masks change only the traced layers' masks and pair weights: putting them on the traced
    graph gives what a second trace with them gives, pair weights included."""
    from n2ngraph import models
    from n2ngraph.pruning import prune
    from n2ngraph.trace import trace, with_masks

    model = models.build_model(name)
    reference = trace(model).graph
    masks = prune(model, "magnitude", 0.05)
    retraced, edited = trace(model, masks).graph, with_masks(reference, model, masks)
    assert edited == retraced and edited != reference
    for a, b in zip(edited.blocks, retraced.blocks):
        assert a.spec == b.spec
        assert (a.pair_weight is None and b.pair_weight is None) or np.array_equal(a.pair_weight, b.pair_weight)


# ----------------------------------------------- fused weights: nn.MultiheadAttention.in_proj_weight
def _attention_net():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 4, stride=4)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)
            return self.head((t + self.attn(t, t, t, need_weights=False)[0]).mean(dim=1))

    return Net()


def test_in_proj_weight_is_a_prunable_weight():
    from n2ngraph.masks import FusedWeight, masks_of, prunable_weights, weight_name, weight_of
    from n2ngraph.pruning import prune

    model = _attention_net()
    weights = prunable_weights(model)
    assert list(weights) == ["embed.weight", "attn.in_proj_weight", "attn.out_proj.weight", "head.weight"]
    fused = weights["attn.in_proj_weight"]
    assert isinstance(fused, FusedWeight) and fused.weight is model.attn.in_proj_weight
    assert fused.bias is model.attn.in_proj_bias
    assert weight_name("attn.in_proj_weight") == "attn.in_proj_weight"
    assert weight_name("attn.out_proj") == "attn.out_proj.weight"
    masks = prune(model, "random", 0.25, seed=0)
    assert int(masks["attn.in_proj_weight"].sum()) == round(0.25 * 24 * 8)
    # masks put on by torch.nn.utils.prune on the fused parameter are read back
    torch_prune.custom_from_mask(model.attn, "in_proj_weight", masks["attn.in_proj_weight"])
    assert torch.equal(masks_of(model)["attn.in_proj_weight"], masks["attn.in_proj_weight"])
    assert weight_of(prunable_weights(model)["attn.in_proj_weight"]) is model.attn.in_proj_weight_orig
    g = to_graph(model, example_input=torch.randn(1, 3, 8, 8))
    np.testing.assert_array_equal(g.block("attn.in_proj_weight").mask, masks["attn.in_proj_weight"].numpy())
    with pytest.raises(ValueError, match="shape"):
        to_graph(model, {"attn.in_proj_weight": torch.ones(8, 8, dtype=torch.bool)},
                 example_input=torch.randn(1, 3, 8, 8))

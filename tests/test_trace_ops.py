"""Tracing the ops of modern models (docs/design.md, "The model zoo"): small models of our own,
each checked against a hand-computed adjacency and the independent fx data-flow walk of
tests/_zoo_support.py."""

from collections import namedtuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _zoo_support import dataflow_mismatches, import_torchvision
from torch import nn

from n2ngraph.trace import trace


def _traced(model, x):
    result = trace(model, example_input=x)
    assert dataflow_mismatches(result, model, x) == []
    return result.graph


def _adjacency(n, pairs):
    a = np.zeros((n, n))
    for i, j in pairs:
        a[i, j] = a[j, i] = 1
    return a


def _all(src, dst):
    return [(i, j) for i in src for j in dst]


class SqueezeExcite(nn.Module):
    """conv a (1 -> 2), a squeeze-excitation gate on it, conv b (2 -> 1)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1)
        self.fc1 = nn.Conv2d(2, 1, 1)
        self.fc2 = nn.Conv2d(1, 2, 1)
        self.b = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        h = F.relu(self.a(x))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(h, 1)))))
        return self.b(h * s)


def test_gate_is_a_product_group_joined_channel_to_channel():
    g = _traced(SqueezeExcite(), torch.randn(1, 1, 4, 4))
    # nodes: input 0, a 1-2, fc1 3, mul 4-5 (fc2 merges into the product), b 6
    assert [(x.name, x.size) for x in g.groups] == [("input", 1), ("a", 2), ("fc1", 1), ("mul", 2), ("b", 1)]
    assert g.block("fc2").dst == "mul"
    gate = g.block("mul.mul0")
    assert (gate.kind, gate.src, gate.dst, gate.spec.op) == ("residual", "a", "mul", "mul")
    pairs = _all([0], [1, 2]) + _all([1, 2], [3]) + _all([3], [4, 5]) + [(1, 4), (2, 5)] + _all([4, 5], [6])
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(7, pairs))
    assert g.num_params == 2 + 2 + 2 + 2  # the gate has no weights


class OneGroupOps(nn.Module):
    """Element-wise ops whose operands all belong to one group: x * sigmoid(x), pool(x) - x,
    x * a parameter, x / 2 (all alias)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1)
        self.scale = nn.Parameter(torch.ones(2, 1, 1))
        self.b = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        h = self.a(x)
        h = h * torch.sigmoid(h)
        h = F.avg_pool2d(h, 3, 1, 1) - h
        return self.b(self.scale * h / 2)


def test_elementwise_ops_within_one_group_alias():
    result = trace(OneGroupOps(), example_input=torch.randn(1, 1, 4, 4))
    g = result.graph
    assert [(x.name, x.size) for x in g.groups] == [("input", 1), ("a", 2), ("b", 1)]
    assert [b.kind for b in g.blocks] == ["sequential", "sequential"]
    assert {"mul", "sub", "truediv"} <= set(result.group_nodes["a"])


class Difference(nn.Module):
    """``conv(h) - h``: a difference of two groups is a sum group, like an add."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1)
        self.c = nn.Conv2d(2, 2, 1)
        self.b = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        h = self.a(x)
        return self.b(self.c(h) - h)


def test_sub_of_two_groups_is_a_sum():
    g = _traced(Difference(), torch.randn(1, 1, 3, 3))
    assert [x.name for x in g.groups] == ["input", "a", "sub", "b"]
    res = g.blocks_of_kind("residual")
    assert [(b.src, b.dst, b.spec.op) for b in res] == [("a", "sub", "sub")]
    # input 0, a 1-2, sub 3-4 (c merged), b 5
    pairs = _all([0], [1, 2]) + _all([1, 2], [3, 4]) + [(1, 3), (2, 4)] + _all([3, 4], [5])
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(6, pairs))


class ChannelsLastBlock(nn.Module):
    """A ConvNeXt block: stem conv, depthwise conv, permute to channels-last, LayerNorm, two
    Linear layers on the channel axis, permute back, layer scale, residual add; then a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 1)
        self.dw = nn.Conv2d(2, 2, 3, padding=1, groups=2)
        self.norm = nn.LayerNorm(2)
        self.fc1 = nn.Linear(2, 4)
        self.fc2 = nn.Linear(4, 2)
        self.gamma = nn.Parameter(torch.ones(2, 1, 1))
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y))))
        x = x + self.gamma * y.permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


def test_linear_on_the_channel_axis_of_a_channels_last_tensor():
    g = _traced(ChannelsLastBlock(), torch.randn(1, 1, 5, 6))
    assert [(x.name, x.size) for x in g.groups] == [
        ("input", 1), ("stem", 2), ("dw", 2), ("fc1", 4), ("add", 2), ("head", 3)]
    assert g.group("fc1").shape == (4, 5, 6)  # channel axis first, whatever the tensor layout
    assert g.block("fc2").dst == "add"
    # input 0, stem 1-2, dw 3-4, fc1 5-8, add 9-10, head 11-13
    pairs = (_all([0], [1, 2]) + [(1, 3), (2, 4)] + _all([3, 4], range(5, 9)) + _all(range(5, 9), [9, 10])
             + [(1, 9), (2, 10)] + _all([9, 10], range(11, 14)))
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(14, pairs))


class TokensLinear(nn.Module):
    """(B, C, h, w) -> flatten(2) -> transpose -> (B, hw, C): a Linear on C mixes channels."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 3, 2, stride=2)
        self.proj = nn.Linear(3, 2)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        return self.proj(t).mean(1)


def test_reshape_and_transpose_follow_the_channel_axis():
    g = _traced(TokensLinear(), torch.randn(1, 1, 4, 4))
    assert [(x.name, x.size) for x in g.groups] == [("input", 1), ("embed", 3), ("proj", 2)]
    pairs = _all([0], [1, 2, 3]) + _all([1, 2, 3], [4, 5])
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(6, pairs))


Outputs = namedtuple("Outputs", ["logits", "aux"])


class AuxHead(nn.Module):
    """A main path and an aux head on the middle activation, returned as a named tuple (or as a
    plain tuple) in training mode, the main output alone in eval mode."""

    def __init__(self, named=True):
        super().__init__()
        self.named = named
        self.a = nn.Linear(3, 4)
        self.aux = nn.Linear(4, 2)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        h = F.relu(self.a(x))
        aux = self.aux(h) if self.training else None
        out = self.b(h)
        if self.training:
            return Outputs(out, aux) if self.named else (out, aux)
        return out


@pytest.mark.parametrize("named", [True, False])
def test_every_output_is_traced(named):
    model = AuxHead(named)
    g = _traced(model.train(), torch.randn(1, 3))
    assert [(x.name, x.size) for x in g.groups] == [("input", 3), ("a", 4), ("aux", 2), ("b", 2)]
    # input 0-2, a 3-6, aux 7-8, b 9-10
    pairs = _all(range(3), range(3, 7)) + _all(range(3, 7), [7, 8, 9, 10])
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(11, pairs))
    assert model.training  # the trace restores the mode
    g_eval = _traced(model.eval(), torch.randn(1, 3))
    assert [x.name for x in g_eval.groups] == ["input", "a", "b"]


class OptionalMask(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x, attn_mask=None):
        return self.fc(x)


def test_optional_input_left_at_its_default_is_not_an_input():
    g = _traced(OptionalMask(), torch.randn(1, 3))
    assert [(x.name, x.size) for x in g.groups] == [("input", 3), ("fc", 2)]


class ChannelSum(nn.Module):
    """A conv output summed over its channels, flattened into a Linear; 4 channels on a 4 x 4
    image, so the shapes alone cannot tell channels from rows."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        return self.fc(self.conv(x).sum(dim=1).flatten(1))


class SpatialGate(nn.Module):
    """A one-channel spatial attention map times a 2-channel activation."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1)
        self.att = nn.Conv2d(2, 1, 1)
        self.b = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        h = self.a(x)
        return self.b(h * torch.sigmoid(self.att(h)))


@pytest.mark.parametrize("model, match", [
    (ChannelSum(), r"sum.*dims \[1\].*channel axis"),
    (SpatialGate(), r"gate.*different node sets.*\('att', 1\)"),
])
def test_ops_outside_the_semantics_are_refused_by_name(model, match):
    with pytest.raises(ValueError, match=match):
        trace(model, example_input=torch.randn(1, 1, 4, 4))


def test_stochastic_depth_aliases_in_training_and_eval():
    tv = import_torchvision()
    if tv is None:
        pytest.skip("torchvision is not importable")

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 1)
            self.c = nn.Conv2d(2, 2, 1)
            self.drop = tv.ops.StochasticDepth(0.5, "row")

        def forward(self, x):
            h = self.a(x)
            return self.drop(self.c(h)) + h

    for mode in (True, False):
        g = _traced(Block().train(mode), torch.randn(1, 1, 3, 3))
        assert [x.name for x in g.groups] == ["input", "a", "add"]
        assert [(b.name, b.kind) for b in g.blocks] == [("a", "sequential"), ("c", "sequential"),
                                                        ("add.residual1", "residual")]


class ClassToken(nn.Module):
    """A ViT-style head: patch embedding, a class token prepended along the token axis, a
    position embedding added, a Linear on the features, ``x[:, 0]`` into the classifier."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 3, 2, stride=2)
        self.token = nn.Parameter(torch.zeros(1, 1, 3))
        self.pos = nn.Parameter(torch.zeros(1, 5, 3))
        self.mlp = nn.Linear(3, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        t = self.embed(x).flatten(2).permute(0, 2, 1)
        t = torch.cat([self.token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        t = t + self.mlp(t)
        return self.head(t[:, 0])


def test_class_token_and_token_indexing_keep_the_feature_set():
    g = _traced(ClassToken(), torch.randn(1, 1, 4, 4))
    assert [(x.name, x.size) for x in g.groups] == [("input", 1), ("embed", 3), ("add_1", 3), ("head", 2)]
    # input 0, embed 1-3, add 4-6 (mlp merged), head 7-8
    pairs = _all([0], [1, 2, 3]) + _all([1, 2, 3], [4, 5, 6]) + [(1, 4), (2, 5), (3, 6)] + _all([4, 5, 6], [7, 8])
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(9, pairs))


class ChannelSlice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 1)
        self.b = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        return self.b(self.a(x)[:, 1:3])


def _negative_offsets() -> bool:
    """Whether this graph version has residual blocks with negative offsets (channel ranges)."""
    from n2ngraph.graph import EdgeBlock

    try:
        EdgeBlock("r", "a", "b", "residual", offset=-1)
    except ValueError:
        return False
    return True


class ChunkPieces(nn.Module):
    """chunk(2) along channels; the first half is used, the second dropped."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 1)
        self.b = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        left, _ = self.a(x).chunk(2, dim=1)
        return self.b(left)


@pytest.mark.parametrize("model, start", [(ChannelSlice(), 1), (ChunkPieces(), 0)])
def test_channel_ranges_are_groups_joined_at_a_negative_offset(model, start):
    x = torch.randn(1, 1, 2, 2)
    if not _negative_offsets():
        with pytest.raises(ValueError, match=rf"channel range {start}:{start + 2} of group 'a'.*negative offset"):
            trace(model, example_input=x)
        return
    g = _traced(model, x)
    assert [x.size for x in g.groups] == [1, 4, 2, 1]
    (res,) = g.blocks_of_kind("residual")
    assert (res.src, res.offset, res.spec.op) == ("a", -start, "slice")
    if start == 0:
        np.testing.assert_array_equal(res.index, [0, 1, -1, -1])
    # input 0, a 1-4, slice 5-6 (a's channels start, start + 1), b 7
    pairs = _all([0], range(1, 5)) + [(1 + start, 5), (2 + start, 6)] + _all([5, 6], [7])
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(8, pairs))


class Shuffle(nn.Module):
    """ShuffleNet's channel shuffle of 6 channels in 2 groups between two convs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 6, 1)
        self.b = nn.Conv2d(6, 1, 1)

    def forward(self, x):
        h = self.a(x)
        n, c, hh, ww = h.size()
        h = h.view(n, 2, c // 2, hh, ww).transpose(1, 2).contiguous().view(n, c, hh, ww)
        return self.b(h)


def test_channel_shuffle_is_a_permutation_block():
    g = _traced(Shuffle(), torch.randn(1, 1, 2, 2))
    assert [(x.name, x.size) for x in g.groups] == [("input", 1), ("a", 6), ("view_1", 6), ("b", 1)]
    (perm,) = g.blocks_of_kind("residual")
    assert (perm.src, perm.dst, perm.spec.op) == ("a", "view_1", "shuffle")
    # channel c = 3 i + k (group i, k-th in its group) moves to 2 k + i
    np.testing.assert_array_equal(perm.index, [0, 2, 4, 1, 3, 5])
    # the same permutation, read from torch: a one-hot channel c lands at index[c]
    for c in range(6):
        h = torch.zeros(1, 6, 1, 1)
        h[0, c] = 1
        out = h.view(1, 2, 3, 1, 1).transpose(1, 2).contiguous().view(1, 6, 1, 1)
        assert int(out.flatten().argmax()) == perm.index[c]
    # input 0, a 1-6, shuffle 7-12, b 13
    pairs = _all([0], range(1, 7)) + [(1 + c, 7 + int(perm.index[c])) for c in range(6)] + _all(range(7, 13), [13])
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(14, pairs))


@pytest.mark.parametrize("version", [1, 2])
def test_swin_window_attention_is_qkv_attention_proj(version):
    tv = import_torchvision()
    if tv is None:
        pytest.skip("torchvision is not importable")
    from torchvision.models import swin_transformer as swin

    attention = swin.ShiftedWindowAttention if version == 1 else swin.ShiftedWindowAttentionV2

    class WindowBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 1)
            self.attn = attention(4, [2, 2], [1, 1], num_heads=2)
            self.head = nn.Conv2d(4, 1, 1)

        def forward(self, x):
            x = self.stem(x).permute(0, 2, 3, 1)
            x = x + self.attn(x)
            return self.head(x.permute(0, 3, 1, 2))

    g = _traced(WindowBlock(), torch.randn(1, 1, 4, 4))
    assert [(x.name, x.size) for x in g.groups] == [
        ("input", 1), ("stem", 4), ("attn.qkv", 12), ("attn.q", 4), ("attn.k", 4), ("attn.v", 4),
        ("attn.attention", 4), ("add", 4), ("head", 1)]
    ranges = [b for b in g.blocks if b.spec.op == "slice"]
    assert [(b.src, b.dst, b.offset) for b in ranges] == [
        ("attn.qkv", "attn.q", 0), ("attn.qkv", "attn.k", -4), ("attn.qkv", "attn.v", -8)]
    att = [b for b in g.blocks if b.spec.op == "attention"]
    assert [b.src for b in att] == ["attn.q", "attn.k", "attn.v"]
    # input 0, stem 1-4, qkv 5-16, q 17-20, k 21-24, v 25-28, attention 29-32, add 33-36 (proj
    # merged), head 37
    pairs = (_all([0], range(1, 5)) + _all(range(1, 5), range(5, 17))
             + [(5 + part * 4 + i, 17 + part * 4 + i) for part in range(3) for i in range(4)]
             + [(17 + part * 4 + i, 29 + i) for part in range(3) for i in range(4)]
             + _all(range(29, 33), range(33, 37)) + [(1 + i, 33 + i) for i in range(4)] + _all(range(33, 37), [37]))
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(38, pairs))
    # Swin v2's position-bias MLP reads constants only: it is not in the graph
    assert {b.spec.module for b in g.blocks_of_kind("sequential")} == {"stem", "attn.qkv", "attn.proj", "head"}


class TimmStyleAttention(nn.Module):
    """timm's Attention: a fused qkv Linear reshaped to (B, N, 3, heads, head_dim), permuted,
    unbound into q, k, v, scaled_dot_product_attention, heads joined back, a proj Linear; then
    tokens padded and averaged into a head."""

    def __init__(self, width=4, heads=2, how="sdpa"):
        super().__init__()
        self.heads, self.how = heads, how
        self.embed = nn.Conv2d(1, width, 2, stride=2)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        b, n, c = t.shape
        qkv = self.qkv(t).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.how == "sdpa":
            a = F.scaled_dot_product_attention(q * 0.5, k, v)
        elif self.how == "matmul":  # timm without fused attention
            a = ((q * 0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        else:  # torchvision MaxViT
            w = torch.einsum("b h i d, b h j d -> b h i j", q, k * 0.5)
            a = torch.einsum("b h i j, b h j d -> b h i d", F.softmax(w + 1.0, dim=-1), v)
        t = self.proj(a.transpose(1, 2).reshape(b, n, c))
        return self.head(F.pad(t, (0, 0, 0, 1)).mean(1))


@pytest.mark.parametrize("how, attention", [("sdpa", "scaled_dot_product_attention"), ("matmul", "matmul_1"),
                                            ("einsum", "einsum_1")])
def test_fused_qkv_attention_of_timm_style(how, attention):
    g = _traced(TimmStyleAttention(how=how), torch.randn(1, 1, 4, 4))
    assert [(x.name, x.size) for x in g.groups] == [
        ("input", 1), ("embed", 4), ("qkv", 12), ("getitem_3", 4), ("getitem_4", 4), ("getitem_5", 4),
        (attention, 4), ("proj", 4), ("head", 1)]
    # input 0, embed 1-4, qkv 5-16, q 17-20, k 21-24, v 25-28, attention 29-32, proj 33-36, head 37
    pairs = (_all([0], range(1, 5)) + _all(range(1, 5), range(5, 17))
             + [(5 + part * 4 + i, 17 + part * 4 + i) for part in range(3) for i in range(4)]
             + [(17 + part * 4 + i, 29 + i) for part in range(3) for i in range(4)]
             + _all(range(29, 33), range(33, 37)) + _all(range(33, 37), [37]))
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(38, pairs))


class TokenOps(nn.Module):
    """LeViT's BatchNorm over ``x.flatten(0, 1)`` then ``reshape_as(x)``, and CoaT's class token
    split off, the other tokens projected, and both concatenated back along the token axis."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 2, 2, stride=2)
        self.fc = nn.Linear(2, 2)
        self.bn = nn.BatchNorm1d(2)
        self.head = nn.Linear(2, 1)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = self.bn(t.flatten(0, 1)).reshape_as(t)
        t = torch.cat((t[:, :1], self.fc(t[:, 1:])), dim=1)
        return self.head(t.mean(1))


def test_batch_merged_with_tokens_and_tokens_of_two_groups():
    g = _traced(TokenOps(), torch.randn(2, 1, 4, 4))
    assert [(x.name, x.size) for x in g.groups] == [("input", 1), ("embed", 2), ("cat", 2), ("head", 1)]
    (join,) = g.blocks_of_kind("residual")
    assert (join.src, join.dst, join.spec.op) == ("embed", "cat", "tokens")
    # input 0, embed 1-2, cat 3-4 (fc merged: channel i of both operands feeds channel i), head 5
    pairs = _all([0], [1, 2]) + _all([1, 2], [3, 4]) + [(1, 3), (2, 4)] + _all([3, 4], [5])
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(6, pairs))


class PatchMerging(nn.Module):
    """timm Swin's patch merging: a channels-last (B, h, w, C) tensor viewed as
    (B, h/2, 2, w/2, 2, C), permuted, and flattened to (B, h/2, w/2, 4C)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1)
        self.fc = nn.Linear(8, 1)

    def forward(self, x):
        t = self.a(x).permute(0, 2, 3, 1)
        b, h, w, c = t.shape
        t = t.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.fc(t).mean((1, 2))


def test_channels_merged_with_other_axes_are_copies_of_the_group():
    g = _traced(PatchMerging(), torch.randn(1, 1, 4, 4))
    assert [(x.name, x.size) for x in g.groups] == [("input", 1), ("a", 2), ("flatten", 8), ("fc", 1)]
    copies = g.blocks_of_kind("residual")
    assert len(copies) == 4 and {b.spec.op for b in copies} == {"concat"}
    # position (i, j) of the 2 x 2 patch, channel c -> channel 4 j + 2 i + c (j, the w offset,
    # comes first after the permute); read the same from torch with a one-hot channel
    for c in range(2):
        t = torch.zeros(1, 2, 2, 2)
        t[..., c] = 1  # channel c at every position of one 2 x 2 patch
        lit = t.reshape(1, 1, 2, 1, 2, 2).permute(0, 1, 3, 4, 2, 5).flatten(3).flatten().nonzero().flatten()
        assert sorted(int(b.index[c]) for b in copies) == lit.tolist()
    # input 0, a 1-2, copies 3-10 (node 3 + q from a's channel q % 2), fc 11
    pairs = _all([0], [1, 2]) + [(1 + q % 2, 3 + q) for q in range(8)] + _all(range(3, 11), [11])
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(12, pairs))


# ------------------------------------------------------------------ nn.MultiheadAttention
class _SelfAttention(nn.Module):
    """A patch embedding (conv 1 -> 2, 2 x 2 patches of a 4 x 4 image: 4 tokens), residual
    self-attention (nn.MultiheadAttention, E = 2, one fused in_proj_weight) and a classifier on
    the mean token (2 -> 1)."""

    def __init__(self, need_weights=False):
        super().__init__()
        self.embed = nn.Conv2d(1, 2, 2, stride=2)
        self.attn = nn.MultiheadAttention(2, 1, batch_first=True)
        self.head = nn.Linear(2, 1)
        self.need_weights = need_weights

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        y, w = self.attn(t, t, t, need_weights=self.need_weights)
        out = self.head((t + y).mean(dim=1))
        return out + w.sum() if self.need_weights else out


def test_multihead_attention_is_a_fused_projection_attention_and_out_proj():
    torch.manual_seed(0)
    model = _SelfAttention()
    mask = torch.zeros(6, 2, dtype=torch.bool)
    mask[[0, 3, 5], [1, 0, 1]] = True  # q_0 <- e_1, k_1 <- e_0, v_1 <- e_1
    result = trace(model, {"attn.in_proj_weight": mask}, example_input=torch.randn(1, 1, 4, 4))
    assert dataflow_mismatches(result, model, torch.randn(1, 1, 4, 4)) == []
    g = result.graph
    # nodes: input 0, embed 1-2, attn.in_proj_weight 3-8 (q | k | v rows), attn.q 9-10, attn.k
    # 11-12, attn.v 13-14, attn.attention 15-16, add 17-18 (out_proj merged into it), head 19
    assert [(x.name, x.size) for x in g.groups] == [
        ("input", 1), ("embed", 2), ("attn.in_proj_weight", 6), ("attn.q", 2), ("attn.k", 2),
        ("attn.v", 2), ("attn.attention", 2), ("add", 2), ("head", 1)]
    proj = g.block("attn.in_proj_weight")
    assert (proj.kind, proj.spec.module, proj.spec.op) == ("sequential", "attn.in_proj_weight", "Linear")
    np.testing.assert_array_equal(proj.mask, mask.numpy())
    assert g.block("attn.out_proj").dst == "add" and g.block("attn.out_proj").spec.module == "attn.out_proj"
    pairs = (_all([0], [1, 2]) + [(1 + j, 3 + i) for i, j in zip(*np.nonzero(mask.numpy()))]
             + [(3, 9), (4, 10), (5, 11), (6, 12), (7, 13), (8, 14)]  # rows q | k | v as ranges
             + [(9, 15), (10, 16), (11, 15), (12, 16), (13, 15), (14, 16)]  # attention per feature
             + _all([15, 16], [17, 18]) + [(1, 17), (2, 18)] + _all([17, 18], [19]))
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(20, pairs))
    assert g.num_params == 8 + 3 + 4 + 2  # embed 2 x 1 x 2 x 2, the 3 kept, out_proj, head


class _CrossAttention(nn.Module):
    """Queries from one conv, keys and values from another of other widths (kdim = vdim = 3:
    separate q/k/v_proj_weight), the output into a classifier."""

    def __init__(self, fused=False):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 2, stride=2)
        self.b = nn.Conv2d(1, 2 if fused else 3, 2, stride=2)
        self.attn = nn.MultiheadAttention(2, 2, batch_first=True, **({} if fused else {"kdim": 3, "vdim": 3}))
        self.head = nn.Linear(2, 1)

    def forward(self, x):
        q = self.a(x).flatten(2).transpose(1, 2)
        m = self.b(x).flatten(2).transpose(1, 2)
        return self.head(self.attn(q, m, m, need_weights=False)[0].mean(dim=1))


def test_multihead_attention_with_separate_projections_reads_each_input():
    model = _CrossAttention()
    g = _traced(model, torch.randn(1, 1, 4, 4))
    blocks = {b.name: (b.src, b.dst, b.mask.shape) for b in g.blocks if b.kind == "sequential"}
    assert blocks["attn.q_proj_weight"] == ("a", "attn.q_proj_weight", (2, 2))
    assert blocks["attn.k_proj_weight"] == ("b", "attn.k_proj_weight", (2, 3))
    assert blocks["attn.v_proj_weight"] == ("b", "attn.v_proj_weight", (2, 3))
    assert blocks["attn.out_proj"] == ("attn.attention", "attn.out_proj", (2, 2))
    joins = sorted((b.src, b.spec.op) for b in g.blocks if b.dst == "attn.attention")
    assert joins == [("attn.k_proj_weight", "attention"), ("attn.q_proj_weight", "attention"),
                     ("attn.v_proj_weight", "attention")]


def test_multihead_attention_refusals_name_the_reason():
    with pytest.raises(ValueError, match="fused in_proj_weight"):
        trace(_CrossAttention(fused=True), example_input=torch.randn(1, 1, 4, 4))
    with pytest.raises(ValueError, match="attention weights"):
        trace(_SelfAttention(need_weights=True), example_input=torch.randn(1, 1, 4, 4))


# ------------------------------------------------------------------ branches on shapes
class _ShapeBranch(nn.Module):
    """A conv and BatchNorm, then (as timm's VGG head) an upsampling only when the map is smaller
    than 4 x 4, a conv and a classifier; ``on_values`` branches on a tensor value instead."""

    def __init__(self, on_values=False):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.b = nn.Conv2d(2, 2, 4)
        self.head = nn.Linear(2, 1)
        self.on_values = on_values

    def forward(self, x):
        h = self.bn(self.a(x))
        if (h.sum() > 0) if self.on_values else (h.shape[-2] < 4 or h.size(-1) < 4):
            h = F.interpolate(h, size=(max(4, h.shape[-2]), max(4, h.shape[-1])))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.b(h)), 1), 1))


@pytest.mark.parametrize("size", [2, 6])
def test_a_branch_on_shapes_follows_the_example_input(size):
    model = _ShapeBranch().train()
    x = torch.randn(1, 1, size, size)
    stats = [b.clone() for b in model.buffers()]  # evaluating the branch must not change them
    result = trace(model, example_input=x)
    assert dataflow_mismatches(result, model, x) == []
    assert [(g.name, g.size) for g in result.graph.groups] == [("input", 1), ("a", 2), ("b", 2), ("head", 1)]
    upsampled = any("interpolate" in n.name for n in result.module.graph.nodes)
    assert upsampled == (size < 4)  # the branch the example input takes
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))


def test_a_branch_on_tensor_values_is_refused():
    with pytest.raises(ValueError, match="control flow"):
        trace(_ShapeBranch(on_values=True), example_input=torch.randn(1, 1, 2, 2))


# ------------------------------------------------------------------ token-mixing Linear (Mixer)
class _Mixer(nn.Module):
    """A patch embedding (conv 1 -> 2, 2 x 2 patches of a 4 x 4 image: 4 tokens), a residual
    token-mixing MLP (Linear 4 -> 3 -> 4 over the token axis), a channel Linear 2 -> 3 and a
    classifier 3 -> 1 on the mean token."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 2, 2, stride=2)
        self.tok1, self.tok2 = nn.Linear(4, 3), nn.Linear(3, 4)
        self.chan = nn.Linear(2, 3)
        self.head = nn.Linear(3, 1)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)  # (B, 4 tokens, 2 channels)
        t = t + self.tok2(F.gelu(self.tok1(t.transpose(1, 2)))).transpose(1, 2)
        return self.head(F.gelu(self.chan(t)).mean(dim=1))


def test_token_mixing_linear_layers_alias_their_group():
    result = trace(_Mixer(), example_input=torch.randn(1, 1, 4, 4))
    assert dataflow_mismatches(result, _Mixer(), torch.randn(1, 1, 4, 4)) == []
    g = result.graph
    assert g.provenance["token_mixing"] == ["tok1", "tok2"]
    # nodes: input 0, embed 1-2 (the token MLP aliases it; its sum with t too), chan 3-5, head 6
    assert [(x.name, x.size) for x in g.groups] == [("input", 1), ("embed", 2), ("chan", 3), ("head", 1)]
    pairs = _all([0], [1, 2]) + _all([1, 2], [3, 4, 5]) + _all([3, 4, 5], [6])
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(7, pairs))


# ------------------------------------------------------------------ torch.stack of paths (SKNet)
class _SelectiveKernel(nn.Module):
    """Two paths (convs a, b: 1 -> 2) stacked on a new axis (B, 2, 2, h, w); their sum,
    pooled, through conv r (2 -> 1) and conv s (1 -> 4) gives per-path weights (view to
    (B, 2, 2, 1, 1), softmax over the paths); the paths times their weights summed over the
    paths; conv out (2 -> 1)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 1)
        self.r, self.s = nn.Conv2d(2, 1, 1), nn.Conv2d(1, 4, 1)
        self.out = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        paths = torch.stack([self.a(x), self.b(x)], dim=1)
        w = self.s(F.relu(self.r(paths.sum(1).mean((2, 3), keepdim=True))))
        w = torch.softmax(w.view(x.shape[0], 2, 2, 1, 1), dim=1)
        return self.out(torch.sum(paths * w, dim=1))


def test_stacked_paths_are_a_split_concatenation_summed_over_paths():
    g = _traced(_SelectiveKernel(), torch.randn(1, 1, 4, 4))
    # nodes: input 0, a 1-2, b 3-4, stack 5-8 (path-major: a's channels, then b's), its two
    # path ranges 9-10 and 11-12, their sum 13-14, r 15, the product 16-19 (s merged into it),
    # its path ranges 20-21 and 22-23, their sum 24-25, out 26
    assert [x.size for x in g.groups] == [1, 2, 2, 4, 2, 2, 2, 1, 4, 2, 2, 2, 1]
    pairs = (_all([0], [1, 2, 3, 4]) + [(1, 5), (2, 6), (3, 7), (4, 8)]
             + [(5, 9), (6, 10), (7, 11), (8, 12)] + [(9, 13), (10, 14), (11, 13), (12, 14)]
             + _all([13, 14], [15]) + _all([15], [16, 17, 18, 19]) + [(5, 16), (6, 17), (7, 18), (8, 19)]
             + [(16, 20), (17, 21), (18, 22), (19, 23)] + [(20, 24), (21, 25), (22, 24), (23, 25)]
             + _all([24, 25], [26]))
    np.testing.assert_array_equal(g.adjacency().toarray(), _adjacency(27, pairs))
    assert g.block("s").spec.op == "Conv2d" and g.groups[8].name == g.block("s").dst  # merged gate


def test_a_stack_after_the_channel_axis_is_refused():
    class Late(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 1), nn.Linear(2, 1)

        def forward(self, x):
            return self.c(torch.stack([self.a(x), self.b(x)], dim=-1).mean((2, 3, 4)))

    with pytest.raises(ValueError, match="stack"):
        trace(Late(), example_input=torch.randn(1, 1, 2, 2))

"""The torch bridge: masks enforced through training, skip forward rule, reload, round trip."""

import copy
import operator

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from n2ngraph.bridge import MaskError, N2NSkip, ResSkip, to_model  # noqa: E402
from n2ngraph.graph import EdgeBlock  # noqa: E402
from n2ngraph.n2nskip import add_n2nskip, add_resskip  # noqa: E402
from n2ngraph.pruning import prune  # noqa: E402
from n2ngraph.trace import to_graph  # noqa: E402

X_CONV = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _conv_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 5))


def _pruned_graph(model, x, density=0.3, skip=0.05, **kw):
    masks = prune(model, "random", density, seed=0)
    g = to_graph(model, masks, example_input=x)
    return g if skip == 0 else add_n2nskip(g, skip, seed=0, **kw)


def _masked_weights(model):
    """(effective weight, raw parameter, mask) of every masked layer and skip."""
    out = []
    for m in model.modules():
        if hasattr(m, "parametrizations") and "weight" in m.parametrizations:
            mask = m.parametrizations["weight"][0].mask
            out.append((m.weight, m.parametrizations["weight"].original, mask))
        elif isinstance(m, N2NSkip):
            taps = torch.ones_like(m.weight, dtype=torch.bool) if m.tap_mask is None else m.tap_mask
            out.append((m.kernel(), m.weight, taps))
    return out


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "amp"])
def test_masks_survive_training(opt):
    ref = _conv_net()
    model = to_model(_pruned_graph(ref, X_CONV, skip_kernel=3), ref, example_input=X_CONV[:1])
    assert any(isinstance(m, N2NSkip) for m in model.modules())
    params = list(model.parameters())
    if opt == "sgd" or opt == "amp":
        optim = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    elif opt == "adam":
        optim = torch.optim.Adam(params, lr=0.01, weight_decay=5e-4)
    else:
        optim = torch.optim.AdamW(params, lr=0.01, weight_decay=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=opt == "amp")
    before = [w.detach().clone() for w, _, _ in _masked_weights(model)]
    y = torch.randint(0, 10, (4,), generator=torch.Generator().manual_seed(1))
    for _ in range(20):
        optim.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opt == "amp"):
            loss = F.cross_entropy(model(X_CONV), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optim)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(optim)
        scaler.update()
    moved = False
    for (w, raw, mask), w0 in zip(_masked_weights(model), before):
        assert torch.count_nonzero(w.detach()[~mask]) == 0
        assert torch.count_nonzero(raw.detach()[~mask]) == 0
        moved |= not torch.equal(w.detach()[mask], w0[mask])
    assert moved  # training did change the kept weights


def test_dense_graph_changes_nothing():
    ref = _conv_net().eval()
    model = to_model(to_graph(ref, example_input=X_CONV), ref, example_input=X_CONV[:1]).eval()
    torch.testing.assert_close(model(X_CONV), ref(X_CONV))
    assert type(model) is type(ref)


def test_mlp_skip_forward_rule_by_hand():
    """a_2 = relu(z_2 + relu(W_s a_0)) for a skip input -> layer 2 (hand-computed)."""
    ref = _mlp()
    x = torch.randn(3, 20)
    g = to_graph(ref, example_input=x)
    g2 = add_n2nskip(g, 0.05, seed=0, wiring=2)
    model = to_model(g2, ref, example_input=x)
    skips = {(m.n2ngraph_src, m.n2ngraph_dst): m for m in model.modules() if isinstance(m, N2NSkip)}
    assert set(skips) == {("input", "2"), ("0", "4")}
    ws = {k: m.dense_weight().detach() for k, m in skips.items()}
    l0, l2, l4 = ref[0], ref[2], ref[4]
    a0 = x
    a1 = F.relu(l0(a0))
    a2 = F.relu(l2(a1) + F.relu(a0 @ ws[("input", "2")].T))
    out = l4(a2) + a1 @ ws[("0", "4")].T  # output layer: g is the identity
    torch.testing.assert_close(model(x), out)


def _skip_call(model, src, dst, x, *, train):
    """The N2NSkip ``src -> dst`` of ``model`` and what it saw in one forward pass of ``x``:
    ``a`` (source activation), ``z`` (target pre-activation) and ``out``."""
    skip = next(m for m in model.modules() if isinstance(m, N2NSkip)
                and (m.n2ngraph_src, m.n2ngraph_dst) == (src, dst))
    seen = {}
    handle = skip.register_forward_hook(lambda mod, args, out: seen.update(a=args[0], z=args[1], out=out))
    model.train(train)(x)
    handle.remove()
    return skip, seen


def test_conv_skip_across_pooling_has_target_shape():
    ref = _conv_net()
    g = _pruned_graph(ref, X_CONV, skip_kernel=3)
    model = to_model(g, ref, example_input=X_CONV[:1])
    skip, seen = _skip_call(model, "input", "4", X_CONV, train=False)
    assert seen["a"].shape == (4, 3, 16, 16) and seen["out"].shape == seen["z"].shape == (4, 16, 8, 8)
    # independent reference: average-pool 16x16 -> 8x8, then the masked 3x3 conv, then ReLU
    w = skip.dense_weight().detach()
    expected = seen["z"] + F.relu(F.conv2d(F.avg_pool2d(seen["a"], 2), w, padding=1))
    torch.testing.assert_close(seen["out"], expected)


def test_resskip_adds_pooled_zero_padded_identity():
    ref = _conv_net()
    g = add_resskip(to_graph(ref, example_input=X_CONV), start=0)
    model = to_model(g, ref, example_input=X_CONV[:1]).eval()
    res = next(m for m in model.modules() if isinstance(m, ResSkip))
    assert (res.n2ngraph_src, res.n2ngraph_dst) == ("input", "4")
    z = torch.randn(4, 16, 8, 8)
    out = res(X_CONV, z)
    torch.testing.assert_close(out[:, :3], z[:, :3] + F.avg_pool2d(X_CONV, 2))
    torch.testing.assert_close(out[:, 3:], z[:, 3:])
    assert sum(p.numel() for p in res.parameters()) == 0


def test_state_dict_reloads_and_deepcopy():
    ref = _conv_net()
    g = _pruned_graph(ref, X_CONV)
    a = to_model(g, ref, example_input=X_CONV[:1])
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.01)  # make the state differ from a fresh build
    b = to_model(g, ref, example_input=X_CONV[:1], seed=5)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    torch.testing.assert_close(b(X_CONV), a(X_CONV))
    c = copy.deepcopy(a)
    torch.testing.assert_close(c(X_CONV), a(X_CONV))


def test_sparse_init_uses_kept_fan_in_including_skips():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(400, 300), nn.ReLU(), nn.Linear(300, 300), nn.ReLU(), nn.Linear(300, 10))
    x = torch.zeros(1, 400)
    g = add_n2nskip(to_graph(ref, prune(ref, "expander", 0.1, seed=0), example_input=x), 0.02, seed=0)
    model = to_model(g, ref, init="sparse", example_input=x)
    fan = {}
    for b in g.blocks:
        fan[b.dst] = fan.get(b.dst, 0) + b.mask.sum(axis=1)
    layer = model.get_submodule("2")
    kept = layer.parametrizations["weight"][0].mask
    w = layer.weight.detach()
    # every kept weight divided by its unit's std sqrt(2 / fan_in) is a standard normal sample
    z = (w * torch.as_tensor(np.sqrt(fan["2"] / 2.0), dtype=torch.float32)[:, None])[kept]
    assert abs(float(z.std()) - 1.0) < 0.05 and abs(float(z.mean())) < 0.05
    assert fan["2"].max() > 30  # the skip into "2" adds to the fan-in: 0.1 * 300 = 30 sequential
    skip = next(m for m in model.modules() if isinstance(m, N2NSkip) and m.n2ngraph_dst == "2")
    zs = (skip.dense_weight().detach() * torch.as_tensor(np.sqrt(fan["2"] / 2.0), dtype=torch.float32)[:, None])
    assert abs(float(zs[torch.from_numpy(skip.n2ngraph_mask())].std()) - 1.0) < 0.15
    dense = to_model(g, ref, init="dense", example_input=x)
    torch.testing.assert_close(dense.get_submodule("2").weight, ref[2].weight * kept)


def test_round_trip_without_skips():
    ref = _conv_net()
    g = _pruned_graph(ref, X_CONV, skip=0)
    assert to_graph(to_model(g, ref, example_input=X_CONV[:1]), example_input=X_CONV) == g


@pytest.mark.parametrize("kind", ["mlp", "conv", "resskip"])
def test_round_trip_with_skips(kind):
    if kind == "mlp":
        ref, x = _mlp(), torch.randn(2, 20)
        g = _pruned_graph(ref, x)
    else:
        ref, x = _conv_net(), X_CONV
        g = _pruned_graph(ref, x, skip_kernel=3) if kind == "conv" else \
            add_resskip(_pruned_graph(ref, x, skip=0), start=0)
    back = to_graph(to_model(g, ref, example_input=x[:1]), example_input=x)
    assert back == g
    for b, b2 in zip(g.blocks, back.blocks):
        assert b.spec == b2.spec
        if b.kind == "n2nskip":  # init="dense" starts from the graph's pair weights
            np.testing.assert_allclose(b2.pair_weight, b.pair_weight, rtol=1e-6)


def test_bad_input():
    ref = _mlp()
    x = torch.zeros(1, 20)
    g = to_graph(ref, example_input=x)
    with pytest.raises(ValueError, match="init"):
        to_model(g, ref, init="kaiming")
    with pytest.raises(ValueError, match="not a Linear/Conv2d"):
        to_model(g, nn.Sequential(nn.Linear(20, 16)))
    other = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 6))
    with pytest.raises(ValueError, match="shape"):
        to_model(g, other)
    with pytest.raises(TypeError):
        to_model("g", ref)


def test_torch_compile_runs():
    ref = _mlp()
    x = torch.randn(3, 20)
    model = to_model(_pruned_graph(ref, x), ref, example_input=x).eval()
    compiled = torch.compile(model, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("order", ["pool-conv-act", "conv-bn-act-pool"])
def test_cuda(order):
    ref = _conv_net().cuda()
    x = X_CONV.cuda()
    model = to_model(_pruned_graph(ref, x, skip_kernel=3, skip_order=order), ref, example_input=x[:1])
    loss = model(x).sum()
    loss.backward()
    for w, _raw, mask in _masked_weights(model):
        assert w.is_cuda and torch.count_nonzero(w.detach()[~mask]) == 0
    cpu = to_model(_pruned_graph(ref.cpu(), X_CONV, skip_kernel=3, skip_order=order), ref.cpu(),
                   example_input=X_CONV[:1])
    cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    torch.testing.assert_close(model.eval()(x).cpu(), cpu.eval()(X_CONV), rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------- models with both skip orders
@pytest.mark.parametrize("order", ["pool-conv-act", "conv-bn-act-pool"])
def test_round_trip_conv_skips_both_orders(order):
    ref, x = _conv_net(), X_CONV
    g = _pruned_graph(ref, x, skip_kernel=3, skip_order=order)
    model = to_model(g, ref, example_input=x[:1])
    skips = [m for m in model.modules() if isinstance(m, N2NSkip)]
    assert skips and all(m.order == order for m in skips)
    assert all((m.norm is not None) == (order == "conv-bn-act-pool" and m.is_conv) for m in skips)
    back = to_graph(model, example_input=x)
    assert back == g
    for b, b2 in zip(g.blocks, back.blocks):
        assert b.spec == b2.spec
        if b.kind == "n2nskip":  # init="dense": the model starts from the graph's pair weights
            np.testing.assert_allclose(b2.pair_weight, b.pair_weight, rtol=1e-6)
    # after a step the read-back pair weights follow the current weights
    loss = model(x).square().mean()
    loss.backward()
    with torch.no_grad():
        for s in skips:
            s.weight.add_(1.0)
    again = to_graph(model, example_input=x)
    for s in skips:
        block = again.block(s.n2ngraph_block_name)
        expected = s.dense_weight().abs().sum(dim=(2, 3)) if s.is_conv else s.dense_weight().abs()
        np.testing.assert_allclose(block.pair_weight, expected.detach().numpy(), rtol=1e-6)


def test_paper_order_forward_by_hand():
    """conv at the source resolution -> BatchNorm -> ReLU -> max-pool, added to z."""
    ref = _conv_net()
    g = _pruned_graph(ref, X_CONV, skip_kernel=3, skip_order="conv-bn-act-pool")
    model = to_model(g, ref, example_input=X_CONV[:1])
    skip, seen = _skip_call(model, "input", "4", X_CONV, train=True)
    y = F.conv2d(seen["a"], skip.dense_weight().detach(), padding=1)
    y = F.relu(F.batch_norm(y, None, None, training=True))
    expected = seen["z"] + F.adaptive_max_pool2d(y, seen["z"].shape[-2:])
    torch.testing.assert_close(seen["out"], expected)


@pytest.mark.parametrize(("order", "mode"), [("pool-conv-act", "dense"), ("conv-bn-act-pool", "sparse")])
def test_torch_compile_conv_skips(order, mode):
    ref = _conv_net()
    model = to_model(_pruned_graph(ref, X_CONV, skip_kernel=3, skip_order=order), ref,
                     example_input=X_CONV[:1]).eval()
    for m in model.modules():
        if isinstance(m, N2NSkip):
            m.mode = mode
    compiled = torch.compile(model, backend="aot_eager")
    x = X_CONV.clone().requires_grad_(True)
    out = compiled(x)
    torch.testing.assert_close(out, model(X_CONV))
    (gx,) = torch.autograd.grad(out.sum(), x)
    x2 = X_CONV.clone().requires_grad_(True)
    (gx2,) = torch.autograd.grad(model(x2).sum(), x2)
    torch.testing.assert_close(gx, gx2)


# ------------------------------------------------------------- hard faults (stored values, loads)
def _parametrized(model):
    return [m for m in model.modules() if hasattr(m, "parametrizations") and "weight" in m.parametrizations]


def test_non_finite_values_in_pruned_storage_do_not_leak():
    ref = _conv_net().eval()
    g = _pruned_graph(ref, X_CONV, skip_kernel=3, density=0.3)
    g = g.replace(blocks=[b for b in g.blocks])
    model = to_model(g, ref, example_input=X_CONV[:1]).eval()
    clean = model(X_CONV).detach()
    with torch.no_grad():
        for i, layer in enumerate(_parametrized(model)):
            orig = layer.parametrizations["weight"].original
            orig[~layer.parametrizations["weight"][0].mask] = float("nan") if i % 2 else float("inf")
    for layer in _parametrized(model):
        w = layer.weight
        assert torch.count_nonzero(w[~layer.parametrizations["weight"][0].mask]) == 0
    torch.testing.assert_close(model(X_CONV), clean)


def test_fp16_rmsprop_step_keeps_pruned_weights_zero():
    """RMSprop in fp16: eps underflows, 0 / 0 puts NaN in the pruned storage; the effective
    weight must stay exactly zero there (multiplying by the mask gave NaN)."""
    ref = _mlp()
    x = torch.randn(8, 20)
    model = to_model(_pruned_graph(ref, x, density=0.3, skip=0), ref, example_input=x[:1]).half()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    y = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x.half()).float(), y).backward()
        opt.step()
    for layer in _parametrized(model):
        mask = layer.parametrizations["weight"][0].mask
        assert torch.count_nonzero(layer.weight.detach()[~mask]) == 0  # NaN counts as nonzero


def test_overflowing_gradients_never_reach_pruned_storage():
    """fp16 gradients overflow to inf; a pruned entry's gradient stays exactly 0 (inf * 0 is NaN
    when masking multiplies), so SGD with momentum and weight decay leaves it at 0."""
    ref = _mlp()
    x = torch.randn(8, 20) * 100
    model = to_model(_pruned_graph(ref, x, density=0.3, skip=0.05), ref, example_input=x[:1]).half()
    opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9, weight_decay=5e-4)
    for _ in range(2):
        opt.zero_grad()
        (model(x.half()).square().sum() * 1e4).backward()
        opt.step()
    assert any(not torch.isfinite(layer.parametrizations["weight"].original).all()
               for layer in _parametrized(model))  # the kept weights did overflow
    for layer in _parametrized(model):
        mask = layer.parametrizations["weight"][0].mask
        assert torch.count_nonzero(layer.parametrizations["weight"].original.detach()[~mask]) == 0
        assert torch.count_nonzero(layer.weight.detach()[~mask]) == 0


def test_loading_another_topology_is_refused():
    ref = _conv_net()
    pruned = to_model(_pruned_graph(ref, X_CONV, skip=0), ref, example_input=X_CONV[:1])
    dense = to_model(to_graph(ref, {n: torch.ones_like(p.weight, dtype=torch.bool) for n, p in
                                    [("0.weight", ref[0])]}, example_input=X_CONV), ref,
                     example_input=X_CONV[:1])
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    with pytest.raises(MaskError, match="layer '0'"):
        pruned.load_state_dict(dense.state_dict())
    with pytest.raises(ValueError, match="mask"):
        pruned.load_state_dict(dense.state_dict(), strict=False)
    with pytest.raises(MaskError):
        copy.deepcopy(pruned).load_state_dict(dense.state_dict())
    for k, v in pruned.state_dict().items():  # nothing was half-loaded into the refused layer
        if k.startswith("0."):
            assert torch.equal(v, before[k])
    # skips: another draw of the skip positions is another topology
    g1 = _pruned_graph(ref, X_CONV, skip_kernel=3)
    g2 = add_n2nskip(_pruned_graph(ref, X_CONV, skip=0), 0.05, seed=1, skip_kernel=3)
    m1 = to_model(g1, ref, example_input=X_CONV[:1])
    m2 = to_model(g2, ref, example_input=X_CONV[:1])
    with pytest.raises(MaskError, match="skip 'n2nskip:"):
        m1.load_state_dict(m2.state_dict())
    m1.load_state_dict(to_model(g1, ref, example_input=X_CONV[:1], seed=3).state_dict())  # same topology


# ------------------------------------------- branching models (inception): where a skip acts
class _BasicConv(nn.Module):
    """conv (no bias) -> BatchNorm -> relu, as torchvision's googlenet BasicConv2d."""

    def __init__(self, i, o, k):
        super().__init__()
        self.conv = nn.Conv2d(i, o, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(o)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _Inception(nn.Module):
    """Three branches on one input, concatenated: 1x1; 1x1 -> 3x3; 3x3 max-pool (stride 1, so
    it keeps the input's shape and aliases its group) -> 1x1."""

    def __init__(self, i, o):
        super().__init__()
        self.b1 = _BasicConv(i, o, 1)
        self.b2 = nn.Sequential(_BasicConv(i, o, 1), _BasicConv(o, o, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), _BasicConv(i, o, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b4(x)], 1)


class _InceptionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = _BasicConv(3, 6, 3)
        self.i1, self.i2 = _Inception(6, 4), _Inception(12, 4)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = self.i2(self.i1(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


X_INC = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))


def _inception(skips):
    """The reference net in eval mode, its pruned graph and that graph with only the skips named
    ``(src, dst)`` in ``skips`` (from all-pairs wiring); ``skips=None`` keeps them all."""
    torch.manual_seed(0)
    ref = _InceptionNet().eval()
    base = to_graph(ref, prune(ref, "random", 0.5, seed=0), example_input=X_INC)
    full = add_n2nskip(base, 0.1, seed=0, skip_kernel=1)
    keep = [b for b in full.blocks if b.kind != "n2nskip" or skips is None or (b.src, b.dst) in skips]
    return ref, base, full.replace(blocks=keep)


def _skip_calls(model):
    return {model.get_submodule(n.target).n2ngraph_block_name: n for n in model.graph.nodes
            if n.op == "call_module" and str(n.target).startswith("n2nskips.")}


def test_every_skip_of_a_branching_model_is_built_and_round_trips():
    ref, _, g = _inception(None)
    assert len(g.blocks_of_kind("n2nskip")) > 20
    model = to_model(g, ref, example_input=X_INC[:1])
    assert model(X_INC).shape == (2, 10)
    assert to_graph(model, example_input=X_INC) == g
    calls = _skip_calls(model)
    # the stem's group is also read by i1's branch-4 max-pool; a skip into i1's second 3x3
    # branch taps the stem's relu (what that branch reads), not the pool of the branch after it
    stem_skip = calls["n2nskip:stem.conv->i1.b2.1.conv"].args[0]
    assert stem_skip.op == "call_function" and stem_skip.target is F.relu
    # a skip from i1's concatenation into the logits taps the concatenation, which every branch
    # of i2 reads, not i2's branch-4 pool of it
    assert calls["n2nskip:i1.cat->fc"].args[0].target is torch.cat


def test_a_skip_across_branches_adds_what_the_target_branch_reads():
    ref, base, g = _inception({("stem.conv", "i1.b2.1.conv")})
    model = to_model(g, ref, example_input=X_INC[:1])
    plain = to_model(base, ref, example_input=X_INC[:1])  # same masked weights, no skip
    skip = model.n2nskips[0]
    with torch.no_grad():
        s = plain.stem(X_INC)
        b2 = plain.i1.b2
        z = b2[1].bn(b2[1].conv(b2[0](s)))
        y2 = skip(s, z)  # z + relu(skip(a)), then the branch's own relu
        i1 = torch.cat([plain.i1.b1(s), F.relu(y2), plain.i1.b4(s)], 1)
        expected = plain.fc(torch.flatten(F.adaptive_avg_pool2d(plain.i2(i1), 1), 1))
        torch.testing.assert_close(model(X_INC), expected)


def test_a_skip_into_a_concatenation_reaches_every_branch_that_reads_it():
    ref, base, g = _inception(set())
    donor = next(b for b in add_n2nskip(base, 0.1, seed=0, skip_kernel=1).blocks
                 if (b.src, b.dst) == ("input", "i1.b1.conv"))
    mask = np.zeros((12, 3, 1, 1), bool)
    mask[[0, 5, 11], [0, 1, 2]] = True
    block = EdgeBlock("n2nskip:input->i1.cat", "input", "i1.cat", "n2nskip", mask,
                      spec=donor.spec)
    position = {grp.name: i for i, grp in enumerate(g.groups)}  # blocks in order of their target
    g = g.replace(blocks=sorted(g.blocks + (block,), key=lambda b: (position[b.dst], bool(b.spec.added_by))))
    model = to_model(g, ref, example_input=X_INC[:1])
    plain = to_model(base, ref, example_input=X_INC[:1])
    skip = model.n2nskips[0]
    assert skip.n2ngraph_block_name == block.name
    with torch.no_grad():
        c = skip(X_INC, plain.i1(plain.stem(X_INC)))  # no non-linearity after a concatenation
        expected = plain.fc(torch.flatten(F.adaptive_avg_pool2d(plain.i2(c), 1), 1))
        torch.testing.assert_close(model(X_INC), expected)
    assert to_graph(model, example_input=X_INC) == g


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("googlenet", 224), ("inception_v3", 299)])
def test_torchvision_inception_models_get_skips_at_their_graphs_budget(name, size):
    """The issue's two cases (eval mode: the aux heads are outside the graph): the budget is the
    graph's, and N2NSkip modules are built, run and trace back to the graph."""
    from _zoo_support import import_torchvision

    from n2ngraph.pipeline import graph_layers, variant
    from n2ngraph.pruning import kept_count

    tv = import_torchvision()
    if tv is None:
        pytest.skip("torchvision is not importable")
    torch.manual_seed(0)
    model = tv.models.get_model(name, weights=None, init_weights=False).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="not in the traced graph"):
        g = variant(model, "random", 0.5, recipe="paper", seed=0, example_input=x)
    inside, outside = graph_layers(model, to_graph(model, example_input=x))
    assert outside and all("aux" in n.lower() for n in outside)
    assert g.num_params == kept_count(model, 0.5, granularity="channel", layers=inside,
                                      dense=g.provenance["dense_layers"])
    assert abs(g.density - 0.5) < 1e-4 and g.blocks_of_kind("n2nskip")
    back = to_model(g, model, example_input=x)
    with torch.no_grad():
        assert back(torch.cat([x, x])).shape == (2, 1000)
    assert to_graph(back, example_input=x) == g


# ------------------------------------- channels-last layers and tokens: skips on the channel axis
class _ChannelsLast(nn.Module):
    """stem conv (3 -> 6) on 5 x 5, then a channels-last MLP (permute, Linear 6 -> 12, GELU,
    Linear 12 -> 6, permute back) added to the stem's output, a conv and a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(6, 12), nn.Linear(12, 6)
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.fc2(F.gelu(self.fc1(x.permute(0, 2, 3, 1)))).permute(0, 3, 1, 2)
        x = F.relu(self.conv(x + y))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class _Tokens(nn.Module):
    """A patch embedding (conv 3 -> 6, 4 x 4 patches of an 8 x 8 image: 4 tokens), a residual
    token MLP (Linear 6 -> 12, GELU, Linear 12 -> 6) and a classifier on the mean token."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 4, stride=4)
        self.fc1, self.fc2 = nn.Linear(6, 12), nn.Linear(12, 6)
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = t + self.fc2(F.gelu(self.fc1(t)))
        return self.head(t.mean(dim=1))


@pytest.mark.parametrize("net, size", [(_ChannelsLast, 5), (_Tokens, 8)])
def test_skips_act_on_the_channel_axis_of_channels_last_and_token_layers(net, size):
    torch.manual_seed(0)
    ref = net().eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    g = add_n2nskip(to_graph(ref, prune(ref, "random", 0.5, seed=0), example_input=x), 0.2, seed=0,
                    skip_kernel=1)
    assert g.blocks_of_kind("n2nskip")
    model = to_model(g, ref, example_input=x[:1])
    assert model(x).shape == (2, 10)
    assert to_graph(model, example_input=x[:1]) == g
    axes = {s.n2ngraph_block_name: (s.src_axis, s.dst_axis) for s in model.n2nskips}
    assert axes["n2nskip:input->fc1"] == (1, -1)  # fc1 writes the last axis
    assert axes["n2nskip:fc1->head"] == (-1, 1)


def test_a_skip_into_a_channels_last_layer_by_hand():
    torch.manual_seed(0)
    ref = _ChannelsLast().eval()
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    base = to_graph(ref, prune(ref, "random", 0.5, seed=0), example_input=x)
    g = add_n2nskip(base, 0.2, seed=0, skip_kernel=1)
    g = g.replace(blocks=[b for b in g.blocks if b.kind != "n2nskip" or b.name == "n2nskip:input->fc1"])
    model, plain = to_model(g, ref, example_input=x[:1]), to_model(base, ref, example_input=x[:1])
    skip = model.n2nskips[0]
    with torch.no_grad():
        s = plain.stem(x)
        z = plain.fc1(s.permute(0, 2, 3, 1))  # (2, 5, 5, 12): the target's pre-activation
        w = torch.from_numpy(skip.n2ngraph_mask()).float() * skip.dense_weight()  # (12, 3, 1, 1)
        add = F.gelu(F.conv2d(x, w)).permute(0, 2, 3, 1)  # g(skip(a)), channels last
        y = plain.fc2(F.gelu(z + add)).permute(0, 3, 1, 2)
        out = F.relu(plain.conv(s + y))
        expected = plain.head(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
        torch.testing.assert_close(model(x), expected)


class _SqueezeExcite(nn.Module):
    """conv (3 -> 8) -> relu -> x * sigmoid(fc2(relu(fc1(pool(x))))) (a gate, 1 x 1 convs 8 -> 4
    -> 8) -> conv (8 -> 8) -> relu -> classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        x = F.relu(self.conv2(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_a_skip_into_a_gate_product_lands_on_the_product():
    torch.manual_seed(0)
    ref = _SqueezeExcite().eval()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    g = add_n2nskip(to_graph(ref, prune(ref, "random", 0.5, seed=0), example_input=x), 0.2, seed=0,
                    skip_kernel=1)
    product = [b.dst for b in g.blocks if b.spec.op == "mul"]
    into = [b for b in g.blocks_of_kind("n2nskip") if b.dst in product]
    assert into  # the gate's product group is a skip target
    model = to_model(g, ref, example_input=x[:1])
    assert model(x).shape == (2, 10)
    assert to_graph(model, example_input=x[:1]) == g
    calls = _skip_calls(model)
    for b in into:  # z of a skip into the product: the product itself (6 x 6), not the gate
        z = calls[b.name].args[1]
        while z.op == "call_module" and str(z.target).startswith("n2nskips."):
            z = z.args[1]
        assert z.target in (operator.mul, torch.mul) or z.target == "mul"


# ------------------------------- fused attention: nn.MultiheadAttention and torchvision Swin
class _Attention(nn.Module):
    """A patch embedding (conv 3 -> 8, 4 x 4 patches of an 8 x 8 image), two residual blocks of
    self-attention (nn.MultiheadAttention, fused in_proj_weight) and a token MLP, a classifier."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        t = t + self.fc2(F.gelu(self.fc1(t)))
        return self.head(t.mean(dim=1))


def test_multihead_attention_in_proj_weight_is_masked_and_round_trips():
    torch.manual_seed(0)
    ref = _Attention()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    masks = prune(ref, "random", 0.3, seed=0)
    g = add_n2nskip(to_graph(ref, masks, example_input=x), 0.05, seed=0, wiring="blocks")
    assert g.blocks_of_kind("n2nskip")
    model = to_model(g, ref, example_input=x[:1])
    attn = model.get_submodule("attn")
    mask = masks["attn.in_proj_weight"]
    assert torch.equal(attn.parametrizations["in_proj_weight"][0].mask, mask)
    assert not attn.in_proj_weight[~mask].any()
    model(x).square().sum().backward()
    assert not attn.parametrizations["in_proj_weight"].original.grad[~mask].any()
    assert to_graph(model, example_input=x[:1]) == g


def test_a_skip_into_a_group_inside_fused_attention_is_refused_by_name():
    ref = _Attention()
    x = torch.randn(1, 3, 8, 8)
    g = add_n2nskip(to_graph(ref, example_input=x), 0.05, seed=0)  # all pairs: into q, k, v too
    with pytest.raises(ValueError, match="computed inside a fused op"):
        to_model(g, ref, example_input=x)


def test_torchvision_swin_masks_its_qkv_and_round_trips():
    """A tiny torchvision Swin (its qkv weight is read by shifted_window_attention, a function):
    the masked qkv is found again in the model to_model returns."""
    from _zoo_support import import_torchvision

    tv = import_torchvision()
    if tv is None:
        pytest.skip("torchvision is not importable")
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    ref = SwinTransformer([2, 2], 8, [1, 1], [1, 2], [2, 2], num_classes=3).eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    masks = prune(ref, "random", 0.3, seed=0)
    g = add_n2nskip(to_graph(ref, masks, example_input=x), 0.05, seed=0, wiring="blocks", skip_kernel=1)
    assert g.blocks_of_kind("n2nskip")
    model = to_model(g, ref, example_input=x)
    assert model(x).shape == (1, 3)
    from n2ngraph.masks import masks_of

    qkv = "features.1.0.attn.qkv.weight"
    assert torch.equal(masks_of(model)[qkv], masks[qkv])
    assert to_graph(model, example_input=x) == g


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_b_32", "swin_t"])
def test_torchvision_attention_models_are_pruned_rebuilt_and_round_trip(name):
    """nn.MultiheadAttention (ViT) and shifted_window_attention (Swin): the fused q/k/v weight
    is in the budget and masked exactly; N2NSkip modules run and trace back to the graph."""
    from _zoo_support import import_torchvision

    from n2ngraph.masks import masks_of
    from n2ngraph.pipeline import variant

    tv = import_torchvision()
    if tv is None:
        pytest.skip("torchvision is not importable")
    torch.manual_seed(0)
    model = tv.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    g = variant(model, "random", 0.1, recipe="paper", seed=0, example_input=x)
    assert abs(g.density - 0.1) < 1e-4 and g.blocks_of_kind("n2nskip")
    qkv = "encoder.layers.encoder_layer_0.self_attention.in_proj_weight" if name.startswith("vit") \
        else "features.1.0.attn.qkv.weight"
    back = to_model(g, model, example_input=x)
    layer = qkv.removesuffix(".weight") if qkv.endswith(".weight") else qkv
    np.testing.assert_array_equal(masks_of(back)[qkv].numpy(), g.block(layer).mask)
    with torch.no_grad():
        assert back(torch.cat([x, x])).shape == (2, 1000)
    assert to_graph(back, example_input=x) == g

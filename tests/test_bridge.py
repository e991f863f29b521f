"""The torch bridge: masks enforced through training, skip forward rule, reload, round trip."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from n2ngraph.bridge import N2NSkip, ResSkip, to_model  # noqa: E402
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
            out.append((m.weight * m.mask, m.weight, m.mask))
    return out


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "amp"])
def test_masks_survive_training(opt):
    ref = _conv_net()
    model = to_model(_pruned_graph(ref, X_CONV, kernel_size=3), ref, example_input=X_CONV[:1])
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
    g2 = add_n2nskip(g, 0.05, seed=0, max_span=2)
    model = to_model(g2, ref, example_input=x)
    skips = {(m.n2ngraph_src, m.n2ngraph_dst): m for m in model.modules() if isinstance(m, N2NSkip)}
    assert set(skips) == {("input", "2"), ("0", "4")}
    ws = {k: (m.weight * m.mask).detach() for k, m in skips.items()}
    l0, l2, l4 = ref[0], ref[2], ref[4]
    a0 = x
    a1 = F.relu(l0(a0))
    a2 = F.relu(l2(a1) + F.relu(a0 @ ws[("input", "2")].T))
    out = l4(a2) + a1 @ ws[("0", "4")].T  # output layer: g is the identity
    torch.testing.assert_close(model(x), out)


def test_conv_skip_across_pooling_has_target_shape():
    ref = _conv_net()
    g = _pruned_graph(ref, X_CONV, kernel_size=3)
    model = to_model(g, ref, example_input=X_CONV[:1])
    skip = next(m for m in model.modules() if isinstance(m, N2NSkip)
                and (m.n2ngraph_src, m.n2ngraph_dst) == ("input", "4"))
    seen = {}
    handle = skip.register_forward_hook(lambda mod, args, out: seen.update(a=args[0], z=args[1], out=out))
    model.eval()(X_CONV)
    handle.remove()
    assert seen["a"].shape == (4, 3, 16, 16) and seen["out"].shape == seen["z"].shape == (4, 16, 8, 8)
    # independent reference: average-pool 16x16 -> 8x8, then the masked 3x3 conv, then ReLU
    w = (skip.weight * skip.mask).detach()
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
    zs = (skip.weight.detach() * torch.as_tensor(np.sqrt(fan["2"] / 2.0), dtype=torch.float32)[:, None])
    assert abs(float(zs[skip.mask].std()) - 1.0) < 0.15
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
        g = _pruned_graph(ref, x, kernel_size=3) if kind == "conv" else \
            add_resskip(_pruned_graph(ref, x, skip=0), start=0)
    assert to_graph(to_model(g, ref, example_input=x[:1]), example_input=x) == g


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
def test_cuda():
    ref = _conv_net().cuda()
    x = X_CONV.cuda()
    model = to_model(_pruned_graph(ref, x), ref, example_input=x[:1])
    loss = model(x).sum()
    loss.backward()
    for w, raw, mask in _masked_weights(model):
        assert w.is_cuda and torch.count_nonzero(w.detach()[~mask]) == 0

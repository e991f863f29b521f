"""Pruning at initialization: exact budgets, scores against independent references, invariants."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from n2ngraph.masks import prunable_weights, weight_of
from n2ngraph.pruning import METHODS, SCOPES, budget, prune, score

ALL = sorted(METHODS)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The models here are tiny: one intra-op thread avoids OpenMP spin contention on a shared
    2-core machine (measured 30x slower with 2 threads under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conv_net() -> nn.Module:
    """A small conv net with BatchNorm and dropout, seeded without touching the global state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, groups=2),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(16, 10),
        )


def conv_data(n=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def kept(masks):
    return {k: int(v.sum()) for k, v in masks.items()}


# ------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("density", [0.03, 0.5])
def test_exact_budget(method, scope, density):
    model = conv_net()
    masks = prune(
        model,
        method,
        density,
        data=conv_data(),
        scope=scope,
        seed=3,
        rounds=1 if method == "expander" else 3,
    )
    weights = {n: weight_of(m) for n, m in prunable_weights(model).items()}
    assert list(masks) == list(weights)
    for name, m in masks.items():
        assert m.dtype == torch.bool and m.shape == weights[name].shape
        assert m.device == weights[name].device
    if scope == "layerwise":
        for m in masks.values():
            n = m.numel()
            assert int(m.sum()) == math.floor(density * n + 0.5)
            assert abs(int(m.sum()) - density * n) <= 0.5
    else:
        total = sum(m.numel() for m in masks.values())
        assert sum(kept(masks).values()) == math.floor(density * total + 0.5)


@pytest.mark.parametrize("scope", SCOPES)
def test_ties_do_not_break_the_budget(scope):
    """Constant weights: every magnitude score ties, the budget still holds, seeds differ."""
    model = nn.Sequential(nn.Linear(10, 7), nn.Linear(7, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    a = prune(model, "magnitude", 0.3, scope=scope, seed=0)
    b = prune(model, "magnitude", 0.3, scope=scope, seed=0)
    c = prune(model, "magnitude", 0.3, scope=scope, seed=1)
    if scope == "layerwise":
        assert kept(a) == {"0.weight": 21, "1.weight": 6}
    else:
        assert sum(kept(a).values()) == round(0.3 * 91)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_budget_rounding():
    assert budget(10, 0.25) == 3 and budget(10, 0.24) == 2 and budget(7, 1.0) == 7
    assert budget(100, 0.001) == 0  # a layerwise budget can round to nothing (documented)


def test_density_one_keeps_everything():
    masks = prune(conv_net(), "snip", 1.0, data=conv_data())
    assert all(bool(m.all()) for m in masks.values())


@pytest.mark.parametrize("method", ["magnitude", "snip", "grasp", "synflow"])
def test_threshold_separates_kept_from_pruned(method):
    model = conv_net()
    data = conv_data()
    s = score(model, method, data=data)
    for scope in SCOPES:
        masks = prune(model, method, 0.2, data=data, scope=scope, rounds=1)
        groups = [(s[n].flatten(), masks[n].flatten()) for n in masks]
        if scope == "layerwise":
            for sc, m in groups:
                assert sc[m].min() >= sc[~m].max()
        else:
            sc = torch.cat([g[0].double() for g in groups])
            m = torch.cat([g[1] for g in groups])
            assert sc[m].min() >= sc[~m].max()


# --------------------------------------------------------------------------- expander
@pytest.mark.parametrize("scope", SCOPES)
def test_expander_equal_fan_in(scope):
    model = conv_net()
    masks = prune(model, "expander", 0.1, scope=scope, seed=5)
    for name, m in masks.items():
        per_unit = m.reshape(m.shape[0], -1).sum(1)  # conv: kept (in, kh, kw) taps per channel
        assert int(per_unit.max() - per_unit.min()) <= 1, name
    if scope == "layerwise":
        assert kept(masks)["4.weight"] == round(0.1 * 16 * 4 * 9)
    # each row is a uniform random subset: over many seeds every position gets picked
    hits = sum(prune(model, "expander", 0.1, seed=s)["10.weight"].int() for s in range(40))
    assert int((hits == 0).sum()) < 10


# ---------------------------------------------------------------------- SNIP by hand
def _two_layer_reference(model, x, y, temperature=1.0):
    """Gradients of mean cross-entropy of Linear-ReLU-Linear by the chain rule, in numpy."""
    w1 = model[0].weight.detach().double().numpy()
    b1 = model[0].bias.detach().double().numpy()
    w2 = model[2].weight.detach().double().numpy()
    b2 = model[2].bias.detach().double().numpy()
    xn = x.double().numpy()
    a = xn @ w1.T + b1
    h = np.maximum(a, 0)
    z = (h @ w2.T + b2) / temperature
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(z.shape[1])[y.numpy()]
    dz = (p - onehot) / len(xn) / temperature
    dw2 = dz.T @ h
    da = (dz @ w2) * (a > 0)
    dw1 = da.T @ xn
    return w1, w2, dw1, dw2


def test_snip_scores_match_hand_computation(tiny_mlp):
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.3, 0.1, -1.0, 2.0], [-1.0, 1.0, 2.0, 0.0]])
    y = torch.tensor([1, 0, 1])
    w1, w2, dw1, dw2 = _two_layer_reference(tiny_mlp, x, y)
    s = score(tiny_mlp, "snip", data=(x, y))
    np.testing.assert_allclose(s["0.weight"].numpy(), np.abs(w1 * dw1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(s["2.weight"].numpy(), np.abs(w2 * dw2), rtol=1e-5, atol=1e-7)
    # the masks keep the top of the hand scores over the whole model
    ref = np.concatenate([np.abs(w1 * dw1).ravel(), np.abs(w2 * dw2).ravel()])
    masks = prune(tiny_mlp, "snip", 6 / 18, data=(x, y), scope="global")
    got = torch.cat([masks["0.weight"].flatten(), masks["2.weight"].flatten()]).numpy()
    assert set(np.nonzero(got)[0]) == set(np.argsort(-ref)[:6])


def test_snip_averages_over_batches():
    """A DataLoader of equal batches scores like the single concatenated batch."""
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    a = score(model, "snip", data=loader)
    b = score(model, "snip", data=(x, y))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------- GraSP by torch.func
@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_scores_match_full_hessian(temperature):
    g = torch.Generator().manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 1, 0])
    names = ["0.weight", "2.weight"]
    shapes = [model.get_parameter(n).shape for n in names]
    sizes = [math.prod(s) for s in shapes]
    theta = torch.cat([model.get_parameter(n).detach().flatten() for n in names])
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in names}

    def loss(flat):
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(flat.split(sizes), shapes))))
        out = torch.func.functional_call(model, {**fixed, **parts}, (x,))
        return F.cross_entropy(out / temperature, y)

    grad = torch.func.grad(loss)(theta)
    hessian = torch.func.hessian(loss)(theta)
    paper_s = -theta * (hessian @ grad)  # Wang et al. eq. 8: S(-theta), prune the highest
    s = score(model, "grasp", data=(x, y), temperature=temperature)
    got = torch.cat([s[n].flatten() for n in names])
    torch.testing.assert_close(got, -paper_s, rtol=1e-7, atol=1e-12)
    masks = prune(model, "grasp", 0.5, data=(x, y), scope="global", temperature=temperature)
    kept_flags = torch.cat([masks[n].flatten() for n in names])
    assert paper_s[kept_flags].max() <= paper_s[~kept_flags].min()  # highest S removed


# ------------------------------------------------------------------------- SynFlow
def test_synflow_scores_closed_form(tiny_mlp):
    """R = 1^T |W2| |W1| 1 (biases excluded): dR/dW1[j,i] = sum_k |W2[k,j]|, etc."""
    with torch.no_grad():
        tiny_mlp[0].bias.fill_(3.0)  # must not enter the path sum
        tiny_mlp[2].weight[0, 1] = -0.7  # a negative weight: |w| is used
    w1 = tiny_mlp[0].weight.detach().double().abs()
    w2 = tiny_mlp[2].weight.detach().double().abs()
    s = score(tiny_mlp, "synflow", dtype="float64")  # float32 (the default) is compared in
    torch.testing.assert_close(s["0.weight"], w1 * w2.sum(0)[:, None])  # test_pruning_synflow.py
    torch.testing.assert_close(s["2.weight"], w2 * w1.sum(1)[None, :])
    # conservation (Tanaka et al., Theorem 2): every layer's scores sum to R
    r = w2.sum(0) @ w1.sum(1)
    for v in s.values():
        torch.testing.assert_close(v.sum(), r)


def test_synflow_ignores_batchnorm_statistics():
    """Trained BatchNorm statistics (large running means) must not zero SynFlow's scores."""
    model = conv_net()
    with torch.no_grad():
        model[1].running_mean.fill_(50.0)
        model[5].running_mean.fill_(50.0)
    s = score(model, "synflow", input_shape=(3, 8, 8))
    assert all(bool((v > 0).any()) for v in s.values())
    s0 = score(conv_net(), "synflow", input_shape=(3, 8, 8))
    for k in s:
        torch.testing.assert_close(s[k], s0[k])


def _collapse_setup():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(100, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 10)
        )
    g = torch.Generator().manual_seed(0)
    return model, (torch.randn(128, 100, generator=g), torch.randint(0, 10, (128,), generator=g))


def _has_path(masks):
    reach = None
    for m in masks.values():
        reach = m.double() if reach is None else m.double() @ reach
    return bool((reach > 0).any())


def test_synflow_avoids_layer_collapse_where_snip_collapses():
    """Tanaka et al. 2020: at extreme global density SNIP empties a layer, SynFlow does not."""
    model, data = _collapse_setup()
    snip = prune(model, "snip", 0.001, data=data, scope="global")
    synflow = prune(model, "synflow", 0.001, scope="global")
    assert min(kept(snip).values()) == 0 and not _has_path(snip)
    assert min(kept(synflow).values()) > 0 and _has_path(synflow)
    assert sum(kept(synflow).values()) == sum(kept(snip).values()) == 204  # round(0.001 * 204000)


def test_iterative_pruning_never_revives():
    """Iterative magnitude pruning keeps nested sets, so it equals one-shot magnitude."""
    model = conv_net()
    one = prune(model, "magnitude", 0.05, scope="global")
    many = prune(model, "magnitude", 0.05, scope="global", rounds=7)
    assert all(torch.equal(one[k], many[k]) for k in one)


# ---------------------------------------------------------------------- invariants
def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
    )


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("train", [True, False])
def test_model_unchanged_by_scoring(method, train):
    model = conv_net().train(train)
    model[4].bias.requires_grad_(False)
    model[10].weight.grad = torch.ones_like(model[10].weight)
    before = _snapshot(model)
    rng_state = torch.get_rng_state()
    prune(model, method, 0.1, data=conv_data(), rounds=1 if method == "expander" else 2)
    after = _snapshot(model)
    assert before[0].keys() == after[0].keys()
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k]), k  # weights, BN running stats
    assert before[1:3] == after[1:3]  # training modes, requires_grad
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(before[3], after[3]))
    assert torch.equal(rng_state, torch.get_rng_state())  # no global random state consumed


@pytest.mark.parametrize("method", ALL)
def test_same_seed_same_masks(method):
    model, data = conv_net(), conv_data()
    kw = {"data": data, "rounds": 1 if method == "expander" else 2}
    a = prune(model, method, 0.1, seed=11, **kw)
    b = prune(model, method, 0.1, seed=11, **kw)
    assert all(torch.equal(a[k], b[k]) for k in a)
    if method in ("random", "expander"):
        c = prune(model, method, 0.1, seed=12, **kw)
        assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("method", ["magnitude", "snip", "synflow", "random"])
def test_model_with_torch_prune_buffers(method):
    """A model already pruned with torch.nn.utils.prune scores as its dense twin."""
    from torch.nn.utils import prune as torch_prune

    model, data = conv_net(), conv_data()
    dense = copy.deepcopy(model)
    torch_prune.random_unstructured(model[0], "weight", amount=0.5)
    torch_prune.l1_unstructured(model[10], "weight", amount=0.3)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    a = prune(model, method, 0.2, data=data, rounds=2 if method == "synflow" else 1)
    b = prune(dense, method, 0.2, data=data, rounds=2 if method == "synflow" else 1)
    assert list(a) == list(b) == ["0.weight", "4.weight", "10.weight"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(v, dict(model.named_buffers())[k]) for k, v in buffers.items())
    assert hasattr(model[0], "weight_orig")  # the model keeps its pruning reparametrization


class _MaskParam(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


@pytest.mark.parametrize("also_bias", [False, True])
def test_model_with_parametrized_masks(also_bias):
    """Parametrized weights score as dense and the model's parametrization survives (the copy
    must not strip the class it shares with the model)."""
    from torch.nn.utils import parametrize

    model, data = conv_net().eval(), conv_data()
    dense = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    parametrize.register_parametrization(
        model[10], "weight", _MaskParam(torch.rand(10, 16, generator=g) > 0.5)
    )
    if also_bias:
        parametrize.register_parametrization(model[10], "bias", _MaskParam(torch.ones(10)))
    x = data[0]
    out = model(x)
    for method in ("snip", "synflow", "snip"):  # twice: the first call must leave no trace
        a = prune(model, method, 0.2, data=data, rounds=1)
        b = prune(dense, method, 0.2, data=data, rounds=1)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert parametrize.is_parametrized(model[10], "weight")
    assert torch.equal(model(x), out)


def test_prune_inside_no_grad():
    model, data = conv_net(), conv_data()
    with torch.no_grad():
        a = prune(model, "snip", 0.1, data=data)
    b = prune(model, "snip", 0.1, data=data)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["random", "expander", "magnitude"])
def test_same_masks_on_cpu_and_gpu(method):
    model = conv_net()
    cpu = prune(model, method, 0.1, scope="global", seed=4)
    gpu = prune(copy.deepcopy(model).cuda(), method, 0.1, scope="global", seed=4)
    assert all(g.device.type == "cuda" for g in gpu.values())
    assert all(torch.equal(cpu[k], gpu[k].cpu()) for k in cpu)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("density", [0, 0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_bad_density(density):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        prune(conv_net(), "random", density)


@pytest.mark.parametrize("density", ["0.5", True, None])
def test_density_type(density):
    with pytest.raises(TypeError, match="density"):
        prune(conv_net(), "random", density)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="valid methods are .*'snip'.*'synflow'"):
        prune(conv_net(), "lottery", 0.1)


def test_unknown_scope():
    with pytest.raises(ValueError, match="valid scopes are \\['layerwise', 'global'\\]"):
        prune(conv_net(), "random", 0.1, scope="per-unit")


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_data_required(method):
    with pytest.raises(ValueError, match=f"method '{method}' needs data"):
        prune(conv_net(), method, 0.1)


def test_no_prunable_weights():
    with pytest.raises(ValueError, match="no prunable weights"):
        prune(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), "random", 0.1)
    with pytest.raises(TypeError, match="nn.Module"):
        prune({"w": torch.ones(3)}, "random", 0.1)


def test_bad_data_and_options():
    model = conv_net()
    with pytest.raises(TypeError, match="inputs, targets"):
        prune(model, "snip", 0.1, data=torch.ones(3))
    with pytest.raises(TypeError, match="batch 0"):
        prune(model, "snip", 0.1, data=[torch.ones(3)])
    with pytest.raises(ValueError, match="no batches"):
        prune(model, "snip", 0.1, data=[])
    with pytest.raises(TypeError, match=r"unknown options \['temperature'\]"):
        prune(model, "snip", 0.1, data=conv_data(), temperature=3.0)
    with pytest.raises(ValueError, match="one-shot"):
        prune(model, "expander", 0.1, rounds=5)
    with pytest.raises(ValueError, match="rounds"):
        prune(model, "synflow", 0.1, rounds=0)
    with pytest.raises(ValueError, match="temperature"):
        prune(model, "grasp", 0.1, data=conv_data(), temperature=-1.0)


def test_score_masks_shape_checked():
    model = conv_net()
    with pytest.raises(ValueError, match="shape"):
        score(model, "magnitude", masks={"0.weight": torch.ones(3, 3, dtype=torch.bool)})
    masks = prune(model, "random", 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = score(model, "snip", data=conv_data(), masks=masks)
    assert all(bool((s[k][~masks[k]] == 0).all()) for k in s)  # pruned weights carry no flow
    # the scoring copy reads the model's own weights: masking them must not write through
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_nan_scores_are_reported():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="layer '1.weight'.*NaN"):
        prune(model, "magnitude", 0.5)
    with pytest.raises(ValueError, match="the model.*NaN"):
        prune(model, "magnitude", 0.5, scope="global")


@pytest.mark.parametrize("kind", ["uniform", "ties", "neg_inf", "sorted"])
def test_sampled_selection_is_exact(monkeypatch, kind):
    """The bracketed k-th largest equals numpy.partition's, for every k, ties and -inf included."""
    from n2ngraph.pruning import _threshold

    monkeypatch.setattr(_threshold, "_SAMPLED_SELECT_MIN", 1000)
    monkeypatch.setattr(_threshold, "_SAMPLE", 256)
    rng = np.random.default_rng(0)
    n = 20_000
    arr = {
        "uniform": rng.random(n),
        "ties": rng.integers(0, 7, n).astype(np.float64),
        "neg_inf": np.where(rng.random(n) < 0.7, -np.inf, rng.random(n)),
        "sorted": np.arange(n, dtype=np.float32),
    }[kind]
    for k in [1, 2, 17, 300, n // 3, n // 2, n - 301, n - 1, n, *rng.integers(1, n, 20)]:
        k = int(k)
        assert _threshold._kth_largest_numpy(arr, k) == np.partition(arr, n - k)[n - k], k


@pytest.mark.parametrize("drop_ties", [None, "zero", "all"])
def test_numpy_and_torch_selections_agree(drop_ties):
    """The top-k selection is written once over numpy (CPU) and torch (other devices): both
    keep the same entries with the same random draws. Run on CPU tensors: needs no GPU."""
    from n2ngraph.pruning import _threshold

    g = np.random.default_rng(0)
    arr = np.concatenate([g.integers(0, 5, 500), np.zeros(300)]).astype(np.float32)
    g.shuffle(arr)
    for k in [0, 1, 37, 250, 600, 799, 800, 900]:
        picks = [
            _threshold._select(data, k, np.random.default_rng(k), "x", drop_ties, 100, ops)
            for data, ops in [
                (arr, _threshold._NUMPY_OPS),
                (torch.from_numpy(arr), _threshold._TORCH_OPS),
            ]
        ]
        assert np.array_equal(picks[0], picks[1].numpy()), k
        if drop_ties is None:
            assert int(picks[0].sum()) == min(max(k, 0), arr.size), k


@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("method", ["magnitude", "synflow"])
def test_torch_array_ops_give_the_same_masks(monkeypatch, method, scope):
    """prune with the operations a GPU tensor gets (torch) equals prune with numpy's, rounds
    and zero ties included: what a CUDA run executes, checked on the CPU."""
    import n2ngraph.pruning
    from n2ngraph.pruning import _threshold

    def kwargs():
        return dict(scope=scope, seed=5, rounds=4) if method == "synflow" else dict(scope=scope)

    expected = prune(conv_net(), method, 0.05, **kwargs())
    torch_ops = lambda tensor: (tensor, _threshold._TORCH_OPS)  # noqa: E731
    monkeypatch.setattr(_threshold, "array_ops", torch_ops)
    monkeypatch.setattr(n2ngraph.pruning, "array_ops", torch_ops)
    got = prune(conv_net(), method, 0.05, **kwargs())
    assert all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("method", ["random", "expander", "magnitude"])
def test_kept_count_predicts_the_pruned_count(method, scope):
    from n2ngraph import models
    from n2ngraph.pruning import kept_count

    model = models.build_model("lenet300", seed=1)
    for density in (0.5, 0.1, 0.013):
        masks = prune(model, method, density, scope=scope, seed=3)
        assert kept_count(model, density, scope=scope) == sum(int(m.sum()) for m in masks.values())


# ------------------------------------------------------------- pruning a subset of the layers
@pytest.mark.parametrize("method", ["random", "expander", "magnitude", "synflow"])
@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_layers_restricts_the_budget_and_the_result(method, scope):
    from n2ngraph.pruning import kept_count

    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    options = {"rounds": 3} if method == "synflow" else {}
    masks = prune(model, method, 0.25, scope=scope, layers=["0", "4.weight"], seed=1, **options)
    assert list(masks) == ["0.weight", "4.weight"]  # layer 2 is left out: no mask
    kept = sum(int(m.sum()) for m in masks.values())
    # layerwise: round(0.25 * 200) + round(0.25 * 150) = 50 + 38; global: round(0.25 * 350) = 88
    assert kept == 88 == kept_count(model, 0.25, scope=scope, layers=["0", "4"])
    if scope == "layerwise":
        assert [int(m.sum()) for m in masks.values()] == [50, 38]


def test_layers_errors_name_the_bad_value():
    from n2ngraph.pruning import kept_count

    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"layers layer 'nope' is not a prunable layer.*\['0', '2'\]"):
        prune(model, "random", 0.5, layers=["nope"])
    with pytest.raises(ValueError, match="layers is empty"):
        kept_count(model, 0.5, layers=[])
    with pytest.raises(TypeError, match="got the string '0'"):
        kept_count(model, 0.5, layers="0")
    with pytest.raises(ValueError, match=r"dense layers \['2.weight'\] are not among the layers pruned"):
        prune(model, "random", 0.5, layers=["0"], dense=["2"])
    assert kept_count(model, 1.0, layers=["0"], dense=["0"]) == 12  # dense inside the layers


# ------------------------------------------------------- fused attention weights (MHA)
class _PatchAttention(nn.Module):
    """4x4 patches of an 8x8 image embedded by a conv, one MultiheadAttention, a Linear head.
    ``need_weights=True`` makes torch compute attention with explicit matmuls and softmax
    instead of ``scaled_dot_product_attention``."""

    def __init__(self, need_weights: bool = False):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.embed = nn.Conv2d(3, 8, 4, stride=4)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 5)
            with torch.no_grad():
                self.attn.in_proj_bias.uniform_(-1, 1)
        self.need_weights = need_weights

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        a, _ = self.attn(t, t, t, need_weights=self.need_weights)
        return self.head(a.mean(1))


def _attention_data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)


def test_grasp_through_scaled_dot_product_attention():
    """GraSP's Hessian-vector product needs a double backward, which the fused CPU attention
    kernels lack: scored with the math kernel, it equals GraSP through explicit softmax."""
    fused = score(_PatchAttention(), "grasp", data=_attention_data())
    explicit = score(_PatchAttention(need_weights=True), "grasp", data=_attention_data())
    assert "attn.in_proj_weight" in fused
    for k in fused:
        torch.testing.assert_close(fused[k], explicit[k], rtol=1e-4, atol=1e-12)


def test_synflow_zeroes_the_fused_weights_bias():
    """in_proj_bias is the bias of the prunable in_proj_weight: zeroed like any layer's bias
    (not replaced by |b|), so the scores do not depend on it."""
    model = _PatchAttention()
    zero_bias = copy.deepcopy(model)
    with torch.no_grad():
        zero_bias.attn.in_proj_bias.zero_()
    a = score(model, "synflow", input_shape=(3, 8, 8))
    b = score(zero_bias, "synflow", input_shape=(3, 8, 8))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fused_weight_under_torch_prune_is_scored_dense():
    from torch.nn.utils import prune as torch_prune

    model, data = _PatchAttention(), _attention_data()
    dense = score(model, "snip", data=data)
    torch_prune.random_unstructured(model.attn, "in_proj_weight", amount=0.5)
    masked = score(model, "snip", data=data)
    for k in dense:
        torch.testing.assert_close(masked[k], dense[k], rtol=0, atol=0)
    assert float(model.attn.in_proj_weight_mask.mean()) == 0.5  # the model's mask untouched
    assert hasattr(model.attn, "in_proj_weight_orig") and len(model.attn._forward_pre_hooks) == 1

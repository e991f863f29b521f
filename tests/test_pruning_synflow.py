"""SynFlow against Synaptic-Flow's rule: an independent re-implementation here, and (opt-in) the
reference's own code from a checkout named by N2NGRAPH_SYNFLOW_PEER."""

import copy
import math
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

from n2ngraph.masks import prunable_weights
from n2ngraph.pruning import prune, score
from n2ngraph.pruning._threshold import select_alive

PEER = os.environ.get("N2NGRAPH_SYNFLOW_PEER")


def small_net(batch_norm: bool = True) -> nn.Sequential:
    """8x8 input, three conv stages down to 1x1 (the last conv runs at 2x2 and a max-pool
    follows it: only the taps reaching the max get flow, the rest score exactly zero, as in
    VGG16 on 32x32 images), a Linear head. Biases are zero, as the reference initialises them
    (its linearised network takes ``|b|``, where the paper's path sum and n2ngraph have none)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        layers = []
        for c_in, c_out in ((3, 8), (8, 16), (16, 16)):
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
        model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(16, 10))
        for module in prunable_weights(model).values():
            nn.init.zeros_(module.bias)
        return model


def reference_rule(model, density, rounds, scope):
    """Synaptic-Flow's SynFlow loop, written out plainly (float64, no tie-breaking):

    every round, score ``|w * dR/dw|`` of the masked, linearised network (|parameters|,
    evaluation mode, all-ones input), then with ``d_r = density ** (r / rounds)`` prune the
    ``k = int((1 - d_r) * n)`` lowest scores of each layer (``local``) or of the model
    (``global``) by the rule ``score <= kthvalue(scores, k)`` (ties at the threshold all go).
    """
    work = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in work.state_dict().values():
            t.abs_()
    layers = list(prunable_weights(work).items())
    masks = {n: torch.ones_like(m.weight) for n, m in layers}
    for r in range(1, rounds + 1):
        for p in work.parameters():
            p.grad = None
        originals = {n: m.weight.detach().clone() for n, m in layers}
        with torch.no_grad():
            for n, m in layers:
                m.weight.mul_(masks[n])
        x = torch.ones(1, 3, 8, 8, dtype=torch.float64)
        work(x).sum().backward()
        scores = {n: (m.weight.grad * m.weight).detach().abs() for n, m in layers}
        with torch.no_grad():
            for n, m in layers:
                m.weight.copy_(originals[n])
        d_r = density ** (r / rounds)
        groups = [list(scores)] if scope == "global" else [[n] for n in scores]
        for names in groups:
            flat = torch.cat([scores[n].flatten() for n in names])
            k = int((1.0 - d_r) * flat.numel())
            if k >= 1:
                threshold = torch.kthvalue(flat, k).values
                for n in names:
                    masks[n] = (scores[n] > threshold).double()
    return {n: m.bool() for n, m in masks.items()}


def _final_counts_agree(model, density, scope):
    """Our final budget round(d n) equals the reference's n - int((1 - d) n) here."""
    sizes = [m.weight.numel() for m in prunable_weights(model).values()]
    groups = [sum(sizes)] if scope == "global" else sizes
    return all(math.floor(density * n + 0.5) == n - int((1.0 - density) * n) for n in groups)


@pytest.mark.parametrize(
    "scope,ref_scope,density",
    [("global", "global", 0.03), ("global", "global", 0.12), ("global", "global", 0.3),
     ("layerwise", "local", 0.25)],
)
@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_synflow_equals_the_reference_rule(scope, ref_scope, density, batch_norm, dtype):
    """Where the reference's final count is our exact budget, the masks are identical (in
    either precision: this small net has no near-ties that float32 rounding would swap)."""
    model = small_net(batch_norm)
    assert _final_counts_agree(model, density, scope)
    ours = prune(model, "synflow", density, scope=scope, input_shape=(3, 8, 8), dtype=dtype)
    ref = reference_rule(model, density, 100, ref_scope)
    for name in ours:
        assert torch.equal(ours[name], ref[name]), name


def test_batchnorm_scales_by_its_running_variance_as_the_reference():
    """Trained running variances (and |gamma|) scale each channel's flow as in the reference's
    evaluation-mode network; a running mean and beta, which the reference takes as |.|, are
    zeroed here (see prepare_synflow), so the comparison keeps them at zero."""
    model = small_net()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for bn in (model[1], model[5], model[9]):
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 4 + 0.1)
            bn.weight.copy_(torch.randn(bn.num_features, generator=g))
    ours = prune(model, "synflow", 0.12, scope="global", input_shape=(3, 8, 8), dtype="float64")
    ref = reference_rule(model, 0.12, 100, "global")
    assert all(torch.equal(ours[k], ref[k]) for k in ours)
    # identities in place of the BatchNorms would not give these masks
    plain = copy.deepcopy(model)
    for i in (1, 5, 9):
        plain[i] = nn.Identity()
    other = prune(plain, "synflow", 0.12, scope="global", input_shape=(3, 8, 8), dtype="float64")
    assert not all(torch.equal(ours[k], other[k]) for k in ours)


def test_final_budget_stays_exact_where_the_reference_falls_short():
    """Layerwise at 5%, the third conv has fewer weights with flow left than its budget: the
    reference keeps only those (ties at zero all go), we keep them and fill the exact budget
    with zero-flow weights drawn at random."""
    model = small_net()
    ours = prune(model, "synflow", 0.05, scope="layerwise", input_shape=(3, 8, 8))
    ref = reference_rule(model, 0.05, 100, "local")
    name = "8.weight"
    assert int(ref[name].sum()) < int(ours[name].sum()) == math.floor(0.05 * 2304 + 0.5)
    assert bool(ours[name][ref[name]].all())  # every weight the reference keeps
    assert all(torch.equal(ours[k], ref[k]) for k in ours if k != name)


def test_the_reference_drops_zero_scores_at_once(monkeypatch):
    """The model above has exactly-zero SynFlow scores in round 1, more than the first round
    prunes: the reference drops them all at once, and so do we by default (round 1 keeps
    fewer than its budget); ties="random" keeps the exact per-round budget instead."""
    import n2ngraph.pruning as pruning

    model = small_net()
    s = score(model, "synflow", input_shape=(3, 8, 8))
    n = sum(v.numel() for v in s.values())
    positive = sum(int((v > 0).sum()) for v in s.values())
    first_budget = n - int((1 - 0.05 ** (1 / 100)) * n)
    assert positive < first_budget  # the case that tells the two rules apart

    kept_per_round = []

    def spy(*args, **kwargs):
        keep = select_alive(*args, **kwargs)
        kept_per_round.append(sum(int(k.sum()) for k in keep.values()))
        return keep

    monkeypatch.setattr(pruning, "select_alive", spy)
    final = math.floor(0.05 * n + 0.5)
    for ties, first in (("drop", positive), ("drop-zero", positive), ("random", first_budget)):
        kept_per_round.clear()
        masks = prune(
            model, "synflow", 0.05, scope="global", input_shape=(3, 8, 8), ties=ties
        )
        assert kept_per_round[0] == first
        assert kept_per_round[-1] == sum(int(m.sum()) for m in masks.values()) == final


def test_round_budgets_follow_the_reference():
    from n2ngraph.pruning import _plan, _round_budgets

    model = small_net()
    modules = prunable_weights(model)
    plan = _plan(modules, 0.1, "global", "weight", ())
    n = sum(m.weight.numel() for m in modules.values())
    for r in (1, 37, 99):
        assert _round_budgets(plan, r, 100) == n - int((1.0 - 0.1 ** (r / 100)) * n)
    assert _round_budgets(plan, 100, 100) == math.floor(0.1 * n + 0.5)  # exact at the end
    local = _plan(modules, 0.1, "layerwise", "weight", ())
    assert _round_budgets(local, 5, 100) == {
        k: m.weight.numel() - int((1.0 - 0.1 ** 0.05) * m.weight.numel())
        for k, m in modules.items()
    }


def test_zero_ties_rule():
    """Zeros tied at the threshold are all dropped, but never below ``at_least``."""
    rng = np.random.default_rng(0)
    v = {"a": torch.tensor([0.0, 3.0, 0.0, 2.0, 0.0, 1.0])}
    for rule in ("zero", "all"):
        assert select_alive(v, {"a": 4}, rng, drop_ties=rule)["a"].tolist() == [
            False, True, False, True, False, True
        ]
        keep = select_alive(v, {"a": 4}, rng, drop_ties=rule, at_least={"a": 4})["a"]
        assert int(keep.sum()) == 4 and keep[[1, 3, 5]].all()
    assert int(select_alive(v, {"a": 4}, rng)["a"].sum()) == 4  # exact budget otherwise
    # a non-zero threshold is not affected
    assert int(select_alive(v, {"a": 2}, rng, drop_ties="zero")["a"].sum()) == 2
    # global: one threshold over the layers
    w = {"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([0.0, 0.0, 5.0])}
    out = select_alive(w, 4, rng, drop_ties="zero")
    assert out["a"].tolist() == [False, True] and out["b"].tolist() == [False, False, True]


def test_ties_straddling_the_budget_go_whole():
    """drop_ties="all" is the reference's ``score <= kthvalue(score, n - k)`` rule: of
    [5, 2, 2, 2, 1, 0] keeping 2, the reference's threshold is the 4th smallest (2), so only
    the 5 stays; keeping 4, the threshold is the 2nd smallest (1): no tie straddles, 4 stay."""
    rng = np.random.default_rng(0)
    v = {"a": torch.tensor([5.0, 2.0, 2.0, 2.0, 1.0, 0.0])}
    for k, kept in ((2, [True, False, False, False, False, False]),
                    (4, [True, True, True, True, False, False]),
                    (1, [True, False, False, False, False, False])):
        assert select_alive(v, {"a": k}, rng, drop_ties="all")["a"].tolist() == kept, k
        ref = v["a"] > torch.kthvalue(v["a"], 6 - k).values
        assert ref.tolist() == kept, k
    # never below at_least: the tie is then broken at random
    keep = select_alive(v, {"a": 2}, rng, drop_ties="all", at_least={"a": 2})["a"]
    assert int(keep.sum()) == 2 and bool(keep[0]) and int(keep[1:4].sum()) == 1
    assert int(select_alive(v, {"a": 2}, rng, drop_ties="zero")["a"].sum()) == 2


def test_ties_option():
    model = small_net()
    with pytest.raises(ValueError, match=r"ties must be one of \['drop', 'drop-zero', 'random'\]"):
        prune(model, "synflow", 0.1, input_shape=(3, 8, 8), ties="first")
    with pytest.warns(DeprecationWarning, match="ties='random'"):
        old = prune(model, "synflow", 0.1, rounds=5, input_shape=(3, 8, 8), zero_ties="random")
    new = prune(model, "synflow", 0.1, rounds=5, input_shape=(3, 8, 8), ties="random")
    assert all(torch.equal(old[k], new[k]) for k in old)
    with pytest.raises(TypeError, match="'expander' got unknown options \\['ties'\\]"):
        prune(model, "expander", 0.1, ties="drop")


def test_synflow_final_budget_is_exact_after_few_rounds():
    model = small_net()
    a = prune(model, "synflow", 0.3, scope="global", rounds=5, input_shape=(3, 8, 8))
    b = prune(model, "synflow", 0.1, scope="global", rounds=5, input_shape=(3, 8, 8))
    total = sum(m.numel() for m in a.values())
    assert sum(int(m.sum()) for m in b.values()) == math.floor(0.1 * total + 0.5)
    assert sum(int(m.sum()) for m in a.values()) == math.floor(0.3 * total + 0.5)


# ------------------------------------------------------------------------ precision
def deep_mlp(depth: int = 40, width: int = 6, scale: float = 3.0) -> nn.Sequential:
    """A deep MLP of positive weights, uniform in ``[scale, 2 scale)``: every layer multiplies
    the path sum by about ``1.5 * scale * width`` (27), so ``R`` is near ``27 ** depth``
    (1.8e57 for 40 layers: past float32's 3.4e38, within float64's 1.8e308)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers = []
        for _ in range(depth):
            layer = nn.Linear(width, width, bias=False)
            with torch.no_grad():
                layer.weight.uniform_(1.0, 2.0).mul_(scale)
            layers += [layer, nn.ReLU()]
        return nn.Sequential(*layers)


def test_synflow_scores_in_float32_by_default_close_to_float64():
    model = small_net()
    s32 = score(model, "synflow", input_shape=(3, 8, 8))
    s64 = score(model, "synflow", input_shape=(3, 8, 8), dtype="float64")
    assert all(v.dtype == torch.float32 for v in s32.values())
    assert all(v.dtype == torch.float64 for v in s64.values())
    for name in s32:
        assert torch.equal(s32[name] == 0, s64[name] == 0), name  # the same zero-flow weights
        assert bool(((s32[name].double() - s64[name]).abs() <= 1e-5 * s64[name]).all()), name
    assert torch.equal(score(model, "synflow", input_shape=(3, 8, 8), dtype=torch.float32)["0.weight"],
                       s32["0.weight"])


def test_synflow_falls_back_to_float64_where_float32_overflows():
    """R of deep_mlp is about 27 ** 40 = 1.8e57: float32 overflows, float64 does not. The
    default scores it in float64 (the same scores as asking for float64), and iterative
    pruning gives the float64 masks."""
    model = deep_mlp()
    ones = torch.ones(1, 6)
    with torch.no_grad():
        r32 = model(ones).sum()
        r64 = model.double()(ones.double()).sum()
    model.float()
    assert not torch.isfinite(r32) and 1e45 < float(r64) < 1e300
    s = score(model, "synflow")
    s64 = score(model, "synflow", dtype="float64")
    for name in s64:
        assert s[name].dtype == torch.float64 and torch.equal(s[name], s64[name]), name
    a = prune(model, "synflow", 0.2, rounds=10)
    b = prune(model, "synflow", 0.2, rounds=10, dtype="float64")
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_synflow_overflowing_float64_is_refused():
    with pytest.raises(ValueError, match="overflowed float64"):
        score(deep_mlp(depth=300), "synflow")


@pytest.mark.parametrize("bad", ["float16", torch.bfloat16, 32, None])
def test_synflow_dtype_is_checked(bad):
    with pytest.raises(ValueError, match=r"dtype must be one of \['float32', 'float64'\]"):
        score(small_net(), "synflow", input_shape=(3, 8, 8), dtype=bad)


# ----------------------------------------------------------------- the reference's code
def _peer_masks(model, density, scope, path):
    sys.path.insert(0, path)
    try:
        import prune as peer_prune
        from Layers import layers
        from Pruners import pruners
        from Utils import generator
    finally:
        sys.path.remove(path)
    peer_prune.tqdm = lambda iterable, **_: iterable
    work = copy.deepcopy(model)
    for module in prunable_weights(work).values():
        module.__class__ = layers.Conv2d if isinstance(module, nn.Conv2d) else layers.Linear
        module.register_buffer("weight_mask", torch.ones(module.weight.shape))
        if module.bias is not None:
            module.register_buffer("bias_mask", torch.ones(module.bias.shape))
    pruner = pruners.SynFlow(generator.masked_parameters(work, False, False, False))
    data = [(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))]
    peer_prune.prune_loop(
        work, nn.CrossEntropyLoss(), pruner, data, torch.device("cpu"), density,
        "exponential", scope, 100,
    )
    return {n: m.weight_mask.bool() for n, m in prunable_weights(work).items()}


@pytest.mark.skipif(
    not PEER, reason="set N2NGRAPH_SYNFLOW_PEER to a checkout of ganguli-lab/Synaptic-Flow"
)
@pytest.mark.parametrize(
    "scope,ref_scope,density", [("global", "global", 0.03), ("layerwise", "local", 0.25)]
)
def test_synflow_equals_the_reference_code(scope, ref_scope, density):
    if not os.path.isfile(os.path.join(PEER, "Pruners", "pruners.py")):
        pytest.skip(f"N2NGRAPH_SYNFLOW_PEER={PEER} holds no Pruners/pruners.py")
    model = small_net().eval()
    ours = prune(model, "synflow", density, scope=scope, input_shape=(3, 8, 8))
    ref = _peer_masks(model, density, ref_scope, PEER)
    for name in ours:
        assert torch.equal(ours[name], ref[name]), name

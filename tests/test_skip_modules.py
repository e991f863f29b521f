"""Skip modules and the mask parametrization against dense masked references built here with
plain torch ops (a weight-shaped tensor that is zero off the mask, ``F.conv2d`` / ``F.linear``,
``F.batch_norm``, adaptive pooling): forward, every gradient, BatchNorm running statistics, and
what a module stores."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils import parametrize  # noqa: E402

from n2ngraph.graph import EdgeBlock, LayerSpec  # noqa: E402
from n2ngraph.skip_modules import (  # noqa: E402
    DENSE_ABOVE,
    MaskError,
    MaskParametrization,
    N2NSkip,
    _max_pool_to,
    auto_mode,
)

GEN_SEED = 11


def _block(mask, *, order, src_hw=None, dst_hw=None, stride=1):
    """An n2nskip block as ``add_n2nskip`` writes it (padding f // 2)."""
    common = {"added_by": "add_n2nskip", "span": 2, "order": order, "init_seed": 0}
    if mask.ndim == 4:
        f = mask.shape[-1]
        spec = LayerSpec(op="Conv2d", kernel_size=(f, f), stride=(stride, stride), padding=(f // 2, f // 2),
                         dilation=(1, 1), input_size=src_hw, output_size=dst_hw,
                         norm="batch" if order == "conv-bn-act-pool" else None, **common)
    else:
        spec = LayerSpec(op="Linear", output_size=(1, 1) if src_hw else None,
                         input_size=src_hw or None, **common)
    return EdgeBlock("n2nskip:s->d", "s", "d", "n2nskip", mask, spec=spec)


def _mask(shape, density, whole_kernels, seed):
    rng = np.random.default_rng(seed)
    if whole_kernels and len(shape) == 4:
        pairs = rng.random(shape[:2]) < density
        return np.broadcast_to(pairs[:, :, None, None], shape).copy()
    return rng.random(shape) < density


def _reference(a, z, w, skip, *, order, act, running=None):
    """``z + skip(a)`` from the dense weight ``w`` (zero off the mask) with plain torch ops."""
    g = {"relu": F.relu, "identity": lambda t: t, "tanh": torch.tanh}[act]
    if w.dim() == 2:
        x = a.mean(dim=(2, 3)) if a.dim() == 4 else a
        return z + g(F.linear(x, w))
    pad, stride = w.shape[-1] // 2, skip.stride
    if order == "pool-conv-act":
        x = a if stride != (1, 1) else F.adaptive_avg_pool2d(a, z.shape[-2:])
        return z + g(F.conv2d(x, w, padding=pad, stride=stride))
    y = F.conv2d(a, w, padding=pad, stride=stride)
    mean, var = running if running is not None else (None, None)
    y = F.batch_norm(y, mean, var, skip.norm.weight, skip.norm.bias, training=skip.training,
                     momentum=skip.norm.momentum, eps=skip.norm.eps)
    y = g(y)
    if y.shape[-2:] != z.shape[-2:]:
        y = F.adaptive_max_pool2d(y, z.shape[-2:])
    return z + y


def _dense_from_kept(skip):
    """The dense weight rebuilt independently of ``skip.dense_weight`` (a Python loop)."""
    w = torch.zeros(skip.mask_shape, dtype=skip.weight.dtype)
    kept = skip.kernel().detach()
    for k, (d, s) in enumerate(zip(skip.dst_index.tolist(), skip.src_index.tolist())):
        w[d, s] = kept[k].reshape(w[d, s].shape)
    return w


CONV_CASES = [
    # (C_dst, C_src, f, src hw, dst hw, whole kernels, density, g[, stride])
    (8, 5, 3, (8, 8), (8, 8), True, 0.3, "relu"),
    (8, 5, 3, (8, 8), (4, 4), True, 0.2, "relu"),      # divisible: max_pool2d path
    (6, 4, 3, (7, 7), (3, 3), False, 0.4, "relu"),     # not divisible: adaptive path
    (4, 6, 1, (6, 6), (3, 3), False, 0.3, "tanh"),
    (3, 3, 5, (5, 5), (5, 5), False, 0.5, "identity"),
    (12, 10, 3, (4, 4), (2, 2), True, 0.04, "relu"),   # a few pairs out of 120
    (4, 3, 3, (4, 4), (4, 4), True, 0.0, "relu"),      # no kept pair
    (6, 4, 3, (8, 8), (8, 8), True, 0.3, "relu"),
    (6, 4, 3, (8, 8), (4, 4), False, 0.2, "relu"),
    (5, 7, 1, (9, 9), (3, 3), False, 0.25, "relu"),    # 1x1, pooled by 3
    (3, 2, 5, (7, 7), (7, 7), False, 0.5, "identity"),
    (16, 8, 3, (6, 6), (3, 3), True, 0.05, "relu"),
    (8, 5, 3, (8, 8), (4, 4), True, 0.3, "relu", 2),   # strided (a ResNet block's skip)
    (6, 4, 3, (7, 7), (4, 4), False, 0.4, "tanh", 2),  # strided, odd size, partial kernels
]


@pytest.mark.parametrize("mode", ["sparse", "csr", "dense"])
@pytest.mark.parametrize("order", ["conv-bn-act-pool", "pool-conv-act"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_skip_forward_and_gradients_match_dense_masked_reference(case, order, mode):
    c_dst, c_src, f, src_hw, dst_hw, whole, density, act, *stride = case
    mask = _mask((c_dst, c_src, f, f), density, whole, seed=c_dst + 7 * f)
    block = _block(mask, order=order, src_hw=src_hw, dst_hw=dst_hw, stride=stride[0] if stride else 1)
    skip = N2NSkip(block, act, mode=mode).double()
    pairs = mask.any(axis=(2, 3))  # the module stores the kept pairs only
    assert skip.weight.numel() == int(pairs.sum()) * f * f
    assert (skip.tap_mask is None) == bool(whole or mask[pairs].all())
    assert np.array_equal(skip.n2ngraph_mask(), mask)
    gen = torch.Generator().manual_seed(GEN_SEED)
    with torch.no_grad():
        skip.weight.copy_(torch.randn(skip.weight.shape, generator=gen, dtype=torch.float64))
        if skip.norm is not None:
            skip.norm.weight.uniform_(-1.5, 1.5, generator=gen)  # negative scales too
            skip.norm.bias.uniform_(-0.5, 0.5, generator=gen)
    w = _dense_from_kept(skip).requires_grad_(True)
    m = torch.from_numpy(mask)
    assert torch.count_nonzero(w.detach()[~m]) == 0

    a = torch.randn(3, c_src, *src_hw, generator=gen, dtype=torch.float64, requires_grad=True)
    z = torch.randn(3, c_dst, *dst_hw, generator=gen, dtype=torch.float64, requires_grad=True)
    running = None
    if skip.norm is not None:
        running = (skip.norm.running_mean.clone(), skip.norm.running_var.clone())
    out = skip(a, z)
    ref = _reference(a, z, w, skip, order=order, act=act, running=running)
    torch.testing.assert_close(out, ref)
    if running is not None:  # the running statistics moved as F.batch_norm's did
        torch.testing.assert_close(skip.norm.running_mean, running[0])
        torch.testing.assert_close(skip.norm.running_var, running[1])

    up = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    inputs = (a, z, skip.weight) + ((skip.norm.weight, skip.norm.bias) if skip.norm is not None else ())
    got = torch.autograd.grad((out * up).sum(), inputs, allow_unused=True)
    exp = torch.autograd.grad((ref * up).sum(), (a, z, w) + inputs[3:], allow_unused=True)
    torch.testing.assert_close(got[0] if got[0] is not None else torch.zeros_like(a), exp[0])
    torch.testing.assert_close(got[1], exp[1])
    for g_mod, g_ref in zip(got[3:], exp[3:]):
        torch.testing.assert_close(g_mod, g_ref)
    if skip.weight.numel():
        gw = torch.zeros(mask.shape, dtype=torch.float64)
        gw[skip.dst_index, skip.src_index] = got[2].reshape(-1, f, f)
        torch.testing.assert_close(gw, exp[2] * m)  # pruned taps: exactly zero gradient
        assert torch.count_nonzero(gw[~m]) == 0


@pytest.mark.parametrize("order", ["conv-bn-act-pool", "pool-conv-act"])
def test_conv_skip_in_eval_mode_uses_running_statistics(order):
    mask = _mask((6, 4, 3, 3), 0.4, True, seed=2)
    skip = N2NSkip(_block(mask, order=order, src_hw=(6, 6), dst_hw=(3, 3))).double()
    gen = torch.Generator().manual_seed(GEN_SEED)
    with torch.no_grad():
        skip.weight.normal_(generator=gen)
        if skip.norm is not None:
            skip.norm.running_mean.uniform_(-1, 1, generator=gen)
            skip.norm.running_var.uniform_(0.5, 2, generator=gen)
    skip.eval()
    a = torch.randn(2, 4, 6, 6, generator=gen, dtype=torch.float64)
    z = torch.randn(2, 6, 3, 3, generator=gen, dtype=torch.float64)
    running = None if skip.norm is None else (skip.norm.running_mean, skip.norm.running_var)
    ref = _reference(a, z, _dense_from_kept(skip), skip, order=order, act="relu", running=running)
    torch.testing.assert_close(skip(a, z), ref)


@pytest.mark.parametrize("mode", ["sparse", "dense"])
@pytest.mark.parametrize(("shape", "src_hw", "act"), [((7, 11), None, "relu"), ((5, 9), None, "identity"),
                                                      ((6, 4), (5, 5), "relu"), ((3, 8), (4, 4), "tanh")])
def test_linear_skip_forward_and_gradients_match_dense_masked_reference(shape, src_hw, act, mode):
    mask = _mask(shape, 0.35, False, seed=shape[0])
    skip = N2NSkip(_block(mask, order="pool-conv-act", src_hw=src_hw), act, mode=mode).double()
    gen = torch.Generator().manual_seed(GEN_SEED)
    with torch.no_grad():
        skip.weight.normal_(generator=gen)
    assert skip.weight.numel() == mask.sum()  # one stored value per kept weight
    w = _dense_from_kept(skip).requires_grad_(True)
    a = torch.randn(4, shape[1], *(src_hw or ()), generator=gen, dtype=torch.float64, requires_grad=True)
    z = torch.randn(4, shape[0], generator=gen, dtype=torch.float64, requires_grad=True)
    out = skip(a, z)
    ref = _reference(a, z, w, skip, order="pool-conv-act", act=act)
    torch.testing.assert_close(out, ref)
    ga, gz, gw = torch.autograd.grad(out.square().sum(), (a, z, skip.weight))
    ra, rz, rw = torch.autograd.grad(ref.square().sum(), (a, z, w))
    torch.testing.assert_close(ga, ra)
    torch.testing.assert_close(gz, rz)
    torch.testing.assert_close(gw, rw[skip.dst_index, skip.src_index])


@pytest.mark.parametrize("order", ["conv-bn-act-pool", "pool-conv-act"])
def test_partly_kept_kernels_ignore_what_the_pruned_taps_store(order):
    """A pair keeping some taps only: its pruned taps hold NaN, the output and gradients do not."""
    mask = _mask((5, 4, 3, 3), 0.5, False, seed=4)
    skip = N2NSkip(_block(mask, order=order, src_hw=(6, 6), dst_hw=(6, 6))).double()
    assert skip.tap_mask is not None
    gen = torch.Generator().manual_seed(GEN_SEED)
    with torch.no_grad():
        skip.weight.normal_(generator=gen)
    a = torch.randn(2, 4, 6, 6, generator=gen, dtype=torch.float64)
    z = torch.randn(2, 5, 6, 6, generator=gen, dtype=torch.float64)
    clean = skip(a, z)
    with torch.no_grad():
        skip.weight.masked_fill_(~skip.tap_mask, float("nan"))
    out = skip(a, z)
    torch.testing.assert_close(out, clean)
    (gw,) = torch.autograd.grad(out.sum(), skip.weight)
    assert torch.isfinite(gw).all() and torch.count_nonzero(gw[~skip.tap_mask]) == 0


@pytest.mark.parametrize(("hw", "size"), [((8, 8), (4, 4)), ((12, 6), (3, 2)), ((7, 7), (3, 3)),
                                          ((5, 8), (5, 2)), ((4, 4), (4, 4))])
def test_max_pool_to_is_adaptive_max_pooling(hw, size):
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(2, 3, *hw, generator=gen, dtype=torch.float64, requires_grad=True)
    up = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64)
    out, ref = _max_pool_to(y, size), F.adaptive_max_pool2d(y, size)
    assert torch.equal(out, ref)
    (g1,) = torch.autograd.grad((out * up).sum(), y)
    (g2,) = torch.autograd.grad((ref * up).sum(), y)
    assert torch.equal(g1, g2)


def test_storage_grows_with_kept_pairs_and_auto_mode_follows_the_threshold():
    sparse_mask = _mask((256, 256, 3, 3), 0.01, True, seed=0)
    skip = N2NSkip(_block(sparse_mask, order="conv-bn-act-pool", src_hw=(4, 4), dst_hw=(4, 4)))
    pairs = int(sparse_mask.any(axis=(2, 3)).sum())
    stored = sum(t.numel() for t in [*skip.parameters(recurse=False), *skip.buffers(recurse=False)])
    assert stored == pairs * (9 + 2)  # kernels + destination and source indices
    assert stored < 0.02 * sparse_mask.size
    assert skip.mode == "sparse" and pairs / 256**2 < DENSE_ABOVE["Conv2d"]
    dense_mask = _mask((16, 16, 3, 3), 2 * DENSE_ABOVE["Conv2d"], True, seed=1)
    dense_ish = N2NSkip(_block(dense_mask, order="conv-bn-act-pool", src_hw=(4, 4), dst_hw=(4, 4)))
    assert dense_ish.mode == "dense"  # computes with a dense kernel, stores the kept pairs still
    assert dense_ish.weight.dim() == 4 and dense_ish.weight.shape[0] == int(dense_mask.any(axis=(2, 3)).sum())
    lin = _mask((64, 64), 2 * DENSE_ABOVE["Linear"], False, seed=2)
    assert N2NSkip(_block(lin, order="pool-conv-act")).mode == "dense"
    with pytest.raises(ValueError, match="mode 'fast'"):
        N2NSkip(_block(lin, order="pool-conv-act"), mode="fast")
    with pytest.raises(ValueError, match="activation 'swish'"):
        N2NSkip(_block(lin, order="pool-conv-act"), "swish")


@pytest.mark.parametrize(("shape", "whole"), [((6, 5, 3, 3), False), ((6, 5, 3, 3), True), ((7, 4), False)])
def test_set_dense_weight_keeps_the_kept_entries_only(shape, whole):
    mask = _mask(shape, 0.4, whole, seed=9)
    skip = N2NSkip(_block(mask, order="conv-bn-act-pool", src_hw=(4, 4) if len(shape) == 4 else None,
                          dst_hw=(4, 4) if len(shape) == 4 else None)).double()
    dense = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    skip.set_dense_weight(dense)
    assert torch.equal(skip.dense_weight().detach(), dense * torch.from_numpy(mask))
    assert torch.equal(_dense_from_kept(skip), dense * torch.from_numpy(mask))
    with pytest.raises(ValueError, match="weight shape"):
        skip.set_dense_weight(dense[:1])


def test_skip_state_dict_round_trip_and_other_positions_refused():
    mask = _mask((6, 5, 3, 3), 0.3, False, seed=5)
    block = _block(mask, order="conv-bn-act-pool", src_hw=(4, 4), dst_hw=(4, 4))
    skip, twin = N2NSkip(block), N2NSkip(block)
    with torch.no_grad():
        skip.weight.normal_(generator=torch.Generator().manual_seed(0))
    twin.load_state_dict(skip.state_dict())
    assert torch.equal(twin.weight, skip.weight)
    other = N2NSkip(_block(_mask((6, 5, 3, 3), 0.3, False, seed=6), order="conv-bn-act-pool",
                           src_hw=(4, 4), dst_hw=(4, 4)))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(MaskError, match="kept positions"):
        other.load_state_dict(skip.state_dict(), strict=False)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())  # nothing copied


# ------------------------------------------------------------------- MaskParametrization
def _masked_linear(mask, seed=0):
    torch.manual_seed(seed)
    layer = nn.Linear(mask.shape[1], mask.shape[0])
    with torch.no_grad():
        layer.weight.masked_fill_(~mask, 0)
    parametrize.register_parametrization(layer, "weight", MaskParametrization(mask))
    return layer


def test_mask_parametrization_all_ones_changes_nothing():
    torch.manual_seed(0)
    plain = nn.Linear(6, 4)
    masked = _masked_linear(torch.ones(4, 6, dtype=torch.bool))
    with torch.no_grad():
        masked.parametrizations["weight"].original.copy_(plain.weight)
        masked.bias.copy_(plain.bias)
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(masked(x), plain(x), rtol=0, atol=0)


def test_mask_parametrization_holds_through_sgd_momentum_and_weight_decay():
    mask = torch.from_numpy(_mask((5, 7), 0.4, False, seed=3))
    layer = _masked_linear(mask)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        opt.zero_grad()
        layer(torch.randn(8, 7, generator=gen)).square().sum().backward()
        assert torch.count_nonzero(layer.parametrizations["weight"].original.grad[~mask]) == 0
        opt.step()
    raw = layer.parametrizations["weight"].original.detach()
    assert torch.count_nonzero(raw[~mask]) == 0 and torch.count_nonzero(layer.weight[~mask]) == 0
    assert torch.count_nonzero(raw[mask]) == int(mask.sum())


def test_mask_parametrization_ignores_non_finite_pruned_storage():
    mask = torch.from_numpy(_mask((4, 6), 0.5, False, seed=4))
    layer = _masked_linear(mask)
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    clean = layer(x).detach()
    with torch.no_grad():
        layer.parametrizations["weight"].original.masked_fill_(~mask, float("inf"))
    out = layer(x)
    torch.testing.assert_close(out, clean, rtol=0, atol=0)
    out.sum().backward()
    assert torch.count_nonzero(layer.parametrizations["weight"].original.grad[~mask]) == 0


def test_mask_parametrization_state_dict_and_refusal():
    mask = torch.from_numpy(_mask((4, 6), 0.5, False, seed=5))
    layer, twin = _masked_linear(mask, seed=0), _masked_linear(mask, seed=1)
    twin.load_state_dict(layer.state_dict())
    assert torch.equal(twin.weight, layer.weight)
    other = _masked_linear(~mask)
    with pytest.raises(MaskError, match="mask"):
        other.load_state_dict(layer.state_dict())


# ------------------------------------------------------------------- how a conv skip computes
def test_auto_mode_prefers_the_csr_product_where_the_cost_model_does():
    # VGG19's paper-recipe skips: 10% of the pairs, 27-53 pairs per source channel
    assert auto_mode((256, 64, 3, 3), 1705) == "csr"
    assert auto_mode((512, 256, 3, 3), 13634) == "csr"
    # few pairs per source channel: the gathered depthwise conv; most pairs kept: one dense conv
    assert auto_mode((64, 64, 3, 3), 71) == "sparse"
    assert auto_mode((256, 64, 3, 3), 0.35 * 256 * 64) == "dense"
    # a stride makes the depthwise conv cost as many positions as the input has
    assert auto_mode((128, 64, 3, 3), 300) == "sparse"
    assert auto_mode((128, 64, 3, 3), 300, (2, 2)) == "csr"
    # 1x1 kernels and Linear skips keep the two-way choice (9% kept: above DENSE_ABOVE)
    assert auto_mode((512, 128, 1, 1), 6000) == "dense" and auto_mode((512, 128), 6000) == "dense"
    assert auto_mode((512, 128, 1, 1), 600) == "sparse" and auto_mode((512, 128), 600) == "sparse"
    with pytest.raises(ValueError, match="mode 'csr' is for conv skips"):
        N2NSkip(_block(_mask((6, 5), 0.5, False, seed=0), order="pool-conv-act"), mode="csr")


def _csr_skip(seed=0, stride=1):
    mask = _mask((12, 6, 3, 3), 0.4, True, seed=seed)
    skip = N2NSkip(_block(mask, order="conv-bn-act-pool", src_hw=(8, 8), dst_hw=(4, 4) if stride > 1 else (8, 8),
                          stride=stride), mode="csr")
    with torch.no_grad():
        skip.weight.normal_(generator=torch.Generator().manual_seed(seed))
    return skip


def test_csr_skip_saves_no_index_arrays_and_loads_into_a_sparse_twin():
    skip = _csr_skip()
    assert skip.mode == "csr" and not any(k.startswith("_csr") for k in skip.state_dict())
    twin = N2NSkip(_block(_mask((12, 6, 3, 3), 0.4, True, seed=0), order="conv-bn-act-pool",
                          src_hw=(8, 8), dst_hw=(8, 8)), mode="sparse")
    twin.load_state_dict(skip.state_dict())
    gen = torch.Generator().manual_seed(1)
    a, z = torch.randn(2, 6, 8, 8, generator=gen), torch.randn(2, 12, 8, 8, generator=gen)
    torch.testing.assert_close(skip(a, z), twin(a, z))


def test_csr_skip_falls_back_under_autocast_and_compiles():
    skip = _csr_skip(seed=2, stride=2)
    gen = torch.Generator().manual_seed(3)
    a, z = torch.randn(2, 6, 8, 8, generator=gen), torch.randn(2, 12, 4, 4, generator=gen)
    expected = skip(a, z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = skip(a, z)  # the CSR product does not run in bf16: the fallback path does
    torch.testing.assert_close(low.float(), expected, rtol=0.05, atol=0.05)
    compiled = torch.compile(skip, backend="aot_eager")
    x = a.clone().requires_grad_(True)
    out = compiled(x, z)
    torch.testing.assert_close(out, expected)
    (gx,) = torch.autograd.grad(out.sum(), x)
    x2 = a.clone().requires_grad_(True)
    (gx2,) = torch.autograd.grad(skip(x2, z).sum(), x2)
    torch.testing.assert_close(gx, gx2)

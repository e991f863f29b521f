"""Channel-granularity random masks and layers kept dense: exact budgets that kept_count predicts."""

import math

import pytest
import torch
from torch import nn

from n2ngraph.pruning import CHANNEL_METHODS, budget, kept_count, prune


def vgg_like() -> nn.Module:
    """Stem 3->16 (C_in < C_out), 16->32, 32->16 grouped (C_in > C_out), a 16->10 classifier."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 16, 3, padding=1, groups=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 10),
        )


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _Block(16, 16, 1)
        self.layer2 = _Block(16, 32, 2)
        self.layer3 = _Block(32, 64, 2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet_like() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ResNetLike()


RESNET_DENSE = ("conv1", "layer2.downsample.0", "layer3.downsample.0", "fc")
VGG_DENSE = ("0", "9")  # stem and classifier
MODELS = {"vgg": (vgg_like, VGG_DENSE), "resnet": (resnet_like, RESNET_DENSE)}


def data(n=8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def count(masks):
    return sum(int(m.sum()) for m in masks.values())


def whole_kernels(mask):
    per_pair = mask.reshape(mask.shape[0], mask.shape[1], -1)
    return bool((per_pair.all(-1) | ~per_pair.any(-1)).all())


# ------------------------------------------------------------------- budget exactness
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method", CHANNEL_METHODS)
@pytest.mark.parametrize("with_dense", [False, True])
@pytest.mark.parametrize("density", [0.08, 0.2, 0.6])
def test_channel_budget_is_exact(name, method, with_dense, density):
    build, roles = MODELS[name]
    model = build()
    dense = roles if with_dense else ()
    masks = prune(model, method, density, granularity="channel", dense=dense, seed=2)
    assert count(masks) == kept_count(model, density, granularity="channel", dense=dense)
    weights = {n: m.weight for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    n_total = sum(w.numel() for w in weights.values())
    n_dense = sum(weights[d].numel() for d in dense)
    d_free = density if not dense else (budget(n_total, density) - n_dense) / (n_total - n_dense)
    for path, w in weights.items():
        m = masks[f"{path}.weight"]
        if path in dense:
            assert bool(m.all()), path
        elif w.dim() == 4:
            assert whole_kernels(m), path
            pairs = int(m[:, :, 0, 0].sum())
            assert pairs == budget(w.shape[0] * w.shape[1], d_free), path
            assert int(m.sum()) == pairs * w.shape[2] * w.shape[3]
        else:
            assert int(m.sum()) == budget(w.numel(), d_free), path


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize(
    "method,options", [("random", {}), ("expander", {}), ("magnitude", {}), ("snip", {}),
                       ("grasp", {}), ("synflow", {"rounds": 3})]
)
def test_dense_layers_paid_from_the_budget(name, scope, method, options):
    build, dense = MODELS[name]
    model = build()
    density = 0.3
    masks = prune(model, method, density, data=data(), scope=scope, dense=dense, **options)
    n_total = sum(m.numel() for m in masks.values())
    assert count(masks) == kept_count(model, density, scope=scope, dense=dense)
    # the dense weights are part of the budget: exactly under one threshold, within half a
    # weight per free layer when each layer is rounded on its own
    slack = 0 if scope == "global" else (len(masks) - len(dense)) / 2
    assert abs(count(masks) - budget(n_total, density)) <= slack
    for path in dense:
        assert bool(masks[f"{path}.weight"].all()), path
    # weight names work as well as module paths
    same = prune(model, method, density, data=data(), scope=scope,
                 dense=[f"{p}.weight" for p in dense], **options)
    assert all(torch.equal(masks[k], same[k]) for k in masks)


def test_weight_granularity_with_dense_layerwise_rule():
    model = vgg_like()
    masks = prune(model, "random", 0.1, dense=VGG_DENSE, seed=0)
    sizes = {k: m.numel() for k, m in masks.items()}
    n_dense = sizes["0.weight"] + sizes["9.weight"]
    d_free = (budget(sum(sizes.values()), 0.1) - n_dense) / (sum(sizes.values()) - n_dense)
    for k in ("2.weight", "5.weight"):
        assert int(masks[k].sum()) == budget(sizes[k], d_free)


# --------------------------------------------------------------- shape of channel masks
def test_expander_equal_fan_in_or_fan_out():
    model = vgg_like()
    for seed in range(3):
        masks = prune(model, "expander", 0.3, granularity="channel", seed=seed)
        for path in ("0", "2", "5"):
            conv = model.get_submodule(path)
            grid = masks[f"{path}.weight"][:, :, 0, 0]
            assert whole_kernels(masks[f"{path}.weight"])
            # C_in > C_out: equal fan-in per output channel; else equal fan-out per input column
            axis = 1 if conv.in_channels > conv.out_channels else 0
            per_unit = grid.sum(axis)
            assert int(per_unit.max() - per_unit.min()) <= 1, (path, axis)
        assert model[5].in_channels > model[5].out_channels  # both branches are exercised
        assert model[2].in_channels < model[2].out_channels


def test_random_channel_pairs_are_uniform():
    """Over seeds, every channel pair of a layer is picked sometimes."""
    model = vgg_like()
    hits = sum(
        prune(model, "random", 0.1, granularity="channel", seed=s)["2.weight"][:, :, 0, 0].int()
        for s in range(60)
    )
    assert int((hits == 0).sum()) == 0
    assert abs(hits.float().mean().item() - 60 * budget(32 * 16, 0.1) / (32 * 16)) < 1e-6


@pytest.mark.parametrize("method", CHANNEL_METHODS)
def test_channel_same_seed_same_masks(method):
    model = resnet_like()
    a = prune(model, method, 0.1, granularity="channel", dense=RESNET_DENSE, seed=7)
    b = prune(model, method, 0.1, granularity="channel", dense=RESNET_DENSE, seed=7)
    c = prune(model, method, 0.1, granularity="channel", dense=RESNET_DENSE, seed=8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_linear_layers_are_pruned_weight_by_weight():
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    masks = prune(model, "expander", 0.2, granularity="channel", seed=0)
    assert count(masks) == kept_count(model, 0.2, granularity="channel") == 120 + 30
    per_row = masks["0.weight"].sum(1)
    assert int(per_row.max() - per_row.min()) <= 1


# -------------------------------------------------------------- kept_count == prune
@pytest.mark.parametrize("name", sorted(MODELS))
def test_kept_count_predicts_prune(name):
    build, roles = MODELS[name]
    model = build()
    for density in (0.013, 0.1, 0.45, 1.0):
        for dense in ((), roles) if density > 0.05 else ((),):
            for granularity in ("weight", "channel"):
                for method in CHANNEL_METHODS:
                    masks = prune(model, method, density, granularity=granularity, dense=dense)
                    expected = kept_count(model, density, granularity=granularity, dense=dense)
                    assert count(masks) == expected, (density, dense, granularity, method)
            for scope in ("layerwise", "global"):
                masks = prune(model, "magnitude", density, scope=scope, dense=dense)
                assert count(masks) == kept_count(model, density, scope=scope, dense=dense)


# ------------------------------------------------------------------------ bad input
def test_dense_layers_over_budget():
    model = vgg_like()
    with pytest.raises(ValueError, match="dense layers .* more than the budget"):
        prune(model, "random", 0.01, dense=("2",))
    with pytest.raises(ValueError, match="more than the budget"):
        kept_count(model, 0.01, dense=("2",))


def test_bad_granularity_and_dense_arguments():
    model = vgg_like()
    with pytest.raises(ValueError, match="valid module paths are .*'2'"):
        prune(model, "random", 0.1, dense=("features.0",))
    with pytest.raises(TypeError, match="sequence of module paths"):
        prune(model, "random", 0.1, dense="0")
    with pytest.raises(ValueError, match="valid granularities"):
        prune(model, "random", 0.1, granularity="kernel")
    with pytest.raises(ValueError, match="'snip' ranks single weights"):
        prune(model, "snip", 0.1, data=data(), granularity="channel")
    with pytest.raises(ValueError, match="scope='layerwise'"):
        prune(model, "random", 0.1, granularity="channel", scope="global")
    with pytest.raises(ValueError, match="scope='layerwise'"):
        kept_count(model, 0.1, granularity="channel", scope="global")
    with pytest.raises(ValueError, match="one-shot"):
        prune(model, "random", 0.1, granularity="channel", rounds=3)


def test_dense_layers_excluded_from_the_global_threshold():
    """A huge dense layer does not compete: the free layers share what is left."""
    model = vgg_like()
    masks = prune(model, "magnitude", 0.7, scope="global", dense=("2",))
    assert bool(masks["2.weight"].all())
    sizes = {k: m.numel() for k, m in masks.items()}
    free = count(masks) - sizes["2.weight"]
    assert free == budget(sum(sizes.values()), 0.7) - sizes["2.weight"]
    assert math.isclose(count(masks) / sum(sizes.values()), 0.7, abs_tol=1 / sum(sizes.values()))

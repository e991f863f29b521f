"""pipeline.variant under the recipes, dense layer roles, and the two documented decisions."""

import dataclasses
import hashlib
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from n2ngraph import models  # noqa: E402
from n2ngraph.pipeline import calibration_batch, dense_layer_names, variant  # noqa: E402
from n2ngraph.recipes import RECIPES  # noqa: E402


def _digest(graph) -> str:
    h = hashlib.sha1()
    for b in graph.blocks:
        h.update(b.name.encode())
        if b.mask is not None:
            h.update(np.packbits(b.mask).tobytes())
    return h.hexdigest()[:16]


def _tiny_vgg():
    return models.VGG([16, 16, "M", 32, "M", 32, "M"], 10, head="cifar")


# ----------------------------------------------------------------- must-show checks
def test_paper_resnet50_has_one_3x3_skip_per_block_at_equal_budget():
    model = models.resnet50(num_classes=10)
    g = variant(model, "expander", 0.02, recipe="paper")
    skips = g.blocks_of_kind("n2nskip")
    assert 10 <= len(skips) <= 20
    assert all(b.mask.shape[2:] == (3, 3) and b.spec.kernel_size == (3, 3) for b in skips)
    plain = variant(model, "expander", 0.02, recipe="paper", skips=False)
    assert g.num_params == plain.num_params and not plain.blocks_of_kind("n2nskip")
    assert g.provenance["recipe"] == "paper" and plain.provenance["recipe"] == "paper"
    assert g.provenance["recipe_fields"] == RECIPES["paper"].to_json()
    assert g.provenance["sequential_params"] + sum(b.num_params for b in skips) == g.num_params


def test_paper_vgg19_rp_is_channel_level_with_a_dense_stem():
    from analysis.common import vgg19_reference

    g = variant(vgg19_reference(), "expander", 0.02, recipe="paper", skips=False)
    convs = [b for b in g.blocks if b.kind == "sequential" and b.mask.ndim == 4]
    assert len(convs) == 16 and convs[0].mask.all()  # the stem is dense
    for b in convs[1:]:
        pairs = b.pair_mask()
        assert 0.01 <= pairs.mean() <= 0.04, (b.name, pairs.mean())
        taps = b.mask.reshape(*pairs.shape, -1)
        assert np.array_equal(taps.all(axis=2), pairs)  # a kept pair keeps all its taps
    assert g.blocks[-1].mask.all()  # the classifier (layer into the logits) is dense
    assert g.provenance["dense_layers"] == ["features.0", "classifier.2"]


def test_paper_skips_into_strided_blocks_stride_and_pooled_stages_pool():
    """ResNet: a skip into a block that halves the resolution is a stride-2 conv at the target's
    size (the block's own conv strides so); VGG: a stage's skip pools (a MaxPool halves the size).
    ``skip_downsample="pool"`` pools both; the topology is the same either way."""
    x = torch.zeros(1, 3, 32, 32)
    resnet = models.resnet18(num_classes=10)
    g = variant(resnet, "expander", 0.02, recipe="paper", example_input=x)
    skips = {b.dst: b for b in g.blocks_of_kind("n2nskip")}
    for dst in ("layer2.0.add", "layer3.0.add", "layer4.0.add"):
        assert skips[dst].spec.stride == (2, 2) and skips[dst].spec.pool is None
    assert skips["layer1.1.add"].spec.stride == (1, 1) and skips["layer1.1.add"].spec.pool is None
    pooled_recipe = dataclasses.replace(RECIPES["paper"], skip_downsample="pool", name="paper-pool")
    pooled = variant(resnet, "expander", 0.02, recipe=pooled_recipe, example_input=x)
    assert pooled == g  # same edges and masks (spec is not topology)
    moved = {b.dst: b for b in pooled.blocks_of_kind("n2nskip")}["layer2.0.add"]
    assert moved.spec.stride == (1, 1) and moved.spec.pool == "adaptive_max"
    assert g.provenance["n2nskip_skip_downsample"] == "stride"

    vgg = variant(_tiny_vgg(), "expander", 0.1, recipe="paper", example_input=x)
    stage_skips = [b for b in vgg.blocks_of_kind("n2nskip") if b.mask.ndim == 4]
    assert stage_skips and all(b.spec.stride == (1, 1) and b.spec.pool == "adaptive_max"
                               for b in stage_skips)


def test_paper_resnet_with_strided_skips_trains_and_reads_back():
    from n2ngraph.bridge import to_model
    from n2ngraph.skip_modules import N2NSkip
    from n2ngraph.trace import to_graph

    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    resnet = models.resnet18(num_classes=10)
    g = variant(resnet, "expander", 0.05, recipe="paper", example_input=x[:1])
    model = to_model(g, resnet, example_input=x[:1])
    strided = [m for m in model.modules() if isinstance(m, N2NSkip) and m.stride == (2, 2)]
    assert len(strided) == 3
    model(x).square().mean().backward()
    assert all(m.weight.grad is not None and torch.isfinite(m.weight.grad).all() for m in strided)
    assert to_graph(model, example_input=x[:1]) == g


# ------------------------------------------------------------------ all-pairs recipe
# Digests of the graphs that n2ngraph built before recipes existed (n2nskip.variant with its
# defaults: layerwise scope, per-weight masks, all-pairs 1x1 skips, pool-conv-act), seed 1.
_BEFORE_RECIPES = {
    ("paper_mlp", 0.1): ("ad3e1ec14e5c504f", "bc4e143211fa5351"),
    ("paper_mlp", 0.02): ("6d795c9c4054caf3", "20e08c82c9b54076"),
    ("tiny_vgg", 0.1): ("f847eae0eb545709", "0b62e004d16ec847"),
    ("tiny_vgg", 0.02): ("9d2da425cbfef799", "8e991443b3bf7887"),
}


@pytest.mark.parametrize("name, density", list(_BEFORE_RECIPES))
def test_all_pairs_recipe_reproduces_the_graphs_built_before_recipes(name, density):
    model = models.paper_mlp() if name == "paper_mlp" else _tiny_vgg()
    g = variant(model, "expander", density, recipe="all-pairs", seed=1)
    plain = variant(model, "expander", density, recipe="all-pairs", seed=1, skips=False)
    assert (_digest(g), _digest(plain)) == _BEFORE_RECIPES[(name, density)]
    if name == "paper_mlp":
        assert len(g.blocks_of_kind("n2nskip")) == 10


def test_paper_recipe_on_an_mlp_wires_every_non_consecutive_pair():
    model = models.paper_mlp()
    a = variant(model, "expander", 0.05, recipe="paper", seed=0)
    b = variant(model, "expander", 0.05, recipe="all-pairs", seed=0)
    pairs = lambda g: [(x.src, x.dst) for x in g.blocks_of_kind("n2nskip")]  # noqa: E731
    assert pairs(a) == pairs(b) and len(pairs(a)) == 10
    assert a.provenance["dense_layers"] == [] and a.num_params == b.num_params


@pytest.mark.parametrize("method", ["random", "expander", "magnitude"])
@pytest.mark.parametrize("recipe", ["paper", "all-pairs"])
def test_variant_matches_plain_budget_exactly(method, recipe):
    model = _tiny_vgg()
    plain = variant(model, method, 0.1, recipe=recipe, seed=0, skips=False)
    g = variant(model, method, 0.1, recipe=recipe, seed=0)
    assert g.num_params == plain.num_params
    skips = g.blocks_of_kind("n2nskip")
    assert skips and sum(b.num_params for b in skips) == g.num_params - g.provenance["sequential_params"]
    assert g.provenance["variant"] == "n2nskip" and plain.provenance["variant"] == "plain"
    assert g.provenance["method"] == plain.provenance["method"] == method
    expected_scope = "layerwise" if method != "magnitude" else RECIPES[recipe].scope
    assert g.provenance["scope"] == expected_scope


def test_a_recipe_object_and_its_fraction():
    model = models.lenet300()
    r = dataclasses.replace(RECIPES["all-pairs"], n2nskip_fraction=0.25, name="all-pairs-f0.25")
    g = variant(model, "random", 0.1, recipe=r, seed=0)
    assert g.provenance["recipe"] == "all-pairs-f0.25" and g.provenance["n2nskip_fraction"] == 0.25
    assert g.provenance["sequential_density"] == pytest.approx(0.075)


def test_variant_bad_input():
    model = models.lenet300()
    with pytest.raises(ValueError, match="unknown recipe"):
        variant(model, "random", 0.1, recipe="nope")
    with pytest.raises(ValueError, match="density"):
        variant(model, "random", 1.5)
    with pytest.raises(ValueError, match="density"):
        variant(model, "random", 0)


def test_dense_downsample_convs_that_exceed_the_budget_are_refused():
    r = dataclasses.replace(RECIPES["paper"], dense_layers=("stem", "downsample", "classifier"),
                            name="paper-dense-downsample")
    model = models.resnet18()
    with pytest.raises(ValueError, match="dense"):
        variant(model, "expander", 0.02, recipe=r)
    g = variant(model, "expander", 0.5, recipe=r)
    assert "layer2.0.downsample.0" in g.provenance["dense_layers"]


# -------------------------------------------------------------------------- roles
def test_dense_layer_names_from_the_traced_graph():
    from n2ngraph.trace import to_graph

    model = to_graph(models.resnet18())
    assert dense_layer_names(model, ("stem",)) == ("conv1",)
    assert dense_layer_names(model, ("classifier",)) == ("fc",)
    assert dense_layer_names(model, ("downsample",)) == tuple(
        f"layer{i}.0.downsample.0" for i in (2, 3, 4))
    graph = to_graph(models.VGG([8, "M", 8, "M"], head="torchvision"))  # a 3-Linear head
    assert dense_layer_names(graph, ("stem", "downsample", "classifier")) == ("features.0", "classifier.6")
    assert dense_layer_names(models.paper_mlp(), ("stem", "classifier")) == ()  # not a conv net
    with pytest.raises(ValueError, match="valid roles"):
        dense_layer_names(model, ("head",))


def test_roles_do_not_depend_on_module_names():
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Conv2d(3, 8, 3, padding=1)
            self.q = nn.Conv2d(8, 8, 3, padding=1)
            self.r = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.u = nn.Conv2d(16, 16, 3, padding=1)
            self.s = nn.Conv2d(8, 16, 1, stride=2)
            self.t = nn.Linear(16, 4)

        def forward(self, x):
            x = torch.relu(self.p(x))
            x = torch.relu(self.q(x))
            y = torch.relu(self.u(torch.relu(self.r(x))) + self.s(x))
            return self.t(y.mean(dim=(2, 3)))

    names = dense_layer_names(Net(), ("stem", "downsample", "classifier"))
    assert names == ("p", "s", "t")


# --------------------------------------------------------------------------- data
@pytest.mark.slow
def test_calibration_batch_pads_digits_for_cifar_shaped_models():
    x, y = calibration_batch(models.paper_mlp(), "mnist5k", 8, seed=0)
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,)
    x2, _ = calibration_batch(models.paper_mlp(), "mnist5k", 8, seed=0)
    assert torch.equal(x, x2)


# ------------------------------------------------------------------ g at the logits
def test_skips_into_the_logits_are_linear():
    """Decision (docs/recipes.md): g is the target's own non-linearity, the identity at the
    logits (Eq. 2 of the paper), so a skip into the output adds ``S a_src`` unrectified."""
    from n2ngraph.bridge import to_model
    from n2ngraph.n2nskip import add_n2nskip, skip_initial_weights
    from n2ngraph.trace import to_graph

    torch.manual_seed(0)
    model = models.mlp([6, 5, 4, 3])
    graph = add_n2nskip(to_graph(model), 0.4, seed=0)
    skips = {(b.src, b.dst): torch.from_numpy(skip_initial_weights(b)).double()
             for b in graph.blocks_of_kind("n2nskip")}
    assert ("input", "5") in skips  # a skip from the input into the logits
    net = to_model(graph, model, init="dense").double().eval()
    x = torch.randn(16, 6, dtype=torch.float64)
    lin = [m.double() for m in model if isinstance(m, torch.nn.Linear)]
    names = [g.name for g in graph.groups]  # input, 1, 3, 5
    a = {names[0]: x}
    for layer, src, dst in zip(lin, names[:-1], names[1:]):
        z = layer(a[src])
        for (s, d), w in skips.items():
            if d == dst:
                y = a[s] @ w.T
                z = z + (y if dst == names[-1] else torch.relu(y))
        a[dst] = z if dst == names[-1] else torch.relu(z)
    with torch.no_grad():
        got = net(x)
    torch.testing.assert_close(got, a[names[-1]])
    y = a["input"] @ skips[("input", "5")].T
    assert (y < 0).any()  # the skip's negative part reaches the logits: no ReLU there


@pytest.mark.parametrize("recipe", ["paper", "all-pairs"])
def test_every_variant_has_a_weighted_adjacency(recipe):
    """Skip blocks carry the pair weights of their initial draw, so weighted analysis works."""
    from n2ngraph.n2nskip import skip_initial_weights

    g = variant(_tiny_vgg(), "expander", 0.25, recipe=recipe, seed=0)
    assert g.blocks_of_kind("n2nskip")
    A = g.adjacency(weighted=True)
    assert A.nnz == g.adjacency().nnz and np.isfinite(A.data).all() and (A.data > 0).all()
    for b in g.blocks_of_kind("n2nskip"):
        w = skip_initial_weights(b)
        np.testing.assert_allclose(b.pair_weight, np.abs(w).reshape(*w.shape[:2], -1).sum(axis=2),
                                   rtol=1e-6)


def test_skips_the_wiring_cannot_hold_are_given_back_to_the_network():
    """tiny_vgg's 2 stage skips hold 5,472 weights; at 80% the skips' share would be 6,752."""
    from n2ngraph.n2nskip import skip_capacity

    model = _tiny_vgg()
    plain = variant(model, "expander", 0.8, recipe="paper", skips=False)
    with pytest.warns(UserWarning, match="skip blocks hold only"):
        g = variant(model, "expander", 0.8, recipe="paper")
    skips = g.blocks_of_kind("n2nskip")
    cap = skip_capacity(plain, wiring="blocks", skip_kernel="same", skip_order="conv-bn-act-pool")
    assert cap == 5472 and cap - 9 < sum(b.num_params for b in skips) <= cap
    assert g.num_params == plain.num_params
    assert 0.4 < g.provenance["sequential_density"] < 0.8
    assert g.provenance["n2nskip_fraction_effective"] < 0.5 == g.provenance["n2nskip_fraction"]


# --------------------------------------------------- weight layers outside the traced graph
class _AuxHeadNet(torch.nn.Module):
    """conv1 (3->8, 3x3: 216 weights) -> relu -> conv2 (8->8: 576) -> relu -> pool -> fc (8->10:
    80), and an auxiliary head ``aux`` (8->10: 80) that the forward never calls, as
    googlenet's aux heads in eval mode."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.aux = torch.nn.Linear(8, 10, bias=False)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = torch.nn.Linear(8, 10, bias=False)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("method, recipe, density, skips, expected", [
    ("random", "all-pairs", 0.3, False, 65 + 173 + 24),  # layerwise: round(0.3 * n_l) per layer
    ("random", "all-pairs", 0.3, True, 65 + 173 + 24),  # skips hold what the plain graph keeps
    ("magnitude", "paper", 0.8, False, 698),  # global: round(0.8 * 872), conv1 and fc dense
])
def test_layers_outside_the_graph_take_no_part_in_the_budget(method, recipe, density, skips, expected):
    from n2ngraph.pipeline import graph_layers
    from n2ngraph.pruning import kept_count
    from n2ngraph.trace import to_graph

    model = _AuxHeadNet().eval()
    inside, outside = graph_layers(model, to_graph(model))
    assert inside == ("conv1.weight", "conv2.weight", "fc.weight") and outside == ("aux.weight",)
    with pytest.warns(UserWarning, match=r"\['aux'\] \(80 weights\) are not in the traced graph"):
        g = variant(model, method, density, recipe=recipe, skips=skips, seed=0)
    assert g.dense_params == 216 + 576 + 80  # the aux head is not in the graph
    assert expected == kept_count(model, density, scope=RECIPES[recipe].scope, layers=inside,
                                  dense=g.provenance["dense_layers"])
    assert g.num_params == expected  # the aux head's share is not moved into the skips
    assert g.provenance["outside_graph"] == ["aux"]
    assert len(g.blocks_of_kind("n2nskip")) > 0 if skips else not g.blocks_of_kind("n2nskip")


def test_graph_layers_are_all_of_a_model_that_uses_every_layer():
    from n2ngraph.pipeline import graph_layers
    from n2ngraph.trace import to_graph

    model = models.lenet300()
    assert graph_layers(model, to_graph(model)) == (("1.weight", "3.weight", "5.weight"), ())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when the graph holds every layer
        g = variant(model, "random", 0.1, seed=0)
    assert g.provenance["outside_graph"] == []


def test_a_layer_applied_twice_is_refused():
    from n2ngraph.pipeline import graph_layers
    from n2ngraph.trace import to_graph

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(torch.relu(self.fc1(x)))))

    model = Twice()
    with pytest.raises(ValueError, match=r"\['fc1'\] are applied more than once"):
        graph_layers(model, to_graph(model))
    with pytest.raises(ValueError, match="applied more than once"):
        variant(model, "random", 0.5, recipe="all-pairs")


def test_dense_layers_over_the_budget_are_refused_in_the_recipes_words():
    model = _AuxHeadNet().eval()  # conv1 (216) and fc (80) are the paper recipe's dense layers
    with pytest.warns(UserWarning, match="not in the traced graph"), pytest.raises(
            ValueError, match=r"recipe 'paper' keeps layers \['conv1', 'fc'\] dense \(296 weights\), "
            r"more than the 131 weights the network keeps at density 0.3 \(0.15 after the skips' "
            r"share\).*dense_layers=\(\)"):
        variant(model, "random", 0.3, recipe="paper")  # round(0.15 * 872) = 131


def test_calibration_batch_of_the_wrong_shape_is_refused_in_api_words():
    data = torch.utils.data.TensorDataset(torch.zeros(4, 1, 5, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"gives images of shape \(1, 5, 5\).*pass a dataset") as err:
        calibration_batch(models.lenet300(), data, 2, seed=0)
    assert "--" not in str(err.value)  # the CLI, not the library, speaks of --dataset


def test_calibration_batch_at_the_traced_input_shape():
    """A conv net traced at the data's own 28 x 28 gets its digits as they are; without the
    shape the model's 32 x 32 guess does not fit them and is refused, naming both shapes."""
    images = torch.arange(4 * 28 * 28, dtype=torch.float32).reshape(4, 1, 28, 28)
    data = torch.utils.data.TensorDataset(images, torch.arange(4))
    net = models.vgg16(num_classes=4, in_channels=1)
    x, y = calibration_batch(net, data, 3, seed=1, input_shape=(1, 28, 28))
    order = torch.randperm(4, generator=torch.Generator().manual_seed(1))[:3]
    assert torch.equal(x, images[order]) and torch.equal(y, order)
    with pytest.raises(ValueError, match=r"\(1, 28, 28\).*\(1, 32, 32\)"):
        calibration_batch(net, data, 3, seed=1)


class _TokenMixer(torch.nn.Module):
    """A patch embedding (conv 1 -> 2 on 2 x 2 patches of a 4 x 4 image: 4 tokens), a Linear
    4 -> 4 over the token axis, a classifier 2 -> 3 on the mean token, and a Linear 3 -> 7 that
    the forward never calls (an unused head)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Conv2d(1, 2, 2, stride=2)
        self.tokens = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(2, 3)
        self.unused = torch.nn.Linear(3, 7)

    def forward(self, x):
        t = self.tokens(self.embed(x).flatten(2))  # (B, 2 channels, 4 tokens): mixes tokens
        return self.head(t.mean(dim=2))


def test_variant_names_token_mixing_and_unreached_layers_apart():
    """Both kinds of layer outside the graph are left dense and outside the budget, each named
    with its own reason and weight count."""
    x = torch.zeros(1, 1, 4, 4)
    with pytest.warns(UserWarning) as caught:
        g = variant(_TokenMixer(), "random", 0.5, recipe="all-pairs", skips=False, example_input=x)
    text = " ".join(str(w.message) for w in caught)
    assert "token-mixing Linear layers ['tokens'] (16 weights) mix tokens, not features" in text
    assert "weight layers ['unused'] (21 weights) are not in the traced graph" in text
    assert "auxiliary heads" in text and text.count("auxiliary heads") == 1
    assert g.provenance["outside_graph"] == ["tokens", "unused"]
    assert g.num_params == round(0.5 * (8 + 6))  # embed 2x1x2x2 + head 3x2

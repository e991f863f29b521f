"""Shared fixtures: a tiny MLP with fixed weights, hand-built small graphs, a seeded rng."""

import numpy as np
import pytest

from n2ngraph.graph import EdgeBlock, NetworkGraph, NodeGroup


def pytest_configure(config):
    # One intra-op thread: on the 2-core CI machine torch's default of 2 threads contends with
    # the test process itself and made CPU tests 5-8x slower.
    import torch

    torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def small_graph():
    """input(3) -> h(2) -> out(1), plus an n2nskip input[0] -> out[0].

    Hand-computed adjacency (nodes 0-2 input, 3-4 h, 5 out): edges
    (0,3) (2,3) (1,4) (3,5) (4,5) (0,5).
    """
    groups = (NodeGroup("input", 0, 3), NodeGroup("h", 3, 2), NodeGroup("out", 5, 1))
    blocks = (
        EdgeBlock("h", "input", "h", "sequential", np.array([[1, 0, 1], [0, 1, 0]], bool)),
        EdgeBlock("out", "h", "out", "sequential", np.ones((1, 2), bool)),
        EdgeBlock("skip", "input", "out", "n2nskip", np.array([[1, 0, 0]], bool)),
    )
    return NetworkGraph(groups, blocks, {"model": "hand"})


@pytest.fixture
def residual_graph():
    """x(2) -(conv a, 11 of 36 taps)-> a(2) -(conv y, 0 of 36)-> y(2), plus a residual a -> y."""
    groups = (NodeGroup("x", 0, 2), NodeGroup("a", 2, 2), NodeGroup("y", 4, 2))
    conv_a = np.zeros((2, 2, 3, 3), bool)
    conv_a[0, 0, 1, 1] = conv_a[0, 0, 0, 0] = True  # x0 -> a0 with two taps
    conv_a[1, 1, :, :] = True  # x1 -> a1 with nine taps
    blocks = (
        EdgeBlock("a", "x", "a", "sequential", conv_a),
        EdgeBlock("y", "a", "y", "sequential", np.zeros((2, 2, 3, 3), bool)),
        EdgeBlock("res", "a", "y", "residual"),
    )
    return NetworkGraph(groups, blocks)


@pytest.fixture
def tiny_mlp():
    """nn.Sequential(Linear(4, 3), ReLU, Linear(3, 2)) with weights w[o, i] = (o + 1) * 0.1 - i * 0.05."""
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            out, inp = layer.weight.shape
            o = torch.arange(out, dtype=torch.float32)[:, None]
            i = torch.arange(inp, dtype=torch.float32)[None, :]
            layer.weight.copy_((o + 1) * 0.1 - i * 0.05)
            layer.bias.zero_()
    return model

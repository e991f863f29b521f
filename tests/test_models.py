"""Model registry and shapes: parse_input_shape, example_input, factories from the current
directory, in_channels of the conv nets."""

import os
import subprocess
import sys

import pytest
import torch

from n2ngraph.models import (
    build_model,
    example_input,
    model_factory,
    parse_input_shape,
    resolve_model,
)


@pytest.mark.parametrize("text, shape", [("1,28,28", (1, 28, 28)), ("3x32x32", (3, 32, 32)),
                                         (" 1, 8 ,8 ", (1, 8, 8)), ("784", (784,)),
                                         ((3, 16, 16), (3, 16, 16)), ([10], (10,))])
def test_parse_input_shape(text, shape):
    assert parse_input_shape(text) == shape


@pytest.mark.parametrize("text", ["", "1,,28", "a,b,c", "0,28,28", "1,-2,3", "1,2,3,4,5", "1.5,2",
                                  (1.5, 2), ("a",)])
def test_parse_input_shape_refuses_with_the_value(text):
    with pytest.raises(ValueError, match="input shape") as info:
        parse_input_shape(text)
    assert repr(text) in str(info.value)


def test_example_input_guess_and_override():
    mlp = build_model("lenet300")
    assert example_input(mlp).shape == (1, 784)
    assert example_input(mlp, batch=3, input_shape="1,28,28").shape == (3, 1, 28, 28)
    conv = build_model("resnet18")
    assert example_input(conv).shape == (1, 3, 32, 32)
    assert example_input(conv, input_shape=(3, 28, 28)).shape == (1, 3, 28, 28)
    x = example_input(conv.double(), input_shape="3,8,8")
    assert x.dtype == torch.float64 and not x.any()
    with pytest.raises(ValueError, match="no Linear or Conv2d"):
        example_input(torch.nn.ReLU())
    assert example_input(torch.nn.ReLU(), input_shape="4").shape == (1, 4)


@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_conv_nets_take_grey_images(name):
    model = build_model(name, in_channels=1, head="cifar") if name == "vgg16" else \
        build_model(name, in_channels=1)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    # resolve_model passes in_channels from data defaults only to factories that name it
    grey = resolve_model(name, defaults={"in_channels": 1, "in_features": 1024})
    assert next(m for m in grey.modules() if isinstance(m, torch.nn.Conv2d)).in_channels == 1


def test_factory_from_the_current_directory(tmp_path, monkeypatch):
    """A user's module next to them resolves although the console script does not put the
    current directory on sys.path (python -m does); a missing module still fails clearly."""
    (tmp_path / "my_net_n2n.py").write_text(
        "from n2ngraph.models import lenet300\n"
        "def build(num_classes=10):\n    return lenet300(num_classes, in_features=16)\n")
    code = ("import sys, os; sys.path[:] = [p for p in sys.path if p not in ('', os.getcwd())];"
            "from n2ngraph.models import resolve_model;"
            "print(resolve_model('my_net_n2n:build', num_classes=3)[1].in_features)")
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "16"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="cannot import model factory 'not_here_n2n:build'"):
        model_factory("not_here_n2n:build")


def test_data_defaults_fit_factories_to_the_input():
    from n2ngraph.models import data_defaults

    assert data_defaults((3, 32, 32), 100) == {"in_features": 3072, "in_channels": 3, "num_classes": 100}
    assert data_defaults("784") == {"in_features": 784}  # flat: no channels, classes unknown
    mlp = resolve_model("paper_mlp", defaults=data_defaults((1, 28, 28)))
    assert mlp[1].in_features == 784 and mlp[-1].out_features == 10

"""Reference architectures: the paper's MLP, LeNet-300-100, VGG and ResNet.

The conv nets follow torchvision's definitions (same module names, same forward code, including
the in-place residual ``out += identity``), so a user's torchvision model traces the same way.
They are CIFAR-shaped by default: 32 x 32 inputs and ``num_classes=10``.

Registry and resolution
-----------------------
``MODELS`` maps a name to a factory taking ``num_classes`` (and keywords). This module is the one
home of model resolution and seeding: :func:`model_factory` turns a spec (a registered name or
``"package.module:function"``) into its factory, :func:`resolve_model` builds it under a seed
(every command and sweep builds models through it), :func:`build_model` builds registered names
only. An unknown name lists the valid ones.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "MODELS",
    "build_model",
    "model_factory",
    "resolve_model",
    "example_input",
    "data_defaults",
    "parse_input_shape",
    "DEFAULT_IMAGE_SIZE",
    "mlp",
    "paper_mlp",
    "lenet300",
    "vgg16",
    "vgg19",
    "resnet18",
    "resnet50",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "VGG",
]


def mlp(sizes: Sequence[int], *, activation: type[nn.Module] = nn.ReLU, flatten: bool = True) -> nn.Sequential:
    """A fully connected network ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    ``activation`` follows every hidden layer (not the last); ``flatten`` prepends ``nn.Flatten``
    so image batches ``(N, C, H, W)`` with ``C*H*W == sizes[0]`` are accepted.

    Initialisation: Kaiming-normal with the dense fan-in, ``w ~ N(0, 2 / fan_in)`` (He et al.
    2015, arXiv:1502.01852), zero biases -- the setting of the N2NSkip MLP pilot (docs/paper.md).
    PyTorch's default ``nn.Linear`` init has a third of that variance per layer, so the signal
    of a randomly pruned 5-layer MLP dies before training starts (measured: RP at 10% density
    stuck at chance on MNIST-5k with the default init).
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"mlp needs at least two positive layer sizes, got {sizes}")
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = nn.Linear(fan_in, fan_out)
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(layer.bias)
        layers.append(layer)
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def paper_mlp(num_classes: int = 10, in_features: int = 3072) -> nn.Sequential:
    """The N2NSkip paper's MLP: 3072-512-256-128-64-10 with ReLU (4042 units on CIFAR).

    Use ``in_features=784`` for 28 x 28 grey images (the MNIST pilot in docs/paper.md).
    """
    return mlp([in_features, 512, 256, 128, 64, num_classes])


def lenet300(num_classes: int = 10, in_features: int = 784) -> nn.Sequential:
    """LeNet-300-100 (LeCun et al. 1998): 784-300-100-10 with ReLU."""
    return mlp([in_features, 300, 100, num_classes])


# ---------------------------------------------------------------------------- VGG
_VGG_CONFIGS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman 2015, arXiv:1409.1556) in torchvision's layout.

    ``head="torchvision"``: adaptive 7 x 7 pooling and a 4096-4096 classifier (143M weights for
    VGG19 at 1000 classes, 139.6M at 10; the paper's count). ``head="cifar"``: global pooling and
    one 512 -> num_classes layer, as in most CIFAR pruning code.
    """

    def __init__(self, cfg: Sequence, num_classes: int = 10, *, batch_norm: bool = True,
                 head: str = "torchvision", in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(v))
                layers.append(nn.ReLU(inplace=True))
                channels = v
        self.features = nn.Sequential(*layers)
        if head == "torchvision":
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(channels * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(0.5),
                nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(0.5),
                nn.Linear(4096, num_classes),
            )
        elif head == "cifar":
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.classifier = nn.Linear(channels, num_classes)
        else:
            raise ValueError(f"head {head!r} is not one of ('torchvision', 'cifar')")
        _init_like_torchvision(self)
        for m in self.classifier.modules():
            if isinstance(m, nn.Linear):  # torchvision's VGG: N(0, 0.01) linears, zero bias
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def vgg16(num_classes: int = 10, *, batch_norm: bool = True, head: str = "torchvision",
          in_channels: int = 3) -> VGG:
    """VGG16 in torchvision's layout (see :class:`VGG`); ``in_channels=1`` for grey images."""
    return VGG(_VGG_CONFIGS["vgg16"], num_classes, batch_norm=batch_norm, head=head, in_channels=in_channels)


def vgg19(num_classes: int = 10, *, batch_norm: bool = True, head: str = "torchvision",
          in_channels: int = 3) -> VGG:
    """VGG19 in torchvision's layout (see :class:`VGG`); the paper's 143M-weight model."""
    return VGG(_VGG_CONFIGS["vgg19"], num_classes, batch_norm=batch_norm, head=head, in_channels=in_channels)


# ------------------------------------------------------------------------- ResNet
class _ResidualBlock(nn.Module):
    """What the ResNet blocks share: the shortcut join ``relu(out + shortcut(x))``.

    Subclasses register ``relu`` and ``downsample`` (None: identity shortcut) in their own
    ``__init__`` (the registration order, hence module names and ``repr``, is torchvision's).
    """

    relu: nn.Module
    downsample: nn.Module | None

    def _add_shortcut(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``relu(out + x)``, or ``relu(out + downsample(x))``: torchvision's in-place add,
        the shortcut computed after the main branch as torchvision orders it."""
        identity = x if self.downsample is None else self.downsample(x)
        out += identity
        return self.relu(out)


class BasicBlock(_ResidualBlock):
    """ResNet basic block (He et al. 2016, arXiv:1512.03385), torchvision's code."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self._add_shortcut(self.bn2(self.conv2(out)), x)


class Bottleneck(_ResidualBlock):
    """ResNet bottleneck block (1x1, 3x3, 1x1; stride on the 3x3 as in torchvision v1.5)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self._add_shortcut(self.bn3(self.conv3(out)), x)


class ResNet(nn.Module):
    """ResNet in torchvision's layout.

    ``stem="cifar"``: a 3x3 stride-1 first conv and no max-pool (the usual CIFAR adaptation,
    23.5M weights for ResNet50 at 10 classes, the paper's count); ``stem="imagenet"``: 7x7 stride 2
    and a 3x3 max-pool, exactly torchvision's.
    """

    def __init__(self, block: type[nn.Module], layers: Sequence[int], num_classes: int = 10,
                 *, stem: str = "cifar", in_channels: int = 3) -> None:
        super().__init__()
        self.inplanes = 64
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            raise ValueError(f"stem {stem!r} is not one of ('cifar', 'imagenet')")
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        _init_like_torchvision(self)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes: int = 10, *, stem: str = "cifar", in_channels: int = 3) -> ResNet:
    """ResNet18 (basic blocks 2-2-2-2); ``in_channels=1`` for grey images."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, stem=stem, in_channels=in_channels)


def resnet50(num_classes: int = 10, *, stem: str = "cifar", in_channels: int = 3) -> ResNet:
    """ResNet50 (bottlenecks 3-4-6-3); 23.5M weights at 10 classes."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, stem=stem, in_channels=in_channels)


def _init_like_torchvision(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) convs and unit BatchNorm, as torchvision does."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


#: Side of the square images a conv net is traced on when no input shape is given (CIFAR's).
DEFAULT_IMAGE_SIZE = 32

#: Model registry: name -> factory(num_classes=..., **kwargs).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "paper_mlp": paper_mlp,
    "lenet300": lenet300,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "resnet18": resnet18,
    "resnet50": resnet50,
}


@contextlib.contextmanager
def _seeded(seed: int | None):
    """The one place models are seeded: inside, torch's global CPU generator is seeded with
    ``seed``, and the caller's state is restored on exit (``torch.random.fork_rng``).
    ``None``: no seeding, the global state is used (and advanced)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_model(name: str, *, seed: int | None = 0, **kwargs) -> nn.Module:
    """Build a registered model with a seeded initialisation.

    ``seed`` seeds a private ``torch.Generator`` context (``torch.random.fork_rng``), so the
    global random state is left untouched; ``None`` uses the global state. A factory's own
    errors (a bad keyword) propagate unchanged; :func:`resolve_model` also takes user factories.

    Examples
    --------
    >>> a, b = build_model("lenet300", seed=1), build_model("lenet300", seed=1)
    >>> bool((a[1].weight == b[1].weight).all()), tuple(a[1].weight.shape)
    (True, (300, 784))
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models are {sorted(MODELS)}")
    with _seeded(seed):
        return MODELS[name](**kwargs)


def _import_from_cwd(module_name: str):
    """``importlib.import_module(module_name)``, also finding modules in the current directory.

    ``python -m`` puts the current directory on ``sys.path``, the installed ``n2ngraph`` script
    does not; a user's ``mynet.py`` next to them must resolve either way. When the module is not
    found otherwise, the current directory is appended to ``sys.path`` (after the installed
    packages, so a local file never shadows an installed module of the same name) and stays
    there, so that the module's own later imports, and processes started from this one (Dask
    workers unpickling its models), find it too.
    """
    import os
    import sys

    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        top = module_name.partition(".")[0]
        if exc.name != top or cwd in sys.path or "" in sys.path \
                or not any((Path(cwd) / f"{top}{suffix}").exists() for suffix in (".py", "")):
            raise
        sys.path.append(cwd)
        importlib.invalidate_caches()
        return importlib.import_module(module_name)


def model_factory(spec: str) -> Callable[..., nn.Module]:
    """The factory a model spec names, without calling it.

    Parameters
    ----------
    spec : str
        A key of :data:`MODELS` (``"vgg19"``) or a user factory ``"package.module:function"``,
        which is imported here (modules in the current directory are found too).

    Raises
    ------
    ValueError
        An unknown name (the message lists the valid ones), a module that fails to import, or a
        name that is not a callable of its module.

    Examples
    --------
    >>> model_factory("paper_mlp") is paper_mlp, model_factory("n2ngraph.models:lenet300") is lenet300
    (True, True)
    """
    if not isinstance(spec, str):
        raise TypeError(f"a model spec is a string (a registered name or 'package.module:function'), "
                        f"got {spec!r}")
    if ":" not in spec:
        if spec not in MODELS:
            raise ValueError(f"unknown model {spec!r}; valid models are {sorted(MODELS)} or "
                             "'package.module:function'")
        return MODELS[spec]
    module_name, _, attr = spec.partition(":")
    try:
        module = _import_from_cwd(module_name)
    except Exception as exc:  # noqa: BLE001 - the user's import failed: say which and why
        raise ValueError(f"cannot import model factory {spec!r}: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"cannot import model factory {spec!r}: module {module_name!r} has no callable "
                         f"{attr!r}")
    return factory


def _accepted(factory: Callable, keywords: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``keywords`` that ``factory`` names as keyword parameters (none when its
    signature cannot be read; a ``**kwargs`` catch-all names none)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    named = {name for name, p in params.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return {k: v for k, v in keywords.items() if k in named}


def resolve_model(spec: str, *, seed: int | None = 0, defaults: Mapping[str, Any] | None = None,
                  **kwargs) -> nn.Module:
    """A model from a registered name (``"vgg19"``) or a user factory ``"package.module:function"``.

    The factory (:func:`model_factory`) is called with ``kwargs`` under the seed of
    :func:`build_model`; it must return an ``nn.Module``.

    Parameters
    ----------
    spec : str
        See :func:`model_factory`.
    seed : int or None
        Seeds the initialisation (see :func:`build_model`).
    defaults : mapping, optional
        Keywords passed only when the factory names them as parameters and ``kwargs`` does not
        give them, e.g. ``{"num_classes": 10, "in_features": 64}`` from a dataset (the training
        command does so).
    **kwargs
        Keywords of the factory.

    Raises
    ------
    ValueError
        From :func:`model_factory`; or the factory raised (the message names the factory, the
        keywords and the error) or returned something other than an ``nn.Module``.

    Examples
    --------
    >>> resolve_model("lenet300", defaults={"in_features": 64, "head": "cifar"})[1]
    Linear(in_features=64, out_features=300, bias=True)
    """
    factory = model_factory(spec)
    kwargs = {**_accepted(factory, defaults or {}), **kwargs}
    try:
        with _seeded(seed):
            model = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the factory raised: say which, with what, and why
        called = f" (keywords {kwargs})" if kwargs else ""
        raise ValueError(f"model factory {spec!r} raised {type(exc).__name__}: {exc}{called}") from exc
    if not isinstance(model, nn.Module):
        raise ValueError(f"model factory {spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def parse_input_shape(text: str | Sequence[int]) -> tuple[int, ...]:
    """One sample's input shape from ``"C,H,W"`` (also ``"CxHxW"``, or ``"784"`` for a flat
    input), without the batch axis.

    Parameters
    ----------
    text : str or sequence of int
        Positive integers separated by commas or ``x``; a sequence of ints is checked and
        returned as a tuple.

    Returns
    -------
    tuple of int
        ``(C, H, W)`` for images, ``(F,)`` for flat inputs.

    Raises
    ------
    ValueError
        Empty, non-integer or non-positive entries, or more than 4 of them.

    Examples
    --------
    >>> parse_input_shape("1,28,28"), parse_input_shape("3x32x32"), parse_input_shape("784")
    ((1, 28, 28), (3, 32, 32), (784,))
    """
    accepted = "positive integers C,H,W (e.g. 1,28,28; or one number F for flat inputs)"
    if isinstance(text, str):
        parts = [p.strip() for p in text.replace("x", ",").replace("X", ",").split(",")]
        try:
            shape = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"input shape {text!r} is not {accepted}") from None
    else:
        try:
            shape = tuple(int(v) for v in text)
        except (TypeError, ValueError):
            raise ValueError(f"input shape {text!r} is not {accepted}") from None
        if any(int(v) != v for v in text):
            raise ValueError(f"input shape {text!r} is not {accepted}")
    if not 1 <= len(shape) <= 4 or min(shape) < 1:
        raise ValueError(f"input shape {text!r} is not {accepted}")
    return shape


def data_defaults(input_shape: Sequence[int], num_classes: int | None = None) -> dict[str, int]:
    """Factory keywords that fit a model to its inputs: ``in_features`` (the values of one
    sample, ``prod(input_shape)``: fully connected models), ``in_channels`` (``input_shape[0]`` of
    ``(C, H, W)`` images: conv nets) and, when given, ``num_classes``. Give them to
    :func:`resolve_model` as ``defaults=``, which passes each only to factories that name it.

    Examples
    --------
    >>> data_defaults((1, 28, 28), 10)
    {'in_features': 784, 'in_channels': 1, 'num_classes': 10}
    """
    shape = parse_input_shape(input_shape)
    out = {"in_features": math.prod(shape)}
    if len(shape) == 3:
        out["in_channels"] = shape[0]
    if num_classes is not None:
        out["num_classes"] = int(num_classes)
    return out


def example_input(model: nn.Module, *, batch: int = 1,
                  input_shape: str | Sequence[int] | None = None) -> torch.Tensor:
    """A zero input batch ``(batch, *input_shape)`` for tracing ``model``.

    ``input_shape`` (:func:`parse_input_shape`'s forms) is the shape of one sample, e.g. that of
    the training data (:func:`n2ngraph.data.input_shape`). Without it the shape is guessed from
    the model's first weight layer: Linear first ``(batch, in_features)``; Conv2d first
    ``(batch, C, 32, 32)`` (CIFAR-sized; :data:`DEFAULT_IMAGE_SIZE`).

    Raises
    ------
    ValueError
        No ``input_shape`` and no Linear or Conv2d layer to guess from; a malformed
        ``input_shape``.
    """
    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
    param = next(model.parameters(), None)
    dtype = torch.float32 if param is None or not param.is_floating_point() else param.dtype
    device = None if param is None else param.device
    if input_shape is not None:
        return torch.zeros(batch, *parse_input_shape(input_shape), dtype=dtype, device=device)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv2d layer to guess its input "
                         "shape from; give input_shape=(C, H, W)")
    weight = first.weight
    if isinstance(first, nn.Linear):
        return torch.zeros(batch, first.in_features, dtype=weight.dtype, device=weight.device)
    size = DEFAULT_IMAGE_SIZE
    return torch.zeros(batch, first.in_channels, size, size, dtype=weight.dtype, device=weight.device)

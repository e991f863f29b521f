"""Import torchvision (and timm) for the zoo tests and benchmark, whatever wheel is installed.

The torchvision wheel that pairs with the CPU ``torch==2.13.0`` on the project's machines is a
CUDA build: its C++ ops cannot load beside a CPU torch, and ``import torchvision`` fails with
"operator torchvision::nms does not exist" when it registers fake (meta) kernels for them.
Classification models never call those ops, so :func:`import_torchvision` skips the
registration of ops named ``torchvision::*`` while importing and restores
``torch.library.register_fake`` afterwards. Weights are never downloaded: build models with
``weights=None`` (torchvision) or ``pretrained=False`` (timm).

Neither library is a dependency of n2ngraph: callers skip (tests) or say so (benchmarks) when
:func:`import_torchvision` / :func:`import_timm` return ``None``.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import sys
from types import ModuleType

__all__ = ["TORCHVISION_CLASSIFIERS", "import_torchvision", "import_timm", "torchvision_classifiers", "layer_units", "fx_upstream", "graph_upstream",
           "dataflow_mismatches"]


#: torchvision 0.28's classification models (``torchvision.models.list_models``), listed here so
#: that collecting the zoo test needs no torchvision import.
TORCHVISION_CLASSIFIERS = (
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "densenet121",
    "densenet161", "densenet169", "densenet201", "efficientnet_b0", "efficientnet_b1",
    "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "efficientnet_b5", "efficientnet_b6",
    "efficientnet_b7", "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_v2_s", "googlenet",
    "inception_v3", "maxvit_t", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
    "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "regnet_x_16gf", "regnet_x_1_6gf",
    "regnet_x_32gf", "regnet_x_3_2gf", "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf",
    "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf", "regnet_y_32gf", "regnet_y_3_2gf",
    "regnet_y_400mf", "regnet_y_800mf", "regnet_y_8gf", "resnet101", "resnet152", "resnet18",
    "resnet34", "resnet50", "resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "squeezenet1_0", "squeezenet1_1", "swin_b", "swin_s", "swin_t", "swin_v2_b", "swin_v2_s",
    "swin_v2_t", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
    "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2",
    "wide_resnet50_2",
)


@contextlib.contextmanager
def _skip_torchvision_op_registration():
    import torch.library

    original = torch.library.register_fake

    def register_fake(op, *args, **kwargs):
        name = op if isinstance(op, str) else getattr(op, "_name", "")
        if str(name).startswith("torchvision::"):
            return lambda fn=None: fn  # the C++ op does not exist: register nothing
        return original(op, *args, **kwargs)

    torch.library.register_fake = register_fake
    try:
        yield
    finally:
        torch.library.register_fake = original


def import_torchvision() -> ModuleType | None:
    """``torchvision`` with its models importable, or None when it is not installed or broken."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    try:
        with _skip_torchvision_op_registration():
            return importlib.import_module("torchvision")
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return None


def import_timm() -> ModuleType | None:
    """``timm`` (which imports torchvision when present), or None when unavailable."""
    if import_torchvision() is None and importlib.util.find_spec("torchvision") is not None:
        return None
    try:
        return importlib.import_module("timm")
    except Exception:  # noqa: BLE001
        return None


def torchvision_classifiers() -> list[str]:
    """Names of torchvision's classification models (``torchvision.models.list_models``)."""
    tv = import_torchvision()
    if tv is None:
        return []
    return sorted(tv.models.list_models(module=tv.models))


def layer_units(gm, layer_paths: set[str]) -> dict[str, str]:
    """``{fx node name: unit}`` of the nodes that apply weight layers: a module call is the unit
    of its layer (named by its path); a function reading layers' weights (a fused op such as
    torchvision Swin's ``shifted_window_attention``) is one unit, named by the node."""
    units = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in layer_paths:
            units[node.name] = str(node.target)
        elif node.op in ("call_function", "call_method"):
            read = [a for a in node.all_input_nodes if a.op == "get_attr"
                    and str(a.target).removesuffix(".weight") in layer_paths]
            if read:
                units[node.name] = node.name
    return units


def fx_upstream(gm, shapes, units: dict[str, str]) -> dict[str, set[str]]:
    """``{unit: nearest upstream units or "input"}`` from the fx graph alone: a backward walk over
    tensor-valued nodes that depend on the input, stopping at the nodes of :func:`layer_units`
    and at placeholders (layers applied to constants only, such as Swin v2's position-bias MLP,
    are outside the activation graph)."""
    live: set[str] = set()  # nodes that depend on the input (others compute from constants)
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(a.name in live for a in node.all_input_nodes):
            live.add(node.name)
    shapes = {n for n in shapes if n in live}
    result: dict[str, set[str]] = {}
    for node in gm.graph.nodes:
        if node.name not in units or node.name not in live:
            continue
        found: set[str] = set()
        seen: set[str] = set()
        stack = [a for a in node.all_input_nodes if a.name in shapes]
        while stack:
            n = stack.pop()
            if n.name in seen:
                continue
            seen.add(n.name)
            if n.op == "placeholder":
                found.add("input")
            elif n.name in units:
                found.add(units[n.name])
            else:
                stack.extend(a for a in n.all_input_nodes if a.name in shapes)
        result.setdefault(units[node.name], set()).update(found)
    return result


def graph_upstream(graph, unit_of: dict[str, str] | None = None) -> dict[str, set[str]]:
    """The same sets read from the graph: follow blocks backwards from the source of each unit's
    layers (``unit_of``: layer path -> unit, default the path), through the unit's own layers."""
    unit_of = unit_of or {}
    into = collections.defaultdict(list)
    for b in graph.blocks:
        into[b.dst].append(b)
    first = graph.groups[0].name

    def unit(b) -> str:
        return unit_of.get(b.spec.module, b.spec.module)

    def producers(group: str, own: str, seen: set[str]) -> set[str]:
        if group in seen:
            return set()
        seen.add(group)
        out = {"input"} if group == first else set()
        for b in into[group]:
            if b.kind == "sequential" and unit(b) != own:
                out.add(unit(b))
            else:
                out |= producers(b.src, own, seen)
        return out

    result: dict[str, set[str]] = {}
    for b in graph.blocks:
        if b.kind == "sequential":
            result.setdefault(unit(b), set()).update(producers(b.src, unit(b), set()))
    return result


def _tensor_nodes(gm, model, x) -> set[str]:
    """Names of the fx nodes whose value holds a tensor (a tensor, or a tuple / list of them as
    ``split`` returns), from one eval-mode forward pass; sizes and shapes are left out."""
    import torch

    found: set[str] = set()

    def holds_tensor(v) -> bool:
        if isinstance(v, torch.Tensor):
            return True
        return isinstance(v, (tuple, list)) and any(holds_tensor(e) for e in v)

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if holds_tensor(out):
                found.add(n.name)
            return out

    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            Recorder(gm).run(x)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return found


def dataflow_mismatches(result, model, example_input) -> list[str]:
    """Weight layers of ``result.graph`` (a :class:`n2ngraph.trace.Trace`) whose nearest upstream
    layers differ between the graph and the fx data flow (:func:`fx_upstream`)."""
    from n2ngraph.masks import FUSED_WEIGHTS, PRUNABLE_TYPES

    gm, graph = result.module, result.graph
    shapes = _tensor_nodes(gm, model, example_input)
    # token-mixing Linear layers alias their group (docs/design.md): transparent to the walk
    mixing = set(graph.provenance.get("token_mixing", ()))
    paths = {p for p, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)} - mixing
    # a module with fused weights (MultiheadAttention) is one unit: its fused weights and its
    # Linear children (out_proj) are its layers
    fused = {p: m for p, m in model.named_modules() if isinstance(m, tuple(FUSED_WEIGHTS))}
    units = layer_units(gm, paths | set(fused))
    unit_of = {f"{p}.{name}": p for p, m in fused.items() for names in FUSED_WEIGHTS.values() for name in names}
    unit_of.update({f"{p}.{c}": p for p, m in fused.items() for c, sub in m.named_modules()
                    if c and isinstance(sub, PRUNABLE_TYPES)})
    for name, unit in units.items():  # the layers a fused unit reads
        node = next(n for n in gm.graph.nodes if n.name == name)
        for a in node.all_input_nodes:
            if a.op == "get_attr":
                unit_of[str(a.target).removesuffix(".weight")] = unit
    ref = fx_upstream(gm, shapes, units)
    got = graph_upstream(graph, unit_of)
    layers = dict.fromkeys(unit_of.get(b.spec.module, b.spec.module) for b in graph.blocks if b.kind == "sequential")
    return [u for u in layers if ref.get(u) != got.get(u)]

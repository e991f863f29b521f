"""n2ngraph: the connectivity of sparse neural networks as graphs.

Map of the public API (DESIGN.md, "The one data flow")::

    nn.Module --prune--> masks --to_graph--> NetworkGraph --add_n2nskip--> variant
                                                  |-- diffusion / metrics --> tables, figures
                                                  '-- to_model --> masked nn.Module --> training

- ``n2ngraph.graph``: ``NetworkGraph``, ``NodeGroup``, ``EdgeBlock`` (immutable topology).
- ``n2ngraph.io``: ``save_graph`` / ``load_graph`` (.npz + JSON header, never unpickles).
- ``n2ngraph.trace``: ``to_graph(model, masks)``, a PyTorch model traced with torch.fx.
- ``n2ngraph.models``: reference architectures (``paper_mlp``, ``lenet300``, ``vgg19``, ...).

Names are imported lazily on first use, so ``import n2ngraph`` stays fast and only the
torch-facing parts import torch.
"""

from importlib import import_module

from n2ngraph.graph import BLOCK_KINDS, EdgeBlock, NetworkGraph, NodeGroup

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "save_graph": "n2ngraph.io",
    "load_graph": "n2ngraph.io",
    "to_graph": "n2ngraph.trace",
    "models": "n2ngraph.models",
}

__all__ = ["BLOCK_KINDS", "EdgeBlock", "NetworkGraph", "NodeGroup", "__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'n2ngraph' has no attribute {name!r}")
    module = import_module(_LAZY[name])
    value = module if module.__name__.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)

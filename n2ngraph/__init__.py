"""n2ngraph: the connectivity of sparse neural networks as graphs.

Map of the public API (docs/design.md, "The one data flow")::

    nn.Module --prune--> masks --to_graph--> NetworkGraph --add_n2nskip--> variant
                                                  |-- diffusion / metrics --> tables, figures
                                                  '-- to_model --> masked nn.Module --> training

- ``n2ngraph.graph``: ``NetworkGraph``, ``NodeGroup``, ``EdgeBlock`` (immutable topology).
- ``n2ngraph.trace``: ``to_graph(model, masks)`` / ``trace``, a PyTorch model traced with torch.fx.
- ``n2ngraph.models``: reference architectures (``paper_mlp``, ``lenet300``, ``vgg19``, ...) and
  ``resolve_model`` (a registered name or ``package.module:function``, seeded).
- ``n2ngraph.pruning``: ``prune(model, method, density)`` at initialization.
- ``n2ngraph.recipes``: ``RECIPES``, ``Recipe``, ``get_recipe`` (how a variant is built).
- ``n2ngraph.pipeline``: ``variant(model, method, density, recipe=...)`` (prune, trace, skips).
- ``n2ngraph.n2nskip``: ``add_n2nskip``, ``add_resskip``, ``skip_initial_weights`` (graph edits).
- ``n2ngraph.metrics``: components, dead units, effective density, layer collapse.
- ``n2ngraph.diffusion``: ``heat_signature``, ``connectivity_distance``, ``heat_escaped``, ``scree``,
  ``saturation_time``, ``algebraic_connectivity``.
- ``n2ngraph.bridge``: ``to_model(graph, reference)``, masked models with N2NSkip modules.
- ``n2ngraph.data`` / ``n2ngraph.training``: offline datasets that state their sample shape
  (``input_shape``), the training loop and ``check_input_fits`` (graph, model and data shapes).
- ``n2ngraph.trained``: connectivity of trained networks (``trained_reference``,
  ``trained_connectivity``; the paper's Table 3 measurement on weighted adjacency).
- ``n2ngraph.skip_modules``: the modules ``to_model`` builds from (mask, ``N2NSkip``, ``ResSkip``).
- ``n2ngraph.compare``: the sweep behind ``n2ngraph compare`` (Dask).
- ``n2ngraph.io``: ``save_graph`` / ``load_graph`` (.npz + JSON header, never unpickles).
- ``n2ngraph.tables`` / ``n2ngraph.plotting``: pandas tables and matplotlib figures.

Names are imported lazily on first use, so ``import n2ngraph`` stays fast and only the
torch-facing parts import torch.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from n2ngraph.graph import BLOCK_KINDS, EdgeBlock, NetworkGraph, NodeGroup

try:  # one home for the version: pyproject.toml, as installed
    __version__ = version("n2ngraph")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "save_graph": "n2ngraph.io",
    "load_graph": "n2ngraph.io",
    "to_graph": "n2ngraph.trace",
    "models": "n2ngraph.models",
    "laplacian": "n2ngraph.diffusion",
    "heat_signature": "n2ngraph.diffusion",
    "connectivity_distance": "n2ngraph.diffusion",
    "heat_escaped": "n2ngraph.diffusion",
    "scree": "n2ngraph.diffusion",
    "saturation_time": "n2ngraph.diffusion",
    "algebraic_connectivity": "n2ngraph.diffusion",
    "DiffusionAccuracyWarning": "n2ngraph.diffusion",
    "prune": "n2ngraph.pruning",
    "metrics": "n2ngraph.metrics",
    "connected_components": "n2ngraph.metrics",
    "dead_units": "n2ngraph.metrics",
    "effective_density": "n2ngraph.metrics",
    "layer_collapse": "n2ngraph.metrics",
    "layer_density": "n2ngraph.metrics",
    "degree_stats": "n2ngraph.metrics",
    "DATASETS": "n2ngraph.data",
    "input_shape": "n2ngraph.data",
    "check_input_fits": "n2ngraph.training",
    "trained_reference": "n2ngraph.trained",
    "trained_connectivity": "n2ngraph.trained",
    "load_dataset": "n2ngraph.data",
    "TrainConfig": "n2ngraph.training",
    "train": "n2ngraph.training",
    "evaluate": "n2ngraph.training",
    "add_n2nskip": "n2ngraph.n2nskip",
    "add_resskip": "n2ngraph.n2nskip",
    "skip_initial_weights": "n2ngraph.n2nskip",
    "variant": "n2ngraph.pipeline",
    "dense_layer_names": "n2ngraph.pipeline",
    "RECIPES": "n2ngraph.recipes",
    "Recipe": "n2ngraph.recipes",
    "get_recipe": "n2ngraph.recipes",
    "to_model": "n2ngraph.bridge",
    "trace": "n2ngraph.trace",
    "CompareConfig": "n2ngraph.compare",
    "run_sweep": "n2ngraph.compare",
    "plot_adjacency": "n2ngraph.plotting",
    "plot_compare": "n2ngraph.plotting",
    "plot_train_curve": "n2ngraph.plotting",
    "plot_accuracy_vs_distance": "n2ngraph.plotting",
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

"""Shared helpers of the ``analysis/`` drivers (one driver per paper artifact).

Every driver has a frozen ``Config`` dataclass and a ``main(config) -> Path`` that writes into
``<config.results_root>/<artifact>-<hash>/``, where ``<hash>`` is the first 8 hex digits of the
SHA-1 of the config's result-defining fields (:func:`config_hash`; execution settings such as
the results root, worker count or Dask scheduler do not change the results and are left out), and
saves ``config.json`` beside the results (:func:`save_config`). Tables go through
``n2ngraph.tables.write_table`` (CSV + Markdown), figures through
``n2ngraph.plotting.save_figure`` (PNG + PDF).

Settings shared by several drivers are declared once: :class:`GraphSettings` (drivers that build
one pruned graph and its N2NSkip variant) and :class:`SweepSettings` (drivers that run a
``n2ngraph.compare`` sweep), whose defaults are those of :class:`n2ngraph.compare.CompareConfig`;
:func:`sweep_config` turns a driver's config into the sweep's without copying fields by hand.

Model specs are strings understood by :func:`n2ngraph.models.resolve_model`: a registered name
(``"vgg19"``) or ``"package.module:factory"``. The factories below give the CIFAR-headed and tiny
variants the small configs use (``"analysis.common:vgg16_cifar"``); they need the repository root
on ``sys.path`` (true when running ``python -m analysis.<driver>`` or pytest from the root).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from n2ngraph.compare import CompareConfig

__all__ = [
    "EXECUTION_FIELDS",
    "GraphSettings",
    "SweepSettings",
    "PAPER_LABELS",
    "base_parser",
    "comma_list",
    "config_from_args",
    "config_dict",
    "config_hash",
    "decode_state",
    "digits_vgg",
    "encode_state",
    "graph_title",
    "paper_label",
    "plural",
    "recipe_columns",
    "results_dir",
    "save_config",
    "sweep_config",
    "tiny_mlp",
    "tiny_vgg",
    "vgg16_cifar",
    "vgg19_cifar",
    "vgg19_reference",
]

#: Config fields that decide how a driver runs, not what it computes (excluded from the hash).
EXECUTION_FIELDS = frozenset({"results_root", "inline", "workers", "scheduler", "progress", "threads",
                              "report_only"})

#: (pruning method, variant) -> the paper's name (docs/paper.md): RP is random pruning with equal
#: fan-in (``expander``), CSP is connection-sensitivity pruning (``snip``).
PAPER_LABELS = {
    ("expander", "plain"): "RP",
    ("expander", "n2nskip"): "N2NSkip-RP",
    ("snip", "plain"): "CSP",
    ("snip", "n2nskip"): "N2NSkip-CSP",
    ("none", "dense"): "dense",
}


@dataclass(frozen=True)
class GraphSettings:
    """Settings of a driver that builds the dense reference, one pruned graph and its N2NSkip
    variant (``n2ngraph.pipeline.variant``); defaults as in ``CompareConfig``.

    Attributes
    ----------
    model : str
        Model spec (``n2ngraph.models.resolve_model``).
    method : str
        Pruning method (``n2ngraph.pruning.METHODS``); the paper's figures use RP (``expander``).
    density : float
        Total kept fraction of the dense weights, in (0, 1].
    recipe : str
        How the pruned and N2NSkip graphs are built (``n2ngraph.recipes.RECIPES``).
    n2nskip_fraction : float or None
        Share ``f`` of the budget given to N2NSkip connections; None keeps the recipe's (0.5).
    seed : int
        Seeds the model init, the calibration batch, the pruning and the skips.
    dataset, batch_size : str, int
        Calibration batch for data-driven methods (snip, grasp).
    """

    model: str = CompareConfig.model
    method: str = "expander"
    density: float = 0.1
    recipe: str = CompareConfig.recipe
    n2nskip_fraction: float | None = CompareConfig.n2nskip_fraction
    seed: int = 0
    dataset: str = CompareConfig.dataset
    batch_size: int = CompareConfig.batch_size
    results_root: str = "results"


@dataclass(frozen=True)
class SweepSettings:
    """Settings of a driver that runs ``n2ngraph.compare`` sweeps: the ``CompareConfig`` fields
    every such driver has, with its defaults, and how cells run (``inline``, ``workers``,
    ``scheduler``: ``n2ngraph.compare.run_sweep``), which do not change the results."""

    recipe: str = CompareConfig.recipe
    n2nskip_fraction: float | None = CompareConfig.n2nskip_fraction
    times: tuple[float, ...] | None = CompareConfig.times
    t_lambda2: tuple[float, ...] = CompareConfig.t_lambda2
    dataset: str = CompareConfig.dataset
    batch_size: int = CompareConfig.batch_size
    weighted: bool = CompareConfig.weighted
    inline: bool = False
    workers: int = 2
    scheduler: str | None = None
    results_root: str = "results"


def sweep_config(config: Any, **fields: Any) -> CompareConfig:
    """The ``CompareConfig`` of a driver's ``config``: every field the two share, and ``fields``
    on top (e.g. ``model=`` for one model of several)."""
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(CompareConfig)
              if hasattr(config, f.name)}
    return CompareConfig(**{**shared, **fields})


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a nested config
        return config_dict(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def config_dict(config: Any) -> dict:
    """All fields of a dataclass config as JSON-ready values (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass config instance, got {type(config).__name__}")
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def config_hash(config: Any) -> str:
    """First 8 hex digits of the SHA-1 of the config's result-defining fields (sorted JSON)."""
    fields = {k: v for k, v in config_dict(config).items() if k not in EXECUTION_FIELDS}
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


def results_dir(artifact: str, config: Any) -> Path:
    """``<config.results_root>/<artifact>-<config_hash>``, created if needed."""
    root = Path(getattr(config, "results_root", "results"))
    folder = root / f"{artifact}-{config_hash(config)}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_config(folder: str | Path, artifact: str, config: Any, **extra: Any) -> Path:
    """Write ``config.json`` (artifact, config fields, hash, and ``extra`` such as resolved
    diffusion times) into ``folder`` atomically; returns its path."""
    from n2ngraph import __version__
    from n2ngraph.io import atomic_write

    meta = {"artifact": artifact, "hash": config_hash(config), "n2ngraph": __version__,
            "config": config_dict(config), **{k: _jsonable(v) for k, v in extra.items()}}
    text = json.dumps(meta, indent=2)
    return atomic_write(Path(folder) / "config.json", lambda tmp: Path(tmp).write_text(text))


def paper_label(method: str, variant: str) -> str:
    """The paper's name for a (method, variant) pair, else ``method`` / ``N2NSkip-method``."""
    if (method, variant) in PAPER_LABELS:
        return PAPER_LABELS[(method, variant)]
    return f"N2NSkip-{method}" if variant == "n2nskip" else method


def recipe_columns(recipe) -> dict:
    """Table columns naming a recipe: ``recipe`` (its name) and ``recipe_fields`` (its other
    fields as compact JSON), the columns of ``n2ngraph compare``'s tables."""
    fields = {k: v for k, v in recipe.to_json().items() if k != "name"}
    return {"recipe": recipe.name,
            "recipe_fields": json.dumps(fields, sort_keys=True, separators=(",", ":"))}


def graph_title(config: GraphSettings) -> str:
    """One line stating what a :class:`GraphSettings` figure shows: model, recipe, pruning
    method (the paper's name) at its density, the N2NSkip share, the calibration data of a
    data-driven method, and the seed."""
    from n2ngraph.pruning import METHODS
    from n2ngraph.recipes import resolve_recipe

    recipe = resolve_recipe(config.recipe, n2nskip_fraction=config.n2nskip_fraction)
    name = paper_label(config.method, "plain")
    method = name if name == config.method else f"{name} ({config.method})"
    parts = [f"model {config.model}", f"recipe {recipe.name}", f"{method} at density {config.density:g}",
             f"N2NSkip share {recipe.n2nskip_fraction:g} of the budget"]
    if config.method in METHODS and METHODS[config.method].needs_data:
        parts.append(f"calibration data {config.dataset} (batch {config.batch_size})")
    parts.append(f"seed {config.seed}")
    return ", ".join(parts)


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``3 epochs``: ``count`` and ``noun``, with an ``s`` unless ``count`` is 1."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def comma_list(kind: type = str):
    """An argparse ``type``: a comma-separated list (``0.1,0.02``) as a tuple of ``kind``, as
    every driver takes lists; a bad item is a one-line argparse error naming it."""
    def parse(text: str) -> tuple:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        try:
            return tuple(kind(item) for item in items)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__} values, got {text!r}") from None

    parse.__name__ = f"comma-separated {kind.__name__} list"
    return parse


def config_from_args(config: Any, args: argparse.Namespace, names: tuple[str, ...]) -> Any:
    """``config`` with every option in ``names`` that was given on the command line (not None),
    plus ``inline=True`` when ``--inline`` was passed."""
    changes = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if getattr(args, "inline", False):
        changes["inline"] = True
    return dataclasses.replace(config, **changes)


def base_parser(description: str, *, recipe: bool = True,
                results_root: str = "results") -> argparse.ArgumentParser:
    """The options every driver shares: ``--small``, ``--results-root`` (its help names the
    driver's default, ``results_root``) and (``recipe=True``) ``--recipe``."""
    from n2ngraph.recipes import RECIPES

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--small", action="store_true",
                        help="the driver's small config (runs in well under a minute on a CPU)")
    parser.add_argument("--results-root", default=None,
                        help=f"parent folder of the results folder (default: {results_root})")
    if recipe:
        parser.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                            help="how plain and N2NSkip graphs are built (default: paper; "
                            "docs/recipes.md)")
    return parser


def encode_state(model) -> str:
    """A model's ``state_dict`` as JSON-ready text: safetensors bytes, zlib-compressed, base64.

    Lets a sweep cell (whose row is JSON, ``n2ngraph.compare.run_cells``) carry its trained
    weights back to the client without a shared file system. Pruned weights are exact zeros
    (``n2ngraph.skip_modules.MaskParametrization``), so a sparse model compresses to about its
    kept fraction. Read back with :func:`decode_state`.
    """
    import base64
    import zlib

    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return base64.b64encode(zlib.compress(save(state), 6)).decode("ascii")


def decode_state(text: str) -> dict:
    """The ``state_dict`` (name -> CPU tensor) that :func:`encode_state` wrote; safetensors
    parses tensors only, so loading never executes code. Raises ValueError on damaged text."""
    import base64
    import binascii
    import zlib

    from safetensors.torch import load

    try:
        return load(zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True)))
    except (binascii.Error, zlib.error, UnicodeError, ValueError) as exc:
        raise ValueError(f"not an encoded state_dict ({exc})") from None


# --------------------------------------------------------------------------- model factories
def vgg16_cifar(num_classes: int = 10):
    """VGG16 with the CIFAR head (global pooling, one 512 -> classes layer)."""
    from n2ngraph.models import vgg16

    return vgg16(num_classes, head="cifar")


def vgg19_cifar(num_classes: int = 10):
    """VGG19 with the CIFAR head (global pooling, one 512 -> classes layer)."""
    from n2ngraph.models import vgg19

    return vgg19(num_classes, head="cifar")


def vgg19_reference(num_classes: int = 10):
    """VGG19 as the N2NSkip authors' reference code builds it for CIFAR: the batch-normalised
    VGG19 conv body, global pooling, and a 512-512-``num_classes`` classifier (Linear, ReLU,
    Linear); 20.3M weights at 10 classes. Table 3 uses it (``docs/recipes.md`` says why).
    Initialisation as :class:`n2ngraph.models.VGG` (Kaiming fan-out convs, ``N(0, 0.01)``
    linears)."""
    from torch import nn

    from n2ngraph.models import vgg19

    model = vgg19(num_classes, head="cifar")
    model.classifier = nn.Sequential(nn.Linear(512, 512), nn.ReLU(True), nn.Linear(512, num_classes))
    for m in model.classifier.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


def tiny_vgg(num_classes: int = 10):
    """A 4-conv VGG (16-16-M-32-M-32-M, CIFAR head) for tests and notebooks: 109 channel nodes."""
    from n2ngraph.models import VGG

    return VGG([16, 16, "M", 32, "M", 32, "M"], num_classes, head="cifar")


def digits_vgg(num_classes: int = 10, in_channels: int = 1):
    """A small batch-normalised VGG for 8 x 8 images (``analysis/conv_reproduction.py``):
    three stages of two 3 x 3 convs, 32-32-M-64-64-M-128-128-M, global pooling and one
    128 -> ``num_classes`` Linear (CIFAR head); 287k weights at 10 classes, 387 channel nodes.
    Two convs per stage give the paper recipe's VGG skips (a stage's input to the first conv of
    the next stage) a span of 2; the widths keep the recipe's dense stem and classifier (1,568
    weights) inside a 1% budget."""
    from n2ngraph.models import VGG

    return VGG([32, 32, "M", 64, 64, "M", 128, 128, "M"], num_classes, head="cifar",
               in_channels=in_channels)


def tiny_mlp(num_classes: int = 10):
    """A 64-32-16-10 MLP (122 nodes; 8 x 8 digits in) for tests and notebooks."""
    from n2ngraph.models import mlp

    return mlp([64, 32, 16, num_classes])

"""Named recipes: how a pruned graph and its N2NSkip variant are built.

A :class:`Recipe` fixes every choice that turns ``(model, method, density)`` into a graph
(:func:`n2ngraph.pipeline.variant`): where the N2NSkip connections go, their kernel and the order
of their ops, the granularity of random masks on conv layers, which layers stay dense, the scope
of score-based pruners and the share of the budget given to skips. Plain and N2NSkip rows of one
table are built with one recipe, and every table names it.

Registry (``RECIPES``)
----------------------
============ =========== ============ ================== =========== ==================== =========
name         wiring      skip_kernel  skip_order         granularity dense_layers         scope
============ =========== ============ ================== =========== ==================== =========
paper        blocks      same         conv-bn-act-pool   channel     stem, classifier     global
all-pairs    all-pairs   1            pool-conv-act      weight      (none)               layerwise
============ =========== ============ ================== =========== ==================== =========

Both put half the budget on skips (``n2nskip_fraction=0.5``). ``skip_downsample`` is ``"stride"``
in ``"paper"`` (a skip into a ResNet block that halves the resolution strides like the block's
conv) and ``"pool"`` in ``"all-pairs"``. ``"paper"`` follows the N2NSkip
paper (Subramaniam & Sharma, BMVC 2020, arXiv:2208.03662) and its authors' public reference code
(see ``docs/recipes.md``); ``"all-pairs"`` is the exploratory recipe this package used first.
On an MLP (no conv layer) the two recipes build the same skips: ``"blocks"`` wiring falls back to
every non-consecutive pair and the conv-only fields have nothing to act on; they still differ in
the scope of score-based pruners.

A recipe is a frozen dataclass: derive a new one with ``dataclasses.replace`` and give it a new
name, e.g. ``replace(RECIPES["paper"], n2nskip_fraction=0.25, name="paper-f0.25")``, or with
:func:`resolve_recipe`, which names the derived recipe the one way every sweep and table does.

This module also holds the vocabularies of mask building that recipes, pruning and N2NSkip share
(:data:`SCOPES`, :data:`GRANULARITIES`); it imports nothing heavy, so the graph core can use them.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, replace

__all__ = ["DENSE_ROLES", "GRANULARITIES", "RECIPES", "Recipe", "SCOPES", "SKIP_DOWNSAMPLES",
           "SKIP_ORDERS", "WIRINGS", "get_recipe", "resolve_recipe"]

#: Named skip wirings (an ``int >= 2`` is also accepted: every pair up to that span).
WIRINGS = ("blocks", "all-pairs")
#: Op orders of a skip module (see :class:`Recipe`).
SKIP_ORDERS = ("conv-bn-act-pool", "pool-conv-act")
#: How a conv skip into a smaller target reaches the target's size (see :class:`Recipe`).
SKIP_DOWNSAMPLES = ("stride", "pool")
#: Mask granularities on conv layers: single weights (kernel taps), or whole kernels (a kept
#: channel pair keeps all its taps). The first is the default of pruning and of N2NSkip.
GRANULARITIES = ("weight", "channel")
#: Pruning scopes: one budget per layer, or one threshold over the whole model.
SCOPES = ("layerwise", "global")
#: Layer roles that a recipe can keep dense (conv nets only), found on the traced graph.
DENSE_ROLES = ("stem", "downsample", "classifier")


@dataclass(frozen=True)
class Recipe:
    """How a variant is built (see the module docstring for the registry).

    Parameters
    ----------
    name : str
        Recorded in every graph's provenance and every table.
    wiring : {"blocks", "all-pairs"} or int >= 2
        Where N2NSkip connections go (:func:`n2ngraph.n2nskip.add_n2nskip`).

        - ``"blocks"``: one skip per block, from the block's input to its output. Residual nets:
          one skip per residual sum, from the block's input (the shallowest group feeding the
          sum) to the sum. Plain conv chains (VGG): the convs are split into stages of one
          spatial size, and each stage's input feeds the first conv of the next stage (VGG16
          and VGG19: 4 skips). Networks without conv layers: every non-consecutive pair.
          *Paper:* Sec. 3.1 describes a skip across one block (weight ``C1 x C4 x f x f`` for a
          three-layer block); the reference code wires a VGG16 stage's input into the first
          conv of the next stage, a ResNet basic block's input to its output, and an MLP from
          every layer to every later non-consecutive layer (10 skips for 5 layers).
        - ``"all-pairs"``: every group to every later non-consecutive group (span >= 2 in the
          chain of weight layers); on ResNet50 that is 1,202 skip blocks.
        - ``int k``: all pairs of span at most ``k``.
    skip_kernel : "same" or odd int
        Kernel ``f`` of conv skips. ``"same"``: the largest kernel of the sequential convs the
        skip spans (3 in VGG and ResNet blocks). *Paper:* ``f x f``, the block's own kernel, in
        Sec. 3.1 and the reference code (3x3 skip convs).
    skip_order : {"conv-bn-act-pool", "pool-conv-act"}
        Ops of a conv skip. ``"conv-bn-act-pool"``: the sparse conv at the source resolution,
        BatchNorm over the target's channels, the target's non-linearity ``g``, then adaptive
        max-pooling to the target's size when the sizes differ. *Paper:* the reference code's
        skip convs are followed by BatchNorm and ReLU and max-pooled to the target size.
        ``"pool-conv-act"``: adaptive average pooling to the target size first, then the conv
        and ``g`` (no BatchNorm): cheaper, the order this package used first.
    granularity : {"channel", "weight"}
        Random masks (``random``, ``expander``) on conv layers, and the skip masks on conv
        skips. ``"channel"``: a kept channel pair keeps its whole kernel. *Paper:* the reference
        code's RP is channel-level expander sparsity (equal fan-in when a layer has more input
        than output channels, else equal fan-out) and its skip masks are whole kernels.
        ``"weight"``: every kernel tap is drawn on its own (VGG19 at 2% then keeps 16.6% of its
        channel pairs). Linear layers are the same under both.
    dense_layers : tuple of {"stem", "downsample", "classifier"}
        Roles of layers left dense on conv nets, paid from the budget (the other layers share
        what is left). Roles are found on the traced graph (:func:`n2ngraph.pipeline.
        dense_layer_names`): the stem is the first conv, the classifier the layer into the
        output group, a downsample a single conv into a residual sum parallel to a deeper path.
        Ignored on networks without conv layers. *Paper:* the reference code leaves the stem
        conv, ResNet downsample convs and VGG's last Linear dense. The ``"paper"`` recipe keeps
        the stem and the classifier only: ResNet50's downsample convs hold 11.8% of its weights,
        more than the whole budget of the paper's 10%, 5% and 2% rows.
    scope : {"global", "layerwise"}
        Scope of score-based pruners (``magnitude``, ``snip``, ``grasp``, ``synflow``); random
        masks are always layerwise. *Paper:* CSP is SNIP with one global threshold.
    n2nskip_fraction : float in (0, 1)
        Share of the budget on N2NSkip connections: at density ``d`` the network is pruned to
        ``d * (1 - f)`` and the skips get the rest. *Paper:* half (10% = 5% + 5%).
    skip_downsample : {"stride", "pool"}
        How a conv skip reaches a target of lower resolution. ``"stride"``: where the convs on
        the paths the skip spans reduce the resolution by striding (a ResNet block whose first
        conv, and projection shortcut, have stride 2), the skip conv takes the same stride and
        needs no pooling, like the block's own conv; where a pooling layer reduces it (a VGG
        stage), the skip pools as ``skip_order`` says. ``"pool"``: every such skip pools as
        ``skip_order`` says. *Paper:* the reference code's only skips into smaller targets are
        VGG's, which pool; it has no skip into a ResNet block that changes shape (it skipped
        those blocks). Topology (the graph's edges, so heat, F and every connectivity figure) is
        the same under both; the trained model differs, and a strided skip computes at the
        target's resolution (a quarter of the positions for stride 2).
    """

    name: str
    wiring: str | int
    skip_kernel: str | int
    skip_order: str
    granularity: str
    dense_layers: tuple[str, ...]
    scope: str
    n2nskip_fraction: float
    skip_downsample: str = "pool"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"recipe name must be a non-empty string, got {self.name!r}")
        w = self.wiring
        if isinstance(w, bool) or not (w in WIRINGS or (isinstance(w, numbers.Integral) and w >= 2)):
            raise ValueError(f"wiring must be one of {WIRINGS} or an integer >= 2, got {w!r}")
        k = self.skip_kernel
        if k != "same" and (isinstance(k, bool) or not isinstance(k, numbers.Integral)
                            or k < 1 or k % 2 == 0):
            raise ValueError(f"skip_kernel must be 'same' or an odd integer >= 1, got {k!r}")
        if self.skip_order not in SKIP_ORDERS:
            raise ValueError(f"skip_order must be one of {SKIP_ORDERS}, got {self.skip_order!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        roles = self.dense_layers
        if isinstance(roles, str) or not all(r in DENSE_ROLES for r in roles):
            raise ValueError(f"dense_layers must be a tuple of roles from {DENSE_ROLES}, got {roles!r}")
        object.__setattr__(self, "dense_layers", tuple(roles))
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        f = self.n2nskip_fraction
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0 < f < 1:
            raise ValueError(f"n2nskip_fraction must lie in (0, 1), got {f!r}")
        object.__setattr__(self, "n2nskip_fraction", float(f))
        if self.skip_downsample not in SKIP_DOWNSAMPLES:
            raise ValueError(f"skip_downsample must be one of {SKIP_DOWNSAMPLES}, "
                             f"got {self.skip_downsample!r}")
        if isinstance(w, numbers.Integral) and not isinstance(w, str):
            object.__setattr__(self, "wiring", int(w))
        if k != "same":
            object.__setattr__(self, "skip_kernel", int(k))

    def to_json(self) -> dict:
        """All fields as JSON-ready values (``dense_layers`` as a list)."""
        out = asdict(self)
        out["dense_layers"] = list(self.dense_layers)
        return out


#: Registry of named recipes: ``"paper"`` (the default) and ``"all-pairs"``.
RECIPES: dict[str, Recipe] = {
    "paper": Recipe(name="paper", wiring="blocks", skip_kernel="same",
                    skip_order="conv-bn-act-pool", granularity="channel",
                    dense_layers=("stem", "classifier"), scope="global", n2nskip_fraction=0.5,
                    skip_downsample="stride"),
    "all-pairs": Recipe(name="all-pairs", wiring="all-pairs", skip_kernel=1,
                        skip_order="pool-conv-act", granularity="weight", dense_layers=(),
                        scope="layerwise", n2nskip_fraction=0.5, skip_downsample="pool"),
}


def get_recipe(recipe: str | Recipe) -> Recipe:
    """The :class:`Recipe` named ``recipe`` (a ``Recipe`` is returned as is).

    Raises
    ------
    ValueError
        Unknown name; the message lists the valid ones.
    TypeError
        Neither a string nor a ``Recipe``.
    """
    if isinstance(recipe, Recipe):
        return recipe
    if not isinstance(recipe, str):
        raise TypeError(f"recipe must be a name or a Recipe, got {type(recipe).__name__}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; valid recipes are {sorted(RECIPES)}")
    return RECIPES[recipe]


def resolve_recipe(recipe: str | Recipe, *, n2nskip_fraction: float | None = None,
                   scope: str | None = None) -> Recipe:
    """``recipe`` with another skip fraction and/or pruner scope, renamed so tables tell it apart.

    Parameters
    ----------
    recipe : str or Recipe
        As for :func:`get_recipe`.
    n2nskip_fraction : float in (0, 1), optional
        When given and different from the recipe's, the result has it and is named
        ``"<name>-f<fraction>"`` (``:g`` format).
    scope : {"layerwise", "global"}, optional
        When given and different from the recipe's, the result has it and ``"-<scope>"`` is
        appended to the name (after the fraction's suffix).

    Returns
    -------
    Recipe
        The recipe itself when nothing differs.

    Raises
    ------
    ValueError
        Unknown recipe, a fraction outside (0, 1) or an unknown scope (the message names the
        value and the accepted ones).

    Examples
    --------
    >>> resolve_recipe("paper", n2nskip_fraction=0.25).name
    'paper-f0.25'
    >>> resolve_recipe("paper", n2nskip_fraction=0.5, scope="layerwise").name
    'paper-layerwise'
    """
    r = get_recipe(recipe)
    f = n2nskip_fraction
    if f is not None:
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0 < f < 1:
            raise ValueError(f"n2nskip_fraction must lie in (0, 1), got {f!r}")
        if float(f) != r.n2nskip_fraction:
            r = replace(r, n2nskip_fraction=float(f), name=f"{r.name}-f{float(f):g}")
    if scope is not None and scope != r.scope:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; valid scopes are {list(SCOPES)}")
        r = replace(r, scope=scope, name=f"{r.name}-{scope}")
    return r

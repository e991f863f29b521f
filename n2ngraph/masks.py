"""Masks of prunable weights: which weights exist, validating user masks, reading them off a model.

A mask set is a ``{param_name: bool tensor}`` dict keyed by the weight's qualified name in the
model (``"features.0.weight"``), one entry per prunable weight, each of the weight's shape;
``True`` = kept. The prunable weights are the ``weight`` of every ``nn.Linear`` and ``nn.Conv2d``
and the fused projections of :data:`FUSED_WEIGHTS`: ``nn.MultiheadAttention``'s
``in_proj_weight`` (``(3E, E)``, the q | k | v rows; or ``q_proj_weight`` / ``k_proj_weight`` /
``v_proj_weight`` when keys or values have another width), named by their own parameter
(``"encoder.layers.0.self_attention.in_proj_weight"``); its ``out_proj`` is a Linear. Models
pruned with ``torch.nn.utils.prune`` or ``torch.nn.utils.parametrize`` (on ``weight``, or on a
fused weight's own name) are understood: their masks are read with :func:`masks_of`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["PRUNABLE_TYPES", "FUSED_WEIGHTS", "FusedWeight", "prunable_weights", "weight_name",
           "weight_of", "masks_of", "validate_masks"]

#: Module types whose ``weight`` is prunable (docs/design.md, "Pruning at initialization").
PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)

#: Prunable weights that are not a module's ``weight``: ``{module type: parameter names}``, each
#: a ``(out_features, in_features)`` projection (a parameter that is None is absent).
FUSED_WEIGHTS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.MultiheadAttention: ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"),
}


class FusedWeight:
    """A prunable weight held in a module under another name than ``weight`` (:data:`FUSED_WEIGHTS`):
    the value :func:`prunable_weights` gives for it, with the attributes pruning reads off a
    Linear. ``weight`` is the module's parameter ``name`` (what the module computes with),
    ``bias`` the bias of those rows (``in_proj_bias`` for ``in_proj_weight``, else None).

    A view made on each call of :func:`prunable_weights`: compare ``module`` and ``name``, not
    identities.
    """

    __slots__ = ("module", "name")

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module = module
        self.name = name

    @property
    def weight(self) -> torch.Tensor:
        return getattr(self.module, self.name)

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.module, "in_proj_bias", None) if self.name == "in_proj_weight" else None

    def __repr__(self) -> str:
        return f"FusedWeight({type(self.module).__name__}.{self.name}, shape={tuple(weight_of(self).shape)})"


def _fused_names(module: nn.Module) -> tuple[str, ...]:
    for cls, names in FUSED_WEIGHTS.items():
        if isinstance(module, cls):
            return tuple(n for n in names if _raw(module, n) is not None)
    return ()


def _raw(module: nn.Module, name: str) -> torch.Tensor | None:
    """The stored values of parameter ``name``: the original under ``torch.nn.utils.prune``
    (``<name>_orig``) or a parametrization, else the attribute."""
    if hasattr(module, f"{name}_orig"):
        return getattr(module, f"{name}_orig")
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and name in parametrizations:
        return parametrizations[name].original
    return getattr(module, name, None)


def weight_name(path: str) -> str:
    """The weight name of a graph block's layer (its ``spec.module``): ``"<path>.weight"`` for a
    module, the path itself for a fused weight (which names its parameter, ``"<mha
    path>.in_proj_weight"``), ``"weight"`` for the model itself.

    Examples
    --------
    >>> weight_name("features.0"), weight_name("blocks.0.attn.in_proj_weight"), weight_name("")
    ('features.0.weight', 'blocks.0.attn.in_proj_weight', 'weight')
    """
    last = path.rpartition(".")[2]
    if any(last in names for names in FUSED_WEIGHTS.values()):
        return path
    return f"{path}.weight" if path else "weight"


def prunable_weights(model: nn.Module) -> dict[str, nn.Module | FusedWeight]:
    """``{"<module path>.weight": module}`` for every Linear/Conv2d of ``model`` and
    ``{"<module path>.<name>": FusedWeight}`` for every fused weight (:data:`FUSED_WEIGHTS`), in
    module order (a MultiheadAttention's ``in_proj_weight`` before its ``out_proj.weight``).

    A module reachable under several paths (shared weights) is listed once, by its first path.

    Examples
    --------
    >>> from n2ngraph import models
    >>> list(prunable_weights(models.lenet300()))
    ['1.weight', '3.weight', '5.weight']
    """
    seen: set[int] = set()
    out: dict[str, nn.Module] = {}
    for path, module in model.named_modules():
        if id(module) in seen:
            continue
        if isinstance(module, PRUNABLE_TYPES):
            seen.add(id(module))
            out[f"{path}.weight" if path else "weight"] = module
        for name in _fused_names(module):
            seen.add(id(module))
            out[f"{path}.{name}" if path else name] = FusedWeight(module, name)
    return out


def weight_of(module: nn.Module | FusedWeight) -> torch.Tensor:
    """The weight values a module computes with, without masking: the raw parameter, or the
    ``weight_orig`` of ``torch.nn.utils.prune``, or the original of a parametrization (of the
    fused parameter, for a :class:`FusedWeight`)."""
    if isinstance(module, FusedWeight):
        return _raw(module.module, module.name)
    if hasattr(module, "weight_orig"):
        return module.weight_orig
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        return parametrizations["weight"].original
    return module.weight


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks already on ``model``: ``torch.nn.utils.prune`` buffers (``weight_mask``) or any
    parametrization of ``weight`` with a boolean/0-1 ``mask`` attribute. Layers without one are
    omitted (they are dense)."""
    out: dict[str, torch.Tensor] = {}
    for name, module in prunable_weights(model).items():
        attr = "weight"
        if isinstance(module, FusedWeight):
            module, attr = module.module, module.name
        mask = getattr(module, f"{attr}_mask", None)
        parametrizations = getattr(module, "parametrizations", None)
        if mask is None and parametrizations is not None and attr in parametrizations:
            for p in parametrizations[attr]:
                mask = getattr(p, "mask", None)
                if mask is not None:
                    break
        if mask is not None:
            out[name] = mask.detach().to(torch.bool)
    return out


def validate_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Check a mask set against ``model`` and return it as ``{name: bool tensor}``.

    Raises
    ------
    TypeError
        ``masks`` is not a mapping, or a value is not a tensor/array.
    ValueError
        A name is not a prunable weight of the model (the valid names are listed), or a mask's
        shape differs from its weight's.
    """
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict {{param_name: bool tensor}}, got {type(masks).__name__}")
    weights = prunable_weights(model)
    unknown = [k for k in masks if k not in weights]
    if unknown:
        raise ValueError(
            f"masks name {unknown} which are not prunable weights of {type(model).__name__}; "
            f"valid names are {list(weights)}"
        )
    out: dict[str, torch.Tensor] = {}
    for name, mask in masks.items():
        if not isinstance(mask, torch.Tensor):
            try:
                mask = torch.as_tensor(mask)
            except Exception as exc:  # noqa: BLE001 - report what was passed
                raise TypeError(f"mask {name!r} is a {type(mask).__name__}, not a tensor") from exc
        shape = tuple(weight_of(weights[name]).shape)
        if tuple(mask.shape) != shape:
            raise ValueError(f"mask {name!r} has shape {tuple(mask.shape)}; its weight has shape {shape}")
        if mask.dtype != torch.bool:
            if mask.is_floating_point() or mask.dtype in (torch.uint8, torch.int8, torch.int32, torch.int64):
                if not bool(((mask == 0) | (mask == 1)).all()):
                    raise ValueError(f"mask {name!r} has values other than 0 and 1")
            mask = mask != 0
        out[name] = mask
    return out

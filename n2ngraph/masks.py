"""Masks of prunable weights: which weights exist, validating user masks, reading them off a model.

A mask set is a ``{param_name: bool tensor}`` dict keyed by the weight's qualified name in the
model (``"features.0.weight"``), one entry per prunable weight (``nn.Linear`` and ``nn.Conv2d``),
each of the weight's shape; ``True`` = kept. Models pruned with ``torch.nn.utils.prune`` or
``torch.nn.utils.parametrize`` are understood: their masks are read with :func:`masks_of`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["PRUNABLE_TYPES", "prunable_weights", "weight_of", "masks_of", "validate_masks"]

#: Module types whose ``weight`` is prunable (docs/design.md, "Pruning at initialization").
PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)


def prunable_weights(model: nn.Module) -> dict[str, nn.Module]:
    """``{"<module path>.weight": module}`` for every Linear/Conv2d of ``model``, in module order.

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
        if isinstance(module, PRUNABLE_TYPES) and id(module) not in seen:
            seen.add(id(module))
            out[f"{path}.weight" if path else "weight"] = module
    return out


def weight_of(module: nn.Module) -> torch.Tensor:
    """The weight values a module computes with, without masking: the raw parameter, or the
    ``weight_orig`` of ``torch.nn.utils.prune``, or the original of a parametrization."""
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
        mask = getattr(module, "weight_mask", None)
        parametrizations = getattr(module, "parametrizations", None)
        if mask is None and parametrizations is not None and "weight" in parametrizations:
            for p in parametrizations["weight"]:
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

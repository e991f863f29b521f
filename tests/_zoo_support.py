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

import contextlib
import importlib
import sys
from types import ModuleType

__all__ = ["import_torchvision", "import_timm", "torchvision_classifiers"]


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

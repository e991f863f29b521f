"""A plain training loop for (masked) image classifiers: the N2NSkip paper's recipe by default.

Recipe (docs/paper.md, "Training recipe used"; Subramaniam & Sharma 2020, arXiv:2208.03662): SGD with
momentum 0.9, learning rate 0.05 halved every 30 epochs, weight decay 5e-4, batch 128, 300 epochs,
cross-entropy loss.

What the loop does each epoch, in order: one pass over the training set in a seeded random order
(with the dataset's ``batch_transform`` augmentation, seeded too), one pass over the test set in
eval mode, one scheduler step, then it appends a row to ``log.csv`` and writes ``checkpoint.pt``
(both atomically, through :func:`n2ngraph.io.atomic_write`, flushed to disk before the move).

Masks
-----
Pruned weights are kept at zero by the model itself (``torch.nn.utils.prune`` buffers or a
``torch.nn.utils.parametrize`` mask, as :func:`n2ngraph.bridge.to_model` builds): the effective
weight is ``weight_orig * mask`` in every forward pass. The loop keeps the same parameter objects
throughout (moving a model with ``.to`` keeps them), so momentum, Adam state, weight decay, AMP and
gradient clipping cannot revive a pruned weight.

Reproducibility and resume
--------------------------
The shuffle order and the augmentation draws of epoch ``e`` come from ``torch.Generator`` objects
seeded from ``(seed, e)``. Everything else random (dropout) uses torch's global generator, which
the loop seeds with ``seed`` inside ``torch.random.fork_rng`` — the caller's global state is
restored on return — and stores in every checkpoint. A checkpoint holds the model, optimizer,
scheduler and GradScaler states, the RNG states (as tensors) and the log, so ``resume=True``
continues from the last finished epoch exactly as if the run had not stopped (bit for bit on CPU;
on CUDA as far as its kernels are deterministic). Checkpoints load with
``torch.load(weights_only=True)`` after an archive check (nothing is unpickled, no compressed
members) and are validated; each records the identity of its run (model, masks, data, and the
caller's extras such as the graph), and a resume whose identity differs is refused before anything
is written (docs/security.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import re
import time
import warnings
import weakref
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from n2ngraph.io import FileFormatError, atomic_write

__all__ = [
    "AMP_MODES",
    "CHECKPOINT_NAME",
    "CheckpointExistsError",
    "CONFIG_NAME",
    "LOG_COLUMNS",
    "LOG_NAME",
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainConfig",
    "check_input_fits",
    "check_resume",
    "evaluate",
    "load_checkpoint",
    "run_identity",
    "resolve_device",
    "train",
]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"
CONFIG_NAME = "config.json"
#: Columns of the per-epoch log. Accuracies are fractions in [0, 1]; ``lr`` is the rate used
#: during the epoch; ``seconds`` is the epoch's wall time (train + test); ``images_per_s`` the
#: training throughput.
LOG_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "images_per_s")
#: Accepted values of ``TrainConfig.amp``.
AMP_MODES = ("auto", "off", "bf16", "fp16")
#: Config fields that may differ between a run and its resumption (they do not change the result).
_RESUME_FREE = {"epochs", "progress", "device", "eval_batch_size", "num_workers", "compile", "preload"}


class CheckpointExistsError(ValueError):
    """``out_dir`` already holds a checkpoint and ``resume`` was not asked for.

    ``path`` is the checkpoint's path; front ends (the ``train`` command) restate the message in
    their own words (``--resume``, ``--out``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        super().__init__(f"{self.path} exists; pass resume=True to continue that run, or choose "
                         "another out_dir")


@dataclass
class TrainConfig:
    """Hyperparameters of :func:`train`; the defaults are the N2NSkip paper's recipe.

    Parameters
    ----------
    epochs : int
        Number of passes over the training set (paper: 300).
    batch_size : int
        Training batch size (paper: 128).
    optimizer : str
        A key of :data:`OPTIMIZERS`: ``"sgd"`` (paper), ``"adam"``, ``"adamw"``.
    lr : float
        Initial learning rate (paper: 0.05).
    momentum : float
        SGD momentum (paper: 0.9); ignored by Adam/AdamW.
    weight_decay : float
        L2 penalty for SGD/Adam, decoupled decay for AdamW (paper: 5e-4).
    schedule : str
        A key of :data:`SCHEDULES`: ``"step"`` (multiply by ``lr_gamma`` every ``lr_step``
        epochs; paper: halve every 30), ``"cosine"`` (to 0 over ``epochs``), ``"constant"``.
    lr_step, lr_gamma : int, float
        Step schedule period (epochs) and factor.
    grad_clip : float or None
        Clip the global L2 norm of the gradients to this value; None: no clipping.
    amp : str
        Mixed precision: ``"auto"`` (bf16 on CUDA where supported, else fp16; off on CPU),
        ``"off"``, ``"bf16"`` (CUDA or CPU autocast), ``"fp16"`` (CUDA, with a GradScaler).
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    eval_batch_size : int
        Batch size of the test pass.
    num_workers : int
        DataLoader workers for datasets that are not in-memory ``TensorDataset``s.
    preload : bool
        Copy in-memory ``TensorDataset``s to the device once (fast GPU epochs).
    compile : bool
        Run the forward pass through ``torch.compile``.
    progress : bool
        Show tqdm progress bars.
    """

    epochs: int = 300
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"
    lr_step: int = 30
    lr_gamma: float = 0.5
    grad_clip: float | None = None
    amp: str = "auto"
    device: str = "auto"
    eval_batch_size: int = 1000
    num_workers: int = 0
    preload: bool = True
    compile: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "lr_step", "eval_batch_size", "num_workers"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.lr_step < 1 or self.eval_batch_size < 1 \
                or self.num_workers < 0:
            raise ValueError(f"need epochs >= 0, batch_size >= 1, lr_step >= 1, eval_batch_size >= 1 "
                             f"and num_workers >= 0; got {self.epochs}, {self.batch_size}, "
                             f"{self.lr_step}, {self.eval_batch_size}, {self.num_workers}")
        for name in ("lr", "momentum", "weight_decay", "lr_gamma"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be a positive number or None, got {self.grad_clip!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid optimizers are {sorted(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid schedules are {sorted(SCHEDULES)}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"unknown amp mode {self.amp!r}; valid modes are {list(AMP_MODES)}")
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string like 'auto', 'cpu' or 'cuda:0', got {self.device!r}")


# --------------------------------------------------------------------------- registries
def _sgd(params, c: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)


def _adam(params, c: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)


def _adamw(params, c: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)


#: Optimizer registry: name -> factory(params, config).
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"sgd": _sgd, "adam": _adam, "adamw": _adamw}

#: Learning-rate schedule registry (stepped once per epoch): name -> factory(optimizer, config).
SCHEDULES: dict[str, Callable[..., torch.optim.lr_scheduler.LRScheduler]] = {
    "step": lambda opt, c: torch.optim.lr_scheduler.StepLR(opt, step_size=c.lr_step, gamma=c.lr_gamma),
    "cosine": lambda opt, c: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(c.epochs, 1)),
    "constant": lambda opt, c: torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0),
}


# --------------------------------------------------------------------------- helpers
def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; otherwise ``torch.device(device)``,
    refusing CUDA on a machine without it."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported; use 'auto', 'cpu' or 'cuda[:N]'")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "off":
        return None
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs a CUDA device; use 'bf16' or 'off' on CPU")
    return torch.bfloat16 if mode == "bf16" else torch.float16


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU generator for one purpose (``stream``: 0 shuffle, 1 augmentation) of one epoch."""
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))


def _batches(dataset: Dataset, batch_size: int, *, generator: torch.Generator | None, device: torch.device,
             num_workers: int, tensors: tuple[torch.Tensor, ...] | None):
    """Yield ``(x, y)`` batches on ``device``; shuffled when ``generator`` is given.

    In-memory data (``tensors``) is indexed a batch at a time; other datasets go through a
    ``DataLoader`` whose sampler draws from ``generator``.
    """
    if tensors is not None:
        n = tensors[0].shape[0]
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        order = order.to(tensors[0].device)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield tuple(t[idx].to(device, non_blocking=True) for t in tensors)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator,
                            num_workers=num_workers, pin_memory=device.type == "cuda")
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _num_batches(dataset: Dataset, batch_size: int) -> int:
    return math.ceil(len(dataset) / batch_size)


def _tensors_of(dataset: Dataset, device: torch.device, preload: bool) -> tuple[torch.Tensor, ...] | None:
    if not isinstance(dataset, TensorDataset):
        return None
    if preload and device.type == "cuda":
        return tuple(t.to(device) for t in dataset.tensors)
    return tuple(dataset.tensors)


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`n2ngraph.io.atomic_write`), flushed to disk
    before the move so that a crash leaves the previous file or the complete new one."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


#: Checkpoint format written by :func:`train` (2: with an identity record).
CHECKPOINT_FORMAT = ("n2ngraph-checkpoint", 2)
_CHECKPOINT_KEYS = frozenset({"format", "format_version", "epoch", "seed", "config", "identity", "model",
                              "optimizer", "scheduler", "scaler", "rng", "log"})
#: Most members a checkpoint archive may have (torch writes one per tensor storage plus ~6).
_MAX_ARCHIVE_MEMBERS = 1 << 20
#: Most nodes the structure walk of a checkpoint visits (shared references cannot blow it up).
_MAX_WALK = 1 << 22


def _torch_reason(exc: BaseException) -> str:
    """What went wrong in ``torch.load``, in one line and without torch's advice to turn
    ``weights_only`` off (which would unpickle arbitrary code from an untrusted file)."""
    text = " ".join(str(exc).split())
    found = re.search(r"(?:unsupported|blocked|not allowed)[^.;]*?GLOBAL ([\w.]+)|GLOBAL ([\w.]+)|"
                      r"Unsupported operand [^.;]+|Unsupported class [\w.]+", text, re.IGNORECASE)
    if found:
        name = found.group(1) or found.group(2)
        what = f"the global {name}" if name else found.group(0)
        return (f"refused: it names {what}, which is not a tensor or a plain container; checkpoints are "
                "read without unpickling code")
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text or "pickle" in text.lower():
        return ("refused: its data is not a plain record of tensors and containers; checkpoints are "
                "read without unpickling code")
    text = re.split(r"(?i)(?:weights_only|allow_pickle|check the documentation)", text)[0].strip(" .;:")
    return f"not a readable checkpoint ({type(exc).__name__}: {text[:300]})"


def _check_archive(path: Path) -> None:
    """Refuse, before ``torch.load`` touches it, any file that is not a plain zip of stored
    (uncompressed) members whose sizes fit in the file: no zip bombs, no legacy pickle format."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except Exception as exc:  # noqa: BLE001 - zipfile raises several types on a corrupt archive
        raise FileFormatError(path, f"not a checkpoint written by n2ngraph (not a readable zip archive: "
                                    f"{type(exc).__name__}: {exc})") from None
    if len(infos) > _MAX_ARCHIVE_MEMBERS:
        raise FileFormatError(path, f"{len(infos)} archive members; a checkpoint has far fewer")
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise FileFormatError(path, f"archive member {info.filename!r} is compressed or inconsistent; "
                                        "torch.save writes stored members")
        total += info.file_size
    if total > size:
        raise FileFormatError(path, f"archive members declare {total} bytes in a {size}-byte file")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`train`, mapped to CPU, refusing anything else.

    The archive is checked first (a zip of stored members that fit in the file), then read with
    ``torch.load(weights_only=True)`` (tensors and plain containers only: nothing is unpickled),
    then its structure is validated: the keys below with the types :func:`train` writes.

    Keys: ``format``, ``format_version``, ``epoch`` (finished epochs), ``seed``, ``config``
    (dict), ``identity`` (``{part: sha256 hex}``: what the run was made from), ``model``,
    ``optimizer``, ``scheduler``, ``scaler`` (state dicts), ``rng`` (``{"torch": ByteTensor,
    "cuda": ByteTensor or None}``), ``log`` (list of row dicts, one per finished epoch).

    Raises
    ------
    FileNotFoundError
        No such file.
    FileFormatError
        (a ``ValueError``) Not a checkpoint of this format, unreadable, or malformed; one line
        naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}")
    _check_archive(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except RecursionError:
        raise FileFormatError(path, "refused: its data nests too deeply") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; report them all
        raise FileFormatError(path, _torch_reason(exc)) from None
    try:
        _check_structure(path, state)
    except FileFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - a value the checks did not foresee: still one line
        raise FileFormatError(path, f"malformed checkpoint ({type(exc).__name__}: {exc})") from None
    return state


def _walk_ok(obj: Any, budget: list[int]) -> bool:
    """True when ``obj`` is built from dicts (str/int keys), lists, tuples, numbers, strings,
    None and tensors only, within ``budget`` nodes."""
    budget[0] -= 1
    if budget[0] < 0:
        return False
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return True
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and _walk_ok(v, budget) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(_walk_ok(v, budget) for v in obj)
    return False


def _check_structure(path: Path, state: Any) -> None:
    """The checkpoint's shape as :func:`train` writes it; values are checked against the model
    and run by :func:`check_resume`."""
    def want(ok: bool, what: str) -> None:
        if not ok:
            raise FileFormatError(path, what)

    want(isinstance(state, dict), f"not an n2ngraph checkpoint (a {type(state).__name__}, not a dict)")
    fmt, version = state.get("format"), state.get("format_version")
    if not (type(fmt) is str and type(version) is int and (fmt, version) == CHECKPOINT_FORMAT):
        if "identity" not in state and {"epoch", "model", "config"} <= set(state):
            raise FileFormatError(path, "written by an older n2ngraph that did not record the graph, model and "
                                        "data it was trained on, so it cannot be checked; start a new run in "
                                        "another output folder")
        raise FileFormatError(path, f"format {str(fmt)[:40]!r} version {str(version)[:40]!r}; this n2ngraph "
                                    f"reads {CHECKPOINT_FORMAT[0]!r} version {CHECKPOINT_FORMAT[1]}")
    missing = sorted(_CHECKPOINT_KEYS - set(state))
    want(not missing, f"missing entries {missing}")
    try:
        want(_walk_ok(state, [_MAX_WALK]), "holds values other than tensors, numbers, strings, lists and dicts")
    except RecursionError:
        raise FileFormatError(path, "refused: its data nests too deeply") from None
    epoch = state["epoch"]
    want(type(epoch) is int and 0 <= epoch <= 10**7, f"epoch {epoch!r} is not an int in [0, 10**7]")
    want(type(state["seed"]) is int and state["seed"] >= 0, f"seed {state['seed']!r} is not an int >= 0")
    want(isinstance(state["config"], dict) and all(
        isinstance(k, str) and (v is None or isinstance(v, (bool, int, float, str))) for k, v in state["config"].items()),
        "config is not a dict of plain values")
    identity = state["identity"]
    want(isinstance(identity, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in identity.items()),
         "identity is not a dict of strings")
    model = state["model"]
    want(isinstance(model, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()),
         "model state is not a dict of tensors")
    want(isinstance(state["optimizer"], dict) and isinstance(state["optimizer"].get("state"), dict)
         and isinstance(state["optimizer"].get("param_groups"), list), "optimizer state is malformed")
    want(isinstance(state["scheduler"], dict) and isinstance(state["scaler"], dict),
         "scheduler or scaler state is not a dict")
    rng = state["rng"]
    want(isinstance(rng, dict) and isinstance(rng.get("torch"), torch.Tensor)
         and rng["torch"].dtype == torch.uint8 and rng["torch"].shape == torch.get_rng_state().shape
         and (rng.get("cuda") is None or (isinstance(rng["cuda"], torch.Tensor) and rng["cuda"].dtype == torch.uint8
                                          and rng["cuda"].ndim == 1)),
         "rng state is not a CPU generator state")
    log = state["log"]
    want(isinstance(log, list) and len(log) == epoch,
         f"log has {len(log) if isinstance(log, list) else '?'} rows for {epoch} finished "
         f"epoch{'' if epoch == 1 else 's'}")
    for i, row in enumerate(log):
        want(isinstance(row, dict) and set(row) == set(LOG_COLUMNS)
             and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row.values())
             and row["epoch"] == i + 1, f"log row {i} is malformed")


# --------------------------------------------------------------------------- run identity
def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def _is_mask(name: str) -> bool:
    return name.rsplit(".", 1)[-1].endswith("mask")


def _structure_digest(state: Mapping[str, torch.Tensor], model: nn.Module | None = None) -> str:
    """Architecture: module tree (``repr``) and every state entry's name, shape and dtype."""
    entries = [f"{k}:{tuple(v.shape)}:{v.dtype}" for k, v in state.items()]
    return _sha(repr(model) if model is not None else "", *entries)


def _masks_digest(state: Mapping[str, torch.Tensor]) -> str:
    """The masks: every state entry named ``*mask`` (prune's ``weight_mask``, a mask
    parametrization's or a skip module's ``mask``), as bits."""
    parts = []
    for k, v in state.items():
        if _is_mask(k):
            bits = np.packbits(v.detach().cpu().reshape(-1).ne(0).numpy())
            parts += [k, str(tuple(v.shape)), bits.tobytes()]
    return _sha(*parts)


_DATA_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach().cpu().contiguous().reshape(-1)
    return memoryview(t.view(torch.uint8).numpy()) if t.numel() else memoryview(b"")


def _dataset_digest(dataset: Dataset | None) -> str:
    """Content of a dataset: every tensor of an in-memory ``TensorDataset`` (cached per object
    until a tensor changes), or for other datasets its length and up to 64 evenly spaced samples;
    plus its name, class count and whether it augments."""
    if dataset is None:
        return "none"
    meta = [type(dataset).__qualname__, str(len(dataset)), str(getattr(dataset, "name", "")),
            str(getattr(dataset, "num_classes", "")), str(getattr(dataset, "batch_transform", None) is not None)]
    if isinstance(dataset, TensorDataset):
        key = tuple((t.data_ptr(), t._version, tuple(t.shape), t.dtype) for t in dataset.tensors)
        try:
            cached = _DATA_DIGESTS.get(dataset)
        except TypeError:
            cached = None
        if cached is not None and cached[0] == key:
            return _sha(*meta, cached[1])
        h = hashlib.sha256()
        for t in dataset.tensors:
            h.update(f"{tuple(t.shape)}:{t.dtype}".encode())
            h.update(_tensor_bytes(t))
        content = h.hexdigest()
        with contextlib.suppress(TypeError):  # a dataset that cannot be weakly referenced
            _DATA_DIGESTS[dataset] = (key, content)
        return _sha(*meta, content)
    n = len(dataset)
    parts = []
    for i in sorted({round(j * (n - 1) / 63) for j in range(64)} if n else ()):
        for item in dataset[i]:
            item = torch.as_tensor(item)
            parts += [f"{tuple(item.shape)}:{item.dtype}", _tensor_bytes(item).tobytes()]
    return _sha(*meta, *parts)


def run_identity(model: nn.Module, train_set: Dataset, test_set: Dataset | None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """What a run is made from, as ``{part: sha256 hex}``: ``model`` (module tree and state
    names/shapes/dtypes), ``masks`` (every ``*mask`` state entry), ``data`` (training and test
    sets' contents, names, class counts, augmentation on/off), plus one entry per key of
    ``extra`` (JSON-serialisable; the CLI adds ``graph`` and ``factory``). A checkpoint stores
    it; :func:`check_resume` refuses to continue a run whose identity differs."""
    state = model.state_dict()
    out = {"model": _structure_digest(state, model), "masks": _masks_digest(state),
           "data": _sha(_dataset_digest(train_set), _dataset_digest(test_set))}
    for key, value in (extra or {}).items():
        out[str(key)] = value if isinstance(value, str) else _sha(json.dumps(value, sort_keys=True, default=str))
    return out


def _same_kind(saved: Any, fresh: Any) -> bool:
    """``saved`` has the structure of ``fresh``: same dict keys, list lengths, number/str/bool
    kinds, tensor shapes; None in ``fresh`` accepts any scalar."""
    if isinstance(fresh, dict):
        return isinstance(saved, dict) and set(saved) == set(fresh) and all(
            _same_kind(saved[k], v) for k, v in fresh.items())
    if isinstance(fresh, (list, tuple)):
        return isinstance(saved, (list, tuple)) and len(saved) == len(fresh) and all(
            _same_kind(a, b) for a, b in zip(saved, fresh))
    if isinstance(fresh, torch.Tensor):
        return isinstance(saved, torch.Tensor) and saved.shape == fresh.shape and saved.dtype == fresh.dtype
    if fresh is None:
        return saved is None or isinstance(saved, (bool, int, float, str))
    if isinstance(fresh, bool):
        return isinstance(saved, bool)
    if isinstance(fresh, (int, float)):
        return isinstance(saved, (int, float)) and not isinstance(saved, bool) and math.isfinite(saved)
    if isinstance(fresh, str):
        return isinstance(saved, str)
    return False


def _check_optimizer_state(saved: dict, optimizer: torch.optim.Optimizer) -> str | None:
    fresh = optimizer.state_dict()
    groups = saved["param_groups"]
    if len(groups) != len(fresh["param_groups"]):
        return f"{len(groups)} optimizer parameter groups, the model has {len(fresh['param_groups'])}"
    shapes = {}
    for g_saved, g_fresh, g_live in zip(groups, fresh["param_groups"], optimizer.param_groups):
        if not isinstance(g_saved, dict) or g_saved.get("params") != g_fresh["params"]:
            return "optimizer parameter groups do not match the model's parameters"
        if not _same_kind({k: v for k, v in g_saved.items() if k != "params"},
                          {k: v for k, v in g_fresh.items() if k != "params"}):
            return "optimizer settings are malformed"
        shapes.update({i: tuple(p.shape) for i, p in zip(g_fresh["params"], g_live["params"])})
    for key, entry in saved["state"].items():
        if key not in shapes or not isinstance(entry, dict):
            return f"optimizer state for unknown parameter {key!r}"
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                if not value.is_floating_point() or tuple(value.shape) not in ((), shapes[key]):
                    return f"optimizer state {name!r} of parameter {key} has shape {tuple(value.shape)}"
            elif not (value is None or isinstance(value, (int, float))):
                return f"optimizer state {name!r} of parameter {key} is a {type(value).__name__}"
    return None


_SHAPE_TEXT = re.compile(r"^[\d\s,xX]+$")


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def check_input_fits(model: nn.Module, dataset_or_shape: Any, *, graph: Any = None,
                     name: str | None = None) -> None:
    """Refuse, in one line, a model, graph and data whose shapes disagree, before any training.

    Three checks, in this order:

    1. **graph vs data**: the graph's input group (``graph.groups[0].shape``, the shape of one
       sample it was traced on) must equal the data's sample shape ``(C, H, W)``; a flat input
       group ``(F,)`` (a model whose first layer is a Linear) fits data of ``F = C*H*W`` values.
       A graph traced on 32 x 32 images cannot be trained on 28 x 28 ones: its skips and layer
       shapes were computed from the traced sizes.
    2. **graph vs classes**: the graph's output group has one node per class of the data
       (when the data states ``num_classes``).
    3. **model vs data**: ``model`` maps a zero batch of two samples to logits of shape
       ``(2, num_classes)`` (eval mode, no gradient; the model's mode is restored).

    Parameters
    ----------
    model : nn.Module
        The model to train (the dense reference before :func:`n2ngraph.bridge.to_model`, or the
        masked model), on the device and dtype of its parameters.
    dataset_or_shape : Dataset, str or sequence of int
        A dataset (:class:`n2ngraph.data.ImageDataset` or any with ``sample_shape`` /
        ``(input, label)`` items; its ``num_classes`` is used when present), a dataset spec
        (``"mnist5k:pad=2"``; nothing is loaded, :func:`n2ngraph.data.input_shape`) or one
        sample's shape (``(1, 28, 28)`` or ``"1,28,28"``,
        :func:`n2ngraph.models.parse_input_shape`).
    graph : NetworkGraph, optional
        The graph variant to be mapped onto ``model``.
    name : str, optional
        How to call the model in messages (default its class name).

    Raises
    ------
    ValueError
        One line naming the graph's, the model's and the data's shapes that disagree and what
        to do (trace the graph at the data's shape: ``input_shape=`` / ``--input-shape``).

    Examples
    --------
    >>> from n2ngraph.models import lenet300
    >>> check_input_fits(lenet300(num_classes=10), (1, 28, 28))
    >>> check_input_fits(lenet300(num_classes=10), (1, 32, 32))
    Traceback (most recent call last):
    ...
    ValueError: model Sequential does not accept inputs of shape (1, 32, 32) (the data's): ...
    """
    from n2ngraph.data import input_shape as data_input_shape
    from n2ngraph.models import parse_input_shape

    name = name or type(model).__name__
    num_classes = getattr(dataset_or_shape, "num_classes", None)
    if isinstance(dataset_or_shape, str) and not _SHAPE_TEXT.match(dataset_or_shape):
        shape, what = data_input_shape(dataset_or_shape), f"data {dataset_or_shape}"
    elif isinstance(dataset_or_shape, (str, tuple, list, torch.Size)):
        shape, what = parse_input_shape(dataset_or_shape), "data"
    else:
        shape = data_input_shape(dataset_or_shape)
        what = f"data {getattr(dataset_or_shape, 'name', type(dataset_or_shape).__name__)}"
    if graph is not None:
        traced = tuple(int(v) for v in graph.groups[0].shape)
        flat = len(traced) == 1 and traced[0] == math.prod(shape)
        if traced != shape and not flat:
            graph_name = graph.provenance.get("model", "the graph")
            raise ValueError(
                f"graph of {graph_name} was traced on inputs of shape {_shape_text(traced)} but the "
                f"{what} has samples of shape {_shape_text(shape)}; make the graph for this data "
                f"(trace at input_shape={shape}: n2ngraph graph MODEL --input-shape "
                f"{','.join(map(str, shape))}, or --data with this dataset)")
        outputs = graph.groups[-1].size
        if num_classes is not None and outputs != num_classes:
            raise ValueError(f"graph of {graph.provenance.get('model', 'the model')} has {outputs} outputs "
                             f"but the {what} has {num_classes} classes; build the graph from a model "
                             f"with num_classes={num_classes}")
    param = next(model.parameters(), None)
    device = None if param is None else param.device
    dtype = torch.float32 if param is None or not param.is_floating_point() else param.dtype
    x = torch.zeros(2, *shape, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
    except Exception as exc:  # noqa: BLE001 - any failure of the forward is the shape mismatch
        first = " ".join(str(exc).split())[:300]
        raise ValueError(f"model {name} does not accept inputs of shape {_shape_text(shape)} (the "
                         f"{what}'s): {type(exc).__name__}: {first}") from None
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model {name} maps a batch of 2 inputs of shape {_shape_text(shape)} to "
                         f"{got}, not to logits of shape (2, classes)")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"model {name} outputs {logits.shape[1]} logits but the {what} has "
                         f"{num_classes} classes; build the model with num_classes={num_classes}")


def check_resume(model: nn.Module, train_set: Dataset, test_set: Dataset | None,
                 config: TrainConfig | None = None, *, out_dir: str | os.PathLike, resume: bool = False,
                 seed: int = 0, identity: Mapping[str, Any] | None = None) -> dict | None:
    """Check, writing nothing, that :func:`train` with these arguments may start; return the
    validated checkpoint it would continue from (None for a fresh run).

    Refuses (``ValueError``, one line) an existing checkpoint without ``resume``, and a
    checkpoint whose settings (:class:`TrainConfig`, seed) or identity (:func:`run_identity`:
    model, masks, data, and the ``identity`` extras such as the graph) differ from this run's, or
    whose states do not fit the model, optimizer, scheduler or scaler.
    """
    config = TrainConfig() if config is None else config
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME
    if not ckpt_path.exists():
        return None
    if not resume:
        raise CheckpointExistsError(ckpt_path)
    state = load_checkpoint(ckpt_path)
    try:
        _check_fits(ckpt_path, state, model, train_set, test_set, config, int(seed), identity)
    except (FileFormatError, ValueError):
        raise
    except Exception as exc:  # noqa: BLE001 - a value the checks did not foresee: still one line
        raise FileFormatError(ckpt_path, f"malformed checkpoint ({type(exc).__name__}: {exc})") from None
    return state


def _check_fits(ckpt_path: Path, state: dict, model: nn.Module, train_set: Dataset, test_set: Dataset | None,
                config: TrainConfig, seed: int, identity: Mapping[str, Any] | None) -> None:
    """The loaded checkpoint against this run: settings, identity, and every state's structure."""
    _check_resume_config(ckpt_path, state["config"], asdict(config), state["seed"], seed)
    now = run_identity(model, train_set, test_set, identity)
    saved = state["identity"]
    differ = [k for k in sorted(set(now) | set(saved)) if now.get(k) != saved.get(k)]
    if differ:
        what = ", ".join(f"{k} (checkpoint {saved.get(k, 'none')[:12]}, now {now.get(k, 'none')[:12]})"
                         for k in differ)
        raise ValueError(f"cannot resume from {ckpt_path}: this run's {', '.join(differ)} differ from the "
                         f"checkpoint's: {what}; use the original inputs or another output folder")
    fresh = model.state_dict()
    if not _same_kind(state["model"], fresh) or _masks_digest(state["model"]) != now["masks"]:
        raise FileFormatError(ckpt_path, "its model state does not fit this model (names, shapes or masks "
                                         "differ from what its identity records)")
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config)
    scheduler = SCHEDULES[config.schedule](optimizer, config)
    problem = _check_optimizer_state(state["optimizer"], optimizer)
    if problem is None and not _same_kind(state["scheduler"], scheduler.state_dict()):
        problem = "scheduler state does not match the schedule"
    device = resolve_device(config.device)
    saved_cuda = state["rng"].get("cuda")
    if problem is None and device.type == "cuda" and saved_cuda is not None \
            and saved_cuda.shape != torch.cuda.get_rng_state(device).shape:
        problem = "CUDA generator state has the wrong size"
    if problem is None:
        amp_dtype = _amp_dtype(config.amp, device)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        if not _same_kind(state["scaler"], scaler.state_dict()):
            problem = "GradScaler state does not match the amp setting"
    if problem is not None:
        raise FileFormatError(ckpt_path, problem)


def _forward_loss(forward: Callable, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                  amp_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = forward(x)
        loss = F.cross_entropy(logits.float(), y)
    return logits, loss


@torch.no_grad()
def _evaluate(forward, model, dataset, tensors, *, batch_size, device, amp_dtype, num_workers, progress,
              desc="test") -> tuple[float, float]:
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    from tqdm.auto import tqdm

    for x, y in tqdm(_batches(dataset, batch_size, generator=None, device=device, num_workers=num_workers,
                              tensors=tensors), total=_num_batches(dataset, batch_size), desc=desc,
                     leave=False, disable=not progress):
        logits, loss = _forward_loss(forward, x, y, device, amp_dtype)
        loss_sum += loss.double() * y.shape[0]
        correct += (logits.argmax(1) == y).sum()
        n += y.shape[0]
    model.train(was_training)
    if n == 0:
        return float("nan"), float("nan")
    return float(loss_sum) / n, int(correct) / n


def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 1000, device: str = "auto",
             amp: str = "off") -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``dataset`` in eval mode, without gradients.

    Returns ``{"loss": float, "acc": float}`` (accuracy as a fraction). The model is moved to the
    device and its train/eval mode is restored afterwards.
    """
    dev = resolve_device(device)
    if amp not in AMP_MODES:
        raise ValueError(f"unknown amp mode {amp!r}; valid modes are {list(AMP_MODES)}")
    model.to(dev)
    loss, acc = _evaluate(model, model, dataset, _tensors_of(dataset, dev, True), batch_size=batch_size,
                          device=dev, amp_dtype=_amp_dtype(amp, dev), num_workers=0, progress=False)
    return {"loss": loss, "acc": acc}


def _check_resume_config(path: Path, saved: dict, current: dict, saved_seed: int, seed: int) -> None:
    diffs = {k: (saved.get(k), v) for k, v in current.items() if k not in _RESUME_FREE and saved.get(k) != v}
    if saved_seed != seed:
        diffs["seed"] = (saved_seed, seed)
    if diffs:
        listed = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diffs.items())
        listed = " ".join(listed.split())[:500]
        raise ValueError(f"cannot resume from {path}: the run's settings differ from the checkpoint's ({listed}); "
                         "use the original settings or a new output folder")


def _write_log(rows: list[dict], path: Path) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(LOG_COLUMNS))
    _write_bytes(path, frame.to_csv(index=False).encode())
    return frame


# --------------------------------------------------------------------------- the loop
@dataclass
class _Loop:
    """The live objects of one run of :func:`train` and its three steps: :meth:`restore` (from a
    checkpoint), :meth:`epoch` (train, test, schedule: one log row) and :meth:`checkpoint`."""

    model: nn.Module
    train_set: Dataset
    test_set: Dataset | None
    config: TrainConfig
    seed: int
    device: torch.device
    amp_dtype: torch.dtype | None
    forward: Callable
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    train_tensors: tuple[torch.Tensor, ...] | None
    test_tensors: tuple[torch.Tensor, ...] | None

    @classmethod
    def build(cls, model: nn.Module, train_set: Dataset, test_set: Dataset | None, config: TrainConfig,
              seed: int) -> _Loop:
        """Move ``model`` to the device and build the optimizer, schedule and scaler (no RNG draws)."""
        device = resolve_device(config.device)
        amp_dtype = _amp_dtype(config.amp, device)
        model.to(device)
        optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config)
        return cls(
            model=model, train_set=train_set, test_set=test_set, config=config, seed=seed, device=device,
            amp_dtype=amp_dtype, forward=torch.compile(model) if config.compile else model,
            optimizer=optimizer, scheduler=SCHEDULES[config.schedule](optimizer, config),
            scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
            train_tensors=_tensors_of(train_set, device, config.preload),
            test_tensors=None if test_set is None else _tensors_of(test_set, device, config.preload),
        )

    def seed_rng(self) -> None:
        """Seed torch's global generators (dropout) with the run's seed."""
        torch.default_generator.manual_seed(self.seed)
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                torch.cuda.manual_seed(self.seed)

    def restore(self, state: dict, ckpt_path: Path) -> tuple[list[dict], int]:
        """Load a checkpoint validated by :func:`check_resume`: model, optimizer, schedule, scaler
        and RNG states; returns its log rows and the number of finished epochs."""
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise FileFormatError(ckpt_path, f"does not fit this model: {exc}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        return [dict(r) for r in state["log"]], int(state["epoch"])

    def epoch(self, epoch: int) -> dict:
        """Epoch ``epoch`` (0-based): a seeded shuffled pass over the training set, the test pass,
        one scheduler step; returns its log row (:data:`LOG_COLUMNS`)."""
        from tqdm.auto import tqdm

        config, device = self.config, self.device
        t0 = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        self.model.train()
        order = _epoch_generator(self.seed, epoch, 0)
        aug = _epoch_generator(self.seed, epoch, 1)
        transform = getattr(self.train_set, "batch_transform", None)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        n_seen = 0
        batches = tqdm(_batches(self.train_set, config.batch_size, generator=order, device=device,
                                num_workers=config.num_workers, tensors=self.train_tensors),
                       total=_num_batches(self.train_set, config.batch_size), desc=f"epoch {epoch + 1}",
                       leave=False, disable=not config.progress)
        for x, y in batches:
            if transform is not None:
                x = transform(x, aug)
            logits, loss = _forward_loss(self.forward, x, y, device, self.amp_dtype)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if config.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.detach().double() * y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
            n_seen += y.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        train_loss, train_acc = float(loss_sum) / n_seen, int(correct) / n_seen
        if not math.isfinite(train_loss):
            warnings.warn(f"epoch {epoch + 1}: training loss is {train_loss}; the run has diverged "
                          "(lower the learning rate or enable grad_clip)", RuntimeWarning, stacklevel=3)
        test_loss, test_acc = (float("nan"), float("nan")) if self.test_set is None else _evaluate(
            self.forward, self.model, self.test_set, self.test_tensors, batch_size=config.eval_batch_size,
            device=device, amp_dtype=self.amp_dtype, num_workers=config.num_workers, progress=config.progress)
        self.scheduler.step()
        return {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                "test_loss": test_loss, "test_acc": test_acc, "lr": float(lr),
                "seconds": time.perf_counter() - t0, "images_per_s": n_seen / train_seconds}

    def checkpoint(self, path: Path, rows: list[dict], run_id: dict[str, str]) -> None:
        """Write the checkpoint after ``len(rows)`` finished epochs (keys: :func:`load_checkpoint`)."""
        buffer = io.BytesIO()
        torch.save({
            "format": CHECKPOINT_FORMAT[0], "format_version": CHECKPOINT_FORMAT[1], "identity": run_id,
            "epoch": len(rows), "seed": self.seed, "config": asdict(self.config),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
            "log": rows,
        }, buffer)
        _write_bytes(path, buffer.getvalue())

    def write_config(self, path: Path) -> None:
        """``config.json``: the settings, seed, model class, device and resolved amp mode."""
        amp = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off"
        _write_bytes(path, json.dumps(
            {"config": asdict(self.config), "seed": self.seed, "model": type(self.model).__name__,
             "device": str(self.device), "amp": amp}, indent=2).encode())


def _checked_train_args(model: nn.Module, train_set: Dataset, config: TrainConfig | None,
                        seed: int) -> tuple[TrainConfig, int]:
    """The config (default: the paper's) and seed of :func:`train`, after its argument checks."""
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if len(train_set) == 0:
        raise ValueError("train_set is empty")
    _amp_dtype(config.amp, resolve_device(config.device))  # a device or amp mode that cannot work
    return config, int(seed)


def train(model: nn.Module, train_set: Dataset, test_set: Dataset | None, config: TrainConfig | None = None,
          *, out_dir: str | os.PathLike, resume: bool = False, seed: int = 0,
          identity: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Train ``model`` on ``train_set`` with cross-entropy, testing on ``test_set`` every epoch.

    Parameters
    ----------
    model : nn.Module
        Maps a batch ``(N, *sample_shape)`` to logits ``(N, num_classes)``. Masked models keep
        their masks (see the module docstring). Moved to the device in place.
    train_set, test_set : Dataset
        Yield ``(image, label)``; in-memory ``TensorDataset`` s (such as
        :class:`n2ngraph.data.ImageDataset`) are batched by indexing. A ``batch_transform``
        attribute ``f(images, generator)`` on ``train_set`` is applied to each training batch.
        ``test_set`` may be None (test columns are NaN).
    config : TrainConfig, optional
        Hyperparameters; default the paper's recipe.
    out_dir : path
        Folder for ``config.json``, ``log.csv`` and ``checkpoint.pt`` (created if needed).
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when it exists (its settings must match, except
        ``epochs`` and the ones that do not change results, and so must its identity: see
        :func:`check_resume`); start afresh when it does not.
    seed : int
        Seeds the shuffle, the augmentation and torch's global RNG (dropout) inside the run.
    identity : mapping, optional
        Extra parts of the run's identity (JSON-serialisable), e.g. ``{"graph": graph_digest(g)}``;
        stored in every checkpoint and compared on resume, with the model, masks and data
        digests this function computes itself (:func:`run_identity`).

    Returns
    -------
    pandas.DataFrame
        The per-epoch log, columns :data:`LOG_COLUMNS` (also written to ``out_dir/log.csv``).

    Raises
    ------
    ValueError
        ``out_dir`` holds a checkpoint and ``resume`` is False, the checkpoint's settings or
        identity differ, or the checkpoint is malformed or does not fit the model
        (:class:`~n2ngraph.io.FileFormatError`). Nothing in ``out_dir`` is written before these
        checks pass.
    """
    config, seed = _checked_train_args(model, train_set, config, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_NAME
    state = check_resume(model, train_set, test_set, config, out_dir=out, resume=resume, seed=seed,
                         identity=identity)
    run_id = run_identity(model, train_set, test_set, identity)
    loop = _Loop.build(model, train_set, test_set, config, seed)
    rows: list[dict] = []
    start_epoch = 0
    from tqdm.auto import tqdm

    with torch.random.fork_rng(devices=[loop.device.index] if loop.device.type == "cuda" else []):
        loop.seed_rng()
        if state is not None:
            rows, start_epoch = loop.restore(state, ckpt_path)
        loop.write_config(out / CONFIG_NAME)
        epochs = tqdm(range(start_epoch, config.epochs), initial=start_epoch, total=config.epochs,
                      desc="epochs", disable=not config.progress)
        for epoch in epochs:
            rows.append(loop.epoch(epoch))
            epochs.set_postfix(loss=f"{rows[-1]['train_loss']:.3f}", test_acc=f"{rows[-1]['test_acc']:.4f}")
            loop.checkpoint(ckpt_path, rows, run_id)
            _write_log(rows, out / LOG_NAME)
        epochs.close()
    return _write_log(rows, out / LOG_NAME)

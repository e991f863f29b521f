"""A plain training loop for (masked) image classifiers: the N2NSkip paper's recipe by default.

Recipe (PAPER.md, "Training recipe used"; Subramaniam & Sharma 2020, arXiv:2208.03662): SGD with
momentum 0.9, learning rate 0.05 halved every 30 epochs, weight decay 5e-4, batch 128, 300 epochs,
cross-entropy loss.

What the loop does each epoch, in order: one pass over the training set in a seeded random order
(with the dataset's ``batch_transform`` augmentation, seeded too), one pass over the test set in
eval mode, one scheduler step, then it appends a row to ``log.csv`` and writes ``checkpoint.pt``
(both atomically: temp file + ``os.replace``).

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
``torch.load(weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = [
    "AMP_MODES",
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LOG_COLUMNS",
    "LOG_NAME",
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainConfig",
    "evaluate",
    "load_checkpoint",
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


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`train` with ``torch.load(weights_only=True)`` (no
    unpickling of arbitrary objects), mapped to CPU.

    Keys: ``epoch`` (finished epochs), ``seed``, ``config`` (dict), ``model``, ``optimizer``,
    ``scheduler``, ``scaler`` (state dicts), ``rng`` (``{"torch": ByteTensor, "cuda": ByteTensor
    or None}``), ``log`` (list of row dicts).
    """
    return torch.load(Path(path), map_location="cpu", weights_only=True)


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


def _check_resume_config(saved: dict, current: dict, saved_seed: int, seed: int) -> None:
    diffs = {k: (saved.get(k), v) for k, v in current.items() if k not in _RESUME_FREE and saved.get(k) != v}
    if saved_seed != seed:
        diffs["seed"] = (saved_seed, seed)
    if diffs:
        listed = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diffs.items())
        raise ValueError(f"cannot resume: the run's settings differ from the checkpoint's ({listed}); "
                         "use the original settings or a new output folder")


def _write_log(rows: list[dict], path: Path) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(LOG_COLUMNS))
    _atomic_write_bytes(path, frame.to_csv(index=False).encode())
    return frame


# --------------------------------------------------------------------------- the loop
def train(model: nn.Module, train_set: Dataset, test_set: Dataset | None, config: TrainConfig | None = None,
          *, out_dir: str | os.PathLike, resume: bool = False, seed: int = 0) -> pd.DataFrame:
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
        ``epochs`` and the ones that do not change results); start afresh when it does not.
    seed : int
        Seeds the shuffle, the augmentation and torch's global RNG (dropout) inside the run.

    Returns
    -------
    pandas.DataFrame
        The per-epoch log, columns :data:`LOG_COLUMNS` (also written to ``out_dir/log.csv``).

    Raises
    ------
    ValueError
        ``out_dir`` holds a checkpoint and ``resume`` is False, the checkpoint's settings differ,
        or the checkpoint does not fit the model.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if len(train_set) == 0:
        raise ValueError("train_set is empty")
    seed = int(seed)
    device = resolve_device(config.device)
    amp_dtype = _amp_dtype(config.amp, device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_NAME
    if ckpt_path.exists() and not resume:
        raise ValueError(f"{ckpt_path} exists; pass resume=True (--resume) to continue that run, "
                         "or choose another output folder")

    model.to(device)
    forward = torch.compile(model) if config.compile else model
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config)
    scheduler = SCHEDULES[config.schedule](optimizer, config)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    train_tensors = _tensors_of(train_set, device, config.preload)
    test_tensors = None if test_set is None else _tensors_of(test_set, device, config.preload)
    transform = getattr(train_set, "batch_transform", None)
    config_dict = asdict(config)
    rows: list[dict] = []
    start_epoch = 0
    cuda_devices = [device.index] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=cuda_devices):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        if resume and ckpt_path.exists():
            state = load_checkpoint(ckpt_path)
            _check_resume_config(state["config"], config_dict, state["seed"], seed)
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as exc:
                raise ValueError(f"{ckpt_path} does not fit this model: {exc}") from None
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"]["torch"])
            if device.type == "cuda" and state["rng"]["cuda"] is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
            rows = [dict(r) for r in state["log"]]
            start_epoch = int(state["epoch"])
        _atomic_write_bytes(out / CONFIG_NAME, json.dumps(
            {"config": config_dict, "seed": seed, "model": type(model).__name__, "device": str(device),
             "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off"}, indent=2).encode())

        from tqdm.auto import tqdm

        epochs = tqdm(range(start_epoch, config.epochs), initial=start_epoch, total=config.epochs,
                      desc="epochs", disable=not config.progress)
        for epoch in epochs:
            t0 = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            model.train()
            order = _epoch_generator(seed, epoch, 0)
            aug = _epoch_generator(seed, epoch, 1)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            n_seen = 0
            batches = tqdm(_batches(train_set, config.batch_size, generator=order, device=device,
                                    num_workers=config.num_workers, tensors=train_tensors),
                           total=_num_batches(train_set, config.batch_size), desc=f"epoch {epoch + 1}",
                           leave=False, disable=not config.progress)
            for x, y in batches:
                if transform is not None:
                    x = transform(x, aug)
                logits, loss = _forward_loss(forward, x, y, device, amp_dtype)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                loss_sum += loss.detach().double() * y.shape[0]
                correct += (logits.detach().argmax(1) == y).sum()
                n_seen += y.shape[0]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds = time.perf_counter() - t0
            train_loss, train_acc = float(loss_sum) / n_seen, int(correct) / n_seen
            if not math.isfinite(train_loss):
                warnings.warn(f"epoch {epoch + 1}: training loss is {train_loss}; the run has diverged "
                              "(lower the learning rate or enable grad_clip)", RuntimeWarning, stacklevel=2)
            test_loss, test_acc = (float("nan"), float("nan")) if test_set is None else _evaluate(
                forward, model, test_set, test_tensors, batch_size=config.eval_batch_size, device=device,
                amp_dtype=amp_dtype, num_workers=config.num_workers, progress=config.progress)
            scheduler.step()
            rows.append({"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                         "test_loss": test_loss, "test_acc": test_acc, "lr": float(lr),
                         "seconds": time.perf_counter() - t0, "images_per_s": n_seen / train_seconds})
            epochs.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{test_acc:.4f}")
            _atomic_torch_save({
                "epoch": epoch + 1, "seed": seed, "config": config_dict,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
                "log": rows,
            }, ckpt_path)
            _write_log(rows, out / LOG_NAME)
        epochs.close()
    return _write_log(rows, out / LOG_NAME)

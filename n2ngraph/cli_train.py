"""``n2ngraph train``: train a graph variant as a masked model.

::

    n2ngraph train --graph VARIANT.npz --model vgg19 --data cifar10:PATH --epochs N --out DIR
                   [--resume] [--init dense|sparse] [--device auto] [--batch-size 128] [--lr 0.05]
                   [--seed 0] [--optimizer sgd] [--amp auto] ...

Steps: load the graph (:func:`n2ngraph.io.load_graph`), build the reference model
(:func:`n2ngraph.models.build_model`, or ``module.path:factory``) seeded with ``--seed``, map the
graph onto it (:func:`n2ngraph.bridge.to_model`), load both splits of the dataset
(:func:`n2ngraph.data.load_dataset`) and run :func:`n2ngraph.training.train` into ``--out``
(``config.json``, ``log.csv``, ``checkpoint.pt``, plus ``cli.json`` with the command's arguments).

``--resume`` continues ``OUT/checkpoint.pt`` only when the checkpoint was made from the same graph
(topology digest), model factory and arguments, initialisation, dataset contents and settings;
otherwise it stops with one line naming what differs, before writing anything into ``OUT``.

The heavy modules are imported inside :func:`run`, so building the parser stays fast and this
module imports before the bridge exists. User errors (including any file that fails to load:
graph, dataset, checkpoint) print one line on stderr and return 2.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from importlib import import_module
from pathlib import Path

__all__ = ["add_arguments", "run"]

# Mirrors n2ngraph.training.OPTIMIZERS / AMP_MODES (kept literal so the parser needs no torch;
# tests/test_training.py checks they agree).
_OPTIMIZERS = ("adam", "adamw", "sgd")
_AMP_MODES = ("auto", "off", "bf16", "fp16")
_SCHEDULES = ("constant", "cosine", "step")


class UserError(Exception):
    """A problem with the command's input, reported as one line and exit code 2."""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser`` (a subparser of ``n2ngraph``) and return it."""
    req = parser.add_argument_group("required")
    req.add_argument("--graph", required=True, help="graph variant (.npz written by save_graph)")
    req.add_argument("--model", required=True,
                     help="reference model: a registered name (vgg19, resnet50, paper_mlp, ...) or "
                          "'module.path:factory' (called with num_classes=...)")
    req.add_argument("--data", required=True,
                     help="dataset spec: cifar10:PATH, cifar100:PATH, mnist5k, digits, synthetic[:k=v,...]")
    req.add_argument("--out", required=True, help="output folder (log.csv, checkpoint.pt, config.json)")
    parser.add_argument("--epochs", type=int, default=300, help="epochs (default: 300, the paper's)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--init", choices=("dense", "sparse"), default="dense",
                        help="dense: keep the reference init; sparse: Kaiming on each unit's kept fan-in")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch size (default: 128)")
    parser.add_argument("--lr", type=float, default=0.05, help="initial learning rate (default: 0.05)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the reference init, the shuffle, augmentation and dropout (default: 0)")
    parser.add_argument("--optimizer", choices=_OPTIMIZERS, default="sgd", help="default: sgd")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="default: 5e-4")
    parser.add_argument("--schedule", choices=_SCHEDULES, default="step", help="default: step")
    parser.add_argument("--lr-step", type=int, default=30, help="step schedule period in epochs (default: 30)")
    parser.add_argument("--lr-gamma", type=float, default=0.5, help="step schedule factor (default: 0.5)")
    parser.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm to this value")
    parser.add_argument("--amp", choices=_AMP_MODES, default="auto",
                        help="mixed precision (auto: bf16/fp16 on CUDA, off on CPU)")
    parser.add_argument("--no-augment", action="store_true", help="no random crop/flip on CIFAR")
    parser.add_argument("--model-kwargs", default="{}",
                        help="JSON keywords for the model factory, e.g. '{\"head\": \"cifar\"}'")
    parser.add_argument("--compile", action="store_true", help="run the forward pass through torch.compile")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _model_factory(spec: str):
    """``name`` -> registered factory; ``module.path:factory`` -> that callable."""
    from n2ngraph.models import MODELS

    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"cannot import model factory {spec!r}: {exc}") from None
        if not callable(factory):
            raise UserError(f"model factory {spec!r} is not callable")
        return factory
    if spec not in MODELS:
        raise UserError(f"unknown model {spec!r}; valid models are {sorted(MODELS)} or 'module.path:factory'")
    return MODELS[spec]


def _build_reference(factory, *, num_classes: int, sample_shape: tuple[int, ...], seed: int, kwargs: dict):
    """Call ``factory`` with ``num_classes`` (and ``in_features`` for fully connected models when
    it takes one and none was given) under a private seeded RNG."""
    import torch

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs = dict(kwargs)
    if "num_classes" in params and "num_classes" not in kwargs:
        kwargs["num_classes"] = num_classes
    if "in_features" in params and "in_features" not in kwargs:
        kwargs["in_features"] = math.prod(sample_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return factory(**kwargs)
        except (TypeError, ValueError) as exc:
            raise UserError(f"cannot build the model with {kwargs}: {exc}") from None


def _check_forward(model, dataset, name: str) -> None:
    import torch

    x = dataset[:2][0]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
    except RuntimeError as exc:
        raise UserError(f"model {name!r} does not accept {dataset.name} samples of shape "
                        f"{tuple(x.shape[1:])}: {exc}".splitlines()[0]) from None
    finally:
        model.train(was_training)
    if logits.ndim != 2 or logits.shape[1] != dataset.num_classes:
        raise UserError(f"model {name!r} outputs shape {tuple(logits.shape)} but {dataset.name} has "
                        f"{dataset.num_classes} classes")


def _run(args: argparse.Namespace) -> int:
    from n2ngraph.data import parse_spec

    try:
        model_kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as exc:
        raise UserError(f"--model-kwargs is not valid JSON ({exc}): {args.model_kwargs!r}") from None
    if not isinstance(model_kwargs, dict):
        raise UserError(f"--model-kwargs must be a JSON object, got {args.model_kwargs!r}")
    parse_spec(args.data)  # unknown dataset names fail before anything slow
    factory = _model_factory(args.model)
    graph_path = Path(args.graph)
    if not graph_path.is_file():
        raise UserError(f"graph file {graph_path} does not exist")

    from n2ngraph.training import TrainConfig, resolve_device

    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        lr_step=args.lr_step, lr_gamma=args.lr_gamma, grad_clip=args.grad_clip, amp=args.amp,
        device=args.device, compile=args.compile, progress=not args.no_progress,
    )
    resolve_device(config.device)  # refuse cuda on a CPU machine before loading anything

    from n2ngraph.bridge import to_model
    from n2ngraph.data import load_dataset
    from n2ngraph.io import graph_digest, load_graph
    from n2ngraph.training import _atomic_write_bytes, check_resume, train

    graph = load_graph(graph_path)
    from n2ngraph.models import MODELS

    made_from = graph.provenance.get("model")
    if made_from in MODELS and made_from != args.model:  # a class name such as "VGG" says nothing
        print(f"n2ngraph train: warning: {graph_path} was made from model {made_from!r}, "
              f"--model is {args.model!r}", file=sys.stderr)
    train_set = load_dataset(args.data, train=True, augment=False if args.no_augment else None)
    test_set = load_dataset(args.data, train=False)
    reference = _build_reference(factory, num_classes=train_set.num_classes,
                                 sample_shape=train_set.sample_shape, seed=args.seed, kwargs=model_kwargs)
    _check_forward(reference, test_set, args.model)
    model = to_model(graph, reference, init=args.init, seed=args.seed)

    out = Path(args.out)
    # what the checkpoint must have been made from: the graph's topology, the model factory and
    # its arguments, the initialisation (the data, masks and settings are checked by train)
    identity = {"graph": graph_digest(graph),
                "factory": {"model": args.model, "kwargs": model_kwargs, "init": args.init}}
    # refuse a mismatched --resume (or a run without it) before writing anything into OUT
    check_resume(model, train_set, test_set, config, out_dir=out, resume=args.resume, seed=args.seed,
                 identity=identity)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(out / "cli.json", json.dumps(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
         if k != "func" and not k.startswith("_")},
        indent=2, default=str).encode())
    log = train(model, train_set, test_set, config, out_dir=out, resume=args.resume, seed=args.seed,
                identity=identity)
    if len(log):
        last = log.iloc[-1]
        print(f"epoch {int(last['epoch'])}: test accuracy {100 * last['test_acc']:.2f}% "
              f"(best {100 * log['test_acc'].max():.2f}%), train loss {last['train_loss']:.4f}; "
              f"log and checkpoint in {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``n2ngraph train`` with parsed ``args``; 0 on success, 2 on a user error, 130 when
    interrupted (the last finished epoch is checkpointed: rerun with ``--resume``)."""
    try:
        return _run(args)
    except (UserError, ValueError, TypeError, OSError) as exc:  # OSError: missing/unreadable files
        print(f"n2ngraph train: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"n2ngraph train: interrupted; continue with --resume (checkpoint in {args.out})", file=sys.stderr)
        return 130

"""``n2ngraph train``: train a graph variant as a masked model.

::

    n2ngraph train --graph VARIANT.npz --model vgg19 --data cifar10:PATH --epochs N --out DIR
                   [--resume] [--init dense|sparse] [--device auto] [--batch-size 128] [--lr 0.05]
                   [--seed 0] [--optimizer sgd] [--amp auto] ...

Steps: load the graph (:func:`n2ngraph.io.load_graph`), build the reference model
(:func:`n2ngraph.models.resolve_model`: a registered name or ``module.path:factory``) seeded with
``--seed``, map the graph onto it (:func:`n2ngraph.bridge.to_model`), load both splits of the
dataset (:func:`n2ngraph.data.load_dataset`) and run :func:`n2ngraph.training.train` into ``--out``
(``config.json``, ``log.csv``, ``checkpoint.pt``, plus ``cli.json`` with the command's arguments).

The training options and their defaults are :class:`n2ngraph.training.TrainConfig`'s fields
(one home: the parser reads them, it never retypes them).

``--resume`` continues ``OUT/checkpoint.pt`` only when the checkpoint was made from the same graph
(topology digest), model factory and arguments, initialisation, dataset contents and settings;
otherwise it stops with one line naming what differs, before writing anything into ``OUT``.

Errors are raised, and reported by :func:`n2ngraph.cli.main` (one line, exit code 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

__all__ = ["add_arguments", "interrupt_hint", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser`` (a subparser of ``n2ngraph``) and return it.

    Every training option's default and choices come from :class:`~n2ngraph.training.TrainConfig`
    and the registries of :mod:`n2ngraph.training`.
    """
    from n2ngraph.training import AMP_MODES, OPTIMIZERS, SCHEDULES, TrainConfig

    d = TrainConfig()
    req = parser.add_argument_group("required")
    req.add_argument("--graph", required=True, help="graph variant (.npz written by save_graph)")
    req.add_argument("--model", required=True,
                     help="reference model: a registered name (vgg19, resnet50, paper_mlp, ...) or "
                          "'module.path:factory' (called with num_classes=...)")
    req.add_argument("--data", required=True,
                     help="dataset spec: cifar10:PATH, cifar100:PATH, mnist5k, digits, synthetic[:k=v,...]")
    req.add_argument("--out", required=True, help="output folder (log.csv, checkpoint.pt, config.json)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default: {d.epochs}, the paper's)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--init", choices=("dense", "sparse"), default="dense",
                        help="dense: keep the reference init; sparse: Kaiming on each unit's kept fan-in")
    parser.add_argument("--device", default=d.device, help="auto (CUDA if available), cpu, cuda, cuda:N "
                        f"(default: {d.device})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help=f"training batch size (default: {d.batch_size})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"initial learning rate (default: {d.lr})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the reference init, the shuffle, augmentation and dropout (default: 0)")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=d.optimizer,
                        help=f"default: {d.optimizer}")
    parser.add_argument("--momentum", type=float, default=d.momentum, help=f"SGD momentum (default: {d.momentum})")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"default: {d.weight_decay}")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default=d.schedule, help=f"default: {d.schedule}")
    parser.add_argument("--lr-step", type=int, default=d.lr_step,
                        help=f"step schedule period in epochs (default: {d.lr_step})")
    parser.add_argument("--lr-gamma", type=float, default=d.lr_gamma,
                        help=f"step schedule factor (default: {d.lr_gamma})")
    parser.add_argument("--grad-clip", type=float, default=d.grad_clip,
                        help="clip the gradient norm to this value")
    parser.add_argument("--amp", choices=AMP_MODES, default=d.amp,
                        help=f"mixed precision (auto: bf16/fp16 on CUDA, off on CPU; default: {d.amp})")
    parser.add_argument("--no-augment", action="store_true", help="no random crop/flip on CIFAR")
    parser.add_argument("--model-kwargs", default="{}",
                        help="JSON keywords for the model factory, e.g. '{\"head\": \"cifar\"}'")
    parser.add_argument("--compile", action="store_true", default=d.compile,
                        help="run the forward pass through torch.compile")
    parser.add_argument("--no-progress", action="store_false", dest="progress", default=d.progress,
                        help="no progress bars")
    return parser


def _train_config(args: argparse.Namespace):
    """The :class:`~n2ngraph.training.TrainConfig` of parsed ``args``: every field the parser
    has an option for (same name), the others at their defaults."""
    from n2ngraph.training import TrainConfig

    given = vars(args)
    return TrainConfig(**{f.name: given[f.name] for f in dataclasses.fields(TrainConfig) if f.name in given})


def _model_kwargs(text: str) -> dict:
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--model-kwargs is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--model-kwargs must be a JSON object, got {text!r}")
    return kwargs


def _check_forward(model, dataset, name: str) -> None:
    """Refuse a model that does not map two of ``dataset``'s samples to ``num_classes`` logits."""
    import torch

    x = dataset[:2][0]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
    except RuntimeError as exc:
        raise ValueError(f"model {name!r} does not accept {dataset.name} samples of shape "
                         f"{tuple(x.shape[1:])}: {exc}".splitlines()[0]) from None
    finally:
        model.train(was_training)
    if logits.ndim != 2 or logits.shape[1] != dataset.num_classes:
        raise ValueError(f"model {name!r} outputs shape {tuple(logits.shape)} but {dataset.name} has "
                         f"{dataset.num_classes} classes")


def run(args: argparse.Namespace) -> int:
    """Run ``n2ngraph train`` with parsed ``args``; returns 0. Bad arguments and files raise
    (``ValueError``, ``OSError``; :func:`n2ngraph.cli.main` reports them in one line)."""
    from n2ngraph.data import parse_spec
    from n2ngraph.models import model_factory

    model_kwargs = _model_kwargs(args.model_kwargs)
    parse_spec(args.data)  # unknown dataset names fail before anything slow
    model_factory(args.model)  # so do unknown models and factories that do not import
    graph_path = Path(args.graph)
    if not graph_path.is_file():
        raise FileNotFoundError(f"graph file {graph_path} does not exist")

    from n2ngraph.training import resolve_device

    config = _train_config(args)
    resolve_device(config.device)  # refuse cuda on a CPU machine before loading anything

    from n2ngraph.bridge import to_model
    from n2ngraph.data import load_dataset
    from n2ngraph.io import atomic_write, graph_digest, load_graph
    from n2ngraph.models import MODELS, resolve_model
    from n2ngraph.training import (
        CHECKPOINT_NAME,
        CONFIG_NAME,
        LOG_NAME,
        CheckpointExistsError,
        check_resume,
        train,
    )

    graph = load_graph(graph_path)
    made_from = graph.provenance.get("model")
    if made_from in MODELS and made_from != args.model:  # a class name such as "VGG" says nothing
        print(f"n2ngraph train: warning: {graph_path} was made from model {made_from!r}, "
              f"--model is {args.model!r}", file=sys.stderr)
    train_set = load_dataset(args.data, train=True, augment=False if args.no_augment else None)
    test_set = load_dataset(args.data, train=False)
    # num_classes and in_features (fully connected models) from the data, where the factory takes them
    reference = resolve_model(args.model, seed=args.seed, **model_kwargs, defaults={
        "num_classes": train_set.num_classes, "in_features": math.prod(train_set.sample_shape)})
    _check_forward(reference, test_set, args.model)
    model = to_model(graph, reference, init=args.init, seed=args.seed)

    out = Path(args.out)
    # what the checkpoint must have been made from: the graph's topology, the model factory and
    # its arguments, the initialisation (the data, masks and settings are checked by train)
    identity = {"graph": graph_digest(graph),
                "factory": {"model": args.model, "kwargs": model_kwargs, "init": args.init}}
    # refuse a mismatched --resume (or a run without it) before writing anything into OUT
    try:
        check_resume(model, train_set, test_set, config, out_dir=out, resume=args.resume, seed=args.seed,
                     identity=identity)
    except CheckpointExistsError as exc:  # the library's words (resume=True) in the command's
        raise ValueError(f"{exc.path} exists; pass --resume to continue that run, or choose "
                         "another --out") from None
    out.mkdir(parents=True, exist_ok=True)
    cli_record = json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                             if not k.startswith("_")}, indent=2, default=str)
    atomic_write(out / "cli.json", lambda tmp: Path(tmp).write_text(cli_record))
    log = train(model, train_set, test_set, config, out_dir=out, resume=args.resume, seed=args.seed,
                identity=identity)
    if len(log):
        last = log.iloc[-1]
        print(f"epoch {int(last['epoch'])}: test accuracy {100 * last['test_acc']:.2f}% "
              f"(best {100 * log['test_acc'].max():.2f}%), train loss {last['train_loss']:.4f}")
    names = ["cli.json", *(n for n in (CONFIG_NAME, LOG_NAME, CHECKPOINT_NAME) if (out / n).exists())]
    print(f"wrote {out}/ {' '.join(names)}")
    return 0


def interrupt_hint(args: argparse.Namespace) -> str:
    """What :func:`n2ngraph.cli.main` adds after "interrupted": the last finished epoch is
    checkpointed, so the run continues with ``--resume``."""
    return f"continue with --resume (checkpoint in {args.out})"

"""``n2ngraph train``: train a graph variant as a masked model.

::

    n2ngraph train --graph VARIANT.npz --data cifar10:PATH --epochs N --out DIR [--model vgg19]
                   [--resume] [--init dense|sparse] [--device auto] [--batch-size 128] [--lr 0.05]
                   [--seed 0] [--optimizer sgd] [--amp auto] [--input-shape C,H,W] ...

Steps: load the graph (:func:`n2ngraph.io.load_graph`), build the reference model
(:func:`n2ngraph.models.resolve_model`: a registered name or ``module.path:factory``; default the
model, and its keywords, that ``n2ngraph graph`` recorded in the graph's provenance) seeded with
``--seed`` and fitted to the data (``num_classes``, ``in_features``, ``in_channels`` where the
factory takes them), load both splits of the dataset (:func:`n2ngraph.data.load_dataset`), check
that graph, model and data shapes agree (:func:`n2ngraph.training.check_input_fits`: one line
naming the shapes otherwise, before anything is written), map the graph onto the model
(:func:`n2ngraph.bridge.to_model`) and run :func:`n2ngraph.training.train` into ``--out``
(``config.json``, ``log.csv``, ``checkpoint.pt``, plus ``cli.json`` with the command's arguments,
``run.json`` saying what the run is (:func:`run_meta`: the layout the Figure 5 / Table 1 driver
reads) and ``curve.png|pdf``, accuracy and loss per epoch: :func:`n2ngraph.plotting.plot_train_curve`).

``--input-shape C,H,W`` feeds every sample as that shape (same number of values as the data's
samples: ``784`` for an MLP without a flatten layer, or the shape the graph was traced at).

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
import sys
from pathlib import Path

__all__ = ["CURVE_NAME", "RUN_META", "add_arguments", "interrupt_hint", "parse_model_kwargs", "run",
           "run_meta"]

#: What the run is (method, variant, density, seed, init, model, data, recipe): :func:`run_meta`.
RUN_META = "run.json"
#: Base name of the accuracy / loss figure written beside ``log.csv`` (``curve.png``, ``curve.pdf``).
CURVE_NAME = "curve"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser`` (a subparser of ``n2ngraph``) and return it.

    Every training option's default and choices come from :class:`~n2ngraph.training.TrainConfig`
    and the registries of :mod:`n2ngraph.training`.
    """
    from n2ngraph.training import AMP_MODES, OPTIMIZERS, SCHEDULES, TrainConfig

    d = TrainConfig()
    req = parser.add_argument_group("required")
    req.add_argument("--graph", required=True, help="graph variant (.npz written by save_graph)")
    parser.add_argument("--model", default=None,
                        help="reference model: a registered name (vgg19, resnet50, paper_mlp, ...) or "
                             "'module.path:factory' (called with num_classes=...); default: the model "
                             "the graph was made from (recorded by n2ngraph graph)")
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
    parser.add_argument("--model-kwargs", default=None,
                        help="JSON keywords for the model factory, e.g. '{\"head\": \"cifar\"}' (default: "
                             "those recorded in the graph when --model is not given, else none)")
    parser.add_argument("--input-shape", default=None, metavar="C,H,W",
                        help="feed each sample as this shape (same number of values as the data's), "
                             "e.g. 784 for an MLP without a flatten layer")
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


def parse_model_kwargs(text: str) -> dict:
    """``--model-kwargs`` JSON text -> dict; a ValueError names the text otherwise (shared with
    ``n2ngraph graph``)."""
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--model-kwargs is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--model-kwargs must be a JSON object, got {text!r}")
    return kwargs


def _model_of(args: argparse.Namespace, graph, graph_path: Path) -> tuple[str, dict]:
    """The model spec and factory keywords: ``--model`` / ``--model-kwargs``, else those the
    graph's provenance records (``n2ngraph graph`` writes them; a class name such as ``"VGG"``
    recorded by the library is not a spec)."""
    from n2ngraph.models import MODELS

    made_from = graph.provenance.get("model")
    if args.model is not None:
        if made_from in MODELS and made_from != args.model:
            print(f"n2ngraph train: warning: {graph_path} was made from model {made_from!r}, "
                  f"--model is {args.model!r}", file=sys.stderr)
        return args.model, parse_model_kwargs(args.model_kwargs or "{}")
    if not isinstance(made_from, str) or not (made_from in MODELS or ":" in made_from):
        raise ValueError(f"{graph_path} does not record which model it was made from (it says "
                         f"{made_from!r}); give --model")
    recorded = graph.provenance.get("model_kwargs") or {}
    kwargs = parse_model_kwargs(args.model_kwargs) if args.model_kwargs is not None else dict(recorded)
    return made_from, kwargs


def run_meta(graph, *, model: str, data: str, seed: int, init: str, graph_path: str) -> dict:
    """What a run is, for tables of many runs (``RUN_META``, read by
    ``analysis/figure5_table1_training.py``): ``method``, ``variant`` (``plain``, ``n2nskip``;
    ``dense`` with method ``none`` and density 1 for an unpruned graph), ``density`` (the graph's
    kept fraction of the reference budget), ``seed``, ``init``, ``model``, ``dataset``,
    ``recipe`` and ``recipe_fields`` (compact JSON), from the graph's provenance
    (:func:`n2ngraph.pipeline.variant` records them) where the graph does not say otherwise."""
    prov = graph.provenance
    has_skips = any(b.kind == "n2nskip" for b in graph.blocks)
    pruned = prov.get("method") is not None or graph.density < 1 or has_skips
    if not pruned:
        method, variant, density = "none", "dense", 1.0
    else:
        method = str(prov.get("method") or "unknown")
        variant = str(prov.get("variant") or ("n2nskip" if has_skips else "plain"))
        density = float(prov.get("density", graph.density))
    fields = prov.get("recipe_fields")
    if isinstance(fields, dict):
        fields = json.dumps({k: v for k, v in fields.items() if k != "name"}, sort_keys=True,
                            separators=(",", ":"))
    return {"method": method, "variant": variant, "density": density, "seed": int(seed), "init": init,
            "model": model, "dataset": data, "recipe": prov.get("recipe") if pruned else None,
            "recipe_fields": fields or "", "graph": graph_path, "params": graph.num_params}


def _curve_title(graph, model: str, data: str, seed: int, init: str) -> str:
    """What a run's curve shows: the variant (from the graph's provenance), model, data, seed."""
    prov = graph.provenance
    method = prov.get("method")
    if method:
        what = f"{'N2NSkip-' if prov.get('variant') == 'n2nskip' else ''}{method} at density {prov.get('density'):g}"
    else:
        what = "dense"
    return f"{model}, {what}, {init} init, data {data}, seed {seed}"


def run(args: argparse.Namespace) -> int:
    """Run ``n2ngraph train`` with parsed ``args``; returns 0. Bad arguments and files raise
    (``ValueError``, ``OSError``; :func:`n2ngraph.cli.main` reports them in one line)."""
    from n2ngraph.data import parse_spec
    from n2ngraph.models import model_factory, parse_input_shape

    if args.model_kwargs is not None:
        parse_model_kwargs(args.model_kwargs)
    parse_spec(args.data)  # unknown dataset names fail before anything slow
    if args.model is not None:
        model_factory(args.model)  # so do unknown models and factories that do not import
    feed_shape = None if args.input_shape is None else parse_input_shape(args.input_shape)
    graph_path = Path(args.graph)
    if not graph_path.is_file():
        raise FileNotFoundError(f"graph file {graph_path} does not exist")

    from n2ngraph.training import resolve_device

    config = _train_config(args)
    resolve_device(config.device)  # refuse cuda on a CPU machine before loading anything

    from n2ngraph.bridge import to_model
    from n2ngraph.data import input_shape, load_dataset, with_input_shape
    from n2ngraph.io import atomic_write, graph_digest, load_graph
    from n2ngraph.models import data_defaults, resolve_model
    from n2ngraph.training import (
        CHECKPOINT_NAME,
        CONFIG_NAME,
        LOG_NAME,
        CheckpointExistsError,
        check_input_fits,
        check_resume,
        train,
    )

    graph = load_graph(graph_path)
    model_spec, model_kwargs = _model_of(args, graph, graph_path)
    model_factory(model_spec)
    train_set = load_dataset(args.data, train=True, augment=False if args.no_augment else None)
    test_set = load_dataset(args.data, train=False)
    if feed_shape is not None:
        train_set, test_set = with_input_shape(train_set, feed_shape), with_input_shape(test_set, feed_shape)
    # num_classes, in_features (fully connected models) and in_channels (conv nets) from the
    # data, where the factory takes them
    reference = resolve_model(model_spec, seed=args.seed, **model_kwargs,
                              defaults=data_defaults(input_shape(train_set), train_set.num_classes))
    # graph, model and data shapes must agree: one line naming them, before anything is written
    check_input_fits(reference, train_set, graph=graph, name=model_spec)
    model = to_model(graph, reference, init=args.init, seed=args.seed)

    out = Path(args.out)
    # what the checkpoint must have been made from: the graph's topology, the model factory and
    # its arguments, the initialisation (the data, masks and settings are checked by train)
    identity = {"graph": graph_digest(graph),
                "factory": {"model": model_spec, "kwargs": model_kwargs, "init": args.init}}
    # refuse a mismatched --resume (or a run without it) before writing anything into OUT
    try:
        check_resume(model, train_set, test_set, config, out_dir=out, resume=args.resume, seed=args.seed,
                     identity=identity)
    except CheckpointExistsError as exc:  # the library's words (resume=True) in the command's
        raise ValueError(f"{exc.path} exists; pass --resume to continue that run, or choose "
                         "another --out") from None
    out.mkdir(parents=True, exist_ok=True)
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")}
    record.update(model=model_spec, model_kwargs=model_kwargs)  # as resolved (the graph's by default)
    cli_record = json.dumps(record, indent=2, default=str)
    atomic_write(out / "cli.json", lambda tmp: Path(tmp).write_text(cli_record))
    meta = json.dumps(run_meta(graph, model=model_spec, data=args.data, seed=args.seed, init=args.init,
                               graph_path=str(graph_path)), indent=2)
    atomic_write(out / RUN_META, lambda tmp: Path(tmp).write_text(meta))
    log = train(model, train_set, test_set, config, out_dir=out, resume=args.resume, seed=args.seed,
                identity=identity)
    names = ["cli.json", RUN_META, *(n for n in (CONFIG_NAME, LOG_NAME, CHECKPOINT_NAME) if (out / n).exists())]
    if len(log):
        from n2ngraph.plotting import plot_train_curve

        last = log.iloc[-1]
        print(f"epoch {int(last['epoch'])}: test accuracy {100 * last['test_acc']:.2f}% "
              f"(best {100 * log['test_acc'].max():.2f}%), train loss {last['train_loss']:.4f}")
        title = _curve_title(graph, model_spec, args.data, args.seed, args.init)
        plot_train_curve(log, title=title, path=out / CURVE_NAME)
        names += [f"{CURVE_NAME}.png", f"{CURVE_NAME}.pdf"]
    print(f"wrote {out}/ {' '.join(names)}")
    return 0


def interrupt_hint(args: argparse.Namespace) -> str:
    """What :func:`n2ngraph.cli.main` adds after "interrupted": the last finished epoch is
    checkpointed, so the run continues with ``--resume``."""
    return f"continue with --resume (checkpoint in {args.out})"

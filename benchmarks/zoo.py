"""Benchmark: trace every torchvision classification model (and a set of timm families).

For each model (random init, as constructed, never downloaded weights) and each mode (train,
eval) the model is traced with :func:`n2ngraph.trace.trace` on one ``1 x 3 x S x S`` input and the
result is one of

- ``ok``: traced, and the independent fx data-flow check found no mismatch;
- ``mismatch``: traced, but the graph disagrees with the fx data flow (a wrong graph: a bug);
- ``error``: a clear ``ValueError`` / ``TypeError`` (the op and module are in ``why``);
- ``crash``: any other exception (an unclear failure: a bug).

The independent check does not reuse the tracer's walk. For every weight layer of the graph it
walks the fx graph upstream from the layer's call, through every tensor-valued node, and stops at
the nearest weight layers (or the input placeholder); the graph must give the same set when its
blocks are followed backwards from the layer's source group (sequential blocks into a group name
the layers that made it; residual blocks lead on to their source group). It also counts the
model's prunable layers that the graph does not contain (``outside``: e.g. aux heads in eval).

torch runs single-threaded (``torch.set_num_threads(1)``, set OMP/OPENBLAS_NUM_THREADS=1 too).
torchvision and timm are not dependencies of n2ngraph; the torchvision wheel on CPU-torch
machines needs the import helper of ``tests/_zoo_support.py``.

With ``--bridge``, every model traced in eval mode is also pruned and rebuilt: ``variant``
(random, density 0.1, N2NSkip, the paper recipe without dense layers) + ``to_model`` + one forward
pass (``ok``), and the result traced again must give the variant's graph (``round trip``:
``to_graph(to_model(g)) == g``; a model that runs but differs is ``round-trip-differs``).

Run: ``OMP_NUM_THREADS=1 python benchmarks/zoo.py [--library torchvision timm] [--models a b]
[--max-params 200e6] [--size 224] [--bridge] [--csv rows.csv]``
"""

from __future__ import annotations

import argparse
import collections
import csv
import gc
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _zoo_support import (  # noqa: E402
    dataflow_mismatches,
    import_timm,
    import_torchvision,
    torchvision_classifiers,
)

from n2ngraph.masks import prunable_weights  # noqa: E402
from n2ngraph.trace import trace  # noqa: E402

#: timm models across families (the issue's 26): small members, random init.
TIMM_MODELS = (
    "resnet18", "densenet121", "inception_v3", "vgg11", "dla34", "repvgg_a0",
    "efficientnet_b0", "mobilenetv3_small_100", "regnety_002", "tinynet_a", "efficientnetv2_rw_t",
    "convnext_atto", "swin_tiny_patch4_window7_224", "vit_tiny_patch16_224", "deit_tiny_patch16_224",
    "mixer_s16_224", "levit_128s", "coat_lite_tiny", "poolformer_s12",
    "cspresnet50", "res2net50_26w_4s", "skresnet18", "ghostnet_100", "rexnet_100", "dpn68",
    "mobilevit_xxs",
)


def check(result, model, x) -> tuple[int, int]:
    """(mismatching layers, prunable layers outside the graph) of one trace."""
    layers = {b.spec.module for b in result.graph.blocks if b.kind == "sequential"}
    outside = [p for p in prunable_weights(model) if p.removesuffix(".weight") not in layers]
    return len(dataflow_mismatches(result, model, x)), len(outside)


def _blocker(message: str) -> str:
    m = re.search(r"unsupported (?:op|module) '?([\w.]+)'?", message)
    if m:
        return m.group(1)
    for key in ("returns", "more than one input", "not the last node group", "Linear", "Conv2d",
                "cannot trace"):
        if key in message:
            return key
    return message[:40]


def bridge(model, x) -> str:
    """``variant`` (random pruning at 10% with N2NSkip, the paper recipe without dense layers)
    + ``to_model`` + one forward pass in eval mode + the round trip: ``"ok"``,
    ``"round-trip-differs"`` or the error."""
    import dataclasses
    import warnings

    from n2ngraph.bridge import to_model
    from n2ngraph.pipeline import variant
    from n2ngraph.recipes import RECIPES
    from n2ngraph.trace import to_graph

    recipe = dataclasses.replace(RECIPES["paper"], dense_layers=(), name="paper-sparse")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = variant(model, "random", 0.1, recipe=recipe, seed=0, example_input=x)
            masked = to_model(graph, model, example_input=x).eval()
            with torch.no_grad():
                out = masked(x)
        if not torch.isfinite(out).all():
            return "non-finite output"
        return "ok" if to_graph(masked, example_input=x) == graph else "round-trip-differs"
    except Exception as exc:  # noqa: BLE001 - reported
        return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:200]


def run_one(build, name: str, size: int, with_bridge: bool = False) -> list[dict]:
    rows = []
    try:
        model = build(name)
    except Exception as exc:  # noqa: BLE001
        return [{"model": name, "mode": m, "result": "build-failed", "why": str(exc)[:200]} for m in ("train", "eval")]
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    for mode in ("train", "eval"):
        model.train(mode == "train")
        t0 = time.perf_counter()
        row = {"model": name, "mode": mode, "params": params}
        try:
            result = trace(model, example_input=x, name=name)
            bad, outside = check(result, model, x)
            row.update(result="ok" if bad == 0 else "mismatch", mismatches=bad, outside=outside,
                       nodes=result.graph.num_nodes, why="")
        except (ValueError, TypeError) as exc:
            row.update(result="error", why=str(exc).replace("\n", " ")[:300], blocker=_blocker(str(exc)))
        except Exception as exc:  # noqa: BLE001 - reported as an unclear failure
            row.update(result="crash", why=f"{type(exc).__name__}: {exc}"[:300])
        row["seconds"] = round(time.perf_counter() - t0, 2)
        if with_bridge and mode == "eval" and row["result"] == "ok":
            model.eval()
            t1 = time.perf_counter()
            row["bridge"] = bridge(model, x)
            row["bridge_seconds"] = round(time.perf_counter() - t1, 2)
            print(f"  {name:32s} bridge {row['bridge'][:150]}", file=sys.stderr, flush=True)
        rows.append(row)
        print(f"  {name:32s} {mode:5s} {row['result']:8s} {row['seconds']:6.1f}s {row.get('why', '')[:110]}",
              file=sys.stderr, flush=True)
    del model
    gc.collect()
    return rows


def _size_for(library: str, name: str, size: int) -> int:
    if re.match(r"(vit|swin|maxvit|deit|mixer|levit|coat|mobilevit)", name):
        return 224  # fixed image size (position embeddings, windows)
    if "inception" in name:
        return 299  # the aux head's 5 x 5 conv needs the native size in training mode
    return size


def _meta_params(build, name: str) -> float:
    """Parameters of a model built on the meta device (no memory, no init time), or on the CPU
    when its constructor computes with tensors; the initializers of ``torch.nn.init`` are
    skipped either way."""
    inits = {k: v for k, v in vars(torch.nn.init).items() if k.endswith("_") and callable(v)}
    try:
        for k in inits:
            setattr(torch.nn.init, k, lambda tensor, *args, **kwargs: tensor)
        try:
            with torch.device("meta"):
                return float(sum(p.numel() for p in build(name).parameters()))
        except NotImplementedError:  # the constructor computes with tensors (RegNet's widths)
            model = build(name)
            return float(sum(p.numel() for p in model.parameters()))
    except Exception:  # noqa: BLE001 - unknown: let the real build decide
        return 0.0
    finally:
        for k, v in inits.items():
            setattr(torch.nn.init, k, v)


def summarize(rows: list[dict], library: str) -> str:
    by_model = collections.defaultdict(dict)
    for r in rows:
        by_model[r["model"]][r["mode"]] = r
    n = len(by_model)
    both = sum(all(m.get(k, {}).get("result") == "ok" for k in ("train", "eval")) for m in by_model.values())
    clear = sum(any(m[k]["result"] == "error" for k in m) and not any(
        m[k]["result"] in ("crash", "mismatch") for k in m) for m in by_model.values())
    unclear = sum(any(m[k]["result"] in ("crash", "mismatch", "build-failed") for k in m) for m in by_model.values())
    blockers = collections.Counter(
        next((m[k].get("blocker") for k in ("train", "eval") if m[k].get("blocker")), None)
        for m in by_model.values())
    blockers.pop(None, None)
    lines = [f"## {library}: {both} of {n} trace in train and eval mode with the data-flow check passing; "
             f"{clear} clear errors, {unclear} crashes/mismatches", "",
             "| model | train | eval | outside (eval) | why |", "|---|---|---|---|---|"]
    for name, m in by_model.items():
        why = next((m[k]["why"] for k in ("train", "eval") if m[k].get("why")), "")
        lines.append(f"| {name} | {m['train']['result']} | {m['eval']['result']} | "
                     f"{m['eval'].get('outside', '')} | {why[:120]} |")
    bridged = [m["eval"].get("bridge") for m in by_model.values() if "bridge" in m.get("eval", {})]
    if bridged:
        lines += ["", f"variant + to_model + forward: {len(bridged) - sum(not b.startswith(('ok', 'round')) for b in bridged)} "
                  f"of {len(bridged)} traced models run; {bridged.count('ok')} of them also round-trip"]
    lines += ["", "| first blocker | models |", "|---|---|"]
    lines += [f"| `{op}` | {count} |" for op, count in blockers.most_common()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", nargs="+", default=["torchvision", "timm"], choices=["torchvision", "timm"])
    parser.add_argument("--models", nargs="+", help="only these model names")
    parser.add_argument("--max-params", type=float, default=float("inf"),
                        help="skip models with more parameters (counted at build, e.g. 200e6)")
    parser.add_argument("--size", type=int, default=224, help="input size of CNNs (default 224)")
    parser.add_argument("--csv", type=Path, help="write every row to this CSV file")
    parser.add_argument("--bridge", action="store_true",
                        help="also run variant + to_model + one forward pass on each traced model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    all_rows = []
    for library in args.library:
        if library == "torchvision":
            tv = import_torchvision()
            if tv is None:
                print("torchvision is not importable: skipped", file=sys.stderr)
                continue
            names = torchvision_classifiers()

            def build(n, tv=tv):
                return tv.models.get_model(n, weights=None)
        else:
            timm = import_timm()
            if timm is None:
                print("timm is not importable: skipped", file=sys.stderr)
                continue
            names = list(TIMM_MODELS)

            def build(n, timm=timm):
                return timm.create_model(n, pretrained=False)
        if args.models:
            names = [n for n in names if n in args.models]
        rows = []
        for name in names:
            if args.max_params < float("inf") and _meta_params(build, name) > args.max_params:
                print(f"  {name}: over --max-params, skipped", file=sys.stderr)
                continue
            rows += run_one(build, name, _size_for(library, name, args.size), args.bridge)
        for r in rows:
            r["library"] = library
        all_rows += rows
        print(summarize(rows, library))
        print()
    if args.csv:
        keys = ["library", "model", "mode", "result", "params", "nodes", "mismatches", "outside",
                "seconds", "blocker", "why", "bridge", "bridge_seconds"]
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(all_rows)


if __name__ == "__main__":
    main()

"""Benchmark: pruning VGG19 (139.6M weights) at initialization on the CPU.

Times ``prune(vgg19(), method, density, data=one batch)`` for every method, reporting the median
of the repeats and its ratio to ``random`` measured in the same run (the cheapest method: its time
is the cost of thresholding alone). The target of issue 3: ``snip`` at density 0.02 with one
batch of 128 random 3 x 32 x 32 inputs in under 30 s.

BLAS threads (threadpoolctl) and torch intra-op threads are pinned to ``--threads`` and reported.

Usage::

    python benchmarks/pruning.py                       # full run: all methods, VGG19
    python benchmarks/pruning.py --quick               # smoke run: VGG19 with the CIFAR head
    python benchmarks/pruning.py --methods random,snip --repeats 5 --out results/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import torch
from threadpoolctl import threadpool_limits

from n2ngraph.models import build_model
from n2ngraph.pruning import METHODS, prune


def _time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    head = "cifar" if args.quick else "torchvision"
    model = build_model("vgg19", seed=0, head=head)
    n_weights = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
    )
    g = torch.Generator().manual_seed(0)
    data = (
        torch.randn(args.batch, 3, 32, 32, generator=g),
        torch.randint(0, 10, (args.batch,), generator=g),
    )
    methods = args.methods.split(",")
    if "random" not in methods:
        methods = ["random", *methods]
    rows = {}
    for method in methods:
        options = {"rounds": args.synflow_rounds} if method == "synflow" else {}
        repeats = 1 if method in ("synflow", "grasp") and not args.quick else args.repeats

        def call(method=method, options=options):
            return prune(
                model, method, args.density, data=data, scope=args.scope, seed=0, **options
            )

        times = _time(call, repeats)
        rows[method] = {
            "median_s": statistics.median(times),
            "times_s": times,
            "repeats": repeats,
            **({"rounds": options["rounds"]} if options else {}),
        }
        print(
            f"{method:>10}: median {rows[method]['median_s']:8.2f} s over {repeats} "
            f"run(s){'  rounds=' + str(options['rounds']) if options else ''}",
            flush=True,
        )
    base = rows["random"]["median_s"]
    for row in rows.values():
        row["ratio_vs_random"] = row["median_s"] / base
    return {
        "model": f"vgg19(head={head!r})",
        "weights": n_weights,
        "density": args.density,
        "scope": args.scope,
        "batch": args.batch,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "results": rows,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=",".join(sorted(METHODS)))
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--scope", default="layerwise")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="BLAS and torch threads")
    parser.add_argument("--synflow-rounds", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="VGG19 with the 512->10 CIFAR head")
    parser.add_argument("--out", help="write the results as JSON here (atomically)")
    args = parser.parse_args(argv)
    with threadpool_limits(limits=args.threads):
        result = run(args)
    print(
        f"\n{result['model']}: {result['weights']:,} weights, density {args.density}, "
        f"scope {args.scope}, batch {args.batch}, {args.threads} BLAS/torch threads"
    )
    print(f"{'method':>10} {'median s':>10} {'x random':>10}")
    for method, row in result["results"].items():
        print(f"{method:>10} {row['median_s']:10.2f} {row['ratio_vs_random']:10.2f}")
    if args.out:
        folder = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh, indent=2)
        os.replace(tmp, args.out)
    return result


if __name__ == "__main__":
    main()

"""Benchmark: training throughput (images/s) of pruned and N2NSkip models vs the dense model.

For each model (``--models``, default: ResNet18; the paper's VGG19, i.e. the authors' CIFAR model
with a 512-512-10 classifier, 20.3M weights, the one Table 3 uses; torchvision's VGG19 with the
4096-4096-10 head, 139.6M weights; all CIFAR-shaped, 10 classes) these variants are timed in the
same run, as ratios to the dense model's images/s:

- ``dense``: the reference;
- ``masked``: the plain pruned graph at ``--density`` under the recipe (``variant(...,
  skips=False)``), built with ``to_model``;
- ``n2nskip``: the recipe's N2NSkip variant at the same total budget (``variant(...,
  skips=True)``);
- ``n2nskip-<recipe>`` for every extra ``--also-recipes`` entry (default: ``all-pairs`` on
  ResNet18, today's exploratory recipe with 1x1 skips between every non-consecutive pair).

A step is forward + backward + SGD (momentum 0.9, wd 5e-4); on CUDA with bf16 autocast (``--amp``,
default on CUDA). After ``--warmup`` steps per variant, each variant runs ``--steps`` steps
``--repeats`` times, the variants interleaved within every repeat (so a slow spell of a shared
machine hits all of them), and the median images/s is reported with the ratio to dense.
Targets: masked >= 0.9x dense, paper-recipe N2NSkip >= 0.8x, all-pairs N2NSkip ResNet18 >= 0.5x.

On CPU, torch's intra-op pool and the BLAS/OpenMP pools run with ``--threads`` threads
(``torch.set_num_threads`` and threadpoolctl), stated in the output. On a machine shared with
other jobs, ``--clock process`` with ``--threads 1`` times this process's CPU time instead of the
wall clock, so other processes do not skew the ratios. ``--profile`` prints the
top operators of one training step of every variant (``torch.profiler``, CPU time).

Where CPU time goes (``--profile``; VGG19 with torchvision's 4096-unit head, 139.6M weights):
a masked model computes ``where(mask, w, 0)`` over every stored weight in the forward pass and
again on the weight gradient, two passes over 139.6M entries per step; most of that cost is the
kernel's page faults on two fresh 0.56 GB tensors per step, not the arithmetic. glibc returns
such large blocks to the OS on every free; keeping them (``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=100000000000``, or jemalloc/tcmalloc) removes most of it, for the dense
model too. The malloc settings in effect are printed and saved with the results.

Where an N2NSkip model's extra time goes (paper recipe, expander at 2%, batch 16, one thread,
isolated forward + backward of each skip module): ResNet18's 8 skips cost about 0.19 s of CPU per
step against 1.75 s for the dense model. The 3 skips into the blocks that halve the resolution
stride like the block's conv (``skip_downsample="stride"``) and compute by the CSR product
(``mode="csr"``, 16-44 ms each); the other 5 keep 1.7% of their pairs, 1-18 per source channel,
and compute by the gathered depthwise conv (18-24 ms each). Before (stride-1 skips at the source
resolution, max-pooled; depthwise everywhere) the same 8 cost 0.37 s, the 3 into the smaller
blocks 80-95 ms each. VGG19's 4 stage skips cost about 0.21 s against 1.35 s: they compute at the
source resolution and max-pool, as the reference code does; three keep 10.4% of their pairs
(27-53 per source channel) and take the CSR product (28-66 ms, against 60-118 ms for the dense
kernel they used before), the one from the 3-channel input keeps all its pairs (dense; 45-65 ms,
most of it BatchNorm and max-pooling of a 128 x 32 x 32 map). ``benchmarks/skip_modes.py`` times
the three ways of computing a skip per block shape.

Measured (2026-11-26, shared 2-core AMD EPYC CPU, torch 2.13, ``--device cpu --models resnet18
analysis.common:vgg19_reference --batch 16 --steps 3 --repeats 5 --threads 1 --clock process``,
expander at 2%, paper recipe): ResNet18 masked 0.99x, N2NSkip 0.90x, all-pairs N2NSkip 0.58x;
paper VGG19 (``analysis.common:vgg19_reference``) masked 0.95x, N2NSkip 0.86x. At ``--batch 64
--steps 2 --warmup 1 --repeats 3``: ResNet18 0.99x / 0.91x / 0.57x, VGG19 1.02x / 0.89x. torchvision's VGG19
(``--models vgg19``, same settings, the same day): masked 0.83x, N2NSkip 0.78x; there the cost is
the mask parametrization on the 120M classifier weights (see above), not the skips.

    python benchmarks/training.py                      # GPU if present, batch 128
    python benchmarks/training.py --device cpu --batch 16 --steps 3 --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from n2ngraph import models
from n2ngraph.bridge import to_model

#: Default models: ResNet18, the paper's VGG19 (the authors' CIFAR model, 512-512-10 head, the one
#: Table 3 uses; ``docs/recipes.md``) and torchvision's VGG19 (4096-4096-10 head, 139.6M weights).
MODELS = ("resnet18", "analysis.common:vgg19_reference", "vgg19")
#: ``--also-recipes`` default per model: extra recipes whose N2NSkip variant is timed too.
EXTRA_RECIPES = {"resnet18": ("all-pairs",)}
TARGETS = {"masked": 0.9, "n2nskip": 0.8, "n2nskip-all-pairs": 0.5}


def _variant_graph(ref, method, density, recipe, skips, x):
    """The graph of ``pipeline.variant`` (or, on a tree without it, the equivalent build)."""
    try:
        from n2ngraph.pipeline import variant
    except ImportError:  # older tree: all-pairs recipe only
        from n2ngraph.n2nskip import add_n2nskip
        from n2ngraph.pruning import prune
        from n2ngraph.trace import to_graph

        masks = prune(ref, method, density * (0.5 if skips else 1.0), seed=0)
        g = to_graph(ref, masks, example_input=x[:1])
        if not skips:
            return g
        n_total = sum(int(m.sum()) for m in prune(ref, method, density, seed=0).values())
        return add_n2nskip(g, (n_total - g.num_params) / g.dense_params, seed=0)
    return variant(ref, method, density, recipe=recipe, skips=skips, seed=0, example_input=x[:1])


def build_variants(name: str, method: str, density: float, recipe: str, extra: tuple[str, ...],
                   x: torch.Tensor) -> tuple[dict, dict]:
    """``({label: model}, {label: description})`` of the variants of one model."""
    ref = models.resolve_model(name, seed=0).to(x.device)
    out, info = {"dense": ref}, {"dense": {"params": sum(p.numel() for p in ref.parameters())}}
    for label, rec, skips in [("masked", recipe, False), ("n2nskip", recipe, True),
                              *[(f"n2nskip-{r}", r, True) for r in extra]]:
        g = _variant_graph(ref, method, density, rec, skips, x)
        out[label] = to_model(g, ref, example_input=x[:1])
        skip_blocks = [b for b in g.blocks if b.kind == "n2nskip"]
        info[label] = {"recipe": rec, "kept_weights": g.num_params,
                       "skip_blocks": len(skip_blocks),
                       "skip_weights": sum(b.num_params for b in skip_blocks),
                       "skip_dense_entries": sum(b.dense_params for b in skip_blocks)}
    return out, info


def _step(model, opt, x, y, amp: bool) -> None:
    opt.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()


def _time(model, opt, x, y, steps: int, amp: bool, clock=time.perf_counter) -> float:
    model.train()
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = clock()
    for _ in range(steps):
        _step(model, opt, x, y, amp)
    if x.is_cuda:
        torch.cuda.synchronize()
    return steps * x.shape[0] / (clock() - t0)


def _profile(label, model, opt, x, y, amp: bool, rows: int = 12) -> None:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with profile(activities=acts) as prof:
        _step(model, opt, x, y, amp)
    key = "self_cuda_time_total" if x.is_cuda else "self_cpu_time_total"
    print(f"--- profile of one step: {label}")
    print(prof.key_averages().table(sort_by=key, row_limit=rows))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS),
                        help="model specs (models.resolve_model: a registered name or "
                             "'package.module:function'); default: " + " ".join(MODELS))
    parser.add_argument("--recipe", default="paper")
    parser.add_argument("--also-recipes", nargs="*", default=None,
                        help="extra recipes whose N2NSkip variant is timed (default: all-pairs "
                             "on resnet18)")
    parser.add_argument("--method", default="expander", help="pruning method (expander = RP)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="wall: time.perf_counter; process: time.process_time, the CPU time of "
                             "this process (all its threads), for CPU runs on a shared machine")
    parser.add_argument("--profile", action="store_true", help="print a per-op profile of one step")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    amp = (device.type == "cuda") if args.amp is None else args.amp
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.clock == "process" and device.type != "cpu":
        parser.error("--clock process measures CPU time; use it with --device cpu")
    gen = torch.Generator().manual_seed(0)
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "LD_PRELOAD"}
    results = {"config": {**vars(args), "amp": amp, "torch": torch.__version__,
                          "torch_threads": torch.get_num_threads(), "malloc_env": malloc}}
    with threadpool_limits(args.threads):
        for name in args.models:
            x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=gen).to(device)
            y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
            extra = tuple(EXTRA_RECIPES.get(name, ())) if args.also_recipes is None \
                else tuple(args.also_recipes)
            t0 = time.perf_counter()
            variants, info = build_variants(name, args.method, args.density, args.recipe, extra, x)
            build_s = time.perf_counter() - t0
            opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                    for k, m in variants.items()}
            for k, m in variants.items():
                _time(m, opts[k], x, y, args.warmup, amp)
            if args.profile:
                for k, m in variants.items():
                    _profile(f"{name} {k}", m, opts[k], x, y, amp)
            rates = {k: [] for k in variants}
            for _ in range(args.repeats):
                for k, m in variants.items():
                    rates[k].append(_time(m, opts[k], x, y, args.steps, amp, clock))
            med = {k: statistics.median(v) for k, v in rates.items()}
            ratio = {k: med[k] / med["dense"] for k in med}
            results[name] = {"images_per_s": med, "ratio_to_dense": ratio, "all_rates": rates,
                             "variants": info, "build_s": build_s}
            print(f"{name} on {device} (batch {args.batch}, {args.image_size}px, amp={amp}, "
                  f"torch threads={torch.get_num_threads()}, BLAS threads<={args.threads}, "
                  f"recipe={args.recipe}, {args.method} at {args.density:g}, median of "
                  f"{args.repeats} x {args.steps} steps, {args.clock} clock, malloc env "
                  f"{malloc or 'default'}):")
            for k in med:
                target = TARGETS.get(k)
                extra_txt = "" if k == "dense" else \
                    f", {info[k]['skip_blocks']} skip blocks, {info[k]['skip_weights']} skip weights"
                print(f"  {k:20s} {med[k]:8.2f} img/s  {ratio[k]:.2f}x dense"
                      + (f"  [target >= {target}x]" if target else "") + extra_txt)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    return results


if __name__ == "__main__":
    main()

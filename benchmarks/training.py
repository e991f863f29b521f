"""Benchmark: training throughput (images/s) of masked and N2NSkip models vs the dense model.

For each model (VGG19 and ResNet50, CIFAR-shaped, 10 classes) three variants are timed in the
same run: the dense reference, the masked model at ``--density`` (random pruning, then
``to_model``) and the N2NSkip variant at the same total budget (half sequential, half skips,
``variant``'s recipe). A step is forward + backward + SGD (momentum 0.9, wd 5e-4); on CUDA with
bf16 autocast (``--amp``, default on CUDA). After ``--warmup`` steps each variant runs ``--steps``
steps ``--repeats`` times, interleaved, and the median images/s is reported with the ratio to dense.
Targets (issue 5): masked >= 0.9x dense, N2NSkip >= 0.8x dense.

On CPU torch and BLAS run with ``--threads`` threads (threadpoolctl), stated in the output.

    python benchmarks/training.py                      # GPU if present, batch 128
    python benchmarks/training.py --device cpu --batch 4 --steps 2 --repeats 3 --models vgg19
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from n2ngraph import models
from n2ngraph.bridge import to_model
from n2ngraph.n2nskip import add_n2nskip
from n2ngraph.pruning import prune
from n2ngraph.trace import to_graph


def _build(name: str, density: float, fraction: float, max_span, kernel_size: int, x: torch.Tensor):
    ref = models.build_model(name, seed=0).to(x.device)
    out = {"dense": ref}
    masks = prune(ref, "random", density, seed=0)
    out["masked"] = to_model(to_graph(ref, masks, example_input=x[:1]), ref, example_input=x[:1])
    masks_seq = prune(ref, "random", density * (1 - fraction), seed=0)
    g_seq = to_graph(ref, masks_seq, example_input=x[:1])
    n_total = sum(int(m.sum()) for m in masks.values())
    g = add_n2nskip(g_seq, (n_total - g_seq.num_params) / g_seq.dense_params, seed=0,
                    max_span=max_span, kernel_size=kernel_size)
    out["n2nskip"] = to_model(g, ref, example_input=x[:1])
    return out


def _time(model, x, y, steps: int, amp: bool) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return steps * x.shape[0] / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg19", "resnet50"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--max-span", type=int, default=None)
    parser.add_argument("--kernel-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    amp = (device.type == "cuda") if args.amp is None else args.amp
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    results = {}
    with threadpool_limits(args.threads):
        for name in args.models:
            x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=gen).to(device)
            y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
            variants = _build(name, args.density, args.fraction, args.max_span, args.kernel_size, x)
            for m in variants.values():
                _time(m, x, y, args.warmup, amp)
            rates = {k: [] for k in variants}
            for _ in range(args.repeats):
                for k, m in variants.items():
                    rates[k].append(_time(m, x, y, args.steps, amp))
            med = {k: statistics.median(v) for k, v in rates.items()}
            results[name] = {"images_per_s": med,
                             "ratio_to_dense": {k: med[k] / med["dense"] for k in med}}
            print(f"{name} on {device} (batch {args.batch}, {args.image_size}px, amp={amp}, "
                  f"threads={args.threads}): " + ", ".join(
                      f"{k} {med[k]:.1f} img/s ({med[k] / med['dense']:.2f}x dense)" for k in med)
                  + "  [targets: masked >= 0.9x, n2nskip >= 0.8x]")
    if args.json:
        from n2ngraph.io import atomic_write

        atomic_write(args.json, lambda p: open(p, "w").write(json.dumps(results, indent=2)))
    return results


if __name__ == "__main__":
    main()

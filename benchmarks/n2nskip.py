"""Benchmark: ``add_n2nskip`` on VGG19 (target: under 2 s).

Times ``add_n2nskip(graph, 0.01, ...)`` on the traced VGG19 graph (torchvision head, 10 classes,
pruned randomly to 1 %: the sequential half of a 2 % variant) with the skips of a recipe
(``--recipe``: ``all-pairs``, the default here and the heaviest, wires every group to every later
non-consecutive group with 1x1 skips; ``paper`` wires one 3x3 skip per stage). The skip blocks
include their initial pair weights. BLAS threads are pinned to 1 (threadpoolctl) and torch to 1
thread. Reports the median of ``--repeats`` runs and, as the in-run reference, the ratio to
tracing the same model (``to_graph``).

    python benchmarks/n2nskip.py [--repeats 5] [--model vgg19] [--recipe all-pairs]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from threadpoolctl import threadpool_limits

from n2ngraph import models
from n2ngraph.n2nskip import add_n2nskip
from n2ngraph.pruning import prune
from n2ngraph.recipes import RECIPES, get_recipe
from n2ngraph.trace import to_graph


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg19")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="all-pairs",
                        help="whose skips add_n2nskip adds (wiring, kernel, order, granularity)")
    parser.add_argument("--variant-snip", action="store_true",
                        help="also time pipeline.variant(model, 'snip', 0.02) under the recipe on "
                        "one CIFAR-shaped batch of 128")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    recipe = get_recipe(args.recipe)
    skip_kw = {"wiring": recipe.wiring, "skip_kernel": recipe.skip_kernel,
               "skip_order": recipe.skip_order, "granularity": recipe.granularity}
    with threadpool_limits(1):
        model = models.build_model(args.model, seed=0)
        masks = prune(model, "random", args.density, seed=0)
        t0 = time.perf_counter()
        graph = to_graph(model, masks)
        t_trace = time.perf_counter() - t0
        times = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            out = add_n2nskip(graph, args.density, seed=r, **skip_kw)
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    skips = out.blocks_of_kind("n2nskip")
    result = {"model": args.model, "recipe": recipe.name, "add_n2nskip_s": med, "trace_s": t_trace, "ratio_to_trace": med / t_trace,
              "skip_blocks": len(skips), "skip_params": sum(b.num_params for b in skips),
              "skip_mask_entries": sum(b.dense_params for b in skips)}
    print(f"{args.model}, {recipe.name} skips: add_n2nskip median {med:.3f} s over {args.repeats} runs "
          f"(target < 2 s; {med / t_trace:.2f}x the {t_trace:.2f} s trace), "
          f"{len(skips)} skip blocks, {result['skip_params']} kept of {result['skip_mask_entries']} "
          "mask entries; 1 BLAS thread, 1 torch thread")
    if args.variant_snip:
        from n2ngraph.pipeline import variant
        from n2ngraph.pruning import prune as prune_only

        gen = torch.Generator().manual_seed(0)
        batch = (torch.randn(128, 3, 32, 32, generator=gen), torch.randint(0, 10, (128,), generator=gen))
        torch.set_num_threads(2)
        t0 = time.perf_counter()
        prune_only(model, "snip", 0.02, data=batch)
        t_snip = time.perf_counter() - t0
        t0 = time.perf_counter()
        variant(model, "snip", 0.02, data=batch, recipe=recipe)
        t_variant = time.perf_counter() - t0
        result.update(variant_snip_s=t_variant, snip_s=t_snip)
        print(f"variant({args.model}, 'snip', 0.02, recipe={recipe.name!r}, one batch of 128): "
              f"{t_variant:.2f} s (target < 30 s) "
              f"= {t_variant / t_snip:.2f}x plain prune(snip) {t_snip:.2f} s; 2 torch threads")
    return result


if __name__ == "__main__":
    main()

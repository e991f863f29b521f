"""Benchmark: the three ways an N2NSkip conv skip computes, per block shape, and what ``auto`` picks.

For each block (``C_dst x C_src x 3 x 3``, a square map of ``hw`` positions, a kept fraction of
the channel pairs drawn at random, stride 1 or 2) one ``N2NSkip.sparse_map`` forward + backward
(input gradient included, batch ``--batch``) is timed in every mode:

- ``sparse``: gather the source channel of every kept pair, one depthwise conv, ``index_add``;
- ``csr``: the CSR matrix of the kept weights times the im2col columns (``n2ngraph.sparse_conv``);
- ``dense``: the dense kernel assembled from the kept weights, one ``conv2d``.

It prints each mode's time as a ratio to the fastest of the three in the same run, the mode
``auto`` takes (``skip_modules.auto_mode``) and what that choice costs against the fastest. The
cost model behind ``auto`` (``skip_modules.CONV_COST_NS``) was fitted to these figures.

Measured (2026-11-26, shared 2-core AMD EPYC CPU, torch 2.13, one thread, process clock,
``python benchmarks/skip_modes.py``, 35 s): on each of the 12 blocks ``auto`` picks the fastest
mode or one within 1.04x of it. The fastest is ``sparse`` on 5 (few pairs per source channel,
stride 1), ``csr`` on 6 (every strided block; 10.4% kept; 2-5x faster than the other two there)
and ``dense`` on 1 (30% kept); the worst fixed choice costs up to 7.2x the best. With
``--batch 64 --steps 2 --repeats 2`` ``auto`` picks the fastest on all 12.

    python benchmarks/skip_modes.py [--batch 16] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from n2ngraph.graph import EdgeBlock, LayerSpec
from n2ngraph.skip_modules import N2NSkip, auto_mode

#: (C_dst, C_src, hw, kept fraction of channel pairs, stride): VGG19's and ResNet18's paper-recipe
#: skips at 2% (10.4% and 1.7-3.7% of their pairs) and neighbours of them.
BLOCKS = [
    (64, 64, 32, 0.017, 1), (64, 64, 32, 0.1, 1), (128, 64, 32, 0.037, 1), (128, 64, 32, 0.037, 2),
    (128, 128, 16, 0.017, 1), (256, 128, 16, 0.037, 2), (256, 64, 16, 0.104, 1),
    (256, 64, 16, 0.3, 1), (512, 128, 8, 0.104, 1), (512, 256, 8, 0.037, 2),
    (512, 256, 4, 0.104, 1), (512, 512, 4, 0.017, 1),
]
MODES = ("sparse", "csr", "dense")


def _block(c_dst: int, c_src: int, hw: int, kept: float, stride: int, seed: int) -> EdgeBlock:
    rng = np.random.default_rng(seed)
    pairs = np.zeros(c_dst * c_src, dtype=bool)
    pairs[rng.choice(c_dst * c_src, max(1, round(kept * c_dst * c_src)), replace=False)] = True
    mask = np.repeat(np.repeat(pairs.reshape(c_dst, c_src)[:, :, None, None], 3, axis=2), 3, axis=3)
    out = (hw + 2 - 3) // stride + 1
    spec = LayerSpec(op="Conv2d", kernel_size=(3, 3), stride=(stride, stride), padding=(1, 1),
                     dilation=(1, 1), order="conv-bn-act-pool", norm="batch",
                     input_size=(hw, hw), output_size=(out, out))
    return EdgeBlock("n2nskip:src->dst", "src", "dst", "n2nskip", mask, spec=spec)


def _time(skip: N2NSkip, x0: torch.Tensor, steps: int, repeats: int) -> float:
    """Best of ``repeats`` mean process-CPU seconds of one forward + backward."""
    def once():
        x = x0.clone().requires_grad_(True)
        y = skip.sparse_map(x)
        y.backward(torch.ones_like(y))

    once()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(steps):
            once()
        best = min(best, (time.process_time() - t0) / steps)
    return best


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print(f"batch {args.batch}, torch threads {torch.get_num_threads()}, best of {args.repeats} x "
          f"{args.steps} forward+backward, process clock; ratios to the fastest mode of the row")
    print(f"{'C_dst x C_src':>13} {'hw':>3} {'kept':>6} {'s':>2} {'pairs/src':>9}  "
          + "  ".join(f"{m:>7}" for m in MODES) + "  auto   auto/best")
    for seed, (c_dst, c_src, hw, kept, stride) in enumerate(BLOCKS):
        block = _block(c_dst, c_src, hw, kept, stride, seed)
        x = torch.randn(args.batch, c_src, hw, hw, generator=torch.Generator().manual_seed(seed))
        secs = {}
        for mode in MODES:
            skip = N2NSkip(block, mode=mode)
            with torch.no_grad():
                skip.weight.normal_(generator=torch.Generator().manual_seed(seed))
            secs[mode] = _time(skip, x, args.steps, args.repeats)
        k = int(block.mask.any(axis=(2, 3)).sum())
        auto = auto_mode(block.mask.shape, k, (stride, stride))
        best = min(secs.values())
        rows.append({"block": (c_dst, c_src, hw, kept, stride), "seconds": secs, "auto": auto,
                     "auto_over_best": secs[auto] / best})
        print(f"{c_dst:>6} x {c_src:<5} {hw:>3} {kept:>6.3f} {stride:>2} {k / c_src:>9.1f}  "
              + "  ".join(f"{secs[m] / best:>6.2f}x" for m in MODES)
              + f"  {auto:>6} {secs[auto] / best:>6.2f}x   ({best * 1e3:.1f} ms best)")
    return rows


if __name__ == "__main__":
    main()

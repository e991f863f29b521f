"""Which diffusion time separates RP from N2NSkip-RP? (docs/diffusion.md, "Recommended t").

On the paper MLP 3072-512-256-128-64-10 (graphs built from numpy masks, ``_graphs.mlp_graph``):
the dense reference, RP at total density ``d`` (fan-in balanced random masks) and N2NSkip-RP
(sequential at ``d / 2`` plus random n2nskip blocks at ``d / 2``), over several seeds. Times
are given as multiples of ``1 / lambda_2`` of the reference. Prints a Markdown table of
F = ||S_ref - S|| (mean +- std over seeds), the ratio F_RP / F_N2NSkip, and component counts.

Usage::

    python benchmarks/recommended_t.py --density 0.02 --seeds 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._graphs import PAPER_MLP, mlp_graph
from n2ngraph.diffusion import algebraic_connectivity, connectivity_distance
from n2ngraph.metrics import connected_components

MULTIPLES = np.array([0.01, 0.1, 0.3, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 300.0, 1000.0, np.inf])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--density", type=float, default=0.02)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    with threadpool_limits(args.threads):
        ref = mlp_graph(PAPER_MLP, 1.0, seed=0)
        lam2 = algebraic_connectivity(ref)
        t = MULTIPLES / lam2
        F = {"RP": [], "N2NSkip-RP": []}
        comps = {"RP": [], "N2NSkip-RP": []}
        for seed in range(args.seeds):
            for name, f in (("RP", 0.0), ("N2NSkip-RP", 0.5)):
                g = mlp_graph(PAPER_MLP, args.density, seed=seed, skip_fraction=f)
                F[name].append(connectivity_distance(ref, g, t))
                comps[name].append(connected_components(g)["n_components"])
    rp, nn = np.array(F["RP"]), np.array(F["N2NSkip-RP"])
    print(f"paper MLP reference lambda_2 = {lam2:.6g}; density {args.density}; seeds "
          f"0..{args.seeds - 1}; components RP {comps['RP']}, N2NSkip-RP {comps['N2NSkip-RP']}; "
          f"{time.perf_counter() - start:.1f} s, BLAS threads {args.threads}")
    print("\n| t * lambda_2 | t | F RP | F N2NSkip-RP | F_RP - F_N2NSkip | F_RP / F_N2NSkip |")
    print("|---|---|---|---|---|---|")
    for i, m in enumerate(MULTIPLES):
        a, b = rp[:, i].mean(), nn[:, i].mean()
        ratio = f"{a / b:.3g}" if b > 0 else "-"
        print(f"| {m:g} | {t[i]:.4g} | {a:.4g} +- {rp[:, i].std():.2g} | "
              f"{b:.4g} +- {nn[:, i].std():.2g} | {a - b:.4g} | {ratio} |")


if __name__ == "__main__":
    main()

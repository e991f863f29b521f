"""Benchmark of the heat-signature engines, all timed in one run on the same graphs.

For each graph: the paper's dense eigendecomposition route (``method="dense"``: eigh, then the
grid), scipy's ``expm_multiply`` one ``t`` at a time (the design card's route), and each fast
engine on a 50-point log grid in [0.01, 100]; it prints median times, the speed ratios and the
max relative error ``||S - S_ref|| / ||S_ref||`` against the dense reference (or against
Chebyshev where no dense reference fits). BLAS threads are pinned (threadpoolctl) and reported.

expm_multiply's work grows with ``t ||L||_1`` (about 2 hours for t = 100 on the dense paper MLP),
so it is run for every grid time up to ``--expm-budget`` seconds per graph and the rest is
extrapolated linearly in ``t`` from the largest time measured (stated in the output).

Usage::

    python benchmarks/heat.py                     # everything (the 1M-node graph in a subprocess)
    python benchmarks/heat.py --quick             # scaled-down graphs, seconds
    python benchmarks/heat.py --only 1m           # the 1M-node, 20M-edge graph alone (memory)
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._graphs import PAPER_MLP, layered_adjacency, mlp_graph
from n2ngraph.diffusion import heat_signature
from n2ngraph.diffusion._engines import DEFAULT_RTOL, auto_choice, cuda_available
from n2ngraph.diffusion._problem import build_problem

GRID = np.logspace(-2, 2, 50)
GRID_1M = np.logspace(-2, 2, 10)


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def rel(S, ref):
    return float(np.max(np.linalg.norm(S - ref, axis=1) / np.linalg.norm(ref, axis=1)))


def fresh(g):
    """A copy of the graph with an empty cache, so every timing includes building L."""
    return g.replace()


def expm_per_t(g, budget):
    """Seconds for expm_multiply over GRID one t at a time: measured up to ``budget`` seconds,
    the rest extrapolated linearly in t. Returns (seconds, measured count, signatures)."""
    spent, last_t, last_s, rows = 0.0, None, None, []
    for t in GRID:
        if spent > budget:
            break
        s, S = timed(lambda t=t: heat_signature(fresh(g), t, method="expm_multiply"), 1)
        spent += s
        last_t, last_s = t, s
        rows.append(S)
    rest = GRID[len(rows):]
    total = spent + float(np.sum(rest / last_t * last_s)) if rest.size else spent
    return total, len(rows), np.array(rows)


def bench_graph(name, g, repeats, expm_budget, dense_ok=True):
    print(f"\n## {name}: n={g.num_nodes}, edges={g.num_edges}, density={g.density:.3g}; "
          f"auto starts with {auto_choice(build_problem(fresh(g)), GRID, DEFAULT_RTOL)}", flush=True)
    res = {}
    if dense_ok:
        res["dense"] = timed(lambda: heat_signature(fresh(g), GRID, method="dense"), 1)
    for m in ("auto", "krylov", "chebyshev", "torch"):
        res[m] = timed(lambda m=m: heat_signature(fresh(g), GRID, method=m), repeats)
    ref_name = "dense" if dense_ok else "chebyshev"
    ref = res[ref_name][1]
    t_expm, n_meas, S_expm = expm_per_t(g, expm_budget)
    print(f"expm_multiply per t: {t_expm:.3g} s ({n_meas}/{len(GRID)} times measured, "
          f"rest extrapolated linearly in t); max rel err {rel(S_expm, ref[:n_meas]):.2e}")
    print(f"| engine | median s | dense route / engine | expm per-t / engine | max rel err vs {ref_name} |")
    print("|---|---|---|---|---|")
    for m, (s, S) in res.items():
        dense_ratio = f"{res['dense'][0] / s:.0f}x" if dense_ok else "-"
        print(f"| {m} | {s:.4f} | {dense_ratio} | {t_expm / s:.0f}x | {rel(S, ref):.2e} |", flush=True)


def bench_1m(repeats, quick):
    layers, width, fan_in = (10, 5000, 20) if quick else (20, 50_000, 21)
    t0 = time.perf_counter()
    W = layered_adjacency(layers, width, fan_in, seed=0)
    build = time.perf_counter() - t0
    A = np.zeros(W.shape[0])
    A[:width] = 1.0
    print(f"\n## layered graph: n={W.shape[0]}, edges={W.nnz // 2}, built in {build:.1f} s; auto "
          f"starts with {auto_choice(build_problem(W), GRID_1M, DEFAULT_RTOL)}", flush=True)
    s_k, S_k = timed(lambda: heat_signature(W, GRID_1M, sources=A, method="auto"), repeats)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"auto (10 t in [0.01, 100]): median {s_k:.2f} s; peak RSS of the process {rss:.2f} GB")
    s_c, S_c = timed(lambda: heat_signature(W, GRID_1M, sources=A, method="chebyshev"), 1)
    print(f"chebyshev: {s_c:.2f} s; max rel diff auto vs chebyshev {rel(S_k, S_c):.2e}")
    try:
        import torch  # noqa: F401 - only to skip the torch engine when it is not installed

        dev = "cuda" if cuda_available() else "cpu"
        s_t, S_t = timed(lambda: heat_signature(W, GRID_1M, sources=A, method="torch"), repeats)
        print(f"torch ({dev}): {s_t:.2f} s; krylov(CPU)/torch = {s_k / s_t:.2f}x; "
              f"max rel diff {rel(S_t, S_k):.2e}")
    except ImportError:
        print("torch not installed: torch engine skipped")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS after all engines: {rss:.2f} GB")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (pinned)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--expm-budget", type=float, default=20.0, help="seconds of expm_multiply per graph")
    ap.add_argument("--quick", action="store_true", help="scaled-down graphs")
    ap.add_argument("--only", choices=["mlp", "35k", "1m"], default=None)
    args = ap.parse_args(argv)
    with threadpool_limits(args.threads):
        libs = ", ".join(f"{i['internal_api']}={i['num_threads']}" for i in threadpool_info())
        print(f"# heat.py: BLAS threads pinned to {args.threads} ({libs}); "
              f"medians of {args.repeats} repeats (dense route: 1 run)")
        sizes = tuple(s // 8 for s in PAPER_MLP[:-1]) + (10,) if args.quick else PAPER_MLP
        if args.only in (None, "mlp"):
            for d in (1.0, 0.1, 0.02):
                bench_graph(f"paper MLP {sizes} at {d:.0%}", mlp_graph(sizes, d, seed=0),
                            args.repeats, args.expm_budget)
        if args.only in (None, "35k"):
            big = (3584, 512, 256, 64, 16, 10) if args.quick else (28672, 4096, 2048, 512, 128, 10)
            bench_graph(f"MLP {big} at 10%", mlp_graph(big, 0.1, seed=0), args.repeats,
                        args.expm_budget, dense_ok=False)
        if args.only == "1m":
            bench_1m(args.repeats, args.quick)
    if args.only is None:  # own process, so its peak memory is its own
        cmd = [sys.executable, __file__, "--only", "1m", "--threads", str(args.threads),
               "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()

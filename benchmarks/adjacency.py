"""Benchmark: the memory of ``NetworkGraph.adjacency`` on a graph with ~52M edges.

Target (issue 15): the peak memory of building the adjacency stays under 2x the final CSR
(``data`` + ``indices`` + ``indptr``). Compares the construction of ``adjacency`` (row range by
row range, n2ngraph.graph) with the one it replaced, :func:`edge_list_adjacency` (one global COO
of both directions of every block's edges, duplicates summed), on
:func:`benchmarks._graphs.residual_mlp_graph` (ViT-H/14's MLP widths, 1280 -> 5120 -> 1280, four
dense blocks: 52.4M edges, 104.9M stored entries). Each construction runs in a fresh child
process and reports its wall time, the peak of Python-tracked allocations during the call
(tracemalloc: numpy and scipy arrays) and the peak extra resident memory (Linux: VmHWM, reset
through /proc/self/clear_refs just before the call), both relative to the final CSR's size, and
a digest of the CSR arrays (the same for both constructions).

Run: ``python benchmarks/adjacency.py [--blocks 4] [--construction new old] [--weighted]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import scipy.sparse as sp

__all__ = ["edge_list_adjacency"]


def edge_list_adjacency(graph, weighted: bool = False) -> sp.csr_array:
    """The adjacency as n2ngraph built it before issue 15: both directions of ``graph.edge_list``
    in one COO (int64 edge list, then int32 copies), converted to CSR, duplicates summed. The
    reference the new construction is tested against (tests/test_graph.py)."""
    src, dst, w = graph.edge_list(weighted=weighted)
    n = graph.num_nodes
    idx = np.int32 if n < 2**31 - 1 else np.int64
    rows = np.concatenate([src, dst]).astype(idx)
    cols = np.concatenate([dst, src]).astype(idx)
    mat = sp.coo_array((np.concatenate([w, w]), (rows, cols)), shape=(n, n)).tocsr()
    mat.sum_duplicates()
    if weighted:
        mat.eliminate_zeros()
    else:
        mat.data[:] = 1.0
    return mat


_CHILD = r"""
import hashlib, json, sys, time, tracemalloc
sys.path.insert(0, {root!r})
from benchmarks._graphs import residual_mlp_graph
from benchmarks.adjacency import edge_list_adjacency

def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

graph = residual_mlp_graph(n_blocks={blocks})
if {weighted}:
    import numpy as np
    graph = graph.replace(blocks=[b if b.mask is None else b.with_mask(b.mask, np.ones(b.mask.shape, np.float32))
                                  for b in graph.blocks])
before = status('VmRSS:')
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the current RSS
tracemalloc.start()
t0 = time.perf_counter()
if {construction!r} == 'new':
    adj = graph.adjacency(weighted={weighted})
else:
    adj = edge_list_adjacency(graph, weighted={weighted})
seconds = time.perf_counter() - t0
_, traced_peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
rss_peak = status('VmHWM:') - before
csr = adj.data.nbytes + adj.indices.nbytes + adj.indptr.nbytes
digest = hashlib.sha1()
for arr in (adj.indptr, adj.indices, adj.data):
    digest.update(arr.tobytes())
print(json.dumps(dict(seconds=seconds, traced_peak=traced_peak, rss_peak=rss_peak, csr=csr,
                      edges=int(adj.nnz // 2), nodes=adj.shape[0], index=str(adj.indices.dtype),
                      digest=digest.hexdigest()[:12])))
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=4, help="residual MLP blocks (13.1M edges each)")
    parser.add_argument("--construction", nargs="+", choices=("new", "old"), default=["new", "old"])
    parser.add_argument("--weighted", action="store_true", help="weighted adjacency (pair weights 1)")
    args = parser.parse_args(argv)
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    print(f"residual_mlp_graph(n_blocks={args.blocks}), weighted={args.weighted}")
    print(f"{'construction':>12} {'edges':>11} {'time s':>7} {'CSR MB':>7} {'traced peak MB':>15} "
          f"{'x CSR':>6} {'RSS peak MB':>12} {'x CSR':>6}  digest")
    for construction in args.construction:
        code = _CHILD.format(root=root, blocks=args.blocks, weighted=args.weighted,
                             construction=construction)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mb = 2**20
        print(f"{construction:>12} {r['edges']:>11,} {r['seconds']:>7.1f} {r['csr'] / mb:>7.0f} "
              f"{r['traced_peak'] / mb:>15.0f} {r['traced_peak'] / r['csr']:>6.2f} "
              f"{r['rss_peak'] / mb:>12.0f} {r['rss_peak'] / r['csr']:>6.2f}  {r['digest']}")


if __name__ == "__main__":
    main()

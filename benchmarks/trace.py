"""Benchmark: tracing torchvision-shaped VGG19 (139.6M weights at 10 classes) with masks.

Targets (issue 2): under 3 s on 2 CPU cores, extra memory under 3x the masks' size.
Reports wall time (median of repeats), the ratio to one plain forward pass of the same model on
the same example input (measured in the same run), and the peak extra resident memory of a
``to_graph`` call in a fresh child process relative to the masks' size (Linux: the peak is reset
through /proc/self/clear_refs just before the call). torch uses 2 threads.

Run: ``python benchmarks/trace.py [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from n2ngraph import models
from n2ngraph.trace import to_graph

_CHILD = r"""
import sys, torch
from n2ngraph import models
from n2ngraph.trace import to_graph
torch.set_num_threads(2)
model = models.vgg19()
g = torch.Generator().manual_seed(0)
masks = {n: torch.rand(m.weight.shape, generator=g) < 0.05 for n, m in
         __import__('n2ngraph.masks', fromlist=['x']).prunable_weights(model).items()}
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
before = status('VmRSS:')
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the current RSS
graph = to_graph(model, masks)
print(status('VmHWM:') - before, sum(m.numel() for m in masks.values()))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = models.vgg19()
    gen = torch.Generator().manual_seed(0)
    from n2ngraph.masks import prunable_weights

    masks = {n: torch.rand(m.weight.shape, generator=gen) < 0.05 for n, m in prunable_weights(model).items()}
    x = models.example_input(model)
    trace_times, forward_times = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            model.eval()(x)
        forward_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        graph = to_graph(model, masks)
        trace_times.append(time.perf_counter() - t0)
    med_trace, med_fwd = statistics.median(trace_times), statistics.median(forward_times)
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True)
    extra_bytes, mask_entries = map(int, out.stdout.split())
    print(f"torch threads: {torch.get_num_threads()}; {graph}")
    print(f"to_graph(vgg19, masks): median {med_trace:.2f} s over {args.repeats} runs "
          f"(target < 3 s); one forward pass {med_fwd:.3f} s; ratio trace/forward {med_trace / med_fwd:.1f}x")
    print(f"peak extra memory of to_graph: {extra_bytes / 2**20:.0f} MiB = "
          f"{extra_bytes / mask_entries:.2f}x the masks' size ({mask_entries / 2**20:.0f} MiB as bool)"
          " (target < 3x)")


if __name__ == "__main__":
    main()

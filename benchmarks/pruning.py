"""Benchmark: pruning at initialization on the CPU, alone or against Synaptic-Flow's own code.

Two modes.

*Alone* (default): times ``prune(vgg19(), method, density, data=one batch)`` for every method,
reporting the median of the repeats and its ratio to ``random`` measured in the same run.

*Against a reference* (``--peer PATH``, PATH a checkout of github.com/ganguli-lab/Synaptic-Flow):
for each model, density and method, n2ngraph's ``prune`` and the reference's ``prune_loop`` with
its pruner run on the same model weights, the same batch, the same loss (cross-entropy), the same
number of threads and the same schedule (exponential, 100 rounds for SynFlow, one otherwise),
n2ngraph's SynFlow in ``--synflow-dtype`` (float32, its default and the reference's precision),
interleaved (``ours, peer, peer, ours, ...``), and the report gives the median wall times, their
ratio (peer / ours: above 1 means n2ngraph is faster), the same for the process CPU times (with
one thread, the CPU time is the robust figure on a shared, oversubscribed machine: it does not
count the time spent waiting for a core) and the Jaccard index of the two mask sets
(kept weights in both / kept in either, over all prunable weights; ``identical`` when every
mask is equal) in the same run. With
``--peer-float64`` the reference's SynFlow also runs once in float64, and the Jaccard of its
float32 and float64 masks (the reference's own numerical spread) is reported beside.

The reference is imported from PATH (``sys.path``); nothing of it is copied here. Its layers
apply masks in ``forward`` (``Layers.layers.Conv2d/Linear`` with a ``weight_mask`` buffer), so
for each peer run a deep copy of the model gets its ``nn.Conv2d`` / ``nn.Linear`` modules'
class switched to those subclasses, with all-ones masks (same weights, same module paths);
the copy is made before the timer starts. Both sides score in the reference's default
conditions: the model in evaluation mode (``--train-mode`` for training mode), ``global``
scope (``--scope layerwise`` maps to the reference's ``local``).

Models: ``vgg16`` is ``n2ngraph.models.vgg16(head="cifar")`` (14.7M weights); ``resnet20`` the
CIFAR ResNet-20 of He et al. 2016 (16-32-64 filters, 1x1 convolution shortcuts when the shape
changes, as in the reference's ``lottery_resnet``), defined below, 0.27M weights.

Torch intra-op threads and BLAS threads (threadpoolctl) are pinned to ``--threads`` and
reported, with the load average before and after.

Usage::

    python benchmarks/pruning.py                       # VGG19, all methods
    python benchmarks/pruning.py --quick               # smoke run: VGG19 with the CIFAR head
    python benchmarks/pruning.py --peer ../Synaptic-Flow --models vgg16,resnet20 \\
        --densities 0.01,0.1 --threads 1 --repeats 3 --peer-float64 --out results/peer.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn

from n2ngraph.io import atomic_write
from n2ngraph.masks import prunable_weights
from n2ngraph.models import build_model
from n2ngraph.pruning import METHODS, prune

#: n2ngraph method -> the reference's pruner class (Pruners/pruners.py).
PEER_PRUNERS = {
    "random": "Rand",
    "magnitude": "Mag",
    "snip": "SNIP",
    "grasp": "GraSP",
    "synflow": "SynFlow",
}


# --------------------------------------------------------------------------- models
class _BasicBlock(nn.Module):
    def __init__(self, f_in: int, f_out: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        self.shortcut = nn.Sequential()
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(f_in, f_out, 1, stride=2, bias=False), nn.BatchNorm2d(f_out)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (He et al. 2016, arXiv:1512.03385): 3 stages of 3 basic blocks."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, f_in = [], width
        for stage, filters in enumerate((width, 2 * width, 4 * width)):
            for i in range(3):
                blocks.append(_BasicBlock(f_in, filters, downsample=stage > 0 and i == 0))
                f_in = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(f_in, num_classes)
        for m in self.modules():  # the reference's initialisation
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def make_model(name: str, seed: int = 0) -> nn.Module:
    if name == "vgg16":
        return build_model("vgg16", seed=seed, head="cifar")
    if name == "vgg19-cifar":
        return build_model("vgg19", seed=seed, head="cifar")
    if name == "resnet20":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ResNet20()
    raise ValueError(f"unknown model {name!r}; valid: vgg16, vgg19-cifar, resnet20")


# ------------------------------------------------------------------------- the peer
class Peer:
    """Synaptic-Flow's pruners, imported from a checkout at ``path``."""

    def __init__(self, path: str):
        path = os.path.abspath(path)
        if not os.path.isfile(os.path.join(path, "Pruners", "pruners.py")):
            raise SystemExit(f"--peer {path}: no Pruners/pruners.py there (a Synaptic-Flow checkout)")
        sys.path.insert(0, path)
        import prune as peer_prune  # noqa: PLC0415
        from Layers import layers  # noqa: PLC0415
        from Pruners import pruners  # noqa: PLC0415
        from Utils import generator  # noqa: PLC0415

        self.path = path
        self.layers, self.pruners, self.generator = layers, pruners, generator
        peer_prune.tqdm = lambda iterable, **_: iterable  # no progress bar in the timings
        self.prune_loop = peer_prune.prune_loop
        self.commit = _git_head(path)

    def masked_copy(self, model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
        """A deep copy whose Conv2d/Linear modules are the reference's masked layers."""
        work = copy.deepcopy(model)
        for module in prunable_weights(work).values():
            cls = self.layers.Conv2d if isinstance(module, nn.Conv2d) else self.layers.Linear
            module.__class__ = cls
            module.register_buffer("weight_mask", torch.ones(module.weight.shape))
            if module.bias is not None:
                module.register_buffer("bias_mask", torch.ones(module.bias.shape))
        return work.to(dtype)

    def run(self, work, method, density, data, scope, train_mode):
        """The reference's prune_loop on ``work`` (a :meth:`masked_copy`), as its main does."""
        masked = self.generator.masked_parameters(work, False, False, False)
        pruner = getattr(self.pruners, PEER_PRUNERS[method])(masked)
        epochs = 100 if method == "synflow" else 1
        # its final check prints an error and quits when the count is off by 5 or more
        with contextlib.suppress(SystemExit):
            self.prune_loop(
                work, nn.CrossEntropyLoss(), pruner, [data], torch.device("cpu"), density,
                "exponential", "global" if scope == "global" else "local", epochs,
                train_mode=train_mode,
            )
        return {n: m.weight_mask.detach().bool().clone() for n, m in prunable_weights(work).items()}


def _git_head(path: str) -> str | None:
    import subprocess

    try:
        return subprocess.run(
            ["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def jaccard(a: dict, b: dict) -> float:
    both = sum(int((a[k] & b[k]).sum()) for k in a)
    either = sum(int((a[k] | b[k]).sum()) for k in a)
    return both / either if either else 1.0


@contextlib.contextmanager
def _default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _n_weights(model):
    return sum(m.weight.numel() for m in prunable_weights(model).values())


def run_peer(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    peer = Peer(args.peer)
    g = torch.Generator().manual_seed(0)
    data = (
        torch.randn(args.batch, 3, 32, 32, generator=g),
        torch.randint(0, 10, (args.batch,), generator=g),
    )
    rows = []
    for model_name in args.models.split(","):
        model = make_model(model_name).train(args.train_mode)
        for density in (float(d) for d in args.densities.split(",")):
            for method in args.methods.split(","):
                row = _compare(peer, model, model_name, method, density, data, args)
                rows.append(row)
                print(_format(row), flush=True)
    return {
        "peer": peer.path,
        "peer_commit": peer.commit,
        "batch": args.batch,
        "scope": args.scope,
        "train_mode": args.train_mode,
        "threads": args.threads,
        "repeats": args.repeats,
        "synflow_dtype": args.synflow_dtype,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }


def _compare(peer, model, model_name, method, density, data, args) -> dict:
    ours_t, peer_t, ours_masks, peer_masks = [], [], None, None
    ours_cpu, peer_cpu = [], []
    for rep in range(args.repeats):
        order = ("ours", "peer") if rep % 2 == 0 else ("peer", "ours")
        for side in order:
            if side == "ours":
                t0, c0 = time.perf_counter(), time.process_time()
                masks = prune(
                    model, method, density, data=data, scope=args.scope, seed=0,
                    **_options(method, args),
                )
                ours_t.append(time.perf_counter() - t0)
                ours_cpu.append(time.process_time() - c0)
                _progress(args, model_name, method, density, "ours", ours_t[-1], ours_cpu[-1])
                ours_masks = ours_masks or masks
            else:
                work = peer.masked_copy(model)
                t0, c0 = time.perf_counter(), time.process_time()
                masks = peer.run(work, method, density, data, args.scope, args.train_mode)
                peer_t.append(time.perf_counter() - t0)
                peer_cpu.append(time.process_time() - c0)
                _progress(args, model_name, method, density, "peer", peer_t[-1], peer_cpu[-1])
                peer_masks = peer_masks or masks
                del work
    row = {
        "model": model_name,
        "weights": _n_weights(model),
        "method": method,
        "density": density,
        "ours_s": statistics.median(ours_t),
        "peer_s": statistics.median(peer_t),
        "ours_times_s": ours_t,
        "peer_times_s": peer_t,
        "ours_cpu_s": statistics.median(ours_cpu),
        "peer_cpu_s": statistics.median(peer_cpu),
        "ours_cpu_times_s": ours_cpu,
        "peer_cpu_times_s": peer_cpu,
        "kept_ours": sum(int(m.sum()) for m in ours_masks.values()),
        "kept_peer": sum(int(m.sum()) for m in peer_masks.values()),
        "jaccard": jaccard(ours_masks, peer_masks),
        "identical": all(torch.equal(ours_masks[k], peer_masks[k]) for k in ours_masks),
        "loadavg": os.getloadavg(),
    }
    row["speedup"] = row["peer_s"] / row["ours_s"]
    row["cpu_speedup"] = row["peer_cpu_s"] / row["ours_cpu_s"]
    if args.peer_float64 and method == "synflow":
        with _default_dtype(torch.float64):  # its all-ones input follows the default dtype
            masks64 = peer.run(
                peer.masked_copy(model, torch.float64), method, density, data, args.scope,
                args.train_mode,
            )
        row["jaccard_peer32_peer64"] = jaccard(peer_masks, masks64)
        row["jaccard_ours_peer64"] = jaccard(ours_masks, masks64)
        row["kept_peer64"] = sum(int(m.sum()) for m in masks64.values())
    return row


def _options(method: str, args: argparse.Namespace) -> dict:
    """n2ngraph's options for ``method`` from the command line (SynFlow's precision)."""
    return {"dtype": args.synflow_dtype} if method == "synflow" else {}


def _progress(args, model_name, method, density, side, seconds, cpu) -> None:
    if args.verbose:
        load = os.getloadavg()[0]
        print(
            f"  {model_name} d={density:g} {method} {side}: {seconds:.2f} s, CPU {cpu:.2f} s"
            f" (load {load:.2f})",
            flush=True,
        )


def _jaccard_text(value: float, identical: bool | None) -> str:
    """4 decimals, 7 where they would round a difference to 1.0000; "identical" for equal masks."""
    if identical:
        return "1 (identical)"
    return f"{value:.7f}" if value > 0.99995 else f"{value:.4f}"


def _format(row: dict) -> str:
    text = (
        f"{row['model']:>9} d={row['density']:<5g} {row['method']:>9}: ours {row['ours_s']:7.2f} s"
        f"  peer {row['peer_s']:7.2f} s  peer/ours {row['speedup']:5.2f}x"
        f" (CPU time {row['ours_cpu_s']:.2f} vs {row['peer_cpu_s']:.2f} s: {row['cpu_speedup']:.2f}x)"
        f"  Jaccard {_jaccard_text(row['jaccard'], row.get('identical'))}"
        f"  kept {row['kept_ours']:,} vs {row['kept_peer']:,}"
    )
    if "jaccard_peer32_peer64" in row:
        text += (
            f"  | peer f32 vs f64 {row['jaccard_peer32_peer64']:.4f},"
            f" ours vs peer f64 {row['jaccard_ours_peer64']:.4f}"
        )
    return text + f"  (load {row['loadavg'][0]:.2f})"


# ------------------------------------------------------------------------------ alone
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
        options = _options(method, args)
        if method == "synflow":
            options["rounds"] = args.synflow_rounds
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
        "weights": _n_weights(model),
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
    parser.add_argument("--methods", default=None, help="comma-separated methods")
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--scope", default=None, help="layerwise or global")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="BLAS and torch threads")
    parser.add_argument("--synflow-rounds", type=int, default=100)
    parser.add_argument(
        "--synflow-dtype", default="float32", choices=["float32", "float64"],
        help="n2ngraph's SynFlow scoring precision (prune's dtype option; float32 is its default)",
    )
    parser.add_argument("--quick", action="store_true", help="VGG19 with the 512->10 CIFAR head")
    parser.add_argument("--peer", help="path of a Synaptic-Flow checkout: compare against it")
    parser.add_argument("--models", default="vgg16,resnet20", help="with --peer")
    parser.add_argument("--densities", default="0.01,0.1", help="with --peer")
    parser.add_argument("--train-mode", action="store_true", help="with --peer: score in train mode")
    parser.add_argument(
        "--peer-float64", action="store_true",
        help="with --peer: also run the reference's SynFlow in float64 (its own spread)",
    )
    parser.add_argument("--verbose", action="store_true", help="with --peer: print every run")
    parser.add_argument("--out", help="write the results as JSON here (atomically)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with threadpool_limits(limits=args.threads):
        if args.peer:
            args.methods = args.methods or ",".join(PEER_PRUNERS)
            args.scope = args.scope or "global"
            result = run_peer(args)
        else:
            args.methods = args.methods or ",".join(sorted(METHODS))
            args.scope = args.scope or "layerwise"
            result = run(args)
    result["loadavg_before"], result["loadavg_after"] = load_before, os.getloadavg()
    if args.peer:
        print(
            f"\nagainst {result['peer']} @ {result['peer_commit']}: batch {args.batch}, scope "
            f"{args.scope}, {args.threads} BLAS/torch threads, {args.repeats} interleaved repeats "
            f"(medians), n2ngraph's SynFlow in {args.synflow_dtype}; load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
        )
        for row in result["rows"]:
            print(_format(row))
    else:
        print(
            f"\n{result['model']}: {result['weights']:,} weights, density {args.density}, "
            f"scope {args.scope}, batch {args.batch}, {args.threads} BLAS/torch threads"
        )
        print(f"{'method':>10} {'median s':>10} {'x random':>10}")
        for method, row in result["results"].items():
            print(f"{method:>10} {row['median_s']:10.2f} {row['ratio_vs_random']:10.2f}")
    if args.out:
        out = Path(args.out).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2)))
    return result


if __name__ == "__main__":
    main()

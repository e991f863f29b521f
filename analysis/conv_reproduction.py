"""Conv-net reproduction of the N2NSkip comparison: a small VGG with the paper recipe, CPU.

Question (docs/paper.md; Subramaniam & Sharma 2020, arXiv:2208.03662, Table 1): at an equal
parameter budget, does giving half of it to N2NSkip connections beat plain pruning at
initialization on a conv net trained on real data? Compared: RP (channel-level expander random
pruning) vs N2NSkip-RP and CSP (SNIP, one global threshold) vs N2NSkip-CSP, at densities 5% and
2%, 3 seeds, with the dense reference trained once per seed; trained-weighted connectivity
(``n2ngraph.trained``, the paper's Table 3 measurement) beside accuracy.

Setup: scikit-learn's 8 x 8 ``digits`` (1,438 train / 359 test, fixed stratified split,
``n2ngraph.data``); ``analysis.common:digits_vgg`` (32-32-M-64-64-M-128-128-M, BatchNorm, global
pooling, one Linear; 287k weights); the ``"paper"`` recipe (docs/recipes.md: one skip per VGG
stage, from a stage's input to the first conv of the next stage, 3 x 3 skip convs followed by
BatchNorm, ReLU and max-pooling; channel-level masks; stem conv and classifier kept dense and
paid from the budget); the paper's optimizer (SGD momentum 0.9, lr 0.05, weight decay 5e-4,
batch 128) with its schedule shape compressed to 20 epochs (lr halved every 2,
``analysis.mnist_reproduction.paper_schedule``); no augmentation (flips do not suit digits);
the reference's initialization (``init="dense"``). Why ``digits`` and not MNIST padded to 32 x 32:
the same net on 32 x 32 images costs about 16 x more per image and 3 x more images; on this
shared 2-core machine that did not fit (``docs/results.md``). ``--dataset mnist5k:pad=2`` runs it.

Everything else (cells on ``n2ngraph.compare.run_cells``, resumable, the trained weights kept in
each cell so trained connectivity is measured without retraining, the outputs) is
``analysis.mnist_reproduction``'s: see its docstring. Run (from the repository root)::

    python -m analysis.conv_reproduction --workers 1 --threads 1
    python -m analysis.conv_reproduction --small          # 1 epoch, one seed, 2%
    python -m analysis.conv_reproduction --dataset mnist5k:pad=2 --epochs 30 --inits dense,sparse

``main(config)`` writes ``<results_root>/conv-<hash>/`` with the files listed in
``analysis.mnist_reproduction``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import mnist_reproduction
from analysis.mnist_reproduction import Config, paper_schedule

__all__ = ["ARTIFACT", "MODEL", "SMALL", "STUDY", "main"]

ARTIFACT = "conv"
MODEL = "analysis.common:digits_vgg"

#: The study: digits, the small VGG, 5% and 2%, 3 seeds, dense init, 20 epochs, in this process.
STUDY = Config(model=MODEL, dataset="digits", densities=(0.05, 0.02), seeds=(0, 1, 2),
               inits=("dense",), train=paper_schedule(20), workers=1,
               results_root="analysis/results/conv_reproduction")

#: A 1-epoch smoke run: 2%, seed 0.
SMALL = dataclasses.replace(STUDY, densities=(0.02,), seeds=(0,), train=paper_schedule(1))


def main(config: Config = STUDY) -> Path:
    """Train and measure every run not already finished (``analysis.mnist_reproduction.main``)
    into ``<results_root>/conv-<hash>/``; returns that folder."""
    return mnist_reproduction.main(config, artifact=ARTIFACT)


def _parse(argv: list[str] | None = None) -> Config:
    return mnist_reproduction._parse(argv, default=STUDY, small=SMALL,
                                     description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    # through the module, so Dask workers find the cell functions by name rather than in __main__
    from analysis import conv_reproduction

    folder = conv_reproduction.main(conv_reproduction._parse(sys.argv[1:]))
    print((folder / "summary.md").read_text())
    print(f"results in {folder}")

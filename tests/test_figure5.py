"""The Figure 5 / Table 1 driver reads `n2ngraph train` and `n2ngraph compare --train-epochs`
output folders as they are (no hand-written run.json)."""

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from analysis import figure5_table1_training as f5
from n2ngraph.cli import main

DATA = "synthetic:n=48,classes=4,shape=1x4x4"


def _train_folders(root):
    """Two `n2ngraph train` runs of lenet300 on tiny data: RP and N2NSkip-RP at 5% (graphs
    built by the library, as `n2ngraph graph` does: tests/test_cli.py runs that)."""
    from n2ngraph.io import save_graph
    from n2ngraph.models import data_defaults, resolve_model
    from n2ngraph.pipeline import variant

    model = resolve_model("lenet300", defaults=data_defaults((1, 4, 4), 4))
    graphs = {"rp": variant(model, "expander", 0.05, skips=False),
              "n2n": variant(model, "expander", 0.05, skips=True)}
    for name, graph in graphs.items():
        path = save_graph(graph, root / f"{name}.npz")
        assert main(["train", "--graph", str(path), "--model", "lenet300", "--data", DATA, "--epochs", "2",
                     "--out", str(root / "runs" / name), "--device", "cpu", "--no-progress",
                     "--batch-size", "16"]) == 0
    return root / "runs"


def test_train_output_folders_as_they_are(tmp_path, capsys):
    runs_dir = _train_folders(tmp_path)
    capsys.readouterr()
    # an older train folder has no run.json: cli.json and the graph it names say the same
    old = runs_dir / "rp_old"
    shutil.copytree(runs_dir / "rp", old)
    (old / "run.json").unlink()
    runs = f5.find_runs(runs_dir)
    assert len(runs) == 3
    by_run = runs.set_index("run")
    for column in ("label", "method", "variant", "density", "init", "seed", "recipe", "model", "dataset"):
        assert by_run.loc["rp_old", column] == by_run.loc["rp", column], column
    assert by_run.loc["rp", "label"] == "RP" and by_run.loc["n2n", "label"] == "N2NSkip-RP"
    assert set(runs["model"]) == {"lenet300"} and set(runs["dataset"]) == {DATA}
    for name in ("rp", "n2n"):  # the final accuracy of each log, in %
        last = pd.read_csv(runs_dir / name / "log.csv")["test_acc"].iloc[-1]
        assert by_run.loc[name, "test_acc"] == pytest.approx(100 * last)
        assert by_run.loc[name, "epochs"] == 2

    out = f5.main(f5.Config(logs=str(runs_dir), results_root=str(tmp_path / "res")))
    table = pd.read_csv(out / "table1.csv").set_index("method")
    rp = by_run.loc[["rp", "rp_old"], "test_acc"]  # two seeds-worth of the same run: std 0
    assert table.loc["RP", "0.05"] == f"{rp.mean():.1f} ± 0.0"
    assert str(table.loc["N2NSkip-RP", "0.05"]) == f"{by_run.loc['n2n', 'test_acc']:.1f}"
    assert (out / "figure5.png").stat().st_size > 0
    assert not (out / "accuracy_vs_distance.png").exists()  # no trained connectivity in train runs

    (runs_dir / "rp_old" / "cli.json").write_text(json.dumps({"graph": "nowhere.npz", "seed": 0}))
    with pytest.raises(ValueError, match="nowhere.npz"):
        f5.find_runs(runs_dir)


def test_run_meta_of_dense_pruned_and_hand_made_graphs(small_graph):
    """What `train` writes into run.json: a dense graph is the dense baseline; a graph without
    pipeline provenance is named by what it holds."""
    from n2ngraph.cli_train import run_meta
    from n2ngraph.models import lenet300
    from n2ngraph.trace import to_graph

    dense = run_meta(to_graph(lenet300(), name="lenet300"), model="lenet300", data="digits", seed=2,
                     init="dense", graph_path="g.npz")
    assert {k: dense[k] for k in ("method", "variant", "density", "seed", "recipe")} == \
        {"method": "none", "variant": "dense", "density": 1.0, "seed": 2, "recipe": None}
    hand = run_meta(small_graph, model="m", data="d", seed=0, init="sparse", graph_path="g.npz")
    assert (hand["method"], hand["variant"], hand["init"]) == ("unknown", "n2nskip", "sparse")
    assert hand["density"] == pytest.approx(6 / 8) and hand["params"] == 6


def _run(folder, meta: dict, accs):
    folder.mkdir(parents=True)
    pd.DataFrame({"epoch": range(1, len(accs) + 1), "test_acc": accs}).to_csv(folder / "log.csv", index=False)
    (folder / "run.json").write_text(json.dumps(meta))


def test_compare_output_folder_as_it_is(tmp_path):
    """The layout `compare --train-epochs` writes: runs of the latest config only (an older
    config's runs of the same cells are not counted twice), trained columns of its results.csv
    joined per run, half-trained checkpoints skipped."""
    out = tmp_path / "cmp"
    cells = []
    for variant, f_inf, f_1 in (("plain", 0.0, 4.6), ("n2nskip", 0.0, 3.7)):
        for seed, acc in ((0, 0.5), (1, 0.7)):
            meta = {"method": "expander", "variant": variant, "density": 0.1, "init": "dense", "seed": seed,
                    "recipe": "paper", "model": "lenet300", "dataset": "digits", "trained lambda_2": 0.5,
                    "trained times": [0.1, 0.3]}
            name = f"expander_{variant}_d0.1_dense_s{seed}"
            shift = 0.1 if variant == "n2nskip" else 0.0
            _run(out / "configs" / "new" / "runs" / name, meta, [0.2, acc + shift])
            _run(out / "configs" / "old" / "runs" / name, meta, [0.2, 0.0])  # same cell, older config
            cells.append({**{k: meta[k] for k in ("method", "variant", "density", "init", "seed")},
                          "trained F(t=1/l2)": f_1 + seed, "trained F(t=inf)": f_inf, "F(t=1/l2)": 9.0})
    _run(out / "configs" / "new" / "runs" / "dense_s0",
         {"method": "none", "variant": "dense", "density": 1.0, "init": "dense", "seed": 0, "recipe": None,
          "model": "lenet300", "dataset": "digits"}, [0.9, 0.95])
    (out / "checkpoints" / "abc").mkdir(parents=True)
    pd.DataFrame({"epoch": [1], "test_acc": [0.1]}).to_csv(out / "checkpoints" / "abc" / "log.csv")
    pd.DataFrame(cells).to_csv(out / "configs" / "new" / "results.csv", index=False)
    (out / "config.json").write_text(json.dumps({"config_id": "new", "cells": []}))

    runs = f5.find_runs(out)
    assert len(runs) == 5 and all(r.startswith("configs/new/runs/") for r in runs["run"])
    assert "trained times" not in runs.columns and "F(t=1/l2)" not in runs.columns
    rp = runs[runs["label"] == "RP"].set_index("seed")
    assert rp.loc[1, "trained F(t=1/l2)"] == 5.6 and rp.loc[0, "test_acc"] == pytest.approx(50.0)
    assert runs.loc[runs["variant"] == "dense", "recipe"].item() == "paper"
    assert f5.distance_column(runs) == "trained F(t=1/l2)"  # t=inf is 0 for every run
    # a folder holding the compare output, or its latest config's runs folder: the same runs
    for where, prefix in ((tmp_path, "cmp/configs/new/runs/"), (out / "configs" / "new" / "runs", "")):
        again = f5.find_runs(where)
        assert len(again) == 5 and all(r.startswith(prefix) for r in again["run"])
        pd.testing.assert_series_equal(again["trained F(t=1/l2)"], runs["trained F(t=1/l2)"])

    result = f5.main(f5.Config(logs=str(out), results_root=str(tmp_path / "res")))
    summary = pd.read_csv(result / "accuracy.csv")
    n2n = summary[summary["label"] == "N2NSkip-RP"].iloc[0]
    assert n2n["test_acc_mean"] == pytest.approx(70.0)
    assert n2n["test_acc_std"] == pytest.approx(math.sqrt(200), rel=1e-5)  # written with 6 digits
    assert (result / "accuracy_vs_distance.png").stat().st_size > 0

    (out / "config.json").write_text(json.dumps({"config_id": "gone"}))
    shutil.rmtree(out / "configs")
    with pytest.raises(ValueError, match="without training runs; run compare with --train-epochs"):
        f5.find_runs(out)


@pytest.mark.slow
def test_real_compare_train_epochs_output(tmp_path, capsys):
    """End to end: `n2ngraph compare --train-epochs 1` and the driver on its folder as it is."""
    out = tmp_path / "cmp"
    assert main(["compare", "--model", "lenet300", "--methods", "expander", "--densities", "0.1",
                 "--seeds", "1", "--train-epochs", "1", "--data", "digits", "--workers", "1",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    runs = f5.find_runs(out)
    assert sorted(runs["label"]) == ["N2NSkip-RP", "RP", "dense"]
    cells = pd.read_csv(out / "results.csv")
    for _, cell in cells.iterrows():
        run = runs[(runs["method"] == cell["method"]) & (runs["variant"] == cell["variant"])].iloc[0]
        # results.csv holds 6 significant digits
        assert run["test_acc"] == pytest.approx(100 * cell["final_test_acc"], rel=1e-5)
        assert np.isclose(run["trained F(t=1/l2)"], cell["trained F(t=1/l2)"], rtol=1e-5)
    result = f5.main(f5.Config(logs=str(out), results_root=str(tmp_path / "res")))
    assert (result / "accuracy_vs_distance.png").is_file() and (result / "table1.md").is_file()

"""The analysis/ drivers: each main(config) on a tiny config writes its tables, figures and config."""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import (
    common,
    conv_reproduction,
    figure3_adjacency,
    figure4_scree,
    figure5_table1_training,
    methods_comparison,
    mnist_reproduction,
    table3_distance,
)
from n2ngraph.recipes import RECIPES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = "analysis.common:tiny_mlp"


def check_figure(base):
    """PNG and PDF exist, are non-empty, the PNG decodes to a non-blank image."""
    import matplotlib.image

    png, pdf = base.with_name(base.name + ".png"), base.with_name(base.name + ".pdf")
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert pdf.read_bytes()[:5] == b"%PDF-"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert np.ptp(image[..., :3]) > 0  # something is drawn


def check_table(base):
    csv, md = base.with_name(base.name + ".csv"), base.with_name(base.name + ".md")
    table = pd.read_csv(csv)
    assert len(table) > 0
    assert any(line.startswith("| ") for line in md.read_text().splitlines())
    return table


def markdown_columns(md):
    """Column count of the (first) Markdown table in file ``md``."""
    header = next(line for line in md.read_text().splitlines() if line.startswith("| "))
    return header.count("|") - 1


def check_config(folder, artifact, config):
    meta = json.loads((folder / "config.json").read_text())
    assert meta["artifact"] == artifact
    assert meta["config"] == common.config_dict(config)
    assert folder.name == f"{artifact}-{common.config_hash(config)}"
    return meta


# ----------------------------------------------------------------------------- common
def test_config_hash_names_folder_by_results_defining_fields(tmp_path):
    a = figure3_adjacency.Config(results_root=str(tmp_path / "x"))
    b = dataclasses.replace(a, results_root=str(tmp_path / "y"))  # execution field: same hash
    c = dataclasses.replace(a, density=0.05)
    assert common.config_hash(a) == common.config_hash(b) != common.config_hash(c)
    assert len(common.config_hash(a)) == 8
    folder = common.results_dir("figure3", a)
    assert folder.is_dir() and folder.parent == tmp_path / "x"
    t = table3_distance.Config()
    assert common.config_hash(t) == common.config_hash(dataclasses.replace(t, inline=True, workers=7))
    with pytest.raises(TypeError, match="dataclass"):
        common.config_hash({"a": 1})


def test_paper_labels():
    assert common.paper_label("expander", "plain") == "RP"
    assert common.paper_label("snip", "n2nskip") == "N2NSkip-CSP"
    assert common.paper_label("grasp", "n2nskip") == "N2NSkip-grasp"


# ----------------------------------------------------------------------------- drivers
def test_figure3(tmp_path):
    config = figure3_adjacency.Config(model=TINY, density=0.2, bins=60, results_root=str(tmp_path))
    out = figure3_adjacency.main(config)
    check_figure(out / "figure3")
    table = check_table(out / "graphs")
    check_config(out, "figure3", config)
    assert list(table["nodes"]) == [122] * 3
    dense = 64 * 32 + 32 * 16 + 16 * 10
    assert list(table["dense_params"]) == [dense] * 3
    # equal budget: the N2NSkip panel keeps exactly as many weights as the pruned one
    assert table["params"][0] == dense and table["params"][1] == table["params"][2]
    assert table["n2nskip_params"][1] == 0 < table["n2nskip_params"][2]
    assert set(table["recipe"]) == {"paper"} and json.loads(table["recipe_fields"][0])["wiring"] == "blocks"
    assert markdown_columns(out / "graphs.md") <= 12 < len(table.columns)  # the CSV keeps them all
    assert (out / "graphs.md").read_text().startswith(f"model {TINY}, recipe paper, RP (expander) at density 0.2")


def test_figure4(tmp_path):
    config = figure4_scree.Config(model=TINY, density=0.2, k_percent=(1.0, 10.0, 50.0, 100.0),
                                  results_root=str(tmp_path))
    out = figure4_scree.main(config)
    check_figure(out / "figure4")
    curves = check_table(out / "scree")
    summary = check_table(out / "scree_summary")
    meta = check_config(out, "figure4", config)
    # times are stated: t = c / lambda_2(reference)
    lam2 = meta["lambda_2_reference"]
    assert meta["times"] == pytest.approx([c / lam2 for c in config.t_lambda2], rel=1e-5)
    assert set(curves["graph"]) == set(summary["graph"]) and len(set(curves["graph"])) == 3
    # alpha is a cumulative share: in [0, 1], non-decreasing in K, 1 at K = n - 1
    for _, part in curves.groupby(["graph", "t"]):
        alpha = part.sort_values("K")["alpha"].to_numpy()
        assert np.all(np.diff(alpha) >= -1e-12) and alpha[-1] == pytest.approx(1.0)
        assert part["K"].max() == 121


def test_figure4_scree_curve_matches_dense_eigenvalues(tmp_path):
    from n2ngraph.models import resolve_model
    from n2ngraph.trace import to_graph

    graph = to_graph(resolve_model(TINY))
    lam = np.linalg.eigvalsh(graph.adjacency().toarray() * -1 + np.diag(
        np.asarray(graph.adjacency().sum(axis=1)).ravel()))
    t = 0.05
    curves = figure4_scree.scree_curves([("ref", graph)], [t], [10.0])
    w = np.exp(-t * lam[1:])
    k = int(curves["K"].iloc[0])
    assert k == round(0.1 * 122)
    assert curves["alpha"].iloc[0] == pytest.approx(w[:k].sum() / w.sum(), rel=1e-8)


def test_table3(tmp_path):
    # tiny_vgg's dense stem and classifier (752 weights) need a sequential density above 4.5%
    config = table3_distance.Config(models=("analysis.common:tiny_vgg",), methods=("expander",),
                                    densities=(0.5, 0.2), inline=True, results_root=str(tmp_path))
    out = table3_distance.main(config)
    check_figure(out / "table3_tiny_vgg")
    long = check_table(out / "distance")
    wide = check_table(out / "table3")
    meta = check_config(out, "table3", config)
    stated = meta["stated_times"]["tiny_vgg"]
    lam2 = stated["lambda_2_reference"]
    assert stated["times"] == pytest.approx([1 / lam2, 3 / lam2, 100 / lam2], rel=1e-5)
    assert meta["recipe"] == RECIPES["paper"].to_json()
    # every F is stated with its t: 2 labels x 2 densities x (3 times + inf)
    assert len(long) == 2 * 2 * 4 and set(long["label"]) == {"RP", "N2NSkip-RP"}
    assert np.isinf(long["t"]).sum() == 4
    assert (long["F_mean"] >= 0).all()
    assert list(wide.columns) == ["recipe", "model", "t", "t*lambda_2", "method", "0.5", "0.2",
                                  "recipe_fields"]
    # every table names the recipe and its fields
    fields = json.loads(wide["recipe_fields"].iloc[0])
    assert set(wide["recipe"]) == set(long["recipe"]) == {"paper"}
    assert fields == {k: v for k, v in RECIPES["paper"].to_json().items() if k != "name"}
    # the wide table shows the long table's numbers
    row = long[(long["label"] == "RP") & (long["density"] == 0.2) & np.isinf(long["t"])].iloc[0]
    cell = wide[(wide["method"] == "RP") & (wide["t"].astype(str) == "inf")]["0.2"].iloc[0]
    assert float(cell) == pytest.approx(row["F_mean"], rel=0.05, abs=1e-12)
    # resuming reuses the stored cells and gives the same tables
    again = table3_distance.main(config)
    assert again == out and pd.read_csv(out / "distance.csv").equals(long)


def test_methods_comparison(tmp_path):
    config = methods_comparison.Config(model=TINY, methods=("random", "snip"), densities=(0.1,),
                                       seeds=2, dataset="digits", batch_size=16, inline=True,
                                       results_root=str(tmp_path))
    out = methods_comparison.main(config)
    check_figure(out / "methods")
    table = check_table(out / "methods")
    cells = check_table(out / "cells")
    meta = check_config(out, "methods", config)
    assert len(cells) == 2 * 2 * 2 and len(table) == 2 * 2
    f_cols = [c for c in table.columns if c.startswith("F(t=") and not c.endswith("_std")]
    assert f_cols == [f"F(t={c:g}/l2)" for c in config.t_lambda2] + ["F(t=inf)"]
    assert len(meta["times"]) == len(config.t_lambda2)
    assert set(table["recipe"]) == {"paper"} and "recipe_fields" in table.columns
    for column in methods_comparison.METRICS:
        assert column in table.columns and f"{column}_std" in table.columns
    # the summary is the mean over seeds of the cells
    mean = cells[(cells["method"] == "snip") & (cells["variant"] == "plain")]["dead_units"].mean()
    got = table[(table["method"] == "snip") & (table["variant"] == "plain")]["dead_units"].iloc[0]
    assert got == pytest.approx(mean)
    assert set(table["label"]) == {"random", "N2NSkip-random", "CSP", "N2NSkip-CSP"}
    check_figure(out / "delta_F")  # the claim: F(X) - F(N2NSkip-X), paired by seed
    # the Markdown files are the short view: at most 12 columns, F defined, mean ± std cells
    for name in ("methods", "cells"):
        text = (out / f"{name}.md").read_text()
        assert 3 < markdown_columns(out / f"{name}.md") <= 12 and text.startswith("F(t) = ")
        assert "nan" not in text
    assert " ± " in (out / "methods.md").read_text()
    title = methods_comparison.figure_title(config, meta["times"])
    assert TINY in title and "calibration data digits, batch 16 (snip)" in title and "2 seeds" in title
    lam2 = cells["lambda_2_ref"].iloc[0]
    assert f"λ2 = {lam2:.4g}" in title


# ----------------------------------------------------------------------------- figure 5
def _fake_logs(root, accs):
    """The layout with metadata beside each run: cells/<id>/log.csv + cells/<id>.json; final
    test_acc given."""
    cells = root / "cells"
    for (method, variant, density, seed), acc in accs.items():
        cid = f"{method}_{variant}_d{density:g}_dense_s{seed}"
        run = cells / cid
        run.mkdir(parents=True)
        pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "train_acc": [0.5, 0.9],
                      "test_loss": [1.0, 0.6], "test_acc": [0.99, acc]}).to_csv(run / "log.csv", index=False)
        (cells / f"{cid}.json").write_text(json.dumps(
            {"method": method, "variant": variant, "density": density, "init": "dense", "seed": seed}))
    return cells


def test_figure5_table1_from_logs_hand_computed(tmp_path):
    accs = {("expander", "plain", 0.1, 0): 0.80, ("expander", "plain", 0.1, 1): 0.90,
            ("expander", "n2nskip", 0.1, 0): 0.85, ("expander", "n2nskip", 0.1, 1): 0.95,
            ("snip", "plain", 0.02, 0): 0.50, ("snip", "n2nskip", 0.02, 0): 0.70,
            ("none", "dense", 1.0, 0): 0.97, ("none", "dense", 1.0, 1): 0.99}
    logs = _fake_logs(tmp_path / "logs", accs)
    config = figure5_table1_training.Config(logs=str(logs), results_root=str(tmp_path / "res"))
    out = figure5_table1_training.main(config)
    check_figure(out / "figure5")
    runs = check_table(out / "runs")
    summary = check_table(out / "accuracy")
    table = check_table(out / "table1")
    check_config(out, "figure5", config)
    assert len(runs) == len(accs)
    rp = summary[summary["label"] == "RP"].iloc[0]
    # last epoch, in %: mean 85, sample std sqrt(50) = 7.07
    assert rp["test_acc_mean"] == pytest.approx(85.0) and rp["test_acc_std"] == pytest.approx(math.sqrt(50))
    assert rp["n"] == 2
    row = table.set_index("method").loc["N2NSkip-RP"]
    assert row["0.1"] == "90.0 ± 7.1" and pd.isna(row["0.02"])
    assert str(table.set_index("method").loc["CSP"]["0.02"]) == "50.0"  # one seed: no std
    assert table.set_index("method").loc["dense"]["1"] == "98.0 ± 1.4"
    assert list(table["method"]) == ["dense", "RP", "N2NSkip-RP", "CSP", "N2NSkip-CSP"]
    # the figure states what it shows; this metadata names no dataset or model
    title = figure5_table1_training.figure_title(pd.read_csv(out / "runs.csv"))
    assert title.startswith("dataset (unrecorded), model (unrecorded), 2 epochs, recipe (unrecorded), 1-2 seeds")  # snip: one seed
    one = runs[runs["seed"] == 0].assign(dataset="digits", model="paper_mlp", epochs=1)
    assert figure5_table1_training.figure_title(one).startswith("dataset digits, model paper_mlp, 1 epoch,")
    assert "1 seed\n" in figure5_table1_training.figure_title(one)


def test_figure5_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        figure5_table1_training.find_runs(tmp_path / "nope")
    with pytest.raises(ValueError, match="no training runs"):
        figure5_table1_training.find_runs(tmp_path)
    run = tmp_path / "r"
    run.mkdir()
    pd.DataFrame({"epoch": [1], "test_acc": [0.5]}).to_csv(run / "log.csv", index=False)
    with pytest.raises(ValueError, match="no metadata"):
        figure5_table1_training.find_runs(tmp_path)
    (run / "run.json").write_text(json.dumps({"method": "snip", "variant": "plain", "density": 0.1}))
    with pytest.raises(ValueError, match="seed"):
        figure5_table1_training.find_runs(tmp_path)
    (run / "run.json").write_text(json.dumps({"method": "snip", "variant": "plain", "density": 0.1,
                                              "seed": 0}))
    with pytest.raises(ValueError, match="no column 'bogus'"):
        figure5_table1_training.find_runs(tmp_path, "bogus")
    assert figure5_table1_training.find_runs(tmp_path)["test_acc"].iloc[0] == pytest.approx(50.0)


# ----------------------------------------------------------------------------- mnist reproduction
#: One epoch of RP and N2NSkip-RP on the 8 x 8 digits, in this process.
TINY_STUDY = dataclasses.replace(
    mnist_reproduction.DEMO, densities=(0.1,), seeds=(0,), methods=("expander",),
    dense_baseline=False, train=dataclasses.replace(mnist_reproduction.DEMO.train, epochs=1))


def test_mnist_reproduction_runs_on_the_sweep_engine_and_resumes(tmp_path, monkeypatch):
    config = dataclasses.replace(TINY_STUDY, methods=("expander", "snip"), dense_baseline=True,
                                 results_root=str(tmp_path))
    out = mnist_reproduction.main(config)
    check_config(out, "mnist", config)
    cells = pd.read_csv(out / "cells.csv")
    specs = mnist_reproduction.cell_specs(config)
    assert len(cells) == len(specs) == 2 * 2 + 1
    assert sorted(cells["label"]) == ["CSP", "N2NSkip-CSP", "N2NSkip-RP", "RP", "dense"]
    # equal budget: plain and N2NSkip runs of one method keep the same number of weights
    for method in ("expander", "snip"):
        part = cells[cells["method"] == method]
        assert part["params"].nunique() == 1
    assert ((cells["test_acc"] >= 0) & (cells["test_acc"] <= 100)).all()
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["label"]) == set(cells["label"]) and (summary["n"] == 1).all()
    assert "| density | init | RP | N2NSkip-RP | CSP | N2NSkip-CSP |" in (out / "summary.md").read_text()
    # one cell file per run, named by the digest of its spec (the engine of n2ngraph.compare)
    from n2ngraph.compare import cell_digest

    trained_specs = mnist_reproduction.trained_specs(config, specs)
    assert sorted(p.stem for p in (out / "cells").glob("*.json")) == \
        sorted(map(cell_digest, specs + trained_specs))
    assert [t["run"] for t in trained_specs] == [cell_digest(s) for s in specs]
    # each run's log and metadata, as figure5 reads them
    runs = figure5_table1_training.find_runs(out)
    assert len(runs) == len(specs) and (runs["epochs"] == 1).all()
    np.testing.assert_allclose(sorted(runs["test_acc"]), sorted(cells["test_acc"]))
    # trained connectivity beside accuracy: the dense reference against itself is at distance 0
    f_columns = ["trained F(t=1/l2)", "trained F(t=3/l2)", "trained F(t=100/l2)", "trained F(t=inf)"]
    assert set(f_columns + ["trained lambda_2/ref"]) <= set(cells.columns)
    dense = cells[cells["label"] == "dense"].iloc[0]
    assert (dense[f_columns] == 0).all() and dense["trained lambda_2/ref"] == pytest.approx(1.0)
    sparse = cells[cells["label"] != "dense"]
    assert (sparse["trained F(t=1/l2)"] > 0).all() and (sparse["trained lambda_2/ref"] < 1).all()
    np.testing.assert_allclose(cells["final_test_acc"] * 100, cells["test_acc"])
    assert "trained F(t=inf)" in (out / "summary.md").read_text()
    check_figure(out / "accuracy_vs_trained_F")
    # a rerun retrains and remeasures nothing; a damaged cell file is retrained alone, with a warning
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was retrained or remeasured")

    monkeypatch.setattr("n2ngraph.training.train", no_training)
    monkeypatch.setattr("n2ngraph.trained.trained_connectivity", no_training)
    monkeypatch.setattr("n2ngraph.trained.trained_reference", no_training)
    assert mnist_reproduction.main(config) == out
    pd.testing.assert_frame_equal(pd.read_csv(out / "cells.csv"), cells)
    # report_only: the tables of the finished runs, training nothing (a study stopped early)
    rp = next(s for s in specs if s["method"] == "expander" and s["variant"] == "plain")
    (out / "cells" / f"{cell_digest(rp)}.json").unlink()
    assert mnist_reproduction.main(dataclasses.replace(config, report_only=True)) == out
    partial = pd.read_csv(out / "cells.csv")
    assert sorted(partial["label"]) == ["CSP", "N2NSkip-CSP", "N2NSkip-RP", "dense"]
    with pytest.raises(ValueError, match="no finished run"):
        mnist_reproduction.main(dataclasses.replace(config, report_only=True, seeds=(5,)))
    monkeypatch.undo()
    damaged = out / "cells" / f"{cell_digest(specs[0])}.json"
    damaged.write_text(damaged.read_text()[:40])
    with pytest.warns(UserWarning, match="recomputing"):
        mnist_reproduction.main(config)
    again = pd.read_csv(out / "cells.csv")
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), cells.drop(columns="seconds"))


def test_mnist_reproduction_cell_identity():
    specs = mnist_reproduction.cell_specs(TINY_STUDY)
    other = mnist_reproduction.cell_specs(dataclasses.replace(
        TINY_STUDY, train=dataclasses.replace(TINY_STUDY.train, lr=0.01)))
    assert all(a != b for a, b in zip(specs, other))  # a training setting is part of the identity
    quiet = dataclasses.replace(TINY_STUDY, workers=3, threads=2, results_root="elsewhere",
                                train=dataclasses.replace(TINY_STUDY.train, progress=True))
    assert mnist_reproduction.cell_specs(quiet) == specs  # how it runs is not
    # the study's training settings are TrainConfig's defaults (the paper's optimizer) with the
    # paper's schedule (halve every 30 of 300 epochs) compressed to 30 epochs: halve every 3
    from n2ngraph.training import TrainConfig

    assert mnist_reproduction.Config().train == dataclasses.replace(
        TrainConfig(), epochs=30, lr_step=3, device="cpu", progress=False)
    assert [mnist_reproduction.paper_schedule(e).lr_step for e in (1, 10, 20, 30, 45, 300)] == \
        [1, 1, 2, 3, 4, 30]
    parsed = mnist_reproduction._parse(["--small", "--epochs", "20"]).train
    assert (parsed.epochs, parsed.lr_step) == (20, 2)
    gpu = mnist_reproduction._parse(["--device", "cuda", "--epochs", "20"]).train
    assert (gpu.device, gpu.lr_step) == ("cuda", 2)
    # seed by seed, the seed's dense baseline first: a study stopped early holds whole seeds
    full = mnist_reproduction.cell_specs(mnist_reproduction.Config())
    assert len(full) == 3 * (1 + 4 * 2 * 2 * 2)
    assert [s["seed"] for s in full] == sorted(s["seed"] for s in full)
    assert full[0]["variant"] == "dense" and full[33]["variant"] == "dense"


def test_encoded_state_round_trips_and_refuses_damage():
    import torch

    model = common.tiny_mlp()
    text = common.encode_state(model)
    state = common.decode_state(text)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="not an encoded state_dict"):
        common.decode_state(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not an encoded state_dict"):
        common.decode_state("not base64!")


def test_trained_weights_in_a_cell_rebuild_the_trained_model(tmp_path):
    """The state a cell keeps, loaded into the model rebuilt from the cell's spec, gives the
    cell's recorded test accuracy (so trained connectivity is measured on the trained model)."""
    import torch

    spec = next(s for s in mnist_reproduction.cell_specs(TINY_STUDY) if s["variant"] == "n2nskip")
    row = mnist_reproduction.run_cell(spec)
    model = mnist_reproduction.trained_model(spec, common.decode_state(row["state"]))
    test = mnist_reproduction._splits(spec["dataset"])[1]
    with torch.no_grad():
        acc = float((model(test.images).argmax(1) == test.labels).float().mean())
    assert acc == pytest.approx(row["final_test_acc"], abs=1e-6)


@pytest.mark.slow
def test_conv_reproduction_smoke(tmp_path):
    """One epoch of the conv study (small VGG on digits, paper recipe) at 5%: RP, N2NSkip-RP and
    the dense reference, with accuracy and trained connectivity."""
    config = dataclasses.replace(conv_reproduction.SMALL, densities=(0.05,), methods=("expander",),
                                 results_root=str(tmp_path))
    out = conv_reproduction.main(config)
    check_config(out, "conv", config)
    cells = pd.read_csv(out / "cells.csv")
    assert sorted(cells["label"]) == ["N2NSkip-RP", "RP", "dense"]
    assert cells[cells["label"] != "dense"]["params"].nunique() == 1  # equal budget
    assert cells["params"].max() == 287_264  # digits_vgg's convs and Linear
    assert cells["trained F(t=1/l2)"].notna().all()
    assert conv_reproduction._parse(["--small"]) == conv_reproduction.SMALL
    assert conv_reproduction._parse([]).train.epochs == 20


def test_make_demo_logs_trains_real_runs(tmp_path, monkeypatch):
    logs = figure5_table1_training.make_demo_logs(tmp_path / "logs", TINY_STUDY)
    runs = figure5_table1_training.find_runs(logs)
    assert sorted(runs["label"]) == ["N2NSkip-RP", "RP"]
    assert runs["epochs"].tolist() == [1, 1]
    assert set(runs["dataset"]) == {"digits"} and set(runs["model"]) == {"paper_mlp"}
    assert figure5_table1_training.figure_title(runs).startswith(
        "dataset digits, model paper_mlp, 1 epoch, recipe paper, 1 seed")
    assert ((runs["test_acc"] >= 0) & (runs["test_acc"] <= 100)).all()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr("n2ngraph.training.train", no_training)
    assert figure5_table1_training.make_demo_logs(tmp_path / "logs", TINY_STUDY) == logs


def test_table3_uses_the_reference_codes_vgg19():
    """Decision (docs/recipes.md): Table 3's VGG19 is the authors' CIFAR VGG19 (512-512-10 head)."""
    from torch import nn

    from n2ngraph.masks import prunable_weights
    from n2ngraph.models import resolve_model

    spec = table3_distance.Config().models[0]
    assert spec == "analysis.common:vgg19_reference"
    model = resolve_model(spec)
    linears = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 10)]
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16 and all(m.kernel_size == (3, 3) for m in convs)
    n = sum(m.weight.numel() for m in prunable_weights(model).values())
    assert n == 20_018_880 + 512 * 512 + 512 * 10  # VGG19 convs + the two Linears


def test_cli_parsers_small():
    assert figure3_adjacency._parse(["--small"]) == figure3_adjacency.SMALL
    assert figure4_scree._parse(["--small", "--density", "0.05"]).density == 0.05
    assert table3_distance._parse(["--small"]) == table3_distance.SMALL
    assert table3_distance._parse(["--recipe", "all-pairs"]).recipe == "all-pairs"
    with pytest.raises(SystemExit):
        table3_distance._parse(["--recipe", "nope"])
    assert methods_comparison._parse(["--small", "--seeds", "2"]).seeds == 2
    assert methods_comparison._parse(["--dataset", "digits"]).dataset == "digits"


def test_every_driver_takes_comma_lists():
    """One convention: lists are comma-separated (0.1,0.02), never space-separated."""
    parsed = mnist_reproduction._parse(["--densities", "0.1,0.02", "--seeds", "0,1,2",
                                        "--methods", "expander", "--inits", "dense,sparse"])
    assert parsed.densities == (0.1, 0.02) and parsed.seeds == (0, 1, 2)
    assert parsed.methods == ("expander",) and parsed.inits == ("dense", "sparse")
    assert methods_comparison._parse(["--densities", "0.2, 0.05"]).densities == (0.2, 0.05)
    assert table3_distance._parse(["--models", "a:b,c:d"]).models == ("a:b", "c:d")
    for argv in (["--densities", "0.1", "0.02"], ["--densities", "0.1,x"], ["--seeds", ","]):
        with pytest.raises(SystemExit):
            mnist_reproduction._parse(argv)


def test_plural():
    assert [common.plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]

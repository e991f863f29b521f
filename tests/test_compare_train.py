"""Sweeps that train: ``n2ngraph compare --train-epochs``, the trained dense references, resume
from checkpoints, files shipped back by cells, and identities of untrained configs."""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from n2ngraph import compare
from n2ngraph.cli import main
from n2ngraph.compare import (
    ACCURACY_COLUMNS,
    Cell,
    CompareConfig,
    cell_config,
    cell_digest,
    reference_spec,
    run_cells,
    run_sweep,
)

#: lenet300 on scikit-learn's 8 x 8 digits (bundled): 64-300-100-10, seconds per epoch.
TINY = ["--model", "lenet300", "--data", "digits", "--methods", "random", "--densities", "0.1",
        "--seeds", "1", "--no-progress", "--inline"]
TRAINED = ["trained F(t=1/l2)", "trained F(t=3/l2)", "trained F(t=100/l2)", "trained F(t=inf)",
           "trained lambda_2", "trained lambda_2/ref"]


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _mtimes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))
            if p.is_file() and p.parent.name in ("cells", "references", "graphs")}


def test_compare_train_epochs_end_to_end_and_rerun_recomputes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["compare", *TINY, "--train-epochs", "1", "--save-graphs", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "final acc %" in printed and "trained F(t=3/l2)" in printed and "Trained 1 epoch on digits" in printed
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 2 and set(table["variant"]) == {"plain", "n2nskip"}
    for column in (*ACCURACY_COLUMNS, *TRAINED, "F(t=3/l2)", "init", "data"):
        assert column in table.columns and table[column].notna().all(), column
    assert table["final_test_acc"].between(0, 1).all() and (table["best_test_acc"] >= table["final_test_acc"]).all()
    assert (table["train_epochs"] == 1).all() and (table["init"] == "dense").all() and (table["data"] == "digits").all()
    assert (table["trained F(t=1/l2)"] > 0).all()  # sparse variants are not the dense network
    dense = pd.read_csv(out / "dense.csv")
    assert len(dense) == 1 and 0 < dense["final_test_acc"][0] <= 1
    meta = json.loads((out / "config.json").read_text())
    assert meta["training"]["epochs"] == 1
    assert meta["training"]["dense_final_test_acc"] == pytest.approx(list(dense["final_test_acc"]), rel=1e-5)
    runs = sorted((out / "configs" / meta["config_id"] / "runs").iterdir())
    assert [p.name for p in runs] == ["dense_s0", "random_n2nskip_d0.1_dense_s0", "random_plain_d0.1_dense_s0"]
    for run in runs:
        log = pd.read_csv(run / "log.csv")
        info = json.loads((run / "run.json").read_text())
        assert len(log) == 1 and info["seed"] == 0 and info["final_test_acc"] == log["test_acc"].iloc[-1]
    for figure in ("accuracy_vs_F.png", "accuracy_vs_trained_F.pdf", "compare.png"):
        assert (out / figure).stat().st_size > 0
    from n2ngraph.io import load_graph

    graphs = sorted((out / "graphs").glob("*.npz"))
    assert len(graphs) == 2
    for path in graphs:
        g = load_graph(path)
        row = table[table["cell_id"].str.startswith(path.stem.rsplit("-", 1)[1])].iloc[0]
        assert g.num_params == row["params"] and g.provenance["variant"] == row["variant"]
    assert not (out / "checkpoints").exists()  # removed once every cell finished

    before = _mtimes(out)
    assert len(before) == 3 + 1 + 2  # cells (2 variants, 1 dense reference), its weights, graphs
    assert main(args) == 0
    assert _mtimes(out) == before  # nothing recomputed, retrained or rewritten
    again = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(again, table)


def test_full_density_variant_trains_exactly_as_the_dense_reference(tmp_path):
    """Density 1 keeps every weight: the masked model trains bit for bit as the dense one (same
    init, seed and batches), so its trained F is 0 and its accuracy the reference's."""
    config = CompareConfig(model="lenet300", methods=("random",), densities=(1.0,), variants=("plain",),
                           seeds=1, dataset="digits", train_epochs=2)
    table, _, _ = run_sweep(config, tmp_path, inline=True, progress=False)
    row = table.iloc[0]
    assert row["final_test_acc"] == table.attrs["training"]["dense_final_test_acc"][0]
    for column in TRAINED[:4]:
        assert row[column] == pytest.approx(0.0, abs=1e-12), column
    assert row["trained lambda_2/ref"] == pytest.approx(1.0, rel=1e-12)


def test_half_trained_cell_resumes_from_its_checkpoint(tmp_path):
    from n2ngraph.training import TrainConfig, train

    config = CompareConfig(model="lenet300", methods=("random",), densities=(0.1,), variants=("plain",),
                           seeds=1, dataset="digits", train_epochs=2)
    spec = reference_spec(config, 0)
    digest = cell_digest(spec)
    out = tmp_path / "out"
    folder = out / "checkpoints" / digest
    # a sweep killed after the dense reference's first epoch left this behind
    model = compare._model(spec["model"], spec["model_kwargs"], 0)
    train_set, test_set = compare._splits("digits")
    first = train(model, train_set, test_set, TrainConfig(**{**spec["train"], "epochs": 1}, progress=False),
                  out_dir=folder, seed=0, identity={"cell": digest})
    table, _, _ = run_sweep(config, out, inline=True, progress=False)
    log = json.loads((out / "cells" / f"{digest}.json").read_text())["row"]["log"]
    assert len(log) == 2
    assert log[0] == first.iloc[0].to_dict()  # epoch 1 (its wall time too) came from the checkpoint
    assert not folder.exists()
    fresh, _, _ = run_sweep(config, tmp_path / "fresh", inline=True, progress=False)
    assert fresh.attrs["training"]["dense_final_test_acc"] == table.attrs["training"]["dense_final_test_acc"]
    for column in ("final_test_acc", *TRAINED):  # resumed exactly as if never stopped
        assert fresh[column][0] == table[column][0], column


def test_untrained_configs_keep_their_identity_and_training_changes_it():
    plain = CompareConfig(model="lenet300", methods=("random",), densities=(0.1,), seeds=1)
    assert not {"train_epochs", "init", "input_shape"} & set(plain.to_json())
    spec = cell_config(plain, Cell("random", 0.1, 0, "plain"), (1.0,), ("1",))
    assert set(spec) == {"format", "model", "model_kwargs", "recipe", "method", "density", "seed", "variant",
                         "weighted", "times", "time_labels", "reference_seed", "calibration", "saturation_rtol"}
    assert spec["model_kwargs"] == {}
    trained = CompareConfig(model="lenet300", methods=("random",), densities=(0.1,), seeds=1,
                            dataset="digits", train_epochs=3, init="sparse")
    tspec = cell_config(trained, Cell("random", 0.1, 0, "plain"), (1.0,), ("1",))
    assert tspec["model_kwargs"] == {"num_classes": 10, "in_features": 64}  # from the data
    assert tspec["train"]["epochs"] == 3 and tspec["init"] == "sparse" and tspec["data"] == "digits"
    assert tspec["trained_reference"] == cell_digest(reference_spec(trained, 0))
    assert "device" not in tspec["train"] and "progress" not in tspec["train"]
    assert trained.to_json()["train_epochs"] == 3 and trained.label != plain.label
    other = cell_config(CompareConfig(**{**trained.to_json(), "init": "dense"}), Cell("random", 0.1, 0, "plain"),
                        (1.0,), ("1",))
    assert cell_digest(other) != cell_digest(tspec)
    kept = CompareConfig(model="lenet300", dataset="digits", train_epochs=1, model_kwargs={"in_features": 64,
                                                                                           "num_classes": 10})
    assert compare.model_setup(kept)[0] == {"in_features": 64, "num_classes": 10}


_CNN = """
from torch import nn


def make(num_classes=10, in_channels=3):
    return nn.Sequential(nn.Conv2d(in_channels, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))
"""


def test_conv_net_is_traced_and_trained_on_the_data_shape_sparse_init(tmp_path, monkeypatch):
    (tmp_path / "tinycnn.py").write_text(_CNN)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = CompareConfig(model="tinycnn:make", model_kwargs={"in_channels": 1}, dataset="digits",
                           train_epochs=1, methods=("random", "snip"), densities=(0.2,), seeds=1,
                           recipe="all-pairs", init="sparse")
    kwargs, shape = compare.model_setup(config)
    assert shape == (1, 8, 8) and kwargs == {"num_classes": 10, "in_channels": 1}  # no in_features
    assert compare.reference_graph(config).groups[0].shape == (1, 8, 8)  # not the 32 x 32 guess
    table, _, _ = run_sweep(config, tmp_path / "out", inline=True, progress=False)
    assert len(table) == 4 and np.isfinite(table[["final_test_acc", *TRAINED]].to_numpy(float)).all()
    assert (table[table["variant"] == "n2nskip"]["skip_params"] > 0).all()
    assert (table["init"] == "sparse").all()


@pytest.mark.parametrize("flags, words", [
    (["--train-epochs", "-1"], "--train-epochs"),
    (["--train-epochs", "1", "--model-arg", "in_features=100"], "100"),
    (["--train-epochs", "1", "--model-arg", "num_classes=3"], "3"),
    (["--input-shape", "0,2"], "input"),
    (["--init", "kaiming"], "--init"),
])
def test_bad_training_flags_one_line_exit_2_no_files(tmp_path, capsys, flags, words):
    out = tmp_path / "out"
    try:
        code = main(["compare", *TINY, *flags, "--out", str(out)])
    except SystemExit as exc:  # argparse
        code = exc.code
    assert code == 2
    assert words in _one_error_line(capsys) and not out.exists()


def _returns_files(spec):
    return {"value": spec["n"]}, {f"extra/{spec['n']}.bin": bytes([spec["n"]]) * 3}


def _escapes(spec):
    return {"value": 0}, {"../outside.bin": b"x"}


def test_run_cells_writes_the_files_a_cell_returns_and_refuses_escaping_paths(tmp_path):
    specs = [{"format": 1, "n": n} for n in (1, 2)]
    rows = run_cells(_returns_files, specs, tmp_path, inline=True, progress=False)
    assert rows == [{"value": 1}, {"value": 2}]
    assert (tmp_path / "extra" / "2.bin").read_bytes() == b"\x02\x02\x02"
    stored = json.loads((tmp_path / "cells" / f"{cell_digest(specs[0])}.json").read_text())
    assert stored["row"] == {"value": 1}  # the files are not in the row
    with pytest.raises(ValueError, match="not inside"):
        run_cells(_escapes, [{"format": 1, "n": 9}], tmp_path / "other", inline=True, progress=False)
    assert not (tmp_path / "outside.bin").exists()
    assert not list((tmp_path / "other" / "cells").glob("*.json"))  # no cell without its files


def test_reference_cell_without_its_weights_is_retrained(tmp_path):
    config = CompareConfig(model="lenet300", methods=("random",), densities=(0.1,), variants=("plain",),
                           seeds=1, dataset="digits", train_epochs=1)
    table, _, _ = run_sweep(config, tmp_path, inline=True, progress=False)
    weights = tmp_path / compare.reference_file(cell_digest(reference_spec(config, 0)))
    original = weights.read_bytes()
    weights.write_bytes(original[:100])  # truncated
    with pytest.warns(UserWarning, match="not matched by its weights file"):
        again, _, _ = run_sweep(config, tmp_path, inline=True, progress=False)
    assert weights.read_bytes() == original  # retrained exactly
    np.testing.assert_array_equal(again["final_test_acc"], table["final_test_acc"])


@pytest.mark.slow
def test_training_sweep_on_a_local_dask_cluster_matches_inline(tmp_path):
    config = CompareConfig(model="lenet300", methods=("random", "snip"), densities=(0.1,), seeds=2,
                           dataset="digits", train_epochs=1)
    inline, _, _ = run_sweep(config, tmp_path / "inline", inline=True, progress=False)
    dask, _, _ = run_sweep(config, tmp_path / "dask", workers=2, progress=False)
    np.testing.assert_array_equal(dask["final_test_acc"], inline["final_test_acc"])  # same training
    for column in (*TRAINED, "F(t=3/l2)"):  # eigensolvers may round differently under other BLAS threads
        np.testing.assert_allclose(dask[column], inline[column], rtol=1e-9, atol=1e-12, err_msg=column)
    assert dask.attrs["training"]["dense_final_test_acc"] == inline.attrs["training"]["dense_final_test_acc"]


@pytest.mark.slow
def test_killed_training_sweep_resumes_mid_training_on_dask(tmp_path):
    """Kill the whole sweep (client, scheduler, worker) while the dense reference trains; the
    rerun continues from the checkpoint the worker left in OUT/checkpoints: its first epochs are
    the killed run's own rows (their wall times too), and the run ends complete."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "sweep"
    args = [sys.executable, "-m", "n2ngraph", *["compare", *TINY[:-1], "--variants", "plain",
                                                "--train-epochs", "120", "--workers", "1", "--out", str(out)]]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, logs = time.time() + 300, []
    while time.time() < deadline:
        logs = list((out / "checkpoints").glob("*/log.csv"))
        if logs and len(pd.read_csv(logs[0])) >= 5:
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert logs, "no checkpoint within 300 s"
    killed = pd.read_csv(logs[0])
    assert 5 <= len(killed) < 120, "the kill should land mid-training"
    assert main(args[3:]) == 0
    digest = logs[0].parent.name
    log = pd.DataFrame(json.loads((out / "cells" / f"{digest}.json").read_text())["row"]["log"])
    assert len(log) == 120
    pd.testing.assert_frame_equal(log.iloc[:len(killed)].reset_index(drop=True), killed, check_exact=False, rtol=1e-12)
    assert not (out / "checkpoints").exists()

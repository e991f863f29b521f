"""The compare sweep: rows, equal budgets, cell identity, resume, Dask (local and external),
kills, bad input, weighted runs."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from n2ngraph.cli import main
from n2ngraph.compare import (
    CELL_FORMAT,
    MAX_COLUMNS,
    Cell,
    CompareConfig,
    cell_config,
    cell_digest,
    cells_of,
    load_cells,
    readable_table,
    run_cells,
    run_sweep,
    summarize,
    sweep_markdown,
)

SMALL = dict(model="lenet300", methods=("random", "snip"), densities=(0.05,), seeds=1, times=(0.5, 5.0))
TWO = dict(model="lenet300", methods=("random", "expander"), densities=(0.1,), seeds=1)
SWEEP = ["--model", "lenet300", "--methods", "random,expander", "--densities", "0.1", "--seeds", "1",
         "--no-progress"]


def _cells(out):
    return {p.name: p.read_text() for p in sorted((Path(out) / "cells").glob("*.json"))}


def _md_columns(md: str) -> int:
    """Columns of the one Markdown table in ``md`` (every table line has the same count)."""
    counts = {line.count(" | ") + 1 for line in md.splitlines() if line.startswith("| ")}
    assert len(counts) == 1, counts
    return counts.pop()


def _mtimes(out):
    return {p.name: p.stat().st_mtime_ns for p in (Path(out) / "cells").glob("*.json")}


def test_inline_sweep_rows_and_budgets(tmp_path):
    table, summary, times = run_sweep(CompareConfig(**SMALL), tmp_path, inline=True, progress=False)
    assert times == (0.5, 5.0)
    assert len(table) == 4 and set(table["variant"]) == {"plain", "n2nskip"}
    for _, part in table.groupby("method"):
        plain = part[part.variant == "plain"].iloc[0]
        skip = part[part.variant == "n2nskip"].iloc[0]
        assert plain["params"] == skip["params"]  # same budget
        assert plain["skip_params"] == 0 and skip["skip_params"] > 0
    for column in ("F(t=0.5)", "F(t=5)", "F(t=inf)", "escaped-ref(t=0.5)", "escaped-ref(t=5)",
                   "lambda_2/ref", "lambda_2_ref", "saturation_time", "lambda_2", "n_components",
                   "dead_units", "effective_density", "recipe", "recipe_fields"):
        assert column in table.columns and table[column].notna().all(), column
    assert (table["F(t=0.5)"] > 0).all() and (table["recipe"] == "paper").all()
    assert json.loads(table["recipe_fields"][0])["wiring"] == "blocks"
    np.testing.assert_allclose(table["lambda_2/ref"], table["lambda_2"] / table["lambda_2_ref"])
    assert len(summary) == 4 and (summary["seeds"] == 1).all() and (summary["recipe"] == "paper").all()
    for name in ("results.csv", "results.md", "summary.csv", "summary.md", "config.json"):
        assert (tmp_path / name).stat().st_size > 0
    # short Markdown tables, every column in the CSV files; one seed: no std, no nan
    for name, frame in (("results", table), ("summary", summary)):
        md = (tmp_path / f"{name}.md").read_text(encoding="utf-8")
        assert _md_columns(md) <= MAX_COLUMNS and "nan" not in md.lower() and "±" not in md
        assert list(pd.read_csv(tmp_path / f"{name}.csv").columns) == list(frame.columns)
    assert "inputs_reach_outputs" in table.columns and "connected" not in table.columns
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["times"] == [0.5, 5.0] and meta["recipe"]["name"] == "paper"
    assert meta["lambda_2_reference"] == pytest.approx(table["lambda_2_ref"][0])
    assert sorted(meta["cells"]) == sorted(p.stem for p in (tmp_path / "cells").glob("*.json"))
    cell = json.loads(next((tmp_path / "cells").glob("*.json")).read_text())
    assert cell["format"] == CELL_FORMAT and cell_digest(cell["config"]) == cell["id"] == cell["row"]["cell_id"]


def test_times_in_units_of_lambda2_signed_measure_and_large_t(tmp_path):
    config = CompareConfig(**{**TWO, "methods": ("expander",)})
    table, _, times = run_sweep(config, tmp_path, inline=True, progress=False)
    lam2 = table["lambda_2_ref"][0]
    assert times == pytest.approx((1 / lam2, 3 / lam2, 100 / lam2), rel=1e-5)
    for label in ("1/l2", "3/l2", "100/l2"):
        assert f"F(t={label})" in table.columns and f"escaped-ref(t={label})" in table.columns
    # heat can only leave the inputs: the signed measure is a difference of fractions in [0, 1]
    esc = table[[c for c in table.columns if c.startswith("escaped-ref")]].to_numpy()
    assert np.all(np.abs(esc) <= 1)
    # at 100 / lambda_2 the reference has saturated: F is far below its value at 1 / lambda_2
    assert (table["F(t=100/l2)"] < 1e-2 * table["F(t=1/l2)"]).all()
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert lines[0].startswith("F(t) = ||S_ref(t) - S(t)||_2")  # the header defines F ...
    assert "lambda_2(reference) = " in lines[2] and "1/l2 = " in lines[2]  # ... and states lambda_2
    assert table.attrs["lambda_2_reference"] == pytest.approx(lam2)


def test_cell_identity_covers_the_whole_config():
    config = CompareConfig(**TWO)
    times, labels = (0.5,), ("0.5",)
    base = cell_config(config, Cell("random", 0.1, 0, "plain"), times, labels)
    same = cell_config(CompareConfig(**TWO), Cell("random", 0.1, 0, "plain"), times, labels)
    assert cell_digest(base) == cell_digest(same)
    others = [
        cell_config(config, Cell("random", 0.10000001, 0, "plain"), times, labels),
        cell_config(config, Cell("random", 0.1, 1, "plain"), times, labels),
        cell_config(config, Cell("random", 0.1, 0, "n2nskip"), times, labels),
        cell_config(config, Cell("expander", 0.1, 0, "plain"), times, labels),
        cell_config(config, Cell("random", 0.1, 0, "plain"), (0.6,), ("0.6",)),
        cell_config(CompareConfig(**{**TWO, "model": "paper_mlp"}), Cell("random", 0.1, 0, "plain"), times, labels),
        cell_config(CompareConfig(**TWO, model_kwargs={"num_classes": 5}), Cell("random", 0.1, 0, "plain"), times, labels),
        cell_config(CompareConfig(**TWO, recipe="all-pairs"), Cell("random", 0.1, 0, "plain"), times, labels),
        cell_config(CompareConfig(**TWO, n2nskip_fraction=0.25), Cell("random", 0.1, 0, "plain"), times, labels),
        cell_config(CompareConfig(**TWO, scope="layerwise"), Cell("random", 0.1, 0, "plain"), times, labels),
        cell_config(CompareConfig(**TWO, weighted=True), Cell("random", 0.1, 0, "plain"), times, labels),
        cell_config(CompareConfig(**TWO, saturation_rtol=1e-4), Cell("random", 0.1, 0, "plain"), times, labels),
    ]
    digests = {cell_digest(c) for c in others} | {cell_digest(base)}
    assert len(digests) == len(others) + 1
    fraction = CompareConfig(**TWO, n2nskip_fraction=0.25).resolved_recipe
    assert fraction.name == "paper-f0.25" and fraction.n2nskip_fraction == 0.25
    # calibration data enter the identity of data-driven cells only
    calib = {"dataset": "mnist5k", "batch_size": 128, "sha256": "0" * 64}
    assert cell_config(config, Cell("random", 0.1, 0, "plain"), times, labels, calib)["calibration"] is None
    snip = CompareConfig(**{**TWO, "methods": ("snip",)})
    a = cell_config(snip, Cell("snip", 0.1, 0, "plain"), times, labels, calib)
    b = cell_config(snip, Cell("snip", 0.1, 0, "plain"), times, labels, {**calib, "sha256": "1" * 64})
    assert cell_digest(a) != cell_digest(b)


def test_rerun_recomputes_only_missing_cells(tmp_path):
    config = CompareConfig(**SMALL)
    run_sweep(config, tmp_path, inline=True, progress=False)
    before = _cells(tmp_path)
    mtimes = _mtimes(tmp_path)
    victim = sorted(before)[0]
    (tmp_path / "cells" / victim).unlink()
    table, _, _ = run_sweep(config, tmp_path, inline=True, progress=False)
    after = _cells(tmp_path)
    assert set(after) == set(before) and len(table) == len(before)
    for name, p in ((n, tmp_path / "cells" / n) for n in after if n != victim):
        assert p.stat().st_mtime_ns == mtimes[name], f"{name} was recomputed"
    recomputed, original = json.loads(after[victim])["row"], json.loads(before[victim])["row"]
    assert recomputed["F(t=0.5)"] == pytest.approx(original["F(t=0.5)"], rel=1e-9)  # deterministic


def test_two_configs_in_one_folder_get_their_own_tables(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", *SWEEP, "--times", "1", "--out", str(out), "--inline"]) == 0
    first = pd.read_csv(out / "results.csv")
    assert "F(t=1)" in first.columns
    for figure in ("compare.png", "delta_F.png", "delta_F.pdf"):  # the claim at a glance
        assert (out / figure).stat().st_size > 0, figure
    printed = capsys.readouterr().out
    # the printed summary is summary.md's text; the closing lines name every file written
    assert (out / "summary.md").read_text(encoding="utf-8") in printed
    wrote = printed[printed.index(f"wrote {out.resolve()}/"):]
    config_id = json.loads((out / "config.json").read_text())["config_id"]
    named = wrote.splitlines()
    for path in out.iterdir():
        if path.is_file():
            assert path.name in named[1].split(), path.name
    own = next(line for line in named if line.strip().startswith(f"configs/{config_id}/:"))
    assert sorted(own.split(":", 1)[1].split()) == sorted(p.name for p in (out / "configs" / config_id).iterdir())
    assert "cells/: 4 cell files" in wrote
    mtimes = _mtimes(out)
    assert main(["compare", *SWEEP, "--times", "2", "--out", str(out), "--inline"]) == 0
    second = pd.read_csv(out / "results.csv")
    assert "F(t=2)" in second.columns and "F(t=1)" not in second.columns and len(second) == 4
    assert json.loads((out / "config.json").read_text())["times"] == [2.0]
    assert len(_cells(out)) == 8 and set(first["cell_id"]).isdisjoint(second["cell_id"])
    tables = {}
    for folder in (out / "configs").iterdir():
        meta = json.loads((folder / "config.json").read_text())
        table = pd.read_csv(folder / "results.csv")
        assert sorted(table["cell_id"]) == sorted(meta["cells"])
        tables[tuple(meta["times"])] = table
    assert set(tables) == {(1.0,), (2.0,)}
    pd.testing.assert_frame_equal(tables[(1.0,)], first)
    # the first config again: nothing is recomputed, its table is its own again
    assert main(["compare", *SWEEP, "--times", "1", "--out", str(out), "--inline"]) == 0
    assert {n: t for n, t in _mtimes(out).items() if n in mtimes} == mtimes
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), first)
    # another recipe in the same folder: new cells, the recipe named in every row
    assert main(["compare", *SWEEP, "--times", "1", "--recipe", "all-pairs", "--out", str(out),
                 "--inline"]) == 0
    third = pd.read_csv(out / "results.csv")
    assert (third["recipe"] == "all-pairs").all() and len(_cells(out)) == 12
    assert "recipe all-pairs" in capsys.readouterr().out


def test_truncated_and_empty_cells_are_recomputed_with_a_warning(tmp_path):
    config = CompareConfig(**TWO)
    run_sweep(config, tmp_path, inline=True, progress=False)
    before = _cells(tmp_path)
    truncated, emptied, other, kept = sorted(before)
    (tmp_path / "cells" / truncated).write_text(before[truncated][: len(before[truncated]) // 2])
    (tmp_path / "cells" / emptied).write_text("{}")
    doc = json.loads(before[other])
    del doc["row"]["F(t=inf)"]
    (tmp_path / "cells" / other).write_text(json.dumps(doc))
    mtime = (tmp_path / "cells" / kept).stat().st_mtime_ns
    with pytest.warns(UserWarning) as record:
        table, _, _ = run_sweep(config, tmp_path, inline=True, progress=False)
    messages = "\n".join(str(w.message) for w in record)
    for name in (truncated, emptied, other):
        assert str(tmp_path / "cells" / name) in messages
    assert kept not in messages and (tmp_path / "cells" / kept).stat().st_mtime_ns == mtime
    assert table["F(t=1/l2)"].notna().all() and len(table) == 4
    for name in (truncated, emptied, other):
        fresh, old = json.loads((tmp_path / "cells" / name).read_text()), json.loads(before[name])
        assert fresh["row"]["F(t=1/l2)"] == pytest.approx(old["row"]["F(t=1/l2)"], rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_sweep(config, tmp_path, inline=True, progress=False)


def test_inline_run_leaves_thread_settings_alone(tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_sweep(CompareConfig(**{**TWO, "methods": ("random",), "variants": ("plain",)}), tmp_path,
                  inline=True, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_local_dask_cluster_of_two_workers(tmp_path):
    config = CompareConfig(**{**SMALL, "methods": ("random", "expander")})
    table, _, _ = run_sweep(config, tmp_path, workers=2, progress=False)
    inline, _, _ = run_sweep(config, tmp_path / "inline", inline=True, progress=False)
    assert len(table) == len(cells_of(config)) == 4
    for column in ("F(t=0.5)", "escaped-ref(t=0.5)", "lambda_2"):
        np.testing.assert_allclose(table[column], inline[column], rtol=1e-9)
    # at t = 5 (t lambda_2 ~ 480) F is far below ||S||: compare to its absolute accuracy
    np.testing.assert_allclose(table["F(t=5)"], inline["F(t=5)"], rtol=1e-6, atol=1e-14)


def _start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def test_external_scheduler_and_worker_in_another_directory(tmp_path, monkeypatch):
    elsewhere, here = tmp_path / "worker-cwd", tmp_path / "client-cwd"
    elsewhere.mkdir()
    here.mkdir()
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = _start(["distributed.cli.dask_scheduler", "--scheduler-file", str(scheduler_file),
                        "--port", "0", "--no-dashboard"], elsewhere)
    worker = None
    try:
        deadline = time.time() + 60
        address = None
        while address is None and time.time() < deadline:  # the file may exist before its text
            try:
                address = json.loads(scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.2)
        assert address is not None, "the scheduler did not write its address within 60 s"
        worker = _start(["distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
                         "--nworkers", "1", "--nthreads", "1", "--no-dashboard"], elsewhere)
        monkeypatch.chdir(here)
        assert main(["compare", *SWEEP, "--scheduler", address, "--out", "rel/out"]) == 0
        assert main(["compare", *SWEEP, "--out", "inline", "--inline"]) == 0
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
    assert len(_cells(here / "rel" / "out")) == 4
    assert not [p for p in elsewhere.rglob("*.json") if "cells" in p.parts]
    assert not (elsewhere / "rel").exists()
    dask_table = pd.read_csv(here / "rel" / "out" / "results.csv")
    inline = pd.read_csv(here / "inline" / "results.csv")
    numbers = [c for c in inline.columns if c.startswith(("F(", "escaped-ref(", "lambda_2"))]
    assert list(dask_table["cell_id"]) == list(inline["cell_id"])
    np.testing.assert_array_equal(dask_table[numbers].to_numpy(), inline[numbers].to_numpy())


def test_killed_sweep_resumes_without_loss_or_repeats(tmp_path):
    out = tmp_path / "sweep"
    args = [sys.executable, "-m", "n2ngraph", "compare", "--model", "lenet300", "--methods",
            "random,expander,magnitude", "--densities", "0.1,0.05", "--seeds", "2", "--times", "1",
            "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "cells").glob("*.json"))) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the client, the scheduler and both workers
    proc.wait()
    survived = _cells(out)
    assert 3 <= len(survived) < 24, "the kill should land mid-sweep"
    mtimes = _mtimes(out)
    assert main(args[3:]) == 0
    final = _cells(out)
    assert len(final) == 24
    for name, text in survived.items():
        assert final[name] == text
        assert (out / "cells" / name).stat().st_mtime_ns == mtimes[name], f"{name} repeated"
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 24 and table["cell_id"].is_unique
    assert not [p for p in (out / "cells").iterdir() if not p.name.endswith(".json")]


def _square(spec, offset):
    """A cell of the engine test: the spec's x squared plus a shared offset."""
    return {"x": spec["x"], "y": spec["x"] ** 2 + offset}


def test_run_cells_is_a_generic_resumable_engine(tmp_path):
    specs = [{"format": 1, "x": x} for x in (3, 1, 2)]
    loaded = []

    def load(key):
        loaded.append(key)
        return 10

    def check(spec, row):
        return None if "y" in row else "incomplete (no y)"

    rows = run_cells(_square, specs, tmp_path, inputs=lambda s: ("offset",), load=load,
                     check=check, inline=True, progress=False)
    assert [r["y"] for r in rows] == [19, 11, 14] and loaded == ["offset"]
    assert sorted(p.stem for p in (tmp_path / "cells").glob("*.json")) == sorted(map(cell_digest, specs))
    # a finished cell is never recomputed, nor its shared input rebuilt
    rows = run_cells(_square, specs, tmp_path, inputs=lambda s: ("offset",), load=load,
                     check=check, inline=True, progress=False)
    assert [r["y"] for r in rows] == [19, 11, 14] and loaded == ["offset"]
    # a row the sweep's check refuses, or a file of another format, is recomputed with a warning
    path = tmp_path / "cells" / f"{cell_digest(specs[0])}.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "row": {"x": 3}}))
    other = tmp_path / "cells" / f"{cell_digest(specs[1])}.json"
    other.write_text(json.dumps({**json.loads(other.read_text()), "format": 0}))
    with pytest.warns(UserWarning) as record:
        rows = run_cells(_square, specs, tmp_path, inputs=lambda s: ("offset",), load=load,
                         check=check, inline=True, progress=False)
    messages = "\n".join(str(w.message) for w in record)
    assert "incomplete (no y)" in messages and "of format 0, not 1" in messages
    assert [r["y"] for r in rows] == [19, 11, 14] and loaded == ["offset", "offset"]
    with pytest.raises(ValueError, match="workers"):
        run_cells(_square, specs, tmp_path, workers=0)


def test_weighted_sweep_on_every_variant(tmp_path):
    config = CompareConfig(**{**TWO, "methods": ("random",), "weighted": True})
    table, _, _ = run_sweep(config, tmp_path, inline=True, progress=False)
    assert set(table["variant"]) == {"plain", "n2nskip"}
    for column in ("F(t=1/l2)", "F(t=3/l2)", "escaped-ref(t=1/l2)", "lambda_2/ref"):
        assert np.isfinite(table[column]).all(), column
    assert json.loads((tmp_path / "config.json").read_text())["weighted"] is True


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_input_gives_one_line_exit_2_and_no_files(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["compare", "--model", "alexnet", "--out", str(out)]) == 2
    assert "valid models" in _one_error_line(capsys) and not out.exists()
    assert main(["compare", "--methods", "random,obd", "--out", str(out)]) == 2
    assert "valid methods" in _one_error_line(capsys) and not out.exists()
    assert main(["compare", "--densities", "0.1,1.5", "--out", str(out)]) == 2
    assert "(0, 1]" in _one_error_line(capsys) and not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["compare", "--model", "lenet300", "--out", str(blocker / "out")]) == 2
    assert "not writable" in _one_error_line(capsys)
    (tmp_path / "badfactory.py").write_text("def make():\n    raise RuntimeError('no weights here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["compare", "--model", "badfactory:make", "--out", str(out)]) == 2
    assert "no weights here" in _one_error_line(capsys) and not out.exists()
    assert main(["compare", "--model", "lenet300", "--methods", "random", "--densities", "0.1",
                 "--seeds", "1", "--times", "1", "--scheduler", "tcp://127.0.0.1:9", "--out", str(out)]) == 2
    assert "Dask scheduler" in _one_error_line(capsys) and not out.exists()


@pytest.mark.parametrize("flags, words", [
    (["--workers", "0"], "--workers"),
    (["--workers", "-3"], "--workers"),
    (["--threads", "0"], "--threads"),
    (["--seeds", "0"], "--seeds"),
    (["--batch-size", "0"], "--batch-size"),
    (["--times", "1e308"], "finite numbers in (0, 1e+12]"),
    (["--times", "inf"], "finite numbers"),
    (["--times", "nan"], "finite numbers"),
    (["--times", "1,1"], "repeated"),
    (["--times", "-1"], "finite numbers"),
    (["--t-lambda2", "1e300"], "t_lambda2"),
    (["--densities", "nan"], "(0, 1]"),
    (["--densities", "0.1,0.1"], "repeated"),
    (["--n2nskip-fraction", "1.5"], "n2nskip-fraction"),
    (["--n2nskip-fraction", "nan"], "n2nskip-fraction"),
    (["--recipe", "bogus"], "paper"),
    (["--scope", "sideways"], "scope"),
    (["--variants", "plain,resnet"], "variants"),
    (["--dataset", "imagenet"], "valid datasets"),
    (["--model-arg", "novalue"], "KEY=VALUE"),
    (["--model-arg", "num_classes=3", "--model-arg", "num_classes=4"], "twice"),
])
def test_bad_flags_exit_2_at_once_with_one_line(tmp_path, capsys, flags, words):
    out = tmp_path / "out"
    start = time.perf_counter()
    try:
        code = main(["compare", "--model", "lenet300", *flags, "--out", str(out), "--no-progress"])
    except SystemExit as exc:  # argparse: a value that is not a number
        code = exc.code
    assert code == 2
    assert time.perf_counter() - start < 20
    assert words in _one_error_line(capsys) and not out.exists()


def test_unparsable_number_gives_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--seeds", "three"])
    assert exc.value.code == 2
    assert "--seeds" in _one_error_line(capsys)


# ------------------------------------------------------------------------- readable tables
def _results(labels=("1/l2", "3/l2", "100/l2"), seeds=(0, 1)):
    """A results table of hand-set numbers: F(t=<label k>) = k + 1 + 2 * seed, so over seeds
    0 and 1 the mean is k + 2 and the std (ddof=1) sqrt(2); ``attrs`` as run_sweep sets them."""
    rows = []
    for method in ("snip", "random"):
        for variant in ("plain", "n2nskip"):
            for seed in seeds:
                row = {"cell_id": f"{method}{variant}{seed}", "model": "m", "recipe": "paper",
                       "method": method, "variant": variant, "density": 0.1, "seed": seed}
                for k, lab in enumerate(labels):
                    row[f"F(t={lab})"] = k + 1.0 + 2 * seed
                    row[f"escaped-ref(t={lab})"] = -0.5
                row.update({"F(t=inf)": 0.0, "lambda_2/ref": 0.25, "n_components": 1,
                            "dead_units": 3 + seed, "effective_density": 0.05,
                            "inputs_reach_outputs": True, "lambda_2_ref": 4.0})
                rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs = {"config": {"model": "m", "weighted": False, "seeds": len(seeds)},
                   "recipe": {"name": "paper"},
                   "times": [0.25 * (k + 1) for k in range(len(labels))],
                   "time_labels": list(labels), "times_in_units_of_1/lambda_2": True,
                   "lambda_2_reference": 4.0}
    return table


def test_readable_summary_has_mean_pm_std_cells_and_at_most_12_columns():
    summary = summarize(_results())
    short = readable_table(summary)
    assert list(short.columns) == ["method", "density", "n", "F(t=1/l2)", "F(t=3/l2)", "F(t=100/l2)",
                                   "F(t=inf)", "escaped-ref(t=3/l2)", "lambda_2/ref", "components",
                                   "dead units", "effective density"]
    # a method's variants side by side, methods in the table's order
    assert list(short["method"]) == ["snip", "snip + N2NSkip", "random", "random + N2NSkip"]
    row = short.iloc[0]
    assert row["n"] == 2 and row["F(t=1/l2)"] == "2 ± 1.4" and row["F(t=100/l2)"] == "4 ± 1.4"
    assert row["dead units"] == "3.5 ± 0.71" and row["components"] == "1 ± 0"  # sqrt(1/2)
    text = sweep_markdown(summary)
    lines = text.splitlines()
    assert lines[0].startswith("F(t) = ||S_ref(t) - S(t)||_2") and lines[1] == ""
    assert "lambda_2(reference) = 4;" in lines[2] and "1/l2 = 0.25, 3/l2 = 0.5, 100/l2 = 0.75" in lines[2]
    assert _md_columns(text) == 12 and "nan" not in text.lower()
    assert "Every column (with its std) is in summary.csv." in text


def test_readable_table_one_seed_many_times_and_undefined_values():
    labels = tuple(f"{k}/l2" for k in range(1, 12))  # 11 stated times: more than fit
    table = _results(labels, seeds=(0,))
    table.loc[0, "lambda_2/ref"] = float("nan")  # a disconnected reference: not defined
    summary = summarize(table)
    short = readable_table(summary)
    assert len(short.columns) == MAX_COLUMNS
    assert list(short.columns[3:]) == [f"F(t={lab})" for lab in labels[:9]]
    assert short.iloc[0]["F(t=1/l2)"] == "1" and (short["n"] == 1).all()  # n = 1: no std
    text = sweep_markdown(summary)
    assert "±" not in text and "nan" not in text.lower() and "F at 2 more times" in text
    # per cell: a seed column, the same short view
    per_cell = readable_table(table)
    assert list(per_cell.columns[:3]) == ["method", "density", "seed"]
    few = readable_table(_results(seeds=(0,)).assign(**{"lambda_2/ref": float("nan")}))
    assert (few["lambda_2/ref"].isna()).all()  # written "-" in the Markdown table
    assert "| -" in sweep_markdown(_results(seeds=(0,)).assign(**{"lambda_2/ref": float("nan")}))


def test_cells_written_with_the_old_column_name_read_under_the_new_one(tmp_path):
    (tmp_path / "cells").mkdir()
    for k, key in enumerate(("connected", "inputs_reach_outputs")):
        row = {"method": "random", "variant": "plain", "density": 0.1, "seed": k, key: bool(k)}
        (tmp_path / "cells" / f"{k}.json").write_text(json.dumps({"row": row}))
    table = load_cells(tmp_path)
    assert "connected" not in table.columns
    assert sorted(table["inputs_reach_outputs"]) == [False, True]


def test_caption_with_absolute_times_states_them_in_units_of_lambda2_too():
    table = _results(labels=("0.5", "5"), seeds=(0,))
    table.attrs.update({"times": [0.5, 5.0], "times_in_units_of_1/lambda_2": False})
    text = sweep_markdown(table)  # one row per cell
    assert "t absolute: 0.5, 5 (t * lambda_2 = 2, 20)" in text  # lambda_2(reference) = 4
    assert "one row per cell" in text
    assert "escaped-ref(t=0.5)" in readable_table(table).columns  # the earlier of two times

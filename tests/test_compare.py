"""The compare sweep: rows, equal budgets, resume without recomputation, Dask, kills, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from n2ngraph.cli import main
from n2ngraph.compare import CompareConfig, cells_of, run_sweep

SMALL = dict(model="lenet300", methods=("random", "snip"), densities=(0.05,), seeds=1, times=(0.5, 5.0))


def _cells(out):
    return {p.name: p.read_text() for p in sorted((Path(out) / "cells").glob("*.json"))}


def test_inline_sweep_rows_and_budgets(tmp_path):
    table, summary = run_sweep(CompareConfig(**SMALL), tmp_path, inline=True, progress=False)
    assert len(table) == 4 and set(table["variant"]) == {"plain", "n2nskip"}
    for method, part in table.groupby("method"):
        plain = part[part.variant == "plain"].iloc[0]
        skip = part[part.variant == "n2nskip"].iloc[0]
        assert plain["params"] == skip["params"]  # same budget
        assert plain["skip_params"] == 0 and skip["skip_params"] > 0
    for column in ("F(t=0.5)", "F(t=5)", "F(t=inf)", "saturation_time", "lambda_2", "n_components",
                   "dead_units", "effective_density"):
        assert column in table.columns and table[column].notna().all(), column
    assert (table["F(t=0.5)"] > 0).all()
    assert len(summary) == 4 and (summary["seeds"] == 1).all()
    for name in ("results.csv", "results.md", "summary.csv", "summary.md", "config.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "config.json").read_text())["times"] == [0.5, 5.0]


def test_rerun_recomputes_only_missing_cells(tmp_path):
    config = CompareConfig(**SMALL)
    run_sweep(config, tmp_path, inline=True, progress=False)
    before = _cells(tmp_path)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()}
    victim = sorted(before)[0]
    (tmp_path / "cells" / victim).unlink()
    table, _ = run_sweep(config, tmp_path, inline=True, progress=False)
    after = _cells(tmp_path)
    assert set(after) == set(before) and len(table) == len(before)
    for name, p in ((n, tmp_path / "cells" / n) for n in after if n != victim):
        assert p.stat().st_mtime_ns == mtimes[name], f"{name} was recomputed"
    recomputed, original = json.loads(after[victim]), json.loads(before[victim])
    assert recomputed["F(t=0.5)"] == pytest.approx(original["F(t=0.5)"], rel=1e-9)  # deterministic


def test_local_dask_cluster_of_two_workers(tmp_path):
    config = CompareConfig(**{**SMALL, "methods": ("random", "expander")})
    table, _ = run_sweep(config, tmp_path, workers=2, progress=False)
    inline, _ = run_sweep(config, tmp_path / "inline", inline=True, progress=False)
    assert len(table) == len(cells_of(config)) == 4
    np.testing.assert_allclose(table["F(t=5)"], inline["F(t=5)"], rtol=1e-9)


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
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    assert main(args[3:]) == 0
    final = _cells(out)
    assert len(final) == 24
    for name, text in survived.items():
        assert final[name] == text
        assert (out / "cells" / name).stat().st_mtime_ns == mtimes[name], f"{name} repeated"
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 24 and table["cell_id"].is_unique
    assert not [p for p in (out / "cells").iterdir() if not p.name.endswith(".json")]


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

"""The code passes ``ruff check`` under the rules in pyproject.toml (CI runs this file)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    if shutil.which("ruff") is None and subprocess.run(
            [sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode != 0:
        pytest.fail("ruff is not installed: it is part of the '.[test]' extra (pip install -e '.[test]')")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "n2ngraph", "analysis",
                           "benchmarks", "tests", "notebooks"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"ruff check found problems:\n{done.stdout}{done.stderr}"

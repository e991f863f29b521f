"""Every notebook in notebooks/ executes headlessly (nbclient + ipykernel, kernel python3) on its
quick settings, without errors, and the figures it saves exist and are non-empty PNG images."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 120  # seconds per cell
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_notebooks_found():
    names = {p.stem for p in NOTEBOOKS}
    assert {"00_walkthrough", "figure3", "figure4", "table3", "figure5_table1",
            "methods_comparison"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_committed_without_outputs(path):
    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("N2NGRAPH_RESULTS", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    for cell in book.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", output
    pngs = sorted(tmp_path.rglob("*.png"))
    assert pngs, f"{path.name} saved no figure"
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC, png
        assert png.with_suffix(".pdf").stat().st_size > 0
    shown = [o for c in book.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert shown, f"{path.name} displayed no figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_first_cell_states_the_settings(path):
    """A reader learns from the first cell what the notebook runs as committed (QUICK) and
    otherwise: every model the code names, densities, and which settings are small."""
    import re

    from n2ngraph.models import MODELS

    book = nbformat.read(path, as_version=4)
    first = book.cells[0]
    assert first.cell_type == "markdown"
    text = first.source
    assert "**Settings.**" in text and "QUICK = True" in text and "QUICK = False" in text
    assert "densit" in text and ("--small" in text or "DEMO" in text or "QUICK = False" in text)
    code = "\n".join(c.source for c in book.cells if c.cell_type == "code")
    named = set(re.findall(r'"(analysis\.common:\w+)"', code))
    named |= {m for m in re.findall(r'"(\w+)"', code) if m in MODELS}
    for model in named:
        assert f"`{model}`" in text, f"{path.name}: first cell does not name model {model!r}"
    quick = re.findall(r"densit(?:y|ies)=\(?([0-9.]+)", code) + re.findall(r"DENSITY = ([0-9.]+)", code)
    for value in quick:
        assert f"{float(value):g}" in text, f"{path.name}: first cell does not state density {value}"

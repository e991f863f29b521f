"""The README's Python quick start runs as written."""

import re
from pathlib import Path


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Quick start \(Python\)\s+```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "rp2-n2nskip.npz").stat().st_size > 0

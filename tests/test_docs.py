"""Documentation stays inside the repository: users do not have the team's private notes."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A path that climbs out of the repository, or a team file that only lives outside it.
OUTSIDE = re.compile(r"\.\./shared|\.\./[A-Za-z_]+/|\bPAPER\.md\b|\bDESIGN\.md\b|\bSTYLE\.md\b|"
                     r"\bENVIRONMENT\.md\b")


def _documents():
    for folder in ("n2ngraph", "analysis", "notebooks", "docs", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in {".py", ".md", ".ipynb"} and "__pycache__" not in path.parts:
                yield path
    yield ROOT / "README.md"


def test_no_document_names_a_path_outside_the_repository():
    offenders = []
    for path in _documents():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not offenders, "\n".join(offenders)


def test_docs_named_in_the_repository_exist():
    named = set()
    for path in _documents():
        named.update(re.findall(r"docs/[a-z_]+\.md", path.read_text(encoding="utf-8")))
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert named and not missing, missing

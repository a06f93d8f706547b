"""The layout's import rules, as each package's `__init__` states them: the render core imports
nothing from `serve/` or `jobs/`, `cluster/spec/` nothing else of raydiant, and the two doors of
the core (online, offline) nothing of each other. Read from the source (`ast`), never imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("cluster", "serve", "jobs")


def imports(path: Path) -> set[str]:
    """Every raydiant module `path` imports, at any depth (a function's lazy import counts)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
        found |= {name for name in names if name.split(".")[0] in OURS}
    return found


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder, allowed", [
    ("cluster", ("cluster.",)),
    ("cluster/spec", ("cluster.spec.",)),
    ("serve", ("cluster.", "serve.")),
    ("jobs", ("cluster.", "jobs.")),
])
def test_each_package_imports_only_what_it_may(folder, allowed):
    wrong = {f"{path.relative_to(ROOT)}: {name}" for path in modules(folder) for name in imports(path)
             if not (name + ".").startswith(allowed)}
    assert not wrong, sorted(wrong)


def test_every_package_says_what_it_owns():
    packages = [init for folder in OURS for init in (ROOT / folder).rglob("__init__.py") if "static" not in init.parts]
    silent = [str(init.relative_to(ROOT)) for init in packages if not ast.get_docstring(ast.parse(init.read_text()))]
    assert not silent, silent

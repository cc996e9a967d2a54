"""producers.config builds the union of source kinds from producers/sources/*; the source
modules must not import it back (that circle was once worked around with imports inside
functions)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SOURCES = Path(__file__).resolve().parents[3] / "producers" / "sources"
MODULES = sorted(p for p in SOURCES.glob("*.py"))


def _imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(module, inside a function) of every ``import``/``from`` in a module."""
    found: list[tuple[str, bool]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom) and child.module:
                found.append((child.module, inside))
            elif isinstance(child, ast.Import):
                found.extend((alias.name, inside) for alias in child.names)
            walk(child, inside)

    walk(tree, False)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_source_modules_do_not_import_the_config_or_import_late(path: Path) -> None:
    imports = _imports(ast.parse(path.read_text(encoding="utf-8")))
    assert ("producers.config", False) not in imports
    assert ("producers.config", True) not in imports
    late = [module for module, inside in imports if inside and module.startswith("producers")]
    assert late == [], f"{path.name} imports {late} inside a function"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_each_source_module_imports_first_on_its_own(path: Path) -> None:
    module = f"producers.sources.{path.stem}"
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr

"""One direction between the alert lifecycle and delivery: ``pipeline.notify`` (apprise
channels, the notifier, the worker and CLI glue) uses ``pipeline.alerting`` (channels.yaml,
routing, grouping, templates, notification intents); ``pipeline.alerting`` never imports
``pipeline.notify``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ALERTING = Path(__file__).resolve().parents[3] / "pipeline" / "alerting"


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(ALERTING.glob("*.py")), ids=lambda p: p.name)
def test_alerting_does_not_import_notify(path: Path) -> None:
    back = sorted(
        m for m in _imported(path) if m == "pipeline.notify" or m.startswith("pipeline.notify.")
    )
    assert back == [], f"pipeline/alerting/{path.name} imports {back}"

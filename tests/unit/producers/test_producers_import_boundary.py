"""producers never pulls in faust or pipeline; producers.redact stays stdlib-only.

Each check runs in a fresh interpreter, so modules imported by other tests cannot hide a leak.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

EVERY_MODULE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    import producers
    names = sorted(m.name for m in pkgutil.walk_packages(producers.__path__, "producers."))
    for name in names:
        importlib.import_module(name)
    leaked = sorted(
        n for n in sys.modules
        if n.split(".")[0] in ("faust", "mode", "pipeline")
    )
    print(json.dumps({"imported": names, "leaked": leaked}))
    """
)

REDACT_ONLY = textwrap.dedent(
    """
    import json, sys
    before = set(sys.modules)
    import producers.redact
    new = sorted(
        n for n in set(sys.modules) - before
        if n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] != "producers"
    )
    print(json.dumps(new))
    """
)


def run_fresh(code: str) -> object:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_importing_every_producers_module_loads_no_faust_or_pipeline() -> None:
    report = run_fresh(EVERY_MODULE)
    assert isinstance(report, dict)
    assert {
        "producers.backoff",
        "producers.config",
        "producers.envelope",
        "producers.errors",
        "producers.redact",
        "producers.runner",
        "producers.settings",
        "producers.sink",
        "producers.simulators.aliunid",
        "producers.sources.aliunid",
        "producers.transports.websocket",
    } <= set(report["imported"])
    assert report["leaked"] == []


def test_redact_imports_only_the_standard_library() -> None:
    assert run_fresh(REDACT_ONLY) == []

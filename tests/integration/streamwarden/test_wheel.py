"""The built wheel carries the demo's example files; installed, the demo finds them anywhere.

Builds the wheel the way ``pip install .`` does (an isolated build: ~1 min, hence integration),
installs it without dependencies into a folder of its own, and asks that copy, from an unrelated
working directory, where its rules and channels are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import json, streamwarden, streamwarden.demo as demo
from pipeline.rules.loader import load_rules
from pipeline.alerting.config import load_config
rules = demo.default_rules_path()
print(json.dumps({
    "package": streamwarden.__file__,
    "rules": len(load_rules([rules])),
    "channels": sorted(load_config(demo.default_channels_path()).channels),
}))
"""


def test_installed_wheel_finds_its_examples_from_any_folder(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("streamwarden-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"streamwarden/examples/rules/{p.name}" for p in (ROOT / "rules").glob("*.yaml")}
    assert shipped <= names
    assert "streamwarden/examples/channels.yaml" in names

    target = tmp_path / "installed"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(target)
    assert found["rules"] >= len(shipped)
    assert found["channels"] == ["console"]

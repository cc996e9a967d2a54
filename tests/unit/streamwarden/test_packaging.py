"""The demo's example files ship inside the package and are found without the working directory."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.alerting.config import load_config
from pipeline.rules.loader import load_rules
from streamwarden.cli import main
from streamwarden.demo import default_channels_path, default_rules_path

ROOT = Path(__file__).resolve().parents[3]


def test_version_prints_the_installed_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"streamwarden, version {version('streamwarden')}"


def test_demo_defaults_load_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rules = load_rules([default_rules_path()])
    assert {r.match.source for r in rules} == {"aliunid", "element", "hemis", "nobil", "valtronics"}
    config = load_config(default_channels_path())
    assert "console" in config.channels
    assert tmp_path not in default_rules_path().resolve().parents


def test_the_example_rules_are_the_top_level_rules_folder() -> None:
    shipped = sorted(p.name for p in default_rules_path().glob("*.yaml"))
    assert shipped == sorted(p.name for p in (ROOT / "rules").glob("*.yaml"))
    assert shipped


def test_every_example_file_is_declared_package_data() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    patterns = package_data.get("streamwarden", []) + package_data.get("*", [])
    package = ROOT / "streamwarden"
    files = [*default_rules_path().glob("*.yaml"), default_channels_path()]
    for path in files:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative

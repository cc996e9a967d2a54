"""The command line: every command explains itself; rules check reports and exits right."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from streamwarden.cli import main

COMMANDS = [
    [],
    ["demo"],
    ["worker"],
    ["produce"],
    ["record"],
    ["simulate"],
    ["broker"],
    ["rules"],
    ["rules", "check"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "streamwarden")
def test_help_says_what_each_command_does(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    # The first paragraph of the docstring: a sentence, not just a usage line.
    description = result.output.split("\n\n")[1].strip()
    assert len(description) > 20, result.output


def test_rules_check_accepts_the_shipped_rules() -> None:
    rules_dir = Path(__file__).resolve().parents[3] / "rules"
    result = CliRunner().invoke(main, ["rules", "check", str(rules_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("rules OK")


def test_rules_check_reports_file_line_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n"
        "  - name: x\n"
        "    type: threshold\n"
        "    match: {metric: sys.kW}\n"
        "    condition: {op: '=>', value: 1}\n"
        "    severity: warning\n"
        "    summary: s\n"
        "    channels: [console, pager]\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["rules", "check", str(bad)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert any(line.startswith(f"{bad}:5: ") and "'=>'" in line for line in lines), result.output
    assert any(line.startswith(f"{bad}:") and "pager" in line for line in lines), result.output


def test_rules_check_uses_the_channels_file_for_channel_names(tmp_path: Path) -> None:
    rule = tmp_path / "r.yaml"
    rule.write_text(
        "rules:\n  - name: x\n    type: threshold\n    match: {metric: m}\n"
        "    condition: {op: '>', value: 1}\n    severity: info\n    summary: s\n    channels: [pager]\n",
        encoding="utf-8",
    )
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "channels:\n  pager:\n    url_env: PAGER_URL_NOT_NEEDED_FOR_CHECK\n", encoding="utf-8"
    )
    result = CliRunner().invoke(
        main, ["rules", "check", str(rule), "--channels-file", str(channels)]
    )
    assert result.exit_code == 0, result.output


def test_worker_without_bootstrap_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STREAMWARDEN_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv(
        "STREAMWARDEN_RULES_PATH", str(Path(__file__).resolve().parents[3] / "rules")
    )
    result = CliRunner().invoke(main, ["worker"])
    assert result.exit_code == 1
    assert "STREAMWARDEN_KAFKA_BOOTSTRAP is not set" in result.output


def test_produce_with_missing_secret_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        "sources:\n  - name: a\n    kind: aliunid\n    url: ws://127.0.0.1:1/x\n    api_key: ${SW_TEST_UNSET_KEY}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("STREAMWARDEN_SOURCES_FILE", str(sources))
    monkeypatch.setenv("STREAMWARDEN_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.delenv("SW_TEST_UNSET_KEY", raising=False)
    result = CliRunner().invoke(main, ["produce", "a"])
    assert result.exit_code == 1
    assert "SW_TEST_UNSET_KEY" in result.output
    assert "Traceback" not in result.output

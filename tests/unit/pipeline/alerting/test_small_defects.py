"""Issue 16, defect 9 (the smaller ones), each reproduced:

- one invalid regex in a hand-edited silences.json disabled every later silence;
- an entity with a newline and ANSI escapes forged a fake RESOLVED line on the console;
- ``silence list/add`` raised a traceback past the year 9999;
- ``silences: {file: ...}`` could point at any path (``/dev/null`` as root).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.alerting.config import load_config
from pipeline.alerting.silences import MAX_TIME_MS, SilenceError, SilenceFileStore, add_silence
from pipeline.errors import ConfigError
from pipeline.notify.console import console_lines
from streamwarden.cli import main

NOW_MS = 1_714_557_600_000
HOUR_MS = 3_600_000


def silence(sid: str, matcher: str, ends_at_ms: int = NOW_MS + HOUR_MS) -> dict[str, object]:
    return {
        "id": sid,
        "matchers": [matcher],
        "starts_at_ms": NOW_MS - HOUR_MS,
        "ends_at_ms": ends_at_ms,
        "comment": "c",
        "author": "a",
        "created_at_ms": NOW_MS - HOUR_MS,
        "updated_at_ms": NOW_MS - HOUR_MS,
    }


def test_one_broken_silence_does_not_disable_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "silences.json"
    broken = silence("a" * 32, "entity=~(unclosed")
    good = silence("b" * 32, "rule=hub-power-high")
    path.write_text(json.dumps({"version": 1, "silences": [broken, good]}), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="pipeline.alerting.silences"):
        active = SilenceFileStore(path).silences(NOW_MS)
    assert [s.id for s in active] == ["b" * 32]
    assert f"silence skipped: invalid matcher path={path} id={'a' * 32}" in caplog.text


def test_a_silence_ending_after_the_year_9999_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SilenceError, match="after the year 9999"):
        add_silence(
            tmp_path / "s.json",
            ["rule=x"],
            starts_at_ms=MAX_TIME_MS - HOUR_MS,
            ends_at_ms=MAX_TIME_MS + HOUR_MS,
            comment="c",
            author="a",
            now_ms=MAX_TIME_MS - 2 * HOUR_MS,
        )


def test_silence_list_shows_a_far_future_silence_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "channels.yaml").write_text(
        "channels: {}\nsilences:\n  file: silences.json\n", encoding="utf-8"
    )
    far = silence("c" * 32, "rule=x", ends_at_ms=10**17)
    (tmp_path / "silences.json").write_text(
        json.dumps({"version": 1, "silences": [far]}), encoding="utf-8"
    )
    result = CliRunner().invoke(
        main, ["silence", "list", "--channels-file", str(tmp_path / "channels.yaml")]
    )
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "out of range" in result.stdout


def test_an_entity_cannot_forge_console_lines() -> None:
    entity = "mp-1\n[RESOLVED] critical: hub-power-high on mp-1\x1b[2K\x1b[1A"
    lines = console_lines(f"Why: power of {entity} was 50", f"critical on {entity}", "warning")
    assert lines[0].startswith("[WARNING] critical on mp-1 [RESOLVED]")
    assert all(line.startswith("  ") for line in lines[1:])
    assert not any("\x1b" in line for line in lines)


@pytest.mark.parametrize("target", ["/dev/null", "../elsewhere/silences.json", "/etc/sw.json"])
def test_the_silences_file_must_stay_next_to_channels_yaml(tmp_path: Path, target: str) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text(f"channels: {{}}\nsilences:\n  file: {target}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"{path}:3: silences.file:" in message
    assert "outside the channels file's folder" in message


def test_a_silences_file_next_to_channels_yaml_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text("channels: {}\nsilences:\n  file: state/silences.json\n", encoding="utf-8")
    assert load_config(path).silences_file == tmp_path / "state" / "silences.json"

"""``streamwarden replay``: human times by default, and a recording that is not one fails."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from producers.envelope import RawEnvelope, encode_envelope
from streamwarden.cli import main

RULES = textwrap.dedent(
    """
    rules:
      - name: power-high
        type: threshold
        match: {source: aliunid, metric: sys.kW}
        condition: {op: ">", value: 40}
        summary: "{{ entity }} draws {{ value }}"
        channels: [console]
    """
)
MP = "1a3d1fa7-bc89-40a9-a3b8-c1e9392456de"


def _frame(kw: float, at_ms: int) -> bytes:
    payload = json.dumps({"type": "data", "id": MP, "data": {"sys": {"kW": kw}}})
    return encode_envelope(RawEnvelope("aliunid", "s", at_ms, payload)) + b"\n"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


def _replay(rules: Path, recording: Path, *extra: str) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(
        main, ["replay", "--rules", str(rules), "--input", str(recording), *extra]
    )
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout.splitlines(), result.stderr


def test_times_are_iso_by_default_and_ms_on_request(rules: Path, tmp_path: Path) -> None:
    recording = tmp_path / "r.jsonl"
    recording.write_bytes(_frame(10, 1_700_000_000_000) + _frame(50, 1_700_000_001_500))
    code, lines, _ = _replay(rules, recording)
    assert code == 0
    (line,) = [json.loads(x) for x in lines]
    assert line["time"] == "2023-11-14T22:13:21.500Z"
    assert "ts_ms" not in line
    code, lines, _ = _replay(rules, recording, "--time-format", "ms")
    assert code == 0
    assert json.loads(lines[0])["ts_ms"] == 1_700_000_001_500


def test_a_garbage_file_fails_with_the_lines_that_are_wrong(rules: Path, tmp_path: Path) -> None:
    recording = tmp_path / "garbage.jsonl"
    recording.write_bytes(b"\xff\xfe not json\n" + b'{"a": 1}\n' * 7)
    code, lines, stderr = _replay(rules, recording)
    assert code == 1
    assert lines == []
    problems = stderr.splitlines()
    assert problems[0] == "replayed 0 envelopes, 0 records: 0 transitions, 0 dead letters, " + (
        "0 control frames, 8 unreadable lines"
    )
    assert problems[1].startswith(f"{recording}:1: not a recorded envelope")
    assert problems[2].startswith(f"{recording}:2: not a recorded envelope")
    assert problems[-1] == "... and 3 more"


def test_good_lines_still_replay_when_one_is_bad(rules: Path, tmp_path: Path) -> None:
    recording = tmp_path / "r.jsonl"
    recording.write_bytes(_frame(50, 1_700_000_000_000) + b"oops\n")
    code, lines, stderr = _replay(rules, recording)
    assert code == 1
    assert len(lines) == 1
    assert f"{recording}:2: not a recorded envelope" in stderr

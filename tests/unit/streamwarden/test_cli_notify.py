"""``streamwarden notify preview|test`` and ``streamwarden silence add|list|expire``.

Every command explains itself, prints exactly what it says, and turns every user error into
exit code 1 with one ``error: ...`` line per problem (never a traceback, never a URL).
Silence times come from a fixed clock (``cli_notify._now_ms``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline.alerting.silences import list_silences
from pipeline.errors import NotifyError
from pipeline.notify.tools import preview
from streamwarden import cli_notify
from streamwarden.cli import main
from tests.support.secrets import register_secret

NOW_MS = 1_714_557_600_000  # 2024-05-01T10:00:00Z
HOUR_MS = 3_600_000
SECRET = register_secret("s3cr3t-t0ken")

RULES = """\
rules:
  - name: hub-power-high
    type: threshold
    match: {source: aliunid, metric: sys.kW, entity: "mp-*"}
    condition: {op: ">", value: 40}
    severity: critical
    summary: "{{ entity }} draws {{ value }} kW"
    channels: [hook]
"""

CHANNELS = """\
channels:
  hook:
    url_env: SW_TEST_HOOK_URL
  pager:
    url_file: pager.url
    send_resolved: false
    format: markdown
routes:
  - match: ["severity=critical"]
    channels: [pager]
silences:
  file: silences.json
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STREAMWARDEN_CHANNELS_FILE", "STREAMWARDEN_RULES_PATH", "SW_TEST_HOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setattr(cli_notify, "_now_ms", lambda: NOW_MS)


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


@pytest.fixture
def channels_file(tmp_path: Path) -> Path:
    path = tmp_path / "channels.yaml"
    path.write_text(CHANNELS, encoding="utf-8")
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def errors_of(result: Result) -> list[str]:
    """The error lines, after checking the failure has the promised shape."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), result.stderr
    return [line.removeprefix("error: ") for line in lines]


# --- help -------------------------------------------------------------------------------------

COMMANDS = [
    ["notify"],
    ["notify", "preview"],
    ["notify", "test"],
    ["silence"],
    ["silence", "add"],
    ["silence", "list"],
    ["silence", "expire"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_says_what_each_command_does(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    description = result.output.split("\n\n")[1].strip()
    assert len(description) > 30, result.output


def test_top_level_help_lists_both_groups() -> None:
    listed = run("--help").output
    assert re.search(r"^\s+notify\s+\S", listed, re.MULTILINE), listed
    assert re.search(r"^\s+silence\s+\S", listed, re.MULTILINE), listed


# --- notify preview ---------------------------------------------------------------------------


def _blocks(rendered: list[tuple[str, str, str]]) -> str:
    """The promised layout: a header per channel, the title, the body indented by two."""
    blocks = []
    for channel, title, body in rendered:
        lines = [f"== {channel} ==", f"title: {title}", "body:"]
        lines += [f"  {line}" if line else "" for line in body.splitlines()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def test_preview_prints_every_routed_channel_in_order(
    rules_file: Path, channels_file: Path
) -> None:
    result = run(
        "notify", "preview", "--rule", "hub-power-high",
        "--rules", str(rules_file), "--channels-file", str(channels_file),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rendered = preview(
        "hub-power-high", rules_paths=[rules_file], channels_file=channels_file, env={}
    )
    assert [c for c, _t, _b in rendered] == ["hook", "pager"]  # the rule's, then the route's
    assert result.stdout == _blocks(rendered)
    assert result.stdout.startswith(
        "== hook ==\ntitle: [FIRING] critical: hub-power-high on mp-1\nbody:\n"
        "  mp-1 draws 44.0 kW\n"
    )
    assert "\n\n== pager ==\ntitle: [FIRING] critical: hub-power-high on mp-1\n" in result.stdout
    assert "**hub-power-high**" in result.stdout  # the pager's markdown format
    assert result.stderr == ""


def test_preview_resolved_with_entity_and_value_skips_send_resolved_false(
    rules_file: Path, channels_file: Path
) -> None:
    result = run(
        "notify", "preview", "--rule", "hub-power-high", "--rules", str(rules_file),
        "--channels-file", str(channels_file), "--state", "resolved",
        "--entity", "mp-9", "--value", "12.5",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "== pager ==" not in result.stdout
    assert result.stdout.startswith(
        "== hook ==\ntitle: [RESOLVED] critical: hub-power-high on mp-9\nbody:\n"
        "  mp-9 draws 12.5 kW\n"
    )


def test_preview_says_when_no_channel_receives_it(tmp_path: Path, rules_file: Path) -> None:
    channels = tmp_path / "quiet.yaml"
    channels.write_text(
        "channels:\n  hook:\n    url_env: SW_TEST_HOOK_URL\n    send_resolved: false\n",
        encoding="utf-8",
    )
    result = run(
        "notify", "preview", "--rule", "hub-power-high", "--rules", str(rules_file),
        "--channels-file", str(channels), "--state", "resolved",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "no channel receives the resolved notification of hub-power-high\n"


def test_preview_reads_rules_and_channels_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, rules_file: Path, channels_file: Path
) -> None:
    monkeypatch.setenv("STREAMWARDEN_RULES_PATH", str(rules_file))
    monkeypatch.setenv("STREAMWARDEN_CHANNELS_FILE", str(channels_file))
    result = run("notify", "preview", "--rule", "hub-power-high")
    assert result.exit_code == 0, result.output
    assert re.findall(r"^== (\S+) ==$", result.stdout, re.MULTILINE) == ["hook", "pager"]


def test_preview_defaults_to_the_rules_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        RULES.replace("[hook]", "[console]"), encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    result = run("notify", "preview", "--rule", "hub-power-high")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("== console ==\ntitle: [FIRING] critical: hub-power-high")


def test_preview_never_prints_the_channel_url(
    monkeypatch: pytest.MonkeyPatch, rules_file: Path, channels_file: Path
) -> None:
    monkeypatch.setenv("SW_TEST_HOOK_URL", f"json://127.0.0.1:9/{SECRET}")
    (channels_file.parent / "pager.url").write_text(f"slack://{SECRET}/B/C\n", encoding="utf-8")
    result = run(
        "notify", "preview", "--rule", "hub-power-high",
        "--rules", str(rules_file), "--channels-file", str(channels_file),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "== pager ==" in result.stdout
    assert SECRET not in result.output


def test_preview_of_an_unknown_rule_lists_the_known_ones(
    rules_file: Path, channels_file: Path
) -> None:
    result = run(
        "notify", "preview", "--rule", "nope",
        "--rules", str(rules_file), "--channels-file", str(channels_file),
    )  # fmt: skip
    assert errors_of(result) == ["no rule named 'nope'; known rules are hub-power-high"]


def test_preview_with_a_missing_channels_file(tmp_path: Path, rules_file: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = run(
        "notify", "preview", "--rule", "hub-power-high",
        "--rules", str(rules_file), "--channels-file", str(missing),
    )  # fmt: skip
    assert errors_of(result) == [f"{missing}: cannot read channels file: No such file or directory"]


def test_preview_with_a_missing_rules_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("notify", "preview", "--rule", "x", "--rules", "gone.yaml")
    assert errors_of(result) == [
        "rules path 'gone.yaml' does not exist; pass --rules PATH or set STREAMWARDEN_RULES_PATH"
    ]


def test_preview_reports_every_rule_problem_with_file_and_line(
    tmp_path: Path, channels_file: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        RULES.replace('op: ">"', 'op: "=>"').replace("[hook]", "[hook, nowhere]"),
        encoding="utf-8",
    )
    result = run(
        "notify", "preview", "--rule", "hub-power-high",
        "--rules", str(bad), "--channels-file", str(channels_file),
    )  # fmt: skip
    problems = errors_of(result)
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{bad}:5: ") and "'=>'" in problems[0]
    assert problems[1].startswith(f"{bad}:8: ") and "nowhere" in problems[1]


def test_preview_reports_every_channels_file_problem(tmp_path: Path, rules_file: Path) -> None:
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "channels:\n  hook:\n    url_env: X\n    colour: red\nroutes:\n"
        "  - match: ['severity']\n    channels: [hook]\n",
        encoding="utf-8",
    )
    result = run(
        "notify", "preview", "--rule", "hub-power-high",
        "--rules", str(rules_file), "--channels-file", str(channels),
    )  # fmt: skip
    problems = errors_of(result)
    assert [p.split(": ")[0] for p in problems] == [f"{channels}:4", f"{channels}:6"], problems


# --- notify test ------------------------------------------------------------------------------


def test_notify_test_delivers_to_the_builtin_console() -> None:
    result = run("notify", "test", "console")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("delivered to console\n")
    assert "[INFO] [TEST] StreamWarden test notification to console" in result.stdout


def test_notify_test_without_a_channels_file_knows_only_console() -> None:
    assert errors_of(run("notify", "test", "hook")) == [
        "unknown channel 'hook': no channels file given, so only the built-in console channel "
        "exists; pass --channels-file or set STREAMWARDEN_CHANNELS_FILE"
    ]


def test_notify_test_of_an_unknown_channel(channels_file: Path) -> None:
    result = run("notify", "test", "pagr", "--channels-file", str(channels_file))
    assert errors_of(result) == ["unknown channel 'pagr'; known channels are console, hook, pager"]


def test_notify_test_names_the_unset_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    channels = tmp_path / "channels.yaml"
    channels.write_text("channels:\n  hook:\n    url_env: SW_TEST_HOOK_URL\n", encoding="utf-8")
    monkeypatch.setenv("STREAMWARDEN_CHANNELS_FILE", str(channels))
    assert errors_of(run("notify", "test", "hook")) == [
        f"{channels}:2: channel 'hook': environment variable SW_TEST_HOOK_URL is not set; "
        "set it to the channel's apprise URL"
    ]


def test_notify_test_with_a_url_apprise_cannot_load_hides_the_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    channels = tmp_path / "channels.yaml"
    channels.write_text("channels:\n  hook:\n    url_env: SW_TEST_HOOK_URL\n", encoding="utf-8")
    monkeypatch.setenv("SW_TEST_HOOK_URL", f"nosuchscheme://{SECRET}@example.com/")
    result = run("notify", "test", "hook", "--channels-file", str(channels))
    problems = errors_of(result)
    assert len(problems) == 1 and "apprise cannot load its URL" in problems[0], problems
    assert SECRET not in result.output


@pytest.mark.parametrize(
    ("retryable", "expected"),
    [
        (False, "not delivered to hook: apprise reported failure, HTTP 401 (permanent)"),
        (True, "not delivered to hook: apprise reported failure, HTTP 401 (retryable)"),
    ],
)
def test_notify_test_reports_an_undelivered_notification_with_its_kind(
    monkeypatch: pytest.MonkeyPatch, channels_file: Path, retryable: bool, expected: str
) -> None:
    def refuse(channel: str, **_kwargs: object) -> None:
        raise NotifyError(channel, "apprise reported failure, HTTP 401", retryable=retryable)

    monkeypatch.setattr("pipeline.notify.tools.send_test", refuse)
    result = run("notify", "test", "hook", "--channels-file", str(channels_file))
    assert errors_of(result) == [expected]


# --- silence: configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["add", "rule=x", "--duration", "1h", "--comment", "c"], ["list"], ["expire", "abcd"]],
    ids=lambda c: c[0],
)
def test_silence_commands_need_a_channels_file(command: list[str]) -> None:
    assert errors_of(run("silence", *command)) == [
        "no channels file given; pass --channels-file or set STREAMWARDEN_CHANNELS_FILE to a "
        "channels file with 'silences: {file: silences.json}'"
    ]


def test_silence_commands_need_a_silences_file_in_it(tmp_path: Path) -> None:
    channels = tmp_path / "channels.yaml"
    channels.write_text("channels:\n  hook:\n    url_env: X\n", encoding="utf-8")
    result = run("silence", "list", "--channels-file", str(channels))
    assert errors_of(result) == [
        f"{channels}: no silences file configured; add 'silences: {{file: silences.json}}'"
    ]


def test_silence_commands_with_a_missing_channels_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMWARDEN_CHANNELS_FILE", str(tmp_path / "gone.yaml"))
    assert errors_of(run("silence", "list")) == [
        f"{tmp_path / 'gone.yaml'}: cannot read channels file: No such file or directory"
    ]


# --- silence add ------------------------------------------------------------------------------


@pytest.fixture
def silences(monkeypatch: pytest.MonkeyPatch, channels_file: Path) -> Path:
    """The silences file, with STREAMWARDEN_CHANNELS_FILE naming the channels file."""
    monkeypatch.setenv("STREAMWARDEN_CHANNELS_FILE", str(channels_file))
    return channels_file.parent / "silences.json"


def add(*args: str) -> str:
    result = run("silence", "add", *args)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"[0-9a-f]{32}\n", result.stdout), result.stdout
    return result.stdout.strip()


def test_add_with_a_duration_starts_now_and_prints_only_the_id(silences: Path) -> None:
    result = run(
        "silence", "add", "rule=hub-power-high", "entity=~mp-.*",
        "--duration", "2h", "--comment", "hub maintenance",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (stored, state), = list_silences(silences, now_ms=NOW_MS)  # fmt: skip
    assert result.stdout == f"{stored.id}\n"
    assert result.stderr == (
        "silence active from 2024-05-01T10:00:00Z until 2024-05-01T12:00:00Z: "
        "rule=hub-power-high, entity=~mp-.*\n"
    )
    assert state == "active"
    assert stored.matchers == ("rule=hub-power-high", "entity=~mp-.*")
    assert (stored.starts_at_ms, stored.ends_at_ms) == (NOW_MS, NOW_MS + 2 * HOUR_MS)
    assert (stored.comment, stored.author) == ("hub maintenance", "alice")


def test_add_with_starts_and_until_in_any_zone(silences: Path) -> None:
    silence_id = add(
        "severity=warning", "--starts", "2024-05-02T08:00:00+02:00",
        "--until", "2024-05-02T09:30Z", "--comment", "deploy", "--author", "bob",
    )  # fmt: skip
    (stored, state), = list_silences(silences, now_ms=NOW_MS)  # fmt: skip
    assert stored.id == silence_id and state == "pending"
    assert stored.starts_at_ms == NOW_MS + 20 * HOUR_MS  # 06:00Z on the next day
    assert stored.ends_at_ms == NOW_MS + 23 * HOUR_MS + HOUR_MS // 2
    assert stored.author == "bob"


def test_add_with_starts_and_duration(silences: Path) -> None:
    add("rule=x", "--starts", "2024-05-01T11:00Z", "--duration", "1h30m", "--comment", "c")
    (stored, _state), = list_silences(silences, now_ms=NOW_MS)  # fmt: skip
    assert (stored.starts_at_ms, stored.ends_at_ms) == (
        NOW_MS + HOUR_MS,
        NOW_MS + 5_400_000 + HOUR_MS,
    )


def test_add_reports_every_problem_at_once_and_writes_nothing(silences: Path) -> None:
    result = run("silence", "add", "rule=x", "severity", "team=~(", "--duration", "2 hours")
    assert errors_of(result) == [
        "--duration '2 hours' is not a duration; use forms like 30s, 5m, 1h, 1h30m, 500ms, 2d",
        "'severity' has no operator; use forms like label=value, label!=value, label=~regex, "
        "label!~regex",
        "'team=~(': invalid regex: missing ), unterminated subpattern at position 0",
        "a comment is required: say why the alerts are silenced (--comment TEXT)",
    ]
    assert not silences.exists()


def test_add_without_matchers(silences: Path) -> None:
    expected = "give at least one matcher, such as rule=ev-charger-offline"
    assert errors_of(run("silence", "add", "--duration", "1h", "--comment", "c")) == [expected]
    assert errors_of(run("silence", "add", "--duration", "1x", "--comment", "c")) == [
        "--duration '1x' is not a duration; use forms like 30s, 5m, 1h, 1h30m, 500ms, 2d",
        expected,
    ]
    assert not silences.exists()


def test_add_reports_a_bad_matcher_when_the_times_are_fine(silences: Path) -> None:
    result = run("silence", "add", "=x", "--duration", "1h", "--comment", "c")
    assert errors_of(result) == [
        "'=x' does not start with a label name; use forms like label=value, label!=value, "
        "label=~regex, label!~regex"
    ]
    assert not silences.exists()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], ["give --duration (such as 2h) or --until (an ISO 8601 time)"]),
        (
            ["--duration", "1h", "--until", "2024-05-01T12:00Z"],
            ["give --duration or --until, not both"],
        ),
        (
            ["--until", "2024-05-01T12:00"],
            ["--until '2024-05-01T12:00' has no time zone; add Z for UTC or an offset like +02:00"],
        ),
        (
            ["--until", "tomorrow", "--starts", "now"],
            [
                "--starts 'now' is not an ISO 8601 time; use forms like 2024-05-01T10:00:00Z, "
                "2024-05-01T12:00+02:00",
                "--until 'tomorrow' is not an ISO 8601 time; use forms like 2024-05-01T10:00:00Z, "
                "2024-05-01T12:00+02:00",
            ],
        ),
        (
            ["--starts", "2024-05-01T08:00Z", "--until", "2024-05-01T09:00Z"],
            ["the end is in the past; a silence must end in the future"],
        ),
        (
            ["--until", "2024-05-01T09:00Z"],
            ["the end must be after the start (now: no --starts given)"],
        ),
        (
            ["--starts", "2024-05-01T11:00Z", "--duration", "0s"],
            ["the end must be after the start"],
        ),
        (["--duration", "400d"], ["a silence may last at most 366 days"]),
    ],
    ids=["no-end", "both-ends", "naive", "unparsable", "past", "before-now", "empty", "too-long"],
)
def test_add_rejects_bad_times(silences: Path, options: list[str], expected: list[str]) -> None:
    result = run("silence", "add", "rule=x", "--comment", "c", *options)
    assert errors_of(result) == expected
    assert not silences.exists()


def test_add_without_an_author_says_how_to_give_one(
    monkeypatch: pytest.MonkeyPatch, silences: Path
) -> None:
    monkeypatch.delenv("USER")
    result = run("silence", "add", "rule=x", "--duration", "1h", "--comment", "c")
    assert errors_of(result) == ["an author is required; pass --author NAME ($USER is not set)"]
    result = run("silence", "add", "rule=x", "--duration", "1h", "--comment", " ", "--author", "")
    assert errors_of(result) == [
        "a comment is required: say why the alerts are silenced (--comment TEXT)",
        "an author is required; pass --author NAME",
    ]
    assert not silences.exists()


# --- silence list -----------------------------------------------------------------------------


def _at(monkeypatch: pytest.MonkeyPatch, now_ms: int) -> None:
    monkeypatch.setattr(cli_notify, "_now_ms", lambda: now_ms)


def test_list_table_shows_state_times_and_unique_short_ids(
    monkeypatch: pytest.MonkeyPatch, silences: Path
) -> None:
    _at(monkeypatch, NOW_MS - 2 * HOUR_MS)
    old = add("rule=old", "--duration", "1h", "--comment", "done already", "--author", "carol")
    _at(monkeypatch, NOW_MS)
    active = add(
        "rule=hub-power-high", "entity=EV hub", "--duration", "2h", "--comment", "two\nlines"
    )
    pending = add(
        "severity=warning", "--starts", "2024-05-02T06:00Z", "--duration", "1d",
        "--comment", "weekend", "--author", "bob",
    )  # fmt: skip
    result = run("silence", "list")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "ID        STATE    MATCHERS                            STARTS                "
        "ENDS                  AUTHOR  COMMENT\n"
        f"{active[:8]}  active   rule=hub-power-high, entity=EV hub  2024-05-01T10:00:00Z  "
        "2024-05-01T12:00:00Z  alice   two lines\n"
        f"{pending[:8]}  pending  severity=warning                    2024-05-02T06:00:00Z  "
        "2024-05-03T06:00:00Z  bob     weekend\n"
    )
    everything = run("silence", "list", "--all")
    assert everything.exit_code == 0, everything.output
    rows = everything.stdout.splitlines()
    assert [row.split()[:2] for row in rows[1:]] == [
        [old[:8], "expired"],
        [active[:8], "active"],
        [pending[:8], "pending"],
    ]
    assert rows[1].endswith("carol   done already")


def test_list_json_has_full_ids_and_both_time_forms(
    monkeypatch: pytest.MonkeyPatch, silences: Path
) -> None:
    silence_id = add("rule=x", "--duration", "30m", "--comment", "c")
    result = run("silence", "list", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "id": silence_id,
            "state": "active",
            "matchers": ["rule=x"],
            "starts_at": "2024-05-01T10:00:00Z",
            "ends_at": "2024-05-01T10:30:00Z",
            "starts_at_ms": NOW_MS,
            "ends_at_ms": NOW_MS + HOUR_MS // 2,
            "author": "alice",
            "comment": "c",
            "created_at_ms": NOW_MS,
            "updated_at_ms": NOW_MS,
        }
    ]
    _at(monkeypatch, NOW_MS + HOUR_MS)
    assert json.loads(run("silence", "list", "--json").stdout) == []
    assert [s["state"] for s in json.loads(run("silence", "list", "--json", "--all").stdout)] == [
        "expired"
    ]


def test_list_when_there_is_nothing_to_show(silences: Path) -> None:
    assert run("silence", "list").stdout == "no active or pending silences\n"
    assert run("silence", "list", "--all").stdout == "no silences\n"
    assert json.loads(run("silence", "list", "--json").stdout) == []
    assert not silences.exists()  # listing never creates the file


def test_list_of_a_corrupt_silences_file(silences: Path) -> None:
    silences.write_text("{not json", encoding="utf-8")
    problems = errors_of(run("silence", "list"))
    assert len(problems) == 1 and problems[0].startswith(f"{silences}: not a silences file: ")


def _stored(silence_id: str) -> dict[str, object]:
    return {
        "id": silence_id,
        "matchers": ["rule=x"],
        "starts_at_ms": NOW_MS,
        "ends_at_ms": NOW_MS + HOUR_MS,
        "comment": "c",
        "author": "a",
        "created_at_ms": NOW_MS,
        "updated_at_ms": NOW_MS,
    }


@pytest.fixture
def twins(silences: Path) -> tuple[str, str]:
    """Two silences whose ids share their first 9 characters."""
    first, second = "abcdef0123" + "0" * 22, "abcdef0124" + "1" * 22
    silences.write_text(
        json.dumps({"version": 1, "silences": [_stored(first), _stored(second)]}),
        encoding="utf-8",
    )
    return first, second


def test_list_lengthens_short_ids_until_they_are_unique(twins: tuple[str, str]) -> None:
    rows = run("silence", "list").stdout.splitlines()
    assert [row.split()[0] for row in rows] == ["ID", "abcdef0123", "abcdef0124"]


# --- silence expire ---------------------------------------------------------------------------


def test_expire_by_prefix_ends_it_now(monkeypatch: pytest.MonkeyPatch, silences: Path) -> None:
    silence_id = add("rule=x", "--duration", "2h", "--comment", "c")
    _at(monkeypatch, NOW_MS + 60_000)
    result = run("silence", "expire", silence_id[:6].upper())
    assert result.exit_code == 0, result.output
    assert result.stdout == f"expired silence {silence_id}\n"
    (stored, state), = list_silences(silences, now_ms=NOW_MS + 60_000, include_expired=True)  # fmt: skip
    assert (state, stored.ends_at_ms) == ("expired", NOW_MS + 60_000)
    assert run("silence", "list").stdout == "no active or pending silences\n"
    assert errors_of(run("silence", "expire", silence_id)) == [
        f"silence {silence_id} already expired"
    ]


def test_expire_a_pending_silence_so_it_never_starts(silences: Path) -> None:
    silence_id = add(
        "rule=x", "--starts", "2024-06-01T00:00Z", "--duration", "1h", "--comment", "c"
    )
    assert run("silence", "expire", silence_id).exit_code == 0
    assert run("silence", "list", "--json").stdout == "[]\n"


def test_expire_an_ambiguous_prefix(twins: tuple[str, str]) -> None:
    assert errors_of(run("silence", "expire", "abcdef012")) == [
        "2 silences have an id starting with 'abcdef012'; give more characters"
    ]
    assert run("silence", "expire", "abcdef0124").stdout == f"expired silence {twins[1]}\n"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ffff", "no silence has an id starting with 'ffff'"),
        ("ab", "silence id 'ab' is too short; give at least 4 characters"),
    ],
)
def test_expire_an_unknown_or_too_short_id(
    twins: tuple[str, str], given: str, expected: str
) -> None:
    assert errors_of(run("silence", "expire", given)) == [expected]


def test_notify_test_needs_only_the_tested_channels_secret(tmp_path: Path) -> None:
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "channels:\n"
        "  hook:\n    url_env: SW_TEST_HOOK_URL\n"
        "  other:\n    url_env: SW_TEST_OTHER_URL_NOT_SET\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        main,
        ["notify", "test", "hook", "--channels-file", str(channels)],
        env={"SW_TEST_HOOK_URL": "null://", "SW_TEST_OTHER_URL_NOT_SET": ""},
    )
    assert result.exit_code == 0, result.output
    assert "delivered to hook" in result.output
    assert "SW_TEST_OTHER_URL_NOT_SET" not in result.output

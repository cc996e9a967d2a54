"""channels.yaml: the schema, every problem at once with file and line, names cross-checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.alerting.config import AlertingConfig, format_for_url, load_config
from pipeline.errors import ConfigError

FULL = """\
channels:
  ops-email:
    url_env: OPS_EMAIL
    format: html
    send_resolved: false
    rate_limit: {max: 20, per: 1h}
    templates:
      title: "{{ alert.rule }} is {{ alert.state }}"
      body_file: ops.html.j2
  team-slack:
    url_file: secrets/slack_url
defaults:
  group_wait: 10s
  repeat_interval: 12h
routes:
  - name: critical
    match: ["severity=critical", "team=~energy|grid"]
    channels: [team-slack]
    group_by: [rule, entity]
    continue: true
  - match: ["severity=~warning|critical"]
    channels: [ops-email]
    mute_windows: [nights]
mute_windows:
  nights: {time_zone: Europe/Zurich, days: [mon-fri], hours: ["22:00-06:00"]}
inhibit_rules:
  - source: ["severity=critical"]
    target: ["severity=warning"]
    equal: [entity]
silences:
  file: state/silences.json
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "channels.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_full_file_compiles(tmp_path: Path) -> None:
    (tmp_path / "ops.html.j2").write_text("<p>{{ alert.summary }}</p>", encoding="utf-8")
    config = load_config(_write(tmp_path, FULL))
    email = config.channel("ops-email")
    assert (email.format, email.send_resolved, email.rate_limit) == ("html", False, (20, 3_600_000))
    assert email.body_template == "<p>{{ alert.summary }}</p>"
    assert config.channel("team-slack").format is None
    assert set(config.channels) == {"console", "ops-email", "team-slack"}
    critical, second = config.routes
    assert critical.name == "critical" and critical.continue_
    assert critical.timing.group_by == ("rule", "entity")
    assert critical.timing.group_wait_ms == 10_000  # from defaults
    assert critical.timing.repeat_interval_ms == 12 * 3_600_000
    assert second.name == "routes[1]" and second.timing.mute_windows == ("nights",)
    assert config.defaults.group_by == ("fingerprint",)
    assert config.inhibit_rules[0].equal == ("entity",)
    assert config.silences_file == tmp_path / "state" / "silences.json"
    assert config.lines == {"ops-email": 2, "team-slack": 10}


def test_no_file_and_empty_file_mean_console_only(tmp_path: Path) -> None:
    assert set(load_config(None).channels) == {"console"}
    assert set(load_config(_write(tmp_path, "")).channels) == {"console"}
    assert AlertingConfig.builtin().routes == ()


BAD = """\
channels:
  a: {url_env: A, url_file: /x}
  console: {url_env: X}
  d:
    url_env: D
    format: rtf
    send_resolved: "yes"
    rate_limit: {max: 0, per: 5 minutes}
    templates:
      title: "{{ ''.__class__ }}"
      body: "{% for x in %}"
      body_file: nope.j2
defaults:
  group_wait: soon
  mute_windows: [nope]
routes:
  - match: ["sev=~(", "novalue"]
    channels: [zzz]
    colour: red
mute_windows:
  w: {time_zone: Mars/Olympus, days: [funday], hours: ["25:00-01:00"]}
inhibit_rules:
  - source: []
    target: ["a=b"]
    equal: ["bad label"]
extra: 1
"""


def test_every_problem_is_reported_with_file_line_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, BAD)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).splitlines() == [
        f"{path}:{line}: {message}"
        for line, message in [
            (2, "channels.a: set exactly one of url_env (a variable name) or url_file (a path)"),
            (3, "channels.console: the console channel is built in; choose another name"),
            (6, "channels.d.format: 'rtf' is not a valid format; use one of text, markdown, html"),
            (7, "channels.d.send_resolved: 'yes' is not true or false; write true or false"),
            (8, "channels.d.rate_limit.max: 0 is too small; use at least 1"),
            (
                8,
                "channels.d.rate_limit.per: '5 minutes' is not a duration; use forms like 30s, 5m, 1h, 1h30m, 500ms, 2d",
            ),
            (9, "channels.d.templates: set body or body_file, not both"),
            (
                10,
                "channels.d.templates.title: refused by the template sandbox: access to attribute '__class__' of 'str' object is unsafe; fix the template",
            ),
            (
                11,
                "channels.d.templates.body: template syntax error: Expected an expression, got 'end of statement block' (template line 1); fix the template",
            ),
            (
                12,
                f"channels.d.templates.body_file: cannot read {tmp_path / 'nope.j2'}: No such file or directory",
            ),
            (
                14,
                "defaults.group_wait: 'soon' is not a duration; use forms like 30s, 5m, 1h, 1h30m, 500ms, 2d",
            ),
            (15, "defaults.mute_windows[0]: unknown mute window 'nope'; known mute windows are w"),
            (
                17,
                "routes[0].match[0]: 'sev=~(': invalid regex: missing ), unterminated subpattern at position 0",
            ),
            (
                17,
                "routes[0].match[1]: 'novalue' has no operator; use forms like label=value, label!=value, label=~regex, label!~regex",
            ),
            (18, "routes[0].channels[0]: unknown channel 'zzz'; known channels are a, console, d"),
            (
                19,
                "routes[0].colour: unknown key; allowed keys are channels, continue, group_by, group_interval, group_wait, match, mute_windows, name, repeat_interval",
            ),
            (
                21,
                "mute_windows.w.time_zone: 'Mars/Olympus' is not an IANA time zone; use names like Europe/Zurich, UTC",
            ),
            (
                21,
                "mute_windows.w.days[0]: 'funday' is not a day; use mon, tue, wed, thu, fri, sat, sun; ranges like mon-fri are allowed",
            ),
            (
                21,
                "mute_windows.w.hours[0]: '25:00-01:00' is not a time range; write HH:MM-HH:MM such as 22:00-06:00",
            ),
            (23, "inhibit_rules[0].source: must have at least 1 item"),
            (
                25,
                "inhibit_rules[0].equal[0]: 'bad label' is not a label name; use letters, digits, '_', '.' and '-', starting with a letter or '_'",
            ),
            (
                26,
                "extra: unknown key; allowed keys are channels, defaults, inhibit_rules, mute_windows, routes, silences, watchdog",
            ),
        ]
    ]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "channels:\n  a: [\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: invalid YAML"):
        load_config(path)


def test_not_a_mapping_and_bad_channel_names(tmp_path: Path) -> None:
    path = _write(tmp_path, "- a\n")
    with pytest.raises(ConfigError, match=r":1: expected a mapping with a 'channels' key"):
        load_config(path)
    path = _write(tmp_path, "channels:\n  'bad name': {url_env: X}\n")
    with pytest.raises(
        ConfigError, match=r":2: channels.bad name: 'bad name' is not a channel name"
    ):
        load_config(path)


def test_aliases_are_refused_like_in_rule_files(tmp_path: Path) -> None:
    path = _write(tmp_path, "channels:\n  a: &x {url_env: A}\n  b: *x\n")
    with pytest.raises(ConfigError, match=r":2: YAML anchor '&x' is not allowed"):
        load_config(path)


@pytest.mark.parametrize(
    ("url", "fmt"),
    [
        ("mailto://u:p@example.com", "html"),
        ("MAILTOS://u:p@example.com", "html"),
        ("slack://a/b/c", "markdown"),
        ("tgram://123:abc/456", "markdown"),
        ("json://127.0.0.1/hook", "text"),
        ("not a url", "text"),
    ],
)
def test_format_follows_the_url_scheme(url: str, fmt: str) -> None:
    assert format_for_url(url) == fmt

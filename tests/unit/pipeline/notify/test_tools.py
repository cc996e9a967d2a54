"""Helpers for the command line: preview per channel, sample alerts, the silences file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.alerting.config import load_config
from pipeline.alerting.silences import SilenceFileStore
from pipeline.errors import ConfigError
from pipeline.notify.channels import load_channels_from
from pipeline.notify.tools import build_dispatcher, preview, sample_alert, silences_path
from pipeline.rules.loader import load_rules

RULES = """\
rules:
  - name: hub-power-high
    type: threshold
    match: {source: aliunid, metric: sys.kW, entity: "mp-*"}
    condition: {op: ">", value: 40}
    for: 2s
    clear: {condition: {op: "<", value: 35}}
    severity: critical
    labels: {team: energy}
    summary: "{{ entity }} draws {{ value }} kW{% if state == 'resolved' %} again{% endif %}"
    description: "threshold {{ threshold }}"
    channels: [console, ops-email]
"""

CHANNELS = """\
channels:
  ops-email: {url_env: OPS_EMAIL}
  team-chat: {url_env: TEAM_CHAT, send_resolved: false}
  pager: {url_env: PAGER, format: text}
routes:
  - match: ["team=energy"]
    channels: [team-chat]
silences: {file: silences.json}
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    channels = tmp_path / "channels.yaml"
    channels.write_text(CHANNELS, encoding="utf-8")
    return rules, channels


ENV = {"OPS_EMAIL": "mailto://u:secret@example.com", "TEAM_CHAT": "slack://T0/B0/C0"}


def test_preview_renders_each_routed_channel_in_its_format(files: tuple[Path, Path]) -> None:
    rules, channels = files
    out = preview("hub-power-high", rules_paths=[rules], channels_file=channels, env=ENV)
    assert [channel for channel, _, _ in out] == ["console", "ops-email", "team-chat"]
    by_channel = {channel: (title, body) for channel, title, body in out}
    assert all(t == "[FIRING] critical: hub-power-high on mp-1" for t, _ in by_channel.values())
    assert by_channel["console"][1].splitlines()[:3] == [
        "mp-1 draws 44.0 kW",
        "threshold 40",
        "Why: Rule hub-power-high fired: sys.kW of mp-1 was 44, meeting the condition "
        "sys.kW > 40 (held for 2s).",
    ]
    assert by_channel["ops-email"][1].startswith("<h3>FIRING critical: hub-power-high on mp-1</h3>")
    assert by_channel["team-chat"][1].startswith("**FIRING** critical: **hub-power-high**")
    # No secret is needed (nor shown): without the variables the formats fall back to text.
    plain = preview("hub-power-high", rules_paths=[rules], channels_file=channels, env={})
    assert all(not body.startswith("<") for _, _, body in plain)
    assert "secret" not in repr(out)


def test_preview_of_a_resolve_skips_channels_that_do_not_get_resolves(
    files: tuple[Path, Path],
) -> None:
    rules, channels = files
    out = preview(
        "hub-power-high", rules_paths=[rules], channels_file=channels, state="resolved", env=ENV
    )
    assert [channel for channel, _, _ in out] == ["console", "ops-email"]
    assert out[0][1] == "[RESOLVED] critical: hub-power-high on mp-1"
    assert out[0][2].startswith("mp-1 draws 31.5 kW again")


def test_preview_of_an_unknown_rule_lists_the_known_ones(files: tuple[Path, Path]) -> None:
    rules, channels = files
    with pytest.raises(ConfigError, match="no rule named 'nope'; known rules are hub-power-high"):
        preview("nope", rules_paths=[rules], channels_file=channels, env={})


def test_sample_alert_takes_an_entity_and_value(files: tuple[Path, Path]) -> None:
    rules, _ = files
    rule = load_rules([rules])[0]
    alert = sample_alert(rule, entity="mp-7", value=50)
    assert (alert.entity, alert.value, alert.state) == ("mp-7", 50, "firing")
    assert alert.labels == {"team": "energy"}


def test_silences_path_and_build_dispatcher(files: tuple[Path, Path]) -> None:
    _, channels = files
    assert silences_path(channels) == channels.parent / "silences.json"
    with pytest.raises(ConfigError, match="no silences file configured"):
        silences_path(None)
    config = load_config(channels)
    loaded = load_channels_from(config, {**ENV, "PAGER": "json://127.0.0.1:9/x"})
    dispatcher = build_dispatcher(config, loaded)
    assert isinstance(dispatcher.silences, SilenceFileStore)
    assert dispatcher.renderer.format_of("ops-email") == "html"
    assert dispatcher.renderer.format_of("team-chat") == "markdown"
    assert dispatcher.renderer.format_of("pager") == "text"

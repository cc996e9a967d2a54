"""Slack and Telegram payloads, captured by a local HTTP server.

apprise has no URL option for another API host for either service, but both plugins build
their request URLs from class attributes (``NotifySlack.webhook_url``,
``NotifyTelegram.notify_url``). The tests point those at a local server with ``monkeypatch``,
so apprise's real code (formatting, Markdown conversion, requests) runs over real HTTP; only
the host differs. No ``requests`` transport adapter is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from apprise.plugins.slack import NotifySlack
from apprise.plugins.telegram import NotifyTelegram

from pipeline.alerting.config import load_config
from pipeline.alerting.dispatch import Dispatcher
from pipeline.models import AlertTransition
from pipeline.notify.channels import Channel, load_channels_from
from pipeline.notify.sender import Notifier, RetryPolicy
from pipeline.notify.tools import build_dispatcher
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration

SLACK_TOKENS = register_secret("T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7")
BOT_TOKEN = register_secret("123456789:ABCdefGHIjklMNOpqrSTUvwxYZ12345678")
CHAT_ID = "-1001234567"
ONE_TRY = RetryPolicy(attempts=1, send_timeout=10)

ALERT = AlertTransition(
    fingerprint="fp-1",
    rule="hub-power-high",
    state="firing",
    entity="<mp-1>",
    source="aliunid",
    stream="zurich",
    metric="sys.kW",
    value=42.5,
    severity="critical",
    ts_ms=1_700_000_000_000,
    summary="Measuring point draws 42.5 kW",
    channels=("team-slack", "team-telegram"),
    labels={"team": "energy"},
)


@pytest.fixture
def local_chat_apis(chat_api: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(NotifySlack, "webhook_url", f"{chat_api.base}/services")
    monkeypatch.setattr(NotifyTelegram, "notify_url", f"{chat_api.base}/bot")
    return chat_api


def _setup(tmp_path: Path) -> tuple[Dispatcher, dict[str, Channel]]:
    path = tmp_path / "channels.yaml"
    path.write_text(
        "channels:\n  team-slack: {url_env: SLACK}\n  team-telegram: {url_env: TELEGRAM}\n",
        encoding="utf-8",
    )
    config = load_config(path)
    env = {"SLACK": f"slack://{SLACK_TOKENS}", "TELEGRAM": f"tgram://{BOT_TOKEN}/{CHAT_ID}"}
    channels = load_channels_from(config, env)
    return build_dispatcher(config, channels), channels


async def test_slack_gets_mrkdwn_with_title_and_text(tmp_path: Path, local_chat_apis: Any) -> None:
    dispatcher, channels = _setup(tmp_path)
    notifications = {n.channel: n for n in dispatcher.dispatch({}, ALERT, now_ms=1)}
    assert notifications["team-slack"].format == "markdown"
    assert await Notifier(channels, policy=ONE_TRY).send(notifications["team-slack"]) is not None

    [request] = local_chat_apis.wait_for(1, 10)
    assert request["path"] == f"/services/{SLACK_TOKENS}"
    payload = request["json"]
    assert payload["mrkdwn"] is True
    [attachment] = payload["attachments"]
    # Slack escapes <, > and & itself; the title is plain text.
    assert attachment["title"] == "[FIRING] critical: hub-power-high on &lt;mp-1&gt;"
    lines = attachment["text"].splitlines()
    # Standard Markdown from our template, converted by apprise to Slack's mrkdwn:
    # **bold** becomes *bold*, and escaped \< \> arrive as &lt; &gt;.
    assert lines[0] == "*FIRING* critical: *hub-power-high* on *&lt;mp-1&gt;*"
    assert "Measuring point draws 42.5 kW" in lines
    assert "- value: 42.5 (sys.kW)" in lines
    assert any(line.startswith("_Why:_ Rule hub-power-high fired") for line in lines)
    assert attachment["color"]  # failure colour for a critical alert


async def test_telegram_gets_markdown_with_the_title_in_bold(
    tmp_path: Path, local_chat_apis: Any
) -> None:
    dispatcher, channels = _setup(tmp_path)
    notifications = {n.channel: n for n in dispatcher.dispatch({}, ALERT, now_ms=1)}
    assert await Notifier(channels, policy=ONE_TRY).send(notifications["team-telegram"]) is not None

    [request] = local_chat_apis.wait_for(1, 10)
    assert request["path"] == f"/bot{BOT_TOKEN}/sendMessage"
    payload = request["json"]
    assert payload["chat_id"] == int(CHAT_ID)
    assert payload["parse_mode"] == "MARKDOWN"
    lines = payload["text"].splitlines()
    # Telegram has no title field: apprise puts it first, in bold.
    assert lines[0] == "*[FIRING] critical: hub-power-high on <mp-1>*"
    assert lines[1] == "*FIRING* critical: *hub-power-high* on *<mp-1>*"
    assert "Measuring point draws 42.5 kW" in lines
    assert "- value: 42.5 (sys.kW)" in lines


async def test_failed_chat_deliveries_leak_no_token(
    tmp_path: Path,
    local_chat_apis: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    local_chat_apis.status = 500
    with caplog.at_level(logging.DEBUG):
        dispatcher, channels = _setup(tmp_path)
        notifier = Notifier(channels, policy=ONE_TRY)
        for notification in dispatcher.dispatch({}, ALERT, now_ms=1):
            assert await notifier.send(notification) is None
    assert len(local_chat_apis.wait_for(2, 10)) == 2
    assert notifier.counters["failed"] == 2
    assert "notification undelivered channel=team-slack" in caplog.text
    assert "notification undelivered channel=team-telegram" in caplog.text
    for secret in [*SLACK_TOKENS.split("/"), BOT_TOKEN, BOT_TOKEN.split(":")[1], CHAT_ID]:
        assert secret not in caplog.text, secret

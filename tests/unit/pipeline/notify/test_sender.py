"""Delivery through apprise to a real HTTP peer: payload, retry on 5xx, permanent failures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeline.models import AlertTransition
from pipeline.notify.channels import load_channels
from pipeline.notify.sender import Notifier, RetryPolicy
from tests.support.webhook import webhook_server

ALERT = AlertTransition(
    fingerprint="fp-1",
    rule="hub-power-high",
    state="firing",
    entity="mp-1",
    source="aliunid",
    stream="s",
    metric="sys.kW",
    value=42.5,
    severity="critical",
    ts_ms=1_700_000_000_000,
    summary="mp-1 draws 42.5 kW",
    description="above 40 kW for 2s",
    channels=("hook",),
)

FAST = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02, send_timeout=5)


def _channels(tmp_path: Path, url: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "channels.yaml"
    path.write_text("channels:\n  hook:\n    url_env: HOOK\n", encoding="utf-8")
    return load_channels(path, env={"HOOK": url})


async def test_delivers_title_and_body_and_records_it(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    with webhook_server() as hook:
        notifier = Notifier(_channels(tmp_path, hook.url("/a")), alerts_out=out, policy=FAST)
        deliveries = await notifier.deliver(ALERT)
        requests = hook.wait_for(1, 5)
    assert [d.channel for d in deliveries] == ["hook"]
    payload = requests[0]["json"]
    assert requests[0]["path"] == "/a"
    assert payload["title"] == "[FIRING] critical: hub-power-high on mp-1"
    assert payload["message"].splitlines() == [
        "mp-1 draws 42.5 kW",
        "above 40 kW for 2s",
        "value=42.5 metric=sys.kW source=aliunid ts_ms=1700000000000",
    ]
    assert payload["type"] == "failure"
    line = json.loads(out.read_text())
    assert line["fingerprint"] == "fp-1" and line["state"] == "firing" and line["channel"] == "hook"
    assert notifier.counters == {"sent": 1, "failed": 0, "retried": 0}


async def test_server_errors_are_retried_then_reported_undelivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token, password = "T0KEN-b7f3c2d9e1", "pa55-w0rd-9931"
    with webhook_server() as hook:
        hook.status = 503
        url = f"json://ops:{password}@127.0.0.1:{hook.port}/hooks/{token}"
        with caplog.at_level(logging.DEBUG):
            notifier = Notifier(_channels(tmp_path, url), policy=FAST)
            deliveries = await notifier.deliver(ALERT)
    assert deliveries == []
    assert notifier.counters == {"sent": 0, "failed": 1, "retried": 2}
    assert "notification undelivered channel=hook fingerprint=fp-1" in caplog.text
    # apprise and urllib3 log the URL they call at DEBUG: the token and password must not show.
    assert token not in caplog.text
    assert password not in caplog.text


async def test_unknown_channel_is_permanent_and_other_channels_still_get_it(tmp_path: Path) -> None:
    with webhook_server() as hook:
        notifier = Notifier(_channels(tmp_path, hook.url()), policy=FAST)
        alert = AlertTransition(**{**_fields(ALERT), "channels": ("nope", "hook")})
        deliveries = await notifier.deliver(alert)
    assert [d.channel for d in deliveries] == ["hook"]
    assert notifier.counters["failed"] == 1
    assert notifier.counters["retried"] == 0


async def test_resolved_is_a_success_notification(tmp_path: Path) -> None:
    with webhook_server() as hook:
        notifier = Notifier(_channels(tmp_path, hook.url()), policy=FAST)
        await notifier.deliver(AlertTransition(**{**_fields(ALERT), "state": "resolved"}))
        requests = hook.wait_for(1, 5)
    assert requests[0]["json"]["type"] == "success"
    assert requests[0]["json"]["title"].startswith("[RESOLVED] critical: hub-power-high")


def _fields(alert: AlertTransition) -> dict[str, object]:
    return {f: getattr(alert, f) for f in alert.__struct_fields__}

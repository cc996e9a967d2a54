"""json:// webhooks end to end: dispatcher -> delivery queue -> apprise -> a local HTTP server."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeline.alerting.config import load_config
from pipeline.alerting.model import Notification
from pipeline.alerting.stats import ChannelStats
from pipeline.alerting.timers import TrackedState, run_due
from pipeline.errors import NotifyError
from pipeline.models import AlertTransition
from pipeline.notify.channels import load_channels_from
from pipeline.notify.sender import Delivery, DeliveryQueue, Notifier, RetryPolicy
from pipeline.notify.tools import build_dispatcher, send_test_async
from tests.support.secrets import register_secret
from tests.support.webhook import webhook_server

pytestmark = pytest.mark.integration

HOUR = 3_600_000
FAST = RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.01, send_timeout=10, jitter=0)


def _alert(entity: str, state: str = "firing", ts_ms: int = 0) -> AlertTransition:
    return AlertTransition(
        fingerprint=f"fp-{entity}",
        rule="hub-power-high",
        state=state,  # type: ignore[arg-type]
        entity=entity,
        source="aliunid",
        stream="zurich",
        metric="sys.kW",
        value=42.5 if state == "firing" else 30.0,
        severity="warning",
        ts_ms=ts_ms,
        summary=f"{entity} draws power",
        channels=("hook",),
    )


def _write(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "channels.yaml"
    path.write_text(f"channels:\n  hook:\n    url_env: HOOK\n{extra}", encoding="utf-8")
    return path


async def test_lifecycle_through_the_queue_with_a_rate_limit_summary(tmp_path: Path) -> None:
    path = _write(tmp_path, "    rate_limit: {max: 2, per: 1h}\n")
    out = tmp_path / "alerts.jsonl"
    with webhook_server() as hook:
        config = load_config(path)
        channels = load_channels_from(config, {"HOOK": hook.url("/alerts")})
        stats = ChannelStats()
        dispatcher = build_dispatcher(config, channels, stats=stats)
        notifier = Notifier(channels, alerts_out=out, policy=FAST, stats=stats)
        done: list[tuple[Notification, Delivery | None]] = []
        queue = DeliveryQueue(notifier, on_done=lambda n, d: done.append((n, d)))
        state = TrackedState()
        for i in range(4):
            for n in dispatcher.dispatch(state, _alert(f"mp-{i}", ts_ms=i), now_ms=1_000 + i):
                queue.submit(n)
        for n in run_due(dispatcher, state, HOUR):
            queue.submit(n)
        assert await queue.join(10)
        requests = hook.wait_for(3, 10)
        await queue.stop(1)

    titles = [r["json"]["title"] for r in requests]
    assert titles == [
        "[FIRING] warning: hub-power-high on mp-0",
        "[FIRING] warning: hub-power-high on mp-1",
        "[SUPPRESSED] 2 more notifications to hook held back by its rate limit",
    ]
    assert [r["json"]["type"] for r in requests] == ["warning", "warning", "info"]
    assert requests[0]["json"]["message"].splitlines()[0] == "mp-0 draws power"
    assert stats.channel("hook") == {
        "sent": 3,
        "failed": 0,
        "retried": 0,
        "suppressed": 2,
        "silenced": 0,
        "inhibited": 0,
        "muted": 0,
    }
    assert [d is not None for _, d in done] == [True, True, True]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["firing", "firing", "suppressed-summary"]
    assert [r["id"] for r in records] == [n.id for n, _ in done]


async def test_notify_test_sends_a_real_test_notification(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path)
    with webhook_server() as hook:
        delivery = await send_test_async("hook", channels_file=path, env={"HOOK": hook.url("/t")})
        [request] = hook.wait_for(1, 10)
    assert delivery.kind == "test"
    assert request["json"]["title"] == "[TEST] StreamWarden test notification to hook"
    assert request["json"]["message"].startswith("This is a test notification from StreamWarden")
    assert request["json"]["type"] == "info"

    token = register_secret("T0KEN-5531-abcdef")
    with webhook_server() as hook:
        hook.status = 404
        with caplog.at_level(logging.DEBUG), pytest.raises(NotifyError) as info:
            await send_test_async(
                "hook", channels_file=path, env={"HOOK": f"json://127.0.0.1:{hook.port}/h/{token}"}
            )
    assert str(info.value) == "channel 'hook': apprise reported failure, HTTP 404 (permanent)"
    assert token not in caplog.text

"""The Watchdog heartbeat reaches a real HTTP peer at its interval, through the notifier, and
lands in the notification history."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import BrokerHandle
from tests.integration.ops.support import broker_env, get, get_json, wait_until, worker_process
from tests.support.webhook import webhook_server

pytestmark = pytest.mark.integration


async def test_heartbeat_arrives_every_interval(
    fresh_broker: BrokerHandle, tmp_path: Path, unique_suffix: str
) -> None:
    app_id = f"sw-dog-{unique_suffix}"
    env = broker_env(fresh_broker, app_id, 1)
    watchdog = "watchdog:\n  channel: hook\n  interval: 1s\n"
    with (
        webhook_server() as hook,
        worker_process(env, tmp_path, hook.url("/dog"), channels_extra=watchdog) as (
            proc,
            base,
            log,
        ),
    ):
        wait_until("ready", lambda: get(f"{base}/readyz")[0] == 200, 120, proc, log)
        beats = hook.wait_for(3, 30)
        assert len(beats) >= 3, log.read_text()[-3000:]
        titles = [b["json"]["title"] for b in beats]
        assert all(t == f"[FIRING] Watchdog: StreamWarden {app_id} is alive" for t in titles)

        def in_history() -> list | None:
            records = get_json(f"{base}/api/notifications?since=5m")
            dog = [r for r in records if r["id"].startswith(f"watchdog-{app_id}-")]
            return dog if len(dog) >= 2 else None

        records = wait_until("history", in_history, 30, proc, log)
        assert {r["outcome"] for r in records} == {"delivered"}
        assert len({r["id"] for r in records}) == len(records)  # one id per heartbeat

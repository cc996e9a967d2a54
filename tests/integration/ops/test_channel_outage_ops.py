"""A channel outage as an operator sees it: retries and the oldest undelivered age climb in
/metrics, failed attempts with their reason appear in the history (API and CLI), and after
the channel recovers the notification is delivered and the age drops back to 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import BrokerHandle
from tests.integration.ops.support import (
    broker_env,
    get,
    get_json,
    new_entity,
    produce_frames,
    wait_until,
    worker_process,
)
from tests.support.webhook import webhook_server

pytestmark = pytest.mark.integration


def _metric(base: str, name: str, **labels: str) -> float:
    status, body = get(f"{base}/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamwarden", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_outage_shows_in_metrics_and_history_then_recovers(
    fresh_broker: BrokerHandle, tmp_path: Path, unique_suffix: str
) -> None:
    app_id = f"sw-outage-{unique_suffix}"
    env = broker_env(fresh_broker, app_id, 1)
    entity = new_entity()
    with (
        webhook_server() as hook,
        worker_process(env, tmp_path, hook.url("/down")) as (proc, base, log),
    ):
        wait_until("ready", lambda: get(f"{base}/readyz")[0] == 200, 120, proc, log)
        hook.status = 503
        await produce_frames(fresh_broker.bootstrap, entity, [70.0])

        wait_until(
            "retries counted",
            lambda: (
                _metric(base, "streamwarden_notifications_total", channel="hook", outcome="retried")
                >= 2
            ),
            90,
            proc,
            log,
        )
        age = wait_until(
            "undelivered age",
            lambda: _metric(base, "streamwarden_oldest_undelivered_age_seconds") or None,
            60,
            proc,
            log,
        )
        assert age > 0

        def failed_in_history() -> list | None:
            records = get_json(f"{base}/api/notifications?since=10m")
            return [r for r in records if r["outcome"] == "failed"] or None

        failed = wait_until("failed in history", failed_in_history, 120, proc, log)
        assert failed[0]["channel"] == "hook" and failed[0]["entity"] == entity
        assert "HTTP 503" in failed[0]["reason"] and "(retryable)" in failed[0]["reason"]
        cli = _cli(["notifications", "outcome=failed", "--json"], env)
        assert cli.returncode == 0, cli.stderr
        assert any(r["entity"] == entity for r in json.loads(cli.stdout))

        hook.status = 200
        delivered = hook.wait_for(1, 120)
        assert delivered, log.read_text()[-3000:]
        wait_until(
            "age back to 0",
            lambda: _metric(base, "streamwarden_oldest_undelivered_age_seconds") == 0.0,
            60,
            proc,
            log,
        )
        assert (
            _metric(base, "streamwarden_notifications_total", channel="hook", outcome="sent") >= 1
        )

"""simulator -> producer -> Kafka (over TCP) -> worker -> apprise -> a real HTTP peer.

Every part runs as in production: the producer and the worker are ``streamwarden`` processes,
the simulator is a real WebSocket server and the notification goes through apprise's
``json://`` plugin to an HTTP server owned by the test.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.topics import all_topics
from producers.simulators.aliunid import AliunidSimulator
from tests.integration.conftest import BrokerHandle
from tests.support.secrets import register_secret
from tests.support.webhook import webhook_server

pytestmark = pytest.mark.integration

# The stream is unique to the run: on a shared broker raw.aliunid.v1 holds other tests' records.
RULES = """\
rules:
  - name: e2e-power-high
    type: threshold
    match:
      source: aliunid
      stream: {stream}
      metric: sys.kW
    condition: {op: ">", value: 40}
    severity: critical
    summary: "{{ entity }} draws {{ value }} kW, above {{ threshold }} kW"
    channels: [hook]
"""


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streamwarden", *args],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture
def e2e_env(fresh_broker: BrokerHandle, tmp_path: Path, unique_suffix: str) -> dict[str, str]:
    app_id = f"sw-e2e-{unique_suffix}"
    partitions = fresh_broker.partitions(4)
    fresh_broker.create_topics({t.name: t.partitions for t in all_topics(app_id, partitions)})
    return {
        "STREAMWARDEN_KAFKA_BOOTSTRAP": fresh_broker.bootstrap,
        "STREAMWARDEN_KAFKA_EMBEDDED": "true" if fresh_broker.is_embedded else "false",
        "STREAMWARDEN_PARTITIONS": str(partitions),
        "STREAMWARDEN_APP_ID": app_id,
        "STREAMWARDEN_DATA_DIR": str(tmp_path / "data"),
        "STREAMWARDEN_LOG_LEVEL": "DEBUG",
    }


async def test_simulator_to_notification_over_real_sockets(
    e2e_env: dict[str, str], tmp_path: Path
) -> None:
    api_key = register_secret("k-" + secrets.token_hex(16))
    business_id = str(uuid.uuid4())
    stream = f"aliunid-e2e-{uuid.uuid4().hex[:6]}"
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES.replace("{stream}", stream), encoding="utf-8")
    alerts_out = tmp_path / "alerts.jsonl"

    with webhook_server() as hook:
        channels_file = tmp_path / "channels.yaml"
        channels_file.write_text(
            "channels:\n  hook:\n    url_env: E2E_HOOK_URL\n", encoding="utf-8"
        )
        async with AliunidSimulator(business_id, api_key, interval=0.2, seed=7) as simulator:
            sources_file = tmp_path / "sources.yaml"
            sources_file.write_text(
                "sources:\n"
                f"  - name: {stream}\n"
                "    kind: aliunid\n"
                f"    url: {simulator.url}\n"
                "    api_key: ${E2E_API_KEY}\n",
                encoding="utf-8",
            )
            worker = _spawn(
                ["worker"],
                {
                    **e2e_env,
                    "STREAMWARDEN_RULES_PATH": str(rules_file),
                    "STREAMWARDEN_CHANNELS_FILE": str(channels_file),
                    "STREAMWARDEN_ALERTS_OUT": str(alerts_out),
                    "E2E_HOOK_URL": hook.url("/alerts"),
                },
                tmp_path / "worker.log",
            )
            producer = _spawn(
                ["produce", stream],
                {**e2e_env, "STREAMWARDEN_SOURCES_FILE": str(sources_file), "E2E_API_KEY": api_key},
                tmp_path / "producer.log",
            )
            try:
                deadline = time.monotonic() + 90
                received: list[dict[str, object]] = []
                while time.monotonic() < deadline and not received:
                    assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                    assert producer.poll() is None, (tmp_path / "producer.log").read_text()
                    received = await _wait_requests(hook, 1, 1.0)
            finally:
                producer_code = _stop(producer)
                worker_code = _stop(worker)

    worker_log = (tmp_path / "worker.log").read_text()
    producer_log = (tmp_path / "producer.log").read_text()
    assert received, (
        f"no notification arrived\n--- worker\n{worker_log[-3000:]}\n--- producer\n{producer_log[-3000:]}"
    )
    first = received[0]["json"]
    assert isinstance(first, dict)
    assert first["title"].startswith("[FIRING] critical: e2e-power-high on ")
    entity = first["title"].rsplit(" on ", 1)[1]
    uuid.UUID(entity)  # the measuring point id from the simulator
    assert f"{entity} draws " in first["message"]
    assert ", above 40 kW" in first["message"]
    value = float(first["message"].split(" draws ", 1)[1].split(" kW", 1)[0])
    assert value > 40

    delivered = [json.loads(line) for line in alerts_out.read_text().splitlines()]
    assert delivered[0]["channel"] == "hook"
    assert delivered[0]["rule"] == "e2e-power-high"
    assert delivered[0]["state"] == "firing"
    assert delivered[0]["entity"] == entity
    assert delivered[0]["value"] == pytest.approx(value)

    # Clean shutdown on SIGTERM, and the secrets never reached any log.
    assert producer_code == 0, producer_log[-2000:]
    assert worker_code in (0, -signal.SIGTERM), worker_log[-2000:]
    for log in (worker_log, producer_log):
        assert api_key not in log
        assert hook.url("/alerts") not in log
        assert f"127.0.0.1:{hook.port}/alerts" not in log


async def _wait_requests(hook: object, count: int, wait_s: float) -> list[dict[str, object]]:
    import asyncio

    return await asyncio.to_thread(hook.wait_for, count, wait_s)  # type: ignore[attr-defined]

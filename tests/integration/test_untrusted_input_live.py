"""Issue 16, defects 1 and 2 through a live worker: untrusted input never stops alerting.

Black-box: a ``streamwarden worker`` process, raw aliunid envelopes written to Kafka over
TCP, notifications read from a real HTTP peer (apprise ``json://``) and the delivered-alerts
file. Before the fix the two finite frames 1e308 and 1.5e308 made the worker exit with
``OverflowError: intermediate overflow in fsum`` (and again on every restart); a rule text
that rendered 2 MB killed it with ``MessageSizeTooLargeError``.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.topics import all_topics
from producers.envelope import RawEnvelope, encode_envelope, raw_topic
from tests.integration.conftest import BrokerHandle
from tests.integration.test_end_to_end import _spawn, _stop
from tests.support.webhook import webhook_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

T0 = 1_700_000_000_000
BIG = "mp-big-" + uuid.uuid4().hex[:6]
EVIL = "mp-evil-" + uuid.uuid4().hex[:6]
LATER = "mp-later-" + uuid.uuid4().hex[:6]

RULES = f"""\
rules:
  - name: avg-huge
    type: aggregate
    match: {{source: aliunid, metric: sys.kW, entity: {BIG}}}
    window: {{kind: sliding, size: 1m}}
    aggregate: avg
    condition: {{op: ">", value: 40}}
    summary: "avg of {{{{ entity }}}} is {{{{ value }}}}"
    channels: [hook]
  - name: sum-huge
    type: aggregate
    match: {{source: aliunid, metric: sys.kW, entity: {BIG}}}
    window: {{kind: tumbling, size: 10s}}
    grace: 0s
    aggregate: sum
    condition: {{op: ">", value: 40}}
    summary: "sum of {{{{ entity }}}} is {{{{ value }}}}"
    channels: [hook]
  - name: hostile-text
    type: threshold
    match: {{source: aliunid, metric: sys.kW}}
    condition: {{op: ">", value: 40}}
    summary: "{{% if entity == '{EVIL}' %}}{{% for a in 'x'*200 %}}{{{{ 'y'*10000 }}}}{{% endfor %}}{{% endif %}}ok {{{{ entity }}}}"
    channels: [hook]
"""


def _frame(entity: str, kw: float, offset_ms: int) -> RawEnvelope:
    payload = orjson.dumps({"type": "data", "id": entity, "data": {"sys": {"kW": kw}}})
    return RawEnvelope("aliunid", "untrusted-live", T0 + offset_ms, payload.decode())


async def _write(bootstrap: str, frames: list[RawEnvelope]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for frame in frames:
            entity = orjson.loads(frame.payload)["id"].encode()
            await producer.send_and_wait(raw_topic("aliunid"), encode_envelope(frame), key=entity)
    finally:
        await producer.stop()


def _firing(received: list[dict[str, Any]], needle: str) -> list[dict[str, Any]]:
    return [r for r in received if needle in str(r["json"].get("title", ""))]


async def test_huge_values_and_a_hostile_text_do_not_stop_alerting(
    private_broker: BrokerHandle, tmp_path: Path, unique_suffix: str
) -> None:
    # A broker of its own: the worker counts every notification its peer gets, and on a shared
    # broker alerts.v1 holds other workers' alerts, which its notify stage would dispatch too.
    fresh_broker = private_broker
    app_id = f"sw-untrusted-{unique_suffix}"
    fresh_broker.create_topics({t.name: t.partitions for t in all_topics(app_id, 2)})
    env = {
        "STREAMWARDEN_KAFKA_BOOTSTRAP": fresh_broker.bootstrap,
        "STREAMWARDEN_KAFKA_EMBEDDED": "true" if fresh_broker.is_embedded else "false",
        "STREAMWARDEN_PARTITIONS": "2",
        "STREAMWARDEN_APP_ID": app_id,
        "STREAMWARDEN_DATA_DIR": str(tmp_path / "data"),
    }
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES, encoding="utf-8")
    channels_file = tmp_path / "channels.yaml"
    channels_file.write_text("channels:\n  hook:\n    url_env: UNTRUSTED_HOOK\n", encoding="utf-8")
    alerts_out = tmp_path / "alerts.jsonl"
    log = tmp_path / "worker.log"

    with webhook_server() as hook:
        worker = _spawn(
            ["worker"],
            {
                **env,
                "STREAMWARDEN_RULES_PATH": str(rules_file),
                "STREAMWARDEN_CHANNELS_FILE": str(channels_file),
                "STREAMWARDEN_ALERTS_OUT": str(alerts_out),
                "UNTRUSTED_HOOK": hook.url("/alerts"),
            },
            log,
        )
        try:
            await _write(
                fresh_broker.bootstrap,
                [
                    _frame(BIG, 1e308, 1_000),
                    _frame(BIG, 1.5e308, 2_000),
                    _frame(BIG, 1.0, 12_000),  # closes the tumbling window [0 s, 10 s)
                    _frame(EVIL, 50.0, 13_000),
                ],
            )
            wanted = ("avg-huge", "sum-huge", EVIL)
            received: list[dict[str, Any]] = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                assert worker.poll() is None, log.read_text()[-4000:]
                received = await asyncio.to_thread(hook.wait_for, 1, 1.0)
                if all(_firing(received, w) for w in wanted):
                    break
            for w in wanted:
                assert _firing(received, w), (w, received, log.read_text()[-4000:])
            # alerting carries on after all of that
            await _write(fresh_broker.bootstrap, [_frame(LATER, 99.0, 14_000)])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not _firing(received, LATER):
                assert worker.poll() is None, log.read_text()[-4000:]
                received = await asyncio.to_thread(hook.wait_for, 1, 1.0)
            assert _firing(received, LATER), log.read_text()[-4000:]
        finally:
            code = _stop(worker)

    text = log.read_text()
    assert "OverflowError" not in text and "MessageSizeTooLarge" not in text
    assert code in (0, -signal.SIGTERM), text[-3000:]
    evil = _firing(received, EVIL)[0]["json"]
    assert "output budget exceeded" in evil["message"]
    assert len(evil["message"]) < 10_000
    delivered = [json.loads(line) for line in alerts_out.read_text().splitlines()]
    values = [(d["rule"], d["value"]) for d in delivered if d["entity"] == BIG]
    assert {"avg-huge", "sum-huge"} <= {rule for rule, _ in values}
    assert all(isinstance(v, float) and math.isfinite(v) for _, v in values), values

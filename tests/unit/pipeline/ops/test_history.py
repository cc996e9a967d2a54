"""History records: encoding, what a notification's record holds, the background writer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pipeline.alerting.model import Notification
from pipeline.models import AlertTransition
from pipeline.ops.history import (
    SEND_BATCH_MAX,
    HistoryWriter,
    decode_record,
    encode_record,
    record_of,
)

ALERT = AlertTransition(
    fingerprint="fp1",
    rule="power-high",
    state="firing",
    entity="mp-1",
    source="aliunid",
    stream="s1",
    metric="sys.kW",
    value=55.0,
    severity="critical",
    ts_ms=2_000,
    labels={"team": "energy"},
)
NOTE = Notification(
    id="n1",
    channel="ops",
    kind="firing",
    alerts=(ALERT,),
    title="[FIRING] power-high",
    body="...",
    format="text",
    notify_type="failure",
    created_ms=1,
)


def test_record_round_trips_and_carries_what_matchers_filter_on() -> None:
    record = record_of(NOTE, "failed", "apprise reported failure, HTTP 503 (retryable)", at_ms=5)
    again = decode_record(encode_record(record))
    assert again == record
    assert (again.id, again.channel, again.outcome, again.at_ms) == ("n1", "ops", "failed", 5)
    assert again.labels == {
        "team": "energy",
        "alertname": "power-high",
        "entity": "mp-1",
        "severity": "critical",
        "source": "aliunid",
    }
    assert again.fingerprints == ("fp1",)


async def test_writer_sends_in_order_in_batches_and_survives_a_failed_send() -> None:
    sent: list[list[int]] = []  # at_ms of each batch's records
    fail_first = {"n": 1}

    async def publish(records: Sequence[tuple[bytes, bytes]]) -> object:
        if fail_first["n"]:
            fail_first["n"] -= 1
            raise ConnectionError("broker down")
        assert all(key == b"n1" for key, _ in records)
        sent.append([decode_record(value).at_ms for _, value in records])
        return None

    writer = HistoryWriter(publish)
    writer.record(record_of(NOTE, "delivered", at_ms=0))
    await asyncio.sleep(0)  # the writer sends it alone; that send fails
    for i in range(1, 4):
        writer.record(record_of(NOTE, "delivered", at_ms=i))  # queued meanwhile: one batch
    assert await writer.flush(5)
    assert writer.failed == 1 and writer.written == 3
    assert sent == [[1, 2, 3]]
    assert [r.at_ms for r in writer.recent] == [0, 1, 2, 3]
    await writer.close()


async def test_a_long_queue_goes_in_batches_of_at_most_the_maximum() -> None:
    sizes: list[int] = []

    async def publish(records: Sequence[tuple[bytes, bytes]]) -> object:
        sizes.append(len(records))
        return None

    writer = HistoryWriter(publish)
    for i in range(SEND_BATCH_MAX + 7):
        writer.record(record_of(NOTE, "delivered", at_ms=i))
    assert await writer.flush(5)
    assert sizes == [SEND_BATCH_MAX, 7] and writer.written == SEND_BATCH_MAX + 7
    await writer.close()


async def test_unbound_writer_keeps_recent_records_only() -> None:
    writer = HistoryWriter()
    writer.notification(NOTE, "delivered")
    assert writer.pending() == 0 and len(writer.recent) == 1
    writer.suppressed("ops", [ALERT], "silence abc")
    assert writer.recent[-1].outcome == "suppressed" and writer.recent[-1].reason == "silence abc"
    await asyncio.sleep(0)

"""``broker-outage``: the embedded broker goes down and comes back while producers run.

All five families run, each a real simulator with its real producer in this process, each
writing through its own :class:`~producers.sink.KafkaSink` with a small buffer
(:data:`BUFFER_MAX`). The broker is set down (connections refused, data kept) for a while,
then up again. A full buffer makes the producer stop reading its upstream (backpressure)
instead of dropping. At the end the simulators are stopped first (a clean close), the
producers flush and stop, and the raw topics are read back.

One row per family: ``sent`` = ``expected`` = frames the upstream server wrote (its
``frames_sent`` counter); ``delivered`` = those that are in Kafka exactly as the producer
published them; ``duplicated`` = extra copies in Kafka; ``lost`` = frames the server wrote
that are not in Kafka. The note splits a loss into what the producer dropped (accepted but
not in Kafka) and what it never received from the upstream (a connection that died while
reads were paused), and says how full the buffer got.

Pass: the buffer filled (backpressure engaged) and never went beyond its bound, nothing was
dropped or duplicated, nothing lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from typing import Any

from producers.envelope import RawEnvelope, encode_envelope, raw_topic
from streamwarden.chaos.harness import (
    ChaosOptions,
    ScenarioResult,
    Timeline,
    note_pid,
    read_topic,
)
from streamwarden.chaos.upstreams import CountingSink, Upstream, start_upstreams, stop_upstreams
from streamwarden.chaos.workload import PARTITIONS
from streamwarden.families import FAMILIES

NAME = "broker-outage"
BUFFER_MAX = 50
INTERVAL_S = 0.05


class _Peak:
    """Highest ``buffered`` of a KafkaSink and longest pause between two accepted envelopes
    (reads paused by backpressure), sampled after every accepted envelope."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.value = 0
        self.longest_pause_s = 0.0
        self._last = time.monotonic()

    async def __call__(self, _envelope: RawEnvelope, _count: int) -> None:
        now = time.monotonic()
        self.value = max(self.value, int(self.sink.buffered))
        self.longest_pause_s = max(self.longest_pause_s, now - self._last)
        self._last = now


def _row(
    upstream: Upstream, in_kafka: Counter[bytes], peak: _Peak, outage_s: float, seconds: float
) -> ScenarioResult:
    sink = upstream.sink
    kafka_sink: Any = sink.inner
    accepted = Counter(encode_envelope(e) for e in sink.envelopes)
    delivered = sum((accepted & in_kafka).values())
    duplicated = sum((in_kafka - accepted).values())
    dropped = sum((accepted - in_kafka).values())
    sent = int(upstream.simulator.frames_sent)
    never_received = sent - len(sink.envelopes)
    lost = sent - delivered
    reconnects = max(0, len(sink.per_connection) - 1)
    # Backpressure engaged: the producer stopped taking frames for most of the outage.
    engaged = peak.value == BUFFER_MAX and peak.longest_pause_s >= outage_s / 2
    within = peak.value <= BUFFER_MAX
    ok = engaged and within and dropped == 0 and duplicated == 0 and lost == 0
    note = (
        f"buffer bound {BUFFER_MAX}, peak {peak.value}; reads paused up to "
        f"{peak.longest_pause_s:.1f}s; {kafka_sink.failed_total} delivery retries; dropped "
        f"by the producer {dropped}; never received from the upstream {never_received} "
        f"({reconnects} reconnects)"
    )
    if not engaged:
        note += "; backpressure did not engage: the outage was not felt"
    return ScenarioResult(
        scenario=f"{NAME}/{upstream.kind}",
        sent=sent,
        expected=sent,
        delivered=delivered,
        duplicated=duplicated,
        lost=lost,
        ok=ok,
        note=note,
        seconds=seconds,
        details={
            "dropped_by_producer": dropped,
            "never_received": never_received,
            "buffer_max": BUFFER_MAX,
            "buffer_peak": peak.value,
            "longest_pause_s": round(peak.longest_pause_s, 2),
            "outage_s": outage_s,
        },
    )


async def run(options: ChaosOptions) -> list[ScenarioResult]:
    from pipeline.topics import all_topics
    from producers.sink import KafkaSink
    from streamwarden.embedded_broker import EmbeddedBroker

    outage_s = 8.0 if options.quick else 30.0
    started = time.monotonic()
    timeline = Timeline(options.progress, NAME)
    kinds = list(FAMILIES)
    broker = EmbeddedBroker()
    upstreams: list[Upstream] = []
    try:
        bootstrap = await asyncio.to_thread(broker.start)
        note_pid(options.workdir, broker.pid)
        app_id = f"chaos-outage-{uuid.uuid4().hex[:8]}"
        await asyncio.to_thread(
            broker.create_topics, {t.name: t.partitions for t in all_topics(app_id, PARTITIONS)}
        )
        sinks: dict[str, CountingSink] = {}
        peaks: dict[str, _Peak] = {}
        for kind in kinds:
            kafka = KafkaSink(bootstrap, buffer_max_messages=BUFFER_MAX, client_id=f"chaos-{kind}")
            peaks[kind] = _Peak(kafka)
            sinks[kind] = CountingSink(inner=kafka, on_frame=peaks[kind])
        upstreams = await start_upstreams(
            kinds, options.workdir / NAME, interval=INTERVAL_S, seed=options.seed, sinks=sinks
        )
        for upstream in upstreams:
            upstream.start_producer()
        timeline.say(f"{len(upstreams)} producers running, buffers of {BUFFER_MAX}")
        await _all_delivering(upstreams, 30.0)
        await asyncio.to_thread(broker.set_down)
        timeline.say(f"broker down for {outage_s:.0f}s")
        await asyncio.sleep(outage_s)
        await asyncio.to_thread(broker.set_up)
        timeline.say("broker up again")
        await _all_flowing(upstreams, 60.0)
        await asyncio.sleep(2.0)  # some live traffic after the recovery
        for upstream in upstreams:
            await upstream.simulator.stop()  # a clean close: nothing left in flight
        failures = {u.kind: await u.stop_producer(60.0) for u in upstreams}
        for upstream in upstreams:
            try:
                await upstream.sink.close()
            except Exception as exc:
                failures[upstream.kind] = failures[upstream.kind] or exc
        seconds = time.monotonic() - started
        rows = []
        for upstream in upstreams:
            topic = raw_topic(upstream.kind)
            values = await read_topic(bootstrap, topic, PARTITIONS)
            row = _row(upstream, Counter(values), peaks[upstream.kind], outage_s, seconds)
            if failures[upstream.kind] is not None:
                row.ok = False
                row.note += f"; producer failed: {failures[upstream.kind]!r}"
            timeline.say(f"{upstream.kind}: {row.note}")
            rows.append(row)
        return rows
    finally:
        await stop_upstreams(upstreams)
        for upstream in upstreams:
            # Already closed and reported, or closing after a failure: nothing to add.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await upstream.sink.close()
        await asyncio.to_thread(broker.stop)


async def _all_delivering(upstreams: list[Upstream], wait_timeout: float) -> None:
    """Wait until every producer's Kafka sink had an envelope acknowledged, bounded."""

    async def one(upstream: Upstream) -> None:
        kafka: Any = upstream.sink.inner
        await upstream.sink.wait_for(lambda: kafka.sent_total > 0, wait_timeout)

    await asyncio.gather(*(one(u) for u in upstreams))


async def _all_flowing(upstreams: list[Upstream], wait_timeout: float) -> None:
    """Wait until every producer accepted one more envelope, bounded."""

    async def one(upstream: Upstream) -> None:
        count = len(upstream.sink.envelopes)
        await upstream.sink.wait_for(lambda: len(upstream.sink.envelopes) > count, wait_timeout)

    await asyncio.gather(*(one(u) for u in upstreams))

"""ELEMENT durable resume: a restarted producer reads its cursor back from what it wrote.

* Kafka: a ``streamwarden produce`` process killed with SIGKILL and restarted while the
  server keeps inserting readings records every reading exactly once (embedded broker, or
  real Kafka when STREAMWARDEN_KAFKA_BOOTSTRAP is set).
* JSONL: ``record --out f.jsonl`` run twice resumes from the file's last line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from producers.config import ElementSource
from producers.envelope import RawEnvelope, decode_envelope, encode_envelope, now_ms, raw_topic
from producers.simulators.element import ElementSimulator
from producers.sink import JsonlSink, KafkaSink
from producers.sources.element import ElementStats, recover_cursor, run_element
from producers.sources.history import JsonlHistory, KafkaHistory
from tests.integration.producers.helpers import producing
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration

KEY = register_secret("el-resume/46cb+688e=2c0b&x")
TOPIC = raw_topic("element")
TIMEOUT = 60.0


def readings(sim: ElementSimulator) -> list[tuple[str, str]]:
    return [(e.id, e.inserted_at) for e in sim.history if e.socket == "readings"]


def events(envelopes: list[RawEnvelope]) -> list[tuple[str, str]]:
    """(id, inserted_at) of every event published, minus those flagged as duplicates."""
    out = []
    for envelope in envelopes:
        skip = set(envelope.meta.get("duplicates", []))
        for event in orjson.loads(envelope.payload):
            body = event["body"]
            if body["id"] not in skip:
                out.append((body["id"], body["inserted_at"]))
    return out


def assert_every_reading_once(recorded: list[tuple[str, str]], sim: ElementSimulator) -> None:
    """Every reading the server inserted from the oldest to the newest recorded, exactly once.

    (The first run starts live, so readings inserted before it are not expected.)
    """
    assert len(recorded) == len(set(recorded)), "a reading was recorded twice"
    oldest = min(at for _, at in recorded)
    newest = max(at for _, at in recorded)
    expected = [r for r in readings(sim) if oldest <= r[1] <= newest]
    assert sorted(recorded) == sorted(expected)


async def wait_until(predicate: Any, wait_timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(wait_timeout):
        while not predicate():  # noqa: ASYNC110  # simulator counters: nothing to await
            await asyncio.sleep(0.05)


class TopicReader:
    """Reads ``raw.element.v1`` from the start, keeping one stream's envelopes."""

    def __init__(self, bootstrap: str, stream: str) -> None:
        self.stream = stream
        self.envelopes: list[RawEnvelope] = []
        self._consumer = AIOKafkaConsumer(
            TOPIC,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def until(self, count: int, since_ms: int = 0) -> None:
        """Read until ``count`` envelopes of the stream received from ``since_ms`` on arrived."""
        async with asyncio.timeout(TIMEOUT):
            while sum(e.received_at_ms >= since_ms for e in self.envelopes) < count:
                await self.poll()

    async def drain(self) -> None:
        """Read up to the current end of every partition (everything written so far)."""
        async with asyncio.timeout(TIMEOUT):
            while not self._consumer.assignment():
                await self.poll()
            partitions = list(self._consumer.assignment())
            ends = await self._consumer.end_offsets(partitions)
            for tp in partitions:
                while await self._consumer.position(tp) < ends[tp]:
                    await self.poll()

    async def poll(self) -> None:
        batches = await self._consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for record in records:
                envelope = decode_envelope(record.value)
                if envelope.stream == self.stream:
                    self.envelopes.append(envelope)


async def start_producer(name: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamwarden",
        "produce",
        name,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


def sources_file(tmp_path: Path, sim: ElementSimulator, name: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n"
        f"  - name: {name}\n"
        "    kind: element\n"
        f"    url: {sim.url}\n"
        "    api_key: ${ELEMENT_RESUME_KEY}\n"
        "    scope: stream\n"
        f"    scope_id: {sim.stream_id}\n"
        "    backoff_initial: 0.05\n"
        "    backoff_max: 0.5\n",
        encoding="utf-8",
    )
    return path


async def test_a_producer_killed_and_restarted_records_every_reading_once(
    embedded_broker: Any, tmp_path: Path
) -> None:
    embedded_broker.create_topics({TOPIC: 3})
    name = f"element-resume-{uuid.uuid4().hex[:8]}"
    async with ElementSimulator(KEY, interval=0.05, devices=4, seed=11) as sim:
        env = {
            **os.environ,
            "STREAMWARDEN_KAFKA_BOOTSTRAP": embedded_broker.bootstrap,
            "STREAMWARDEN_SOURCES_FILE": str(sources_file(tmp_path, sim, name)),
            "ELEMENT_RESUME_KEY": KEY,
        }
        async with TopicReader(embedded_broker.bootstrap, name) as topic:
            first = await start_producer(name, env)
            try:
                await topic.until(20)
            finally:
                first.send_signal(signal.SIGKILL)
                await first.wait()
            assert first.returncode == -signal.SIGKILL
            # The server keeps inserting while no producer runs.
            down_from = len(readings(sim))
            await wait_until(lambda: len(readings(sim)) >= down_from + 40)
            missed = readings(sim)[down_from:]
            started_ms = now_ms()
            second = await start_producer(name, env)
            try:
                await wait_until(lambda: len(readings(sim)) >= down_from + 80)
                await topic.until(20, since_ms=started_ms)  # it runs: SIGTERM is handled
            finally:
                second.send_signal(signal.SIGTERM)
                async with asyncio.timeout(TIMEOUT):
                    _, stderr = await second.communicate()
            assert second.returncode == 0, stderr.decode()
            assert b"resuming before the newest readings already written" in stderr
            assert KEY.encode() not in stderr
            # Everything the second producer wrote is in the topic now (it flushed on SIGTERM).
            await topic.drain()
        recorded = events(topic.envelopes)
        assert set(missed) <= set(recorded)
        assert_every_reading_once(recorded, sim)


async def test_record_twice_to_one_file_resumes_from_its_last_line(tmp_path: Path) -> None:
    out = tmp_path / "element.jsonl"
    async with ElementSimulator(KEY, interval=0.05, devices=4, seed=12) as sim:
        source = ElementSource(
            name="element-rec",
            kind="element",
            url=sim.url,
            api_key=KEY,
            scope="stream",
            scope_id=sim.stream_id,
            backoff_initial=0.05,
            backoff_max=0.2,
        )
        missed: list[tuple[str, str]] = []
        for frames in (15, 15 + 30 + 10):
            sink = JsonlSink(out)
            async with producing(source, sink):  # type: ignore[arg-type]
                await wait_until(lambda: sink.written_total >= frames)  # noqa: B023
            await sink.close()
            if not missed:
                down_from = len(readings(sim))
                await wait_until(lambda: len(readings(sim)) >= down_from + 30)  # noqa: B023
                missed = readings(sim)[down_from:]
    lines = out.read_bytes().splitlines()
    recorded = events([decode_envelope(line) for line in lines])
    assert set(missed) <= set(recorded)  # inserted while no producer ran: replayed
    assert_every_reading_once(recorded, sim)


async def test_a_cut_last_line_and_other_streams_are_skipped(tmp_path: Path) -> None:
    out = tmp_path / "element.jsonl"
    ours = (
        '[{"event":"reading_added","body":{"id":"r1","inserted_at":"2024-06-06T13:49:42.049158Z"}}]'
    )
    theirs = (
        '[{"event":"reading_added","body":{"id":"r9","inserted_at":"2030-01-01T00:00:00.000000Z"}}]'
    )
    lines = [
        encode_envelope(RawEnvelope("element", "element-rec", 1, ours, {"connection": 1})),
        encode_envelope(RawEnvelope("element", "someone-else", 2, theirs, {"connection": 1})),
        encode_envelope(RawEnvelope("element", "element-rec", 3, ours, {}))[:25],  # crash
    ]
    out.write_bytes(b"\n".join(lines))
    source = ElementSource(
        name="element-rec",
        kind="element",
        url="ws://127.0.0.1:9",
        api_key=KEY,
        scope="mandate",
    )
    sink = JsonlSink(out)
    try:
        cursor = await recover_cursor(source, sink, None)
    finally:
        await sink.close()
    assert cursor is not None
    # Everything written is recent (could miss part of a last batch): start just before it,
    # and skip what is already there.
    assert cursor.after == "2024-06-06T13:49:42.049157Z"
    assert cursor.known == {"r1"}
    assert await JsonlHistory(tmp_path / "missing.jsonl").tail("element", bool, 10) == []


async def test_kafka_history_of_an_absent_topic_is_empty(embedded_broker: Any) -> None:
    history = KafkaHistory(embedded_broker.bootstrap)
    found = await history.tail(f"absent{uuid.uuid4().hex[:8]}", lambda _e: True, 10)
    assert found == []


async def test_an_unreachable_kafka_is_waited_for_never_started_live(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = ElementSource(
        name="element-wait", kind="element", url="ws://127.0.0.1:9", api_key=KEY, scope="mandate"
    )
    sink = KafkaSink("127.0.0.1:9", buffer_max_messages=10, client_id="resume-wait")
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(2.5, stop.set)
    async with asyncio.timeout(TIMEOUT):
        assert await recover_cursor(source, sink, None, stop) is None
    await sink.close()
    warnings = [r.getMessage() for r in caplog.records if "cannot read back" in r.getMessage()]
    assert warnings and "source=element-wait" in warnings[0]


@pytest.mark.parametrize("tail", [500, 10])
async def test_envelopes_lost_from_the_last_batch_are_replayed_and_nothing_twice(
    embedded_broker: Any, tail: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A killed producer's last batch can be partly delivered in any order across partitions:
    # here the 30th and 35th of 40 readings are missing while later ones are in Kafka.
    monkeypatch.setattr("producers.sources.history.TAIL", tail)
    embedded_broker.create_topics({TOPIC: 3})
    name = f"element-lost-{uuid.uuid4().hex[:8]}"
    lost = {29, 34}
    async with ElementSimulator(KEY, interval=0.02, devices=4, seed=13) as sim:
        await wait_until(lambda: len(readings(sim)) >= 40)
        written = [e for e in sim.history if e.socket == "readings"][:40]
        before = KafkaSink(embedded_broker.bootstrap, buffer_max_messages=100, client_id=name)
        for index, event in enumerate(written):
            if index not in lost:
                envelope = RawEnvelope("element", name, now_ms(), f"[{event.text}]", {})
                await before.send(event.device_id.encode(), envelope)
        await before.close()
        source = ElementSource(
            name=name,
            kind="element",
            url=sim.url,
            api_key=KEY,
            scope="stream",
            scope_id=sim.stream_id,
            backoff_initial=0.05,
            backoff_max=0.2,
        )
        sink = KafkaSink(embedded_broker.bootstrap, buffer_max_messages=100, client_id=name)
        stats = ElementStats()
        stop = asyncio.Event()
        task = asyncio.create_task(run_element(source, sink, stop, stats=stats))
        async with TopicReader(embedded_broker.bootstrap, name) as topic:
            try:
                await topic.until(40 + 20)
            finally:
                stop.set()
                async with asyncio.timeout(TIMEOUT):
                    await task
                await sink.close()
            await topic.drain()
    recorded = events(topic.envelopes)
    assert {written[i].id for i in lost} <= {i for i, _ in recorded}
    assert_every_reading_once(recorded, sim)
    assert stats.duplicates_total >= 5  # replayed readings already in Kafka were skipped

"""JsonlSink round trip and KafkaSink behaviour against a fake aiokafka producer."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
)

from producers.backoff import Backoff
from producers.envelope import RawEnvelope, decode_envelope, encode_envelope
from producers.errors import SinkError
from producers.redact import SecretFilter
from producers.sink import (
    DEADLETTER_TOPIC,
    EXCERPT_BYTES,
    DeadLetterRecord,
    JsonlSink,
    KafkaSink,
    frame_excerpt,
    is_retriable_kafka_error,
)
from tests.support.secrets import register_secret


def envelope(n: int, source: str = "aliunid") -> RawEnvelope:
    return RawEnvelope(
        source=source,
        stream="s",
        received_at_ms=1_700_000_000_000 + n,
        payload=f'{{"type":"data","id":"mp-{n}"}}',
        meta={"connection": 1},
    )


# --------------------------------------------------------------------------- JsonlSink


async def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    sent = [envelope(i) for i in range(3)] + [
        RawEnvelope("aliunid", "s", 1, 'line\nbreak "quoted" é', {"connection": 2})
    ]
    async with JsonlSink(path) as sink:
        for e in sent:
            await sink.send(b"key", e)
        # Every line is on disk as soon as send returns (no buffering in the process).
        assert len(path.read_bytes().splitlines()) == 4
    lines = path.read_bytes().splitlines()
    assert [decode_envelope(line) for line in lines] == sent
    assert lines[0] == encode_envelope(sent[0])
    assert not sink.full.is_set()


async def test_jsonl_appends_to_an_existing_recording(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    for n in range(2):
        sink = JsonlSink(path)
        await sink.send(None, envelope(n))
        await sink.close()
    assert [decode_envelope(x).received_at_ms for x in path.read_bytes().splitlines()] == [
        1_700_000_000_000,
        1_700_000_000_001,
    ]


async def test_jsonl_max_messages_sets_full_and_records_exactly_n(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    sink = JsonlSink(path, max_messages=2)
    await sink.send(None, envelope(0))
    assert not sink.full.is_set()
    await sink.send(None, envelope(1))
    async with asyncio.timeout(1):
        await sink.full.wait()
    await sink.send(None, envelope(2))
    await sink.close()
    assert len(path.read_bytes().splitlines()) == 2
    assert sink.written_total == 2
    assert sink.ignored_total == 1


async def test_jsonl_unopenable_file_is_a_sink_error(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "rec.jsonl"
    with pytest.raises(SinkError) as info:
        JsonlSink(path)
    assert str(info.value) == (
        f"cannot open the recording file path={path}: No such file or directory"
    )


async def test_jsonl_send_after_close_fails(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "rec.jsonl")
    await sink.close()
    await sink.close()  # idempotent
    with pytest.raises(SinkError, match="jsonl sink is closed"):
        await sink.send(None, envelope(0))


# --------------------------------------------------------------------------- KafkaSink


class FakeProducer:
    """Enough of AIOKafkaProducer: futures resolve when ``gate`` is open; scripted failures."""

    def __init__(
        self,
        *,
        start_failures: list[BaseException] | None = None,
        send_failures: list[BaseException | None] | None = None,
        enqueue_failures: list[BaseException | None] | None = None,
    ) -> None:
        self.start_failures = list(start_failures or [])
        self.send_failures = list(send_failures or [])
        self.enqueue_failures = list(enqueue_failures or [])
        self.gate = asyncio.Event()
        self.gate.set()
        self.delivered: list[tuple[str, bytes | None, bytes]] = []
        self.start_calls = 0
        self.stop_calls = 0
        self.attempts = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.start_calls += 1
        if self.start_failures:
            raise self.start_failures.pop(0)

    async def stop(self) -> None:
        self.stop_calls += 1
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Awaitable[Any]:
        self.attempts += 1
        assert value is not None
        if self.enqueue_failures:
            failure = self.enqueue_failures.pop(0)
            if failure is not None:
                raise failure
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        error = self.send_failures.pop(0) if self.send_failures else None

        async def complete() -> None:
            await self.gate.wait()
            if error is not None:
                future.set_exception(error)
            else:
                self.delivered.append((topic, key, value))
                future.set_result(None)

        task = asyncio.create_task(complete())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return future


def make_sink(fake: FakeProducer, *, buffer: int = 100, close_timeout: float = 5.0) -> KafkaSink:
    return KafkaSink(
        "kafka:9092",
        buffer_max_messages=buffer,
        client_id="test",
        producer_factory=lambda: fake,
        retry_backoff=Backoff(initial=0.001, maximum=0.005),
        close_timeout=close_timeout,
    )


async def test_kafka_sink_sends_to_the_raw_topic_with_key_and_envelope_json() -> None:
    fake = FakeProducer()
    sink = make_sink(fake)
    await sink.send(b"mp-1", envelope(1))
    await sink.send(None, envelope(2, source="nobil"))
    async with asyncio.timeout(5):
        await sink.flush()
    assert fake.delivered == [
        ("raw.aliunid.v1", b"mp-1", encode_envelope(envelope(1))),
        ("raw.nobil.v1", None, encode_envelope(envelope(2, source="nobil"))),
    ]
    assert sink.sent_total == 2
    assert sink.buffered == 0
    async with asyncio.timeout(5):
        await sink.close()
    assert fake.stop_calls == 1
    with pytest.raises(SinkError, match="kafka sink is closed"):
        await sink.send(None, envelope(3))


async def test_flush_waits_for_acknowledgements() -> None:
    fake = FakeProducer()
    fake.gate.clear()
    sink = make_sink(fake)
    await sink.send(None, envelope(1))
    flush = asyncio.create_task(sink.flush())
    done, _ = await asyncio.wait({flush}, timeout=0.05)
    assert not done
    assert sink.buffered == 1
    fake.gate.set()
    async with asyncio.timeout(5):
        await flush
    assert sink.sent_total == 1
    async with asyncio.timeout(5):
        await sink.close()


async def test_full_buffer_applies_backpressure_and_warns_once_per_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeProducer()
    fake.gate.clear()
    sink = make_sink(fake, buffer=2)
    await sink.send(None, envelope(1))
    await sink.send(None, envelope(2))
    blocked = [asyncio.create_task(sink.send(None, envelope(n))) for n in (3, 4)]
    done, _ = await asyncio.wait(blocked, timeout=0.05)
    assert not done
    assert sink.buffer_full_total == 1
    full_warnings = [r for r in caplog.records if r.getMessage().startswith("kafka buffer full")]
    assert len(full_warnings) == 1
    assert full_warnings[0].levelno == logging.WARNING
    assert "buffered=2 max=2 buffer_full_total=1" in full_warnings[0].getMessage()

    fake.gate.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*blocked)
        await sink.flush()
    assert [decode_envelope(v).received_at_ms % 10 for _, _, v in fake.delivered] == [1, 2, 3, 4]
    # A new episode counts again.
    fake.gate.clear()
    for n in (5, 6):
        await sink.send(None, envelope(n))
    blocked_again = asyncio.create_task(sink.send(None, envelope(7)))
    done, _ = await asyncio.wait({blocked_again}, timeout=0.05)
    assert not done
    assert sink.buffer_full_total == 2
    fake.gate.set()
    async with asyncio.timeout(5):
        await blocked_again
        await sink.close()
    assert sink.sent_total == 7


async def test_retriable_delivery_errors_are_retried_not_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeProducer(
        send_failures=[None, RequestTimedOutError(), None, KafkaConnectionError()],
        enqueue_failures=[None, None, None, None, KafkaConnectionError()],
    )
    sink = make_sink(fake)
    for n in range(4):
        await sink.send(None, envelope(n))
    async with asyncio.timeout(5):
        await sink.flush()
    delivered = [decode_envelope(v).received_at_ms % 10 for _, _, v in fake.delivered]
    assert sorted(delivered) == [0, 1, 2, 3]  # every envelope exactly once
    assert sink.sent_total == 4
    assert sink.failed_total >= 2
    assert any(r.getMessage().startswith("kafka delivery failed; retrying") for r in caplog.records)
    async with asyncio.timeout(5):
        await sink.close()


async def test_failed_start_is_retried() -> None:
    fake = FakeProducer(start_failures=[KafkaConnectionError(), KafkaConnectionError()])
    sink = make_sink(fake)
    await sink.send(b"k", envelope(1))
    async with asyncio.timeout(5):
        await sink.flush()
    assert fake.start_calls == 3
    assert sink.sent_total == 1
    async with asyncio.timeout(5):
        await sink.close()


async def test_non_retriable_error_fails_the_sink_loudly() -> None:
    fake = FakeProducer(send_failures=[TopicAuthorizationFailedError()])
    sink = make_sink(fake)
    await sink.send(None, envelope(1))
    async with asyncio.timeout(5):
        with pytest.raises(SinkError, match="kafka sink failed permanently") as info:
            await sink.flush()
    assert isinstance(info.value.__cause__, TopicAuthorizationFailedError)
    with pytest.raises(SinkError, match="failed permanently"):
        await sink.send(None, envelope(2))
    async with asyncio.timeout(5):
        with pytest.raises(SinkError, match="undelivered=1"):
            await sink.close()
    assert fake.stop_calls == 1


async def test_blocked_send_is_released_when_the_sink_fails() -> None:
    fake = FakeProducer(send_failures=[TopicAuthorizationFailedError()])
    fake.gate.clear()
    sink = make_sink(fake, buffer=1)
    await sink.send(None, envelope(1))
    blocked = asyncio.create_task(sink.send(None, envelope(2)))
    done, _ = await asyncio.wait({blocked}, timeout=0.05)
    assert not done
    fake.gate.set()
    async with asyncio.timeout(5):
        with pytest.raises(SinkError, match="failed permanently"):
            await blocked
    async with asyncio.timeout(5):
        with pytest.raises(SinkError):
            await sink.close()


async def test_close_gives_up_after_close_timeout() -> None:
    fake = FakeProducer()
    fake.gate.clear()  # never acknowledged
    sink = make_sink(fake, close_timeout=0.1)
    await sink.send(None, envelope(1))
    async with asyncio.timeout(5):
        with pytest.raises(SinkError, match=r"undelivered envelopes count=1 timeout_s=0\.1"):
            await sink.close()
    assert fake.stop_calls == 1


async def test_close_without_any_send_is_a_no_op() -> None:
    fake = FakeProducer()
    sink = make_sink(fake)
    async with asyncio.timeout(5):
        await sink.flush()
        await sink.close()
    assert fake.start_calls == 0


def test_buffer_must_hold_at_least_one_envelope() -> None:
    with pytest.raises(ValueError, match="buffer_max_messages must be >= 1, got 0"):
        KafkaSink("k:9092", buffer_max_messages=0, client_id="c")


@pytest.mark.parametrize(
    ("exc", "retriable"),
    [
        (KafkaConnectionError(), True),
        (RequestTimedOutError(), True),
        (KafkaTimeoutError(), True),
        (MessageSizeTooLargeError(), False),
        (OSError("connection reset"), True),
        (ValueError("bug"), False),
    ],
)
def test_retriable_classification(exc: BaseException, retriable: bool) -> None:
    assert is_retriable_kafka_error(exc) is retriable


# --------------------------------------------------------------------------- dead letters

SECRET = register_secret("k3y-of-the-upstream")


def test_dead_letter_topic_is_the_pipeline_one() -> None:
    from pipeline.topics import DEADLETTER_TOPIC as PIPELINE_TOPIC

    assert DEADLETTER_TOPIC == PIPELINE_TOPIC


def test_excerpt_of_long_text_is_the_first_kib_without_splitting_a_character() -> None:
    frame = "a" * 1023 + "é" + "b" * 5000  # 'é' is 2 bytes and straddles byte 1024
    excerpt = frame_excerpt(frame)
    assert excerpt == "a" * 1023
    assert frame_excerpt("short") == "short"


def test_excerpt_masks_secrets_even_across_the_cut() -> None:
    masking = SecretFilter([SECRET], redact_credentials=True)
    frame = "x" * 1010 + SECRET + "y" * 3000  # the secret starts before byte 1024, ends after
    excerpt = frame_excerpt(frame, masking.redact)
    assert isinstance(excerpt, str)
    assert SECRET[:10] not in excerpt
    assert excerpt == ("x" * 1010 + "***" + "y" * 3000)[:1024]
    # Without known secrets, credential parameters are still masked.
    assert frame_excerpt('{"url": "wss://h/live?apiKey=abc123def"}') == (
        '{"url": "wss://h/live?apiKey=***"}'
    )


def test_excerpt_of_bytes_is_text_when_utf8_else_the_raw_bytes() -> None:
    text_bytes = ("ü" * 2000).encode()  # cut at 1024+256 bytes falls between characters
    excerpt = frame_excerpt(text_bytes)
    assert excerpt == "ü" * 512
    binary = bytes(range(256)) * 10
    assert frame_excerpt(binary) == binary[:1024]


async def test_kafka_sink_dead_letters_go_to_the_deadletter_topic_as_pipeline_records() -> None:
    from pipeline.models import DeadLetter

    fake = FakeProducer()
    sink = make_sink(fake)
    frame = '{"type":"data","echo":"wss://h/live?apiKey=' + SECRET + '"}' + "z" * 4000
    await sink.send_dead_letter(
        "aliunid",
        "aliunid-main",
        "frame of 4040 bytes exceeds max_frame_bytes=1000",
        frame_excerpt(frame),
        received_at_ms=1_700_000_000_123,
    )
    await sink.send_dead_letter("hemis", "b1", "too large", b"\xff\x00" * 900)
    async with asyncio.timeout(5):
        await sink.close()
    assert [(t, k) for t, k, _ in fake.delivered] == [
        (DEADLETTER_TOPIC, b"aliunid-main"),
        (DEADLETTER_TOPIC, b"b1"),
    ]
    assert sink.deadlettered_total == 2
    assert sink.sent_total == 2
    first = msgspec.json.decode(fake.delivered[0][2], type=DeadLetterRecord)
    assert first.stage == "producer"
    assert (first.topic, first.partition, first.offset) == ("", -1, -1)
    assert (first.source, first.stream, first.received_at_ms) == (
        "aliunid",
        "aliunid-main",
        1_700_000_000_123,
    )
    assert first.reason == "frame of 4040 bytes exceeds max_frame_bytes=1000"
    assert first.encoding == "text"
    assert len(first.raw.encode()) <= EXCERPT_BYTES
    assert first.raw.startswith('{"type":"data","echo":"wss://h/live?apiKey=***"}zzz')
    assert SECRET not in first.raw  # a credential parameter, masked
    assert first.failed_at_ms >= first.received_at_ms
    # The pipeline's reader of deadletter.v1 understands producer records too.
    common = msgspec.json.decode(fake.delivered[0][2], type=DeadLetter)
    assert (common.stage, common.raw) == ("producer", first.raw)
    second = msgspec.json.decode(fake.delivered[1][2], type=DeadLetterRecord)
    assert second.encoding == "base64"
    assert base64.b64decode(second.raw) == (b"\xff\x00" * 900)[:EXCERPT_BYTES]


async def test_kafka_sink_dead_letter_after_close_fails() -> None:
    sink = make_sink(FakeProducer())
    await sink.close()
    with pytest.raises(SinkError, match="kafka sink is closed"):
        await sink.send_dead_letter("aliunid", "s", "too large", "x")


async def test_jsonl_dead_letters_go_to_their_own_file(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    sink = JsonlSink(path, max_messages=1)
    assert sink.deadletter_path == tmp_path / "rec.deadletter.jsonl"
    await sink.send(None, envelope(0))
    assert not sink.deadletter_path.exists()  # opened on the first dead letter only
    await sink.send_dead_letter(
        "nobil", "n1", "frame of 2000 bytes exceeds x", "y" * 2000, received_at_ms=7
    )
    await sink.send_dead_letter("nobil", "n1", "second", b"\x80\x81")
    await sink.close()
    assert [decode_envelope(x) for x in path.read_bytes().splitlines()] == [envelope(0)]
    records = [
        msgspec.json.decode(line, type=DeadLetterRecord)
        for line in sink.deadletter_path.read_bytes().splitlines()
    ]
    assert [(r.stage, r.source, r.stream, r.reason) for r in records] == [
        ("producer", "nobil", "n1", "frame of 2000 bytes exceeds x"),
        ("producer", "nobil", "n1", "second"),
    ]
    assert records[0].raw == "y" * EXCERPT_BYTES
    assert records[0].received_at_ms == 7
    assert (records[1].encoding, records[1].raw) == ("base64", "gIE=")
    assert sink.deadlettered_total == 2
    assert sink.written_total == 1  # dead letters do not count towards max_messages
    with pytest.raises(SinkError, match="jsonl sink is closed"):
        await sink.send_dead_letter("nobil", "n1", "late", "x")


def test_jsonl_dead_letter_file_name_for_other_suffixes(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "frames.log")
    assert sink.deadletter_path == tmp_path / "frames.log.deadletter.jsonl"
    sink._file.close()


async def test_a_record_the_broker_refuses_as_too_large_is_dead_lettered_and_the_sink_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16, defect 4: the broker's own size limit (lower than ours) stops nothing."""
    fake = FakeProducer(send_failures=[MessageSizeTooLargeError()])
    sink = make_sink(fake)
    await sink.send(b"k", envelope(1))
    await sink.send(b"k", envelope(2))
    async with asyncio.timeout(5):
        await sink.flush()
    by_topic = {topic: value for topic, _, value in fake.delivered}
    assert sorted(by_topic) == ["deadletter.v1", "raw.aliunid.v1"]
    letter = msgspec.json.decode(by_topic["deadletter.v1"], type=DeadLetterRecord)
    assert "refused by the broker as too large" in letter.reason
    assert sink.oversized_total == 1
    assert "broker refused an envelope as too large" in caplog.text
    async with asyncio.timeout(5):
        await sink.close()


async def test_an_envelope_over_the_message_size_is_dead_lettered_before_sending() -> None:
    fake = FakeProducer()
    sink = KafkaSink(
        "kafka:9092",
        buffer_max_messages=10,
        client_id="test",
        producer_factory=lambda: fake,
        max_message_bytes=4096,
    )
    big = RawEnvelope("aliunid", "s", 7, '{"token": "t-secret-123", "q": "' + '\\"' * 2000 + '"}')
    await sink.send(None, big)
    await sink.send(None, envelope(2))
    async with asyncio.timeout(5):
        await sink.flush()
    assert [topic for topic, _, _ in fake.delivered] == ["deadletter.v1", "raw.aliunid.v1"]
    letter = msgspec.json.decode(fake.delivered[0][2], type=DeadLetterRecord)
    assert "exceeds the broker message size (4096 bytes)" in letter.reason
    assert "t-secret-123" not in letter.raw
    assert sink.oversized_total == 1 and sink.deadlettered_total == 1
    async with asyncio.timeout(5):
        await sink.close()

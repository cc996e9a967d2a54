"""Where producers put envelopes: Kafka in production, a JSONL file when recording.

:class:`KafkaSink` decouples the upstream from Kafka with a bounded in-memory buffer of
*unacknowledged* envelopes. While Kafka is slow or down, the buffer fills, then ``send`` waits
(backpressure: the producer stops reading the upstream socket) instead of dropping. Transient
delivery errors are retried with backoff, forever; a non-retriable error stops the sink with
:class:`~producers.errors.SinkError`, which stops the producer loudly rather than stalling or
dropping silently.

Oversized envelopes: a frame under ``max_frame_bytes`` can still make an envelope larger than
the broker accepts once JSON-escaped (a 600 KB frame of ``"`` becomes 1.2 MB). One frame must
never stop a producer, so :meth:`KafkaSink.send` checks the *encoded* size against
``max_message_bytes`` before sending and dead-letters an envelope that does not fit (reason and
masked excerpt), then carries on; a broker that still refuses a record as too large (its own
limit set lower) gets the same treatment instead of failing the sink.

Dead letters: a frame a transport refuses (larger than ``max_frame_bytes``) is not dropped
silently. The transport hands the sink a reason and the first :data:`EXCERPT_BYTES` bytes of the
frame (:func:`frame_excerpt`, credentials masked) through :meth:`EnvelopeSink.send_dead_letter`;
:class:`KafkaSink` writes a :class:`DeadLetterRecord` to :data:`DEADLETTER_TOPIC` (the record
shape of ``pipeline.models.DeadLetter`` with ``stage="producer"``), :class:`JsonlSink` appends
it to a file next to the recording (``<name>.deadletter.jsonl``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from io import BufferedWriter
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import msgspec

from producers.backoff import Backoff
from producers.envelope import RawEnvelope, decode_envelope, encode_envelope, now_ms, raw_topic
from producers.errors import SinkError
from producers.redact import redact_known, redact_text

__all__ = [
    "DEADLETTER_TOPIC",
    "EXCERPT_BYTES",
    "MAX_MESSAGE_BYTES",
    "DeadLetterRecord",
    "DeadLetterRoute",
    "DeadLetterSink",
    "EnvelopeSink",
    "JsonlSink",
    "KafkaProducerLike",
    "KafkaSink",
    "encode_dead_letter",
    "frame_excerpt",
    "is_retriable_kafka_error",
]

logger = logging.getLogger(__name__)

#: The dead-letter topic (the same name as ``pipeline.topics.DEADLETTER_TOPIC``).
DEADLETTER_TOPIC = "deadletter.v1"
#: How long the producer gathers envelopes into one batch: 5 ms of latency for batches the
#: broker and the worker's fetches handle many frames at a time.
PRODUCER_LINGER_MS = 5
#: Largest record the producer sends: aiokafka's (and Kafka's) default ``max_request_size``.
MAX_MESSAGE_BYTES = 1_048_576
#: Bytes of a record beyond its key and value (batch and record headers), with margin.
RECORD_OVERHEAD_BYTES = 512
#: Most bytes of a refused frame kept in its dead letter.
EXCERPT_BYTES = 1024
#: Extra text redacted beyond the excerpt, so a secret cut by the excerpt's end is masked whole.
_REDACT_MARGIN = 256


class DeadLetterRecord(msgspec.Struct, frozen=True):
    """A frame a producer refused, as written to ``deadletter.v1``.

    The first seven fields are those of ``pipeline.models.DeadLetter`` (so one reader handles
    every stage); the producer has no Kafka position, hence ``topic=""``, ``partition=-1``,
    ``offset=-1``.

    Attributes:
        stage: always ``producer``.
        reason: why the frame was refused, secret-free.
        raw: the first :data:`EXCERPT_BYTES` bytes of the frame: text, or base64 when
            ``encoding == "base64"`` (binary or not UTF-8).
        failed_at_ms: when it was dead-lettered.
        source, stream, received_at_ms: as in the envelope the frame would have had.
        encoding: ``text`` or ``base64``.
    """

    stage: str
    reason: str
    topic: str
    partition: int
    offset: int
    raw: str
    failed_at_ms: int
    source: str
    stream: str
    received_at_ms: int
    encoding: str = "text"


_dead_letter_encoder = msgspec.json.Encoder()


def frame_excerpt(
    frame: str | bytes,
    redact: Callable[[str], str] = redact_text,
    *,
    limit: int = EXCERPT_BYTES,
) -> str | bytes:
    """The first ``limit`` bytes of a frame, for a dead letter; text with secrets masked.

    Text (and bytes that are UTF-8 text) is passed through ``redact`` (a transport's
    :class:`~producers.redact.SecretFilter`, which also masks credential parameters) before it
    is cut, so a secret straddling the cut is masked whole. Other bytes are returned cut, as
    bytes (the sink stores them base64-encoded).
    """
    head = frame[: limit + _REDACT_MARGIN]
    if isinstance(head, bytes):
        text = _utf8_prefix(head)
        if text is None:
            return head[:limit]
    else:
        text = head
    masked = redact(text).encode("utf-8", "surrogatepass")[:limit]
    return masked.decode("utf-8", "ignore")


def _utf8_prefix(data: bytes) -> str | None:
    """``data`` as text when it is UTF-8 (a character cut at its end is dropped); else None."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data":
            return None
        try:
            return data[: exc.start].decode("utf-8")
        except UnicodeDecodeError:
            return None


def encode_dead_letter(
    source: str,
    stream: str,
    reason: str,
    excerpt: str | bytes,
    *,
    received_at_ms: int | None = None,
) -> bytes:
    """The JSON of a :class:`DeadLetterRecord` (``excerpt`` cut to :data:`EXCERPT_BYTES`).

    The reason and text excerpts are masked once more with
    :func:`~producers.redact.redact_text`: dead letters are kept and shown to operators.
    """
    if isinstance(excerpt, bytes):
        raw = base64.b64encode(excerpt[:EXCERPT_BYTES]).decode("ascii")
        encoding = "base64"
    else:
        cut = excerpt.encode("utf-8", "surrogatepass")[:EXCERPT_BYTES]
        raw = redact_text(cut.decode("utf-8", "ignore"))
        encoding = "text"
    failed_at_ms = now_ms()
    record = DeadLetterRecord(
        stage="producer",
        reason=redact_text(reason),
        topic="",
        partition=-1,
        offset=-1,
        raw=raw,
        failed_at_ms=failed_at_ms,
        source=source,
        stream=stream,
        received_at_ms=failed_at_ms if received_at_ms is None else received_at_ms,
        encoding=encoding,
    )
    return _dead_letter_encoder.encode(record)


class DeadLetterSink(Protocol):
    """Where refused frames go (every :class:`EnvelopeSink` is one)."""

    async def send_dead_letter(
        self,
        source: str,
        stream: str,
        reason: str,
        excerpt: str | bytes,
        *,
        received_at_ms: int | None = None,
    ) -> None:
        """Record a refused frame: ``source``/``stream`` as in its envelope, ``reason``
        secret-free, ``excerpt`` from :func:`frame_excerpt`; may wait like ``send``."""
        ...


@dataclass(frozen=True)
class DeadLetterRoute:
    """What a transport needs to dead-letter a frame: the sink and the envelope's names.

    Attributes:
        sink: the producer's sink.
        source: the upstream family (``RawEnvelope.source``, e.g. ``aliunid``).
        stream: the configured source name (``RawEnvelope.stream``).
    """

    sink: DeadLetterSink
    source: str
    stream: str

    async def send(self, reason: str, excerpt: str | bytes, *, received_at_ms: int) -> None:
        """Dead-letter one frame (see :meth:`DeadLetterSink.send_dead_letter`)."""
        await self.sink.send_dead_letter(
            self.source, self.stream, reason, excerpt, received_at_ms=received_at_ms
        )


class EnvelopeSink(DeadLetterSink, Protocol):
    """Destination of envelopes. Implementations may apply backpressure in ``send``."""

    async def send(self, key: bytes | None, envelope: RawEnvelope) -> None:
        """Accept one envelope; may wait while the sink is full."""
        ...

    async def flush(self) -> None:
        """Return once every envelope accepted so far is durably delivered."""
        ...

    async def close(self) -> None:
        """Flush, then release resources. The sink cannot be used afterwards."""
        ...


class KafkaProducerLike(Protocol):
    """The part of ``aiokafka.AIOKafkaProducer`` the sink uses (tests pass a fake)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Awaitable[Any]: ...


def is_retriable_kafka_error(exc: BaseException) -> bool:
    """Whether retrying a failed Kafka operation may succeed.

    aiokafka marks transient broker errors ``retriable``; its client-side timeout and
    connection errors are transient too although ``KafkaTimeoutError.retriable`` is False.
    """
    from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

    if isinstance(exc, KafkaTimeoutError | KafkaConnectionError | OSError | TimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


def _is_too_large(exc: BaseException) -> bool:
    """Whether Kafka (client or broker) refused a record for its size."""
    from aiokafka.errors import MessageSizeTooLargeError

    return isinstance(exc, MessageSizeTooLargeError)


@dataclass(slots=True)
class _Pending:
    seq: int
    topic: str
    key: bytes | None
    value: bytes


_MAX_BATCH = 500


class KafkaSink:
    """Send envelopes to ``raw.<source>.v1`` with an idempotent, ``acks="all"`` producer.

    Args:
        bootstrap: ``host:port[,host:port]``.
        buffer_max_messages: most envelopes held unacknowledged; ``send`` waits beyond it.
        client_id: Kafka client id (shows in broker logs and metrics).
        producer_factory: builds the producer; defaults to ``AIOKafkaProducer``. Called again
            after a failed start.
        retry_backoff: delays between delivery or start retries.
        close_timeout: bound on :meth:`close` (final flush, then producer stop), seconds.
        max_message_bytes: largest record sent (key, value and overhead); larger envelopes are
            dead-lettered.

    Counters (monotonic): ``sent_total`` acknowledged records (envelopes and dead letters),
    ``failed_total`` failed delivery attempts (each retried), ``buffer_full_total`` times the
    buffer filled up, ``deadlettered_total`` dead letters accepted, ``oversized_total``
    envelopes dead-lettered for their size.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        buffer_max_messages: int,
        client_id: str,
        producer_factory: Callable[[], KafkaProducerLike] | None = None,
        retry_backoff: Backoff | None = None,
        close_timeout: float = 30.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if buffer_max_messages < 1:
            raise ValueError(f"buffer_max_messages must be >= 1, got {buffer_max_messages}")
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.buffer_max_messages = buffer_max_messages
        self.close_timeout = close_timeout
        self.max_message_bytes = max_message_bytes
        self._factory = producer_factory or self._default_factory
        self._backoff = retry_backoff or Backoff(initial=0.5, maximum=30.0)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._pending = 0
        self._seq = 0
        self._space = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._full_since: float | None = None
        self._producer: KafkaProducerLike | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self.sent_total = 0
        self.failed_total = 0
        self.buffer_full_total = 0
        self.deadlettered_total = 0
        self.oversized_total = 0

    def _default_factory(self) -> KafkaProducerLike:
        from aiokafka import AIOKafkaProducer

        producer: KafkaProducerLike = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=PRODUCER_LINGER_MS,
            max_request_size=self.max_message_bytes,
        )
        return producer

    @property
    def buffered(self) -> int:
        """Envelopes accepted but not yet acknowledged by Kafka."""
        return self._pending

    async def start(self) -> None:
        """Start the background delivery task (``send`` does it on first use)."""
        self._check_usable()
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(
                self._drain(), name=f"kafka-sink-{self.client_id}"
            )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, key: bytes | None, envelope: RawEnvelope) -> None:
        """Buffer one envelope for ``raw_topic(envelope.source)``; waits while the buffer is full.

        An envelope whose encoding is larger than ``max_message_bytes`` is dead-lettered
        instead (see the module docstring) and counted in ``oversized_total``.

        Raises:
            SinkError: the sink is closed or failed permanently.
        """
        value = encode_envelope(envelope)
        size = len(value) + len(key or b"") + RECORD_OVERHEAD_BYTES
        if size > self.max_message_bytes:
            await self._dead_letter_oversized(envelope, size)
            return
        await self._enqueue(raw_topic(envelope.source), key, value)

    async def _dead_letter_oversized(self, envelope: RawEnvelope, size: int) -> None:
        self.oversized_total += 1
        logger.warning(
            "envelope too large for the broker; dead-lettered source=%s stream=%s bytes=%d "
            "max_bytes=%d oversized_total=%d",
            envelope.source,
            envelope.stream,
            size,
            self.max_message_bytes,
            self.oversized_total,
        )
        await self.send_dead_letter(
            envelope.source,
            envelope.stream,
            f"envelope of {size} bytes once encoded exceeds the broker message size "
            f"({self.max_message_bytes} bytes)",
            frame_excerpt(envelope.payload, redact_known),
            received_at_ms=envelope.received_at_ms,
        )

    async def _enqueue(self, topic: str, key: bytes | None, value: bytes) -> None:
        await self.start()
        if self._pending >= self.buffer_max_messages:
            if self._full_since is None:
                self._full_since = time.monotonic()
                self.buffer_full_total += 1
                logger.warning(
                    "kafka buffer full; pausing upstream reads buffered=%d max=%d "
                    "buffer_full_total=%d",
                    self._pending,
                    self.buffer_max_messages,
                    self.buffer_full_total,
                )
            while self._pending >= self.buffer_max_messages:
                self._space.clear()
                await self._until_or_failed(self._space.wait())
        elif self._full_since is not None:
            logger.info(
                "kafka buffer has room again waited_s=%.1f buffered=%d",
                time.monotonic() - self._full_since,
                self._pending,
            )
            self._full_since = None
        self._seq += 1
        self._pending += 1
        self._idle.clear()
        self._queue.put_nowait(_Pending(self._seq, topic, key, value))

    async def send_dead_letter(
        self,
        source: str,
        stream: str,
        reason: str,
        excerpt: str | bytes,
        *,
        received_at_ms: int | None = None,
    ) -> None:
        """Buffer a :class:`DeadLetterRecord` for :data:`DEADLETTER_TOPIC`, keyed by ``stream``.

        Delivered like envelopes (same buffer, retries and backpressure) and counted in
        ``deadlettered_total``.

        Raises:
            SinkError: the sink is closed or failed permanently.
        """
        value = encode_dead_letter(source, stream, reason, excerpt, received_at_ms=received_at_ms)
        await self._enqueue(DEADLETTER_TOPIC, stream.encode("utf-8"), value)
        self.deadlettered_total += 1

    async def flush(self) -> None:
        """Wait until every buffered envelope is acknowledged.

        Unbounded by itself (Kafka may be down for a while): wrap it in ``asyncio.timeout``.

        Raises:
            SinkError: the sink failed permanently; the envelopes still buffered are lost.
        """
        if self._failure is not None:
            raise self._failed_error()
        if self._drain_task is None:
            return
        await self._until_or_failed(self._idle.wait())

    async def close(self) -> None:
        """Flush for at most ``close_timeout`` seconds, then stop the producer.

        Raises:
            SinkError: envelopes were left undelivered (timeout or permanent failure).
        """
        if self._closed:
            return
        undelivered_error: SinkError | None = None
        timeout = self.close_timeout
        try:
            async with asyncio.timeout(timeout):
                await self.flush()
        except TimeoutError:
            undelivered_error = SinkError(
                f"kafka sink closed with undelivered envelopes count={self._pending} "
                f"timeout_s={timeout:g}"
            )
            logger.error("%s", undelivered_error)
        except SinkError as exc:
            undelivered_error = exc
        finally:
            self._closed = True
            await self._shutdown()
        if undelivered_error is not None:
            raise undelivered_error

    async def _shutdown(self) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._drain_task
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                async with asyncio.timeout(self.close_timeout):
                    await producer.stop()
            except Exception as exc:  # closing anyway; say why it was not clean
                logger.warning("kafka producer did not stop cleanly error=%r", exc)

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failed_error()
        if self._closed:
            raise SinkError("kafka sink is closed")

    def _failed_error(self) -> SinkError:
        error = SinkError(
            f"kafka sink failed permanently: {self._failure!r}; undelivered={self._pending}"
        )
        error.__cause__ = self._failure
        return error

    async def _until_or_failed(self, waiter: Awaitable[Any]) -> None:
        """Await ``waiter`` unless the delivery task ends first (then raise SinkError)."""
        task = self._drain_task
        wait_task = asyncio.ensure_future(waiter)
        if task is None:
            await wait_task
            return
        try:
            await asyncio.wait({wait_task, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not wait_task.done():
                wait_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await wait_task
        if not wait_task.done() or wait_task.cancelled():
            raise self._failed_error() if self._failure else SinkError("kafka sink stopped")

    # ----------------------------------------------------------------- background delivery

    async def _drain(self) -> None:
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < _MAX_BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._deliver(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._failure = exc
            logger.error("kafka sink failed; stopping undelivered=%d error=%r", self._pending, exc)
            raise

    async def _deliver(self, batch: list[_Pending]) -> None:
        while batch:
            producer = await self._ready_producer()
            futures: list[tuple[_Pending, Awaitable[Any]]] = []
            failed: list[_Pending] = []
            error: BaseException | None = None
            for index, item in enumerate(batch):
                try:
                    futures.append(
                        (item, await producer.send(item.topic, item.value, key=item.key))
                    )
                except Exception as exc:
                    if _is_too_large(exc):
                        failed.append(self._as_dead_letter(item))
                        continue
                    if not is_retriable_kafka_error(exc):
                        raise
                    error = exc
                    failed.extend(batch[index:])  # do not wait for every send to time out
                    break
            results = await asyncio.gather(*(f for _, f in futures), return_exceptions=True)
            for (item, _), result in zip(futures, results, strict=True):
                if isinstance(result, BaseException):
                    if _is_too_large(result):
                        failed.append(self._as_dead_letter(item))
                        continue
                    if not is_retriable_kafka_error(result):
                        raise result
                    error = result
                    failed.append(item)
                else:
                    self._acknowledge()
            if not failed:
                self._backoff.reset()
                return
            if error is None:  # only dead letters replacing refused envelopes: send them now
                batch = sorted(failed, key=lambda p: p.seq)
                continue
            self.failed_total += len(failed)
            delay = self._backoff.next_delay()
            logger.warning(
                "kafka delivery failed; retrying failed=%d attempt=%d delay_s=%.2f "
                "failed_total=%d error=%r",
                len(failed),
                self._backoff.attempts,
                delay,
                self.failed_total,
                error,
            )
            await asyncio.sleep(delay)
            batch = sorted(failed, key=lambda p: p.seq)

    def _as_dead_letter(self, item: _Pending) -> _Pending:
        """The dead letter replacing an envelope the broker refused as too large (same place
        in the order; a dead letter itself that is refused cannot happen: it is ~2 KB)."""
        if item.topic == DEADLETTER_TOPIC:
            raise SinkError("the broker refused a dead letter as too large")
        envelope = decode_envelope(item.value)
        self.oversized_total += 1
        self.deadlettered_total += 1
        logger.warning(
            "broker refused an envelope as too large; dead-lettered source=%s stream=%s "
            "bytes=%d oversized_total=%d",
            envelope.source,
            envelope.stream,
            len(item.value),
            self.oversized_total,
        )
        value = encode_dead_letter(
            envelope.source,
            envelope.stream,
            f"envelope of {len(item.value)} bytes refused by the broker as too large",
            frame_excerpt(envelope.payload, redact_known),
            received_at_ms=envelope.received_at_ms,
        )
        return _Pending(item.seq, DEADLETTER_TOPIC, envelope.stream.encode("utf-8"), value)

    def _acknowledge(self) -> None:
        self.sent_total += 1
        self._pending -= 1
        self._space.set()
        if self._pending == 0:
            self._idle.set()

    async def _ready_producer(self) -> KafkaProducerLike:
        attempt = 0
        while self._producer is None:
            attempt += 1
            producer = self._factory()
            try:
                await producer.start()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                if not is_retriable_kafka_error(exc):
                    raise
                delay = self._backoff.next_delay()
                logger.warning(
                    "kafka unavailable; retrying bootstrap=%s attempt=%d delay_s=%.2f error=%r",
                    self.bootstrap,
                    attempt,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
            else:
                self._producer = producer
                self._backoff.reset()
                logger.info(
                    "kafka producer started bootstrap=%s client_id=%s",
                    self.bootstrap,
                    self.client_id,
                )
        return self._producer


class JsonlSink:
    """Append envelopes as JSON lines: the recording format read by ``streamwarden replay``.

    Each line is written and flushed to the OS at once (a crash loses nothing already sent);
    :meth:`flush` and :meth:`close` also ``fsync``. Keys are not stored: they are derived from
    the payload again on replay.

    Dead letters go to a separate file, :attr:`deadletter_path` (``rec.jsonl`` ->
    ``rec.deadletter.jsonl``), opened on the first one, so the recording holds only envelopes.

    Args:
        path: the file; created if missing, appended to otherwise.
        max_messages: stop recording after this many lines and set :attr:`full`; envelopes
            sent afterwards are counted in ``ignored_total`` and not written, so a recording of
            N frames has exactly N lines. Dead letters do not count.

    Raises:
        SinkError: the file cannot be opened for appending.
    """

    def __init__(self, path: Path, *, max_messages: int | None = None) -> None:
        if max_messages is not None and max_messages < 1:
            raise ValueError(f"max_messages must be >= 1 or None, got {max_messages}")
        self.path = path
        stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
        self.deadletter_path = path.with_name(f"{stem}.deadletter.jsonl")
        self.max_messages = max_messages
        self.full = asyncio.Event()
        self.written_total = 0
        self.ignored_total = 0
        self.deadlettered_total = 0
        try:
            self._file = path.open("ab")
        except OSError as exc:
            raise SinkError(f"cannot open the recording file path={path}: {exc.strerror}") from exc
        self._deadletter_file: BufferedWriter | None = None
        self._closed = False

    async def send(self, key: bytes | None, envelope: RawEnvelope) -> None:
        """Write one envelope line (``key`` is not stored).

        Raises:
            SinkError: the sink is closed.
        """
        if self._closed:
            raise SinkError(f"jsonl sink is closed path={self.path}")
        if self.full.is_set():
            self.ignored_total += 1
            return
        self._file.write(encode_envelope(envelope) + b"\n")
        self._file.flush()
        self.written_total += 1
        if self.max_messages is not None and self.written_total >= self.max_messages:
            self.full.set()

    async def send_dead_letter(
        self,
        source: str,
        stream: str,
        reason: str,
        excerpt: str | bytes,
        *,
        received_at_ms: int | None = None,
    ) -> None:
        """Append a :class:`DeadLetterRecord` line to :attr:`deadletter_path`.

        Raises:
            SinkError: the sink is closed, or the dead-letter file cannot be opened.
        """
        if self._closed:
            raise SinkError(f"jsonl sink is closed path={self.path}")
        if self._deadletter_file is None:
            try:
                self._deadletter_file = self.deadletter_path.open("ab")
            except OSError as exc:
                raise SinkError(
                    f"cannot open the dead-letter file path={self.deadletter_path}: {exc.strerror}"
                ) from exc
        value = encode_dead_letter(source, stream, reason, excerpt, received_at_ms=received_at_ms)
        self._deadletter_file.write(value + b"\n")
        self._deadletter_file.flush()
        self.deadlettered_total += 1

    async def flush(self) -> None:
        """Flush and fsync the file (and the dead-letter file, once opened)."""
        if self._closed:
            return
        for file in (self._file, self._deadletter_file):
            if file is not None:
                file.flush()
                os.fsync(file.fileno())

    async def close(self) -> None:
        """Flush, fsync and close the files (idempotent)."""
        if self._closed:
            return
        await self.flush()
        self._closed = True
        self._file.close()
        if self._deadletter_file is not None:
            self._deadletter_file.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

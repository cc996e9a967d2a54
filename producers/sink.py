"""Where producers put envelopes: Kafka in production, a JSONL file when recording.

:class:`KafkaSink` decouples the upstream from Kafka with a bounded in-memory buffer of
*unacknowledged* envelopes. While Kafka is slow or down, the buffer fills, then ``send`` waits
(backpressure: the producer stops reading the upstream socket) instead of dropping. Transient
delivery errors are retried with backoff, forever; a non-retriable error (for example a record
larger than the broker accepts) stops the sink with :class:`~producers.errors.SinkError`, which
stops the producer loudly rather than stalling or dropping silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from producers.backoff import Backoff
from producers.envelope import RawEnvelope, encode_envelope, raw_topic
from producers.errors import SinkError

__all__ = [
    "EnvelopeSink",
    "JsonlSink",
    "KafkaProducerLike",
    "KafkaSink",
    "is_retriable_kafka_error",
]

logger = logging.getLogger(__name__)


class EnvelopeSink(Protocol):
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

    Counters (monotonic): ``sent_total`` acknowledged envelopes, ``failed_total`` failed
    delivery attempts (each retried), ``buffer_full_total`` times the buffer filled up.
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
    ) -> None:
        if buffer_max_messages < 1:
            raise ValueError(f"buffer_max_messages must be >= 1, got {buffer_max_messages}")
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.buffer_max_messages = buffer_max_messages
        self.close_timeout = close_timeout
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

    def _default_factory(self) -> KafkaProducerLike:
        from aiokafka import AIOKafkaProducer

        producer: KafkaProducerLike = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
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

        Raises:
            SinkError: the sink is closed or failed permanently.
        """
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
        self._queue.put_nowait(
            _Pending(self._seq, raw_topic(envelope.source), key, encode_envelope(envelope))
        )

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
                    if not is_retriable_kafka_error(exc):
                        raise
                    error = exc
                    failed.extend(batch[index:])  # do not wait for every send to time out
                    break
            results = await asyncio.gather(*(f for _, f in futures), return_exceptions=True)
            for (item, _), result in zip(futures, results, strict=True):
                if isinstance(result, BaseException):
                    if not is_retriable_kafka_error(result):
                        raise result
                    error = result
                    failed.append(item)
                else:
                    self._acknowledge()
            if not failed:
                self._backoff.reset()
                return
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

    Args:
        path: the file; created if missing, appended to otherwise.
        max_messages: stop recording after this many lines and set :attr:`full`; envelopes
            sent afterwards are counted in ``ignored_total`` and not written, so a recording of
            N frames has exactly N lines.

    Raises:
        SinkError: the file cannot be opened for appending.
    """

    def __init__(self, path: Path, *, max_messages: int | None = None) -> None:
        if max_messages is not None and max_messages < 1:
            raise ValueError(f"max_messages must be >= 1 or None, got {max_messages}")
        self.path = path
        self.max_messages = max_messages
        self.full = asyncio.Event()
        self.written_total = 0
        self.ignored_total = 0
        try:
            self._file = path.open("ab")
        except OSError as exc:
            raise SinkError(f"cannot open the recording file path={path}: {exc.strerror}") from exc
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

    async def flush(self) -> None:
        """Flush and fsync the file."""
        if self._closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())

    async def close(self) -> None:
        """Flush, fsync and close the file (idempotent)."""
        if self._closed:
            return
        await self.flush()
        self._closed = True
        self._file.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

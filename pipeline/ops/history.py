"""The durable notification history: one record per delivered, failed or suppressed
notification on the retained topic ``notifications.v1``.

Why a topic and not the worker's JSONL file: any number of workers write it and any process
reads it (``streamwarden notifications``), so the answer does not depend on which worker
delivered. Records are written after the outcome is known and are not part of the delivery
guarantee: a worker killed between a delivery and this write loses the history line, never the
notification. Writes are queued and sent by one background task, so a slow broker never holds
up a delivery lane; the queue is bounded (oldest dropped, counted).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Literal

import msgspec

from pipeline.alerting.model import Notification
from pipeline.models import AlertTransition
from pipeline.topics import NOTIFICATIONS_TOPIC
from producers.envelope import now_ms

__all__ = [
    "NOTIFICATIONS_TOPIC",
    "HistoryWriter",
    "NotificationRecord",
    "Outcome",
    "decode_record",
    "encode_record",
    "record_of",
]

logger = logging.getLogger(__name__)


Outcome = Literal["delivered", "failed", "suppressed"]

QUEUE_MAX = 10_000
"""Most history records waiting for the broker; beyond, the oldest are dropped (counted)."""
RECENT_KEPT = 200
"""Records the worker keeps in memory for its API and page."""


class NotificationRecord(msgspec.Struct, frozen=True):
    """One notification's outcome.

    Attributes:
        id: the notification id (empty for a suppressed alert: it never became one).
        at_ms: when the outcome was known (wall clock).
        channel: the channel's name (never its URL).
        outcome: ``delivered``, ``failed`` or ``suppressed``.
        reason: why it failed or was suppressed (``silenced by <id>``, ``inhibited by <fp>``,
            ``mute window``, ``rate limit``, an apprise reason); empty when delivered.
        kind: ``firing``, ``resolved``, ``digest``, ``repeat``, ``suppressed-summary``.
        rule, entity, severity, fingerprint: of the first alert covered.
        fingerprints: every alert covered.
        labels: the first alert's labels with ``alertname``, ``entity``, ``severity``,
            ``source`` (what matchers filter on).
        title: the rendered title.
    """

    id: str
    at_ms: int
    channel: str
    outcome: Outcome
    reason: str = ""
    kind: str = ""
    rule: str = ""
    entity: str = ""
    severity: str = ""
    fingerprint: str = ""
    fingerprints: tuple[str, ...] = ()
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    title: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(NotificationRecord)


def encode_record(record: NotificationRecord) -> bytes:
    """JSON bytes of ``record`` (JSON so that ``kcat`` readers need nothing else)."""
    return _encoder.encode(record)


def decode_record(data: bytes) -> NotificationRecord:
    """Parse a history record.

    Raises:
        msgspec.DecodeError, msgspec.ValidationError: not a history record.
    """
    return _decoder.decode(data)


def record_of(
    notification: Notification,
    outcome: Outcome,
    reason: str = "",
    *,
    at_ms: int | None = None,
) -> NotificationRecord:
    """The history record of ``notification`` with ``outcome``."""
    first = notification.alerts[0] if notification.alerts else None
    labels: dict[str, str] = {}
    if first is not None:
        labels = {
            **first.labels,
            "alertname": first.rule,
            "entity": first.entity,
            "severity": first.severity,
            "source": first.source,
        }
    return NotificationRecord(
        id=notification.id,
        at_ms=now_ms() if at_ms is None else at_ms,
        channel=notification.channel,
        outcome=outcome,
        reason=reason,
        kind=notification.kind,
        rule=first.rule if first else "",
        entity=first.entity if first else "",
        severity=first.severity if first else "",
        fingerprint=first.fingerprint if first else "",
        fingerprints=notification.fingerprints,
        labels=labels,
        title=notification.title,
    )


Publish = Callable[[Sequence[tuple[bytes, bytes]]], Awaitable[object]]
"""``publish(records)`` sends ``(key, value)`` records to ``notifications.v1``, in order, and
returns when Kafka acknowledged all of them (or raises)."""

SEND_BATCH_MAX = 500
"""Most records one :data:`Publish` call sends: one acknowledgement wait per record capped the
history near the broker's round trip rate, well below a burst's notifications per second."""


class HistoryWriter:
    """Queues history records and sends them in the background; keeps the recent ones.

    Args:
        publish: how to send one record (the worker passes its faust producer).
        recent_kept: how many records :attr:`recent` keeps.

    Attributes:
        recent: the latest records this worker wrote, oldest first.
        written, dropped, failed: records acknowledged, dropped from a full queue, and whose
            send raised.
    """

    def __init__(self, publish: Publish | None = None, *, recent_kept: int = RECENT_KEPT) -> None:
        self._publish = publish
        self._queue: collections.deque[NotificationRecord] = collections.deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.recent: collections.deque[NotificationRecord] = collections.deque(maxlen=recent_kept)
        self.written = 0
        self.dropped = 0
        self.failed = 0

    def bind(self, publish: Publish) -> None:
        """Send through ``publish`` from now on (the producer exists only once the app runs)."""
        self._publish = publish

    def record(self, record: NotificationRecord) -> None:
        """Queue ``record``; returns at once (never raises into the caller's delivery)."""
        self.recent.append(record)
        if self._publish is None:
            return
        self._queue.append(record)
        while len(self._queue) > QUEUE_MAX:
            self._queue.popleft()
            self.dropped += 1
        self._ready.set()
        if self._task is None or self._task.done():
            with contextlib.suppress(RuntimeError):  # no running loop: sent on the next call
                self._task = asyncio.get_running_loop().create_task(self._drain())

    def notification(self, notification: Notification, outcome: str, reason: str = "") -> None:
        """Record ``notification``'s outcome (``delivered``, ``failed`` or ``suppressed``):
        the notifier's call site (:attr:`pipeline.notify.sender.Notifier.history`)."""
        if outcome not in ("delivered", "failed", "suppressed"):
            raise ValueError(f"unknown notification outcome {outcome!r}")
        self.record(record_of(notification, outcome, reason))  # type: ignore[arg-type]

    def suppressed(self, channel: str, alerts: Sequence[AlertTransition], why: str) -> None:
        """Record alerts held back from ``channel`` (the dispatcher's suppression listener,
        :class:`~pipeline.alerting.suppressed.SuppressionLog`)."""
        for alert in alerts:
            labels = {
                **alert.labels,
                "alertname": alert.rule,
                "entity": alert.entity,
                "severity": alert.severity,
                "source": alert.source,
            }
            self.record(
                NotificationRecord(
                    id="",
                    at_ms=now_ms(),
                    channel=channel,
                    outcome="suppressed",
                    reason=why,
                    kind=alert.state,
                    rule=alert.rule,
                    entity=alert.entity,
                    severity=alert.severity,
                    fingerprint=alert.fingerprint,
                    fingerprints=(alert.fingerprint,),
                    labels=labels,
                )
            )

    def pending(self) -> int:
        """Records waiting for the broker."""
        return len(self._queue)

    async def _drain(self) -> None:
        while self._queue:
            publish = self._publish
            if publish is None:
                return
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), SEND_BATCH_MAX))]
            try:
                await publish(
                    [(r.id.encode() or r.fingerprint.encode(), encode_record(r)) for r in batch]
                )
            except Exception as exc:  # the history must never stop deliveries
                self.failed += len(batch)
                logger.warning(
                    "notification history write failed records=%d first_id=%s error=%s",
                    len(batch),
                    batch[0].id,
                    exc,
                )
            else:
                self.written += len(batch)

    async def flush(self, wait_timeout: float = 10.0) -> bool:
        """Wait until the queue is sent (True) or ``wait_timeout`` seconds passed (False)."""
        task = self._task
        if task is None or task.done():
            return not self._queue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), wait_timeout)
        return not self._queue

    async def close(self, wait_timeout: float = 5.0) -> None:
        """Send what is queued (bounded by ``wait_timeout``), then stop."""
        await self.flush(wait_timeout)
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def matching(records: Iterable[NotificationRecord], since_ms: int) -> list[NotificationRecord]:
    """Records at or after ``since_ms``, oldest first."""
    return sorted((r for r in records if r.at_ms >= since_ms), key=lambda r: r.at_ms)

"""Agent ``send_notifications``: alert transitions -> dispatcher -> durable outbox -> channels.

At-least-once without duplicates across crashes, in three steps:

1. Each ``alerts.v1`` record goes through the :class:`~pipeline.alerting.dispatch.Dispatcher`
   (grouping, silences, repeat...). The notifications it decides on are written to the
   ``notify_log`` table as outbox entries ``o:<id>`` and acknowledged by Kafka *before* the
   dispatcher's state is written (see :meth:`NotificationStage.flush_tables`). faust commits
   the ``alerts.v1`` offset only after the producer flushed those changelog writes, so an
   intent is never lost: a crash before the commit replays the records, and the dispatcher,
   being idempotent per fingerprint and transition time, gives the same notification ids
   again (or, if its state got written, finds them in the outbox already).
2. Delivery workers send the outbox entries: per channel :data:`DELIVERY_LANES` lanes, each
   in order, and all notifications of one group (hence of one alert) in the same lane. A
   retryable failure keeps the entry and retries it (with backoff, forever: a channel down
   for an hour gets its notifications when it comes back, in order); a permanent failure is
   logged and dropped.
3. Before the first send of an entry, ``a:<id>`` (attempted) is written and acknowledged;
   after a delivery, ``d:<id>`` is written and ``o:<id>`` and ``a:<id>`` are deleted. A lane
   takes what has queued up (at most :data:`DELIVERY_BATCH_MAX`) as one batch: its attempt
   marks are acknowledged together before the first send, its delivered marks together
   after the last (the batch's sends run in the notifier's thread one after another, and
   their marks go to Kafka as one record batch at the end of the lane's batch). An intent whose
   ``d:<id>`` exists is never sent again, so a restart re-sends only what was not confirmed
   as delivered. The one window left is a crash between the channel accepting a message and
   ``d:<id>`` reaching Kafka: no sender can close it against a peer without idempotency keys
   (a batch widens it to the batch's sends). Such an entry is found with ``a:<id>`` and no
   ``d:<id>`` after the restart and re-sent once, with the same id and its title prefixed
   :data:`POSSIBLE_DUPLICATE`, so people and receivers can tell the copy apart.

``alerts.v1`` and both tables have one partition: grouping, inhibition and rate limits look at
all alerts at once, and alert volume is small. Both tables are
:class:`~pipeline.runtime.tables.BatchedTable` objects: writes queue per batch and go to the
changelog as one record batch per flush. Rebalances: before the partition may move, the lanes
stop and every write is acknowledged (:meth:`NotificationStage.on_revoked`); the next owner's
store reloads both changelogs and :meth:`NotificationStage.activate` resumes the outbox.
A record whose dispatch raises is tried once more, then dead-lettered (:func:`dispatch_once`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from pipeline.agents.batch_times import BatchTimes
from pipeline.agents.crash import batches_or_exit
from pipeline.agents.deadletter import dead_letter
from pipeline.agents.publish import Publisher
from pipeline.alerting.dispatch import Dispatcher
from pipeline.alerting.model import (
    Notification,
    StateValue,
    decode_state,
    encode_state,
)
from pipeline.alerting.timers import DeadlineIndex, TrackedState, run_due
from pipeline.errors import NotifyError
from pipeline.models import AlertTransition, decode_alert
from pipeline.notify.sender import Notifier
from pipeline.runtime.tables import BatchedTable, PartitionView
from producers.envelope import now_ms

logger = logging.getLogger(__name__)

DELIVERED_KEPT_MS = 24 * 3600 * 1000
"""How long ``d:<id>`` entries are kept: longer than any replay of uncommitted alerts."""


class OutboxEntry(msgspec.Struct, frozen=True):
    """A notification to send; ``seq`` orders a channel's entries across restarts."""

    seq: int
    notification: Notification


class DeliveredMark(msgspec.Struct, frozen=True):
    delivered_ms: int


class AttemptMark(msgspec.Struct, frozen=True):
    """Written (and acknowledged) before the first send of an entry: if it is found without
    a delivered mark after a restart, that send's outcome is unknown."""

    attempted_ms: int


LogValue = OutboxEntry | DeliveredMark | AttemptMark
_log_encoder = msgspec.msgpack.Encoder()
_LOG_TAGS: dict[type, bytes] = {OutboxEntry: b"o", DeliveredMark: b"d", AttemptMark: b"a"}
_LOG_TYPES: dict[bytes, type] = {tag: kind for kind, tag in _LOG_TAGS.items()}


def _encode_log(value: LogValue) -> bytes:
    return _LOG_TAGS[type(value)] + _log_encoder.encode(value)


def _decode_log(raw: bytes) -> LogValue:
    kind = _LOG_TYPES.get(raw[:1])
    if kind is None:
        raise msgspec.DecodeError(f"unknown notification log entry tag {raw[:1]!r}")
    value: LogValue = msgspec.msgpack.decode(raw[1:], type=kind)
    return value


class NotificationStage:
    """Dispatcher state, outbox and delivery workers of the one partition this worker owns.

    Args:
        dispatcher: turns transitions into notification intents.
        notifier: sends one notification (its own retries are the fast ones; this stage
            retries slowly, forever, for retryable failures).
        state_table: batched table for the dispatcher's state (1 partition).
        log_table: batched table for the outbox and delivered marks (1 partition).
        retry_max_delay: longest pause between two rounds of retries of one notification.
        counters: the worker's counters (``notifications_sent``, ``notifications_failed``).
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        notifier: Notifier,
        state_table: BatchedTable,
        log_table: BatchedTable,
        *,
        retry_max_delay: float = 60.0,
        counters: MutableMapping[str, int] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self._counters: MutableMapping[str, int] = counters if counters is not None else {}
        self.notifier = notifier
        self._retry_max_delay = retry_max_delay
        self._state_store: PartitionView[StateValue] = state_table.view(
            0, encode_state, decode_state
        )
        self.state = TrackedState(self._state_store, DeadlineIndex())
        self.log: PartitionView[LogValue] = log_table.view(
            0, _encode_log, _decode_log, (msgspec.DecodeError, msgspec.ValidationError)
        )
        self._seq = 0
        self._queues: dict[tuple[str, int], asyncio.Queue[OutboxEntry]] = {}
        self._workers: dict[tuple[str, int], asyncio.Task[None]] = {}
        self.active = False
        # Dispatching (agent batch or timer tick) and its flush_tables run one at a time.
        self.lock = asyncio.Lock()

    # --- ownership ----------------------------------------------------------------------

    def activate(self) -> None:
        """This worker owns the partition now: rebuild timers, resume the outbox in order."""
        if self.active:
            return
        self.active = True
        self.state.index.rebuild(
            (k, self._state_store[k]) for k in list(self._state_store) if k in self._state_store
        )
        pending = sorted(
            (v for _k, v in self.log.items_decodable() if isinstance(v, OutboxEntry)),
            key=lambda e: e.seq,
        )
        self._seq = max((e.seq for e in pending), default=0)
        for entry in pending:
            self._enqueue(entry)
        logger.info(
            "notification stage active outbox=%d timers=%d", len(pending), len(self.state.index)
        )

    async def deactivate(self) -> None:
        """Another worker owns the partition now: stop sending (it resumes from the outbox)."""
        if not self.active:
            return
        self.active = False
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()
        self._queues.clear()

    # --- intents ------------------------------------------------------------------------

    def accept(self, notifications: list[Notification]) -> None:
        """Put new intents in the outbox (skipping ones already delivered) and queue them."""
        for notification in notifications:
            key = notification.id
            if f"d:{key}" in self.log or f"o:{key}" in self.log:
                continue
            self._seq += 1
            entry = OutboxEntry(self._seq, notification)
            self.log[f"o:{key}"] = entry
            self._enqueue(entry)

    async def flush_tables(self) -> None:
        """Make the outbox durable first, then the dispatcher state that produced it.

        The two live in different tables (changelog topics), so Kafka gives no order between
        them. Were the state durable without the outbox, a replay of the same alerts would be
        ignored as already dispatched and the intent would be lost; the other way round, a
        replay dispatches again and the outbox already has (or has delivered) the same ids.
        """
        await self.log.flush_confirmed()
        self._state_store.flush()
        await self._state_store.table.flush()

    async def on_revoked(self) -> None:
        """The partition may move: stop sending, every write of both tables acknowledged
        (the next owner's recovery must read all of it)."""
        await self.deactivate()
        async with self.lock:
            await self.log.flush_confirmed()
            self._state_store.flush()
            await self._state_store.table.flush_confirmed()

    async def tick(self, clock_ms: int) -> None:
        """Timer body: expire dispatcher deadlines (group_wait, repeat...) and prune marks."""
        if not self.active:
            return
        async with self.lock:
            self.accept(run_due(self.dispatcher, self.state, clock_ms))
            await self.flush_tables()

    async def prune(self, clock_ms: int) -> int:
        """Forget delivered marks older than :data:`DELIVERED_KEPT_MS`."""
        old = [
            k
            for k, v in self.log.items_decodable()
            if isinstance(v, DeliveredMark) and clock_ms - v.delivered_ms > DELIVERED_KEPT_MS
        ]
        for key in old:
            del self.log[key]
        await self.log.flush_confirmed()
        return len(old)

    # --- delivery -----------------------------------------------------------------------

    def _enqueue(self, entry: OutboxEntry) -> None:
        channel = entry.notification.channel
        lane = (channel, delivery_lane(entry.notification))
        queue = self._queues.get(lane)
        if queue is None:
            queue = self._queues[lane] = asyncio.Queue()
            self._workers[lane] = asyncio.create_task(
                self._deliver(channel, queue), name=f"deliver-{channel}-{lane[1]}"
            )
        queue.put_nowait(entry)

    def pending(self) -> int:
        return sum(q.qsize() for q in self._queues.values())

    async def _deliver(self, channel: str, queue: asyncio.Queue[OutboxEntry]) -> None:
        """Send one lane's entries in order, in batches of what has queued up meanwhile."""
        carried: list[OutboxEntry] = []
        while True:
            batch = carried or [await queue.get()]
            while len(batch) < DELIVERY_BATCH_MAX and not queue.empty():
                batch.append(queue.get_nowait())
            carried = await self._deliver_batch(channel, batch)

    async def _deliver_batch(self, channel: str, batch: list[OutboxEntry]) -> list[OutboxEntry]:
        """Send ``batch`` in order; returns the entries left for the next round.

        One acknowledged write of the batch's attempt marks before its first send, one at its
        end for the delivered marks: two waits per batch instead of two per notification. The
        sends themselves go to the notifier as one run (one thread hop for all of them).
        A retryable failure withdraws the attempt marks of the entries behind it (so a crash
        during a long outage does not label never-sent notifications as possible duplicates),
        retries its entry until it settles, and hands the rest back.
        """
        sends: list[Notification | None] = []
        fresh: set[str] = set()  # attempt marks this round wrote
        for entry in batch:
            notification = entry.notification
            attempted = f"a:{notification.id}"
            if f"d:{notification.id}" in self.log:
                sends.append(None)
            elif attempted in self.log:
                # An earlier process sent it and died before recording the outcome: the
                # channel may have it. Say so, with the same id, so people and receivers can
                # drop the copy (a non-idempotent peer leaves no other way).
                sends.append(possible_duplicate(notification))
                logger.warning(
                    "notification re-sent after an interrupted delivery channel=%s id=%s",
                    channel,
                    notification.id,
                )
            else:
                self.log[attempted] = AttemptMark(now_ms())
                fresh.add(attempted)
                sends.append(notification)
        if fresh:
            await self.log.flush_confirmed()
        queued: list[tuple[OutboxEntry, Notification]] = []
        for entry, send in zip(batch, sends, strict=True):
            if send is None:
                self._settle(entry, delivered=False)
            else:
                queued.append((entry, send))
        while queued:
            outcomes = await self.notifier.send_in_order([send for _, send in queued])
            for (entry, _send), outcome in zip(queued, outcomes, strict=False):  # a prefix
                if not isinstance(outcome, NotifyError):
                    self._settle(entry, delivered=True)
            failure = outcomes[-1] if outcomes else None
            if not isinstance(failure, NotifyError):
                break
            entry, send = queued[len(outcomes) - 1]
            queued = queued[len(outcomes) :]
            if failure.retryable:
                for later, _ in queued:
                    mark = f"a:{later.notification.id}"
                    if mark in fresh:
                        del self.log[mark]
                await self.log.flush_confirmed()
                delivered = await self._send_until_settled(channel, send, failure)
                self._settle(entry, delivered=delivered)
                await self.log.flush_confirmed()
                return [later for later, _ in queued]
            self._dropped(channel, send, failure)
            self._settle(entry, delivered=False)
        await self.log.flush_confirmed()
        return []

    def _settle(self, entry: OutboxEntry, *, delivered: bool) -> None:
        """Record a delivery (``d:<id>``) and drop the entry's outbox and attempt marks.

        A batch's sends go through the notifier together
        (:meth:`~pipeline.notify.sender.Notifier.send_in_order`), so their delivered marks
        are queued together when it returns, and written, as before, at the batch's end."""
        key = entry.notification.id
        if delivered:
            self._counters["notifications_sent"] = self._counters.get("notifications_sent", 0) + 1
            self.log[f"d:{key}"] = DeliveredMark(now_ms())
        for mark in (f"o:{key}", f"a:{key}"):
            if mark in self.log:
                del self.log[mark]

    async def _send_once(self, notification: Notification) -> NotifyError | None:
        """One send (with the notifier's own fast retries); the failure, or None if sent."""
        try:
            await self.notifier.send_checked(notification)
        except NotifyError as exc:
            return exc
        return None

    async def _send_until_settled(
        self, channel: str, notification: Notification, failure: NotifyError
    ) -> bool:
        """After a retryable ``failure``: retry with backoff, forever, until the send goes
        (True) or fails permanently (logged and dropped: False)."""
        delay = 1.0
        while failure.retryable:
            logger.warning(
                "notification will be retried channel=%s id=%s in_s=%.0f reason=%s",
                channel,
                notification.id,
                delay,
                failure.reason,
            )
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, self._retry_max_delay)
            next_failure = await self._send_once(notification)
            if next_failure is None:
                return True
            failure = next_failure
        self._dropped(channel, notification, failure)
        return False

    def _dropped(self, channel: str, notification: Notification, failure: NotifyError) -> None:
        self._counters["notifications_failed"] = self._counters.get("notifications_failed", 0) + 1
        _log_dropped(channel, notification, failure)


def _log_dropped(channel: str, notification: Notification, failure: NotifyError) -> None:
    logger.error(
        "notification dropped, permanent failure channel=%s id=%s reason=%s",
        channel,
        notification.id,
        failure.reason,
    )


DELIVERY_BATCH_MAX = 32
"""Most entries of one lane whose attempt marks are written (and acknowledged) together.
A kill during a batch can leave up to this many sends per lane of unknown outcome; each is
re-sent once, marked :data:`POSSIBLE_DUPLICATE`."""

DELIVERY_LANES = 4
"""Notifications of one channel in flight at once, each lane in order (see
:func:`delivery_lane`). One at a time capped a channel near 30 notifications/s when each send
waited for two acknowledged marks and an HTTP round trip."""


def delivery_lane(notification: Notification) -> int:
    """The lane of a notification within its channel: the same for every notification of one
    group (channel and group labels), so one alert's notifications keep their order."""
    labels = "|".join(f"{k}={v}" for k, v in sorted(notification.group_labels.items()))
    return zlib.crc32(f"{notification.channel}|{labels}".encode()) % DELIVERY_LANES


POSSIBLE_DUPLICATE = "[possible duplicate] "
"""Title prefix of a notification re-sent after a crash interrupted its first delivery."""


def possible_duplicate(notification: Notification) -> Notification:
    """The same notification (same id), its title marked as a possible duplicate."""
    if notification.title.startswith(POSSIBLE_DUPLICATE):
        return notification
    return msgspec.structs.replace(notification, title=POSSIBLE_DUPLICATE + notification.title)


def make_send_notifications(
    stage: NotificationStage,
    producer: Callable[[], Any],
    *,
    batch_max: int,
    batch_within: float,
    counters: MutableMapping[str, int],
    batch_times: BatchTimes | None = None,
) -> Callable[[Any], Awaitable[None]]:
    """Build the agent function over ``alerts.v1``."""
    times = batch_times or BatchTimes()

    async def send_notifications(stream: Any) -> None:
        deadletter = Publisher(producer())

        async def handle(events: Any) -> None:
            stage.activate()
            with times.timed("notify"):
                async with stage.lock:  # a timer tick must not flush this batch's state early
                    await dispatch(events)
                await deadletter.confirm()

        async def dispatch(events: Any) -> None:
            clock = now_ms()
            for event in events:
                try:
                    alert = decode_alert(event.value)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    counters["deadlettered"] += 1
                    await dead_letter(
                        deadletter, event, stage="notify", reason=f"not an alert: {exc}"
                    )
                    continue
                outcome = dispatch_once(stage, alert, clock)
                if isinstance(outcome, str):
                    counters["dispatch_failed"] += 1
                    counters["deadlettered"] += 1
                    await dead_letter(deadletter, event, stage="notify", reason=outcome)
                    continue
                stage.accept(outcome)
                counters["alerts"] += 1
            await stage.flush_tables()

        await batches_or_exit(
            "send_notifications", stream.take_events(batch_max, within=batch_within), handle
        )

    return send_notifications


ATTEMPTS = 2
"""Tries of one alert's dispatch before it is dead-lettered (the first and one retry)."""


def dispatch_once(
    stage: NotificationStage, alert: AlertTransition, clock_ms: int
) -> list[Notification] | str:
    """The notifications the dispatcher decides on for ``alert``, or why it could not after
    :data:`ATTEMPTS` tries: a dispatcher that raises on one alert must not stop the stage or
    make it crash in a loop; the alert goes to the dead letters with the reason."""
    failure: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            return stage.dispatcher.dispatch(stage.state, alert, clock_ms)
        except Exception as exc:
            failure = exc
            logger.exception(
                "dispatch failed attempt=%d fingerprint=%s", attempt + 1, alert.fingerprint
            )
    return f"dispatch failed: {type(failure).__name__}: {str(failure)[:200]}"

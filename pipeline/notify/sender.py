"""Deliver notifications to their channels through apprise.

apprise signals failure by its return value, never by exceptions: this module turns that into a
:class:`NotifyError` (retryable or permanent, with a reason) and retries in exactly one place,
with exponential backoff. Channel URLs are never logged; channels are named.

Retry taxonomy (:func:`classify`), from apprise's result and the status codes its plugins
report in their captured warnings (``... error=503.``):

- permanent: no such channel; apprise matched no service; apprise could not prepare the
  message; HTTP 4xx other than 408, 425 and 429 (a bad token stays bad);
- retryable: timeouts; HTTP 5xx, 408, 425, 429; connection errors and anything else apprise
  reports as a plain failure.

:meth:`Notifier.send` delivers one :class:`~pipeline.alerting.model.Notification` (title,
body and format already rendered by the dispatcher's templates), skipping ids it already
delivered.

:class:`DeliveryQueue` keeps slow channels off the caller's path: one queue and one worker per
channel, so a channel's notifications stay in order and one slow channel never delays another.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from apprise.common import NotifyType
from apprise.result import AppriseResultStatus

from pipeline.alerting.model import Notification
from pipeline.alerting.stats import ChannelStats
from pipeline.errors import NotifyError
from pipeline.notify.channels import Channel, url_secrets
from pipeline.notify.reasons import capture_debug, failure_detail
from producers.envelope import now_ms

__all__ = [
    "Delivery",
    "DeliveryQueue",
    "Notifier",
    "RetryPolicy",
    "classify",
]

logger = logging.getLogger(__name__)

_STATUS_CODE = re.compile(r"\berror=(\d{3})\b")
_RETRYABLE_4XX = frozenset({408, 425, 429})
_DELIVERED_IDS_KEPT = 10_000

Sleep = Callable[[float], Awaitable[None]]
HistoryHook = Callable[[Notification, str, str], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one notification is retried before it is reported undelivered.

    Attributes:
        attempts: tries in all (1 = no retry).
        initial_delay: seconds before the first retry.
        max_delay: cap of the delay, in seconds.
        multiplier: growth of the delay per retry.
        jitter: each delay is scaled by a random factor in ``[1 - jitter, 1 + jitter]``.
        send_timeout: seconds one apprise call may take.
    """

    attempts: int = 5
    initial_delay: float = 0.5
    max_delay: float = 30.0
    send_timeout: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def delays(self, rng: Callable[[], float] = random.random) -> list[float]:
        """The waits between attempts, in seconds (``attempts - 1`` of them)."""
        out: list[float] = []
        delay = self.initial_delay
        for _ in range(max(self.attempts - 1, 0)):
            factor = 1 + self.jitter * (2 * rng() - 1) if self.jitter else 1.0
            out.append(min(delay, self.max_delay) * factor)
            delay = min(delay * self.multiplier, self.max_delay)
        return out


class Delivery(msgspec.Struct, frozen=True):
    """One notification delivered to one channel (the ``--alerts-out`` line).

    The alert fields describe the first alert covered (empty for a rate-limit summary);
    ``fingerprints`` lists all of them.
    """

    delivered_at_ms: int
    channel: str
    fingerprint: str
    rule: str
    state: str
    entity: str
    source: str
    metric: str
    value: float | str
    severity: str
    ts_ms: int
    title: str
    body: str
    id: str = ""
    kind: str = ""
    fingerprints: tuple[str, ...] = ()


def _log_messages(result: Any) -> list[str]:
    logs = getattr(result, "logs", None)
    if not callable(logs):
        return []
    try:
        return [str(getattr(entry, "message", "")) for entry in logs()]
    except Exception:  # logs are a diagnostic aid; never let them break classification
        return []


def classify(channel: str, result: Any, secrets: Iterable[str] = ()) -> NotifyError:
    """The error an unsuccessful apprise result stands for (see the module docstring).

    The reason holds the apprise status and an HTTP status code when one was reported; else
    the cause apprise logged (:func:`~pipeline.notify.reasons.failure_detail`: no URL, the
    channel's ``secrets`` masked).
    """
    status = getattr(result, "status", AppriseResultStatus.FAILURE)
    try:
        status = AppriseResultStatus(status)
    except ValueError:
        status = AppriseResultStatus.FAILURE
    if status == AppriseResultStatus.NOMATCH:
        return NotifyError(channel, "apprise matched no service", retryable=False)
    if status == AppriseResultStatus.TIMEOUT:
        return NotifyError(channel, "apprise reported timeout", retryable=True)
    messages = _log_messages(result)
    if any("Could not prepare the notification" in m for m in messages):
        return NotifyError(channel, "apprise could not prepare the notification", retryable=False)
    codes = [int(code) for m in messages for code in _STATUS_CODE.findall(m)]
    name = status.name.lower()
    if codes:
        code = codes[-1]
        permanent = 400 <= code < 500 and code not in _RETRYABLE_4XX
        return NotifyError(
            channel, f"apprise reported {name}, HTTP {code}", retryable=not permanent
        )
    detail = failure_detail(result, secrets)
    reason = f"apprise reported {name}: {detail}" if detail else f"apprise reported {name}"
    return NotifyError(channel, reason, retryable=True)


class Notifier:
    """Sends notifications to named channels, with retries, and logs each delivery.

    Args:
        channels: loaded channels by name.
        alerts_out: when set, each delivered notification is appended as one JSON line.
        policy: retry policy.
        stats: per-channel counters to add to (``sent``, ``failed``, ``retried``); a new one
            when omitted. Share it with the dispatcher to have ``suppressed`` in one place.
        sleep: how to wait between attempts (tests pass a recorder).
        rng: random source for jitter, returning floats in ``[0, 1)``.
    """

    def __init__(
        self,
        channels: Mapping[str, Channel],
        *,
        alerts_out: Path | None = None,
        policy: RetryPolicy | None = None,
        stats: ChannelStats | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._channels = dict(channels)
        self._alerts_out = alerts_out
        self._policy = policy or RetryPolicy()
        self._encoder = msgspec.json.Encoder()
        self._sleep = sleep
        self._rng = rng
        self.stats = stats or ChannelStats()
        self._delivered: collections.OrderedDict[str, None] = collections.OrderedDict()
        capture_debug()
        self.history: HistoryHook | None = None
        """Told every outcome ``(notification, "delivered"|"failed", reason)``; the worker
        sets it to the notification history (:mod:`pipeline.ops.history`)."""

    @property
    def counters(self) -> dict[str, int]:
        """Totals over channels of ``sent``, ``failed``, ``retried`` and ``suppressed``."""
        totals = self.stats.totals()
        return {name: totals[name] for name in ("sent", "failed", "retried", "suppressed")}

    def channel_counters(self) -> dict[str, dict[str, int]]:
        """Every counter of every channel that has one."""
        return self.stats.snapshot()

    # --- notification intents -------------------------------------------------------------

    async def send(self, notification: Notification) -> Delivery | None:
        """Deliver one notification, retrying retryable failures.

        A notification whose id was already delivered by this notifier is skipped (returns
        None), so re-sent intents after a crash do not notify twice while the process lives.

        Returns:
            The delivery, or None when skipped or undelivered (logged by channel name,
            notification id and fingerprints; counted as ``failed``).
        """
        if notification.id and notification.id in self._delivered:
            logger.debug(
                "notification already delivered, skipped channel=%s id=%s",
                notification.channel,
                notification.id,
            )
            return None
        try:
            return await self.send_checked(notification)
        except NotifyError as exc:
            logger.error(
                "notification undelivered channel=%s id=%s kind=%s fingerprints=%s reason=%s",
                exc.channel,
                notification.id,
                notification.kind,
                ",".join(notification.fingerprints),
                exc.reason,
            )
            return None

    async def send_checked(self, notification: Notification) -> Delivery:
        """Like :meth:`send` without the duplicate check, raising instead of logging.

        Raises:
            NotifyError: permanent failure, or retries exhausted (counted as ``failed``).
        """

        async def attempt() -> None:
            await self._notify(
                notification.channel,
                notification.title,
                notification.body,
                notification.format,
                notification.notify_type,
            )

        try:
            await self._with_retries(notification.channel, notification.id, attempt)
        except NotifyError as exc:
            self.stats.add(notification.channel, "failed")
            if self.history is not None:
                self.history(notification, "failed", exc.reason + (" (retryable)" * exc.retryable))
            raise
        self._remember(notification.id)
        if self.history is not None:
            self.history(notification, "delivered", "")
        first = notification.alerts[0] if notification.alerts else None
        delivery = Delivery(
            delivered_at_ms=now_ms(),
            channel=notification.channel,
            fingerprint=first.fingerprint if first else "",
            rule=first.rule if first else "",
            state=first.state if first else "",
            entity=first.entity if first else "",
            source=first.source if first else "",
            metric=first.metric if first else "",
            value=first.value if first else "",
            severity=first.severity if first else "",
            ts_ms=first.ts_ms if first else 0,
            title=notification.title,
            body=notification.body,
            id=notification.id,
            kind=notification.kind,
            fingerprints=notification.fingerprints,
        )
        self._record(delivery)
        logger.info(
            "notification delivered channel=%s id=%s kind=%s alerts=%d",
            notification.channel,
            notification.id,
            notification.kind,
            len(notification.alerts),
        )
        return delivery

    def _remember(self, notification_id: str) -> None:
        if not notification_id:
            return
        self._delivered[notification_id] = None
        while len(self._delivered) > _DELIVERED_IDS_KEPT:
            self._delivered.popitem(last=False)

    # --- the one place that retries ---------------------------------------------------------

    async def _with_retries(
        self, channel: str, ref: str, attempt: Callable[[], Awaitable[None]]
    ) -> None:
        delays = self._policy.delays(self._rng)
        for number in range(1, len(delays) + 2):
            try:
                await attempt()
            except NotifyError as exc:
                if not exc.retryable or number > len(delays):
                    raise
                delay = delays[number - 1]
                self.stats.add(channel, "retried")
                logger.warning(
                    "notification retry channel=%s ref=%s attempt=%d delay_s=%.2f reason=%s",
                    channel,
                    ref,
                    number,
                    delay,
                    exc.reason,
                )
                await self._sleep(delay)
            else:
                self.stats.add(channel, "sent")
                return

    async def _notify(
        self, name: str, title: str, body: str, body_format: str, notify_type: str
    ) -> None:
        channel = self._channels.get(name)
        if channel is None:
            raise NotifyError(name, "no such channel is configured", retryable=False)
        if not body.strip():
            # apprise refuses an empty body ("No message body ... was specified") as a plain
            # failure, which would be retried forever and hold up the lane behind it. A body
            # template may well render nothing for some alerts: the title says it then.
            if not title.strip():
                raise NotifyError(name, "title and body rendered empty", retryable=False)
            body = title
        result: Any = await channel.apprise.async_notify(
            body=body,
            title=title,
            notify_type=NotifyType(notify_type),
            body_format=body_format,
            timeout=self._policy.send_timeout,
            log_level=logging.DEBUG,  # the cause of a failure is logged at DEBUG
        )
        if not result:
            raise classify(name, result, url_secrets(channel.url))

    def _record(self, delivery: Delivery) -> None:
        if self._alerts_out is None:
            return
        with self._alerts_out.open("ab") as out:
            out.write(self._encoder.encode(delivery) + b"\n")


OnDone = Callable[[Notification, Delivery | None], Awaitable[None] | None]


class DeliveryQueue:
    """Background delivery: :meth:`submit` returns at once; one worker per channel sends.

    Args:
        notifier: does the sending (and the retries).
        on_done: called after each notification with its delivery (None: undelivered or a
            duplicate), e.g. to delete it from an outbox. May be a coroutine function.
        maxsize: notifications waiting per channel before :meth:`submit` refuses more.
    """

    def __init__(
        self, notifier: Notifier, *, on_done: OnDone | None = None, maxsize: int = 10_000
    ) -> None:
        self._notifier = notifier
        self._on_done = on_done
        self._maxsize = maxsize
        self._queues: dict[str, asyncio.Queue[Notification]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        self._pending = 0

    def submit(self, notification: Notification) -> bool:
        """Queue a notification; False (logged, counted as ``failed``) when the channel's
        queue is full or the queue is stopped."""
        if self._closed:
            logger.error(
                "notification refused, delivery queue stopped channel=%s id=%s",
                notification.channel,
                notification.id,
            )
            return False
        queue = self._queues.get(notification.channel)
        if queue is None:
            queue = self._queues[notification.channel] = asyncio.Queue(self._maxsize)
            self._workers[notification.channel] = asyncio.create_task(
                self._work(queue), name=f"deliver-{notification.channel}"
            )
        try:
            queue.put_nowait(notification)
            self._pending += 1
        except asyncio.QueueFull:
            self._notifier.stats.add(notification.channel, "failed")
            logger.error(
                "notification refused, channel queue full channel=%s id=%s queued=%d",
                notification.channel,
                notification.id,
                queue.qsize(),
            )
            return False
        return True

    def pending(self) -> int:
        """Notifications queued or being sent."""
        return self._pending

    async def _work(self, queue: asyncio.Queue[Notification]) -> None:
        while True:
            notification = await queue.get()
            try:
                delivery = await self._notifier.send(notification)
                if self._on_done is not None:
                    outcome = self._on_done(notification, delivery)
                    if outcome is not None:
                        await outcome
            except Exception:  # a callback bug must not stop the channel's deliveries
                logger.exception(
                    "delivery worker error channel=%s id=%s", notification.channel, notification.id
                )
            finally:
                self._pending -= 1
                queue.task_done()

    async def join(self, wait_timeout: float) -> bool:
        """Wait until every queued notification was handled; False after ``wait_timeout``
        seconds."""
        try:
            async with asyncio.timeout(wait_timeout):
                for queue in list(self._queues.values()):
                    await queue.join()
        except TimeoutError:
            return False
        return True

    async def stop(self, drain_timeout: float) -> list[Notification]:
        """Stop accepting, give queued notifications ``drain_timeout`` seconds, then cancel.

        Returns:
            The notifications that were still queued (not attempted), to keep for later.
        """
        self._closed = True
        await self.join(drain_timeout)
        left: list[Notification] = []
        for queue in self._queues.values():
            while not queue.empty():
                left.append(queue.get_nowait())
                self._pending -= 1
                queue.task_done()
        for task in self._workers.values():
            task.cancel()
        for task in self._workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return left

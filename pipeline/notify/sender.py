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
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
from pipeline.notify.reasons import capture_debug, debug_demand, failure_detail
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
SEND_THREADS = 16
"""Threads that call apprise: one per lane in flight (a slow channel holds one while it
waits on its peer, so this bounds how many lanes wait at once, not how many exist)."""

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
        self._delivered_ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._executor = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="notify-send")
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

    def close(self, *, wait: bool = False) -> None:
        """Stop the sending threads: no new call starts; with ``wait``, return once the calls
        in flight ended (apprise cannot abandon a call: it ends by its own timeout)."""
        self._executor.shutdown(wait=wait, cancel_futures=True)

    # --- notification intents -------------------------------------------------------------

    async def send(self, notification: Notification) -> Delivery | None:
        """Deliver one notification, retrying retryable failures.

        A notification whose id was already delivered by this notifier is skipped (returns
        None), so re-sent intents after a crash do not notify twice while the process lives.

        Returns:
            The delivery, or None when skipped or undelivered (logged by channel name,
            notification id and fingerprints; counted as ``failed``).
        """
        if notification.id and notification.id in self._delivered_ids:
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
        (outcome,) = await self.send_in_order([notification])
        if isinstance(outcome, NotifyError):
            raise outcome
        return outcome

    async def send_in_order(
        self, notifications: Sequence[Notification]
    ) -> list[Delivery | NotifyError]:
        """Send ``notifications`` one after another; stop at the first that fails for good.

        The first attempts of a run of notifications are made in one hop to a worker thread
        (apprise's own async path costs two thread hops per notification: about 600 µs of CPU
        against 180 µs for the sequential call, measured with ``null://``). A failed attempt
        is retried here with the policy's backoff; if it still fails, its error closes the
        list and the notifications behind it are not attempted (the caller decides: a lane
        keeps its order by retrying that one first).

        Returns:
            One outcome per attempted notification, in order: its :class:`Delivery`, or, last,
            the :class:`NotifyError` it failed with (counted as ``failed``).
        """
        outcomes: list[Delivery | NotifyError] = []
        todo = list(notifications)
        while todo:
            failures = await self._attempts_in_thread(todo)
            attempted = todo[: len(failures)]
            outcomes.extend(
                self._delivered([n for n, f in zip(attempted, failures, strict=True) if f is None])
            )
            failure = failures[-1] if failures else None
            if failure is None:
                break
            failed = todo[len(failures) - 1]
            try:
                outcomes.extend(self._delivered([await self._retry(failed, failure)]))
            except NotifyError as exc:
                outcomes.append(exc)
                break
            todo = todo[len(failures) :]
        return outcomes

    def _delivered(self, notifications: Sequence[Notification]) -> list[Delivery]:
        """Bookkeeping of sent notifications: counters, history, the ``--alerts-out`` lines
        and one log line per run (each one at DEBUG: the history topic has them all)."""
        if not notifications:
            return []
        deliveries = [self._delivery(n) for n in notifications]
        self._record(deliveries)
        for notification in notifications:
            self.stats.add(notification.channel, "sent")
            self._remember(notification.id)
            if self.history is not None:
                self.history(notification, "delivered", "")
            logger.debug(
                "notification delivered channel=%s id=%s kind=%s alerts=%d",
                notification.channel,
                notification.id,
                notification.kind,
                len(notification.alerts),
            )
        logger.info(
            "notifications delivered channel=%s count=%d ids=%s",
            notifications[0].channel,
            len(notifications),
            notifications[0].id
            if len(notifications) == 1
            else f"{notifications[0].id}..{notifications[-1].id}",
        )
        return deliveries

    @staticmethod
    def _delivery(notification: Notification) -> Delivery:
        first = notification.alerts[0] if notification.alerts else None
        return Delivery(
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

    def _remember(self, notification_id: str) -> None:
        if not notification_id:
            return
        self._delivered_ids[notification_id] = None
        while len(self._delivered_ids) > _DELIVERED_IDS_KEPT:
            self._delivered_ids.popitem(last=False)

    # --- the one place that retries ---------------------------------------------------------

    async def _retry(self, notification: Notification, failure: NotifyError) -> Notification:
        """Retry ``notification`` after its first attempt failed with ``failure``, with the
        policy's backoff; returns it once sent.

        Raises:
            NotifyError: permanent failure, or retries exhausted (counted as ``failed``).
        """
        channel = notification.channel
        for number, delay in enumerate(self._policy.delays(self._rng), start=1):
            if not failure.retryable:
                break
            self.stats.add(channel, "retried")
            logger.warning(
                "notification retry channel=%s ref=%s attempt=%d delay_s=%.2f reason=%s",
                channel,
                notification.id,
                number,
                delay,
                failure.reason,
            )
            await self._sleep(delay)
            (next_failure,) = await self._attempts_in_thread([notification], retry=True)
            if next_failure is None:
                return notification
            failure = next_failure
        self.stats.add(channel, "failed")
        if self.history is not None:
            reason = failure.reason + (" (retryable)" * failure.retryable)
            self.history(notification, "failed", reason)
        raise failure

    async def _attempts_in_thread(
        self, notifications: Sequence[Notification], *, retry: bool = False
    ) -> list[NotifyError | None]:
        """:meth:`_attempt_each` in the notifier's threads. A cancelled caller (the lane is
        stopping) makes the thread stop before its next notification."""
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, self._attempt_each, notifications, stop, retry
            )
        except asyncio.CancelledError:
            stop.set()
            raise

    def _attempt_each(
        self, notifications: Sequence[Notification], stop: threading.Event, retry: bool
    ) -> list[NotifyError | None]:
        """One attempt per notification, in order, until one fails or ``stop`` is set (runs
        in a worker thread: touches nothing but apprise)."""
        failures: list[NotifyError | None] = []
        for notification in notifications:
            if stop.is_set():
                break
            try:
                failure = self._attempt(notification, cause=retry or self._policy.attempts == 1)
            except Exception as exc:  # apprise catches its plugins' errors; this is its own
                failure = NotifyError(
                    notification.channel,
                    f"apprise raised {type(exc).__name__}",  # its text may quote the URL
                    retryable=False,
                )
            failures.append(failure)
            if failure is not None:
                break
        return failures

    def _attempt(self, notification: Notification, *, cause: bool) -> NotifyError | None:
        """One apprise call; ``cause``: capture its DEBUG lines, for the innermost cause of a
        failure (a retry, or a first attempt that will not be retried)."""
        with debug_demand.wanted() if cause else contextlib.nullcontext():
            return self._call_apprise(notification, logging.DEBUG if cause else logging.WARNING)

    def _call_apprise(self, notification: Notification, log_level: int) -> NotifyError | None:
        name, title, body = notification.channel, notification.title, notification.body
        channel = self._channels.get(name)
        if channel is None:
            return NotifyError(name, "no such channel is configured", retryable=False)
        if not body.strip():
            # apprise refuses an empty body ("No message body ... was specified") as a plain
            # failure, which would be retried forever and hold up the lane behind it. A body
            # template may well render nothing for some alerts: the title says it then.
            if not title.strip():
                return NotifyError(name, "title and body rendered empty", retryable=False)
            body = title
        result: Any = channel.apprise.notify(
            body=body,
            title=title,
            notify_type=NotifyType(notification.notify_type),
            body_format=notification.format,
            timeout=self._policy.send_timeout,
            log_level=log_level,
        )
        if not result:
            return classify(name, result, url_secrets(channel.url))
        return None

    def _record(self, deliveries: Sequence[Delivery]) -> None:
        if self._alerts_out is None:
            return
        with self._alerts_out.open("ab") as out:
            out.write(b"".join(self._encoder.encode(d) + b"\n" for d in deliveries))


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

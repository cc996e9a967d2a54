"""Counting notifications: an HTTP sink for apprise ``json://`` and the tally against the
oracle's transitions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from pipeline.agents.notify import POSSIBLE_DUPLICATE
from streamwarden.chaos.workload import AlertKey

__all__ = ["NotificationSink", "Received", "Tally", "describe_tally", "parse_items", "tally"]

_ITEM = re.compile(r"SWCHAOS\|([^|;]*)\|([^|;]*)\|([^|;]*)\|([^|;]*)\|(-?\d+)\|([^|;]*);")


@dataclass(frozen=True)
class Received:
    """One alert of one notification that reached the sink."""

    kind: str
    rule: str
    entity: str
    state: str
    ts_ms: int
    fingerprint: str
    request: int
    at: float = 0.0
    """``time.monotonic()`` of the arrival."""
    marked: bool = False
    """The notification's title said it may be a duplicate (a re-send after a crash)."""

    @property
    def key(self) -> AlertKey:
        return (self.rule, self.entity, self.state, self.ts_ms)


def parse_items(message: str, request: int, at: float = 0.0, *, title: str = "") -> list[Received]:
    """The ``SWCHAOS|...;`` items of one notification body."""
    marked = title.startswith(POSSIBLE_DUPLICATE)
    return [
        Received(kind, rule, entity, state, int(ts), fingerprint, request, at, marked)
        for kind, rule, entity, state, ts, fingerprint in _ITEM.findall(message)
    ]


class NotificationSink:
    """An HTTP server on 127.0.0.1 recording apprise ``json://`` notifications.

    While :attr:`available` is False it answers 503 (a channel outage; apprise reports it as a
    retryable failure) and records nothing. Thread-based, so a busy event loop never delays
    an answer; :meth:`wait_until` lets async code wait for a condition without polling.
    """

    def __init__(self) -> None:
        self.available = True
        self.refused = 0
        self.requests = 0
        self._items: list[Received] = []
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # The worker masks every path segment of a channel URL in its logs (it may be a
        # token): a random one masks nothing else.
        self._token = f"hook-{uuid.uuid4().hex[:12]}"

    def start(self) -> Self:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status = sink._record(body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="chaos-notification-sink", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("notification sink not started")
        return int(self._server.server_address[1])

    def url(self) -> str:
        """The apprise URL of this sink."""
        return f"json://127.0.0.1:{self.port}/{self._token}"

    def _record(self, body: bytes) -> int:
        with self._lock:
            if not self.available:
                self.refused += 1
                status = 503
            else:
                self.requests += 1
                try:
                    payload = json.loads(body)
                    message = str(payload.get("message", ""))
                    title = str(payload.get("title", ""))
                except (ValueError, AttributeError):
                    message = title = ""
                self._items.extend(
                    parse_items(message, self.requests, time.monotonic(), title=title)
                )
                status = 200
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(event.set)
        return status

    @property
    def items(self) -> list[Received]:
        """Every alert received so far, in arrival order (duplicates included)."""
        with self._lock:
            return list(self._items)

    def count(self) -> int:
        with self._lock:
            return len(self._items)

    async def wait_until(
        self, predicate: Callable[[list[Received]], bool], wait_timeout: float
    ) -> bool:
        """Wait until ``predicate(items)`` holds (True) or ``wait_timeout`` s passed (False)."""
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.add(waiter)
        try:
            async with asyncio.timeout(wait_timeout):
                while not predicate(self.items):
                    await event.wait()
                    event.clear()
        except TimeoutError:
            return predicate(self.items)
        finally:
            with self._lock:
                self._waiters.discard(waiter)
        return True


@dataclass(frozen=True)
class Tally:
    """Delivered notifications against the oracle's transitions."""

    expected: int
    delivered: int
    duplicated: int
    lost: int
    unexpected: int
    out_of_order: int
    missing: tuple[AlertKey, ...] = ()
    extra: tuple[AlertKey, ...] = ()
    duplicated_by_rule: dict[str, int] = field(default_factory=dict)
    resent_after_kill: int = 0
    marked_copies: int = 0
    """Extra copies whose title marked them as possible duplicates (re-sends after a crash
    interrupted a delivery, same notification id)."""

    @property
    def unmarked_duplicates(self) -> int:
        """Extra copies nobody could tell from a new notification: always a defect."""
        return self.duplicated - self.marked_copies

    def details(self) -> dict[str, Any]:
        """Structured breakdown for the JSON line (by rule; re-sends after kills)."""
        return {
            "lost_by_rule": dict(sorted(Counter(k[0] for k in self.missing).items())),
            "unexpected_by_rule": dict(sorted(Counter(k[0] for k in self.extra).items())),
            "duplicated_by_rule": dict(sorted(self.duplicated_by_rule.items())),
            "resent_after_kill": self.resent_after_kill,
            "marked_possible_duplicate": self.marked_copies,
            "out_of_order": self.out_of_order,
        }


def tally(
    expected: Iterable[AlertKey], received: Iterable[Received], kills: Iterable[float] = ()
) -> Tally:
    """Count delivered, duplicated, lost, unexpected items, and alerts told out of order.

    ``out_of_order`` counts alerts (rule, entity) whose first deliveries do not follow their
    transition times (e.g. a resolve before its firing). ``resent_after_kill`` counts copies
    that arrived after a worker was killed while an earlier copy arrived before that kill:
    the notification was sent, then the worker died before recording it as delivered.
    """
    wanted = set(expected)
    items = list(received)
    kill_times = sorted(kills)
    previous: dict[AlertKey, float] = {}
    resent = marked = 0
    for item in items:
        before = previous.get(item.key)
        if before is not None and any(before <= t <= item.at for t in kill_times):
            resent += 1
        if before is not None and item.marked:
            marked += 1
        previous[item.key] = item.at
    copies = Counter(item.key for item in items)
    distinct = set(copies)
    first_seen: dict[tuple[str, str], list[int]] = {}
    done: set[AlertKey] = set()
    for item in items:
        if item.key in done:
            continue
        done.add(item.key)
        first_seen.setdefault((item.rule, item.entity), []).append(item.ts_ms)
    out_of_order = sum(1 for times in first_seen.values() if times != sorted(times))
    missing = sorted(wanted - distinct)
    extra = sorted(distinct - wanted)
    return Tally(
        expected=len(wanted),
        delivered=len(wanted & distinct),
        duplicated=sum(n - 1 for n in copies.values()),
        lost=len(missing),
        unexpected=len(extra),
        out_of_order=out_of_order,
        missing=tuple(missing),
        extra=tuple(extra),
        resent_after_kill=resent,
        marked_copies=marked,
        duplicated_by_rule=dict(
            Counter({key[0]: 0 for key in copies})
            + Counter(key[0] for key, n in copies.items() for _ in range(n - 1))
        ),
    )


def describe_tally(result: Tally) -> str:
    """The parts of a tally that are not in the table columns, when they are not zero."""
    parts = []
    if result.missing:
        by_rule = Counter(key[0] for key in result.missing)
        parts.append(f"lost by rule {dict(sorted(by_rule.items()))}, e.g. {result.missing[0]}")
    if result.unexpected:
        by_rule = Counter(key[0] for key in result.extra)
        parts.append(
            f"{result.unexpected} unexpected, by rule {dict(sorted(by_rule.items()))}, "
            f"e.g. {result.extra[0]}"
        )
    if result.duplicated:
        parts.append(
            f"duplicated {dict(sorted(result.duplicated_by_rule.items()))}, "
            f"{result.resent_after_kill} of them re-sent after a kill (sent, then the worker "
            f"died before recording the delivery), {result.marked_copies} marked as possible "
            f"duplicates (same id)"
        )
    if result.out_of_order:
        parts.append(f"{result.out_of_order} alerts told out of order")
    return "; ".join(parts)

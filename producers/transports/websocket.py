"""A reusable, reconnecting client loop for WebSocket upstreams (websockets >= 13 asyncio API).

:class:`WebSocketClient` connects, hands every frame (``str`` or ``bytes``) to a callback,
reconnects with :class:`~producers.backoff.Backoff` (reset after a good connection: one that
delivered a frame or stayed up ``stable_after`` seconds) and stops promptly when its ``stop``
event is set. It never sends anything unless the source's ``on_open`` hook does.

Nothing received is lost, whatever phase a connection ends in: the reader runs from the moment
the handshake completes, beside the ``on_open`` hook (authentication, subscriptions), so frames
the upstream pushes while the hook is still sending are published as they come; when the
connection ends (close frame or dropped TCP connection, during the hook or later) the reader
first hands out every frame websockets had already received. Frames received during the hook
count for the connection (one that delivered frames is good and resets the backoff). A source
that needs replies during its hook takes them from its ``on_frame``, never calls ``recv``.

Failure policy (see :func:`default_status_policy`):

* HTTP 401/403 at the handshake -> :class:`~producers.errors.UpstreamAuthError`, raised at once.
* Other HTTP 4xx except 408/429 -> :class:`~producers.errors.UpstreamRejectedError`, raised at
  once: a wrong business id or path (404) is a configuration error that retrying cannot fix, and
  failing loudly at start-up beats a silent retry loop.
* HTTP 408/429/5xx, refused or dropped TCP connections, handshake timeouts, protocol errors,
  closes (any code) and idle timeouts -> logged and retried.
* Anything the frame callback raises (a failed sink, a bug) propagates unchanged.

Frame size: frames larger than ``max_frame_bytes`` are not handed to the callback; they are
logged, counted in ``oversized_total`` and, given a ``dead_letters`` route, dead-lettered with
their first :data:`~producers.sink.EXCERPT_BYTES` bytes (credentials masked); the connection is
kept. websockets' own
``max_size`` is set to :data:`MAX_SIZE_FACTOR` times that limit so that an oversized frame can
be received and reported instead of killing the connection; only frames beyond that hard limit
make websockets close the connection (code 1009), which is then retried like any other drop.
The factor bounds memory at ``max_queue`` (16) frames of that size per connection.

Every wait is bounded: the handshake by ``open_timeout``, each receive by ``idle_timeout``
(when set), the closing handshake by ``close_timeout``, and every delay by ``stop``.
URLs are only ever logged through :func:`~producers.redact.redact_url`; websockets' own debug
log (which prints the request line, query string included) goes to the ``...websocket.wire``
logger, which masks credentials and the secrets passed in.

TLS: ``wss://`` certificates and hostnames are verified (the system CA store). Only
``WebSocketOptions(tls_verify=False)``, which the sources file allows only together with
``tls_insecure_acknowledged: true``, turns that off, and then every connection attempt logs a
WARNING naming the source.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)

from producers.backoff import Backoff, sleep_unless_stopped
from producers.envelope import now_ms
from producers.errors import SourceConfigError, UpstreamAuthError, UpstreamRejectedError
from producers.redact import SecretFilter, redact_url
from producers.sink import DeadLetterRoute, frame_excerpt

__all__ = [
    "MAX_SIZE_FACTOR",
    "FrameHandler",
    "OpenHandler",
    "StatusAction",
    "TransportStats",
    "WebSocketClient",
    "WebSocketOptions",
    "default_status_policy",
    "refusal_error",
    "retry_after_seconds",
]

logger = logging.getLogger(__name__)

#: websockets' hard ``max_size`` is this many times ``max_frame_bytes`` (see module docstring).
MAX_SIZE_FACTOR = 4

#: Receives each frame and the 1-based number of the connection it arrived on.
FrameHandler = Callable[[str | bytes, int], Awaitable[None]]
#: Runs once per connection before frames are read (subscriptions); may send.
OpenHandler = Callable[[ClientConnection], Awaitable[None]]

_WIRE_FILTER = SecretFilter(redact_credentials=True)
_WIRE_LOGGER = logging.getLogger(f"{__name__}.wire")
_WIRE_LOGGER.addFilter(_WIRE_FILTER)
logger.addFilter(_WIRE_FILTER)

_T = TypeVar("_T")


class StatusAction(enum.Enum):
    """What to do with an HTTP status that refused the WebSocket handshake."""

    AUTH = "auth"
    REJECTED = "rejected"
    RETRY = "retry"


def default_status_policy(status: int) -> StatusAction:
    """401/403 are auth failures, other 4xx except 408/429 are rejections, the rest retry."""
    if status in (401, 403):
        return StatusAction.AUTH
    if 400 <= status < 500 and status not in (408, 429):
        return StatusAction.REJECTED
    return StatusAction.RETRY


@dataclass(frozen=True, kw_only=True)
class WebSocketOptions:
    """Connection tuning, all durations in float seconds.

    Attributes:
        ping_interval: keepalive ping period; None sends no pings.
        ping_timeout: how long to wait for a pong before dropping the connection.
        open_timeout: bound on TCP connect + TLS + opening handshake.
        close_timeout: bound on the closing handshake.
        idle_timeout: reconnect when no frame arrived for this long; None waits forever.
        stable_after: a connection up this long counts as good even without frames.
        max_frame_bytes: larger frames are reported, dead-lettered and skipped.
        backoff_initial, backoff_factor, backoff_max: reconnect delays (full jitter).
        tls_verify: verify ``wss://`` certificates and hostnames; False is insecure and
            logged as a WARNING at every connection attempt.
    """

    ping_interval: float | None = None
    ping_timeout: float | None = 20.0
    open_timeout: float = 10.0
    close_timeout: float = 5.0
    idle_timeout: float | None = None
    stable_after: float = 10.0
    max_frame_bytes: int = 1 << 20
    backoff_initial: float = 0.5
    backoff_factor: float = 2.0
    backoff_max: float = 30.0
    tls_verify: bool = True


@dataclass
class TransportStats:
    """Counters of one client (monotonic)."""

    attempts_total: int = 0
    connections_total: int = 0
    frames_total: int = 0
    oversized_total: int = 0
    deadlettered_total: int = 0
    reconnects_total: int = 0


@dataclass(frozen=True)
class _Ended:
    """How one connection attempt ended when it is worth retrying."""

    connected: bool
    good: bool
    reason: str
    retry_after: float | None = None


class WebSocketClient:
    """Keep one WebSocket upstream connected and feed its frames to ``on_frame``.

    Args:
        url: full URL, credentials included; never logged unredacted.
        on_frame: awaited for each frame; backpressure propagates to the socket.
        name: the source name, for logs.
        options: timeouts, limits and backoff.
        on_open: optional per-connection hook (subscription frames).
        secrets: values to mask in websockets' own log lines.
        status_policy: maps handshake HTTP statuses to auth / rejected / retry.
        backoff: override the backoff built from ``options`` (tests).
        dead_letters: where oversized frames are dead-lettered; None only logs and counts
            them.
    """

    def __init__(
        self,
        url: str,
        on_frame: FrameHandler,
        *,
        name: str,
        options: WebSocketOptions | None = None,
        on_open: OpenHandler | None = None,
        secrets: Sequence[str] = (),
        status_policy: Callable[[int], StatusAction] = default_status_policy,
        backoff: Backoff | None = None,
        dead_letters: DeadLetterRoute | None = None,
    ) -> None:
        self._url = url
        self.shown_url = redact_url(url)
        self._on_frame = on_frame
        self._on_open = on_open
        self.name = name
        self.options = options or WebSocketOptions()
        self._status_policy = status_policy
        self._backoff = backoff or Backoff(
            self.options.backoff_initial, self.options.backoff_factor, self.options.backoff_max
        )
        self.stats = TransportStats()
        self._dead_letters = dead_letters
        _WIRE_FILTER.add(secrets)
        self._redact = _WIRE_FILTER.redact

    async def run(self, stop: asyncio.Event) -> None:
        """Connect and reconnect until ``stop`` is set.

        Raises:
            UpstreamAuthError: the handshake was refused with 401/403.
            UpstreamRejectedError: the handshake was refused with another permanent 4xx.
            SourceConfigError: the URL is not a valid WebSocket URL.
            Exception: whatever ``on_frame`` / ``on_open`` raised.
        """
        if is_clear_text(self._url):
            logger.warning(
                "upstream connection is clear text (ws://, no TLS): frames and any key in the "
                "URL travel unencrypted; use wss:// if the upstream offers it source=%s url=%s",
                self.name,
                self.shown_url,
            )
        failures = 0
        while not stop.is_set():
            failures += 1
            ended = await _until_stopped(stop, self._connect_and_consume(failures))
            if ended is None:
                break
            if ended.good:
                self._backoff.reset()
                failures = 0
            delay = self._backoff.next_delay()
            if ended.retry_after is not None:
                delay = max(delay, min(ended.retry_after, self.options.backoff_max))
            self.stats.reconnects_total += 1
            if ended.connected:
                logger.warning(
                    "connection lost; reconnecting source=%s url=%s connection=%d "
                    "delay_s=%.2f reason=%s",
                    self.name,
                    self.shown_url,
                    self.stats.connections_total,
                    delay,
                    ended.reason,
                )
            else:
                logger.warning(
                    "connection failed; retrying source=%s url=%s attempt=%d delay_s=%.2f "
                    "reason=%s",
                    self.name,
                    self.shown_url,
                    failures,
                    delay,
                    ended.reason,
                )
            if await sleep_unless_stopped(stop, delay):
                break
        logger.info("stopped source=%s url=%s", self.name, self.shown_url)

    async def _connect_and_consume(self, attempt: int) -> _Ended:
        options = self.options
        self.stats.attempts_total += 1
        url = self._url
        extra: dict[str, Any] = {}
        if not options.tls_verify and url[:6].lower() == "wss://":
            logger.warning(
                "TLS certificate verification is OFF; the upstream is not authenticated "
                "source=%s url=%s (tls_verify: false)",
                self.name,
                self.shown_url,
            )
            extra["ssl"] = _insecure_context()
        try:
            websocket = await connect(
                url,
                open_timeout=options.open_timeout,
                ping_interval=options.ping_interval,
                ping_timeout=options.ping_timeout,
                close_timeout=options.close_timeout,
                max_size=options.max_frame_bytes * MAX_SIZE_FACTOR,
                logger=_WIRE_LOGGER,
                **extra,
            )
        except InvalidStatus as exc:
            return self._refused(exc)
        except InvalidURI as exc:
            # str(exc) contains the URL with its credentials: do not chain it.
            raise SourceConfigError(
                f"source {self.name!r}: invalid WebSocket URL {self.shown_url}: {exc.msg}"
            ) from None
        except (OSError, TimeoutError, EOFError, WebSocketException) as exc:
            return _Ended(connected=False, good=False, reason=self._reason(exc))

        self.stats.connections_total += 1
        number = self.stats.connections_total
        loop = asyncio.get_running_loop()
        opened_at = loop.time()
        logger.info(
            "connected source=%s url=%s connection=%d attempt=%d",
            self.name,
            self.shown_url,
            number,
            attempt,
        )
        opener: asyncio.Future[None] | None = None
        if self._on_open is not None:
            # The hook (authentication, subscriptions) runs beside the reader, never instead of
            # it: frames the upstream pushes while we are still sending are read and published,
            # and a close during the hook ends the connection through the reader like any other.
            opener = asyncio.ensure_future(self._on_open(websocket))
        counted = _Counter()
        try:
            reason = await self._read(websocket, number, counted, opener)
            return self._ended(counted.frames, loop.time() - opened_at, reason)
        finally:
            if opener is not None and not opener.done():
                opener.cancel()
            if opener is not None:
                await asyncio.wait({opener})
            await websocket.close()
            if opener is not None and not opener.cancelled():
                _reraise_unless_closed(opener)

    async def _read(
        self,
        websocket: ClientConnection,
        number: int,
        counted: _Counter,
        opener: asyncio.Future[None] | None,
    ) -> str:
        """Publish every frame until the connection ends; return why it ended.

        This is the one place that guarantees that every frame received is published, whatever
        phase the connection is in when it ends: websockets keeps handing out frames it had
        already received after a close or an abort, and ``recv`` only raises once they are all
        read. A failing ``opener`` (the source refused the upstream for good) ends the read.
        """
        options = self.options
        while True:
            if opener is None or opener.done():
                if opener is not None and _failed(opener):
                    return "the per-connection hook failed"
                try:
                    async with asyncio.timeout(options.idle_timeout):
                        message = await websocket.recv()
                except TimeoutError:
                    return f"no frame for {options.idle_timeout:g}s (idle_timeout)"
                except ConnectionClosed as exc:
                    return self._closed_reason(exc)
                await self._deliver(message, number, counted)
                continue
            receive: asyncio.Future[str | bytes] = asyncio.ensure_future(websocket.recv())
            both: set[asyncio.Future[Any]] = {receive, opener}
            try:
                async with asyncio.timeout(options.idle_timeout):
                    await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():
                    continue  # the hook finished first: read on without it
                message = receive.result()
            except TimeoutError:
                return f"no frame for {options.idle_timeout:g}s (idle_timeout)"
            except ConnectionClosed as exc:
                return self._closed_reason(exc)
            finally:
                if not receive.done():
                    receive.cancel()
                    await asyncio.wait({receive})
            await self._deliver(message, number, counted)

    async def _deliver(self, message: str | bytes, number: int, counted: _Counter) -> None:
        counted.frames += 1
        size = _size_bytes(message, self.options.max_frame_bytes)
        if size > self.options.max_frame_bytes:
            await self._oversized(message, size, number)
            return
        self.stats.frames_total += 1
        await self._on_frame(message, number)

    async def _oversized(self, message: str | bytes, size: int, number: int) -> None:
        """Count, log and (given a route) dead-letter a frame over ``max_frame_bytes``."""
        received_at_ms = now_ms()
        limit = self.options.max_frame_bytes
        self.stats.oversized_total += 1
        route = self._dead_letters
        logger.warning(
            "frame too large; %s source=%s url=%s connection=%d size_bytes=%d "
            "max_frame_bytes=%d oversized_total=%d",
            "dead-lettered" if route is not None else "not published (no dead-letter route)",
            self.name,
            self.shown_url,
            number,
            size,
            limit,
            self.stats.oversized_total,
        )
        if route is not None:
            await route.send(
                f"frame of {size} bytes exceeds max_frame_bytes={limit}",
                frame_excerpt(message, self._redact),
                received_at_ms=received_at_ms,
            )
            self.stats.deadlettered_total += 1

    def _ended(self, frames: int, uptime: float, reason: str) -> _Ended:
        good = frames > 0 or uptime >= self.options.stable_after
        return _Ended(
            connected=True, good=good, reason=f"{reason} frames={frames} uptime_s={uptime:.1f}"
        )

    def _refused(self, exc: InvalidStatus) -> _Ended:
        status = exc.response.status_code
        error = refusal_error(self.name, self.shown_url, status, self._status_policy(status))
        if error is not None:
            raise error from exc
        return _Ended(
            connected=False,
            good=False,
            reason=f"HTTP {status}",
            retry_after=retry_after_seconds(exc.response.headers.get("Retry-After")),
        )

    def _closed_reason(self, exc: ConnectionClosed) -> str:
        if exc.rcvd is not None:
            text = f"closed by upstream code={exc.rcvd.code}"
            if exc.rcvd.reason:
                text += f" close_reason={self._redact(exc.rcvd.reason)!r}"
            return text
        if exc.sent is not None:
            return f"closed by us code={exc.sent.code} close_reason={exc.sent.reason!r}"
        return "connection dropped without a close frame"

    def _reason(self, exc: BaseException) -> str:
        return self._redact(f"{type(exc).__name__}: {exc}".rstrip(": "))


def is_clear_text(url: str) -> bool:
    """Whether ``url`` is ``ws://`` to a host other than this machine (issue 16: clear-text
    schemes are warned about like ``tls_verify: false``)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return parts.scheme.lower() == "ws" and not (
        host == "localhost" or host.startswith("127.") or host == "::1"
    )


@dataclass
class _Counter:
    """Frames received on one connection (oversized ones included)."""

    frames: int = 0


def _failed(task: asyncio.Future[None]) -> bool:
    """Whether ``task`` ended with an exception other than a closed connection."""
    if task.cancelled():
        return False
    exc = task.exception()
    return exc is not None and not isinstance(exc, ConnectionClosed)


def _reraise_unless_closed(task: asyncio.Future[None]) -> None:
    """Raise what the per-connection hook raised; a closed connection is the reader's news."""
    exc = task.exception()
    if exc is not None and not isinstance(exc, ConnectionClosed):
        raise exc


def _insecure_context() -> ssl.SSLContext:
    """A TLS context that accepts any certificate for any name (``tls_verify: false``)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _size_bytes(message: str | bytes, limit: int) -> int:
    if isinstance(message, bytes):
        return len(message)
    # UTF-8 needs at most 4 bytes per code point: skip encoding when it cannot exceed.
    if len(message) * 4 <= limit:
        return len(message)
    return len(message.encode("utf-8", "surrogatepass"))


def refusal_error(
    name: str, shown_url: str, status: int, action: StatusAction, *, what: str = "connection"
) -> UpstreamAuthError | UpstreamRejectedError | None:
    """The error (logged) for an HTTP status that refuses us for good, or None to retry."""
    if action is StatusAction.AUTH:
        logger.error(
            "upstream refused the credentials; not retrying source=%s url=%s status=%d",
            name,
            shown_url,
            status,
        )
        return UpstreamAuthError(
            f"source {name!r}: upstream refused the credentials: HTTP {status} url={shown_url}"
        )
    if action is StatusAction.REJECTED:
        logger.error(
            "upstream rejected the %s; not retrying source=%s url=%s status=%d",
            what,
            name,
            shown_url,
            status,
        )
        return UpstreamRejectedError(
            f"source {name!r}: upstream rejected the {what}: HTTP {status} url={shown_url}"
        )
    return None


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds; None when absent or an HTTP date (use backoff)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


async def _until_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, _T]) -> _T | None:
    """Run ``work`` until it finishes or ``stop`` is set (then cancel it and return None).

    Cancelling ``work`` runs its ``finally`` blocks, which close the connection within
    ``close_timeout``.
    """
    task = asyncio.create_task(work)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
        # Wait for the cancelled work to finish its cleanup; exceptions are handled below.
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved here too, in case we are leaving by cancellation
    if task.cancelled():
        return None
    return task.result()

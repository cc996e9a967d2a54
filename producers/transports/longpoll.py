"""A reconnecting HTTP long-polling client: one request at a time, each answer is one frame.

The server holds each ``GET`` until it has something to say and answers with one JSON object
(aliunid's long-polling access, upstreams.md section 1). The documented client re-polls at once
after an answer and waits 5 s after an error; :class:`LongPollClient` does the same, the wait
growing with :class:`~producers.backoff.Backoff` (reset by the next answer) while errors go on.

Failure policy (the WebSocket transport's, :func:`~producers.transports.websocket.
default_status_policy`):

* HTTP 401/403 -> :class:`~producers.errors.UpstreamAuthError`, raised at once.
* Other HTTP 4xx except 408/429 -> :class:`~producers.errors.UpstreamRejectedError`, raised at
  once (a wrong business id or path).
* HTTP 408/429/5xx, refused or dropped connections, timeouts -> logged and retried after the
  error delay; ``Retry-After`` is honoured up to ``backoff_max``.
* ``200`` with an empty body or ``204``: nothing this time; polled again at once.
* Anything the frame callback raises propagates unchanged.

Every answer body is handed to the callback unchanged (text, or bytes when it is not UTF-8),
together with a "connection" number that goes up after every error, so a run of answers
without errors shares one number, like the frames of one WebSocket connection. Bodies larger
than ``max_frame_bytes`` are dead-lettered (excerpt, credentials masked) instead. URLs are
logged only through :func:`~producers.redact.redact_url`; the key, in the query or in the
``x-api-key`` header, is never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from producers.backoff import Backoff, sleep_unless_stopped
from producers.envelope import now_ms
from producers.redact import SecretFilter, redact_url
from producers.sink import DeadLetterRoute, frame_excerpt
from producers.transports.websocket import (
    FrameHandler,
    default_status_policy,
    refusal_error,
    retry_after_seconds,
)

__all__ = ["LongPollClient", "LongPollOptions", "LongPollStats"]

logger = logging.getLogger(__name__)
_FILTER = SecretFilter(redact_credentials=True)
logger.addFilter(_FILTER)


@dataclass(frozen=True, kw_only=True)
class LongPollOptions:
    """Timeouts and delays, float seconds.

    Attributes:
        poll_timeout: bound on one request (the server may hold it this long).
        open_timeout: bound on connecting (TCP + TLS).
        error_delay: the first wait after an error (aliunid's sample: 5 s).
        backoff_factor, backoff_max: growth and cap of the wait while errors go on.
        max_frame_bytes: larger answers are dead-lettered, not published.
        tls_verify: verify ``https://`` certificates and hostnames.
    """

    poll_timeout: float = 90.0
    open_timeout: float = 10.0
    error_delay: float = 5.0
    backoff_factor: float = 2.0
    backoff_max: float = 60.0
    max_frame_bytes: int = 1 << 20
    tls_verify: bool = True


@dataclass
class LongPollStats:
    """Counters of one client (monotonic)."""

    polls_total: int = 0
    answers_total: int = 0
    empty_total: int = 0
    errors_total: int = 0
    oversized_total: int = 0


class _RetryableError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class LongPollClient:
    """Poll ``url`` until ``stop`` is set, handing every answer to ``on_frame``.

    Args:
        url: full URL (the key in the query when the upstream wants it there).
        on_frame: awaited for each answer.
        name: the source name, for logs.
        headers: extra request headers (``x-api-key``); their values are masked in logs.
        options: timeouts and delays.
        secrets: values to mask wherever they could be logged.
        dead_letters: where oversized answers go; None only logs and counts them.
    """

    def __init__(
        self,
        url: str,
        on_frame: FrameHandler,
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
        options: LongPollOptions | None = None,
        secrets: Sequence[str] = (),
        dead_letters: DeadLetterRoute | None = None,
    ) -> None:
        self._url = url
        self.shown_url = redact_url(url)
        self._on_frame = on_frame
        self.name = name
        self._headers = dict(headers or {})
        self.options = options or LongPollOptions()
        self._backoff = Backoff(
            self.options.error_delay,
            self.options.backoff_factor,
            max(self.options.backoff_max, self.options.error_delay),
        )
        self.stats = LongPollStats()
        self._dead_letters = dead_letters
        _FILTER.add([*secrets, *self._headers.values()])

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set.

        Raises:
            UpstreamAuthError: 401/403.
            UpstreamRejectedError: another permanent 4xx.
            Exception: whatever ``on_frame`` raised.
        """
        options = self.options
        timeout = aiohttp.ClientTimeout(total=options.poll_timeout, connect=options.open_timeout)
        connector = aiohttp.TCPConnector(ssl=options.tls_verify)
        if not options.tls_verify and self._url[:8].lower() == "https://":
            logger.warning(
                "TLS certificate verification is OFF; the upstream is not authenticated "
                "source=%s url=%s (tls_verify: false)",
                self.name,
                self.shown_url,
            )
        connection = 1
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            logger.info("long polling source=%s url=%s", self.name, self.shown_url)
            while not stop.is_set():
                poll = asyncio.ensure_future(self._poll(session))
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({poll, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopper.cancel()
                    if not poll.done():
                        poll.cancel()
                    await asyncio.wait({poll, stopper})
                if poll.cancelled():
                    break
                try:
                    body = poll.result()
                except _RetryableError as exc:
                    self.stats.errors_total += 1
                    # At least error_delay (the documented 5 s), more while errors go on.
                    delay = max(options.error_delay, self._backoff.next_delay())
                    if exc.retry_after is not None:
                        delay = max(delay, min(exc.retry_after, self._backoff.maximum))
                    logger.warning(
                        "long poll failed; retrying source=%s url=%s connection=%d "
                        "delay_s=%.2f reason=%s",
                        self.name,
                        self.shown_url,
                        connection,
                        delay,
                        _FILTER.redact(exc.reason),
                    )
                    connection += 1
                    if await sleep_unless_stopped(stop, delay):
                        break
                    continue
                self._backoff.reset()
                if body is None:
                    self.stats.empty_total += 1
                    continue
                await self._deliver(body, connection)
        logger.info("stopped source=%s url=%s", self.name, self.shown_url)

    async def _poll(self, session: aiohttp.ClientSession) -> bytes | None:
        """One request: the answer body, None for no answer, or an error to retry."""
        self.stats.polls_total += 1
        try:
            async with session.get(
                self._url, headers=self._headers, allow_redirects=False
            ) as response:
                status = response.status
                if status in (200, 204):
                    body = await response.read()
                    return body if status == 200 and body.strip() else None
                error = refusal_error(
                    self.name,
                    self.shown_url,
                    status,
                    default_status_policy(status),
                    what="request",
                )
                if error is not None:
                    raise error
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                raise _RetryableError(f"HTTP {status}", retry_after)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            text = str(exc)
            if not text and isinstance(exc, TimeoutError):
                text = "no answer within poll_timeout"
            raise _RetryableError(f"{type(exc).__name__}: {text}".rstrip(": ")) from None

    async def _deliver(self, body: bytes, connection: int) -> None:
        limit = self.options.max_frame_bytes
        if len(body) > limit:
            self.stats.oversized_total += 1
            received_at_ms = now_ms()
            logger.warning(
                "answer too large; %s source=%s url=%s size_bytes=%d max_frame_bytes=%d",
                "dead-lettered" if self._dead_letters is not None else "not published",
                self.name,
                self.shown_url,
                len(body),
                limit,
            )
            if self._dead_letters is not None:
                await self._dead_letters.send(
                    f"frame of {len(body)} bytes exceeds max_frame_bytes={limit}",
                    frame_excerpt(body, _FILTER.redact),
                    received_at_ms=received_at_ms,
                )
            return
        try:
            frame: str | bytes = body.decode("utf-8")
        except UnicodeDecodeError:
            frame = body
        self.stats.answers_total += 1
        await self._on_frame(frame, connection)

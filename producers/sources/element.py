"""ELEMENT IoT (ZENNER / Digimondo) WebSocket sockets: URL, keepalive, replay cursor, key.

See docs/upstreams.md section 4. One source is one socket:

* scope ``device`` / ``tag`` / ``stream`` (needs ``scope_id``) or ``mandate`` (the whole
  account; read_only or admin keys only), and ``socket`` ``readings`` or ``packets``:
  ``wss://{host}/api/v1/{devices|tags|streams}/{id}/{readings|packets}/socket?auth=KEY`` (the
  mandate sockets drop the ``{scope}/{id}`` part).
* Frames are JSON arrays of ``{"event": "reading_added" | "packet_added", "body": {...}}``.
* The server closes a connection after 60 s without client activity, so the producer pings:
  RFC 6455 pings (``keepalive: protocol``, the default) or the text message ``ping``
  (``keepalive: text``), answered with the text ``pong``. Every ``ping_interval`` either way.

Resume without loss or duplicates: the producer remembers the greatest ``body.inserted_at`` it
published (the server's own text, so the format round-trips) and reconnects with
``&after=<that>``; the server then replays what was inserted after it, oldest first, before going
live. ``after`` in the sources file sets where the first connection starts (default: live only).
If the server treats ``after`` as inclusive (the docs do not say), the replay starts with events
we already published: those carrying the cursor's exact ``inserted_at`` and an ``id`` already
published at that instant. A frame made only of such events is skipped, logged and counted
(``duplicates_total``), never silently; a frame that mixes them with new events (a batched
replay) is published unchanged with their ids in ``meta["duplicates"]``, and the normalizer
skips those events. (Asking for ``after`` + 1 µs instead would make an exclusive server skip
events inserted exactly 1 µs after the cursor.) With an exclusive server, events inserted in the
cursor's own microsecond but not yet received when the connection dropped cannot be recovered:
a limit of ``after=`` itself.

Durable resume: on start the producer reads its cursor back from what it already wrote, the
newest ``inserted_at`` of this stream in its raw topic (or in the JSONL recording of
``streamwarden record``; see :mod:`producers.sources.history`), so a restarted (even killed)
producer misses nothing the server still keeps and writes nothing twice.

Envelopes: one frame -> one envelope, payload unchanged, even when the frame holds several
events (a replay may batch them). Splitting would mean re-serializing, i.e. not publishing what
the server sent; the normalizer handles arrays. The Kafka key is the ``device_id`` of the first
event's body (a frame's events normally belong to one device; a mixed replay batch is keyed by
its first), or none for frames without one. ``pong`` replies to our text pings are keepalive
traffic, not data: they are counted (``pongs_total``) and logged at DEBUG, not published. Any
other frame, malformed ones included, is published.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, quote_plus, urlencode

import orjson
from pydantic import AwareDatetime, Field, SecretStr, ValidationInfo, field_validator
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from producers.backoff import Backoff, sleep_unless_stopped
from producers.envelope import RawEnvelope, now_ms
from producers.redact import redact_url
from producers.sink import DeadLetterRoute, EnvelopeSink
from producers.sources.base import Seconds, SourceBase, check_websocket_url
from producers.sources.common import websocket_options
from producers.sources.history import TAIL, HistoryError, history_of
from producers.transports.websocket import FrameHandler, WebSocketClient

__all__ = [
    "IDLE_CLOSE_S",
    "KIND",
    "ElementSource",
    "ElementStats",
    "FrameInfo",
    "ReplayCursor",
    "build_envelope",
    "build_url",
    "format_after",
    "run_element",
]

logger = logging.getLogger(__name__)

KIND = "element"

#: The server closes connections without client activity for this long (documented).
IDLE_CLOSE_S = 60.0

Scope = Literal["device", "tag", "stream", "mandate"]
Socket = Literal["readings", "packets"]
_SCOPE_PATHS = {"device": "devices", "tag": "tags", "stream": "streams"}


class ElementSource(SourceBase):
    """One ELEMENT IoT packets or readings socket.

    Attributes:
        url: the instance, ``wss://element-iot.com`` or a white-label host, optionally with a
            path prefix; no query string (the ``/api/v1/...`` path is built from the keys below).
        api_key: sent as the ``auth`` query parameter.
        scope: ``device``, ``tag``, ``stream`` (recommended for many devices) or ``mandate``.
        scope_id: the device, tag or stream id; not allowed for ``mandate``.
        socket: ``readings`` (parsed data) or ``packets`` (radio packets).
        after: replay from this instant on the first connection (ISO 8601 with a zone);
            default none: live data only.
        preload: ``preload=`` values passed through (e.g. ``device``, ``packet.interface``).
        keepalive: ``protocol`` (RFC 6455 pings) or ``text`` (``ping`` messages).
        ping_interval: keepalive period; required and below 60 s (the server's idle close).
        idle_timeout: reconnect when no frame arrived for this long. Default: none with
            protocol pings (a quiet device may send once an hour, and an unanswered ping
            already drops a dead connection), three ping intervals with text pings (their
            ``pong`` replies are frames).
    """

    kind: Literal["element"]
    url: str
    api_key: SecretStr = Field(min_length=1)
    scope: Scope
    scope_id: str | None = Field(
        default=None, min_length=1, pattern=r"^[A-Za-z0-9._~-]+$", validate_default=True
    )
    socket: Socket = "readings"
    after: AwareDatetime | None = None
    preload: tuple[str, ...] = ()
    keepalive: Literal["protocol", "text"] = "protocol"
    ping_interval: Seconds | None = 30.0
    idle_timeout: Seconds | None = None

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        parts = check_websocket_url(value)
        if parts.query or parts.fragment:
            raise ValueError(
                f"{redact_url(value)!r} must not have a query string or fragment; put the key "
                "in api_key and the socket in scope, scope_id and socket"
            )
        return value

    @field_validator("ping_interval")
    @classmethod
    def _pings_before_idle_close(cls, value: float | None) -> float:
        if value is None or value >= IDLE_CLOSE_S:
            shown = "null" if value is None else f"{value:g}s"
            raise ValueError(
                f"must be below {IDLE_CLOSE_S:g}s, got {shown}: ELEMENT closes connections "
                f"without client pings after {IDLE_CLOSE_S:g}s"
            )
        return value

    @field_validator("scope_id")
    @classmethod
    def _scope_id_matches_scope(cls, value: str | None, info: ValidationInfo) -> str | None:
        scope = info.data.get("scope")
        if scope is None:  # invalid itself: reported there
            return value
        if scope == "mandate" and value is not None:
            raise ValueError("not allowed for scope 'mandate' (the whole account)")
        if scope != "mandate" and value is None:
            raise ValueError(f"required for scope {scope!r}")
        return value


def format_after(instant: datetime) -> str:
    """``after=`` text for an aware datetime: UTC, microseconds, ``Z`` (the server's format)."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_url(
    base_url: str,
    api_key: str,
    *,
    scope: Scope,
    scope_id: str | None,
    socket: Socket,
    after: str | None = None,
    preload: Sequence[str] = (),
) -> str:
    """The socket URL with ``auth``, then ``after`` and ``preload`` when given, percent-encoded.

    Example: ``build_url("wss://h", "k", scope="stream", scope_id="s1", socket="readings",
    after="2024-01-01T00:00:00.000000Z")`` ->
    ``wss://h/api/v1/streams/s1/readings/socket?auth=k&after=2024-01-01T00%3A00%3A00.000000Z``.
    """
    prefix = "/api/v1"
    if scope != "mandate":
        if not scope_id:
            raise ValueError(f"scope {scope!r} needs a scope_id")
        prefix += f"/{_SCOPE_PATHS[scope]}/{quote(scope_id, safe='')}"
    params = [("auth", api_key)]
    if after is not None:
        params.append(("after", after))
    if preload:
        params.append(("preload", ",".join(preload)))
    query = urlencode(params, quote_via=quote, safe="")
    return f"{base_url.rstrip('/')}{prefix}/{socket}/socket?{query}"


def _parse_instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return None
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Stamp:
    id: str | None
    text: str
    instant: datetime


@dataclass(frozen=True)
class FrameInfo:
    """What the producer needs from one frame: key, event stamps, duplicate or not."""

    key: bytes | None
    stamps: tuple[_Stamp, ...] = ()
    duplicate_ids: tuple[str, ...] = ()
    duplicate: bool = False


@dataclass
class ReplayCursor:
    """The greatest ``inserted_at`` published, and the event ids published at that instant.

    Pure (no I/O). ``after`` is the text to send as ``after=``, or None before any event.
    ``known`` holds ids of events already published *after* the cursor (read back on start,
    see :func:`recover_cursor`): a replay that brings them again skips them.
    """

    after: str | None = None
    known: set[str] = field(default_factory=set, repr=False)
    _at: datetime | None = field(default=None, repr=False)
    _ids_at: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self._at = _parse_instant(self.after)

    def inspect(self, frame: str | bytes) -> FrameInfo:
        """Key, stamps and duplicate flag of ``frame`` (does not move the cursor)."""
        try:
            document = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return FrameInfo(None)
        if not isinstance(document, list):
            return FrameInfo(None)
        key: bytes | None = None
        stamps: list[_Stamp] = []
        for index, item in enumerate(document):
            body = item.get("body") if isinstance(item, dict) else None
            if not isinstance(body, dict):
                continue
            device = body.get("device_id")
            if index == 0 and isinstance(device, str) and device:
                key = device.encode()
            text = body.get("inserted_at")
            instant = _parse_instant(text)
            if instant is not None and isinstance(text, str):
                ident = body.get("id")
                stamps.append(_Stamp(ident if isinstance(ident, str) else None, text, instant))
        again = tuple(
            s.id
            for s in stamps
            if s.id is not None
            and ((s.instant == self._at and s.id in self._ids_at) or s.id in self.known)
        )
        duplicate = bool(document) and len(again) == len(document)
        return FrameInfo(key, tuple(stamps), again, duplicate)

    def advance(self, stamps: Sequence[_Stamp]) -> None:
        """Move past published events (call once the sink accepted their frame)."""
        for stamp in stamps:
            if self._at is None or stamp.instant > self._at:
                self._at = stamp.instant
                self.after = stamp.text
                self._ids_at = set()
            if stamp.instant == self._at and stamp.id is not None:
                self._ids_at.add(stamp.id)


@dataclass
class ElementStats:
    """Counters of one running source (monotonic)."""

    published_total: int = 0
    duplicates_total: int = 0
    pings_total: int = 0
    pongs_total: int = 0


def build_envelope(
    stream: str, frame: str | bytes, connection: int, extra: dict[str, Any] | None = None
) -> RawEnvelope:
    """Wrap a frame unchanged. Binary frames become base64 text with ``meta.encoding``.

    ``meta`` holds the 1-based connection number, ``extra`` (``duplicates``) and the encoding:
    never the URL or key.
    """
    meta: dict[str, Any] = {"connection": connection}
    if extra:
        meta.update(extra)
    if isinstance(frame, bytes):
        payload = base64.b64encode(frame).decode("ascii")
        meta["encoding"] = "base64"
    else:
        payload = frame
    return RawEnvelope(
        source=KIND, stream=stream, received_at_ms=now_ms(), payload=payload, meta=meta
    )


def _secrets(source: ElementSource) -> list[str]:
    raw = source.api_key.get_secret_value()
    return list(dict.fromkeys((raw, quote(raw, safe=""), quote_plus(raw, safe=""))))


async def run_element(
    source: ElementSource,
    sink: EnvelopeSink,
    stop: asyncio.Event,
    *,
    stats: ElementStats | None = None,
) -> None:
    """Stream one ELEMENT socket into ``sink`` until ``stop`` is set, resuming with ``after=``.

    Args:
        stats: counters to update (tests and metrics); a private one by default.

    Raises:
        UpstreamAuthError: the key was refused (HTTP 401/403 at the handshake).
        UpstreamRejectedError: the socket was refused otherwise (e.g. 404 for an unknown id).
    """
    counters = stats if stats is not None else ElementStats()
    initial = format_after(source.after) if source.after is not None else None
    recovered = await recover_cursor(source, sink, initial, stop)
    if recovered is None:
        return  # stopped while waiting for Kafka
    cursor = recovered
    text_keepalive = source.keepalive == "text"
    interval = source.ping_interval or IDLE_CLOSE_S / 2  # validated: always set

    def url() -> str:
        return build_url(
            source.url,
            source.api_key.get_secret_value(),
            scope=source.scope,
            scope_id=source.scope_id,
            socket=source.socket,
            after=cursor.after,
            preload=source.preload,
        )

    async def publish(frame: str | bytes, connection: int) -> None:
        if text_keepalive and frame == "pong":
            counters.pongs_total += 1
            logger.debug("pong source=%s connection=%d", source.name, connection)
            return
        info = cursor.inspect(frame)
        if info.duplicate:
            counters.duplicates_total += 1
            logger.info(
                "replayed frame already published; skipped source=%s connection=%d "
                "inserted_at=%s duplicates_total=%d",
                source.name,
                connection,
                cursor.after,
                counters.duplicates_total,
            )
            cursor.advance(info.stamps)  # published before: a later reconnect starts after it
            return
        extra = {"duplicates": list(info.duplicate_ids)} if info.duplicate_ids else None
        await sink.send(info.key, build_envelope(source.name, frame, connection, extra))
        counters.published_total += 1
        cursor.advance(info.stamps)

    pingers: set[asyncio.Task[None]] = set()

    async def start_text_pings(websocket: ClientConnection) -> None:
        task = asyncio.create_task(_text_pings(websocket, interval, counters))
        pingers.add(task)
        task.add_done_callback(pingers.discard)

    options = websocket_options(source)
    if text_keepalive:
        # Our pings are text now; the pongs are frames, so a missing pong shows up as an idle
        # connection: give up on it after three unanswered pings unless told otherwise.
        idle = source.idle_timeout if source.idle_timeout is not None else 3 * interval
        options = replace(options, ping_interval=None, idle_timeout=idle)
    client = _ResumingClient(
        url,
        publish,
        name=source.name,
        options=options,
        on_open=start_text_pings if text_keepalive else None,
        secrets=_secrets(source),
        dead_letters=DeadLetterRoute(sink, KIND, source.name),
    )
    try:
        await client.run(stop)
    finally:
        for task in list(pingers):
            task.cancel()
        for task in list(pingers):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def recover_cursor(
    source: ElementSource,
    sink: EnvelopeSink,
    initial: str | None,
    stop: asyncio.Event | None = None,
) -> ReplayCursor | None:
    """Where the last run stopped, read back from what this stream wrote to ``sink``.

    The sink's own output (the raw topic, or the JSONL recording) holds every envelope the
    last run delivered, except possibly some of its last batch (see
    :mod:`producers.sources.history`). So the cursor is set *before* the newest
    :data:`~producers.sources.history.TAIL` envelopes (by receive time), and the events of
    those are ``known``: the replay brings back what is missing and skips what is there. With
    no output, or for sinks without a history, the cursor is ``initial`` (the configured
    ``after``). While Kafka is unreachable it tries again with backoff (as the sink itself
    would), never starting live instead: that would silently lose what the upstream inserted
    while the producer was down.

    Returns:
        The cursor, or None when ``stop`` was set while waiting for Kafka.

    Raises:
        HistoryError: the recording exists but cannot be read.
    """
    history = history_of(sink)
    if history is None:
        return ReplayCursor(initial)
    probe = ReplayCursor()

    def ours(envelope: RawEnvelope) -> bool:
        return envelope.stream == source.name and bool(probe.inspect(envelope.payload).stamps)

    retry = Backoff(1.0, 2.0, 30.0)
    while True:
        try:
            tail = await history.tail(KIND, ours, TAIL)
            break
        except HistoryError as exc:
            if not exc.retryable:
                raise
            delay = retry.next_delay()
            logger.warning(
                "cannot read back where this stream stopped; retrying source=%s delay_s=%.2f "
                "reason=%s",
                source.name,
                delay,
                exc,
            )
            if stop is not None and await sleep_unless_stopped(stop, delay):
                return None
            if stop is None:
                await asyncio.sleep(delay)
    if not tail:
        logger.info(
            "no earlier output of this stream; starting from the configured after "
            "source=%s after=%s",
            source.name,
            initial or "none (live only)",
        )
        return ReplayCursor(initial)
    # The server sends in inserted_at order (replays oldest first), so that is also the order
    # the producer received and sent them in (receive times collide within a millisecond).
    stamped = [(probe.inspect(e.payload).stamps, e) for e in tail]
    stamped.sort(key=lambda pair: (max(s.instant for s in pair[0]), pair[1].received_at_ms))
    settled, recent = stamped[:-TAIL], stamped[-TAIL:]
    stamps = [s for frame_stamps, _ in recent for s in frame_stamps]
    cursor = ReplayCursor()
    if settled:
        cursor.advance(settled[-1][0])
    else:  # everything ever written is recent: start just before the oldest of it
        oldest = min(s.instant for s in stamps) - timedelta(microseconds=1)
        if source.after is not None and source.after < oldest:
            oldest = source.after
        cursor = ReplayCursor(format_after(oldest))
    cursor.known = {s.id for s in stamps if s.id is not None}
    logger.info(
        "resuming before the newest readings already written source=%s after=%s already_written=%d",
        source.name,
        cursor.after,
        len(cursor.known),
    )
    return cursor


async def _text_pings(websocket: ClientConnection, interval: float, counters: ElementStats) -> None:
    """Send ``ping`` every ``interval`` seconds until the connection closes."""
    while True:
        try:
            async with asyncio.timeout(interval):
                await websocket.wait_closed()
        except TimeoutError:
            pass
        else:
            return
        try:
            await websocket.send("ping")
        except ConnectionClosed:
            return
        counters.pings_total += 1


class _ResumingClient(WebSocketClient):
    """A WebSocketClient whose URL is rebuilt for every attempt, so ``after=`` moves on.

    The transport reads ``_url`` once per connection attempt and ``shown_url`` when it logs;
    both are computed from ``url_for`` here. (A URL callable in the transport would be cleaner.)
    """

    def __init__(self, url_for: Callable[[], str], on_frame: FrameHandler, **kwargs: Any) -> None:
        self._url_for = url_for
        super().__init__(url_for(), on_frame, **kwargs)

    @property
    def _url(self) -> str:
        return self._url_for()

    @_url.setter
    def _url(self, value: str) -> None:
        """The base class stores its first URL here; ``url_for`` supersedes it."""

    @property
    def shown_url(self) -> str:
        return redact_url(self._url_for())

    @shown_url.setter
    def shown_url(self, value: str) -> None:
        """Computed from ``url_for``, like ``_url``."""

"""A local Hemis server: STOMP 1.2 over WebSocket with the building's real-time topics.

What it reproduces (docs/upstreams.md section 5; "[inference]" marks what no source states):

* WebSocket on ``path`` (default ``/``; other paths get HTTP 404), subprotocols ``v12.stomp``,
  ``v11.stomp``, ``v10.stomp`` (the server picks ``v12.stomp`` when offered). A client offering
  none is accepted, as one working Hemis client offers none; ``require_subprotocol=True`` refuses
  it with HTTP 400 instead (whether the real server requires one is unknown).
* Optional TLS (``ssl_context``) and ``host_header``: the expected HTTP ``Host`` (local mode,
  where clients connect to the building's IP and send the cloud hostname); another Host gets
  HTTP 404, as from a reverse proxy routing by name [inference].
* ``CONNECT``/``STOMP`` with ``accept-version`` including 1.2, ``login`` = building id and
  ``passcode`` = a valid, unexpired token. Otherwise ``ERROR`` (``message:Authentication
  failed`` or ``message:Token expired``; the real texts are unknown) and the connection is
  closed. ``CONNECTED`` carries ``version:1.2``, ``heart-beat:sx,sy`` (``heartbeat_ms``),
  ``session`` and ``server``.
* Heart-beats negotiated as the STOMP spec says. The server sends ``\\n`` when it sent nothing
  else for its period; a client that sends nothing for ``heartbeat_grace`` times its period is
  dropped (close 1000 "heart-beat timeout"), as Artemis does with its connection TTL.
* ``SUBSCRIBE`` (``id`` and ``destination`` required, duplicate ids refused) to
  ``jms.topic.{building}.data`` / ``.management``; another building's topic gets ``ERROR
  message:Access refused``, anything else ``ERROR message:Unknown destination`` (then close).
  ``UNSUBSCRIBE`` by id. ``receipt`` headers are answered with ``RECEIPT`` (also on
  ``DISCONNECT``, after which the server closes). ``ACK``/``NACK`` are accepted and ignored
  (subscriptions are ``ack:auto`` in every known client); ``SEND`` and transactions get ERROR.
* ``MESSAGE`` frames: ``subscription``, ``message-id``, ``destination``,
  ``content-type:application/json``, ``content-length``, JSON body, ending NUL then LF
  (``trailing_lf=False`` ends with the NUL only). ``frame_mode`` sends them as text, binary or
  alternating WebSocket frames (a flexom client decodes binary frames as UTF-8).
* Tokens expire: the constructor's token (and tokens from :meth:`issue_token`) live
  ``token_ttl`` seconds (None: forever). When a session's token expires the server sends ``ERROR
  message:Token expired`` and closes; every MESSAGE sent before is already on the wire. The
  client must reconnect with a fresh token; :meth:`expire_token` expires one at once.

Values: a four-zone home (``Salon``, ``Chambre_01``, ``Bureau``, ``Serveur``), one tick every
``interval`` seconds; a single ticker makes the frames for every client, as a broadcasting
server does. Per tick (``p = tick - 1``): SENSOR_STATE ``TMP`` of every zone (value a string
like ``"21.3"``, as in the docs); FACTOR_CURRENT_STATE of one zone, ``TMP`` or ``OCC``
(``p % 2 == 0``); the Salon shutter's ACTUATOR_CURRENT_STATE + ACTUATOR_HARDWARE_STATE
(``BRIEXT``, 0.0-1.0, ``p % 3 == 0``); the Bureau heating setpoint's ACTUATOR_TARGET_STATE +
FACTOR_TARGET_STATE (comfort 21.0 / eco 19.0, ``p % 5 == 0``); a DataContainer of the Serveur
temperature (``p % 4 == 0``); OBJECTIVE_STATE (``p % 6 == 0``); IT_STATE of one device
(``p % 10 == 0``); a wall-switch press ``SWS`` 1-5 (``p % 7 == 0``) and its 0 release the next
tick; ENTITY_MANAGEMENT on the management topic (``p % 15 == 0``). Tick 1 has every type but
``NEW_DATA`` (tick 5).

DataContainers alternate (unless pinned by ``provider_type``, ``container_shape``,
``provider_timestamps``) between type ``DATA_PROVIDER`` and ``NEW_DATA`` (seen in a client,
not in the docs), ``data_points`` next to ``header`` (the doc example) and inside it (the doc
prose), and seconds (the doc example) and milliseconds (the doc prose) in ``timestamp`` and
``d``.

Demo behaviour (a 40-tick cycle, so 40 s at ``interval=1.0``):

* The Serveur temperature (``sensorId`` :data:`SERVER_SENSOR_ID`) reads 28.6-30.4 °C on ticks
  9-20 of every cycle (tick n comes n intervals after start: 9 s to 20 s) and 23-25.5 °C
  otherwise: a ``sensor.TMP > 28`` rule fires and resolves each cycle.
* The Bureau temperature sensor (:data:`FAULT_SENSOR_ID`) is faulty on ticks 25-34 (25 s to
  34 s, recovering at 35 s): it sends a
  SENSOR_STATE whose value is an ITCompositeState with ``o: KO`` (then ``o: OK``, ``pO: KO`` when
  it recovers) instead of a temperature, and its device (:data:`FAULT_IT_ID`) an IT_STATE with
  ``o: KO`` [inference: the docs list ITCompositeState among SENSOR_STATE value types but give
  no example]. The normalizer turns these into StateEvents ``sensor.o`` / ``it.o`` = ``ko``.

Timestamps come from ``clock`` (epoch seconds; default ``time.time``); values, ids and the
order of frames depend only on ``seed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import math
import random
import re
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed, NegotiationError
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from producers.redact import SecretFilter
from producers.simulators.base import SimulatorServer

__all__ = [
    "FAULT_IT_ID",
    "FAULT_SENSOR_ID",
    "SERVER_SENSOR_ID",
    "SUBPROTOCOLS",
    "HemisSimulator",
    "SentFrame",
    "StompFrameParser",
    "encode_frame",
]

logger = logging.getLogger(__name__)

#: Subprotocols the server supports, preferred first.
SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")

CYCLE_TICKS = 40
#: Positions ``(tick - 1) % CYCLE_TICKS`` where the server room is too warm.
HOT_TICKS = range(8, 20)
#: Positions where the Bureau temperature sensor is faulty.
FAULT_TICKS = range(24, 34)

SERVER_SENSOR_ID = "F023B91000000073#1"
FAULT_SENSOR_ID = "F023B910000000A4#1"
FAULT_IT_ID = "041AA72AAA4A84"

_ZONES = ("Salon", "Chambre_01", "Bureau", "Serveur")
_ZONE_BASE_C = {"Salon": 21.0, "Chambre_01": 19.5, "Bureau": 20.5, "Serveur": 24.2}
_SENSOR_IDS = {
    "Salon": "F023B91000000071#1",
    "Chambre_01": "F023B91000000072#1",
    "Bureau": FAULT_SENSOR_ID,
    "Serveur": SERVER_SENSOR_ID,
}
_IT_IDS = {
    "Salon": "041AA72AAA4A80",
    "Chambre_01": "041AA72AAA4A81",
    "Bureau": FAULT_IT_ID,
    "Serveur": "041AA72AAA4A83",
}
_SHUTTER_IT = "04B99FEAD45480"
_HEATING_IT = "0400A5818140A9"
_SWITCH_IT = "00317685"
_OBJECTIVE_ID = "obj-confort-bureau"
_ENTITY_EVENTS = (
    ("ZONE", "Chambre_02", "CREATE"),
    ("AMBIANCE", "ambi012345", "UPDATE"),
    ("IT", "123456478#C01", "DELETE"),
    ("AGENDA", "agenda-semaine", "UPDATE"),
)
_SERVER_NAME = "Hemis/1.10.3 (StreamWarden simulator)"
#: ``passcode:<value>`` in websockets' frame debug lines (a ``repr``: newlines are ``\\n``).
_PASSCODE_HEADER = re.compile(r"(passcode:[ \t]*)(?:(?!\\n)[^'\"\s])+")
_CONNECT_TIMEOUT = 10.0
_MAX_CLIENT_FRAME = 64 * 1024

FrameMode = Literal["text", "binary", "mixed"]
ContainerShape = Literal["next-to-header", "in-header", "both"]
TimestampUnit = Literal["s", "ms", "both"]
ProviderType = Literal["DATA_PROVIDER", "NEW_DATA", "both"]


class _WireFilter(SecretFilter):
    """Masks tokens the simulator knows and any ``passcode:`` value a client sent."""

    def redact(self, text: str) -> str:
        if "passcode:" in text:
            text = _PASSCODE_HEADER.sub(r"\g<1>***", text)
        return super().redact(text)


@dataclass(frozen=True)
class SentFrame:
    """A MESSAGE the simulator wrote to one connection (1-based connection number)."""

    connection: int
    destination: str
    body: str
    binary: bool


@dataclass(frozen=True)
class StompFrame:
    """A parsed STOMP frame (command, headers with the first occurrence winning, body)."""

    command: str
    headers: dict[str, str]
    body: bytes


class StompFrameError(Exception):
    """A client sent bytes that are not a STOMP frame."""


class StompFrameParser:
    """Incremental STOMP 1.2 frame parser; EOLs between frames are heart-beats.

    Args:
        max_frame_bytes: a frame (headers and body) larger than this is an error.
    """

    def __init__(self, max_frame_bytes: int = _MAX_CLIENT_FRAME) -> None:
        self._buffer = bytearray()
        self._max = max_frame_bytes
        self.heartbeats = 0

    def feed(self, data: bytes) -> list[StompFrame]:
        """Add bytes; return the frames completed by them.

        Raises:
            StompFrameError: malformed or too large.
        """
        self._buffer += data
        frames: list[StompFrame] = []
        while True:
            while self._buffer[:1] == b"\n" or self._buffer[:2] == b"\r\n":
                del self._buffer[: 1 if self._buffer[:1] == b"\n" else 2]
                self.heartbeats += 1
            frame = self._next()
            if frame is None:
                if len(self._buffer) > self._max:
                    raise StompFrameError(f"frame larger than {self._max} bytes")
                return frames
            frames.append(frame)

    def _next(self) -> StompFrame | None:
        buffer = self._buffer
        end = buffer.find(b"\n\n")
        end_crlf = buffer.find(b"\r\n\r\n")
        if end_crlf != -1 and (end == -1 or end_crlf < end):
            head_end, body_start = end_crlf, end_crlf + 4
        elif end != -1:
            head_end, body_start = end, end + 2
        else:
            return None
        try:
            head = bytes(buffer[:head_end]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StompFrameError("headers are not UTF-8") from exc
        lines = head.replace("\r\n", "\n").split("\n")
        command = lines[0]
        escaped = command not in ("CONNECT", "CONNECTED", "STOMP")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise StompFrameError(f"header line without ':' in {command} frame")
            if escaped:
                name, value = _unescape(name), _unescape(value)
            headers.setdefault(name, value)
        length_text = headers.get("content-length")
        if length_text is not None:
            if not length_text.isdigit():
                raise StompFrameError(f"bad content-length {length_text!r}")
            body_end = body_start + int(length_text)
            if len(buffer) <= body_end:
                return None
            if buffer[body_end] != 0:
                raise StompFrameError("frame does not end with NUL after content-length bytes")
        else:
            body_end = buffer.find(b"\0", body_start)
            if body_end == -1:
                return None
        body = bytes(buffer[body_start:body_end])
        del buffer[: body_end + 1]
        return StompFrame(command, headers, body)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    chars = iter(text)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        code = next(chars, "")
        mapped = {"r": "\r", "n": "\n", "c": ":", "\\": "\\"}.get(code)
        if mapped is None:
            raise StompFrameError(f"undefined header escape '\\{code}'")
        out.append(mapped)
    return "".join(out)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n").replace(":", "\\c")


def encode_frame(
    command: str,
    headers: Sequence[tuple[str, str]],
    body: bytes = b"",
    *,
    trailing_lf: bool = True,
) -> bytes:
    """Serialize a server frame; headers escaped (except in CONNECTED), NUL (+ LF) at the end."""
    escape = command != "CONNECTED"
    lines = [command]
    lines += [f"{_escape(k) if escape else k}:{_escape(v) if escape else v}" for k, v in headers]
    return "\n".join(lines).encode() + b"\n\n" + body + (b"\0\n" if trailing_lf else b"\0")


@dataclass(eq=False)
class _Session:
    number: int
    connection: ServerConnection
    session_id: str
    token: str | None = None
    subscriptions: dict[str, str] = field(default_factory=dict)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ended: bool = False
    frozen: bool = False
    last_received: float = 0.0
    last_sent: float = 0.0
    heartbeats_received: int = 0
    messages_sent: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    sequence: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


class HemisSimulator(SimulatorServer):
    """A real STOMP-over-WebSocket server speaking the Hemis real-time API.

    Args:
        building_id: the only accepted ``login``; names the topics.
        token: a valid ``passcode`` (valid ``token_ttl`` seconds from :meth:`start`).
        interval: seconds between ticks.
        seed: makes values and ids reproducible.
        token_ttl: lifetime of tokens in seconds; None never expires them.
        heartbeat_ms: the server's ``heart-beat`` (``sx,sy``) in CONNECTED.
        heartbeat_grace: a client silent for this many times its period is dropped.
        path: the WebSocket path.
        host_header: required HTTP Host (hostname, any port); None accepts any.
        ssl_context: serve ``wss://`` with it.
        require_subprotocol: refuse a handshake that offers no STOMP subprotocol (HTTP 400).
        frame_mode: MESSAGE frames as ``text``, ``binary`` or ``mixed`` WebSocket frames.
        trailing_lf: end server frames with NUL then LF (like Hemis and RabbitMQ) or NUL only.
        container_shape, provider_timestamps, provider_type: pin the DataContainer variants.
        clock: wall clock in epoch seconds, for timestamps.

    Failure modes on demand: :meth:`drop_connections` (network drop), :meth:`freeze_connections`
    (a hung server: connection open, nothing sent), :meth:`expire_token`.

    Counters: ``connections_accepted``, ``handshakes_rejected``, ``auth_failures``,
    ``frames_sent`` (MESSAGE), ``heartbeats_sent``, ``heartbeats_received``,
    ``heartbeat_drops``, ``tokens_expired`` (sessions ended by expiry), ``errors_sent``.
    ``sent_frames`` keeps the last 10 000 MESSAGEs; ``connect_headers`` the CONNECT headers of
    every session (in memory only); ``handshake_hosts`` the HTTP Host of every handshake.
    """

    kind = "hemis"

    def __init__(
        self,
        building_id: str,
        token: str,
        *,
        interval: float = 1.0,
        seed: int | None = None,
        token_ttl: float | None = None,
        heartbeat_ms: tuple[int, int] = (20_000, 20_000),
        heartbeat_grace: float = 2.0,
        path: str = "/",
        host_header: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        require_subprotocol: bool = False,
        frame_mode: FrameMode = "text",
        trailing_lf: bool = True,
        container_shape: ContainerShape = "both",
        provider_timestamps: TimestampUnit = "both",
        provider_type: ProviderType = "both",
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not building_id or not token:
            raise ValueError("building_id and token must not be empty")
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        if token_ttl is not None and not token_ttl > 0:
            raise ValueError(f"token_ttl must be > 0 seconds or None, got {token_ttl!r}")
        if min(heartbeat_ms) < 0 or not heartbeat_grace >= 1:
            raise ValueError("heartbeat_ms must be >= 0 and heartbeat_grace >= 1")
        self.building_id = building_id
        self.interval = interval
        self.token_ttl = token_ttl
        self.heartbeat_ms = heartbeat_ms
        self.heartbeat_grace = heartbeat_grace
        self.path = path
        self.host_header = host_header
        self.require_subprotocol = require_subprotocol
        self.frame_mode: FrameMode = frame_mode
        self.trailing_lf = trailing_lf
        self.container_shape: ContainerShape = container_shape
        self.provider_timestamps: TimestampUnit = provider_timestamps
        self.provider_type: ProviderType = provider_type
        self._ssl = ssl_context
        self._clock = clock or time.time
        self._rng = random.Random(seed)  # simulation, not crypto
        # token -> expiry (time.monotonic()) or None; the first token's ttl starts at start().
        self._tokens: dict[str, float | None] = {token: None}
        self._first_token = token
        self._tokens_changed = asyncio.Event()
        self._secret_filter = self._wire_filter = _WireFilter([token])
        self._wire_logger = logging.getLogger(f"{__name__}.wire")
        self.tick = 0
        self._provider_count = 0
        self._shutter = 0.35
        self._shutter_target = 0.35
        self._objective = True
        self._fault_active = False
        self.connections_accepted = 0
        self.handshakes_rejected = 0
        self.auth_failures = 0
        self.frames_sent = 0
        self.heartbeats_sent = 0
        self.heartbeats_received = 0
        self.heartbeat_drops = 0
        self.tokens_expired = 0
        self.errors_sent = 0
        self.sent_frames: deque[SentFrame] = deque(maxlen=10_000)
        self.connect_headers: list[dict[str, str]] = []
        self.handshake_hosts: list[str] = []
        self.subprotocols_selected: list[str | None] = []
        self._frames: list[tuple[str, str]] = []
        self._published_tick = 0
        self._tick_changed = asyncio.Condition()
        self._sessions: set[_Session] = set()
        self._server: Server | None = None
        self._host = ""
        self._port = 0

    # ------------------------------------------------------------------ lifecycle

    def _before_start(self) -> None:
        if self.token_ttl is not None and self._tokens.get(self._first_token) is None:
            self._tokens[self._first_token] = time.monotonic() + self.token_ttl

    def _serve_options(self) -> dict[str, Any]:
        return {
            "subprotocols": [Subprotocol(s) for s in SUBPROTOCOLS],
            "select_subprotocol": self._select_subprotocol,
            "ssl": self._ssl,
        }

    def _log_started(self) -> None:
        logger.info(
            "hemis simulator listening url=%s building=%s interval_s=%g token_ttl_s=%s",
            self.url,
            self.building_id,
            self.interval,
            self.token_ttl,
        )

    @property
    def url(self) -> str:
        """``ws://host:port/`` (``wss://`` with TLS) of the running server."""
        return self._base_url("wss" if self._ssl is not None else "ws") + self.path

    @property
    def connections_active(self) -> int:
        """Open WebSocket connections."""
        return len(self._sessions)

    def destination(self, topic: Literal["data", "management"]) -> str:
        """The destination name of one of the building's topics."""
        return f"jms.topic.{self.building_id}.{topic}"

    def issue_token(self, ttl: float | None = None) -> str:
        """Create and return a fresh valid token living ``ttl`` (default ``token_ttl``) seconds."""
        token = secrets.token_urlsafe(24)
        lifetime = self.token_ttl if ttl is None else ttl
        self._tokens[token] = None if lifetime is None else time.monotonic() + lifetime
        self._secret_filter.add([token])
        self._notify_tokens()
        return token

    def expire_token(self, token: str) -> None:
        """Make ``token`` expire now; sessions using it get ERROR and are closed."""
        if token in self._tokens:
            self._tokens[token] = time.monotonic()
            self._notify_tokens()

    async def drop_connections(self) -> int:
        """Abort every client connection without a close frame (a network drop).

        Returns:
            How many connections were dropped.
        """
        dropped = [s.connection for s in self._sessions]
        for connection in dropped:
            connection.transport.abort()
        logger.info("hemis simulator dropped connections count=%d", len(dropped))
        return len(dropped)

    def freeze_connections(self) -> int:
        """Hang every open session: keep the TCP connection, send nothing more, not even
        heart-beats (a stuck server or a half-open connection); new sessions are unaffected.

        Returns:
            How many sessions were frozen.
        """
        sessions = [s for s in self._sessions if not s.ended]
        for session in sessions:
            session.frozen = True
        logger.info("hemis simulator froze sessions count=%d", len(sessions))
        return len(sessions)

    def frames_for(self, connection: int) -> list[str]:
        """MESSAGE bodies written to one connection (1-based), oldest first."""
        return [f.body for f in self.sent_frames if f.connection == connection]

    def _notify_tokens(self) -> None:
        self._tokens_changed.set()
        self._tokens_changed = asyncio.Event()

    # ------------------------------------------------------------------ handshake

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        hosts = request.headers.get_all("Host")
        host = hosts[0] if len(hosts) == 1 else ""
        self.handshake_hosts.append(host)
        if len(hosts) != 1:
            self.handshakes_rejected += 1
            return connection.respond(HTTPStatus.BAD_REQUEST, "exactly one Host header\n")
        if urlsplit(request.path).path != self.path:
            self.handshakes_rejected += 1
            logger.info("handshake refused status=404 reason=unknown path")
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if self.host_header is not None:
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.lower() != self.host_header.lower():
                self.handshakes_rejected += 1
                logger.info("handshake refused status=404 reason=unknown host host=%s", host)
                return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        chosen = next((Subprotocol(s) for s in SUBPROTOCOLS if s in offered), None)
        if chosen is None and self.require_subprotocol:
            self.handshakes_rejected += 1
            raise NegotiationError("missing or unsupported subprotocol; offer v12.stomp")
        self.subprotocols_selected.append(chosen)
        return chosen

    # ------------------------------------------------------------------ sessions

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections_accepted += 1
        number = self.connections_accepted
        if await self._fault(connection, number, "handshake"):
            return
        now = time.monotonic()
        session = _Session(number, connection, f"session-{number}-{secrets.token_hex(4)}")
        session.last_received = session.last_sent = now
        self._sessions.add(session)
        parser = StompFrameParser()
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                while session.token is None and not session.ended:
                    await self._read(session, parser)
            while not session.ended:
                await self._read(session, parser)
        except TimeoutError:
            logger.info("no CONNECT in time; closing connection=%d", number)
        except ConnectionClosed:
            pass
        finally:
            session.ended = True
            self._sessions.discard(session)
            for task in session.tasks:
                task.cancel()
            for task in session.tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task

    async def _read(self, session: _Session, parser: StompFrameParser) -> None:
        message = await session.connection.recv()
        session.last_received = time.monotonic()
        data = message.encode("utf-8") if isinstance(message, str) else message
        before = parser.heartbeats
        try:
            frames = parser.feed(data)
        except StompFrameError as exc:
            await self._error(session, "Malformed frame", str(exc))
            return
        received = parser.heartbeats - before
        session.heartbeats_received += received
        self.heartbeats_received += received
        for frame in frames:
            if session.ended:
                return
            await self._on_frame(session, frame)

    async def _on_frame(self, session: _Session, frame: StompFrame) -> None:
        command = frame.command
        headers = frame.headers
        receipt = headers.get("receipt")
        if session.token is None:
            if command not in ("CONNECT", "STOMP"):
                await self._error(session, "Expected CONNECT", f"got {command!r} first")
                return
            await self._on_connect(session, headers)
            return
        if command in ("CONNECT", "STOMP"):
            await self._error(session, "Already connected", "", receipt)
        elif command == "SUBSCRIBE":
            await self._on_subscribe(session, headers, receipt)
        elif command == "UNSUBSCRIBE":
            ident = headers.get("id")
            if ident is None or session.subscriptions.pop(ident, None) is None:
                await self._error(session, "Unknown subscription", f"id={ident!r}", receipt)
                return
            await self._receipt(session, receipt)
        elif command == "DISCONNECT":
            await self._receipt(session, receipt)
            session.ended = True
            await session.connection.close()
        elif command in ("ACK", "NACK"):
            await self._receipt(session, receipt)
        else:
            await self._error(session, "Unsupported command", f"{command!r} is not supported")

    async def _on_connect(self, session: _Session, headers: dict[str, str]) -> None:
        self.connect_headers.append(dict(headers))
        versions = [v.strip() for v in headers.get("accept-version", "").split(",")]
        if "1.2" not in versions:
            await self._error(session, "Supported protocol versions are 1.2", "")
            return
        login = headers.get("login", "")
        passcode = headers.get("passcode", "")
        valid = hmac.compare_digest(login.encode(), self.building_id.encode())
        expiry = self._tokens.get(passcode, 0.0) if valid else 0.0
        if not valid or expiry == 0.0:
            self.auth_failures += 1
            logger.info(
                "CONNECT refused connection=%d reason=bad login or passcode", session.number
            )
            await self._error(session, "Authentication failed", "Invalid login or passcode")
            return
        if expiry is not None and expiry <= time.monotonic():
            self.auth_failures += 1
            logger.info("CONNECT refused connection=%d reason=token expired", session.number)
            await self._error(session, "Token expired", "The Hemis token has expired")
            return
        session.token = passcode
        client_send, client_receive = _heart_beat(headers.get("heart-beat", "0,0"))
        server_send, server_receive = self.heartbeat_ms
        send_ms = max(server_send, client_receive) if server_send and client_receive else 0
        expect_ms = max(client_send, server_receive) if client_send and server_receive else 0
        await self._send_raw(
            session,
            encode_frame(
                "CONNECTED",
                [
                    ("version", "1.2"),
                    ("heart-beat", f"{server_send},{server_receive}"),
                    ("session", session.session_id),
                    ("server", _SERVER_NAME),
                ],
                trailing_lf=self.trailing_lf,
            ),
        )
        if await self._fault(session.connection, session.number, "auth"):
            session.ended = True
            return
        logger.info(
            "session open connection=%d send_heartbeat_ms=%d expect_heartbeat_ms=%d",
            session.number,
            send_ms,
            expect_ms,
        )
        loop = asyncio.get_running_loop()
        session.tasks.append(loop.create_task(self._pump(session)))
        session.tasks.append(loop.create_task(self._watch_token(session)))
        if send_ms:
            session.tasks.append(loop.create_task(self._send_heartbeats(session, send_ms)))
        if expect_ms:
            session.tasks.append(loop.create_task(self._watch_heartbeats(session, expect_ms)))

    async def _on_subscribe(
        self, session: _Session, headers: dict[str, str], receipt: str | None
    ) -> None:
        ident = headers.get("id")
        destination = headers.get("destination")
        if not ident or not destination:
            await self._error(session, "Bad SUBSCRIBE", "id and destination are required", receipt)
            return
        if ident in session.subscriptions:
            await self._error(session, "Duplicate subscription id", f"id={ident!r}", receipt)
            return
        allowed = {self.destination("data"), self.destination("management")}
        if destination not in allowed:
            if destination.startswith("jms.topic."):
                message = "Access refused"
                body = f"not authorized to subscribe to {destination!r}"
            else:
                message = "Unknown destination"
                body = f"{destination!r} is not a destination of this Hemis"
            await self._error(session, message, body, receipt)
            return
        session.subscriptions[ident] = destination
        fault = self.planned_fault(session.number, "subscribe")
        if fault is not None:
            # Data flows before the RECEIPT (the client may still be subscribing), then the end.
            pushed = 0
            for _ in range(1000):  # a bound: every tick has data frames
                for topic, body in self.next_tick_frames():
                    if pushed < fault.frames and destination.endswith(f".{topic}"):
                        await self._send_message(session, ident, destination, body)
                        pushed += 1
                if pushed >= fault.frames:
                    break
            await self._fault(session.connection, session.number, "subscribe")
            session.ended = True
            return
        await self._receipt(session, receipt)

    async def _receipt(self, session: _Session, receipt: str | None) -> None:
        if receipt is not None:
            frame = encode_frame("RECEIPT", [("receipt-id", receipt)], trailing_lf=self.trailing_lf)
            await self._send_raw(session, frame)

    async def _error(
        self, session: _Session, message: str, body: str, receipt: str | None = None
    ) -> None:
        """Send ERROR and close the connection, as STOMP servers do."""
        payload = body.encode()
        headers = [("message", message), ("content-type", "text/plain")]
        if receipt is not None:
            headers.append(("receipt-id", receipt))
        headers.append(("content-length", str(len(payload))))
        async with session.send_lock:
            if session.ended:
                return
            session.ended = True
            self.errors_sent += 1
            with contextlib.suppress(ConnectionClosed):
                await session.connection.send(
                    encode_frame("ERROR", headers, payload, trailing_lf=self.trailing_lf).decode()
                )
        await session.connection.close(1000, message[:100])

    async def _send_raw(self, session: _Session, frame: bytes) -> None:
        async with session.send_lock:
            if session.ended or session.frozen:
                return
            await session.connection.send(frame.decode())
            session.last_sent = time.monotonic()

    async def _send_message(
        self, session: _Session, subscription: str, destination: str, body: str
    ) -> None:
        payload = body.encode()
        sequence = next(session.sequence)
        frame = encode_frame(
            "MESSAGE",
            [
                ("subscription", subscription),
                ("message-id", f"{session.session_id}-{sequence}"),
                ("destination", destination),
                ("content-type", "application/json"),
                ("content-length", str(len(payload))),
            ],
            payload,
            trailing_lf=self.trailing_lf,
        )
        binary = self.frame_mode == "binary" or (self.frame_mode == "mixed" and sequence % 2 == 0)
        async with session.send_lock:
            if session.ended or session.frozen:
                return
            await session.connection.send(frame if binary else frame.decode())
            # Recorded once written (a send on a closing connection raises and writes nothing).
            self.sent_frames.append(SentFrame(session.number, destination, body, binary))
            session.last_sent = time.monotonic()
            self.frames_sent += 1
            session.messages_sent += 1
            sent = session.messages_sent
            if await self._fault(session.connection, session.number, "stream", sent):
                session.ended = True

    async def _pump(self, session: _Session) -> None:
        seen = self._published_tick
        while not session.ended:
            async with self._tick_changed:
                while self._published_tick == seen:
                    await self._tick_changed.wait()
                seen = self._published_tick
                frames = self._frames
            for topic, body in frames:
                destination = f"jms.topic.{self.building_id}.{topic}"
                for ident, subscribed in list(session.subscriptions.items()):
                    if subscribed == destination:
                        await self._send_message(session, ident, destination, body)

    async def _send_heartbeats(self, session: _Session, period_ms: int) -> None:
        period = period_ms / 1000.0
        while not session.ended:
            idle = time.monotonic() - session.last_sent
            if idle < period:
                await asyncio.sleep(period - idle)
                continue
            async with session.send_lock:
                if session.ended:
                    return
                if session.frozen:
                    session.last_sent = time.monotonic()
                    continue
                await session.connection.send("\n")
                session.last_sent = time.monotonic()
                self.heartbeats_sent += 1

    async def _watch_heartbeats(self, session: _Session, period_ms: int) -> None:
        limit = period_ms / 1000.0 * self.heartbeat_grace
        while not session.ended:
            silent = time.monotonic() - session.last_received
            if silent < limit:
                await asyncio.sleep(limit - silent)
                continue
            self.heartbeat_drops += 1
            logger.info(
                "client stopped heart-beating; dropping connection=%d silent_s=%.1f",
                session.number,
                silent,
            )
            session.ended = True
            await session.connection.close(1000, "heart-beat timeout")
            return

    async def _watch_token(self, session: _Session) -> None:
        while not session.ended:
            changed = self._tokens_changed
            expiry = self._tokens.get(session.token or "", 0.0)
            if expiry is not None and expiry <= time.monotonic():
                self.tokens_expired += 1
                logger.info("token expired; ending connection=%d", session.number)
                await self._error(session, "Token expired", "The Hemis token has expired")
                return
            timeout = None if expiry is None else expiry - time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await changed.wait()

    # ------------------------------------------------------------------ ticker and values

    async def _tick(self) -> None:
        frames = self.next_tick_frames()
        async with self._tick_changed:
            self._frames = frames
            self._published_tick = self.tick
            self._tick_changed.notify_all()

    def next_tick_frames(self) -> list[tuple[str, str]]:
        """Advance one tick; return ``(topic, JSON body)`` pairs, topic ``data``/``management``.

        Called by the ticker; tests may call it on a simulator that is not started.
        """
        self.tick += 1
        p = self.tick - 1
        now_ms = int(self._clock() * 1000)
        data: list[dict[str, Any]] = []
        position = p % CYCLE_TICKS
        for zone in _ZONES:
            if zone == "Bureau" and position in FAULT_TICKS:
                continue
            data.append(self._temperature(zone, position, now_ms))
        data += self._fault_frames(position, now_ms)
        if p % 2 == 0:
            zone = _ZONES[(p // 2) % len(_ZONES)]
            data.append(self._factor_current(zone, p, now_ms))
        if p % 3 == 0:
            data += self._shutter_frames(p, now_ms)
        if p % 5 == 0:
            data += self._setpoint_frames(p, now_ms)
        if p % 4 == 0:
            data.append(self._data_container(now_ms))
        if p % 6 == 0:
            data.append(self._objective_state(p, now_ms))
        if p % 10 == 0:
            data.append(self._it_state(p, now_ms))
        if p % 7 == 0:
            data.append(self._switch(self._rng.randint(1, 5), now_ms))
        elif p % 7 == 1:
            data.append(self._switch(0, now_ms))
        frames = [("data", _dumps(d)) for d in data]
        if p % 15 == 0:
            entity_type, entity_id, action = _ENTITY_EVENTS[(p // 15) % len(_ENTITY_EVENTS)]
            event = {
                "timestamp": now_ms,
                "type": "ENTITY_MANAGEMENT",
                "entityType": entity_type,
                "entityId": entity_id,
                "action": action,
            }
            frames.append(("management", _dumps(event)))
        return frames

    def _temperature(self, zone: str, position: int, now_ms: int) -> dict[str, Any]:
        rng = self._rng
        if zone == "Serveur":
            hot = position in HOT_TICKS
            value = rng.uniform(28.6, 30.4) if hot else rng.uniform(23.0, 25.5)
        else:
            wave = 0.6 * math.sin(2 * math.pi * self.tick / 240.0)
            value = _ZONE_BASE_C[zone] + wave + rng.gauss(0.0, 0.15)
        return {
            "timestamp": now_ms,
            "type": "SENSOR_STATE",
            "zoneId": zone,
            "sensorId": _SENSOR_IDS[zone],
            "factorId": "TMP",
            "itId": _IT_IDS[zone],
            "valueType": "0",
            "value": f"{value:.1f}",
        }

    def _fault_frames(self, position: int, now_ms: int) -> list[dict[str, Any]]:
        faulty = position in FAULT_TICKS
        edge = faulty != self._fault_active
        self._fault_active = faulty
        if not edge and not (faulty and (position - FAULT_TICKS.start) % 5 == 0):
            return []
        state, previous = ("KO", "OK") if faulty else ("OK", "KO")
        composite = _composite(state, previous, now_ms, cause="TIMEOUT" if faulty else "UNKNOWN")
        sensor = {
            "timestamp": now_ms,
            "type": "SENSOR_STATE",
            "zoneId": "Bureau",
            "sensorId": FAULT_SENSOR_ID,
            "factorId": "TMP",
            "itId": FAULT_IT_ID,
            "valueType": "0",
            "value": composite,
        }
        frames = [sensor]
        if edge:
            frames.append(
                {"timestamp": now_ms, "type": "IT_STATE", "itId": FAULT_IT_ID, "value": composite}
            )
        return frames

    def _factor_current(self, zone: str, p: int, now_ms: int) -> dict[str, Any]:
        rng = self._rng
        if (p // 2) % 2 == 0:
            factor, value = "TMP", round(_ZONE_BASE_C[zone] + rng.gauss(0.0, 0.3), 1)
        else:
            factor, value = "OCC", round(rng.uniform(0.0, 100.0), 1)
        return {
            "type": "FACTOR_CURRENT_STATE",
            "timestamp": now_ms,
            "zoneId": zone,
            "factorId": factor,
            "value": value,
        }

    def _shutter_frames(self, p: int, now_ms: int) -> list[dict[str, Any]]:
        if p % 24 == 0:
            self._shutter_target = round(self._rng.choice((0.0, 0.35, 0.86, 1.0)), 2)
        step = max(-0.25, min(0.25, self._shutter_target - self._shutter))
        self._shutter = round(self._shutter + step, 2)
        current = {
            "type": "ACTUATOR_CURRENT_STATE",
            "timestamp": now_ms,
            "itId": _SHUTTER_IT,
            "factorId": "BRIEXT",
            "valueType": "0",
            "value": {
                "itId": _SHUTTER_IT,
                "actuatorId": f"{_SHUTTER_IT}#C01",
                "value": self._shutter,
            },
        }
        hardware = {
            "timestamp": now_ms,
            "type": "ACTUATOR_HARDWARE_STATE",
            "zoneId": "Salon",
            "factorId": "BRIEXT",
            "valueType": "0",
            "value": _actuator_state(_SHUTTER_IT, self._shutter, now_ms, 0.0, 1.0),
        }
        return [current, hardware]

    def _setpoint_frames(self, p: int, now_ms: int) -> list[dict[str, Any]]:
        setpoint = 21.0 if (p // 20) % 2 == 0 else 19.0
        target = {
            "timestamp": now_ms,
            "type": "ACTUATOR_TARGET_STATE",
            "zoneId": "Bureau",
            "factorId": "TMP",
            "valueType": "0",
            "value": _actuator_state(_HEATING_IT, setpoint, now_ms, 7.0, 35.0),
        }
        factor = {
            "type": "FACTOR_TARGET_STATE",
            "timestamp": now_ms,
            "zoneId": "Bureau",
            "factorId": "TMP",
            "value": setpoint,
        }
        return [target, factor]

    def _data_container(self, now_ms: int) -> dict[str, Any]:
        k = self._provider_count
        self._provider_count += 1
        kind = self.provider_type
        if kind == "both":
            kind = "DATA_PROVIDER" if k % 2 == 0 else "NEW_DATA"
        shape = self.container_shape
        if shape == "both":
            shape = "next-to-header" if (k // 2) % 2 == 0 else "in-header"
        unit = self.provider_timestamps
        if unit == "both":
            unit = "s" if (k // 4) % 2 == 0 else "ms"
        step_ms = int(self.interval * 1000)
        points: list[dict[str, Any]] = []
        for back in (1, 0):
            at_ms = now_ms - back * step_ms
            value = round(self._rng.uniform(23.0, 25.5), 1)
            reliability = round(self._rng.uniform(0.75, 0.99), 2)
            at = at_ms // 1000 if unit == "s" else at_ms
            points.append({"d": at, "v": [value, reliability, 1]})
        header: dict[str, Any] = {"columns_mapping": {"RELIABILITY": 1, "VALUENB": 0, "NBPOINT": 2}}
        data: dict[str, Any] = {"header": header}
        if shape == "in-header":
            header["data_points"] = points
        else:
            data["data_points"] = points
        return {
            "timestamp": now_ms // 1000 if unit == "s" else now_ms,
            "type": kind,
            "container": {
                "dataInfo": {
                    "sourceTypeInfo": {
                        "sourceNature": "SEN",
                        "sourceGroup": "TMP",
                        "customPersistenceId": "",
                        "measurement": "TEMP",
                        "measurementUnit": "°C",
                    },
                    "zoneId": "Serveur",
                    "sourceId": _IT_IDS["Serveur"],
                },
                "data": data,
            },
        }

    def _objective_state(self, p: int, now_ms: int) -> dict[str, Any]:
        if p % 18 == 0 and p:
            self._objective = not self._objective
        return {
            "type": "OBJECTIVE_STATE",
            "timestamp": now_ms,
            "objectiveId": _OBJECTIVE_ID,
            "zoneId": "Bureau",
            "value": self._objective,
        }

    def _it_state(self, p: int, now_ms: int) -> dict[str, Any]:
        it_id = (_IT_IDS["Salon"], _SHUTTER_IT, _HEATING_IT, _IT_IDS["Serveur"])[(p // 10) % 4]
        return {
            "timestamp": now_ms,
            "type": "IT_STATE",
            "itId": it_id,
            "value": _composite("OK", "OK", now_ms - 3_600_000, cause="UNKNOWN"),
        }

    def _switch(self, value: int, now_ms: int) -> dict[str, Any]:
        return {
            "type": "SENSOR_STATE",
            "timestamp": now_ms,
            "itId": _SWITCH_IT,
            "sensorId": f"{_SWITCH_IT}#0_C0",
            "factorId": "SWS",
            "value": value,
        }


def _heart_beat(text: str) -> tuple[int, int]:
    try:
        send, receive = (int(part.strip()) for part in text.split(","))
    except ValueError:
        return 0, 0
    return max(0, send), max(0, receive)


def _actuator_state(
    it_id: str, value: float, now_ms: int, minimum: float, maximum: float
) -> dict[str, Any]:
    return {
        "id": f"{it_id}-state",
        "itId": it_id,
        "actuatorId": f"{it_id}#C01",
        "value": value,
        "timestamp": now_ms - 46,
        "progressive": False,
        "colorEnable": False,
        "color": None,
        "hsvColor": None,
        "ctEnable": False,
        "ct": None,
        "minActionValue": minimum,
        "maxActionValue": maximum,
        "remote": False,
        "direct": True,
    }


def _composite(state: str, previous: str, at_ms: int, *, cause: str) -> dict[str, Any]:
    """An ITCompositeState: ``o`` changes, ``p`` and ``r`` stay OK."""
    before = at_ms - 60_000
    return {
        "o": state,
        "pO": previous,
        "oTs": at_ms,
        "pOTs": before,
        "oC": cause,
        "pOC": "UNKNOWN",
        "p": "OK",
        "pP": "OK",
        "pTs": before,
        "pPTs": before,
        "pC": "UNKNOWN",
        "pPc": "UNKNOWN",
        "r": "OK",
        "pR": "OK",
        "rTs": before,
        "pRTs": before,
        "rC": "UNKNOWN",
        "pRC": "UNKNOWN",
    }


def _dumps(document: dict[str, Any]) -> str:
    return orjson.dumps(document).decode()

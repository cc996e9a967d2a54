"""A local Valtronics WebSocket server: the documented protocol or the server code's variant.

Valtronics' docs and its FastAPI server disagree (upstreams.md §3), so ``variant`` picks one:

``variant="doc"`` (``docs/wiki/03-api/websocket-api.md``):

* ``/ws``, and ``/ws/telemetry|alerts|devices|system`` (plus ``/ws/notifications``, the API
  overview's name for alerts), which subscribe to that channel once authenticated.
* ``{"type": "auth", "token": ...}`` -> ``{"type": "auth_response", "success": true}``, or
  ``{"success": false, "message": "Invalid token", "error": "invalid_token"}``. The token must
  be one of the accepted tokens (:meth:`ValtronicsSimulator.add_token`) and, when it is a JWT
  with an ``exp`` claim, not expired. When an authenticated connection's token expires, the
  simulator sends ``auth_response`` ``success: false`` ("Token expired") and closes with 1008.
* ``subscribe`` / ``unsubscribe`` with ``channel`` (``telemetry``, ``alerts``, ``devices``,
  ``system``, ``device_telemetry``), optional ``device_id`` and ``filters`` (``metrics``,
  ``severity``, ``alert_type``, ``device_id``, ``status_types``); no reply on success (none
  is documented). ``ping`` -> ``{"type": "pong"}``. ``batch`` (at most 50 items) is unpacked.
* ``telemetry`` gets the nested ``telemetry_update`` (one per device and tick),
  ``device_telemetry`` the API overview's flat one (one per metric), ``devices`` gets
  ``device_status_update``, ``alerts`` gets ``alert``, ``system`` gets
  ``system_status_update`` every :data:`SYSTEM_EVERY_TICKS` ticks.
* Limits: a message over ``max_message_bytes`` (1 KB) or beyond ``max_messages_per_second``
  (100, sliding one-second window) is refused with an error frame and not processed; the
  connection stays open. A connection that does not authenticate within ``auth_timeout`` is
  closed with 1008.

The docs define no WebSocket error frame and no behaviour for exceeded limits, so errors use
the API overview's error envelope with ``"type": "error"`` added [inference]::

    {"type": "error", "success": false, "error": {"code": "RATE_LIMIT_EXCEEDED",
     "message": "Rate limit exceeded", "details": {"limit": 100, "window_s": 1}},
     "timestamp": "..."}

with codes ``VALIDATION_ERROR`` (bad JSON, unknown type or channel, too large),
``AUTHENTICATION_ERROR`` (not authenticated), ``RESOURCE_NOT_FOUND`` (unknown device) and
``RATE_LIMIT_EXCEEDED``. Doc alerts carry ``alert_type`` although the doc's sample omits it:
the ``alert_type`` subscription filter and the REST alert objects have it [inference].

``variant="server"`` (``backend/app/websocket_handler.py``, faithfully, quirks included):

* ``/ws`` and ``/ws/{device_id}`` (any path segment is a device id, as a string); no auth:
  ``auth`` gets ``{"error": "Unknown message type: auth"}``.
* ``ping`` -> ``{"type": "pong", "timestamp": ...}``; ``subscribe_device`` ->
  ``subscription_confirmed`` (no reply when ``device_id`` is missing or falsy); the id is kept
  as the JSON value received, while telemetry goes to ``str(device.id)``: subscribing with an
  integer is confirmed and then silent. ``unsubscribe_device`` -> ``unsubscription_confirmed``
  (only when subscribed); ``get_device_status`` -> ``device_status`` or ``{"error": "Device
  not found"}``; anything else -> ``{"error": "Unknown message type: <type>"}``; bad JSON ->
  ``{"error": "Invalid JSON format"}``; JSON that is not an object -> ``{"error": "Internal
  server error"}``. No limits.
* ``telemetry_update`` (one per metric, ``data.metric_name``...) only to subscribers of the
  device; ``device_update`` (status, device heartbeat, command response) to the device's
  subscribers **and** broadcast to everyone, so a subscriber receives it twice; ``alert`` and
  ``system_notification`` broadcast; ``heartbeat`` broadcast every ``heartbeat_interval``
  seconds (30 in the server's config). Frames are Python ``json.dumps`` output (``", "``
  separators, ``"\\u00b0C"``); timestamps are naive UTC ``isoformat()`` (device 2 reports
  offset-aware device timestamps, as a device sending ``+00:00`` would).

Unknown paths get HTTP 403 at the handshake, as FastAPI/Starlette answers a WebSocket request
no route matches.

Behaviour (ticks every ``interval`` seconds; with the default 1 s a tick is a second):

* Device 1 "Server rack A" runs hot, above :data:`HOT_THRESHOLD_C` (31-35 °C), on ticks 5-14
  of every 30 and reports an upstream ``threshold`` alert (severity ``critical``) on the first
  hot tick; otherwise 22-27 °C.
* Device 3 "Cold store" goes offline on tick 10 of every 60 (status update, ``connectivity``
  alert, severity ``warning``; no telemetry) and comes back on tick 40.
* Every other temperature stays below 30 °C; humidity and power vary (power in W, solar
  follows a daily wave). Server variant only: device heartbeats every 15 ticks, a command
  response from device 4 on tick 25 of every 60, a system notification on tick 50 of every 60.

A single ticker produces the events for all clients, so with a ``seed`` (and a ``clock``) the
frames are reproducible. :meth:`ValtronicsSimulator.new_client`, :meth:`receive` and
:meth:`render` are the socket-free protocol core the server uses, also used by the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from producers.redact import redact_text
from producers.simulators.base import FaultPhase, SimulatorServer
from producers.sources.valtronics import TokenMaskFilter, jwt_expiry

__all__ = [
    "DOC_CHANNELS",
    "FLAKY_DEVICE_ID",
    "HOT_DEVICE_ID",
    "HOT_THRESHOLD_C",
    "VARIANTS",
    "AlertRaised",
    "CommandResponse",
    "Device",
    "DeviceHeartbeat",
    "Event",
    "Heartbeat",
    "ReceivedMessage",
    "SentFrame",
    "SimClient",
    "StatusChanged",
    "SystemNotification",
    "SystemStatus",
    "Telemetry",
    "ValtronicsSimulator",
    "make_jwt",
]

logger = logging.getLogger(__name__)

Variant = Literal["doc", "server"]
VARIANTS: tuple[Variant, ...] = ("doc", "server")
DOC_CHANNELS = ("telemetry", "alerts", "devices", "system", "device_telemetry")
_PATH_CHANNELS = {
    "telemetry": "telemetry",
    "alerts": "alerts",
    "devices": "devices",
    "system": "system",
    "notifications": "alerts",
}
MAX_BATCH_ITEMS = 50

HOT_DEVICE_ID = 1
FLAKY_DEVICE_ID = 3
COMMAND_DEVICE_ID = 4
AWARE_TIMESTAMP_DEVICE_ID = 2
HOT_THRESHOLD_C = 30.0
HOT_CYCLE_TICKS = 30
HOT_TICKS = range(4, 14)  # positions (tick - 1) % HOT_CYCLE_TICKS
FLAKY_CYCLE_TICKS = 60
OFFLINE_TICKS = range(9, 39)  # positions (tick - 1) % FLAKY_CYCLE_TICKS
SYSTEM_EVERY_TICKS = 5
DEVICE_HEARTBEAT_EVERY_TICKS = 15
COMMAND_TICK = 24  # position in the 60-tick cycle
NOTIFICATION_TICK = 49

_DEVICE_NAMES = ("Server rack A", "Office climate unit", "Cold store", "Solar inverter")


# --------------------------------------------------------------------------- world


@dataclass
class Device:
    """One simulated device and its running state (``id`` is the server's database id)."""

    id: int
    name: str
    temp_c: tuple[float, float]
    humidity: tuple[float, float]
    power_w: tuple[float, float]
    phase: float
    status: str = "online"
    last_seen: float | None = None


@dataclass(frozen=True)
class Telemetry:
    """Readings of one device at one tick: ``(metric, value, unit)`` each."""

    device_id: int
    at: float
    readings: tuple[tuple[str, float, str], ...]


@dataclass(frozen=True)
class StatusChanged:
    """A device went offline or came back."""

    device_id: int
    at: float
    old: str
    new: str
    reason: str
    last_seen: float | None


@dataclass(frozen=True)
class AlertRaised:
    """An alert the upstream raised itself."""

    alert_id: int
    device_id: int
    device_name: str
    alert_type: str
    severity: str
    title: str
    message: str
    at: float
    threshold: float | None
    actual: float | None


@dataclass(frozen=True)
class SystemStatus:
    """Server metrics (doc ``system`` channel); ``active_connections`` is filled at render."""

    at: float
    cpu_usage: float
    memory_usage: float
    disk_usage: float


@dataclass(frozen=True)
class DeviceHeartbeat:
    """A device's MQTT heartbeat (server variant: ``device_update`` with ``heartbeat``)."""

    device_id: int
    at: float


@dataclass(frozen=True)
class CommandResponse:
    """A device answered a command (server variant: ``device_update.command_response``)."""

    device_id: int
    at: float
    command_id: int
    status: str
    result: str


@dataclass(frozen=True)
class SystemNotification:
    """A system-wide notification (server variant)."""

    at: float
    notification: Mapping[str, Any]


@dataclass(frozen=True)
class Heartbeat:
    """The server's periodic keepalive broadcast (server variant)."""

    at: float


Event = (
    Telemetry
    | StatusChanged
    | AlertRaised
    | SystemStatus
    | DeviceHeartbeat
    | CommandResponse
    | SystemNotification
    | Heartbeat
)


@dataclass(frozen=True)
class SentFrame:
    """A frame the simulator wrote to one connection (1-based connection number)."""

    connection: int
    text: str


@dataclass(frozen=True)
class ReceivedMessage:
    """A message a client sent (kept in memory only; tokens included, never logged)."""

    connection: int
    text: str


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


@dataclass(frozen=True)
class _Inject:
    """Apply the planned fault of this phase once the frames queued before it are sent."""

    phase: FaultPhase


@dataclass
class SimClient:
    """Protocol state of one client connection (the socket-free core).

    Attributes:
        number: 1-based connection number.
        path_channel: doc variant: the channel of a ``/ws/<channel>`` path.
        authenticated: doc variant: a valid ``auth`` was received.
        expires_at: doc variant: the accepted token's ``exp`` (epoch seconds) or None.
        subscriptions: doc variant: ``(channel, device_id, filters)`` in arrival order.
        device_keys: server variant: subscribed device keys, as the JSON values received.
    """

    number: int
    variant: Variant
    path_channel: str | None = None
    authenticated: bool = False
    expires_at: float | None = None
    subscriptions: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)
    device_keys: list[Any] = field(default_factory=list)
    recent: deque[float] = field(default_factory=deque)
    outbox: asyncio.Queue[str | _Close | _Inject] | None = None


def make_jwt(claims: Mapping[str, Any], key: str = "valtronics-simulator") -> str:
    """An HS256 JWT with ``claims`` (for the demo and tests; the simulator does not verify
    signatures, it accepts the tokens it was given)."""
    import base64
    import hashlib

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    header = part(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    body = part(orjson.dumps(dict(claims)))
    signature = hmac.new(key.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{part(signature)}"


class ValtronicsSimulator(SimulatorServer):
    """A real WebSocket server speaking the Valtronics protocol (see the module docstring).

    Args:
        token: the token clients must send in ``auth`` (doc variant; ignored by the server
            variant, which has no auth).
        variant: ``"doc"`` (the documentation) or ``"server"`` (the server code).
        devices: how many devices (at least 3: the hot rack, a normal one, the flaky one).
        interval: seconds between ticks (one telemetry reading per device and tick).
        seed: makes values reproducible.
        heartbeat_interval: server variant: seconds between ``heartbeat`` broadcasts.
        max_message_bytes: doc variant: larger client messages are refused.
        max_messages_per_second: doc variant: messages beyond this in one second are refused.
        auth_timeout: doc variant: close connections not authenticated within this time.
        clock: epoch seconds for timestamps and token expiry (tests pass a fixed clock).

    Counters: ``connections_accepted``, ``frames_sent``, ``handshakes_rejected``,
    ``client_messages``, ``auth_succeeded``, ``auth_failed``, ``pings_received``,
    ``errors_sent`` (a Counter by error code or text). ``sent_frames`` and
    ``received_messages`` keep the last 10 000 of each, per connection. Set ``answer_pings``
    to False to stop answering pings (a stalled upstream).
    """

    kind = "valtronics"

    def __init__(
        self,
        token: str = "",
        *,
        variant: Variant = "doc",
        devices: int = 4,
        interval: float = 1.0,
        seed: int | None = None,
        heartbeat_interval: float = 30.0,
        max_message_bytes: int = 1024,
        max_messages_per_second: int = 100,
        auth_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be 'doc' or 'server', got {variant!r}")
        if devices < 3:
            raise ValueError(f"devices must be >= 3, got {devices}")
        for name, value in (
            ("interval", interval),
            ("heartbeat_interval", heartbeat_interval),
            ("auth_timeout", auth_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        if max_message_bytes < 1 or max_messages_per_second < 1:
            raise ValueError("max_message_bytes and max_messages_per_second must be >= 1")
        if variant == "doc" and not token:
            raise ValueError("token must not be empty for the doc variant")
        self.variant: Variant = variant
        self.interval = interval
        self.heartbeat_interval = heartbeat_interval
        self.max_message_bytes = max_message_bytes
        self.max_messages_per_second = max_messages_per_second
        self.auth_timeout = auth_timeout
        self.answer_pings = True
        self._clock = clock
        self._tokens: list[bytes] = []
        self._mask = self._wire_filter = TokenMaskFilter()
        if token:
            self.add_token(token)
        self._rng = random.Random(seed)  # simulation, not crypto
        self.devices = [self._new_device(i) for i in range(devices)]
        self.tick = 0
        self._alert_id = 100
        self._command_id = 0
        self.connections_accepted = 0
        self._faults_queued: set[int] = set()
        self.frames_sent = 0
        self.handshakes_rejected = 0
        self.client_messages = 0
        self.auth_succeeded = 0
        self.auth_failed = 0
        self.pings_received = 0
        self.errors_sent: Counter[str] = Counter()
        self.sent_frames: deque[SentFrame] = deque(maxlen=10_000)
        self.received_messages: deque[ReceivedMessage] = deque(maxlen=10_000)
        self._clients: dict[ServerConnection, SimClient] = {}
        self._server: Server | None = None
        self._host = ""
        self._port = 0
        self._wire_logger = logging.getLogger(f"{__name__}.wire")

    def add_token(self, token: str) -> None:
        """Accept ``token`` in ``auth`` from now on (token rotation)."""
        if not token:
            raise ValueError("token must not be empty")
        self._tokens.append(token.encode())
        self._mask.add([token])

    # ------------------------------------------------------------------ lifecycle

    def _extra_tasks(self) -> list[Coroutine[Any, Any, None]]:
        return [self._run_heartbeat()] if self.variant == "server" else []

    def _log_started(self) -> None:
        logger.info(
            "valtronics simulator listening url=%s variant=%s devices=%d interval_s=%g",
            self.url,
            self.variant,
            len(self.devices),
            self.interval,
        )

    @property
    def url(self) -> str:
        """``ws://host:port/ws``."""
        return self._base_url() + "/ws"

    @property
    def connections_active(self) -> int:
        """Open client connections."""
        return len(self._clients)

    async def drop_connections(self) -> int:
        """Abort every client connection without a close frame (a network drop); how many."""
        dropped = list(self._clients)
        for connection in dropped:
            connection.transport.abort()
        logger.info("valtronics simulator dropped connections count=%d", len(dropped))
        return len(dropped)

    def frames_for(self, connection: int) -> list[str]:
        """Frames written to one connection (1-based), oldest first."""
        return [f.text for f in self.sent_frames if f.connection == connection]

    def messages_from(self, connection: int) -> list[Any]:
        """Parsed messages one connection sent, oldest first (None for non-JSON text)."""
        out: list[Any] = []
        for message in self.received_messages:
            if message.connection == connection:
                try:
                    out.append(orjson.loads(message.text))
                except orjson.JSONDecodeError:
                    out.append(None)
        return out

    # ------------------------------------------------------------------ sockets

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self._path_target(urlsplit(request.path).path) is None:
            self.handshakes_rejected += 1
            logger.info(
                "handshake refused status=403 path=%s", redact_text(urlsplit(request.path).path)
            )
            return connection.respond(HTTPStatus.FORBIDDEN, "Forbidden\n")
        return None

    def _path_target(self, path: str) -> str | None:
        """``""`` for ``/ws``, the channel or device key of ``/ws/<x>``, None if not served."""
        if path == "/ws":
            return ""
        prefix = "/ws/"
        if not path.startswith(prefix) or "/" in path[len(prefix) :] or path == prefix:
            return None
        segment = path[len(prefix) :]
        if self.variant == "doc":
            return _PATH_CHANNELS.get(segment)
        return segment

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections_accepted += 1
        if await self._fault(connection, self.connections_accepted, "handshake"):
            return
        request_path = urlsplit(connection.request.path).path if connection.request else "/ws"
        client = self.new_client(request_path)
        client.outbox = asyncio.Queue()
        self._clients[connection] = client
        tasks = [asyncio.create_task(self._send_outbox(connection, client))]
        if self.variant == "doc":
            tasks.append(asyncio.create_task(self._auth_deadline(client)))
        try:
            async for message in connection:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                authenticated = client.authenticated
                subscribed = len(client.subscriptions) + len(client.device_keys)
                for reply in self.receive(client, text):
                    client.outbox.put_nowait(reply)
                if (
                    client.authenticated
                    and not authenticated
                    and self.planned_fault(client.number, "auth")
                ):
                    client.outbox.put_nowait(_Inject("auth"))
                if len(client.subscriptions) + len(client.device_keys) > subscribed:
                    self._subscribe_fault(client)
        except ConnectionClosed:
            pass
        finally:
            self._clients.pop(connection, None)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task

    async def _send_outbox(self, connection: ServerConnection, client: SimClient) -> None:
        assert client.outbox is not None
        sent = 0
        while True:
            item = await client.outbox.get()
            if isinstance(item, _Close):
                await connection.close(item.code, item.reason)
                return
            if isinstance(item, _Inject):
                if await self._fault(connection, client.number, item.phase):
                    return
                continue
            await connection.send(item)
            self.sent_frames.append(SentFrame(client.number, item))  # written: recorded
            self.frames_sent += 1
            sent += 1
            if await self._fault(connection, client.number, "stream", sent):
                return

    def _subscribe_fault(self, client: SimClient) -> None:
        """A fault planned during subscription: push data frames now, then apply it."""
        fault = self.planned_fault(client.number, "subscribe")
        if fault is None or client.outbox is None or client.number in self._faults_queued:
            return
        self._faults_queued.add(client.number)
        pushed = 0
        for _ in range(1000):  # a bound: every tick renders frames for a subscribed client
            if pushed >= fault.frames:
                break
            for event in self.next_tick_events():
                for frame in self.render(client, event)[: fault.frames - pushed]:
                    client.outbox.put_nowait(frame)
                    pushed += 1
        client.outbox.put_nowait(_Inject("subscribe"))

    async def _auth_deadline(self, client: SimClient) -> None:
        await asyncio.sleep(self.auth_timeout)
        if not client.authenticated and client.outbox is not None:
            logger.info("closing unauthenticated connection=%d", client.number)
            client.outbox.put_nowait(_Close(CloseCode.POLICY_VIOLATION, "authentication timeout"))

    async def _tick(self) -> None:
        self._dispatch(self.next_tick_events())
        self._expire_tokens()

    async def _run_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            self._dispatch([Heartbeat(self._clock())])

    def _dispatch(self, events: Iterable[Event]) -> None:
        events = list(events)
        for client in list(self._clients.values()):
            assert client.outbox is not None
            for event in events:
                for frame in self.render(client, event):
                    client.outbox.put_nowait(frame)

    def _expire_tokens(self) -> None:
        now = self._clock()
        for client in list(self._clients.values()):
            if client.authenticated and client.expires_at is not None and client.expires_at <= now:
                client.authenticated = False
                client.subscriptions.clear()
                logger.info("token expired; closing connection=%d", client.number)
                assert client.outbox is not None
                client.outbox.put_nowait(
                    _dumps_doc(
                        {
                            "type": "auth_response",
                            "success": False,
                            "message": "Token expired",
                            "error": "invalid_token",
                        }
                    )
                )
                client.outbox.put_nowait(_Close(CloseCode.POLICY_VIOLATION, "token expired"))

    # ------------------------------------------------------------------ protocol core

    def new_client(self, path: str = "/ws") -> SimClient:
        """Protocol state for a new connection to ``path`` (counts as one connection number)."""
        target = self._path_target(path)
        if target is None:
            raise ValueError(f"path {path!r} is not served")
        client = SimClient(number=self.connections_accepted or 1, variant=self.variant)
        if self.variant == "doc":
            client.path_channel = target or None
        elif target:
            client.device_keys.append(target)
        return client

    def receive(self, client: SimClient, text: str) -> list[str]:
        """Handle one client message; returns the reply frames."""
        self.client_messages += 1
        self.received_messages.append(ReceivedMessage(client.number, text))
        if client.variant == "server":
            return self._receive_server(client, text)
        return self._receive_doc(client, text)

    def _receive_doc(self, client: SimClient, text: str) -> list[str]:
        now = time.monotonic()
        while client.recent and now - client.recent[0] >= 1.0:
            client.recent.popleft()
        if len(client.recent) >= self.max_messages_per_second:
            return [
                self._doc_error(
                    "RATE_LIMIT_EXCEEDED",
                    "Rate limit exceeded",
                    {"limit": self.max_messages_per_second, "window_s": 1},
                )
            ]
        client.recent.append(now)
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.max_message_bytes:
            return [
                self._doc_error(
                    "VALIDATION_ERROR",
                    f"Message is {size} bytes; the limit is {self.max_message_bytes} bytes",
                    {"size_bytes": size, "limit_bytes": self.max_message_bytes},
                )
            ]
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            return [self._doc_error("VALIDATION_ERROR", "Invalid JSON format")]
        return self._doc_message(client, message, in_batch=False)

    def _doc_message(self, client: SimClient, message: Any, *, in_batch: bool) -> list[str]:
        if not isinstance(message, dict):
            return [self._doc_error("VALIDATION_ERROR", "Message must be a JSON object")]
        kind = message.get("type")
        if kind == "ping":
            self.pings_received += 1
            return [_dumps_doc({"type": "pong"})] if self.answer_pings else []
        if kind == "auth":
            return [self._doc_auth(client, message.get("token"))]
        if kind == "batch" and not in_batch:
            items = message.get("messages")
            if not isinstance(items, list):
                return [self._doc_error("VALIDATION_ERROR", "Batch messages must be a list")]
            if len(items) > MAX_BATCH_ITEMS:
                return [
                    self._doc_error(
                        "VALIDATION_ERROR",
                        f"Batch has {len(items)} messages; the limit is {MAX_BATCH_ITEMS}",
                        {"limit": MAX_BATCH_ITEMS},
                    )
                ]
            return [r for item in items for r in self._doc_message(client, item, in_batch=True)]
        if not client.authenticated:
            return [self._doc_error("AUTHENTICATION_ERROR", "Authentication required")]
        if kind == "subscribe":
            return self._doc_subscribe(client, message)
        if kind == "unsubscribe":
            channel = message.get("channel")
            device = message.get("device_id")
            client.subscriptions = [
                s
                for s in client.subscriptions
                if not (s[0] == channel and (device is None or _same_id(s[1], device)))
            ]
            return []
        return [self._doc_error("VALIDATION_ERROR", f"Unknown message type: {_short(kind)}")]

    def _doc_auth(self, client: SimClient, token: object) -> str:
        reason = "Invalid token"
        ok = isinstance(token, str) and any(
            hmac.compare_digest(token.encode(), accepted) for accepted in self._tokens
        )
        expires_at = jwt_expiry(token) if ok and isinstance(token, str) else None
        if ok and expires_at is not None and expires_at <= self._clock():
            ok, reason = False, "Token expired"
        if not ok:
            self.auth_failed += 1
            logger.info("auth refused connection=%d reason=%s", client.number, reason)
            return _dumps_doc(
                {
                    "type": "auth_response",
                    "success": False,
                    "message": reason,
                    "error": "invalid_token",
                }
            )
        self.auth_succeeded += 1
        first = not client.authenticated
        client.authenticated = True
        client.expires_at = expires_at
        if first and client.path_channel is not None:
            client.subscriptions.append((client.path_channel, None, {}))
        return _dumps_doc({"type": "auth_response", "success": True})

    def _doc_subscribe(self, client: SimClient, message: dict[str, Any]) -> list[str]:
        channel = message.get("channel")
        if channel not in DOC_CHANNELS:
            return [self._doc_error("VALIDATION_ERROR", f"Unknown channel: {_short(channel)}")]
        filters = message.get("filters", {})
        if not isinstance(filters, dict):
            return [self._doc_error("VALIDATION_ERROR", "filters must be an object")]
        device = message.get("device_id")
        if device is not None and self._device(device) is None:
            return [
                self._doc_error("RESOURCE_NOT_FOUND", "Device not found", {"device_id": device})
            ]
        client.subscriptions.append((channel, device, filters))
        return []

    def _doc_error(self, code: str, message: str, details: Mapping[str, Any] | None = None) -> str:
        self.errors_sent[code] += 1
        error: dict[str, Any] = {"code": code, "message": message}
        if details is not None:
            error["details"] = dict(details)
        return _dumps_doc(
            {
                "type": "error",
                "success": False,
                "error": error,
                "timestamp": _doc_time(self._clock()),
            }
        )

    def _receive_server(self, client: SimClient, text: str) -> list[str]:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            return [self._server_error("Invalid JSON format")]
        if not isinstance(message, dict):
            return [self._server_error("Internal server error")]  # message.get() raises
        kind = message.get("type")
        device = message.get("device_id")
        if kind == "ping":
            self.pings_received += 1
            if not self.answer_pings:
                return []
            return [_dumps_server({"type": "pong", "timestamp": _server_time(self._clock())})]
        if kind == "subscribe_device":
            if not device:
                return []
            if isinstance(device, list | dict):
                return [self._server_error("Internal server error")]  # unhashable dict key
            if device not in client.device_keys:
                client.device_keys.append(device)
            return [_dumps_server({"type": "subscription_confirmed", "device_id": device})]
        if kind == "unsubscribe_device":
            if not device or isinstance(device, list | dict) or device not in client.device_keys:
                return []
            client.device_keys.remove(device)
            return [_dumps_server({"type": "unsubscription_confirmed", "device_id": device})]
        if kind == "get_device_status":
            if not device:
                return []
            found = self._device(device)
            if found is None:
                return [self._server_error("Device not found")]
            return [
                _dumps_server(
                    {
                        "type": "device_status",
                        "device_id": device,
                        "status": found.status,
                        "last_seen": None
                        if found.last_seen is None
                        else _server_time(found.last_seen),
                        "timestamp": _server_time(self._clock()),
                    }
                )
            ]
        return [self._server_error(f"Unknown message type: {kind}")]

    def _server_error(self, text: str) -> str:
        self.errors_sent[text] += 1
        return _dumps_server({"error": text})

    def _device(self, ident: object) -> Device | None:
        for device in self.devices:
            if _same_id(device.id, ident):
                return device
        return None

    # ------------------------------------------------------------------ rendering

    def render(self, client: SimClient, event: Event) -> list[str]:
        """The frames ``client`` receives for ``event``, given its variant and subscriptions."""
        if client.variant == "server":
            return self._render_server(client, event)
        if not client.authenticated:
            return []
        return self._render_doc(client, event)

    def _matching(
        self, client: SimClient, channel: str, device_id: int | None
    ) -> list[dict[str, Any]]:
        """Filters of ``client``'s subscriptions to ``channel`` that cover ``device_id``."""
        out = []
        for sub_channel, sub_device, filters in client.subscriptions:
            if sub_channel != channel:
                continue
            if device_id is not None:
                if sub_device is not None and not _same_id(sub_device, device_id):
                    continue
                wanted = filters.get("device_id")
                if wanted is not None and not _id_in(device_id, wanted):
                    continue
            out.append(filters)
        return out

    def _render_doc(self, client: SimClient, event: Event) -> list[str]:
        if isinstance(event, Telemetry):
            return self._doc_telemetry(client, event)
        if isinstance(event, StatusChanged):
            matches = self._matching(client, "devices", event.device_id)
            if not any(_allows(f, "status_types", event.new) for f in matches):
                return []
            return [
                _dumps_doc(
                    {
                        "type": "device_status_update",
                        "channel": "devices",
                        "device_id": event.device_id,
                        "old_status": event.old,
                        "new_status": event.new,
                        "timestamp": _doc_time(event.at),
                        "reason": event.reason,
                        "metadata": {
                            "last_seen": None
                            if event.last_seen is None
                            else _doc_time(event.last_seen)
                        },
                    }
                )
            ]
        if isinstance(event, AlertRaised):
            matches = self._matching(client, "alerts", event.device_id)
            if not any(
                _allows(f, "severity", event.severity)
                and _allows(f, "alert_type", event.alert_type)
                for f in matches
            ):
                return []
            alert: dict[str, Any] = {
                "type": "alert",
                "channel": "alerts",
                "alert_id": event.alert_id,
                "device_id": event.device_id,
                "alert_type": event.alert_type,
                "severity": event.severity,
                "title": event.title,
                "message": event.message,
                "timestamp": _doc_time(event.at),
            }
            if event.threshold is not None and event.actual is not None:
                alert["metadata"] = {
                    "threshold_value": event.threshold,
                    "actual_value": event.actual,
                }
            return [_dumps_doc(alert)]
        if isinstance(event, SystemStatus):
            matches = self._matching(client, "system", None)
            if not matches:
                return []
            metrics = {
                "cpu_usage": event.cpu_usage,
                "memory_usage": event.memory_usage,
                "disk_usage": event.disk_usage,
                "active_connections": len(self._clients),
            }
            wanted = _metric_union(matches)
            if wanted is not None:
                metrics = {k: v for k, v in metrics.items() if k in wanted}
            if not metrics:
                return []
            return [
                _dumps_doc(
                    {
                        "type": "system_status_update",
                        "channel": "system",
                        "metrics": metrics,
                        "timestamp": _doc_time(event.at),
                    }
                )
            ]
        return []  # heartbeats, command responses and notifications exist only server-side

    def _doc_telemetry(self, client: SimClient, event: Telemetry) -> list[str]:
        frames: list[str] = []
        matches = self._matching(client, "telemetry", event.device_id)
        if matches:
            wanted = _metric_union(matches)
            telemetry = {
                name: {"value": value, "unit": unit, "timestamp": _doc_time(event.at)}
                for name, value, unit in event.readings
                if wanted is None or name in wanted
            }
            if telemetry:
                frames.append(
                    _dumps_doc(
                        {
                            "type": "telemetry_update",
                            "channel": "telemetry",
                            "device_id": event.device_id,
                            "telemetry": telemetry,
                        }
                    )
                )
        flat = self._matching(client, "device_telemetry", event.device_id)
        if flat:
            wanted = _metric_union(flat)
            for name, value, unit in event.readings:
                if wanted is None or name in wanted:
                    frames.append(
                        _dumps_doc(
                            {
                                "type": "telemetry_update",
                                "device_id": event.device_id,
                                "metric": name,
                                "value": value,
                                "unit": unit,
                                "timestamp": _doc_time(event.at),
                            }
                        )
                    )
        return frames

    def _render_server(self, client: SimClient, event: Event) -> list[str]:
        subscribed = (
            isinstance(event, Telemetry | StatusChanged | DeviceHeartbeat | CommandResponse)
            and str(event.device_id) in client.device_keys
        )
        if isinstance(event, Telemetry):
            if not subscribed:
                return []
            device_time = _server_time(event.at, aware=event.device_id == AWARE_TIMESTAMP_DEVICE_ID)
            return [
                _dumps_server(
                    {
                        "type": "telemetry_update",
                        "device_id": event.device_id,
                        "data": {
                            "metric_name": name,
                            "metric_value": value,
                            "unit": unit,
                            "timestamp": device_time,
                        },
                        "timestamp": _server_time(event.at),
                    }
                )
                for name, value, unit in event.readings
            ]
        if isinstance(event, StatusChanged | DeviceHeartbeat | CommandResponse):
            updates: dict[str, Any]
            if isinstance(event, StatusChanged):
                updates = {"status": event.new, "last_seen": _server_time(event.at)}
            elif isinstance(event, DeviceHeartbeat):
                updates = {"last_seen": _server_time(event.at), "heartbeat": True}
            else:
                updates = {
                    "command_response": {
                        "command_id": event.command_id,
                        "status": event.status,
                        "result": event.result,
                    }
                }
            frame = _dumps_server(
                {
                    "type": "device_update",
                    "device_id": event.device_id,
                    "updates": updates,
                    "timestamp": _server_time(event.at),
                }
            )
            # broadcast_device_update: to the device's subscribers, then to everyone.
            return [frame, frame] if subscribed else [frame]
        if isinstance(event, AlertRaised):
            return [
                _dumps_server(
                    {
                        "type": "alert",
                        "alert": {
                            "device_id": event.device_id,
                            "device_name": event.device_name,
                            "alert_type": event.alert_type,
                            "severity": event.severity,
                            "message": event.message,
                            "timestamp": _server_time(event.at),
                        },
                        "timestamp": _server_time(event.at),
                    }
                )
            ]
        if isinstance(event, SystemNotification):
            return [
                _dumps_server(
                    {
                        "type": "system_notification",
                        "notification": dict(event.notification),
                        "timestamp": _server_time(event.at),
                    }
                )
            ]
        if isinstance(event, Heartbeat):
            return [
                _dumps_server(
                    {"type": "heartbeat", "timestamp": _server_time(event.at), "status": "alive"}
                )
            ]
        return []  # system_status_update exists only in the docs

    # ------------------------------------------------------------------ values

    def next_tick_events(self) -> list[Event]:
        """Advance the simulation one tick and return its events (works without sockets)."""
        self.tick += 1
        at = self._clock()
        events: list[Event] = []
        for device in self.devices:
            events += self._device_events(device, at)
        if self.tick % SYSTEM_EVERY_TICKS == 0:
            rng = self._rng
            hour = self.tick / 60.0
            events.append(
                SystemStatus(
                    at=at,
                    cpu_usage=round(40 + 15 * math.sin(hour * 2 * math.pi) + rng.gauss(0, 3), 1),
                    memory_usage=round(rng.uniform(58.0, 72.0), 1),
                    disk_usage=round(23.0 + self.tick * 0.001, 1),
                )
            )
        position = (self.tick - 1) % FLAKY_CYCLE_TICKS
        if position == NOTIFICATION_TICK:
            events.append(
                SystemNotification(at, {"level": "info", "message": "Database backup completed"})
            )
        return events

    def _device_events(self, device: Device, at: float) -> list[Event]:
        events: list[Event] = []
        if device.id == FLAKY_DEVICE_ID:
            position = (self.tick - 1) % FLAKY_CYCLE_TICKS
            offline = position in OFFLINE_TICKS
            if offline and device.status == "online":
                events.append(
                    StatusChanged(
                        device.id, at, "online", "offline", "Connection lost", device.last_seen
                    )
                )
                device.status = "offline"
                events.append(
                    self._alert(
                        device,
                        at,
                        "connectivity",
                        "warning",
                        "Device offline",
                        f"{device.name} stopped reporting",
                    )
                )
            elif not offline and device.status == "offline":
                events.append(
                    StatusChanged(
                        device.id, at, "offline", "online", "Connection restored", device.last_seen
                    )
                )
                device.status = "online"
        if device.status != "online":
            return events
        readings = self._readings(device)
        device.last_seen = at
        events.append(Telemetry(device.id, at, readings))
        temperature = readings[0][1]
        if device.id == HOT_DEVICE_ID and (self.tick - 1) % HOT_CYCLE_TICKS == HOT_TICKS.start:
            events.append(
                self._alert(
                    device,
                    at,
                    "threshold",
                    "critical",
                    "High Temperature Alert",
                    "Temperature exceeds safe threshold",
                    threshold=HOT_THRESHOLD_C,
                    actual=temperature,
                )
            )
        if (self.tick + device.id) % DEVICE_HEARTBEAT_EVERY_TICKS == 0:
            events.append(DeviceHeartbeat(device.id, at))
        if device.id == COMMAND_DEVICE_ID and (self.tick - 1) % FLAKY_CYCLE_TICKS == COMMAND_TICK:
            self._command_id += 1
            events.append(CommandResponse(device.id, at, self._command_id, "completed", ""))
        return events

    def _alert(
        self,
        device: Device,
        at: float,
        alert_type: str,
        severity: str,
        title: str,
        message: str,
        *,
        threshold: float | None = None,
        actual: float | None = None,
    ) -> AlertRaised:
        self._alert_id += 1
        return AlertRaised(
            self._alert_id,
            device.id,
            device.name,
            alert_type,
            severity,
            title,
            message,
            at,
            threshold,
            actual,
        )

    def _readings(self, device: Device) -> tuple[tuple[str, float, str], ...]:
        rng = self._rng
        wave = math.sin(2 * math.pi * self.tick / 120.0 + device.phase)
        low, high = device.temp_c
        temperature = (low + high) / 2 + (high - low) / 2 * 0.8 * wave + rng.gauss(0, 0.2)
        temperature = min(high, max(low, temperature))
        power_low, power_high = device.power_w
        power = power_low + (power_high - power_low) * (0.5 + 0.4 * wave) + rng.gauss(0, 5)
        if device.id == HOT_DEVICE_ID and (self.tick - 1) % HOT_CYCLE_TICKS in HOT_TICKS:
            temperature = rng.uniform(31.0, 35.0)
            power = power_high + rng.uniform(100, 300)
        if device.id == FLAKY_DEVICE_ID and self.tick % 8 < 3:
            power = rng.uniform(0.0, 15.0)  # the compressor cycles off
        humidity = rng.uniform(*device.humidity)
        return (
            ("temperature", round(temperature, 1), "°C"),
            ("humidity", round(humidity, 1), "%"),
            ("power", round(max(0.0, power), 1), "W"),
        )

    def _new_device(self, index: int) -> Device:
        rng = self._rng
        ident = index + 1
        name = _DEVICE_NAMES[index] if index < len(_DEVICE_NAMES) else f"Sensor {ident}"
        phase = rng.uniform(0, 2 * math.pi)
        if ident == HOT_DEVICE_ID:
            return Device(ident, name, (22.0, 27.0), (35.0, 45.0), (900.0, 1500.0), phase)
        if ident == FLAKY_DEVICE_ID:
            return Device(ident, name, (2.0, 6.0), (70.0, 90.0), (350.0, 700.0), phase)
        if ident == COMMAND_DEVICE_ID:
            return Device(ident, name, (24.0, 29.0), (20.0, 35.0), (0.0, 4200.0), phase)
        base = rng.uniform(19.0, 23.0)
        return Device(ident, name, (base - 1.5, base + 1.5), (40.0, 55.0), (300.0, 900.0), phase)


def _same_id(a: object, b: object) -> bool:
    return not isinstance(a, bool) and not isinstance(b, bool) and str(a) == str(b)


def _id_in(device_id: int, wanted: object) -> bool:
    if isinstance(wanted, list):
        return any(_same_id(device_id, w) for w in wanted)
    return _same_id(device_id, wanted)


def _allows(filters: Mapping[str, Any], key: str, value: str) -> bool:
    wanted = filters.get(key)
    if wanted is None:
        return True
    if isinstance(wanted, list):
        return value in wanted
    return bool(wanted == value)


def _metric_union(filters: Iterable[Mapping[str, Any]]) -> set[str] | None:
    """Metrics wanted by any of the subscriptions; None when one of them wants every metric."""
    wanted: set[str] = set()
    for f in filters:
        metrics = f.get("metrics")
        if not isinstance(metrics, list):
            return None
        wanted |= {m for m in metrics if isinstance(m, str)}
    return wanted


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _doc_time(epoch_s: float) -> str:
    """``2024-01-01T12:00:00.123Z``: the docs' UTC form, with milliseconds."""
    stamp = datetime.fromtimestamp(epoch_s, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _server_time(epoch_s: float, *, aware: bool = False) -> str:
    """``datetime.utcnow().isoformat()`` (naive; no fraction when it is zero), or the aware form."""
    stamp = datetime.fromtimestamp(epoch_s, UTC)
    return stamp.isoformat() if aware else stamp.replace(tzinfo=None).isoformat()


def _dumps_doc(document: Mapping[str, Any]) -> str:
    return orjson.dumps(document).decode()


def _dumps_server(document: Mapping[str, Any]) -> str:
    return json.dumps(document)  # Python's defaults, as the FastAPI server sends

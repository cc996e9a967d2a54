"""A local Nobil real-time stream server: same endpoint, auth and frames as the real one.

What it reproduces (docs/upstreams.md section 2):

* ``GET /api/v1/stream?apikey=KEY`` upgraded to a WebSocket. The key is accepted in any of
  ``key_params`` (default both ``apikey`` and ``key``: the docs renamed ``key`` to ``apikey`` in
  2013; pass one name to refuse the other). A wrong or missing key is refused with **HTTP 401
  at the handshake** (the official Node client maps ``unexpected server response (401)`` to
  "unauthorized"); another path gets HTTP 404 (not documented; the conventional answer).
* ``format="legacy"``: on connect one ``snapshot:init`` with every station, then deltas:
  ``status:update`` (one station, its *full* connectors array) whenever a connector changes,
  sometimes preceded by the charger's ``status:raw`` carrying the change, and ``status:raw``
  keep-alives that repeat a connector's unchanged state (``"code": 1``; its meaning is not
  documented). Connector ``timestamp`` is epoch ms of the last change, ``-1`` when never known.
* ``format="enova"``: frames ``{"nobilId", "evseUId", "status"}`` with the Enova status strings,
  one per EVSE change; nothing on connect and no keep-alives (none are documented). The path
  defaults to ``/client/hubs/nobil`` and the key to ``access_token`` (Azure Web PubSub style;
  an inference: Enova hands out the URL through its API).
* Client messages are not part of the protocol; they are counted and ignored. WebSocket pings
  are answered; ``server_ping_interval`` makes the server ping too (the official client logs
  server pings; not confirmed).

Station status (aggregate) is 2 when any connector reports an error, else 0 when any is
available, else -1 when any is unknown, else 1 (all occupied). The docs' prose and samples
disagree on available vs unknown; the ``status:update`` sample (status 0 with one available and
four unknown connectors) decides.

Demo behaviour: connector 0 of the first station (``NOR_01333``) reports ``error: 1`` from the
11th to the 40th tick of every 60 (30 ticks), so at ``interval=1.0`` a "connector in error for
20 s" rule on entity ``NOR_01333/0`` fires about 31 s after start and resolves at 41 s, every
minute; station ``NOR_01333`` goes to status 2 (error) meanwhile. In ``enova`` mode the same
EVSE goes ``OUTOFORDER`` and back. Other connectors flip between available and occupied at
random (about one change every other tick); unknown ones come online now and then.

One ticker produces the frames for all clients (a broadcasting server), so with a ``seed`` and a
``start_ms`` the stream is reproducible; simulated time advances ``interval`` per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import random
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event

from producers.envelope import now_ms
from producers.redact import SecretFilter, redact_text
from producers.simulators.base import SimulatorServer

__all__ = [
    "ENOVA_PATH",
    "ENOVA_STATUSES",
    "ERROR_CYCLE_TICKS",
    "ERROR_TICKS",
    "STREAM_PATH",
    "Connector",
    "NobilSimulator",
    "SentFrame",
    "Station",
]

logger = logging.getLogger(__name__)

#: Path of the legacy stream endpoint (final documented form).
STREAM_PATH = "/api/v1/stream"
#: Default path in ``enova`` mode (Azure Web PubSub client path; an inference).
ENOVA_PATH = "/client/hubs/nobil"

#: The demo connector (station 0, connector 0) has ``error: 1`` when
#: ``(tick - 1) % ERROR_CYCLE_TICKS`` is in ERROR_TICKS.
ERROR_CYCLE_TICKS = 60
ERROR_TICKS = range(10, 40)
_CHANGE_PROBABILITY = 0.5
_RAW_BEFORE_UPDATE_PROBABILITY = 0.3
_KEEPALIVE_PROBABILITY = 0.4
_QUEUE_MAX = 10_000

#: Documented Enova status strings.
ENOVA_STATUSES = (
    "AVAILABLE",
    "BLOCKED",
    "CHARGING",
    "INOPERATIVE",
    "OUTOFORDER",
    "PLANNED",
    "REMOVED",
    "RESERVED",
    "UNKNOWN",
)
_COUNTRIES = ("NOR", "NOR", "NOR", "SWE", "FIN", "DNK")


@dataclass
class Connector:
    """One connector: legacy ``status`` (-1/0/1), ``error`` (0/1), ``timestamp`` (ms or -1)."""

    status: int
    error: int
    timestamp: int
    evse_uid: str

    def wire(self) -> dict[str, int]:
        """The connector object as the legacy stream writes it."""
        return {"status": self.status, "error": self.error, "timestamp": self.timestamp}

    def enova_status(self) -> str:
        """The Enova status string for this state."""
        if self.error:
            return "OUTOFORDER"
        return {-1: "UNKNOWN", 0: "AVAILABLE", 1: "CHARGING"}[self.status]


@dataclass
class Station:
    """One charging station (``uuid`` like ``NOR_01333``) and its connectors, in order."""

    uuid: str
    connectors: list[Connector]

    @property
    def status(self) -> int:
        """Aggregate status: 2 error, else 0 available, else -1 unknown, else 1 occupied."""
        if any(c.error for c in self.connectors):
            return 2
        statuses = {c.status for c in self.connectors}
        if 0 in statuses:
            return 0
        if -1 in statuses:
            return -1
        return 1

    def wire(self) -> dict[str, Any]:
        """The station object as ``snapshot:init`` and ``status:update`` write it."""
        return {
            "uuid": self.uuid,
            "status": self.status,
            "connectors": [c.wire() for c in self.connectors],
        }


class _Connection(ServerConnection):
    """Counts the client's RFC 6455 pings (keepalive tests)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pings_received = 0

    def process_event(self, event: Event) -> None:
        if self.request is not None and isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pings_received += 1
        super().process_event(event)


@dataclass(frozen=True)
class SentFrame:
    """A frame the simulator wrote to one connection (1-based connection number)."""

    connection: int
    text: str


class NobilSimulator(SimulatorServer):
    """A real WebSocket server speaking the Nobil real-time stream protocol.

    Args:
        api_key: the only accepted key.
        stations: how many stations the snapshot holds.
        interval: seconds between ticks (one tick = at most a few frames).
        seed: makes stations, states and changes reproducible.
        format: ``legacy`` (``snapshot:init``/``status:*``) or ``enova``.
        key_params: query parameters the key is accepted in; default ``("apikey", "key")``
            (legacy) or ``("access_token",)`` (enova).
        path: endpoint path; default :data:`STREAM_PATH` (legacy) or :data:`ENOVA_PATH`.
        start_ms: simulated epoch ms at tick 0 (connector timestamps); default: now.
        server_ping_interval: the server pings clients this often; None (default) never.

    Counters: ``connections_accepted``, ``frames_sent``, ``handshakes_rejected``,
    ``client_messages``, ``protocol_pings``, ``slow_clients_dropped``. ``sent_frames`` keeps
    the last 10 000 frames written, per connection.
    """

    kind = "nobil"

    def __init__(
        self,
        api_key: str,
        *,
        stations: int = 6,
        interval: float = 1.0,
        seed: int | None = None,
        format: Literal["legacy", "enova"] = "legacy",
        key_params: Sequence[str] | None = None,
        path: str | None = None,
        start_ms: int | None = None,
        server_ping_interval: float | None = None,
    ) -> None:
        if stations < 1:
            raise ValueError(f"stations must be >= 1, got {stations}")
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        if not api_key:
            raise ValueError("api_key must not be empty")
        if format not in ("legacy", "enova"):
            raise ValueError(f"format must be 'legacy' or 'enova', got {format!r}")
        enova = format == "enova"
        params = tuple(key_params or (("access_token",) if enova else ("apikey", "key")))
        if not all(params):
            raise ValueError("key_params must be non-empty names")
        self.format = format
        self.key_params = params
        self.path = path or (ENOVA_PATH if enova else STREAM_PATH)
        self.interval = interval
        self.server_ping_interval = server_ping_interval
        self._api_key = api_key.encode()
        self._rng = random.Random(seed)  # simulation, not crypto
        self.start_ms = now_ms() if start_ms is None else start_ms
        self.stations = self._new_stations(stations)
        self.tick = 0
        self.connections_accepted = 0
        self.frames_sent = 0
        self.handshakes_rejected = 0
        self.client_messages = 0
        self.slow_clients_dropped = 0
        self._closed_protocol_pings = 0
        self.sent_frames: deque[SentFrame] = deque(maxlen=10_000)
        self._clients: dict[ServerConnection, asyncio.Queue[str]] = {}
        self._server: Server | None = None
        self._host = ""
        self._port = 0
        self._wire_logger = logging.getLogger(f"{__name__}.wire")
        self._wire_filter = SecretFilter([api_key], redact_credentials=True)

    # ------------------------------------------------------------------ lifecycle

    def _serve_options(self) -> dict[str, Any]:
        return {"create_connection": _Connection, "ping_interval": self.server_ping_interval}

    def _log_started(self) -> None:
        demo = self.stations[0]
        logger.info(
            "nobil simulator listening url=%s format=%s stations=%d interval_s=%g "
            "error_connector=%s/0 error_evse=%s",
            self.url,
            self.format,
            len(self.stations),
            self.interval,
            demo.uuid,
            demo.connectors[0].evse_uid,
        )

    @property
    def url(self) -> str:
        """The stream endpoint without the key: ``ws://host:port/api/v1/stream``."""
        return self._base_url() + self.path

    @property
    def connections_active(self) -> int:
        """Open client connections."""
        return len(self._clients)

    @property
    def protocol_pings(self) -> int:
        """RFC 6455 pings received from clients, all connections."""
        return self._closed_protocol_pings + sum(
            c.pings_received for c in self._clients if isinstance(c, _Connection)
        )

    async def drop_connections(self) -> int:
        """Abort every client connection without a close frame (a network drop).

        Returns:
            How many connections were dropped.
        """
        dropped = list(self._clients)
        for connection in dropped:
            connection.transport.abort()
        logger.info("nobil simulator dropped connections count=%d", len(dropped))
        return len(dropped)

    def frames_for(self, connection: int) -> list[str]:
        """Frames written to one connection (1-based), oldest first."""
        return [f.text for f in self.sent_frames if f.connection == connection]

    # ------------------------------------------------------------------ protocol

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        target = urlsplit(request.path)
        if target.path != self.path:
            self.handshakes_rejected += 1
            logger.info("handshake refused status=404 path=%s", redact_text(target.path))
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        query = parse_qs(target.query, keep_blank_values=True)
        offered = [v.encode() for name in self.key_params for v in query.get(name, [])]
        if not any(hmac.compare_digest(v, self._api_key) for v in offered):
            self.handshakes_rejected += 1
            logger.info("handshake refused status=401 reason=key missing or wrong")
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections_accepted += 1
        number = self.connections_accepted
        if await self._fault(connection, number, "handshake"):
            return
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=_QUEUE_MAX)
        # Snapshot and registration happen together (no await in between), so the client gets
        # exactly the deltas that follow its snapshot.
        if self.format == "legacy":
            queue.put_nowait(self.snapshot_frame())
        self._clients[connection] = queue
        sender = asyncio.create_task(self._send_frames(connection, number, queue))
        try:
            async for _message in connection:
                self.client_messages += 1
                logger.info("client message ignored connection=%d", number)
        except ConnectionClosed:
            pass
        finally:
            self._clients.pop(connection, None)
            if isinstance(connection, _Connection):
                self._closed_protocol_pings += connection.pings_received
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    async def _send_frames(
        self, connection: ServerConnection, number: int, queue: asyncio.Queue[str]
    ) -> None:
        sent = 0
        while True:
            text = await queue.get()
            await connection.send(text)
            self.sent_frames.append(SentFrame(number, text))  # written: recorded
            self.frames_sent += 1
            sent += 1
            if await self._fault(connection, number, "stream", sent):
                return

    async def _tick(self) -> None:
        self._broadcast(self.next_tick_frames())

    def _broadcast(self, frames: list[str]) -> None:
        for connection, queue in list(self._clients.items()):
            try:
                for text in frames:
                    queue.put_nowait(text)
            except asyncio.QueueFull:
                self.slow_clients_dropped += 1
                logger.warning("client too slow; dropping it queued=%d", queue.qsize())
                self._clients.pop(connection, None)
                connection.transport.abort()

    # ------------------------------------------------------------------ values

    def now_ms(self) -> int:
        """Simulated epoch ms of the current tick."""
        return self.start_ms + round(self.tick * self.interval * 1000)

    def snapshot_frame(self) -> str:
        """The ``snapshot:init`` frame for the current state."""
        return _dumps({"type": "snapshot:init", "data": [s.wire() for s in self.stations]})

    def next_tick_frames(self) -> list[str]:
        """Advance the simulation one tick; return the frames every client gets, in order.

        Called by the ticker; tests may call it on a simulator that is not started. The random
        draws are the same in both formats, so a seed gives the same scenario in each.
        """
        self.tick += 1
        now = self.now_ms()
        rng = self._rng
        # (station index, connector index, whether a status:raw precedes the update)
        changes: list[tuple[int, int, bool]] = []

        demo = self.stations[0].connectors[0]
        want_error = 1 if (self.tick - 1) % ERROR_CYCLE_TICKS in ERROR_TICKS else 0
        if demo.error != want_error:
            demo.error = want_error
            demo.timestamp = now
            changes.append((0, 0, False))

        if rng.random() < _CHANGE_PROBABILITY:
            candidates = [
                (si, ci)
                for si, station in enumerate(self.stations)
                for ci in range(len(station.connectors))
                if (si, ci) != (0, 0)
            ]
            raw_first = rng.random() < _RAW_BEFORE_UPDATE_PROBABILITY
            if candidates:
                si, ci = rng.choice(candidates)
                connector = self.stations[si].connectors[ci]
                connector.status = 1 if connector.status == 0 else 0
                connector.timestamp = now
                changes.append((si, ci, raw_first))

        keepalive: tuple[int, int] | None = None
        if rng.random() < _KEEPALIVE_PROBABILITY:
            si = rng.randrange(len(self.stations))
            keepalive = (si, rng.randrange(len(self.stations[si].connectors)))

        if self.format == "enova":
            return [self._enova_frame(si, ci) for si, ci, _ in changes]
        frames: list[str] = []
        for si, ci, raw_first in changes:
            if raw_first:
                frames.append(self._raw_frame(si, ci))
            frames.append(_dumps({"type": "status:update", "data": self.stations[si].wire()}))
        if keepalive is not None:
            frames.append(self._raw_frame(*keepalive))
        return frames

    def _raw_frame(self, si: int, ci: int) -> str:
        station = self.stations[si]
        data = {"uuid": station.uuid, "connector": ci, **station.connectors[ci].wire()}
        return _dumps({"type": "status:raw", "code": 1, "data": data})

    def _enova_frame(self, si: int, ci: int) -> str:
        station = self.stations[si]
        connector = station.connectors[ci]
        return _dumps(
            {
                "nobilId": station.uuid,
                "evseUId": connector.evse_uid,
                "status": connector.enova_status(),
            }
        )

    def _new_stations(self, count: int) -> list[Station]:
        rng = self._rng
        used = {1333}
        stations = [Station("NOR_01333", [self._new_connector(known=True) for _ in range(4)])]
        for _ in range(count - 1):
            number = rng.randrange(100, 30_000)
            while number in used:
                number = rng.randrange(100, 30_000)
            used.add(number)
            country = rng.choice(_COUNTRIES)
            connectors = [self._new_connector() for _ in range(rng.randint(1, 6))]
            stations.append(Station(f"{country}_{number:05d}", connectors))
        stations[0].connectors[0].status = 0
        return stations

    def _new_connector(self, *, known: bool = False) -> Connector:
        rng = self._rng
        evse = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        draw = rng.random()
        if draw < 0.2 and not known:
            return Connector(-1, 0, -1, evse)
        status = 0 if draw < 0.65 else 1
        changed = self.start_ms - rng.randrange(60_000, 6 * 3_600_000)
        return Connector(status, 0, changed, evse)


def _dumps(document: dict[str, Any]) -> str:
    return orjson.dumps(document).decode()

"""A local ELEMENT IoT WebSocket server: same sockets, auth, frames, keepalive and replay.

What it reproduces (docs/upstreams.md section 4):

* Sockets ``/api/v1/{devices|tags|streams}/{id}/{readings|packets}/socket`` and the mandate
  sockets ``/api/v1/{readings|packets}/socket``, key in the ``auth`` query parameter. A wrong or
  missing key is refused at the handshake with ``auth_failure_status`` (default 403, what a
  Phoenix socket answers when ``connect`` refuses; ELEMENT's real answer is not documented), an
  unknown path or id with 404, an unparsable ``after`` with 400 (both inferences).
* Frames are JSON arrays of ``{"event": "reading_added" | "packet_added", "body": {...}}`` with
  the documented body fields; live frames hold one event each.
* ``after=<ISO 8601>``: the server first replays, oldest first, every event of the socket's
  scope inserted after that instant (``after_inclusive=True``: at or after it; the docs do not
  say which), ``replay_batch`` events per frame (default 1; the array shape allows more, the
  docs do not say), then goes live. Registration and replay selection happen together, so a
  resuming client gets every event exactly once.
* Keepalive: the connection is closed (code 1000) after ``idle_timeout`` seconds (default 60)
  without any frame from the client; RFC 6455 pings count, and so does the text message
  ``ping``, which is answered with the text message ``pong``. Server-to-client traffic does not
  count. Other client messages are counted and ignored (the API has no commands).
* Chaos: ``drop_every=N`` aborts a connection (no close frame) once it has sent N event frames,
  before it sends the next one; ``drop_connections()`` aborts them all now.

Devices (``devices``, default 4): Decentlab DL-SHT35-style temperature/humidity sensors (data
``air_temperature`` °C, ``air_humidity`` %, ``battery_voltage`` V, ``device_id``,
``protocol_version``, payload encoded as the real device does), every fourth one an Elsys
ERS CO2-style sensor (``temperature``, ``humidity``, ``light``, ``motion``, ``co2``, ``vdd``).
Each active device sends one packet and one reading per tick. The tag holds the first half of
the devices, the stream all of them.

Demo behaviour (ticks of ``interval`` seconds, 1.0 by default):

* device 0 ("cold-room-1") reports ``air_temperature`` between 30.6 and 33.5 °C on the 11th to
  20th tick of every 40 and 20.5-25.5 °C otherwise, so an ``air_temperature > 30`` rule on that
  device fires about 11 s after start and resolves 10 s later, every 40 s;
* device 1 ("office-2") is silent (no packet, no reading) from the 16th to the 45th tick of
  every 60, so a "no reading for 20 s" absence rule fires about 35 s after start.

With a ``seed`` and a ``start_ms`` the history is reproducible; simulated time advances
``interval`` per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import random
import re
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event

from producers.envelope import now_ms
from producers.redact import SecretFilter, redact_text
from producers.simulators.base import SimulatorServer

__all__ = [
    "HOT_CYCLE_TICKS",
    "HOT_TICKS",
    "SILENT_CYCLE_TICKS",
    "SILENT_TICKS",
    "Device",
    "ElementSimulator",
    "HistoryEvent",
    "SentFrame",
    "format_instant",
]

logger = logging.getLogger(__name__)

SocketKind = Literal["readings", "packets"]

#: Device 0's temperature is above 30 °C when ``(tick - 1) % HOT_CYCLE_TICKS`` is in HOT_TICKS.
HOT_CYCLE_TICKS = 40
HOT_TICKS = range(10, 20)
#: Device 1 sends nothing when ``(tick - 1) % SILENT_CYCLE_TICKS`` is in SILENT_TICKS.
SILENT_CYCLE_TICKS = 60
SILENT_TICKS = range(15, 45)
_HOT_C = (30.6, 33.5)
_NORMAL_C = (20.5, 25.5)
_QUEUE_MAX = 10_000
_NAMES = ("cold-room-1", "office-2", "lab-3", "meeting-4", "store-5", "hall-6", "roof-7")
_PATH = re.compile(
    r"^/api/v1(?:/(?P<scope>devices|tags|streams)/(?P<id>[^/]+))?/(?P<socket>readings|packets)"
    r"/socket$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_instant(epoch_us: int) -> str:
    """ELEMENT's timestamp text: ISO 8601 UTC with microseconds and ``Z``."""
    return (_EPOCH + timedelta(microseconds=epoch_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Device:
    """One simulated device and its running state."""

    id: str
    name: str
    kind: Literal["sht35", "ers_co2"]
    number: int
    interface_id: str
    parser_id: str
    temperature_c: float
    humidity_pct: float
    battery_v: float
    frame_count_up: int = 0
    co2_ppm: int = 600
    light_lux: int = 0
    motion: int = 0


@dataclass(frozen=True)
class HistoryEvent:
    """One event the server stored: which socket, whose, when, and its JSON object text."""

    socket: SocketKind
    device_id: str
    id: str
    inserted_us: int
    inserted_at: str
    text: str


@dataclass(frozen=True)
class SentFrame:
    """A frame the simulator wrote to one connection (1-based connection number)."""

    connection: int
    text: str


class _Connection(ServerConnection):
    """Records the last client activity (any frame, pings included) for the idle timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_activity = self.loop.time()
        self.pings_received = 0

    def process_event(self, event: Event) -> None:
        if self.request is not None and isinstance(event, Frame):
            self.last_activity = self.loop.time()
            if event.opcode is Opcode.PING:
                self.pings_received += 1
        super().process_event(event)


@dataclass
class _Client:
    number: int
    socket: SocketKind
    devices: frozenset[str] | None  # None: the whole mandate
    queue: asyncio.Queue[tuple[str, int]] = field(default_factory=asyncio.Queue)
    event_frames: int = 0


class ElementSimulator(SimulatorServer):
    """A real WebSocket server speaking ELEMENT IoT's packets and readings sockets.

    Args:
        api_key: the only accepted ``auth`` value.
        devices: how many devices the mandate has.
        interval: seconds between ticks (one packet and one reading per active device).
        seed: makes ids, values and times reproducible.
        idle_timeout: close connections without client activity for this long (seconds).
        drop_every: abort a connection after it sent this many event frames; None never.
        after_inclusive: replay events inserted *at* ``after`` too.
        replay_batch: events per replayed frame.
        start_ms: simulated epoch ms at tick 0; default: now.
        auth_failure_status: HTTP status for a wrong key (403 or 401).
        history_max: events kept for replay (oldest are forgotten).
        stream_id: the stream's id (all devices); default: a seeded UUID.

    Counters: ``connections_accepted``, ``frames_sent``, ``events_sent``,
    ``handshakes_rejected``, ``client_messages``, ``text_pings``, ``protocol_pings``,
    ``idle_closes``, ``chaos_drops``, ``slow_clients_dropped``.
    """

    kind = "element"

    def __init__(
        self,
        api_key: str,
        *,
        devices: int = 4,
        interval: float = 1.0,
        seed: int | None = None,
        idle_timeout: float = 60.0,
        drop_every: int | None = None,
        after_inclusive: bool = False,
        replay_batch: int = 1,
        start_ms: int | None = None,
        auth_failure_status: int = 403,
        history_max: int = 100_000,
        stream_id: str | None = None,
    ) -> None:
        if devices < 2:
            raise ValueError(f"devices must be >= 2 (a hot one and a silent one), got {devices}")
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 seconds, got {idle_timeout!r}")
        if drop_every is not None and drop_every < 1:
            raise ValueError(f"drop_every must be >= 1 or None, got {drop_every}")
        if replay_batch < 1:
            raise ValueError(f"replay_batch must be >= 1, got {replay_batch}")
        if auth_failure_status not in (401, 403):
            raise ValueError(f"auth_failure_status must be 401 or 403, got {auth_failure_status}")
        if not api_key:
            raise ValueError("api_key must not be empty")
        if stream_id is not None and not re.fullmatch(r"[A-Za-z0-9._~-]+", stream_id):
            raise ValueError(f"stream_id must be a URL path segment, got {stream_id!r}")
        self._api_key = api_key.encode()
        self.interval = interval
        self.idle_timeout = idle_timeout
        self.drop_every = drop_every
        self.after_inclusive = after_inclusive
        self.replay_batch = replay_batch
        self.auth_failure_status = auth_failure_status
        self._rng = random.Random(seed)  # simulation, not crypto
        self.start_ms = now_ms() if start_ms is None else start_ms
        self.tag_id = self._new_id()
        seeded_stream = self._new_id()  # drawn either way: the rest stays the same
        self.stream_id = seeded_stream if stream_id is None else stream_id
        self._gateways = [f"{self._rng.getrandbits(64):016X}" for _ in range(3)]
        self.devices = [self._new_device(i) for i in range(devices)]
        self.tag_devices = frozenset(d.id for d in self.devices[: (devices + 1) // 2])
        self.history: deque[HistoryEvent] = deque(maxlen=history_max)
        self.tick = 0
        self.connections_accepted = 0
        self.frames_sent = 0
        self.events_sent = 0
        self.handshakes_rejected = 0
        self.client_messages = 0
        self.text_pings = 0
        self.idle_closes = 0
        self.chaos_drops = 0
        self.slow_clients_dropped = 0
        self._closed_protocol_pings = 0
        self.sent_frames: deque[SentFrame] = deque(maxlen=10_000)
        self._clients: dict[_Connection, _Client] = {}
        self._server: Server | None = None
        self._host = ""
        self._port = 0
        self._wire_logger = logging.getLogger(f"{__name__}.wire")
        self._wire_filter = SecretFilter([api_key], redact_credentials=True)

    # ------------------------------------------------------------------ lifecycle

    def _serve_options(self) -> dict[str, Any]:
        return {"create_connection": _Connection}

    def _log_started(self) -> None:
        logger.info(
            "element simulator listening url=%s devices=%d interval_s=%g idle_timeout_s=%g",
            self.url,
            len(self.devices),
            self.interval,
            self.idle_timeout,
        )
        logger.info(
            "element simulator devices stream_id=%s tag_id=%s hot=%s silent=%s all=%s",
            self.stream_id,
            self.tag_id,
            self.devices[0].id,
            self.devices[1].id,
            ",".join(f"{d.name}:{d.id}" for d in self.devices),
        )

    @property
    def url(self) -> str:
        """The instance base URL, ``ws://host:port`` (sockets live under ``/api/v1/...``)."""
        return self._base_url()

    @property
    def connections_active(self) -> int:
        """Open client connections."""
        return len(self._clients)

    @property
    def protocol_pings(self) -> int:
        """RFC 6455 pings received from clients, all connections."""
        return self._closed_protocol_pings + sum(c.pings_received for c in self._clients)

    async def drop_connections(self) -> int:
        """Abort every client connection without a close frame (a network drop).

        Returns:
            How many connections were dropped.
        """
        dropped = list(self._clients)
        for connection in dropped:
            connection.transport.abort()
        logger.info("element simulator dropped connections count=%d", len(dropped))
        return len(dropped)

    def frames_for(self, connection: int) -> list[str]:
        """Frames written to one connection (1-based), oldest first."""
        return [f.text for f in self.sent_frames if f.connection == connection]

    def history_for(self, socket: SocketKind, devices: Iterable[str] | None = None) -> list[str]:
        """Event object texts of one socket kind (optionally some devices), oldest first."""
        wanted = None if devices is None else set(devices)
        return [
            e.text
            for e in self.history
            if e.socket == socket and (wanted is None or e.device_id in wanted)
        ]

    # ------------------------------------------------------------------ protocol

    def _scope_devices(self, scope: str | None, ident: str | None) -> frozenset[str] | None:
        """Device ids of a socket's scope; None for the mandate. Raises KeyError if unknown."""
        if scope is None:
            return None
        if scope == "devices":
            if ident not in {d.id for d in self.devices}:
                raise KeyError(ident)
            return frozenset({ident})
        if scope == "tags" and ident == self.tag_id:
            return self.tag_devices
        if scope == "streams" and ident == self.stream_id:
            return frozenset(d.id for d in self.devices)
        raise KeyError(ident)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        target = urlsplit(request.path)
        match = _PATH.match(target.path)
        if match is None:
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "unknown socket path")
        query = parse_qs(target.query, keep_blank_values=True)
        keys = query.get("auth", [])
        if len(keys) != 1 or not hmac.compare_digest(keys[0].encode(), self._api_key):
            return self._refuse(
                connection, HTTPStatus(self.auth_failure_status), "auth missing or wrong"
            )
        try:
            self._scope_devices(match["scope"], match["id"])
        except KeyError:
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "unknown scope id")
        after = query.get("after", [])
        if len(after) > 1 or (after and _parse_after(after[0]) is None):
            return self._refuse(connection, HTTPStatus.BAD_REQUEST, "after is not ISO 8601")
        return None

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, reason: str) -> Response:
        self.handshakes_rejected += 1
        logger.info("handshake refused status=%d reason=%s", status.value, redact_text(reason))
        return connection.respond(status, f"{status.phrase}\n")

    async def _handle(self, connection: ServerConnection) -> None:
        assert isinstance(connection, _Connection)  # create_connection=_Connection
        request = connection.request
        assert request is not None  # the handshake is done
        target = urlsplit(request.path)
        match = _PATH.match(target.path)
        assert match is not None  # checked in _process_request
        self.connections_accepted += 1
        if await self._fault(connection, self.connections_accepted, "handshake"):
            return
        socket: SocketKind = "readings" if match["socket"] == "readings" else "packets"
        client = _Client(
            self.connections_accepted, socket, self._scope_devices(match["scope"], match["id"])
        )
        after_values = parse_qs(target.query).get("after", [])
        after_us = _parse_after(after_values[0]) if after_values else None
        # Replay selection and registration for live events happen together (no await in
        # between), so the client gets every event exactly once.
        if after_us is not None:
            replay = [
                e.text
                for e in self.history
                if self._wanted(client, e)
                and (
                    e.inserted_us > after_us or (self.after_inclusive and e.inserted_us == after_us)
                )
            ]
            for start in range(0, len(replay), self.replay_batch):
                batch = replay[start : start + self.replay_batch]
                client.queue.put_nowait((_frame(batch), len(batch)))
        self._clients[connection] = client
        tasks = [
            asyncio.create_task(self._send_frames(connection, client)),
            asyncio.create_task(self._watch_idle(connection, client.number)),
        ]
        try:
            async for message in connection:
                if message == "ping":
                    self.text_pings += 1
                    await connection.send("pong")
                else:
                    self.client_messages += 1
                    logger.info("client message ignored connection=%d", client.number)
        except ConnectionClosed:
            pass
        finally:
            self._clients.pop(connection, None)
            self._closed_protocol_pings += connection.pings_received
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task

    def _wanted(self, client: _Client, event: HistoryEvent) -> bool:
        return event.socket == client.socket and (
            client.devices is None or event.device_id in client.devices
        )

    async def _send_frames(self, connection: _Connection, client: _Client) -> None:
        while True:
            text, count = await client.queue.get()
            if self.drop_every is not None and client.event_frames >= self.drop_every:
                self.chaos_drops += 1
                logger.info(
                    "chaos: dropping connection connection=%d after=%d frames",
                    client.number,
                    client.event_frames,
                )
                connection.transport.abort()
                return
            await connection.send(text)
            self.sent_frames.append(SentFrame(client.number, text))  # written: recorded
            client.event_frames += 1
            self.frames_sent += 1
            self.events_sent += count
            if await self._fault(connection, client.number, "stream", client.event_frames):
                return

    async def _watch_idle(self, connection: _Connection, number: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            remaining = connection.last_activity + self.idle_timeout - loop.time()
            if remaining <= 0:
                self.idle_closes += 1
                logger.info(
                    "closing idle connection connection=%d idle_timeout_s=%g",
                    number,
                    self.idle_timeout,
                )
                await connection.close(CloseCode.NORMAL_CLOSURE)
                return
            await asyncio.sleep(remaining)  # a deadline, re-checked: activity moves it

    async def _tick(self) -> None:
        self._broadcast(self.next_tick_events())

    def _broadcast(self, events: list[HistoryEvent]) -> None:
        for connection, client in list(self._clients.items()):
            if client.queue.qsize() >= _QUEUE_MAX:
                self.slow_clients_dropped += 1
                logger.warning("client too slow; dropping it connection=%d", client.number)
                self._clients.pop(connection, None)
                connection.transport.abort()
                continue
            for event in events:
                if self._wanted(client, event):
                    client.queue.put_nowait((_frame([event.text]), 1))

    # ------------------------------------------------------------------ values

    def device_silent(self, index: int, tick: int | None = None) -> bool:
        """Whether device ``index`` sends nothing at ``tick`` (default: the current tick)."""
        tick = self.tick if tick is None else tick
        return index == 1 and (tick - 1) % SILENT_CYCLE_TICKS in SILENT_TICKS

    def next_tick_events(self) -> list[HistoryEvent]:
        """Advance one tick; store and return its events (packets and readings), in order.

        Called by the ticker; tests may call it on a simulator that is not started.
        """
        self.tick += 1
        rng = self._rng
        interval_us = round(self.interval * 1_000_000)
        base_us = self.start_ms * 1000 + self.tick * interval_us
        slot_us = max(4, interval_us * 9 // (10 * 2 * len(self.devices)))
        events: list[HistoryEvent] = []
        for index, device in enumerate(self.devices):
            if self.device_silent(index):
                continue
            self._step(index, device)
            sent_us = base_us + 2 * index * slot_us + rng.randrange(slot_us // 4)
            packet_us = base_us + 2 * index * slot_us + slot_us // 2 + rng.randrange(slot_us // 4)
            reading_us = base_us + (2 * index + 1) * slot_us + rng.randrange(slot_us // 4)
            packet_id = self._new_id()
            device.frame_count_up += 1
            events.append(self._packet(device, packet_id, sent_us, packet_us))
            events.append(self._reading(device, packet_id, sent_us, reading_us))
        self.history.extend(events)
        return events

    def _step(self, index: int, device: Device) -> None:
        rng = self._rng
        if index == 0:
            hot = (self.tick - 1) % HOT_CYCLE_TICKS in HOT_TICKS
            device.temperature_c = rng.uniform(*(_HOT_C if hot else _NORMAL_C))
        else:
            drift = device.temperature_c + rng.gauss(0.0, 0.15)
            device.temperature_c = min(26.0, max(17.0, drift))
        device.humidity_pct = min(70.0, max(30.0, device.humidity_pct + rng.gauss(0.0, 0.4)))
        device.battery_v = max(2.9, device.battery_v - rng.uniform(0.0, 0.0004))
        if device.kind == "ers_co2":
            device.co2_ppm = min(1800, max(400, device.co2_ppm + rng.randint(-40, 45)))
            device.light_lux = rng.randint(0, 450)
            device.motion = rng.randint(0, 6)

    def _packet(
        self, device: Device, packet_id: str, sent_us: int, inserted_us: int
    ) -> HistoryEvent:
        rng = self._rng
        heard_by = rng.sample(self._gateways, rng.randint(1, 2))
        body = {
            "id": packet_id,
            "device_id": device.id,
            "interface_id": device.interface_id,
            "driver": None,
            "packet_type": "up",
            "payload_encoding": "binary",
            "payload": _payload(device),
            "skip_parsers": False,
            "meta": {
                "frame_port": 1 if device.kind == "sht35" else 5,
                "frame_count_up": device.frame_count_up,
                "frequency": rng.choice((867.1, 867.3, 868.1, 868.3, 868.5)),
                "datr": rng.choice(("SF7BW125", "SF8BW125", "SF9BW125")),
                "gateway_stats": [
                    {
                        "router_id_hex": gateway,
                        "rssi": rng.randint(-118, -62),
                        "snr": round(rng.uniform(-9.0, 11.5), 1),
                        "tmst": rng.getrandbits(32),
                    }
                    for gateway in heard_by
                ],
                "lns_packet_uuid": packet_id,
                "region": "eu863",
            },
            "transceived_at": format_instant(sent_us),
            "inserted_at": format_instant(inserted_us),
        }
        return self._event("packets", "packet_added", device, packet_id, inserted_us, body)

    def _reading(
        self, device: Device, packet_id: str, measured_us: int, inserted_us: int
    ) -> HistoryEvent:
        reading_id = self._new_id()
        data: dict[str, Any]
        if device.kind == "sht35":
            data = {
                "air_humidity": round(device.humidity_pct, 2),
                "air_temperature": round(device.temperature_c, 2),
                "battery_voltage": round(device.battery_v, 3),
                "device_id": device.number,
                "protocol_version": 2,
            }
        else:
            data = {
                "temperature": round(device.temperature_c, 1),
                "humidity": round(device.humidity_pct),
                "light": device.light_lux,
                "motion": device.motion,
                "co2": device.co2_ppm,
                "vdd": round(device.battery_v * 1000),
            }
        body = {
            "id": reading_id,
            "device_id": device.id,
            "packet_id": packet_id,
            "parser_id": device.parser_id,
            "location": None,
            "meta": None,
            "measured_at": format_instant(measured_us),
            "inserted_at": format_instant(inserted_us),
            "data": data,
        }
        return self._event("readings", "reading_added", device, reading_id, inserted_us, body)

    @staticmethod
    def _event(
        socket: SocketKind,
        name: str,
        device: Device,
        ident: str,
        inserted_us: int,
        body: dict[str, Any],
    ) -> HistoryEvent:
        text = orjson.dumps({"event": name, "body": body}).decode()
        return HistoryEvent(socket, device.id, ident, inserted_us, body["inserted_at"], text)

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _new_device(self, index: int) -> Device:
        rng = self._rng
        kind: Literal["sht35", "ers_co2"] = "ers_co2" if index % 4 == 3 else "sht35"
        name = _NAMES[index] if index < len(_NAMES) else f"sensor-{index}"
        return Device(
            id=self._new_id(),
            name=name,
            kind=kind,
            number=rng.randrange(1000, 65535),
            interface_id=self._new_id(),
            parser_id=self._new_id(),
            temperature_c=rng.uniform(19.0, 24.0),
            humidity_pct=rng.uniform(38.0, 55.0),
            battery_v=rng.uniform(3.05, 3.3),
        )


def _frame(event_texts: list[str]) -> str:
    return "[" + ",".join(event_texts) + "]"


def _parse_after(value: str) -> int | None:
    """``after`` as epoch microseconds, or None when it is not ISO 8601 (naive means UTC)."""
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return (instant - _EPOCH) // timedelta(microseconds=1)


def _payload(device: Device) -> str:
    """The device's uplink as upper-case hex, encoded as the real device family does."""
    if device.kind == "sht35":
        # Decentlab: version 2, device id, flags (sensor + battery), T, RH, battery mV.
        raw_t = round((device.temperature_c + 45.0) * 65535 / 175.0)
        raw_h = round(device.humidity_pct * 65535 / 100.0)
        millivolts = round(device.battery_v * 1000)
        return f"02{device.number:04X}0003{raw_t:04X}{raw_h:04X}{millivolts:04X}"
    # Elsys: type-tagged values: 01 temperature (0.1 °C), 02 humidity (%), 04 light (lux),
    # 05 motion (count), 06 CO2 (ppm), 07 vdd (mV).
    tenths = round(device.temperature_c * 10) & 0xFFFF
    return (
        f"01{tenths:04X}02{round(device.humidity_pct):02X}04{device.light_lux:04X}"
        f"05{device.motion:02X}06{device.co2_ppm:04X}07{round(device.battery_v * 1000):04X}"
    )

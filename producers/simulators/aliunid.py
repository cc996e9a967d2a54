"""A local aliunid OPERATOR live-data server: same endpoint, auth and frames as the real one.

What it reproduces (docs/upstreams.md section 1):

* ``GET /web/api/data-export/v1/businesses/{business_id}/measuring-points/live?apiKey=KEY
  [&id=MP]...`` upgraded to a WebSocket. A wrong path (including another business id) is
  refused with HTTP 404 at the handshake, a wrong or missing ``apiKey`` with HTTP 401. The real
  service's behaviour for these cases is not documented; these are the conventional answers.
* Repeated ``id`` parameters select measuring points; unknown ids just send nothing.
* On connect, one ``structure`` frame per selected point; then every ``interval`` seconds one
  ``data`` frame per point, ``{"type": "data", "id": ..., "data": {"sys": {"kW": .., "kWh+":
  ..}}}``; ``structure`` frames again every ~30 ticks (the docs allow them at any time).
* A client that sends any message is disconnected (close 1008, "client messages are not
  supported"). WebSocket pings are control frames, not messages, and are answered.
* HTTP long polling on the same path (a ``GET`` without a WebSocket upgrade): the key in the
  ``apiKey`` query parameter or the ``x-api-key`` header (both documented versions), 401
  otherwise. Each answer is one ``data`` object (``application/json``) of the selected points;
  a poller (one key and selection) gets every ``data`` object produced from its first poll on,
  in order, one per request; the server holds a request up to ``long_poll_hold`` seconds and
  answers ``204`` when nothing came (the real server's answer is not documented).
  :meth:`AliunidSimulator.fail_polls` answers the next polls with an error status.
  ``polled_frames`` records every object handed out, ``poll_auth`` how each poll sent the key.

Values: measuring point 0, "EV charging hub", alternates deterministically between above 40 kW
(the 4th to 13th tick of every 20, so first after 4 intervals) and below 30 kW (the other 10,
the last 3 of them idle at exactly 0 kW), so a ``sys.kW > 40`` rule fires and resolves within
a minute at ``interval=1.0``; the pattern is in ticks, so it scales with the interval. The
other points follow a daily-ish wave (one simulated minute per tick) plus noise and stay below
36 kW. ``kWh+`` grows by ``kW * interval / 3600`` per tick, so energy is consistent with power.
Whole numbers are written as integers (``"kW": 0``), as a JavaScript server's
``JSON.stringify`` does and as the docs' sample shows. ``extended_schema=True`` adds the
*unconfirmed* Weidmüller-style ``sys`` keys and ``l1``/``l2``/``l3`` phase blocks.

A single ticker produces the frames for all clients (as a broadcasting server would), so
values are identical across connections and, with a ``seed``, reproducible.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import random
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from producers.redact import SecretFilter, redact_text
from producers.simulators.base import SimulatorServer

__all__ = ["LIVE_PATH", "AliunidSimulator", "MeasuringPoint", "SentFrame"]

logger = logging.getLogger(__name__)

#: Path template of the live endpoint.
LIVE_PATH = "/web/api/data-export/v1/businesses/{business_id}/measuring-points/live"

_POINT_NAMES = (
    "EV charging hub",
    "Main building",
    "Heat pump",
    "Office floor 2",
    "Cold storage",
    "Workshop",
    "Canteen kitchen",
    "Parking lighting",
)

#: EV hub pattern: high (> 40 kW) when ``(tick - 1) % EV_CYCLE_TICKS`` is in EV_HIGH_TICKS.
EV_CYCLE_TICKS = 20
EV_HIGH_TICKS = range(3, 13)
EV_HIGH_KW = (44.0, 52.0)
EV_LOW_KW = (6.0, 26.0)
#: Positions in the cycle where the hub is idle and reports exactly 0 kW.
EV_IDLE_TICKS = range(17, 20)
_OTHER_MAX_KW = 36.0
_STRUCTURE_EVERY_TICKS = 30


@dataclass
class MeasuringPoint:
    """One simulated meter and its running state."""

    id: str
    name: str
    base_kw: float
    amplitude_kw: float
    noise_kw: float
    peak_hour: float
    kwh_import: float
    phase_kwh: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    kvarh: float = 0.0


@dataclass(frozen=True)
class SentFrame:
    """A frame the simulator wrote to one connection (1-based connection number)."""

    connection: int
    text: str


class AliunidSimulator(SimulatorServer):
    """A real WebSocket server speaking the aliunid live-data protocol.

    Args:
        business_id: the business in the path; other ids get 404.
        api_key: the only accepted ``apiKey``; anything else gets 401.
        measuring_points: how many points the business has.
        interval: seconds between data ticks.
        seed: makes point ids and values reproducible.
        extended_schema: add the unconfirmed Weidmüller-style keys and phase blocks.
        long_poll_hold: longest time a long poll is held before a ``204``, seconds.

    Counters: ``connections_accepted``, ``frames_sent``, ``handshakes_rejected``,
    ``client_messages``. ``sent_frames`` keeps the last 10 000 frames written, per connection.
    """

    kind = "aliunid"

    def __init__(
        self,
        business_id: str,
        api_key: str,
        *,
        measuring_points: int = 3,
        interval: float = 1.0,
        seed: int | None = None,
        extended_schema: bool = False,
        long_poll_hold: float = 5.0,
    ) -> None:
        if measuring_points < 1:
            raise ValueError(f"measuring_points must be >= 1, got {measuring_points}")
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        if not business_id or not api_key:
            raise ValueError("business_id and api_key must not be empty")
        self.business_id = business_id
        self._api_key = api_key.encode()
        self.interval = interval
        self.extended_schema = extended_schema
        self._rng = random.Random(seed)  # simulation, not crypto
        self.points = [self._new_point(i) for i in range(measuring_points)]
        self.path = LIVE_PATH.format(business_id=business_id)
        self.tick = 0
        self.connections_accepted = 0
        self.frames_sent = 0
        self.handshakes_rejected = 0
        self.client_messages = 0
        self.sent_frames: deque[SentFrame] = deque(maxlen=10_000)
        self.long_poll_hold = long_poll_hold
        self.polls = 0
        self.polled_frames: list[str] = []
        self.poll_auth: list[str] = []
        self._pollers: dict[tuple[str, ...], _Poller] = {}
        self._poll_failures: deque[int] = deque()
        self._frames: list[tuple[str, str]] = []
        self._published_tick = 0
        self._tick_changed = asyncio.Condition()
        self._connections: set[ServerConnection] = set()
        self._server: Server | None = None
        self._host = ""
        self._port = 0
        self._wire_logger = logging.getLogger(f"{__name__}.wire")
        self._wire_filter = SecretFilter([api_key], redact_credentials=True)

    # ------------------------------------------------------------------ lifecycle

    def _serve_options(self) -> dict[str, Any]:
        return {"open_timeout": self.long_poll_hold + 10.0}  # a long poll is held in the handshake

    def _log_started(self) -> None:
        logger.info(
            "aliunid simulator listening url=%s points=%d interval_s=%g",
            self.url,
            len(self.points),
            self.interval,
        )

    @property
    def url(self) -> str:
        """The live endpoint without the key: ``ws://host:port/web/api/.../live``."""
        return self._base_url() + self.path

    @property
    def connections_active(self) -> int:
        """Open client connections."""
        return len(self._connections)

    async def drop_connections(self) -> int:
        """Abort every client connection without a close frame (a network drop).

        Returns:
            How many connections were dropped.
        """
        dropped = list(self._connections)
        for connection in dropped:
            connection.transport.abort()
        logger.info("aliunid simulator dropped connections count=%d", len(dropped))
        return len(dropped)

    def frames_for(self, connection: int) -> list[str]:
        """Frames written to one connection (1-based), oldest first."""
        return [f.text for f in self.sent_frames if f.connection == connection]

    # ------------------------------------------------------------------ protocol

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        target = urlsplit(request.path)
        if target.path != self.path:
            self.handshakes_rejected += 1
            logger.info("handshake refused status=404 path=%s", redact_text(target.path))
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        long_poll = "websocket" not in request.headers.get("Upgrade", "").lower()
        keys = parse_qs(target.query, keep_blank_values=True).get("apiKey", [])
        if long_poll:
            headers = request.headers.get_all("x-api-key")
            self.poll_auth.append("header" if headers else "query")
            keys += headers
        if len(keys) != 1 or not hmac.compare_digest(keys[0].encode(), self._api_key):
            self.handshakes_rejected += 1
            logger.info("handshake refused status=401 reason=api key missing or wrong")
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        if long_poll:
            return await self._long_poll(connection, _requested_ids_of(request.path))
        return None

    def fail_polls(self, *statuses: int) -> None:
        """Answer the next long polls with these HTTP statuses, in order (e.g. 503, 401)."""
        self._poll_failures.extend(statuses)

    async def _long_poll(self, connection: ServerConnection, wanted: set[str]) -> Response:
        self.polls += 1
        if self._poll_failures:
            status = HTTPStatus(self._poll_failures.popleft())
            logger.info("long poll answered with an injected error status=%d", status.value)
            return connection.respond(status, f"{status.phrase}\n")
        selection = tuple(sorted(wanted))
        poller = self._pollers.get(selection)
        if poller is None:
            poller = self._pollers[selection] = _Poller(set(selection))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.long_poll_hold
        while not poller.queue and loop.time() < deadline:
            if connection.transport.is_closing():
                break
            poller.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.2, max(0.0, deadline - loop.time()))):
                    await poller.changed.wait()
        if not poller.queue or connection.transport.is_closing():
            return connection.respond(HTTPStatus.NO_CONTENT, "")
        text = poller.queue.popleft()
        self.polled_frames.append(text)
        self.frames_sent += 1
        response = connection.respond(HTTPStatus.OK, text)
        response.headers["Content-Type"] = "application/json"
        return response

    def _feed_pollers(self, frames: list[tuple[str, str]]) -> None:
        for poller in self._pollers.values():
            for point_id, text in frames:
                if (not poller.ids or point_id in poller.ids) and _is_data(text):
                    poller.queue.append(text)
            poller.changed.set()

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections_accepted += 1
        number = self.connections_accepted
        if await self._fault(connection, number, "handshake"):
            return
        wanted = _requested_ids(connection)
        selected = [p for p in self.points if not wanted or p.id in wanted]
        self._connections.add(connection)
        sender = asyncio.create_task(self._send_frames(connection, number, selected))
        try:
            async for _message in connection:
                self.client_messages += 1
                logger.info("client sent a message; disconnecting connection=%d", number)
                await connection.close(
                    CloseCode.POLICY_VIOLATION, "client messages are not supported"
                )
                break
        except ConnectionClosed:
            pass
        finally:
            self._connections.discard(connection)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    async def _send_frames(
        self, connection: ServerConnection, number: int, selected: list[MeasuringPoint]
    ) -> None:
        ids = {p.id for p in selected}
        sent = 0
        for point in selected:
            await self._send(connection, number, self._structure_frame(point))
            sent += 1
            if await self._fault(connection, number, "stream", sent):
                return
        seen = self._published_tick
        while True:
            async with self._tick_changed:
                while self._published_tick == seen:
                    await self._tick_changed.wait()
                seen = self._published_tick
                frames = self._frames
            for point_id, text in frames:
                if point_id in ids:
                    await self._send(connection, number, text)
                    sent += 1
                    if await self._fault(connection, number, "stream", sent):
                        return

    async def _send(self, connection: ServerConnection, number: int, text: str) -> None:
        await connection.send(text)
        self.sent_frames.append(SentFrame(number, text))  # written: recorded
        self.frames_sent += 1

    async def _tick(self) -> None:
        frames = self.next_tick_frames()
        self._feed_pollers(frames)
        async with self._tick_changed:
            self._frames = frames
            self._published_tick = self.tick
            self._tick_changed.notify_all()

    # ------------------------------------------------------------------ values

    def next_tick_frames(self) -> list[tuple[str, str]]:
        """Advance the simulation one tick; return ``(point id, frame text)`` for every point.

        Called by the ticker; tests may call it on a simulator that is not started.
        """
        self.tick += 1
        frames: list[tuple[str, str]] = []
        if self.tick % _STRUCTURE_EVERY_TICKS == 0:
            frames += [(p.id, self._structure_frame(p)) for p in self.points]
        for index, point in enumerate(self.points):
            kw = self._power_kw(index, point)
            point.kwh_import += kw * self.interval / 3600.0
            frames.append((point.id, self._data_frame(point, kw)))
        return frames

    def _power_kw(self, index: int, point: MeasuringPoint) -> float:
        if index == 0:
            position = (self.tick - 1) % EV_CYCLE_TICKS
            if position in EV_HIGH_TICKS:
                return round(self._rng.uniform(*EV_HIGH_KW), 3)
            if position in EV_IDLE_TICKS:
                return 0.0  # no car plugged in
            return round(self._rng.uniform(*EV_LOW_KW), 3)
        hour = (8.0 + self.tick / 60.0) % 24.0  # one simulated minute per tick, from 08:00
        wave = math.cos(2.0 * math.pi * (hour - point.peak_hour) / 24.0)
        kw = point.base_kw + point.amplitude_kw * wave + self._rng.gauss(0.0, point.noise_kw)
        return round(min(_OTHER_MAX_KW, max(0.1, kw)), 3)

    def _new_point(self, index: int) -> MeasuringPoint:
        rng = self._rng
        ident = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        name = _POINT_NAMES[index] if index < len(_POINT_NAMES) else f"Sub-meter {index}"
        if index == 0:
            kwh = round(rng.uniform(2e4, 9e4), 1)
            return MeasuringPoint(ident, name, 0.0, 0.0, 0.0, 0.0, kwh, [round(kwh / 3, 1)] * 3)
        base = rng.uniform(6.0, 18.0)
        point = MeasuringPoint(
            id=ident,
            name=name,
            base_kw=base,
            amplitude_kw=base * rng.uniform(0.3, 0.6),
            noise_kw=base * 0.05,
            peak_hour=rng.uniform(11.0, 18.0),
            kwh_import=round(rng.uniform(1e3, 5e4), 1),
        )
        point.phase_kwh = [round(point.kwh_import / 3, 1)] * 3
        return point

    def _structure_frame(self, point: MeasuringPoint) -> str:
        return _dumps({"type": "structure", "id": point.id, "structure": {"name": point.name}})

    def _data_frame(self, point: MeasuringPoint, kw: float) -> str:
        sys_block: dict[str, Any] = {"kW": kw, "kWh+": round(point.kwh_import, 4)}
        data: dict[str, Any] = {"sys": sys_block}
        if self.extended_schema:
            data.update(self._extended_blocks(point, kw, sys_block))
        return _dumps({"type": "data", "id": point.id, "data": data})

    def _extended_blocks(
        self, point: MeasuringPoint, kw: float, sys_block: dict[str, Any]
    ) -> dict[str, Any]:
        rng = self._rng
        power_factor = rng.uniform(0.93, 0.99)
        kva = kw / power_factor
        kvar = math.sqrt(max(0.0, kva * kva - kw * kw))
        point.kvarh += kvar * self.interval / 3600.0
        sys_block.update(
            {
                "Hz": round(50.0 + rng.gauss(0.0, 0.02), 3),
                "kWh-": 0.0,
                "kvarh+": round(point.kvarh, 4),
                "kvarh-": 0.0,
                "kVA": round(kva, 3),
                "kvar": round(kvar, 3),
            }
        )
        weights = [rng.uniform(0.8, 1.2) for _ in range(3)]
        total = sum(weights)
        blocks: dict[str, Any] = {}
        for i, (label, phase) in enumerate((("l1", "R"), ("l2", "S"), ("l3", "T"))):
            share = weights[i] / total
            phase_kw = kw * share
            volts = round(rng.uniform(226.0, 234.0), 1)
            point.phase_kwh[i] += phase_kw * self.interval / 3600.0
            blocks[label] = {
                "phase": phase,
                "V": volts,
                "A": round(phase_kw * 1000.0 / (volts * power_factor), 2),
                "kWh+": round(point.phase_kwh[i], 4),
                "kWh-": 0.0,
                "kW": round(phase_kw, 3),
                "kVA": round(kva * share, 3),
                "kvar": round(kvar * share, 3),
            }
        return blocks


def _requested_ids(connection: ServerConnection) -> set[str]:
    request = connection.request
    if request is None:
        return set()
    return _requested_ids_of(request.path)


def _requested_ids_of(path: str) -> set[str]:
    ids: Iterable[str] = parse_qs(urlsplit(path).query).get("id", [])
    return {i.lower() for i in ids}


def _is_data(text: str) -> bool:
    document = orjson.loads(text)
    return isinstance(document, dict) and document.get("type") == "data"


@dataclass
class _Poller:
    """One long-polling client (a key and a selection): the data objects it has not fetched."""

    ids: set[str]
    queue: deque[str] = field(default_factory=deque)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def _dumps(document: dict[str, Any]) -> str:
    return orjson.dumps(_js_numbers(document)).decode()


def _js_numbers(value: Any) -> Any:
    """Write whole floats as integers, like ``JSON.stringify`` does (``0.0`` -> ``0``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value

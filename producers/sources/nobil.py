"""Nobil real-time charger status stream: URL, snapshot tracking, envelope and key.

See docs/upstreams.md section 2. Two wire formats, chosen with ``format`` in the sources file:

``legacy`` (``ws://realtime.nobil.no/api/v1/stream?apikey=KEY``)
    The server sends one ``snapshot:init`` (``data`` = every station with real-time data) on
    connect, then deltas: ``status:update`` (``data`` = one station with its *full* connectors
    array) and ``status:raw`` (``data`` = one connector, a keep-alive that does not always carry
    a change). The client sends nothing. A bad key is refused with HTTP 401 at the handshake.

``enova`` (NOBIL Real-time on Enova's platform)
    Each frame is ``{"nobilId": "NOR_23314", "evseUId": "<uuid>", "status": "AVAILABLE"}``. The
    WebSocket URL comes from the "NOBIL Real-time" product on data.enova.no; put its host and
    path in ``url`` and its token in ``api_key`` with ``key_param: access_token`` (an Azure Web
    PubSub client URL carries ``?access_token=...``).

The key's query parameter is configurable (``key_param``): the docs renamed ``key`` to
``apikey`` in 2013 and the final URL uses ``apikey``.

What changed, not just what is: the stream gives full station states, and a consumer must
compare them with what it had before (the docs say so). The producer keeps the last known state
of every station (``uuid -> {"status", "connectors"}``) and passes the relevant previous state in
the envelope's ``meta["previous"]``; the payload stays byte-for-byte what the server sent.

=================  ==========================================================================
frame              ``meta["previous"]``
=================  ==========================================================================
``snapshot:init``  absent on the first snapshot of this producer (no previous state: the
                   normalizer emits every state with ``previous=None``). After a reconnect: a
                   mapping ``uuid -> previous station state`` holding only the stations whose
                   state differs from the one we had (``null`` for a station we did not know);
                   stations left out are unchanged. The snapshot then *replaces* the state, so
                   stations missing from it are forgotten.
``status:update``  the station's previous ``{"status", "connectors"}``, or ``null`` when unknown.
``status:raw``     the connector's previous ``{"status", "error", "timestamp"}``, or ``null``.
                   The connector is then patched in the kept state, so a ``status:update``
                   that follows a raw change does not report the same change twice.
enova frame        the EVSE's previous ``status`` string, or ``null`` when unknown.
=================  ==========================================================================

Every frame is published, malformed ones included (with no ``previous`` and no key: the
pipeline dead-letters them). Kafka key: the station ``uuid`` (legacy ``status:*``) or
``nobilId`` (enova), so one station's frames stay in order on one partition; ``snapshot:init``
holds every station and has no key.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, quote_plus, urlencode

import orjson
from pydantic import Field, SecretStr, field_validator

from producers.envelope import RawEnvelope, now_ms
from producers.redact import redact_url
from producers.sink import DeadLetterRoute, EnvelopeSink
from producers.sources.base import Seconds, SourceBase, check_websocket_url
from producers.sources.common import websocket_options
from producers.transports.websocket import WebSocketClient

__all__ = [
    "KIND",
    "EnovaTracker",
    "LegacyTracker",
    "NobilSource",
    "Observation",
    "build_envelope",
    "build_url",
    "run_nobil",
]

KIND = "nobil"

NobilFormat = Literal["legacy", "enova"]
KeyParam = Literal["apikey", "key", "access_token"]


class NobilSource(SourceBase):
    """Nobil real-time stream over WebSocket.

    Attributes:
        url: the stream endpoint without a query string, e.g.
            ``ws://realtime.nobil.no/api/v1/stream``.
        api_key: the key (or, for Enova, the access token); sent as ``key_param``.
        key_param: query parameter carrying the key: ``apikey`` (current docs), ``key`` (the
            first documented form) or ``access_token`` (Azure Web PubSub URLs for Enova).
        format: ``legacy`` (``snapshot:init``/``status:*``) or ``enova``.
        ping_interval: WebSocket pings (public clients ping every 10-30 s); default 30 s.
    """

    kind: Literal["nobil"]
    url: str
    api_key: SecretStr = Field(min_length=1)
    key_param: KeyParam = "apikey"
    format: NobilFormat = "legacy"
    ping_interval: Seconds | None = 30.0

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        parts = check_websocket_url(value)
        if parts.query or parts.fragment:
            raise ValueError(
                f"{redact_url(value)!r} must not have a query string or fragment; put the key "
                "in api_key and its parameter name in key_param"
            )
        return value


def build_url(base_url: str, api_key: str, key_param: str = "apikey") -> str:
    """Append the key as ``key_param``, percent-encoded: ``ws://h/api/v1/stream?apikey=k``."""
    return f"{base_url}?{urlencode([(key_param, api_key)], quote_via=quote, safe='')}"


@dataclass(frozen=True)
class Observation:
    """What a tracker learned from one frame: its Kafka key and extra envelope ``meta``."""

    key: bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _load(frame: str | bytes) -> Any:
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None


def _text_id(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _connector_state(connector: dict[str, Any]) -> dict[str, Any]:
    return {k: connector[k] for k in ("status", "error", "timestamp") if k in connector}


def _station_state(station: dict[str, Any]) -> dict[str, Any] | None:
    """``{"status", "connectors"}`` of a well-formed station object, else None."""
    connectors = station.get("connectors")
    if not isinstance(connectors, list):
        return None
    state: dict[str, Any] = {}
    if "status" in station:
        state["status"] = station["status"]
    state["connectors"] = [_connector_state(c) if isinstance(c, dict) else c for c in connectors]
    return state


class LegacyTracker:
    """Last known state of every station, from ``snapshot:init`` / ``status:*`` frames.

    Pure (no I/O), so it is tested without sockets. ``stations`` is ``None`` until the first
    ``snapshot:init``.
    """

    def __init__(self) -> None:
        self.stations: dict[str, dict[str, Any]] | None = None
        self.snapshots_total = 0

    def observe(self, frame: str | bytes) -> Observation:
        """Key and ``meta["previous"]`` of ``frame``; updates the kept state."""
        document = _load(frame)
        if not isinstance(document, dict):
            return Observation()
        kind = document.get("type")
        data = document.get("data")
        if kind == "snapshot:init" and isinstance(data, list):
            return self._snapshot(data)
        if not isinstance(data, dict):
            return Observation()
        uuid = _text_id(data.get("uuid"))
        if uuid is None:
            return Observation()
        key = uuid.encode()
        if kind == "status:update":
            state = _station_state(data)
            if state is None:
                return Observation(key)
            stations = self._known()
            previous = stations.get(uuid)
            stations[uuid] = state  # ``previous`` is no longer shared: safe to put in meta
            return Observation(key, {"previous": previous})
        if kind == "status:raw":
            return Observation(key, {"previous": self._patch_connector(uuid, data)})
        return Observation(key)

    def _known(self) -> dict[str, dict[str, Any]]:
        if self.stations is None:
            self.stations = {}
        return self.stations

    def _snapshot(self, data: list[Any]) -> Observation:
        fresh: dict[str, dict[str, Any]] = {}
        for station in data:
            if not isinstance(station, dict):
                continue
            uuid = _text_id(station.get("uuid"))
            state = _station_state(station)
            if uuid is not None and state is not None:
                fresh[uuid] = state
        old = self.stations
        self.stations = fresh
        self.snapshots_total += 1
        if old is None:
            return Observation()
        changed = {uuid: old.get(uuid) for uuid, state in fresh.items() if old.get(uuid) != state}
        return Observation(meta={"previous": changed})

    def _patch_connector(self, uuid: str, data: dict[str, Any]) -> dict[str, Any] | None:
        index = data.get("connector")
        station = self._known().get(uuid)
        if station is None or isinstance(index, bool) or not isinstance(index, int):
            return None
        connectors = station["connectors"]
        if not 0 <= index < len(connectors) or not isinstance(connectors[index], dict):
            return None
        previous: dict[str, Any] = dict(connectors[index])
        connectors[index] = {**previous, **_connector_state(data)}
        return previous


class EnovaTracker:
    """Last known ``status`` of every EVSE, from Enova ``{nobilId, evseUId, status}`` frames."""

    def __init__(self) -> None:
        self.evses: dict[tuple[str, str], str] = {}

    def observe(self, frame: str | bytes) -> Observation:
        """Key and ``meta["previous"]`` of ``frame``; updates the kept state."""
        document = _load(frame)
        if not isinstance(document, dict):
            return Observation()
        station = _text_id(document.get("nobilId"))
        if station is None:
            return Observation()
        key = station.encode()
        evse = _text_id(document.get("evseUId"))
        status = document.get("status")
        if evse is None or not isinstance(status, str):
            return Observation(key)
        previous = self.evses.get((station, evse))
        self.evses[(station, evse)] = status
        return Observation(key, {"previous": previous})


def build_envelope(
    stream: str, frame: str | bytes, connection: int, extra: dict[str, Any] | None = None
) -> RawEnvelope:
    """Wrap a frame unchanged; ``meta`` = connection number, ``extra`` and, for binary, encoding.

    ``meta`` never holds the URL or the key.
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


def _secrets(source: NobilSource) -> list[str]:
    raw = source.api_key.get_secret_value()
    return list(dict.fromkeys((raw, quote(raw, safe=""), quote_plus(raw, safe=""))))


async def run_nobil(source: NobilSource, sink: EnvelopeSink, stop: asyncio.Event) -> None:
    """Stream one Nobil source into ``sink`` until ``stop`` is set.

    Raises:
        UpstreamAuthError: the key was refused (HTTP 401/403 at the handshake).
        UpstreamRejectedError: the endpoint refused otherwise (e.g. 404 for a wrong path).
    """
    url = build_url(source.url, source.api_key.get_secret_value(), source.key_param)
    tracker: LegacyTracker | EnovaTracker = (
        EnovaTracker() if source.format == "enova" else LegacyTracker()
    )

    async def publish(frame: str | bytes, connection: int) -> None:
        seen = tracker.observe(frame)
        await sink.send(seen.key, build_envelope(source.name, frame, connection, seen.meta))

    client = WebSocketClient(
        url,
        publish,
        name=source.name,
        options=websocket_options(source),
        secrets=_secrets(source),
        dead_letters=DeadLetterRoute(sink, KIND, source.name),
    )
    await client.run(stop)

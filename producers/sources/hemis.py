"""Hemis (Ubiant / Flexom) real-time API: STOMP 1.2 over WebSocket (docs/upstreams.md section 5).

Connection: the building's ``hemis_stomp_url`` (``wss://<name>-stomp.<region>.ubiant.io:4443``),
``CONNECT`` with ``login`` = building id and ``passcode`` = the Hemis token, ``heart-beat:
20000,20000``, WebSocket subprotocols ``v12.stomp, v11.stomp, v10.stomp``; then ``SUBSCRIBE`` to
``jms.topic.{buildingId}.data`` and ``jms.topic.{buildingId}.management``. The transport is
:mod:`producers.transports.stomp` (stomp.py, bridged into asyncio).

Every MESSAGE body is published unchanged: UTF-8 text as is; a body that arrived in a *binary*
WebSocket frame (or is not UTF-8) as base64 text with ``meta["encoding"] = "base64"``. ``meta``
also holds the connection number and the ``destination``, ``subscription``, ``message-id``
(as ``message_id``) and ``content-type`` (as ``content_type``) headers; never a credential.
The Kafka key is the upstream entity of the message (the same entity the normalizer uses):

=========================================  ================================================
type                                       key
=========================================  ================================================
SENSOR_STATE                               ``sensorId`` (else ``itId``)
ACTUATOR_TARGET/HARDWARE/CURRENT_STATE     ``value.actuatorId`` (else ``itId``)
IT_STATE                                   ``itId``
FACTOR_TARGET_STATE, FACTOR_CURRENT_STATE  ``zoneId``
OBJECTIVE_STATE                            ``objectiveId``
DATA_PROVIDER, NEW_DATA                    ``container.dataInfo.sourceId``
ENTITY_MANAGEMENT                          ``entityId``
=========================================  ================================================

Anything else (not JSON, unknown type, no id) is published with no key; the pipeline
dead-letters what it cannot use, the producer never drops.

Token refresh: the Hemis token (a JWT) expires after about 12 h; the server then ends the
session (an ERROR frame and a close, as far as is known) and the client must reconnect with a
fresh token. Give the token either as ``token: ${HEMIS_TOKEN}`` (expanded once, at start-up:
after expiry the reconnect is refused and the producer stops with UpstreamAuthError, so a
supervisor restart with a new environment is the refresh), or as ``token_file:`` a path that
is **re-read before every connection attempt**: whatever renews the token (a sidecar that logs
in to ``WS_UserManagement/login``, a Kubernetes/Docker secret) replaces the file, atomically
(write a temporary file, then rename), and the next reconnect uses the new token.

Local mode: with ``local_ip``, the WebSocket goes to ``local_ip:local_port`` (443) while the
HTTP ``Host`` header and the TLS certificate check use the hostname of ``url`` (or
``local_host_header``). Verification is never turned off; ``ca_file`` adds a CA (e.g. the
building's own) instead.

Other STOMP brokers (RabbitMQ Web-STOMP for interop tests): ``login`` overrides the login,
``vhost`` sets the CONNECT ``host`` header (RabbitMQ treats it as the virtual host: use
``"/"``), and ``destination_style: rabbitmq`` subscribes to ``/topic/{building_id}.data`` and
``/topic/{building_id}.management`` instead of the ``jms.topic.`` names (RabbitMQ would treat a
name without a slash as a durable *queue*). ``destinations`` lists destinations explicitly
(``{building_id}`` is replaced).

Example::

    - name: hemis-home
      kind: hemis
      url: wss://somename-stomp.eu-west.ubiant.io:4443
      building_id: ${HEMIS_BUILDING_ID}
      token_file: /run/secrets/hemis_token     # or token: ${HEMIS_TOKEN}
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator

from producers.envelope import RawEnvelope, now_ms
from producers.errors import SourceConfigError
from producers.redact import redact_url
from producers.sink import DeadLetterRoute, EnvelopeSink
from producers.sources.base import Seconds, SourceBase, check_websocket_url
from producers.transports.stomp import (
    DEFAULT_SUBPROTOCOLS,
    CredentialsProvider,
    StompClient,
    StompCredentials,
    StompEndpoint,
    StompMessage,
    StompOptions,
)

__all__ = [
    "KIND",
    "HemisSource",
    "build_envelope",
    "credentials_provider",
    "destinations",
    "endpoint",
    "frame_key",
    "run_hemis",
    "stomp_options",
]

KIND = "hemis"

_Millis = Annotated[int, Field(ge=0, le=3_600_000, strict=True)]
_Port = Annotated[int, Field(ge=1, le=65535, strict=True)]

#: ``(header, meta key)`` of the MESSAGE headers copied into ``meta``.
_META_HEADERS = (
    ("destination", "destination"),
    ("subscription", "subscription"),
    ("message-id", "message_id"),
    ("content-type", "content_type"),
)


class HemisSource(SourceBase):
    """Hemis STOMP-over-WebSocket stream of one building.

    Attributes:
        url: ``hemis_stomp_url``, ``ws://`` or ``wss://``; a path is allowed (default ``/``).
        building_id: the STOMP login and the ``{buildingId}`` of the topic names.
        token: the Hemis token, sent as ``passcode``; or
        token_file: a file holding it, re-read before every connection (exactly one of both).
        login: STOMP login when it is not the building id (other brokers).
        vhost: CONNECT ``host`` header; default the hostname of ``url``.
        local_ip, local_port: local mode, connect here instead (TLS name from ``url``).
        local_host_header: ``Host`` header and TLS name in local mode; default ``url``'s host.
        ca_file: PEM CA bundle to verify the server with instead of the system store.
        destination_style: ``hemis`` (``jms.topic.X.data``) or ``rabbitmq`` (``/topic/X.data``).
        destinations: explicit destinations (``{building_id}`` replaced); overrides the style.
        subprotocols: WebSocket subprotocols offered; empty offers none.
        heartbeat_send_ms, heartbeat_receive_ms: CONNECT ``heart-beat`` (0 disables).
        connect_timeout: CONNECT -> CONNECTED and SUBSCRIBE -> RECEIPT.
        max_pending: received messages not yet accepted by the sink before reading pauses.
    """

    kind: Literal["hemis"]
    url: str
    building_id: str = Field(min_length=1, pattern=r"^[^\s{}]+$")
    token: SecretStr | None = None
    token_file: str | None = Field(default=None, min_length=1)
    login: str | None = Field(default=None, min_length=1)
    vhost: str | None = Field(default=None, min_length=1)
    local_ip: str | None = None
    local_port: _Port = 443
    local_host_header: str | None = Field(default=None, min_length=1)
    ca_file: str | None = Field(default=None, min_length=1)
    destination_style: Literal["hemis", "rabbitmq"] = "hemis"
    destinations: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    subprotocols: tuple[Annotated[str, Field(min_length=1)], ...] = DEFAULT_SUBPROTOCOLS
    heartbeat_send_ms: _Millis = 20_000
    heartbeat_receive_ms: _Millis = 20_000
    connect_timeout: Seconds = 10.0
    max_pending: Annotated[int, Field(ge=1, strict=True)] = 1000

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        parts = check_websocket_url(value)
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(
                f"{redact_url(value)!r} must not carry a query string, fragment or user info; "
                "the credentials go in building_id and token/token_file"
            )
        try:
            parts.port  # noqa: B018  # validates the port
        except ValueError:
            raise ValueError(f"{value!r} has an invalid port") from None
        return value

    @field_validator("local_ip")
    @classmethod
    def _ip_address(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address (local_ip from buildings/mine/infos)"
            ) from None

    @field_validator("ping_interval")
    @classmethod
    def _no_pings(cls, value: float | None) -> float | None:
        if value is not None:
            raise ValueError(
                "not supported for hemis; STOMP heart-beats keep the connection alive "
                "(heartbeat_send_ms, heartbeat_receive_ms)"
            )
        return value

    @model_validator(mode="after")
    def _one_token_source(self) -> Self:
        if (self.token is None) == (self.token_file is None):
            raise ValueError(
                "give exactly one of token (e.g. token: ${HEMIS_TOKEN}) or token_file "
                "(re-read at every reconnect)"
            )
        return self


def destinations(source: HemisSource) -> tuple[str, ...]:
    """The destinations to subscribe to, in order."""
    building = source.building_id
    if source.destinations:
        return tuple(d.replace("{building_id}", building) for d in source.destinations)
    if source.destination_style == "rabbitmq":
        return (f"/topic/{building}.data", f"/topic/{building}.management")
    return (f"jms.topic.{building}.data", f"jms.topic.{building}.management")


def endpoint(source: HemisSource) -> StompEndpoint:
    """Where to connect: ``url``, or ``local_ip`` with ``url``'s hostname as Host and TLS name."""
    parts = urlsplit(source.url)
    hostname = parts.hostname or ""
    tls = parts.scheme == "wss"
    path = parts.path or "/"
    if source.local_ip is not None:
        name = source.local_host_header or hostname
        return StompEndpoint(
            host=source.local_ip,
            port=source.local_port,
            path=path,
            tls=tls,
            host_header=name,
            tls_hostname=name,
            ca_file=source.ca_file,
            subprotocols=source.subprotocols,
            vhost=source.vhost or name,
            tls_verify=source.tls_verify,
        )
    return StompEndpoint(
        host=hostname,
        port=parts.port or (443 if tls else 80),
        path=path,
        tls=tls,
        ca_file=source.ca_file,
        subprotocols=source.subprotocols,
        vhost=source.vhost or hostname,
        tls_verify=source.tls_verify,
    )


def credentials_provider(source: HemisSource) -> CredentialsProvider:
    """Login and passcode for each connection attempt; ``token_file`` is read every time.

    The provider raises SourceConfigError when the file cannot be read or is empty.
    """
    login = source.login or source.building_id
    token = source.token
    if token is not None:
        static = StompCredentials(login, token.get_secret_value())
        return lambda: static
    path = Path(source.token_file or "")
    name = source.name

    def read() -> StompCredentials:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SourceConfigError(
                f"source {name!r}: token_file {str(path)!r} cannot be read: {reason}"
            ) from None
        if not text:
            raise SourceConfigError(f"source {name!r}: token_file {str(path)!r} is empty")
        return StompCredentials(login, text)

    return read


def stomp_options(source: HemisSource) -> StompOptions:
    """Transport options from the source entry."""
    return StompOptions(
        heartbeat_send_ms=source.heartbeat_send_ms,
        heartbeat_receive_ms=source.heartbeat_receive_ms,
        open_timeout=source.open_timeout,
        connect_timeout=source.connect_timeout,
        subscribe_timeout=source.connect_timeout,
        idle_timeout=source.idle_timeout,
        stable_after=source.stable_after,
        max_frame_bytes=source.max_frame_bytes,
        max_pending=source.max_pending,
        backoff_initial=source.backoff_initial,
        backoff_max=source.backoff_max,
    )


def frame_key(body: bytes | str) -> bytes | None:
    """The entity id of a Hemis message body as UTF-8 bytes (see the module table), or None."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    kind = document.get("type")
    ident: Any = None
    if kind == "SENSOR_STATE":
        ident = _first_id(document.get("sensorId"), document.get("itId"))
    elif kind in ("ACTUATOR_TARGET_STATE", "ACTUATOR_HARDWARE_STATE", "ACTUATOR_CURRENT_STATE"):
        value = document.get("value")
        actuator = value.get("actuatorId") if isinstance(value, dict) else None
        ident = _first_id(actuator, document.get("itId"))
    elif kind == "IT_STATE":
        ident = _first_id(document.get("itId"))
    elif kind in ("FACTOR_TARGET_STATE", "FACTOR_CURRENT_STATE"):
        ident = _first_id(document.get("zoneId"))
    elif kind == "OBJECTIVE_STATE":
        ident = _first_id(document.get("objectiveId"))
    elif kind in ("DATA_PROVIDER", "NEW_DATA"):
        container = document.get("container")
        info = container.get("dataInfo") if isinstance(container, dict) else None
        ident = _first_id(info.get("sourceId") if isinstance(info, dict) else None)
    elif kind == "ENTITY_MANAGEMENT":
        ident = _first_id(document.get("entityId"))
    return None if ident is None else str(ident).encode()


def _first_id(*candidates: object) -> str | int | None:
    for candidate in candidates:
        if isinstance(candidate, bool):
            continue
        if isinstance(candidate, str) and candidate:
            return candidate
        if isinstance(candidate, int):
            return candidate
    return None


def build_envelope(stream: str, message: StompMessage, connection: int) -> RawEnvelope:
    """Wrap a MESSAGE body unchanged; binary or non-UTF-8 bodies as base64 text."""
    meta: dict[str, object] = {"connection": connection}
    for header, key in _META_HEADERS:
        value = message.headers.get(header)
        if value is not None:
            meta[key] = value
    payload: str | None = None
    if not message.binary:
        try:
            payload = message.body.decode("utf-8")
        except UnicodeDecodeError:
            payload = None
    if payload is None:
        payload = base64.b64encode(message.body).decode("ascii")
        meta["encoding"] = "base64"
    return RawEnvelope(
        source=KIND, stream=stream, received_at_ms=now_ms(), payload=payload, meta=meta
    )


async def run_hemis(source: HemisSource, sink: EnvelopeSink, stop: asyncio.Event) -> None:
    """Stream one Hemis building into ``sink`` until ``stop`` is set.

    Raises:
        UpstreamAuthError: CONNECT was refused (wrong building id or token, expired token that
            was not refreshed), or the handshake got HTTP 401/403.
        UpstreamRejectedError: a subscription was refused, the handshake got another
            permanent 4xx, or the TLS certificate does not match the hostname.
        SourceConfigError: ``token_file`` cannot be read or is empty.
    """

    async def publish(message: StompMessage, connection: int) -> None:
        await sink.send(frame_key(message.body), build_envelope(source.name, message, connection))

    client = StompClient(
        endpoint(source),
        credentials_provider(source),
        destinations(source),
        publish,
        name=source.name,
        options=stomp_options(source),
        dead_letters=DeadLetterRoute(sink, KIND, source.name),
    )
    await client.run(stop)

"""aliunid OPERATOR live data export: URL, envelope and key (see docs/upstreams.md section 1).

The server pushes ``data`` and ``structure`` JSON frames from the moment we connect; the client
must never send anything (a client message gets it disconnected), so no subscription, no
application heartbeat and, by default, no WebSocket pings. There is no replay: frames missed
while disconnected are gone.

``transport: long-poll`` uses the HTTP long-polling access on the same path instead
(:mod:`producers.transports.longpoll`): each answer is one ``data`` object, published like a
WebSocket frame; the key goes in the ``apiKey`` query parameter (the current doc) or, with
``api_key_in: header``, in the ``x-api-key`` header (the doc's first version).

Every frame is published unchanged; the Kafka key is the frame's measuring point ``id`` so all
frames of one point stay in order on one partition. Frames that are not JSON or have no id are
published with no key: the pipeline dead-letters them, the producer never drops them.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable
from typing import Literal
from urllib.parse import quote, urlencode
from uuid import UUID

import orjson
from pydantic import Field, SecretStr, ValidationInfo, field_validator

from producers.envelope import RawEnvelope, now_ms
from producers.redact import redact_url
from producers.sink import DeadLetterRoute, EnvelopeSink
from producers.sources.base import Seconds, SourceBase, check_websocket_url, secrets_of
from producers.sources.common import websocket_options
from producers.transports.longpoll import LongPollClient, LongPollOptions
from producers.transports.websocket import WebSocketClient


class AliunidSource(SourceBase):
    """aliunid OPERATOR live data export over WebSocket or HTTP long polling.

    Attributes:
        url: the ``.../businesses/{BUSINESS_ID}/measuring-points/live`` endpoint, ``ws://`` or
            ``wss://`` (``http://`` or ``https://`` for long polling), without a query string
            (the key and ids are added from the keys below).
        api_key: sent as the ``apiKey`` query parameter (or the ``x-api-key`` header).
        measuring_points: measuring point UUIDs; empty means every point of the business.
        transport: ``websocket`` (default) or ``long-poll`` (one ``data`` object per answer).
        api_key_in: long polling: ``query`` (``apiKey``, the current doc) or ``header``
            (``x-api-key``, the doc's first version).
        poll_timeout: long polling: bound on one request (the server holds it until data).
        error_delay: long polling: wait after an error (the doc: 5 s), growing while errors
            go on, up to ``backoff_max``.
    """

    kind: Literal["aliunid"]
    transport: Literal["websocket", "long-poll"] = "websocket"  # before url: url checks it
    url: str
    api_key: SecretStr = Field(min_length=1)
    measuring_points: tuple[UUID, ...] = ()
    api_key_in: Literal["query", "header"] = "query"
    poll_timeout: Seconds = 90.0
    error_delay: Seconds = 5.0

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("transport") == "long-poll":
            if value[:7].lower() != "http://" and value[:8].lower() != "https://":
                raise ValueError(
                    f"{redact_url(value)!r} is not an HTTP URL (transport: long-poll); use "
                    "http://host/path or https://host/path"
                )
            value_as_ws = "ws" + value[4:]  # the same checks as a WebSocket URL
        else:
            value_as_ws = value
        parts = check_websocket_url(value_as_ws)
        if parts.query or parts.fragment:
            raise ValueError(
                f"{redact_url(value)!r} must not have a query string or fragment; put the key in "
                "api_key and measuring point ids in measuring_points"
            )
        return value


__all__ = ["KIND", "build_envelope", "build_url", "frame_key", "run_aliunid"]

KIND = "aliunid"


def build_url(
    base_url: str, api_key: str | None, measuring_points: Iterable[UUID | str] = ()
) -> str:
    """Append ``apiKey`` (unless None: sent in a header) and one ``id`` per measuring point.

    Example: ``build_url("wss://h/live", "k", [mp1, mp2])`` ->
    ``wss://h/live?apiKey=k&id=<mp1>&id=<mp2>``.
    """
    params = [("apiKey", api_key)] if api_key is not None else []
    params += [("id", str(mp)) for mp in measuring_points]
    if not params:
        return base_url
    return f"{base_url}?{urlencode(params, quote_via=quote, safe='')}"


def frame_key(frame: str | bytes) -> bytes | None:
    """The measuring point id of a frame as UTF-8 bytes, or None when there is none.

    A string or integer ``id`` at the top level of a JSON object is the key; anything else
    (not JSON, not an object, no id, an id of another type) gives None.
    """
    try:
        document = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    ident = document.get("id")
    if isinstance(ident, bool) or not isinstance(ident, str | int) or ident == "":
        return None
    return str(ident).encode()


def build_envelope(stream: str, frame: str | bytes, connection: int) -> RawEnvelope:
    """Wrap a frame unchanged. Binary frames become base64 text with ``meta.encoding``.

    ``meta`` holds only the 1-based connection number (and the encoding): never the URL or key.
    """
    meta: dict[str, object] = {"connection": connection}
    if isinstance(frame, bytes):
        payload = base64.b64encode(frame).decode("ascii")
        meta["encoding"] = "base64"
    else:
        payload = frame
    return RawEnvelope(
        source=KIND, stream=stream, received_at_ms=now_ms(), payload=payload, meta=meta
    )


async def run_aliunid(source: AliunidSource, sink: EnvelopeSink, stop: asyncio.Event) -> None:
    """Stream one aliunid source into ``sink`` until ``stop`` is set.

    Raises:
        UpstreamAuthError: the API key was refused (HTTP 401/403).
        UpstreamRejectedError: the endpoint refused otherwise, e.g. 404 for a wrong business id.
    """
    api_key = source.api_key.get_secret_value()

    async def publish(frame: str | bytes, connection: int) -> None:
        await sink.send(frame_key(frame), build_envelope(source.name, frame, connection))

    if source.transport == "long-poll":
        in_header = source.api_key_in == "header"
        poller = LongPollClient(
            build_url(source.url, None if in_header else api_key, source.measuring_points),
            publish,
            name=source.name,
            headers={"x-api-key": api_key} if in_header else None,
            options=LongPollOptions(
                poll_timeout=source.poll_timeout,
                open_timeout=source.open_timeout,
                error_delay=source.error_delay,
                backoff_max=source.backoff_max,
                max_frame_bytes=source.max_frame_bytes,
                tls_verify=source.tls_verify,
            ),
            secrets=secrets_of(source),
            dead_letters=DeadLetterRoute(sink, KIND, source.name),
        )
        await poller.run(stop)
        return
    url = build_url(source.url, api_key, source.measuring_points)
    client = WebSocketClient(
        url,
        publish,
        name=source.name,
        options=websocket_options(source),
        secrets=secrets_of(source),
        dead_letters=DeadLetterRoute(sink, KIND, source.name),
    )
    await client.run(stop)

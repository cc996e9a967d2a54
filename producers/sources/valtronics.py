"""Valtronics WebSocket API: auth, subscriptions, keepalive, envelope and key (upstreams.md §3).

Valtronics' documentation and its server code disagree, so the producer speaks both dialects:

* **doc** (``docs/wiki/03-api/websocket-api.md``): after the socket opens, send
  ``{"type": "auth", "token": JWT}`` and expect ``{"type": "auth_response", "success": ...}``;
  then one ``{"type": "subscribe", "channel": ..., "device_id": ..., "filters": ...}`` per
  configured subscription (no confirmation is documented). Limits: 1 KB per message, 100
  messages per second per connection.
* **server** (``backend/app/websocket_handler.py``): no auth at all (an ``auth`` message gets
  the bare error ``{"error": "Unknown message type: auth"}``); ``{"type": "subscribe_device",
  "device_id": "<id>"}`` per device, answered by ``subscription_confirmed``. The device id is
  sent as a *string*: the server files subscribers under the JSON value it received but
  broadcasts telemetry to ``str(device_id)``, so an integer subscription is confirmed and then
  never receives anything.

With ``protocol: auto`` (the default) the producer sends the documented ``auth`` on every
connection and picks the dialect from the answer. ``protocol: doc`` refuses a server that does
not know ``auth``; ``protocol: server`` never sends the token.

Per connection: authenticate (a refusal is a fatal :class:`~producers.errors.UpstreamAuthError`),
subscribe again (a refused subscription is a fatal
:class:`~producers.errors.UpstreamRejectedError`), then send the documented application ping
``{"type": "ping", "timestamp": ...}`` every ``keepalive_interval``; no ``pong`` within
``pong_timeout`` closes the connection as dead, and the transport reconnects with backoff.

JWT expiry: the API docs give tokens a 30-minute lifetime with a REST refresh endpoint whose
request format is not documented. The producer reads the token again from ``token_file`` (when
configured) before every authentication, so an external refresher can rotate it, and re-sends
``auth`` on the live connection ``reauth_before`` seconds before the token's ``exp`` claim.
With a static ``token`` it warns before expiry; an expired token that the upstream then refuses
stops the producer with a clear :class:`~producers.errors.UpstreamAuthError`.

Outgoing messages are paced to ``send_rate`` per second (documented limit: 100); an upstream
rate-limit error halves the pace and reconnects, because the refused message may have been a
subscription. Upstream errors are logged at ERROR with the upstream's own text.

Every frame received, including the replies to our own messages, is published unchanged. The
key is the frame's device id (``device_id``, or ``alert.device_id`` in the server's alerts);
frames without one are published with no key. The token never appears in logs, errors or
envelopes: websockets' frame log (which would show the ``auth`` message) is masked by
:class:`TokenMaskFilter`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    field_validator,
    model_validator,
)
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from producers.envelope import RawEnvelope, now_ms
from producers.errors import SourceConfigError, UpstreamAuthError, UpstreamRejectedError
from producers.redact import MASK, install_secret_filter, redact_url
from producers.sink import DeadLetterRoute, EnvelopeSink
from producers.sources.base import Seconds, SourceBase, check_websocket_url
from producers.sources.common import websocket_options
from producers.transports.websocket import StatusAction, WebSocketClient

__all__ = [
    "DEFAULT_SUBSCRIPTIONS",
    "DOCUMENTED_CHANNELS",
    "KIND",
    "MAX_MESSAGES_PER_SECOND",
    "MAX_MESSAGE_BYTES",
    "Control",
    "ControlKind",
    "TokenMaskFilter",
    "ValtronicsSource",
    "ValtronicsSubscription",
    "auth_message",
    "build_envelope",
    "classify",
    "frame_key",
    "jwt_expiry",
    "ping_message",
    "run_valtronics",
    "server_subscribe_messages",
    "subscribe_message",
]

logger = logging.getLogger(__name__)

KIND = "valtronics"

#: Channels of the documented protocol (``device_telemetry`` is the API overview's name).
DOCUMENTED_CHANNELS = ("telemetry", "alerts", "devices", "system", "device_telemetry")
#: Documented per-message size limit, bytes.
MAX_MESSAGE_BYTES = 1024
#: Documented per-connection message rate limit.
MAX_MESSAGES_PER_SECOND = 100

#: Logger websockets writes its frame log to (see :mod:`producers.transports.websocket`).
_WIRE_LOGGER_NAME = "producers.transports.websocket.wire"
_CLOSE_GOING_AWAY = 1001
_CLOSE_INTERNAL = 1011
_ERROR_TEXT_MAX = 200


# --------------------------------------------------------------------------- configuration


def _device_id(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a device id; use a number or a non-empty string")
    if isinstance(value, str) and not value.strip():
        raise ValueError("device id must not be empty")
    return value


DeviceId = Annotated[int | str, BeforeValidator(_device_id)]


class ValtronicsSubscription(BaseModel):
    """One subscription, sent again after every (re)connect.

    Attributes:
        channel: ``telemetry``, ``alerts``, ``devices``, ``system`` or ``device_telemetry``.
        device_id: only this device (doc: the message's ``device_id``; server dialect: one
            ``subscribe_device``). Without it the doc dialect subscribes to every device; the
            server dialect cannot (it has no such request) and only gets its broadcasts.
        filters: the documented ``filters`` object (``metrics``, ``severity``, ...), sent as is.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    channel: Literal["telemetry", "alerts", "devices", "system", "device_telemetry"]
    device_id: DeviceId | None = None
    filters: dict[str, JsonValue] | None = None


DEFAULT_SUBSCRIPTIONS: tuple[ValtronicsSubscription, ...] = tuple(
    ValtronicsSubscription(channel=c) for c in ("telemetry", "alerts", "devices", "system")
)


class ValtronicsSource(SourceBase):
    """Valtronics WebSocket API (documented protocol or the server's variant).

    Attributes:
        url: ``ws://host:8000/ws`` (or ``/ws/<channel>``, ``/ws/<device_id>``), no query string.
        token: the JWT sent in the ``auth`` message; required unless ``token_file`` is set or
            ``protocol`` is ``server``.
        token_file: file holding the JWT, read again before every authentication (rotation).
        protocol: ``auto`` (detect from the reply to ``auth``), ``doc`` or ``server``.
        subscriptions: what to subscribe to; default: every device on the four doc channels.
        keepalive_interval: seconds between application pings (``{"type": "ping"}``).
        pong_timeout: a ping without ``pong`` for this long means the connection is dead.
        reply_timeout: bound on waiting for ``auth_response`` / ``subscription_confirmed``.
        reauth_before: authenticate again this long before the JWT's ``exp``.
        send_rate: most messages sent per second (documented limit: 100).
    """

    kind: Literal["valtronics"]
    url: str
    token: SecretStr | None = None
    token_file: Path | None = None
    protocol: Literal["auto", "doc", "server"] = "auto"
    subscriptions: tuple[ValtronicsSubscription, ...] = Field(
        default=DEFAULT_SUBSCRIPTIONS, min_length=1
    )
    keepalive_interval: Seconds = 20.0
    pong_timeout: Seconds = 10.0
    reply_timeout: Seconds = 10.0
    reauth_before: Seconds = 60.0
    send_rate: float = Field(default=20.0, gt=0, le=MAX_MESSAGES_PER_SECOND)

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        parts = check_websocket_url(value)
        if parts.query or parts.fragment:
            raise ValueError(
                f"{redact_url(value)!r} must not have a query string or fragment; the token "
                "goes in token or token_file"
            )
        return value

    @model_validator(mode="after")
    def _credentials_and_sizes(self) -> ValtronicsSource:
        if self.token is not None and not self.token.get_secret_value():
            raise ValueError("token must not be empty")
        if self.token is not None and self.token_file is not None:
            raise ValueError("give token or token_file, not both")
        if self.token is None and self.token_file is None and self.protocol != "server":
            raise ValueError(
                "token or token_file is required (only protocol: server works without one)"
            )
        for index, subscription in enumerate(self.subscriptions):
            size = len(_dumps(subscribe_message(subscription)))
            if size > MAX_MESSAGE_BYTES:
                raise ValueError(
                    f"subscriptions[{index}]: the subscribe message is {size} bytes; the "
                    f"documented limit is {MAX_MESSAGE_BYTES} bytes, shorten its filters"
                )
        return self


# --------------------------------------------------------------------------- messages


def auth_message(token: str) -> dict[str, Any]:
    """The documented ``auth`` message (``type`` first, so the frame log shows the key)."""
    return {"type": "auth", "token": token}


def subscribe_message(subscription: ValtronicsSubscription) -> dict[str, Any]:
    """The documented ``subscribe`` message for one subscription."""
    message: dict[str, Any] = {"type": "subscribe", "channel": subscription.channel}
    if subscription.device_id is not None:
        message["device_id"] = subscription.device_id
    if subscription.filters is not None:
        message["filters"] = subscription.filters
    return message


def server_subscribe_messages(
    subscriptions: Iterable[ValtronicsSubscription],
) -> list[dict[str, Any]]:
    """One ``subscribe_device`` per distinct device id, in order, the id as a string."""
    seen: list[str] = []
    for subscription in subscriptions:
        if subscription.device_id is not None and str(subscription.device_id) not in seen:
            seen.append(str(subscription.device_id))
    return [{"type": "subscribe_device", "device_id": device} for device in seen]


def ping_message(now_s: float) -> dict[str, Any]:
    """The documented application ping, with a UTC ISO 8601 timestamp."""
    stamp = datetime.fromtimestamp(now_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "ping", "timestamp": stamp}


def _dumps(message: Mapping[str, Any]) -> bytes:
    return orjson.dumps(message)


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, read without verifying it; None if absent.

    Anything that is not a JWT with a finite numeric ``exp`` gives None.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    body = parts[1]
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(claims, dict):
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    return float(exp)


# --------------------------------------------------------------------------- frames


class ControlKind(enum.Enum):
    """What a received frame means for the connection (besides being published)."""

    DATA = "data"
    PONG = "pong"
    AUTH_OK = "auth_ok"
    AUTH_FAILED = "auth_failed"
    NO_AUTH = "no_auth"  # server dialect: "Unknown message type: auth"
    CONFIRMED = "confirmed"
    ERROR_AUTH = "error_auth"
    ERROR_REJECTED = "error_rejected"
    ERROR_RATE_LIMIT = "error_rate_limit"
    ERROR_TRANSIENT = "error_transient"
    ERROR_OTHER = "error_other"


@dataclass(frozen=True)
class Control:
    """The protocol meaning of a frame.

    Attributes:
        kind: see :class:`ControlKind`.
        text: the upstream's explanation (error text, auth message), shortened; may be empty.
        device_id: the device a ``subscription_confirmed`` is for.
        limit: the rate limit an upstream rate-limit error states, messages per second.
    """

    kind: ControlKind
    text: str = ""
    device_id: str | None = None
    limit: float | None = None


_REJECTED_CODES = frozenset({"VALIDATION_ERROR", "RESOURCE_NOT_FOUND"})
_AUTH_CODES = frozenset({"AUTHENTICATION_ERROR", "AUTHORIZATION_ERROR"})
_TRANSIENT_CODES = frozenset({"INTERNAL_ERROR", "EXTERNAL_SERVICE_ERROR"})
_SERVER_UNKNOWN_TYPE = "Unknown message type: "


def _short(value: object) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= _ERROR_TEXT_MAX else text[: _ERROR_TEXT_MAX - 3] + "..."


def _parse(frame: str | bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def classify(document: Mapping[str, Any] | None) -> Control:
    """Say what a parsed frame means for the protocol; data frames are ``DATA``.

    Errors come in two shapes: the server's bare ``{"error": "<text>"}`` and the documented
    API error envelope ``{"success": false, "error": {"code": ..., "message": ...}}`` (which
    the doc-variant simulator uses with ``"type": "error"``).
    """
    if document is None:
        return Control(ControlKind.DATA)
    kind = document.get("type")
    error = document.get("error")
    if kind == "pong":
        return Control(ControlKind.PONG)
    if kind == "auth_response":
        if document.get("success") is True:
            return Control(ControlKind.AUTH_OK)
        parts = []
        if document.get("message"):
            parts.append(_short(document["message"]))
        if document.get("error"):
            parts.append(f"({_short(document['error'])})")
        return Control(ControlKind.AUTH_FAILED, " ".join(parts) or "no reason given")
    if kind == "subscription_confirmed":
        device = document.get("device_id")
        return Control(ControlKind.CONFIRMED, device_id=None if device is None else str(device))
    if kind is None and isinstance(error, str):
        return _classify_server_error(error)
    if (kind == "error" or document.get("success") is False) and isinstance(error, dict):
        return _classify_error_envelope(error)
    return Control(ControlKind.DATA)


def _classify_server_error(text: str) -> Control:
    if text == f"{_SERVER_UNKNOWN_TYPE}auth":
        return Control(ControlKind.NO_AUTH, text)
    if text == "Internal server error":
        return Control(ControlKind.ERROR_TRANSIENT, text)
    if text.startswith(_SERVER_UNKNOWN_TYPE) or text in ("Device not found", "Invalid JSON format"):
        return Control(ControlKind.ERROR_REJECTED, _short(text))
    return Control(ControlKind.ERROR_OTHER, _short(text))


def _classify_error_envelope(error: Mapping[str, Any]) -> Control:
    code = error.get("code")
    message = error.get("message")
    text = _short(f"{code}: {message}" if message else code)
    if code == "RATE_LIMIT_EXCEEDED":
        details = error.get("details")
        limit = details.get("limit") if isinstance(details, dict) else None
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0:
            limit = None
        return Control(ControlKind.ERROR_RATE_LIMIT, text, limit=limit)
    if code in _AUTH_CODES:
        return Control(ControlKind.ERROR_AUTH, text)
    if code in _REJECTED_CODES:
        return Control(ControlKind.ERROR_REJECTED, text)
    if code in _TRANSIENT_CODES:
        return Control(ControlKind.ERROR_TRANSIENT, text)
    return Control(ControlKind.ERROR_OTHER, text)


def _key_of(document: Mapping[str, Any] | None) -> bytes | None:
    if document is None:
        return None
    ident = document.get("device_id")
    if ident is None and isinstance(document.get("alert"), dict):
        ident = document["alert"].get("device_id")
    if isinstance(ident, bool) or not isinstance(ident, str | int) or ident == "":
        return None
    return str(ident).encode()


def frame_key(frame: str | bytes) -> bytes | None:
    """The device id of a frame as UTF-8 bytes (``device_id`` or ``alert.device_id``), or None."""
    return _key_of(_parse(frame))


def build_envelope(stream: str, frame: str | bytes, connection: int) -> RawEnvelope:
    """Wrap a frame unchanged; binary frames become base64 with ``meta.encoding``."""
    meta: dict[str, object] = {"connection": connection}
    if isinstance(frame, bytes):
        payload = base64.b64encode(frame).decode("ascii")
        meta["encoding"] = "base64"
    else:
        payload = frame
    return RawEnvelope(
        source=KIND, stream=stream, received_at_ms=now_ms(), payload=payload, meta=meta
    )


# --------------------------------------------------------------------------- secrets


class TokenMaskFilter(logging.Filter):
    """Mask tokens in log records: known values, ``"token": "..."`` fields, JWT-like text.

    websockets' frame log elides long frames to their start and end, so a token may appear
    cut in two; masking the whole ``"token"`` field value (up to the next quote or the end
    of the line) and anything that looks like a JWT catches those fragments too.
    """

    _FIELD = re.compile(r"""(["']token["']\s*:\s*["'])(?:[^"'\\]|\\.)*""")
    _JWT = re.compile(r"eyJ[A-Za-z0-9_\-]{2,}(?:\.[A-Za-z0-9_\-]*){0,2}")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these values from now on."""
        merged = set(self._secrets) | {s for s in secrets if s}
        self._secrets = tuple(sorted(merged, key=lambda s: (-len(s), s)))

    def redact(self, text: str) -> str:
        """``text`` with every token masked."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if "token" in text:
            text = self._FIELD.sub(rf"\g<1>{MASK}", text)
        if "eyJ" in text:
            text = self._JWT.sub(MASK, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it
            return True
        masked = self.redact(message)
        if masked != message:
            record.msg = masked
            record.args = None
        return True


_MASK = TokenMaskFilter()
logging.getLogger(_WIRE_LOGGER_NAME).addFilter(_MASK)
logger.addFilter(_MASK)


def _remember_secret(token: str) -> None:
    _MASK.add([token])
    install_secret_filter([token])


# --------------------------------------------------------------------------- runtime


class _Pacer:
    """Space outgoing messages at least ``1 / rate`` seconds apart."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next_at = 0.0
        self._lock = asyncio.Lock()

    async def send(self, websocket: ClientConnection, text: str) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            now = loop.time()
            if self._next_at > now:
                await asyncio.sleep(self._next_at - now)
                now = self._next_at
            self._next_at = now + 1.0 / self.rate
            await websocket.send(text)

    def slow_down(self, upstream_limit: float | None) -> None:
        """Halve the rate (or go to half the upstream's stated limit), at least 1/s."""
        target = self.rate / 2
        if upstream_limit is not None:
            target = min(target, upstream_limit / 2)
        self.rate = max(1.0, target)


class _TokenSource:
    """The JWT: from the config, or read again from ``token_file`` on every use."""

    def __init__(self, source: ValtronicsSource) -> None:
        self._name = source.name
        self._static = source.token.get_secret_value() if source.token is not None else None
        self._file = source.token_file
        self._last: str | None = self._static

    def read(self, *, first: bool = False) -> str:
        """The current token.

        Raises:
            SourceConfigError: on the first read, the token file is missing or empty. Later
                read failures are logged and the last good token is used.
        """
        if self._file is None:
            assert self._static is not None  # the config model guarantees one of them
            return self._static
        try:
            token = self._file.read_text(encoding="utf-8").strip()
            if not token:
                raise ValueError("the file is empty")
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if first or self._last is None:
                raise SourceConfigError(
                    f"source {self._name!r}: token_file {str(self._file)!r}: {reason}"
                ) from None
            logger.error(
                "cannot read the token file; using the previous token source=%s path=%s reason=%s",
                self._name,
                self._file,
                reason,
            )
            return self._last
        if token != self._last:
            _remember_secret(token)
        self._last = token
        return token


@dataclass
class _Link:
    """Protocol state of one open connection."""

    number: int
    websocket: ClientConnection
    dialect: str = "unknown"
    token: str | None = None
    expires_at: float | None = None
    pong: asyncio.Event = field(default_factory=asyncio.Event)
    reauth_token: str | None = None
    reauth_done: asyncio.Event = field(default_factory=asyncio.Event)
    expiry_warned: bool = False
    closing: bool = False
    #: While the handshake runs, the transport's reader hands it every frame's control here.
    replies: asyncio.Queue[Control] | None = field(default_factory=asyncio.Queue)


class _NoReplyError(Exception):
    """No expected reply within ``reply_timeout`` (the connection is being closed)."""


class _Closing(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The connection is being closed by us; stop the handshake."""


_T = TypeVar("_T")


class _ValtronicsProducer:
    def __init__(self, source: ValtronicsSource, sink: EnvelopeSink) -> None:
        self.source = source
        self.sink = sink
        self.name = source.name
        self.tokens = _TokenSource(source)
        self.pacer = _Pacer(source.send_rate)
        self.link: _Link | None = None
        self.client: WebSocketClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warned_server_all_devices = False
        self.shown_url = redact_url(source.url)

    # ----------------------------------------------------------------- lifecycle

    def spawn(self, work: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def close(self, link: _Link, code: int, reason: str) -> None:
        """Start closing ``link``; the transport then drains, publishes and reconnects."""
        if link.closing:
            return
        link.closing = True
        self.spawn(link.websocket.close(code, reason))

    # ----------------------------------------------------------------- frames

    async def publish(self, frame: str | bytes, number: int) -> Control:
        document = _parse(frame)
        await self.sink.send(_key_of(document), build_envelope(self.name, frame, number))
        return classify(document)

    async def on_frame(self, frame: str | bytes, number: int) -> None:
        control = await self.publish(frame, number)
        link = self.link
        if link is None or link.number != number:
            return
        if link.replies is not None:
            link.replies.put_nowait(control)  # the handshake is running: it decides
        else:
            self.handle(link, control, handshake=False)

    def handle(self, link: _Link, control: Control, *, handshake: bool) -> None:
        """React to a control frame outside the handshake's expected replies.

        Raises:
            UpstreamAuthError, UpstreamRejectedError: the upstream refused us for good.
        """
        kind = control.kind
        if kind is ControlKind.PONG:
            link.pong.set()
        elif kind is ControlKind.AUTH_OK:
            if link.reauth_token is not None:
                link.token, link.reauth_token = link.reauth_token, None
                link.expires_at = jwt_expiry(link.token)
                link.expiry_warned = False
                link.reauth_done.set()
                logger.info(
                    "re-authenticated source=%s connection=%d expires_at=%s",
                    self.name,
                    link.number,
                    _iso(link.expires_at),
                )
        elif kind in (ControlKind.AUTH_FAILED, ControlKind.ERROR_AUTH):
            if handshake:
                self._fatal_auth(link, f"upstream requires authentication: {control.text}")
            self._auth_failed_mid_session(link, control)
        elif kind is ControlKind.ERROR_REJECTED:
            self._fatal_rejected(link, f"upstream rejected a message we sent: {control.text}")
        elif kind is ControlKind.ERROR_RATE_LIMIT:
            before = self.pacer.rate
            self.pacer.slow_down(control.limit)
            logger.error(
                "upstream rate limit exceeded; a subscription or ping may have been dropped, "
                "reconnecting to subscribe again source=%s connection=%d error=%r "
                "send_rate_before=%g send_rate=%g",
                self.name,
                link.number,
                control.text,
                before,
                self.pacer.rate,
            )
            self.close(link, _CLOSE_GOING_AWAY, "rate limited; resubscribing")
        elif kind is ControlKind.ERROR_TRANSIENT:
            logger.error(
                "upstream error source=%s connection=%d error=%r",
                self.name,
                link.number,
                control.text,
            )
            if handshake:
                self.close(link, _CLOSE_GOING_AWAY, "upstream error during subscription")
        elif kind is ControlKind.ERROR_OTHER:
            logger.error(
                "upstream error source=%s connection=%d error=%r",
                self.name,
                link.number,
                control.text,
            )

    def _auth_failed_mid_session(self, link: _Link, control: Control) -> None:
        """The upstream withdrew or refused authentication on a running session."""
        if link.reauth_token is not None:
            self._fatal_auth(link, f"upstream refused the renewed token: {control.text}")
        fresh = self.tokens.read()
        if link.token is not None and fresh != link.token:
            logger.warning(
                "upstream ended the session's authentication; reconnecting with the new token "
                "source=%s connection=%d reason=%r",
                self.name,
                link.number,
                control.text,
            )
            self.close(link, _CLOSE_GOING_AWAY, "re-authenticating")
            return
        self._fatal_auth(link, f"upstream withdrew the token's authentication: {control.text}")

    def _fatal_auth(self, link: _Link, what: str) -> NoReturn:
        message = (
            f"source {self.name!r}: {what}{self._expiry_hint(link.token)} url={self.shown_url}"
        )
        logger.error("%s; not retrying", message)
        raise UpstreamAuthError(message)

    def _fatal_rejected(self, link: _Link, what: str) -> NoReturn:
        message = f"source {self.name!r}: {what} url={self.shown_url}"
        logger.error("%s; not retrying", message)
        raise UpstreamRejectedError(message)

    @staticmethod
    def _expiry_hint(token: str | None) -> str:
        expires_at = jwt_expiry(token) if token else None
        if expires_at is None or expires_at > time.time():
            return ""
        return f" (the token expired at {_iso(expires_at)}; provide a new one)"

    # ----------------------------------------------------------------- handshake

    async def on_open(self, websocket: ClientConnection) -> None:
        assert self.client is not None
        link = _Link(number=self.client.stats.connections_total, websocket=websocket)
        self.link = link
        try:
            await self._authenticate(link)
            await self._subscribe(link)
        except _Closing:
            self._end_handshake(link)
            return
        except _NoReplyError as exc:
            self._end_handshake(link)
            logger.warning(
                "no reply from upstream; reconnecting source=%s connection=%d waiting_for=%s "
                "reply_timeout_s=%g",
                self.name,
                link.number,
                exc,
                self.source.reply_timeout,
            )
            self.close(link, _CLOSE_GOING_AWAY, f"no {exc} in time")
            return
        self._end_handshake(link)
        self.spawn(self._keepalive(link))

    def _end_handshake(self, link: _Link) -> None:
        """From now on frames are handled as they come; act on those nobody waited for."""
        replies, link.replies = link.replies, None
        while replies is not None and not replies.empty() and not link.closing:
            self.handle(link, replies.get_nowait(), handshake=False)

    async def _send(self, link: _Link, message: Mapping[str, Any]) -> None:
        text = _dumps(message).decode()
        if len(text.encode()) > MAX_MESSAGE_BYTES:
            logger.warning(
                "message above the documented size limit source=%s type=%s size_bytes=%d "
                "limit_bytes=%d",
                self.name,
                message.get("type"),
                len(text.encode()),
                MAX_MESSAGE_BYTES,
            )
        await self.pacer.send(link.websocket, text)
        logger.debug(
            "sent source=%s connection=%d type=%s", self.name, link.number, message.get("type")
        )

    async def _await_reply(
        self, link: _Link, wanted: Callable[[Control], bool], what: str
    ) -> Control:
        """Wait for a frame (read and published by the transport) that satisfies ``wanted``.

        Raises:
            _NoReplyError: none within ``reply_timeout``.
            _Closing: another frame made us close the connection.
        """
        replies = link.replies
        assert replies is not None  # only called during the handshake
        try:
            async with asyncio.timeout(self.source.reply_timeout):
                while True:
                    control = await replies.get()
                    if wanted(control):
                        return control
                    self.handle(link, control, handshake=True)
                    if link.closing:
                        raise _Closing
        except TimeoutError:
            raise _NoReplyError(what) from None

    async def _authenticate(self, link: _Link) -> None:
        protocol = self.source.protocol
        if protocol == "server":
            link.dialect = "server"
            return
        token = self.tokens.read()
        link.token = token
        link.expires_at = jwt_expiry(token)
        await self._send(link, auth_message(token))
        reply = await self._await_reply(
            link,
            lambda c: (
                c.kind
                in (
                    ControlKind.AUTH_OK,
                    ControlKind.AUTH_FAILED,
                    ControlKind.NO_AUTH,
                    ControlKind.ERROR_AUTH,
                )
            ),
            "auth_response",
        )
        if reply.kind is ControlKind.AUTH_OK:
            link.dialect = "doc"
            logger.info(
                "authenticated source=%s connection=%d protocol=doc expires_at=%s",
                self.name,
                link.number,
                _iso(link.expires_at),
            )
        elif reply.kind is ControlKind.NO_AUTH:
            if protocol == "doc":
                self._fatal_rejected(
                    link,
                    "upstream does not know the documented auth message "
                    f"({reply.text!r}); it speaks the server variant: set protocol: server "
                    "or auto",
                )
            link.dialect = "server"
            logger.info(
                "upstream has no authentication (server variant); continuing source=%s "
                "connection=%d protocol=server",
                self.name,
                link.number,
            )
        elif reply.kind is ControlKind.AUTH_FAILED:
            self._fatal_auth(link, f"upstream refused the token: {reply.text}")
        else:
            self._fatal_auth(link, f"upstream refused the auth message: {reply.text}")

    async def _subscribe(self, link: _Link) -> None:
        subscriptions = self.source.subscriptions
        if link.dialect == "doc":
            for subscription in subscriptions:
                await self._send(link, subscribe_message(subscription))
            logger.info(
                "subscribed source=%s connection=%d channels=%s",
                self.name,
                link.number,
                ",".join(_describe(s) for s in subscriptions),
            )
            return
        if not self._warned_server_all_devices and any(
            s.device_id is None and s.channel in ("telemetry", "device_telemetry")
            for s in subscriptions
        ):
            self._warned_server_all_devices = True
            logger.warning(
                "the server variant cannot subscribe to telemetry of every device; give "
                "device_id in subscriptions to receive telemetry source=%s",
                self.name,
            )
        messages = server_subscribe_messages(subscriptions)
        for message in messages:
            await self._send(link, message)
        pending = {m["device_id"] for m in messages}
        while pending:
            reply = await self._await_reply(
                link,
                lambda c: c.kind in (ControlKind.CONFIRMED, ControlKind.ERROR_REJECTED),
                "subscription_confirmed",
            )
            if reply.kind is ControlKind.ERROR_REJECTED:
                self._fatal_rejected(
                    link,
                    f"upstream rejected subscribe_device for device(s) {sorted(pending)}: "
                    f"{reply.text}",
                )
            pending.discard(reply.device_id)
        logger.info(
            "subscribed source=%s connection=%d protocol=server devices=%s",
            self.name,
            link.number,
            ",".join(m["device_id"] for m in messages) or "none (broadcasts only)",
        )

    # ----------------------------------------------------------------- keepalive

    async def _keepalive(self, link: _Link) -> None:
        """Ping every ``keepalive_interval``; close the link when a pong does not come."""
        source = self.source
        try:
            while not link.closing:
                wait = source.keepalive_interval
                renew_at = self._renew_at(link)
                if renew_at is not None:
                    wait = max(0.0, min(wait, renew_at - time.time()))
                if await _within(link.websocket.wait_closed(), wait):
                    return
                if renew_at is not None and time.time() >= renew_at:
                    if not await self._renew(link):
                        return
                    continue
                link.pong.clear()
                await self._send(link, ping_message(time.time()))
                if not await _within(link.pong.wait(), source.pong_timeout):
                    if link.closing or link.websocket.state is State.CLOSED:
                        return
                    logger.warning(
                        "no pong; closing the connection as dead source=%s connection=%d "
                        "pong_timeout_s=%g",
                        self.name,
                        link.number,
                        source.pong_timeout,
                    )
                    self.close(link, _CLOSE_INTERNAL, f"no pong within {source.pong_timeout:g}s")
                    return
        except ConnectionClosed:
            return

    def _renew_at(self, link: _Link) -> float | None:
        if link.dialect != "doc" or link.expires_at is None or link.expiry_warned:
            return None
        return link.expires_at - self.source.reauth_before

    async def _renew(self, link: _Link) -> bool:
        """Authenticate again on the live connection; False when the link is closing."""
        token = self.tokens.read()
        if token == link.token:
            link.expiry_warned = True
            logger.warning(
                "token expires soon and no newer token is available; the upstream may end "
                "the session then source=%s connection=%d expires_at=%s hint=%s",
                self.name,
                link.number,
                _iso(link.expires_at),
                "write a fresh token to token_file"
                if self.source.token_file
                else "use token_file to rotate tokens",
            )
            return True
        link.reauth_token = token
        link.reauth_done.clear()
        await self._send(link, auth_message(token))
        if await _within(link.reauth_done.wait(), self.source.reply_timeout):
            return True
        if not link.closing:
            logger.warning(
                "no auth_response to re-authentication; reconnecting source=%s connection=%d",
                self.name,
                link.number,
            )
            self.close(link, _CLOSE_GOING_AWAY, "no auth_response in time")
        return False


async def _within(awaitable: Awaitable[Any], seconds: float) -> bool:
    """Await ``awaitable`` for at most ``seconds``; whether it finished in time."""
    try:
        async with asyncio.timeout(seconds):
            await awaitable
    except TimeoutError:
        return False
    return True


def _iso(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "none"
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(subscription: ValtronicsSubscription) -> str:
    if subscription.device_id is None:
        return subscription.channel
    return f"{subscription.channel}/{subscription.device_id}"


async def run_valtronics(source: ValtronicsSource, sink: EnvelopeSink, stop: asyncio.Event) -> None:
    """Stream one Valtronics source into ``sink`` until ``stop`` is set.

    Raises:
        UpstreamAuthError: the token was refused (or the handshake got HTTP 401).
        UpstreamRejectedError: a subscription or message was refused, the server does not
            speak the configured protocol, or the handshake got another permanent 4xx (FastAPI
            answers 403 for an unknown WebSocket path).
        SourceConfigError: the URL is invalid or the token file cannot be read.
    """
    producer = _ValtronicsProducer(source, sink)
    secrets: list[str] = []
    if source.protocol != "server":
        token = producer.tokens.read(first=True)
        _remember_secret(token)
        secrets.append(token)
        expires_at = jwt_expiry(token)
        if expires_at is not None:
            logger.info(
                "token expiry source=%s expires_at=%s expires_in_s=%.0f",
                source.name,
                _iso(expires_at),
                expires_at - time.time(),
            )

    def status_policy(status: int) -> StatusAction:
        # Auth is in-band (the auth message): a 403 at the handshake is FastAPI's answer to an
        # unknown WebSocket path, not a refused token.
        if status == 401:
            return StatusAction.AUTH
        if 400 <= status < 500 and status not in (408, 429):
            return StatusAction.REJECTED
        return StatusAction.RETRY

    client = WebSocketClient(
        source.url,
        producer.on_frame,
        name=source.name,
        options=websocket_options(source),
        on_open=producer.on_open,
        secrets=secrets,
        status_policy=status_policy,
        dead_letters=DeadLetterRoute(sink, KIND, source.name),
    )
    producer.client = client
    try:
        await client.run(stop)
    except UpstreamRejectedError as exc:
        if "HTTP 403" in str(exc):
            raise UpstreamRejectedError(
                f"{exc}; Valtronics (FastAPI) answers 403 to a WebSocket path it does not "
                "serve: check the url (/ws, /ws/<channel> or /ws/<device_id>)"
            ) from exc
        raise
    finally:
        await producer.cancel_tasks()

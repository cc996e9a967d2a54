"""A reconnecting STOMP 1.2 over WebSocket client built on stomp.py, bridged into asyncio.

stomp.py is thread based: every connection has a receiver ("io") thread that reads the socket,
parses frames and calls the listeners, plus a heart-beat thread when heart-beats are on. This
module runs one stomp.py connection at a time and turns it into an asyncio stream of
:class:`StompMessage` handed to an async callback.

Thread -> asyncio bridge
    The listener runs in stomp.py's receiver thread and hands each event (CONNECTED, MESSAGE,
    RECEIPT, ERROR, disconnected) to the event loop with ``loop.call_soon_threadsafe`` into an
    ``asyncio.Queue``, so events are consumed in exactly the order the server sent them: every
    MESSAGE the server sent before an ERROR (say, "token expired") is published before the
    ERROR is acted on.

Backpressure
    At most ``max_pending`` MESSAGE frames may be handed over and not yet accepted by the
    callback (the sink). When that many are pending, the receiver thread blocks before handing
    over the next one; it then stops reading the socket, TCP flow control pushes back to the
    server, and nothing is dropped. stomp.py checks incoming heart-beats from the frames the
    receiver thread has processed, so a sink stalled for longer than the negotiated heart-beat
    period (times ``heart_beat_receive_scale``) ends in a heart-beat timeout and a reconnect;
    the frames already handed over are still published first.

Connection lifecycle and failure policy
    * WebSocket handshake (bounded by ``open_timeout``). HTTP 401/403 ->
      :class:`~producers.errors.UpstreamAuthError`; other permanent 4xx ->
      :class:`~producers.errors.UpstreamRejectedError`; a TLS certificate that does not verify
      (wrong hostname, unknown CA) -> :class:`~producers.errors.UpstreamRejectedError`: retrying
      cannot fix either. Refused or dropped connections, timeouts, 5xx -> retried.
    * ``CONNECT`` with ``login``/``passcode`` from the credentials provider, which is called
      again before every attempt so a refreshed token is picked up. A server that closes or
      drops the socket right after the WebSocket handshake makes the ``CONNECT`` (or a
      ``SUBSCRIBE``) send fail: what was received is published and the connection is retried
      like any other drop. An ``ERROR`` frame instead
      of ``CONNECTED`` -> :class:`~producers.errors.UpstreamAuthError` (STOMP servers answer a
      bad login, passcode or virtual host this way). No answer within ``connect_timeout`` ->
      retried.
    * ``SUBSCRIBE`` to every destination with a ``receipt`` header. An ``ERROR`` while a
      subscription receipt is outstanding -> :class:`~producers.errors.UpstreamRejectedError`
      (unknown destination, access refused). A server that never sends receipts is tolerated:
      after ``subscribe_timeout`` the client logs it and streams on.
    * Streaming. An ``ERROR`` frame later (e.g. an expired token), a close, a drop, a heart-beat
      timeout or ``idle_timeout`` without any frame (heart-beats count) end the connection; it
      is retried with :class:`~producers.backoff.Backoff`, reset after a good connection (one
      that delivered a message or stayed up ``stable_after`` seconds).
    * ``stop``: ``DISCONNECT`` with a receipt, wait up to ``close_timeout`` for it, close the
      socket, join stomp.py's threads, publish what was already received, return. While a
      handshake is in progress, stopping waits for it (at most ``open_timeout``).

Oversized messages
    A MESSAGE body larger than ``max_frame_bytes`` is not handed to the callback: it is
    logged, counted in ``oversized_total`` and, given a ``dead_letters`` route, dead-lettered
    with its first :data:`~producers.sink.EXCERPT_BYTES` bytes (credentials masked).

TLS
    ``wss://`` certificates and hostnames are verified (``ca_file`` or the system store).
    ``StompEndpoint(tls_verify=False)`` (``tls_verify: false`` plus
    ``tls_insecure_acknowledged: true`` in the sources file) turns that off; every connection
    attempt then logs a WARNING naming the source.

Secrets
    The passcode travels only in the ``CONNECT`` frame. stomp.py logs outgoing frames at DEBUG
    and its own mask (``passcode:\\s+...``) does not match its own output, and
    websocket-client's trace prints raw frames; both loggers (``stomp.py``, ``websocket``) and
    this module's logger get a :class:`~producers.redact.SecretFilter` that masks every
    passcode this process has used. Text from the server (ERROR headers) is masked the same
    way before it is logged or put in an exception.

Limits of stomp.py worked around here (see docs/upstreams.md section 5): it cannot set the
HTTP ``Host`` header, the TLS server name or WebSocket subprotocols, so :class:`_Transport`
replaces its connection attempt (one attempt; the retry loop is ours) and its receive call
(to tell binary from text WebSocket frames and to report why a connection ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import websocket
from stomp.adapter.ws import WSTransport
from stomp.connect import BaseConnection, StompConnection12
from stomp.exception import InterruptedException, NotConnectedException, StompException
from stomp.listener import ConnectionListener
from stomp.protocol import Protocol12

from producers.backoff import Backoff, sleep_unless_stopped
from producers.envelope import now_ms
from producers.errors import UpstreamAuthError, UpstreamRejectedError
from producers.redact import SecretFilter
from producers.sink import DeadLetterRoute, frame_excerpt
from producers.transports.websocket import StatusAction, default_status_policy

__all__ = [
    "DEFAULT_SUBPROTOCOLS",
    "CredentialsProvider",
    "MessageHandler",
    "StompClient",
    "StompCredentials",
    "StompEndpoint",
    "StompMessage",
    "StompOptions",
    "StompStats",
]

logger = logging.getLogger(__name__)

#: ``passcode:<value>`` in a logged frame, also inside a ``repr`` of bytes (``\\n`` escapes).
_PASSCODE_HEADER = re.compile(r"(passcode:[ \t]*)(?:(?!\\n)[^'\"\s])+")


class _StompSecretFilter(SecretFilter):
    """Masks known passcodes and any ``passcode:`` header value, however it is escaped."""

    def redact(self, text: str) -> str:
        if "passcode:" in text:
            text = _PASSCODE_HEADER.sub(r"\g<1>***", text)
        return super().redact(text)


_SECRET_FILTER = _StompSecretFilter(redact_credentials=True)
for _name in (__name__, "stomp.py", "websocket"):
    logging.getLogger(_name).addFilter(_SECRET_FILTER)

#: What sending a frame raises once the socket is gone (stomp.py's own check, websocket-client,
#: the OS).
_SEND_FAILURES = (StompException, websocket.WebSocketException, OSError)

#: WebSocket subprotocols every known Hemis client and stompjs offer, best first.
DEFAULT_SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")


@dataclass(frozen=True, kw_only=True)
class StompEndpoint:
    """Where and how to open the WebSocket.

    Attributes:
        host: where the TCP connection goes (a hostname or an IP address).
        port: TCP port.
        path: HTTP request path of the WebSocket.
        tls: ``wss://`` (certificate and hostname always verified) instead of ``ws://``.
        host_header: HTTP ``Host`` header; None sends ``host[:port]`` as usual. Hemis local mode
            connects to ``local_ip`` and sends the cloud hostname here.
        tls_hostname: the name the server certificate must match (and the SNI); None uses
            ``host``. Local mode sets the cloud hostname while ``host`` is an IP address.
        ca_file: PEM bundle of CAs to trust instead of the system store (a local Hemis or a
            test certificate); None uses the system store.
        subprotocols: offered in ``Sec-WebSocket-Protocol``; the server's choice is not
            checked (some servers do not echo one). Empty offers none.
        vhost: the STOMP ``host`` header of CONNECT; None sends ``tls_hostname`` or ``host``.
        tls_verify: verify the certificate and its name; False is insecure and logged as a
            WARNING at every connection attempt.
    """

    host: str
    port: int
    path: str = "/"
    tls: bool = False
    host_header: str | None = None
    tls_hostname: str | None = None
    ca_file: str | None = None
    subprotocols: tuple[str, ...] = DEFAULT_SUBPROTOCOLS
    vhost: str | None = None
    tls_verify: bool = True

    @property
    def url(self) -> str:
        """The URL opened (no credentials are ever part of it)."""
        scheme = "wss" if self.tls else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{self.path}"

    @property
    def shown(self) -> str:
        """The URL for logs, with the Host header / TLS name when they differ from the host."""
        name = self.host_header or self.tls_hostname
        return f"{self.url} (as {name})" if name and name != self.host else self.url

    @property
    def stomp_host(self) -> str:
        """Value of the CONNECT frame's ``host`` header."""
        return self.vhost or self.tls_hostname or self.host


@dataclass(frozen=True)
class StompCredentials:
    """``login`` and ``passcode`` of one CONNECT. ``repr`` never shows the passcode."""

    login: str
    passcode: str = field(repr=False)


#: Called (in a worker thread) before every connection attempt; may re-read a secret file.
CredentialsProvider = Callable[[], StompCredentials]


@dataclass(frozen=True)
class StompMessage:
    """One MESSAGE frame as received.

    Attributes:
        headers: the frame's headers (``destination``, ``subscription``, ``message-id``...).
        body: the body bytes exactly as received (up to the NUL, or ``content-length`` bytes).
        binary: the WebSocket frame that carried it was binary (opcode 2), not text.
    """

    headers: Mapping[str, str]
    body: bytes
    binary: bool


#: Awaited for each message with the 1-based connection number; backpressure flows back.
MessageHandler = Callable[[StompMessage, int], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class StompOptions:
    """Connection tuning; durations in float seconds unless named ``*_ms``.

    Attributes:
        heartbeat_send_ms, heartbeat_receive_ms: the CONNECT ``heart-beat`` header (``cx,cy``);
            0 disables that direction. The effective periods are negotiated with the server.
        heart_beat_receive_scale: tolerance on incoming heart-beats (stomp.py's factor).
        open_timeout: TCP connect + TLS + WebSocket handshake.
        connect_timeout: CONNECT -> CONNECTED (or ERROR).
        subscribe_timeout: how long to wait for the RECEIPTs of the SUBSCRIBE frames.
        close_timeout: DISCONNECT -> RECEIPT, and joining stomp.py's threads.
        idle_timeout: reconnect when nothing (not even a heart-beat) arrived for this long;
            None waits forever.
        stable_after: a connection up this long counts as good even without messages.
        max_frame_bytes: larger bodies are logged, counted, dead-lettered and not handed
            over.
        max_pending: messages handed over by the receiver thread and not yet accepted.
        backoff_initial, backoff_factor, backoff_max: reconnect delays (full jitter).
    """

    heartbeat_send_ms: int = 20_000
    heartbeat_receive_ms: int = 20_000
    heart_beat_receive_scale: float = 1.5
    open_timeout: float = 10.0
    connect_timeout: float = 10.0
    subscribe_timeout: float = 10.0
    close_timeout: float = 5.0
    idle_timeout: float | None = None
    stable_after: float = 10.0
    max_frame_bytes: int = 1 << 20
    max_pending: int = 1000
    backoff_initial: float = 0.5
    backoff_factor: float = 2.0
    backoff_max: float = 30.0


@dataclass
class StompStats:
    """Counters of one client (monotonic).

    ``handed_over_total`` counts MESSAGE frames the receiver thread handed to the event loop;
    ``messages_total`` those handed to the callback. While the callback is blocked the first
    exceeds the second by at most ``max_pending``.
    """

    attempts_total: int = 0
    connections_total: int = 0
    handed_over_total: int = 0
    messages_total: int = 0
    binary_total: int = 0
    oversized_total: int = 0
    deadlettered_total: int = 0
    errors_total: int = 0
    reconnects_total: int = 0


# ---------------------------------------------------------------------------- bridge events


@dataclass(frozen=True)
class _Connected:
    headers: Mapping[str, str]


@dataclass(frozen=True)
class _Receipt:
    receipt_id: str


@dataclass(frozen=True)
class _Error:
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class _Message:
    message: StompMessage
    slot: bool  # holds one of the ``max_pending`` slots, to release once published


@dataclass(frozen=True)
class _Disconnected:
    reason: str


@dataclass(frozen=True)
class _Stop:
    pass


_Event = _Connected | _Receipt | _Error | _Message | _Disconnected | _Stop


@dataclass(frozen=True)
class _Ended:
    """How one attempt ended when it is worth retrying."""

    connected: bool
    good: bool
    reason: str


# ---------------------------------------------------------------------------- stomp.py side


class _Transport(WSTransport):  # type: ignore[misc]  # stomp.py ships no type information
    """stomp.py's WebSocket transport with Host header, TLS name, subprotocols and opcodes.

    ``attempt_connection`` makes exactly one attempt (the asyncio side owns retries) and
    raises what websocket-client raised. ``receive`` records whether the last WebSocket frame
    was binary and, when the connection ends, why.
    """

    def __init__(self, endpoint: StompEndpoint, options: StompOptions) -> None:
        header = []
        if endpoint.subprotocols:
            header.append(f"Sec-WebSocket-Protocol: {', '.join(endpoint.subprotocols)}")
        super().__init__(
            host_and_ports=[(endpoint.host, endpoint.port)],
            prefer_localhost=False,
            try_loopback_connect=False,
            reconnect_attempts_max=1,
            timeout=options.open_timeout,
            vhost=endpoint.stomp_host,
            auto_decode=False,
            is_eol_fc=StompConnection12.is_eol,
            ws_path=endpoint.path,
            header=header,
        )
        self.socket: websocket.WebSocket | None = None
        self._endpoint = endpoint
        self._open_timeout = options.open_timeout
        self._idle_timeout = options.idle_timeout
        self.last_binary = False
        self.end_reason: str | None = None
        self.closing = False

    def attempt_connection(self) -> None:
        endpoint = self._endpoint
        self.connection_error = False
        self.current_host_and_port = (endpoint.host, endpoint.port)
        sslopt: dict[str, Any] | None = None
        if endpoint.tls:
            context = ssl.create_default_context(cafile=endpoint.ca_file)
            if not endpoint.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            sslopt = {"context": context, "server_hostname": endpoint.tls_hostname or endpoint.host}
        sock = websocket.create_connection(
            endpoint.url,
            timeout=self._open_timeout,
            header=self.header,
            host=endpoint.host_header,
            suppress_origin=True,
            sslopt=sslopt,
        )
        sock.settimeout(self._idle_timeout)
        self.socket = sock

    def receive(self) -> bytes:
        sock = self.socket
        if sock is None:
            return b""
        try:
            opcode, data = sock.recv_data()
        except websocket.WebSocketTimeoutException:
            self._ended(f"no frame for {self._idle_timeout:g}s (idle_timeout)")
            return b""
        except websocket.WebSocketConnectionClosedException:
            self._ended("connection dropped without a close frame")
            return b""
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                raise InterruptedException() from exc
            self._ended(f"{type(exc).__name__}: {exc}")
            return b""
        except websocket.WebSocketException as exc:
            self._ended(f"{type(exc).__name__}: {exc}")
            return b""
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self._ended(_close_reason(data))
            return b""
        self.last_binary = opcode == websocket.ABNF.OPCODE_BINARY
        return bytes(data)

    def send(self, encoded_frame: bytes) -> None:
        """Send one frame as a text WebSocket frame; a failure is raised, not logged.

        stomp.py's version logs every failed send at ERROR with a traceback before raising. A
        send fails when the server has just closed or dropped the socket, which the caller
        handles (the connection is retried) and reports once.
        """
        sock = self.socket
        if sock is None:
            raise NotConnectedException()
        with self._WSTransport__socket_semaphore:
            sock.send(encoded_frame, websocket.ABNF.OPCODE_TEXT)

    def disconnect_socket(self) -> None:
        """Close politely (close frame) and wake the receiver thread blocked in ``recv``.

        Closing a socket does not interrupt a ``recv`` blocked on it in another thread; shutting
        it down does. stomp.py calls this from its heart-beat thread on a heart-beat timeout
        and from the receiver thread on the DISCONNECT receipt; we call it to close.
        """
        if threading.current_thread().name.startswith("StompHeartbeat"):
            self._ended("no heart-beat from upstream in time (heart-beat timeout)")
        sock = self.socket
        if sock is not None:
            with contextlib.suppress(Exception):
                if sock.connected:
                    sock.send_close()
            raw = sock.sock
            if raw is not None:
                with contextlib.suppress(OSError):
                    raw.shutdown(socket.SHUT_RDWR)
        super().disconnect_socket()

    def cleanup(self) -> None:
        """Release the socket (stomp.py's version leaks it once a close frame was exchanged).

        websocket-client's ``close()`` returns early when the close handshake already happened,
        leaving the OS socket open; ``shutdown()`` always closes it.
        """
        sock: Any = self.socket
        self.socket = None
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.shutdown()

    def _ended(self, reason: str) -> None:
        if self.end_reason is None and not self.closing:
            self.end_reason = reason


class _Connection(StompConnection12):  # type: ignore[misc]  # stomp.py ships no types
    """A STOMP 1.2 connection over :class:`_Transport` (stomp.py's WSStompConnection shape)."""

    def __init__(self, transport: _Transport, options: StompOptions) -> None:
        BaseConnection.__init__(self, transport)
        Protocol12.__init__(
            self,
            transport,
            (options.heartbeat_send_ms, options.heartbeat_receive_ms),
            True,
            heart_beat_receive_scale=options.heart_beat_receive_scale,
        )


class _Bridge(ConnectionListener):  # type: ignore[misc]  # stomp.py ships no types
    """Runs in stomp.py's threads; posts events to the event loop in arrival order."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[_Event],
        slots: threading.Semaphore,
        transport: _Transport,
        stats: StompStats,
    ) -> None:
        self._loop = loop
        self._queue = queue
        self._slots = slots
        self._transport = transport
        self._stats = stats
        self.closing = threading.Event()

    def _post(self, event: _Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def on_connected(self, frame: Any) -> None:
        self._post(_Connected(dict(frame.headers)))

    def on_receipt(self, frame: Any) -> None:
        self._post(_Receipt(str(frame.headers.get("receipt-id", ""))))

    def on_error(self, frame: Any) -> None:
        self._post(_Error(dict(frame.headers), _as_bytes(frame.body)))

    def on_message(self, frame: Any) -> None:
        binary = self._transport.last_binary
        slot = False
        while not self.closing.is_set():
            if self._slots.acquire(timeout=0.2):
                slot = True
                break
        message = StompMessage(dict(frame.headers), _as_bytes(frame.body), binary)
        self._stats.handed_over_total += 1
        self._post(_Message(message, slot))

    def on_disconnected(self) -> None:
        self._post(_Disconnected(self._transport.end_reason or "connection closed"))


# ---------------------------------------------------------------------------- asyncio side


class StompClient:
    """Keep one STOMP-over-WebSocket upstream connected and feed its messages to a callback.

    Args:
        endpoint: where to connect.
        credentials: returns login and passcode; called before every attempt.
        destinations: subscribed in order, with ids ``sub-0``, ``sub-1``..., ``ack:auto``.
        on_message: awaited for each MESSAGE; may raise to stop the client.
        name: the source name, for logs.
        options: timeouts, heart-beats, limits and backoff.
        backoff: override the backoff built from ``options`` (tests).
        dead_letters: where oversized messages are dead-lettered; None only logs and counts
            them.
    """

    def __init__(
        self,
        endpoint: StompEndpoint,
        credentials: CredentialsProvider,
        destinations: Sequence[str],
        on_message: MessageHandler,
        *,
        name: str,
        options: StompOptions | None = None,
        backoff: Backoff | None = None,
        dead_letters: DeadLetterRoute | None = None,
    ) -> None:
        if not destinations:
            raise ValueError("at least one destination is required")
        self.endpoint = endpoint
        self._credentials = credentials
        self.destinations = tuple(destinations)
        self._on_message = on_message
        self.name = name
        self.options = options or StompOptions()
        self._backoff = backoff or Backoff(
            self.options.backoff_initial, self.options.backoff_factor, self.options.backoff_max
        )
        self.stats = StompStats()
        self.dead_letters = dead_letters
        self._redact = _SECRET_FILTER.redact

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, subscribe and reconnect until ``stop`` is set.

        Raises:
            UpstreamAuthError: the handshake got 401/403, or CONNECT was answered with ERROR.
            UpstreamRejectedError: another permanent 4xx, a TLS certificate that does not
                verify, or a SUBSCRIBE answered with ERROR.
            Exception: whatever ``on_message`` or the credentials provider raised.
        """
        failures = 0
        while not stop.is_set():
            failures += 1
            ended = await self._attempt(failures, stop)
            if ended is None or stop.is_set():
                break
            if ended.good:
                self._backoff.reset()
                failures = 0
            delay = self._backoff.next_delay()
            self.stats.reconnects_total += 1
            if ended.connected:
                logger.warning(
                    "connection lost; reconnecting source=%s url=%s connection=%d "
                    "delay_s=%.2f reason=%s",
                    self.name,
                    self.endpoint.shown,
                    self.stats.connections_total,
                    delay,
                    ended.reason,
                )
            else:
                logger.warning(
                    "connection failed; retrying source=%s url=%s attempt=%d delay_s=%.2f "
                    "reason=%s",
                    self.name,
                    self.endpoint.shown,
                    failures,
                    delay,
                    ended.reason,
                )
            if await sleep_unless_stopped(stop, delay):
                break
        logger.info("stopped source=%s url=%s", self.name, self.endpoint.shown)

    # ------------------------------------------------------------------ one connection

    async def _attempt(self, attempt: int, stop: asyncio.Event) -> _Ended | None:
        """One connection from handshake to close; None when ``stop`` ended it."""
        credentials = await asyncio.to_thread(self._credentials)
        _SECRET_FILTER.add([credentials.passcode])
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Event] = asyncio.Queue()
        slots = threading.Semaphore(self.options.max_pending)
        transport = _Transport(self.endpoint, self.options)
        connection = _Connection(transport, self.options)
        bridge = _Bridge(loop, queue, slots, transport, self.stats)
        connection.set_listener("bridge", bridge)
        self.stats.attempts_total += 1
        if self.endpoint.tls and not self.endpoint.tls_verify:
            logger.warning(
                "TLS certificate verification is OFF; the upstream is not authenticated "
                "source=%s url=%s (tls_verify: false)",
                self.name,
                self.endpoint.shown,
            )
        try:
            await asyncio.to_thread(transport.start)
        except Exception as exc:
            return self._handshake_failed(exc)

        self.stats.connections_total += 1
        number = self.stats.connections_total
        session = _Session(self, connection, transport, bridge, queue, slots, number, loop)
        stop_watch = asyncio.create_task(stop.wait())
        stop_watch.add_done_callback(
            lambda task: None if task.cancelled() else queue.put_nowait(_Stop())
        )
        logger.info(
            "connected source=%s url=%s connection=%d attempt=%d",
            self.name,
            self.endpoint.shown,
            number,
            attempt,
        )
        try:
            result = await session.run(credentials)
        except BaseException:
            await session.close(drain=False)
            raise
        finally:
            stop_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop_watch
        await session.close(drain=True)
        return result

    def _handshake_failed(self, exc: Exception) -> _Ended:
        shown = self.endpoint.shown
        if isinstance(exc, websocket.WebSocketBadStatusException):
            status = exc.status_code
            action = default_status_policy(status)
            if action is StatusAction.AUTH:
                logger.error(
                    "upstream refused the credentials; not retrying source=%s url=%s status=%d",
                    self.name,
                    shown,
                    status,
                )
                raise UpstreamAuthError(
                    f"source {self.name!r}: upstream refused the credentials: HTTP {status} "
                    f"url={shown}"
                ) from None
            if action is StatusAction.REJECTED:
                logger.error(
                    "upstream rejected the connection; not retrying source=%s url=%s status=%d",
                    self.name,
                    shown,
                    status,
                )
                raise UpstreamRejectedError(
                    f"source {self.name!r}: upstream rejected the connection: HTTP {status} "
                    f"url={shown}"
                ) from None
            return _Ended(connected=False, good=False, reason=f"HTTP {status}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            name = self.endpoint.tls_hostname or self.endpoint.host
            detail = exc.verify_message or str(exc)
            logger.error(
                "upstream TLS certificate did not verify; not retrying source=%s url=%s "
                "tls_hostname=%s reason=%s",
                self.name,
                shown,
                name,
                detail,
            )
            raise UpstreamRejectedError(
                f"source {self.name!r}: TLS certificate of the upstream does not verify for "
                f"{name!r}: {detail} url={shown}"
            ) from None
        if isinstance(exc, OSError | TimeoutError | websocket.WebSocketException):
            reason = self._redact(f"{type(exc).__name__}: {exc}".rstrip(": "))
            return _Ended(connected=False, good=False, reason=reason)
        raise exc


class _Session:
    """The event loop side of one established WebSocket: CONNECT, SUBSCRIBE, stream, close."""

    def __init__(
        self,
        client: StompClient,
        connection: _Connection,
        transport: _Transport,
        bridge: _Bridge,
        queue: asyncio.Queue[_Event],
        slots: threading.Semaphore,
        number: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.client = client
        self.connection = connection
        self.transport = transport
        self.bridge = bridge
        self.queue = queue
        self.slots = slots
        self.number = number
        self.loop = loop
        self.opened_at = loop.time()
        self.messages = 0
        self.closed = False

    # ------------------------------------------------------------------ phases

    async def run(self, credentials: StompCredentials) -> _Ended | None:
        client = self.client
        options = client.options
        try:
            await asyncio.to_thread(
                Protocol12.connect,
                self.connection,
                username=credentials.login,
                passcode=credentials.passcode,
                with_connect_command=True,
            )
        except _SEND_FAILURES as exc:
            # The server closed (or dropped) the socket right after the WebSocket handshake.
            return await self._send_failed("CONNECT", exc)
        deadline = self.loop.time() + options.connect_timeout
        while True:
            event = await self._next(deadline)
            if event is None:
                return self._ended(f"no CONNECTED within {options.connect_timeout:g}s")
            if isinstance(event, _Connected):
                break
            if isinstance(event, _Error):
                raise self._auth_error(event)
            if isinstance(event, _Disconnected):
                return self._ended(f"{event.reason} before CONNECTED")
            if isinstance(event, _Stop):
                await self._stop()
                return None
            if isinstance(event, _Message):
                await self._publish(event)  # not expected before CONNECTED; never dropped

        logger.info(
            "stomp session open source=%s connection=%d version=%s heart_beat=%s server=%s",
            client.name,
            self.number,
            event.headers.get("version", "?"),
            event.headers.get("heart-beat", "0,0"),
            self._redact(event.headers.get("server", "?")),
        )
        try:
            receipts = await asyncio.to_thread(self._subscribe)
        except _SEND_FAILURES as exc:
            return await self._send_failed("SUBSCRIBE", exc)
        pending = dict(receipts)
        deadline = self.loop.time() + options.subscribe_timeout
        while True:
            event = await self._next(deadline if pending else None)
            if event is None:
                logger.warning(
                    "no RECEIPT for SUBSCRIBE; assuming the subscriptions stand source=%s "
                    "connection=%d destinations=%s",
                    client.name,
                    self.number,
                    ",".join(pending.values()),
                )
                pending.clear()
                continue
            if isinstance(event, _Message):
                await self._publish(event)
            elif isinstance(event, _Receipt):
                if pending.pop(event.receipt_id, None) is not None and not pending:
                    logger.info(
                        "subscribed source=%s connection=%d destinations=%s",
                        client.name,
                        self.number,
                        ",".join(client.destinations),
                    )
            elif isinstance(event, _Error):
                client.stats.errors_total += 1
                if pending:
                    raise self._rejected_error(event, pending.values())
                return await self._after_error(event)
            elif isinstance(event, _Disconnected):
                return self._ended(event.reason)
            elif isinstance(event, _Stop):
                await self._stop()
                return None

    async def _send_failed(self, command: str, exc: Exception) -> _Ended | None:
        """A frame could not be sent: the connection is gone. Publish what came, then retry.

        The receiver thread reports how the connection ended (close code, drop); MESSAGE frames
        it had already handed over are published by :meth:`close`.
        """
        reason = self.transport.end_reason or self._redact(f"{type(exc).__name__}: {exc}")
        deadline = self.loop.time() + self.client.options.close_timeout
        while True:
            event = await self._next(deadline)
            if event is None or isinstance(event, _Disconnected):
                if isinstance(event, _Disconnected):
                    reason = event.reason
                return self._ended(f"{reason} (sending {command})")
            if isinstance(event, _Message):
                await self._publish(event)
            elif isinstance(event, _Stop):
                return None

    def _subscribe(self) -> list[tuple[str, str]]:
        receipts = []
        for index, destination in enumerate(self.client.destinations):
            receipt = f"sub-{index}-{self.number}"
            self.connection.subscribe(destination, id=f"sub-{index}", ack="auto", receipt=receipt)
            receipts.append((receipt, destination))
        return receipts

    async def _after_error(self, event: _Error) -> _Ended:
        """An ERROR while streaming: publish what precedes the close, then reconnect."""
        reason = f"ERROR from upstream: {self._describe(event)}"
        logger.warning(
            "upstream sent ERROR; reconnecting source=%s connection=%d %s",
            self.client.name,
            self.number,
            self._describe(event),
        )
        deadline = self.loop.time() + self.client.options.close_timeout
        while True:
            next_event = await self._next(deadline)
            if next_event is None or isinstance(next_event, _Disconnected | _Stop):
                return self._ended(reason)
            if isinstance(next_event, _Message):
                await self._publish(next_event)

    async def _stop(self) -> None:
        """DISCONNECT with a receipt; publish what still arrives until the receipt or a close."""
        receipt = f"disconnect-{self.number}"
        with contextlib.suppress(Exception):
            await asyncio.to_thread(Protocol12.disconnect, self.connection, receipt=receipt)
        deadline = self.loop.time() + self.client.options.close_timeout
        while True:
            event = await self._next(deadline)
            if event is None or isinstance(event, _Disconnected):
                return
            if isinstance(event, _Receipt) and event.receipt_id == receipt:
                return
            if isinstance(event, _Message):
                await self._publish(event)

    async def close(self, *, drain: bool) -> None:
        """Close the socket, join stomp.py's threads, then publish what was already received.

        With ``drain=False`` (the session failed: the callback raised or we are cancelled)
        nothing more is published; how many received messages that leaves unpublished is
        logged, never silently dropped.
        """
        if self.closed:
            return
        self.closed = True
        self.bridge.closing.set()
        self.transport.closing = True
        await asyncio.to_thread(self._close_blocking)
        left = 0
        while not self.queue.empty():
            event = self.queue.get_nowait()
            if isinstance(event, _Message):
                left += 1
                if drain:
                    await self._publish(event)
                elif event.slot:
                    self.slots.release()
        if left and drain:
            logger.info(
                "published messages received before the close source=%s connection=%d count=%d",
                self.client.name,
                self.number,
                left,
            )
        elif left:
            logger.warning(
                "messages received but not published; the session failed source=%s "
                "connection=%d count=%d",
                self.client.name,
                self.number,
                left,
            )

    def _close_blocking(self) -> None:
        transport = self.transport
        if transport.socket is not None:
            transport.disconnect_socket()
        deadline = time.monotonic() + self.client.options.close_timeout
        for thread in (transport.io_thread, self.connection.heartbeat_thread):
            if isinstance(thread, threading.Thread) and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    logger.warning(
                        "stomp.py thread did not end in time source=%s thread=%s",
                        self.client.name,
                        thread.name,
                    )

    # ------------------------------------------------------------------ helpers

    async def _next(self, deadline: float | None) -> _Event | None:
        """The next event, or None once ``deadline`` (loop time) has passed."""
        if deadline is None:
            return await self.queue.get()
        try:
            async with asyncio.timeout_at(deadline):
                return await self.queue.get()
        except TimeoutError:
            return None

    async def _publish(self, event: _Message) -> None:
        client = self.client
        message = event.message
        try:
            size = len(message.body)
            limit = client.options.max_frame_bytes
            if size > limit:
                received_at_ms = now_ms()
                client.stats.oversized_total += 1
                route = client.dead_letters
                logger.warning(
                    "message too large; %s source=%s connection=%d size_bytes=%d "
                    "max_frame_bytes=%d oversized_total=%d",
                    "dead-lettered"
                    if route is not None
                    else "not published (no dead-letter route)",
                    client.name,
                    self.number,
                    size,
                    limit,
                    client.stats.oversized_total,
                )
                if route is not None:
                    await route.send(
                        f"frame of {size} bytes exceeds max_frame_bytes={limit}",
                        frame_excerpt(message.body, self._redact),
                        received_at_ms=received_at_ms,
                    )
                    client.stats.deadlettered_total += 1
                return
            client.stats.messages_total += 1
            if message.binary:
                client.stats.binary_total += 1
            self.messages += 1
            await client._on_message(message, self.number)
        finally:
            if event.slot:
                self.slots.release()

    def _ended(self, reason: str) -> _Ended:
        uptime = self.loop.time() - self.opened_at
        good = self.messages > 0 or uptime >= self.client.options.stable_after
        return _Ended(
            connected=True,
            good=good,
            reason=f"{reason} messages={self.messages} uptime_s={uptime:.1f}",
        )

    def _describe(self, event: _Error) -> str:
        message = event.headers.get("message", "")
        body = event.body.decode("utf-8", "replace").strip().replace("\n", " ")
        if len(body) > 200:
            body = body[:197] + "..."
        text = f"message={message!r}"
        if body:
            text += f" body={body!r}"
        return self._redact(text)

    def _redact(self, text: str) -> str:
        return _SECRET_FILTER.redact(text)

    def _auth_error(self, event: _Error) -> UpstreamAuthError:
        client = self.client
        self.client.stats.errors_total += 1
        logger.error(
            "upstream refused CONNECT; not retrying source=%s url=%s %s",
            client.name,
            client.endpoint.shown,
            self._describe(event),
        )
        return UpstreamAuthError(
            f"source {client.name!r}: upstream refused CONNECT (login or passcode): "
            f"{self._describe(event)} url={client.endpoint.shown}"
        )

    def _rejected_error(self, event: _Error, destinations: Any) -> UpstreamRejectedError:
        client = self.client
        shown = ",".join(destinations)
        logger.error(
            "upstream refused a subscription; not retrying source=%s destinations=%s %s",
            client.name,
            shown,
            self._describe(event),
        )
        return UpstreamRejectedError(
            f"source {client.name!r}: upstream refused the subscription to {shown}: "
            f"{self._describe(event)}"
        )


def _as_bytes(body: object) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    return str(body).encode("utf-8")


def _close_reason(data: bytes | str) -> str:
    payload = data.encode() if isinstance(data, str) else bytes(data)
    if len(payload) < 2:
        return "closed by upstream without a code"
    code = int.from_bytes(payload[:2], "big")
    reason = payload[2:].decode("utf-8", "replace")
    text = f"closed by upstream code={code}"
    return f"{text} close_reason={_SECRET_FILTER.redact(reason)!r}" if reason else text

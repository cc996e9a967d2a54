"""WebSocketClient against small scripted servers on real sockets (no Kafka)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from producers.backoff import Backoff
from producers.envelope import now_ms
from producers.errors import SinkError, UpstreamAuthError
from producers.sink import EXCERPT_BYTES, DeadLetterRoute
from producers.transports.websocket import WebSocketClient, WebSocketOptions
from tests.integration.producers.helpers import MemorySink
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration

Handler = Callable[[ServerConnection], Awaitable[None]]
Gate = Callable[[ServerConnection, Request], Response | None]
TIMEOUT = 10.0


@asynccontextmanager
async def server(handler: Handler, gate: Gate | None = None) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, process_request=gate, ping_interval=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/live?token={register_secret('t0p-secret')}"


class Frames:
    """Collects frames; tests await a count."""

    def __init__(self) -> None:
        self.items: list[tuple[str | bytes, int]] = []
        self._changed = asyncio.Event()

    async def __call__(self, frame: str | bytes, connection: int) -> None:
        self.items.append((frame, connection))
        self._changed.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()


class RecordingBackoff(Backoff):
    """Fixed delays; records resets and delays, and signals each delay taken."""

    def __init__(self, delay: float) -> None:
        super().__init__(initial=delay, factor=1.0, maximum=delay)
        self.delay = delay
        self.calls: list[str] = []
        self.delayed = asyncio.Event()

    def next_delay(self) -> float:
        self.calls.append("delay")
        self.delayed.set()
        return self.delay

    def reset(self) -> None:
        self.calls.append("reset")
        super().reset()


OPTIONS = WebSocketOptions(
    open_timeout=5.0, close_timeout=1.0, backoff_initial=0.01, backoff_max=0.05
)


@asynccontextmanager
async def running(client: WebSocketClient) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(TIMEOUT):
            await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


async def test_oversized_frames_are_skipped_counted_and_the_connection_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("small-1")
        await ws.send("x" * 1500)  # over max_frame_bytes, under websockets' max_size
        await ws.send(b"\x01" * 1001)
        await ws.send("small-2")
        await ws.wait_closed()

    frames = Frames()
    options = WebSocketOptions(max_frame_bytes=1000, backoff_initial=0.01, backoff_max=0.05)
    async with server(handler) as url:
        client = WebSocketClient(url, frames, name="t", options=options)
        async with running(client):
            await frames.wait_for(2)
    assert frames.items == [("small-1", 1), ("small-2", 1)]
    assert client.stats.oversized_total == 2
    assert client.stats.connections_total == 1
    warnings = [r.getMessage() for r in caplog.records if "frame too large" in r.getMessage()]
    assert len(warnings) == 2
    assert "size_bytes=1500 max_frame_bytes=1000" in warnings[0]
    assert "token=***" in warnings[0]


async def test_oversized_frames_are_dead_lettered_with_a_masked_excerpt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    big_text = "wss://echo?token=t0p-secret&x=" + "x" * 1500
    big_binary = b"\x01\xff" * 600

    async def handler(ws: ServerConnection) -> None:
        await ws.send(big_text)
        await ws.send(big_binary)
        await ws.send("small")
        await ws.wait_closed()

    frames = Frames()
    sink = MemorySink()
    options = WebSocketOptions(max_frame_bytes=1000, backoff_initial=0.01, backoff_max=0.05)
    before = now_ms()
    async with server(handler) as url:
        client = WebSocketClient(
            url,
            frames,
            name="t",
            options=options,
            secrets=["t0p-secret"],
            dead_letters=DeadLetterRoute(sink, "aliunid", "t"),
        )
        async with running(client):
            await frames.wait_for(1)
            await sink.wait_for_dead_letters(2)
    assert frames.items == [("small", 1)]
    assert client.stats.oversized_total == client.stats.deadlettered_total == 2
    text, binary = sink.dead_letters
    assert (text.source, text.stream) == ("aliunid", "t")
    assert text.reason == f"frame of {len(big_text)} bytes exceeds max_frame_bytes=1000"
    assert isinstance(text.excerpt, str)
    assert text.excerpt.startswith("wss://echo?token=***&x=xxx")
    assert len(text.excerpt.encode()) == EXCERPT_BYTES
    assert "t0p-secret" not in text.excerpt
    assert text.received_at_ms is not None and text.received_at_ms >= before
    assert binary.reason == "frame of 1200 bytes exceeds max_frame_bytes=1000"
    assert binary.excerpt == big_binary[:EXCERPT_BYTES]
    warnings = [r.getMessage() for r in caplog.records if "frame too large" in r.getMessage()]
    assert len(warnings) == 2
    assert all("dead-lettered" in w and "t0p-secret" not in w for w in warnings)


async def test_binary_frames_are_passed_as_bytes() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(b"\x00\x01")
        await ws.wait_closed()

    frames = Frames()
    async with (
        server(handler) as url,
        running(WebSocketClient(url, frames, name="t", options=OPTIONS)),
    ):
        await frames.wait_for(1)
    assert frames.items == [(b"\x00\x01", 1)]


async def test_server_errors_at_the_handshake_are_retried(caplog: pytest.LogCaptureFixture) -> None:
    refusals = 2

    def gate(ws: ServerConnection, request: Request) -> Response | None:
        nonlocal refusals
        if refusals:
            refusals -= 1
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "later\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        await ws.wait_closed()

    frames = Frames()
    async with server(handler, gate) as url:
        client = WebSocketClient(url, frames, name="t", options=OPTIONS)
        async with running(client):
            await frames.wait_for(1)
    assert client.stats.attempts_total == 3
    assert client.stats.connections_total == 1
    failed = [
        r.getMessage() for r in caplog.records if "connection failed; retrying" in r.getMessage()
    ]
    assert len(failed) == 2
    assert "attempt=1 " in failed[0]
    assert "attempt=2 " in failed[1]
    assert "reason=HTTP 503" in failed[0]
    assert "token=***" in failed[0]
    assert not [
        r
        for r in caplog.records
        if r.name.startswith("producers.") and "t0p-secret" in r.getMessage()
    ]


async def test_retry_after_is_respected_up_to_backoff_max(caplog: pytest.LogCaptureFixture) -> None:
    refused = False

    def gate(ws: ServerConnection, request: Request) -> Response | None:
        nonlocal refused
        if not refused:
            refused = True
            response = ws.respond(HTTPStatus.TOO_MANY_REQUESTS, "slow down\n")
            response.headers["Retry-After"] = "0.3"
            return response
        return None

    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        await ws.wait_closed()

    frames = Frames()
    options = WebSocketOptions(backoff_initial=0.01, backoff_max=1.0)
    async with (
        server(handler, gate) as url,
        running(WebSocketClient(url, frames, name="t", options=options)),
    ):
        await frames.wait_for(1)
    (line,) = [r.getMessage() for r in caplog.records if "connection failed" in r.getMessage()]
    match = re.search(r"delay_s=([0-9.]+)", line)
    assert match is not None
    assert float(match.group(1)) >= 0.3
    assert "reason=HTTP 429" in line


async def test_forbidden_is_an_auth_error_raised_at_once() -> None:
    attempts = 0

    def gate(ws: ServerConnection, request: Request) -> Response | None:
        nonlocal attempts
        attempts += 1
        return ws.respond(HTTPStatus.FORBIDDEN, "no\n")

    async def handler(ws: ServerConnection) -> None:
        raise AssertionError("never accepted")

    async with server(handler, gate) as url:
        client = WebSocketClient(url, Frames(), name="t", options=OPTIONS)
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(
                UpstreamAuthError, match=r"HTTP 403 url=ws://127\.0\.0\.1:\d+/live\?token=\*\*\*$"
            ):
                await client.run(asyncio.Event())
    assert attempts == 1


async def test_refused_tcp_connections_are_retried_until_stopped() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with server(handler) as url:
        pass  # the port is closed again: connections are refused
    backoff = RecordingBackoff(0.01)
    client = WebSocketClient(url, Frames(), name="t", options=OPTIONS, backoff=backoff)
    async with running(client):
        async with asyncio.timeout(TIMEOUT):
            while client.stats.attempts_total < 3:
                backoff.delayed.clear()
                await backoff.delayed.wait()
    assert client.stats.connections_total == 0
    assert "reset" not in backoff.calls


async def test_stop_is_prompt_while_connected_to_a_silent_server() -> None:
    connected = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        connected.set()
        await ws.wait_closed()

    async with server(handler) as url:
        client = WebSocketClient(url, Frames(), name="t", options=OPTIONS)
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        async with asyncio.timeout(TIMEOUT):
            await connected.wait()
        loop = asyncio.get_running_loop()
        started = loop.time()
        stop.set()
        async with asyncio.timeout(2):
            await task
        assert loop.time() - started < 1.0


async def test_stop_is_prompt_during_a_long_backoff_delay() -> None:
    def gate(ws: ServerConnection, request: Request) -> Response | None:
        return ws.respond(HTTPStatus.BAD_GATEWAY, "down\n")

    async def handler(ws: ServerConnection) -> None:
        raise AssertionError("never accepted")

    backoff = RecordingBackoff(60.0)
    async with server(handler, gate) as url:
        client = WebSocketClient(url, Frames(), name="t", options=OPTIONS, backoff=backoff)
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        async with asyncio.timeout(TIMEOUT):
            await backoff.delayed.wait()
        stop.set()
        async with asyncio.timeout(1):
            await task
    assert client.stats.attempts_total == 1


async def test_idle_connections_are_replaced() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("only frame")
        await ws.wait_closed()  # then silence

    frames = Frames()
    options = WebSocketOptions(idle_timeout=0.2, backoff_initial=0.01, backoff_max=0.05)
    async with server(handler) as url:
        client = WebSocketClient(url, frames, name="t", options=options)
        async with running(client):
            await frames.wait_for(2)
    assert frames.items == [("only frame", 1), ("only frame", 2)]


async def test_backoff_resets_only_after_a_good_connection() -> None:
    script = ["frame-then-close", "close-at-once", "close-at-once", "frame-then-close", "stay"]

    async def handler(ws: ServerConnection) -> None:
        step = script.pop(0)
        if step == "frame-then-close":
            await ws.send("f")
        if step != "stay":
            await ws.close()
            return
        await ws.send("last")
        await ws.wait_closed()

    frames = Frames()
    backoff = RecordingBackoff(0.01)
    options = WebSocketOptions(stable_after=60.0)  # only a frame makes a connection good
    async with server(handler) as url:
        client = WebSocketClient(url, frames, name="t", options=options, backoff=backoff)
        async with running(client):
            await frames.wait_for(3)
    assert [f for f, _ in frames.items] == ["f", "f", "last"]
    assert [c for _, c in frames.items] == [1, 4, 5]
    assert backoff.calls == ["reset", "delay", "delay", "delay", "reset", "delay"]


async def test_frame_handler_errors_propagate_without_reconnecting() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("boom")
        await ws.wait_closed()

    async def failing(frame: str | bytes, connection: int) -> None:
        raise SinkError("sink is gone")

    async with server(handler) as url:
        client = WebSocketClient(url, failing, name="t", options=OPTIONS)
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(SinkError, match="sink is gone"):
                await client.run(asyncio.Event())
    assert client.stats.connections_total == 1


async def test_nothing_is_sent_unless_the_source_asks() -> None:
    received: list[str | bytes] = []
    closed = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        try:
            async for message in ws:
                received.append(message)
        finally:
            closed.set()

    async def subscribe(ws: ClientConnection) -> None:
        await ws.send('{"type":"subscribe"}')

    async with server(handler) as url:
        quiet = Frames()
        async with running(WebSocketClient(url, quiet, name="quiet", options=OPTIONS)):
            await quiet.wait_for(1)
        async with asyncio.timeout(TIMEOUT):
            await closed.wait()
        assert received == []
        closed.clear()

        chatty = Frames()
        client = WebSocketClient(url, chatty, name="chatty", options=OPTIONS, on_open=subscribe)
        async with running(client):
            await chatty.wait_for(1)
        async with asyncio.timeout(TIMEOUT):
            await closed.wait()
        assert received == ['{"type":"subscribe"}']


async def test_websockets_debug_log_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        await ws.wait_closed()

    frames = Frames()
    async with server(handler) as url:
        client = WebSocketClient(url, frames, name="t", options=OPTIONS, secrets=["t0p-secret"])
        async with running(client):
            await frames.wait_for(1)
    ours = [r for r in caplog.records if r.name.startswith("producers.")]
    wire = [r for r in ours if r.name == "producers.transports.websocket.wire"]
    assert any(r.getMessage() == "> GET /live?token=*** HTTP/1.1" for r in wire)
    # (The scripted test server logs the raw token under websockets.server: not ours.)
    assert not [r for r in ours if "t0p-secret" in r.getMessage()]


@pytest.mark.parametrize("ending", ["close", "abort"])
async def test_frames_pushed_while_the_hook_still_sends_are_published(ending: str) -> None:
    # The Valtronics case: the server pushes data after the first subscription, then ends the
    # connection while the producer is still subscribing.
    pushed = [f"data-{i}" for i in range(20)]
    script = ["push-then-end", "stay"]

    async def handler(ws: ServerConnection) -> None:
        step = script.pop(0)
        await ws.recv()  # the first subscription
        if step == "push-then-end":
            for frame in pushed:
                await ws.send(frame)
            if ending == "abort":
                ws.transport.abort()
            else:
                await ws.close(1001)
            return
        await ws.send("second")
        await ws.wait_closed()

    async def subscribe_slowly(ws: ClientConnection) -> None:
        for i in range(50):
            await ws.send(f"subscribe-{i}")
            await asyncio.sleep(0.02)

    frames = Frames()
    backoff = RecordingBackoff(0.01)
    options = WebSocketOptions(stable_after=60.0)  # only frames make a connection good
    async with server(handler) as url:
        client = WebSocketClient(
            url, frames, name="t", options=options, backoff=backoff, on_open=subscribe_slowly
        )
        async with running(client):
            await frames.wait_for(len(pushed) + 1)
    assert frames.items == [(f, 1) for f in pushed] + [("second", 2)]
    assert client.stats.frames_total == len(pushed) + 1
    assert backoff.calls[:2] == ["reset", "delay"]  # the first connection was good


async def test_a_hook_that_refuses_the_upstream_ends_the_run() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("auth_response: refused")
        await ws.wait_closed()

    async def refuse(ws: ClientConnection) -> None:
        await asyncio.sleep(0.05)
        raise UpstreamAuthError("token refused")

    frames = Frames()
    async with server(handler) as url:
        client = WebSocketClient(url, frames, name="t", options=OPTIONS, on_open=refuse)
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(UpstreamAuthError, match="token refused"):
                await client.run(asyncio.Event())
    assert frames.items == [("auth_response: refused", 1)]
    assert client.stats.connections_total == 1

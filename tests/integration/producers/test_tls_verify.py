"""TLS verification of upstreams: on by default, off only on request and then loudly.

A self-signed certificate stands for a man in the middle: the default refuses it, and
``tls_verify: false`` (allowed only with ``tls_insecure_acknowledged: true``) accepts it and
logs a WARNING naming the source at every connection attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from producers.backoff import Backoff
from producers.simulators.hemis import HemisSimulator
from producers.transports.websocket import WebSocketClient, WebSocketOptions
from tests.integration.producers.helpers import MemorySink
from tests.integration.producers.hemis_helpers import (
    BUILDING,
    TOKEN,
    SelfSigned,
    hemis_source,
    producing,
    self_signed,
)
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration

TIMEOUT = 10.0
OFF = "TLS certificate verification is OFF"


@asynccontextmanager
async def tls_server(cert: SelfSigned) -> AsyncIterator[tuple[str, list[int]]]:
    """A wss:// server that sends one frame per connection and then closes it."""
    served: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        served.append(len(served) + 1)
        await ws.send(f"hello-{len(served)}")
        await ws.close()

    async with serve(handler, "127.0.0.1", 0, ssl=cert.server_context(), ping_interval=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        yield f"wss://127.0.0.1:{port}/live?token={register_secret('tls-test-token')}", served


class Attempts(Backoff):
    """Tiny fixed delays; sets ``failed`` after ``count`` delays (one per ended attempt)."""

    def __init__(self, count: int) -> None:
        super().__init__(initial=0.01, factor=1.0, maximum=0.01)
        self.count = count
        self.delays = 0
        self.failed = asyncio.Event()

    def next_delay(self) -> float:
        self.delays += 1
        if self.delays >= self.count:
            self.failed.set()
        return super().next_delay()


async def run_until(client: WebSocketClient, done: asyncio.Event) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    try:
        async with asyncio.timeout(TIMEOUT):
            await done.wait()
    finally:
        stop.set()
        async with asyncio.timeout(TIMEOUT):
            await task


async def test_websocket_refuses_an_unverified_certificate_by_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert = self_signed(tmp_path, "127.0.0.1")
    frames: list[str | bytes] = []

    async def on_frame(frame: str | bytes, connection: int) -> None:
        frames.append(frame)

    backoff = Attempts(2)
    async with tls_server(cert) as (url, served):
        client = WebSocketClient(url, on_frame, name="ws-tls", backoff=backoff)
        assert client.options.tls_verify is True
        await run_until(client, backoff.failed)
    assert frames == []
    assert served == []  # the handshake never got past TLS
    failed = [r.getMessage() for r in caplog.records if "connection failed" in r.getMessage()]
    assert len(failed) >= 2
    assert all("CERTIFICATE_VERIFY_FAILED" in m for m in failed)
    assert OFF not in caplog.text


async def test_websocket_without_verification_connects_and_warns_at_every_attempt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    cert = self_signed(tmp_path, "127.0.0.1")
    frames: list[str | bytes] = []
    two = asyncio.Event()

    async def on_frame(frame: str | bytes, connection: int) -> None:
        frames.append(frame)
        if len(frames) == 2:
            two.set()

    async with tls_server(cert) as (url, served):
        client = WebSocketClient(
            url,
            on_frame,
            name="ws-noverify",
            options=WebSocketOptions(tls_verify=False),
            backoff=Attempts(1_000),
        )
        await run_until(client, two)
    assert frames[:2] == ["hello-1", "hello-2"]
    assert served[:2] == [1, 2]
    warnings = [r for r in caplog.records if OFF in r.getMessage()]
    assert len(warnings) >= 2  # one per connection attempt, not once per process
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert all("source=ws-noverify" in r.getMessage() for r in warnings)
    assert all("tls-test-token" not in r.getMessage() for r in warnings)


async def test_stomp_without_verification_connects_and_warns_at_every_connect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    cert = self_signed(tmp_path, "127.0.0.1")
    sim = HemisSimulator(BUILDING, TOKEN, interval=0.05, ssl_context=cert.server_context())
    sink = MemorySink()
    async with sim:
        source = hemis_source(sim, tls_verify=False, tls_insecure_acknowledged=True)
        assert source.url.startswith("wss://")
        async with producing(source, sink):
            await sink.wait_for(lambda items: len(items) >= 2)
            assert await sim.drop_connections() == 1
            await sink.wait_for(lambda items: any(e.meta.get("connection") == 2 for _, e in items))
    warnings = [r.getMessage() for r in caplog.records if OFF in r.getMessage()]
    assert len(warnings) >= 2
    assert all("source=hemis-test" in w for w in warnings)
    assert TOKEN not in caplog.text

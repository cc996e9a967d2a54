"""Helpers for Hemis tests over real sockets: sources, a runner, a raw STOMP client, certs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import ssl
import subprocess
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from producers.envelope import RawEnvelope
from producers.simulators.hemis import HemisSimulator, StompFrame, StompFrameParser
from producers.sink import EnvelopeSink
from producers.sources.hemis import HemisSource, run_hemis
from tests.support.secrets import register_secret

BUILDING = "BLD-7f3a9c1e"
# Long enough to be masked, with characters a careless encoder would mangle.
TOKEN = register_secret("eyJhbGciOiJIUzI1NiJ9.h3m1s+t0ken/==")
WAIT_TIMEOUT = 15.0


def hemis_source(sim: HemisSimulator, **overrides: Any) -> HemisSource:
    """A source for the running simulator, with fast reconnects."""
    values: dict[str, Any] = {
        "name": "hemis-test",
        "kind": "hemis",
        "url": sim.url,
        "building_id": BUILDING,
        "token": TOKEN,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "open_timeout": 5.0,
        "connect_timeout": 5.0,
    }
    if "token_file" in overrides:
        values.pop("token")
    values.update(overrides)
    return HemisSource(**values)


@contextlib.asynccontextmanager
async def producing(source: HemisSource, sink: EnvelopeSink) -> AsyncIterator[asyncio.Task[None]]:
    """Run the Hemis producer during the block; stop it and check it ended cleanly and promptly."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_hemis(source, sink, stop))
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(WAIT_TIMEOUT):
            await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


async def poll_until(predicate: Callable[[], bool], wait_timeout: float = WAIT_TIMEOUT) -> None:
    """Wait until ``predicate()`` holds, checking every 20 ms, for counters nothing signals.

    Raises:
        TimeoutError: it did not hold within ``wait_timeout`` seconds.
    """
    async with asyncio.timeout(wait_timeout):
        while not predicate():  # noqa: ASYNC110  # plain counters: there is no event to await
            await asyncio.sleep(0.02)


def payload_text(envelope: RawEnvelope) -> str:
    """The body as text, decoding base64 envelopes of binary frames."""
    if envelope.meta.get("encoding") == "base64":
        return base64.b64decode(envelope.payload).decode("utf-8")
    return envelope.payload


def on_connection(envelopes: Sequence[RawEnvelope], connection: int) -> list[str]:
    return [payload_text(e) for e in envelopes if e.meta["connection"] == connection]


def stomp_threads() -> list[threading.Thread]:
    """stomp.py's receiver and heart-beat threads still alive."""
    return [
        t
        for t in threading.enumerate()
        if t.is_alive() and ("__io_loop" in t.name or t.name.startswith("StompHeartbeat"))
    ]


def assert_no_stomp_threads(timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for thread in stomp_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    assert stomp_threads() == []


# --- a raw STOMP client for protocol tests ------------------------------------------------------


@dataclass
class RawStomp:
    """A minimal STOMP client over a websockets connection (frames in, frames out).

    ``raw`` keeps every WebSocket message received (``str`` for text, ``bytes`` for binary).
    """

    websocket: ClientConnection
    parser: StompFrameParser = field(default_factory=StompFrameParser)
    pending: deque[StompFrame] = field(default_factory=deque)
    raw: list[str | bytes] = field(default_factory=list)

    async def send(
        self, command: str, headers: dict[str, str] | None = None, body: str = ""
    ) -> None:
        lines = [command, *(f"{k}:{v}" for k, v in (headers or {}).items())]
        await self.websocket.send("\n".join(lines) + "\n\n" + body + "\x00")

    async def frame(self, wait_timeout: float = WAIT_TIMEOUT) -> StompFrame:
        """The next frame (heart-beats are counted by the parser, not returned)."""
        async with asyncio.timeout(wait_timeout):
            while not self.pending:
                message = await self.websocket.recv()
                self.raw.append(message)
                data = message.encode() if isinstance(message, str) else message
                self.pending.extend(self.parser.feed(data))
        return self.pending.popleft()

    async def connect(
        self,
        login: str = BUILDING,
        passcode: str = TOKEN,
        heart_beat: str = "0,0",
        host: str = "hemis",
    ) -> StompFrame:
        await self.send(
            "CONNECT",
            {
                "accept-version": "1.2,1.1,1.0",
                "host": host,
                "login": login,
                "passcode": passcode,
                "heart-beat": heart_beat,
            },
        )
        return await self.frame()


@contextlib.asynccontextmanager
async def raw_stomp(
    url: str, subprotocols: Sequence[str] | None = ("v12.stomp",), **kwargs: Any
) -> AsyncIterator[RawStomp]:
    protocols = None if subprotocols is None else [Subprotocol(p) for p in subprotocols]
    async with connect(url, subprotocols=protocols, ping_interval=None, **kwargs) as ws:
        yield RawStomp(ws)


# --- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfSigned:
    hostname: str
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def self_signed(directory: Path, hostname: str) -> SelfSigned:
    """A self-signed certificate for ``hostname`` made with the openssl CLI.

    Skips when openssl is missing (cryptography and trustme are not installed here either).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed; the local-mode TLS test needs it to make a cert")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={hostname}",
            "-addext",
            f"subjectAltName=DNS:{hostname}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return SelfSigned(hostname, cert, key)

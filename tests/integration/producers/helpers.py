"""Helpers for producer tests over real sockets: a MemorySink, source builder, a runner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from producers.config import AliunidSource
from producers.envelope import RawEnvelope
from producers.runner import run_source
from producers.simulators.aliunid import AliunidSimulator
from producers.sink import EnvelopeSink
from tests.support.secrets import register_secret

BUSINESS = "9bf32959-1fd4-4fa4-83e0-9e9cd80093af"
# Characters that must be percent-encoded, so a leak of the raw or encoded form is caught.
API_KEY = register_secret("sk-live/7f3a+9c1e=5b2d&x")
WAIT_TIMEOUT = 10.0

Items = Sequence[tuple[bytes | None, RawEnvelope]]


@dataclass(frozen=True)
class DeadLetter:
    """One ``send_dead_letter`` call as a MemorySink received it."""

    source: str
    stream: str
    reason: str
    excerpt: str | bytes
    received_at_ms: int | None


class MemorySink:
    """Keeps envelopes and dead letters in memory; tests await a condition on them."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes | None, RawEnvelope]] = []
        self.dead_letters: list[DeadLetter] = []
        self.flushes = 0
        self._changed = asyncio.Event()

    async def send(self, key: bytes | None, envelope: RawEnvelope) -> None:
        self.items.append((key, envelope))
        self._changed.set()

    async def send_dead_letter(
        self,
        source: str,
        stream: str,
        reason: str,
        excerpt: str | bytes,
        *,
        received_at_ms: int | None = None,
    ) -> None:
        self.dead_letters.append(DeadLetter(source, stream, reason, excerpt, received_at_ms))
        self._changed.set()

    async def flush(self) -> None:
        self.flushes += 1

    async def close(self) -> None:
        pass

    @property
    def envelopes(self) -> list[RawEnvelope]:
        return [e for _, e in self.items]

    async def wait_for(
        self, predicate: Callable[[Items], bool], wait_timeout: float = WAIT_TIMEOUT
    ) -> None:
        async with asyncio.timeout(wait_timeout):
            while not predicate(self.items):
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_dead_letters(self, count: int, wait_timeout: float = WAIT_TIMEOUT) -> None:
        """Wait until at least ``count`` dead letters arrived."""
        async with asyncio.timeout(wait_timeout):
            while len(self.dead_letters) < count:
                self._changed.clear()
                await self._changed.wait()


def aliunid_source(sim: AliunidSimulator, **overrides: Any) -> AliunidSource:
    """A source for the running simulator, with fast reconnects."""
    values: dict[str, Any] = {
        "name": "aliunid-test",
        "kind": "aliunid",
        "url": sim.url,
        "api_key": API_KEY,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "open_timeout": 5.0,
    }
    values.update(overrides)
    return AliunidSource(**values)


@contextlib.asynccontextmanager
async def producing(source: AliunidSource, sink: EnvelopeSink) -> AsyncIterator[asyncio.Task[None]]:
    """Run a producer for ``source`` during the block; stop it and check it ended cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_source(source, sink, stop))
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(WAIT_TIMEOUT):
            await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]

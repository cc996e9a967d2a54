"""Upstream simulators with real producers in this process, and a sink that counts.

Shared by the scenarios that break the producer side (``upstream-drop``, ``broker-outage``).
Simulators come from :data:`streamwarden.families.FAMILIES` and sources entries from the same
table, loaded through :func:`producers.config.load_sources` like a real ``sources.yaml``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from producers.envelope import RawEnvelope
from producers.sink import EnvelopeSink
from streamwarden.families import FAMILIES

__all__ = ["CountingSink", "Upstream", "start_upstreams", "stop_upstreams"]

RECONNECT_TUNING: dict[str, Any] = {"backoff_initial": 0.05, "backoff_max": 0.5}
"""Reconnect fast: chaos drops connections far more often than a real upstream does."""


@dataclass
class CountingSink:
    """An :class:`~producers.sink.EnvelopeSink` that records what the producer hands over.

    Args:
        inner: where envelopes go next (a KafkaSink), or None to keep them only here.
        on_frame: awaited after each envelope with it and the count of its connection.
    """

    inner: EnvelopeSink | None = None
    on_frame: Callable[[RawEnvelope, int], Awaitable[None]] | None = None
    envelopes: list[RawEnvelope] = field(default_factory=list)
    per_connection: dict[int, int] = field(default_factory=dict)
    first_at: dict[int, float] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    dead_letters: int = 0

    async def send(self, key: bytes | None, envelope: RawEnvelope) -> None:
        if self.inner is not None:
            await self.inner.send(key, envelope)
        self.envelopes.append(envelope)
        connection = int(envelope.meta.get("connection", 0))
        count = self.per_connection.get(connection, 0) + 1
        self.per_connection[connection] = count
        self.first_at.setdefault(connection, time.monotonic())
        self.arrived.set()
        if self.on_frame is not None:
            await self.on_frame(envelope, count)

    async def send_dead_letter(
        self,
        source: str,
        stream: str,
        reason: str,
        excerpt: str | bytes,
        *,
        received_at_ms: int | None = None,
    ) -> None:
        self.dead_letters += 1
        if self.inner is not None:
            await self.inner.send_dead_letter(
                source, stream, reason, excerpt, received_at_ms=received_at_ms
            )

    async def flush(self) -> None:
        if self.inner is not None:
            await self.inner.flush()

    async def close(self) -> None:
        if self.inner is not None:
            await self.inner.close()

    async def wait_for(self, predicate: Callable[[], bool], wait_timeout: float) -> bool:
        """Wait until ``predicate()`` holds after some envelope arrived, or ``wait_timeout``."""
        try:
            async with asyncio.timeout(wait_timeout):
                while not predicate():
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            return predicate()
        return True

    def frames_of(self, connection: int) -> list[str]:
        return [e.payload for e in self.envelopes if e.meta.get("connection") == connection]


@dataclass
class Upstream:
    """One family: its running simulator, its source entry and the producer task."""

    kind: str
    simulator: Any
    source: Any
    sink: CountingSink
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def start_producer(self) -> None:
        from producers.runner import run_source

        self.task = asyncio.create_task(
            run_source(self.source, self.sink, self.stop), name=f"chaos-producer-{self.kind}"
        )

    async def stop_producer(self, stop_timeout: float = 30.0) -> BaseException | None:
        """Stop the producer; returns what it raised, if anything."""
        self.stop.set()
        if self.task is None:
            return None
        done, _ = await asyncio.wait({self.task}, timeout=stop_timeout)
        if not done:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            return TimeoutError(f"producer {self.kind} did not stop within {stop_timeout:g}s")
        return None if self.task.cancelled() else self.task.exception()


async def start_upstreams(
    kinds: Iterable[str],
    folder: Path,
    *,
    interval: float,
    seed: int,
    sinks: Mapping[str, CountingSink],
    entry_overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Upstream]:
    """Start one simulator per kind and build its source (producers not started yet).

    The credentials are fresh per run and reach the sources only through ``${VAR}``
    references, as in a real ``sources.yaml``.
    """
    from producers.config import load_sources

    started: list[tuple[str, Any]] = []
    entries = []
    secrets: dict[str, str] = {}
    try:
        for offset, kind in enumerate(kinds):
            family = FAMILIES[kind]
            secret = f"chaos-{kind}-{seed}-{time.monotonic_ns()}"
            secrets[family.secret_env] = secret
            simulator = family.make(secret, interval, seed + offset)
            await simulator.start("127.0.0.1", 0)
            started.append((kind, simulator))
            entry = {**family.entry(f"chaos-{kind}", simulator.url), **RECONNECT_TUNING}
            entry.update((entry_overrides or {}).get(kind, {}))
            entries.append(entry)
        path = _write_sources(folder, entries)
        sources = {s.name: s for s in load_sources(path, env=secrets)}
    except BaseException:
        for _kind, simulator in started:
            await simulator.stop()
        raise
    return [
        Upstream(kind, simulator, sources[f"chaos-{kind}"], sinks[kind])
        for kind, simulator in started
    ]


def _write_sources(folder: Path, entries: list[dict[str, Any]]) -> Path:
    """A ``sources.yaml`` with the entries (credentials stay ``${VAR}`` references)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": entries}), encoding="utf-8")
    return path


async def stop_upstreams(upstreams: Iterable[Upstream]) -> None:
    """Stop producers and simulators (idempotent)."""
    for upstream in upstreams:
        await upstream.stop_producer(10.0)
    for upstream in upstreams:
        with contextlib.suppress(Exception):
            await upstream.simulator.stop()

"""run_source: registry dispatch, flush on every exit, errors propagated."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from producers import runner
from producers.config import AliunidSource, source_kinds
from producers.envelope import RawEnvelope
from producers.errors import SinkError, SourceConfigError, UpstreamAuthError
from producers.runner import RUNNERS, run_source
from producers.sources.aliunid import run_aliunid
from tests.support.secrets import register_secret

SOURCE = AliunidSource(
    name="demo", kind="aliunid", url="ws://h/live", api_key=register_secret("abcd-1234")
)


class RecordingSink:
    def __init__(self, *, flush_forever: bool = False) -> None:
        self.sent: list[tuple[bytes | None, RawEnvelope]] = []
        self.flushes = 0
        self.flush_forever = flush_forever

    async def send(self, key: bytes | None, envelope: RawEnvelope) -> None:
        self.sent.append((key, envelope))

    async def flush(self) -> None:
        self.flushes += 1
        if self.flush_forever:
            await asyncio.Event().wait()

    async def close(self) -> None:
        pass


def test_every_configurable_kind_has_a_runner() -> None:
    assert set(RUNNERS) == set(source_kinds())
    assert RUNNERS["aliunid"] is run_aliunid


async def test_dispatches_on_kind_and_flushes_on_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any, asyncio.Event]] = []
    running = asyncio.Event()

    async def fake(source: Any, sink: Any, stop: asyncio.Event) -> None:
        calls.append((source, sink, stop))
        await sink.send(b"k", RawEnvelope("aliunid", source.name, 1, "{}", {}))
        running.set()
        await stop.wait()

    monkeypatch.setitem(runner.RUNNERS, "aliunid", fake)
    sink = RecordingSink()
    stop = asyncio.Event()
    task = asyncio.create_task(run_source(SOURCE, sink, stop))
    async with asyncio.timeout(5):
        await running.wait()
        assert sink.flushes == 0
        stop.set()
        await task
    assert calls == [(SOURCE, sink, stop)]
    assert len(sink.sent) == 1
    assert sink.flushes == 1


async def test_upstream_errors_propagate_after_a_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(source: Any, sink: Any, stop: asyncio.Event) -> None:
        raise UpstreamAuthError("refused")

    monkeypatch.setitem(runner.RUNNERS, "aliunid", refused)
    sink = RecordingSink()
    async with asyncio.timeout(5):
        with pytest.raises(UpstreamAuthError, match="refused"):
            await run_source(SOURCE, sink, asyncio.Event())
    assert sink.flushes == 1


async def test_upstream_error_wins_over_a_flush_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(source: Any, sink: Any, stop: asyncio.Event) -> None:
        raise UpstreamAuthError("refused")

    monkeypatch.setitem(runner.RUNNERS, "aliunid", refused)
    async with asyncio.timeout(5):
        with pytest.raises(UpstreamAuthError):
            await run_source(
                SOURCE, RecordingSink(flush_forever=True), asyncio.Event(), flush_timeout=0.05
            )


async def test_final_flush_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    async def quick(source: Any, sink: Any, stop: asyncio.Event) -> None:
        return None

    monkeypatch.setitem(runner.RUNNERS, "aliunid", quick)
    async with asyncio.timeout(5):
        with pytest.raises(SinkError, match=r"sink flush did not finish within 0\.05s"):
            await run_source(
                SOURCE, RecordingSink(flush_forever=True), asyncio.Event(), flush_timeout=0.05
            )


async def test_unknown_kind_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(runner.RUNNERS, "aliunid")
    others = ", ".join(sorted(runner.RUNNERS)) or "none"
    with pytest.raises(SourceConfigError) as info:
        await run_source(SOURCE, RecordingSink(), asyncio.Event())
    assert str(info.value) == f"source 'demo': no runner for kind 'aliunid'; known kinds: {others}"

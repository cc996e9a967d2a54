"""aliunid HTTP long polling (``transport: long-poll``) against the simulator over real sockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from producers.config import AliunidSource
from producers.envelope import encode_envelope
from producers.errors import UpstreamAuthError, UpstreamRejectedError
from producers.runner import run_source
from producers.simulators.aliunid import AliunidSimulator
from tests.integration.producers.helpers import (
    API_KEY,
    BUSINESS,
    MemorySink,
    producing,
)
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration


def poll_source(sim: AliunidSimulator, **overrides: Any) -> AliunidSource:
    values: dict[str, Any] = {
        "name": "aliunid-poll",
        "kind": "aliunid",
        "url": sim.url.replace("ws://", "http://", 1),
        "api_key": API_KEY,
        "transport": "long-poll",
        "error_delay": 0.1,
        "backoff_initial": 0.1,
        "backoff_max": 0.4,
        "poll_timeout": 10.0,
    }
    values.update(overrides)
    return AliunidSource(**values)


@pytest.fixture
async def sim() -> AsyncIterator[AliunidSimulator]:
    simulator = AliunidSimulator(BUSINESS, API_KEY, measuring_points=3, interval=0.05, seed=5)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def assert_recorded_what_was_handed_out(sink: MemorySink, sim: AliunidSimulator) -> None:
    recorded = [e.payload for e in sink.envelopes]
    # At most the answer to the poll in flight when the producer stopped is not recorded.
    assert recorded == sim.polled_frames[: len(recorded)]
    assert len(sim.polled_frames) - len(recorded) <= 1
    for key, envelope in sink.items:
        frame = orjson.loads(envelope.payload)
        assert frame["type"] == "data"
        assert key == frame["id"].encode()
        wire = encode_envelope(envelope).decode()
        assert API_KEY not in wire and quote(API_KEY, safe="") not in wire


@pytest.mark.parametrize("api_key_in", ["query", "header"])
async def test_every_data_object_handed_out_is_recorded(
    sim: AliunidSimulator, api_key_in: str
) -> None:
    sink = MemorySink()
    async with producing(poll_source(sim, api_key_in=api_key_in), sink):  # type: ignore[arg-type]
        await sink.wait_for(lambda items: len(items) >= 30)
    assert_recorded_what_was_handed_out(sink, sim)
    assert set(sim.poll_auth) == {api_key_in}
    assert sim.connections_accepted == 0  # no WebSocket involved


async def test_a_measuring_point_filter_reaches_the_server(sim: AliunidSimulator) -> None:
    wanted = sim.points[2].id
    sink = MemorySink()
    source = poll_source(sim, measuring_points=[wanted])
    async with producing(source, sink):  # type: ignore[arg-type]
        await sink.wait_for(lambda items: len(items) >= 5)
    assert {key for key, _ in sink.items} == {wanted.encode()}
    assert_recorded_what_was_handed_out(sink, sim)


async def test_errors_are_retried_after_the_error_delay_and_nothing_is_lost(
    sim: AliunidSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sink = MemorySink()
    async with producing(poll_source(sim), sink):  # type: ignore[arg-type]
        await sink.wait_for(lambda items: len(items) >= 5)
        sim.fail_polls(503, 500, 429)
        await sink.wait_for(lambda items: len(items) >= 25)
    retries = [r.getMessage() for r in caplog.records if "long poll failed" in r.getMessage()]
    assert len(retries) == 3
    assert [m.split("reason=")[1] for m in retries] == ["HTTP 503", "HTTP 500", "HTTP 429"]
    delays = [float(m.split("delay_s=")[1].split()[0]) for m in retries]
    assert all(delay >= 0.1 for delay in delays)  # at least error_delay, never at once
    # The poller's queue kept filling meanwhile: nothing produced during the errors is lost.
    assert_recorded_what_was_handed_out(sink, sim)
    connections = [e.meta["connection"] for e in sink.envelopes]
    assert connections == sorted(connections) and connections[-1] == 4


async def test_a_401_is_fatal_and_the_key_is_not_shown(sim: AliunidSimulator) -> None:
    sink = MemorySink()
    source = poll_source(sim, api_key=register_secret("wrong-poll-key-value"))
    async with asyncio.timeout(5):
        with pytest.raises(UpstreamAuthError) as info:
            await run_source(source, sink, asyncio.Event())
    shown = sim.url.replace("ws://", "http://", 1)
    assert str(info.value) == (
        f"source 'aliunid-poll': upstream refused the credentials: HTTP 401 url={shown}?apiKey=***"
    )
    assert sim.polls == 0  # refused before polling


async def test_a_401_after_polling_worked_is_fatal_too(sim: AliunidSimulator) -> None:
    sink = MemorySink()
    sim.fail_polls(401)
    async with asyncio.timeout(5):
        with pytest.raises(UpstreamAuthError):
            await run_source(poll_source(sim, api_key_in="header"), sink, asyncio.Event())


async def test_a_wrong_business_id_is_rejected(sim: AliunidSimulator) -> None:
    url = sim.url.replace("ws://", "http://", 1).replace(BUSINESS, "0" * 8 + BUSINESS[8:])
    async with asyncio.timeout(5):
        with pytest.raises(UpstreamRejectedError, match="HTTP 404"):
            await run_source(poll_source(sim, url=url), MemorySink(), asyncio.Event())


def test_the_url_scheme_must_fit_the_transport() -> None:
    with pytest.raises(ValueError, match="is not an HTTP URL \\(transport: long-poll\\)"):
        AliunidSource(
            name="a",
            kind="aliunid",
            url="ws://h/live",
            api_key="k",
            transport="long-poll",
        )
    with pytest.raises(ValueError, match="is not a WebSocket URL; use ws://"):
        AliunidSource(name="a", kind="aliunid", url="https://h/live", api_key="k")

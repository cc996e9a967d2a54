"""The aliunid producer against the simulator over real sockets (no Kafka)."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote, quote_plus

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from producers.envelope import encode_envelope
from producers.errors import UpstreamAuthError, UpstreamRejectedError
from producers.runner import run_source
from producers.simulators.aliunid import AliunidSimulator
from tests.integration.producers.helpers import (
    API_KEY,
    BUSINESS,
    WAIT_TIMEOUT,
    Items,
    MemorySink,
    aliunid_source,
    producing,
)
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration


def data_count(items: Items, connection: int = 1) -> int:
    return sum(
        1
        for _, e in items
        if e.meta["connection"] == connection and orjson.loads(e.payload)["type"] == "data"
    )


async def test_frames_are_published_unchanged_and_keyed_by_id(
    simulator: AliunidSimulator, memory_sink: MemorySink
) -> None:
    source = aliunid_source(simulator)
    async with producing(source, memory_sink):
        await memory_sink.wait_for(lambda items: data_count(items) >= 6)
    envelopes = memory_sink.envelopes
    sent = simulator.frames_for(1)
    # Byte-for-byte the frames the server wrote, in order.
    assert [e.payload for e in envelopes] == sent[: len(envelopes)]
    assert [orjson.loads(p)["type"] for p in sent[:3]] == ["structure"] * 3
    for key, envelope in memory_sink.items:
        frame = orjson.loads(envelope.payload)
        assert key == frame["id"].encode()
        assert envelope.source == "aliunid"
        assert envelope.stream == "aliunid-test"
        assert envelope.meta == {"connection": 1}
        wire = encode_envelope(envelope).decode()
        assert API_KEY not in wire
        assert quote(API_KEY, safe="") not in wire
        assert "apiKey" not in wire
    assert simulator.connections_accepted == 1
    assert memory_sink.flushes == 1  # run_source flushes on exit


async def test_measuring_point_filter(simulator: AliunidSimulator, memory_sink: MemorySink) -> None:
    wanted = simulator.points[1].id
    unknown = "00000000-0000-4000-8000-000000000000"
    source = aliunid_source(simulator, measuring_points=[wanted, unknown])
    async with producing(source, memory_sink):
        await memory_sink.wait_for(lambda items: data_count(items) >= 4)
    assert {key for key, _ in memory_sink.items} == {wanted.encode()}
    assert {orjson.loads(f)["id"] for f in simulator.frames_for(1)} == {wanted}


async def test_wrong_api_key_fails_fast_without_retrying(
    simulator: AliunidSimulator, memory_sink: MemorySink
) -> None:
    source = aliunid_source(simulator, api_key=register_secret("wrong-key-value"))
    async with asyncio.timeout(2):
        with pytest.raises(UpstreamAuthError) as info:
            await run_source(source, memory_sink, asyncio.Event())
    assert str(info.value) == (
        f"source 'aliunid-test': upstream refused the credentials: HTTP 401 "
        f"url={simulator.url}?apiKey=***"
    )
    assert simulator.handshakes_rejected == 1
    assert simulator.connections_accepted == 0
    assert memory_sink.items == []


async def test_wrong_business_id_is_rejected_as_permanent(
    simulator: AliunidSimulator, memory_sink: MemorySink
) -> None:
    # A 404 means the URL (business id) is wrong: retrying cannot fix it, so fail at start-up.
    url = simulator.url.replace(BUSINESS, "00000000-0000-0000-0000-000000000000")
    source = aliunid_source(simulator, url=url)
    async with asyncio.timeout(2):
        with pytest.raises(UpstreamRejectedError, match=r"rejected the connection: HTTP 404 url="):
            await run_source(source, memory_sink, asyncio.Event())
    assert simulator.handshakes_rejected == 1
    assert simulator.connections_accepted == 0


async def test_reconnects_after_a_drop_and_frames_continue(
    simulator: AliunidSimulator, memory_sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    source = aliunid_source(simulator)
    async with producing(source, memory_sink):
        await memory_sink.wait_for(lambda items: data_count(items, 1) >= 3)
        assert await simulator.drop_connections() == 1
        await memory_sink.wait_for(lambda items: data_count(items, 2) >= 3)
    assert simulator.connections_accepted == 2
    second = [e.payload for e in memory_sink.envelopes if e.meta["connection"] == 2]
    assert second == simulator.frames_for(2)[: len(second)]
    lost = [
        r.getMessage() for r in caplog.records if "connection lost; reconnecting" in r.getMessage()
    ]
    assert len(lost) == 1
    assert "connection=1" in lost[0]
    assert "delay_s=" in lost[0]
    assert "reason=connection dropped without a close frame" in lost[0]


async def test_simulator_disconnects_a_client_that_sends_a_message(
    simulator: AliunidSimulator,
) -> None:
    url = f"{simulator.url}?apiKey={quote(API_KEY, safe='')}"

    async def read_until_closed() -> None:
        while True:
            await websocket.recv()

    async with asyncio.timeout(WAIT_TIMEOUT), connect(url, ping_interval=None) as websocket:
        await websocket.send('{"type": "subscribe"}')
        with pytest.raises(ConnectionClosedError) as info:
            await read_until_closed()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1008
    assert info.value.rcvd.reason == "client messages are not supported"
    assert simulator.client_messages == 1


async def test_simulator_answers_pings(simulator: AliunidSimulator) -> None:
    url = f"{simulator.url}?apiKey={quote(API_KEY, safe='')}"
    async with asyncio.timeout(WAIT_TIMEOUT), connect(url, ping_interval=None) as websocket:
        latency = await (await websocket.ping())
        assert latency >= 0
        assert simulator.client_messages == 0
        assert orjson.loads(await websocket.recv())["type"] == "structure"


async def test_api_key_never_appears_in_logs(
    simulator: AliunidSimulator, memory_sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = "wrong-key-" + API_KEY[::-1]
    async with asyncio.timeout(WAIT_TIMEOUT):
        with pytest.raises(UpstreamAuthError):
            await run_source(
                aliunid_source(simulator, api_key=wrong_key), MemorySink(), asyncio.Event()
            )
    async with producing(aliunid_source(simulator), memory_sink):
        await memory_sink.wait_for(lambda items: data_count(items, 1) >= 2)
        await simulator.drop_connections()
        await memory_sink.wait_for(lambda items: data_count(items, 2) >= 2)

    forms = {API_KEY, quote(API_KEY, safe=""), quote_plus(API_KEY, safe="")}
    forms |= {wrong_key, quote(wrong_key, safe="")}
    texts = [caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    texts += [r.exc_text or "" for r in caplog.records]
    for text in texts:
        for form in forms:
            assert form not in text
    # The run really logged the request lines (with the key masked) and the reconnect.
    assert "GET /web/api/data-export/v1/businesses/" in caplog.text
    assert "apiKey=***" in caplog.text
    assert "connection lost; reconnecting" in caplog.text
    assert "upstream refused the credentials" in caplog.text
    assert any(r.levelno == logging.DEBUG for r in caplog.records)

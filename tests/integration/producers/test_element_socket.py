"""The ELEMENT IoT producer against the ELEMENT simulator over real sockets (no Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, quote_plus

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedOK, InvalidStatus

from pipeline.models import Measurement
from pipeline.normalize.element import normalize
from producers.envelope import encode_envelope
from producers.errors import UpstreamAuthError, UpstreamRejectedError
from producers.simulators.element import ElementSimulator
from producers.sources.element import ElementSource, ElementStats, run_element
from tests.integration.producers.helpers import WAIT_TIMEOUT, Items, MemorySink
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration

KEY = register_secret("el-live/46cb+688e=2c0b&x")
EPOCH = "2000-01-01T00:00:00Z"


@pytest.fixture
async def simulator() -> AsyncIterator[ElementSimulator]:
    async with ElementSimulator(KEY, interval=0.05, seed=7) as sim:
        yield sim


def element_source(sim: ElementSimulator, **overrides: Any) -> ElementSource:
    values: dict[str, Any] = {
        "name": "element-test",
        "kind": "element",
        "url": sim.url,
        "api_key": KEY,
        "scope": "stream",
        "scope_id": sim.stream_id,
        "backoff_initial": 0.02,
        "backoff_max": 0.1,
        "open_timeout": 5.0,
    }
    values.update(overrides)
    return ElementSource(**values)


@contextlib.asynccontextmanager
async def producing(
    source: ElementSource, sink: MemorySink, stats: ElementStats | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """Run the producer during the block; stop it and re-raise what it raised."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_element(source, sink, stop, stats=stats))
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(WAIT_TIMEOUT):
            await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def more_than(count: int) -> Callable[[Items], bool]:
    return lambda items: len(items) > count


def socket_url(sim: ElementSimulator, path: str, query: str = "") -> str:
    return f"{sim.url}{path}?auth={quote(KEY, safe='')}{query}"


def delivered(items: Items) -> list[tuple[str, str]]:
    """(id, inserted_at) of every event published, minus those flagged as duplicates."""
    out = []
    for _, envelope in items:
        skip = set(envelope.meta.get("duplicates", []))
        for event in orjson.loads(envelope.payload):
            if event["body"]["id"] not in skip:
                out.append((event["body"]["id"], event["body"]["inserted_at"]))
    return out


def history(sim: ElementSimulator, socket: str = "readings") -> list[tuple[str, str]]:
    return [(e.id, e.inserted_at) for e in sim.history if e.socket == socket]


async def test_frames_are_published_unchanged_and_keyed_by_device(
    simulator: ElementSimulator,
) -> None:
    sink = MemorySink()
    async with producing(element_source(simulator), sink):
        await sink.wait_for(lambda items: len(items) >= 12)
    assert [e.payload for e in sink.envelopes] == simulator.frames_for(1)[: len(sink.items)]
    for key, envelope in sink.items:
        (event,) = orjson.loads(envelope.payload)
        assert event["event"] == "reading_added"
        assert key == event["body"]["device_id"].encode()
        assert envelope.source == "element"
        assert envelope.stream == "element-test"
        assert envelope.meta == {"connection": 1}
        wire = encode_envelope(envelope).decode()
        assert KEY not in wire
        assert quote(KEY, safe="") not in wire
        assert normalize(envelope)  # every live reading has values


async def test_device_packets_socket_gets_only_that_device(simulator: ElementSimulator) -> None:
    device = simulator.devices[2].id
    source = element_source(simulator, scope="device", scope_id=device, socket="packets")
    sink = MemorySink()
    async with producing(source, sink):
        await sink.wait_for(lambda items: len(items) >= 4)
    for key, envelope in sink.items:
        (event,) = orjson.loads(envelope.payload)
        assert event["event"] == "packet_added"
        assert key == device.encode()
        metrics = {getattr(r, "metric", None) for r in normalize(envelope)}
        assert metrics == {"radio.rssi", "radio.snr"}


async def test_mandate_socket_gets_every_device() -> None:
    async with ElementSimulator(KEY, interval=0.02, seed=9) as sim:
        sink = MemorySink()
        async with producing(element_source(sim, scope="mandate", scope_id=None), sink):
            await sink.wait_for(
                lambda items: {k for k, _ in items} >= {d.id.encode() for d in sim.devices}
            )


@pytest.mark.parametrize("status", [403, 401])
async def test_wrong_key_fails_fast_without_retrying(status: int) -> None:
    async with ElementSimulator(KEY, interval=0.05, seed=1, auth_failure_status=status) as sim:
        sink = MemorySink()
        async with asyncio.timeout(2):
            with pytest.raises(UpstreamAuthError) as info:
                await run_element(
                    element_source(sim, api_key=register_secret("wrong-key-1")),
                    sink,
                    asyncio.Event(),
                )
        assert str(info.value) == (
            f"source 'element-test': upstream refused the credentials: HTTP {status} "
            f"url={sim.url}/api/v1/streams/{sim.stream_id}/readings/socket?auth=***"
        )
        assert sim.handshakes_rejected == 1
        assert sim.connections_accepted == 0
        assert sink.items == []


async def test_unknown_scope_id_is_rejected_as_permanent(simulator: ElementSimulator) -> None:
    source = element_source(simulator, scope="tag", scope_id="no-such-tag")
    async with asyncio.timeout(2):
        with pytest.raises(UpstreamRejectedError, match="HTTP 404"):
            await run_element(source, MemorySink(), asyncio.Event())


async def test_simulator_refuses_an_unparsable_after(simulator: ElementSimulator) -> None:
    url = socket_url(simulator, "/api/v1/readings/socket", "&after=yesterday")
    with pytest.raises(InvalidStatus) as info:
        async with asyncio.timeout(WAIT_TIMEOUT), connect(url):
            pass
    assert info.value.response.status_code == 400


async def test_simulator_replays_after_in_order_then_goes_live(
    simulator: ElementSimulator,
) -> None:
    for _ in range(5):  # 20 readings in the history, whatever the ticker did meanwhile
        simulator.next_tick_events()
    past = history(simulator)
    after = past[9][1]
    url = socket_url(simulator, "/api/v1/readings/socket", f"&after={quote(after, safe='')}")
    got: list[tuple[str, str]] = []
    async with asyncio.timeout(WAIT_TIMEOUT), connect(url) as websocket:
        while len(got) < len(past) + 8:
            for event in orjson.loads(await websocket.recv()):
                got.append((event["body"]["id"], event["body"]["inserted_at"]))
    assert got[: len(past) - 10] == past[10:]
    assert got == history(simulator)[10 : 10 + len(got)]


async def test_idle_timeout_closes_a_client_that_does_not_ping() -> None:
    async with ElementSimulator(KEY, interval=0.05, seed=2, idle_timeout=0.3) as sim:
        url = socket_url(sim, "/api/v1/readings/socket")
        loop = asyncio.get_running_loop()

        async def read_until_closed() -> None:
            while True:
                await websocket.recv()  # server traffic does not keep it open

        opened = loop.time()  # before connecting: the server's idle clock starts at accept
        async with asyncio.timeout(WAIT_TIMEOUT), connect(url, ping_interval=None) as websocket:
            with pytest.raises(ConnectionClosedOK) as info:
                await read_until_closed()
        assert loop.time() - opened >= 0.3
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1000
        assert sim.idle_closes == 1


async def test_text_ping_is_answered_with_pong() -> None:
    async with ElementSimulator(KEY, interval=5.0, seed=2) as sim:
        url = socket_url(sim, "/api/v1/readings/socket")
        async with asyncio.timeout(WAIT_TIMEOUT), connect(url, ping_interval=None) as websocket:
            await websocket.send("ping")
            assert await websocket.recv() == "pong"
            await websocket.send("hello")
            await websocket.send("ping")
            assert await websocket.recv() == "pong"
        assert sim.text_pings == 2
        assert sim.client_messages == 1


@pytest.mark.parametrize(("keepalive", "ping_interval"), [("protocol", 0.1), ("text", 0.1)])
async def test_producer_keepalive_keeps_the_connection_open(
    keepalive: str, ping_interval: float
) -> None:
    async with ElementSimulator(KEY, interval=0.05, seed=3, idle_timeout=0.6) as sim:
        source = element_source(sim, keepalive=keepalive, ping_interval=ping_interval)
        stats = ElementStats()
        sink = MemorySink()
        async with producing(source, sink, stats):
            async with asyncio.timeout(WAIT_TIMEOUT):
                while sim.protocol_pings + sim.text_pings < 15:  # >= 1.5 s: 2.5 idle periods
                    await sink.wait_for(more_than(len(sink.items)))
        assert sim.idle_closes == 0
        assert sim.connections_accepted == 1
        assert all(e.payload != "pong" for e in sink.envelopes)
        if keepalive == "text":
            assert sim.protocol_pings == 0
            assert stats.pings_total >= 15
            assert stats.pongs_total >= 13
        else:
            assert sim.text_pings == 0


async def test_pings_slower_than_the_idle_timeout_get_the_producer_closed() -> None:
    # The control for the test above: without timely pings the server closes, and the producer
    # resumes from where it was, losing nothing.
    async with ElementSimulator(KEY, interval=0.05, seed=4, idle_timeout=0.3) as sim:
        source = element_source(sim, ping_interval=5.0, after=EPOCH)
        sink = MemorySink()
        async with producing(source, sink):
            await sink.wait_for(lambda items: sim.idle_closes >= 2 and len(items) > 10)
        assert sim.connections_accepted >= 3
        got = delivered(sink.items)
        assert got == history(sim)[: len(got)]


async def test_text_keepalive_gives_up_on_a_server_that_never_answers() -> None:
    connections: list[int] = []
    reconnected = asyncio.Event()

    async def mute(websocket: ServerConnection) -> None:
        connections.append(len(connections) + 1)
        if len(connections) >= 2:
            reconnected.set()
        async for _ in websocket:  # reads our pings, never answers
            pass

    async with serve(mute, "127.0.0.1", 0, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        source = ElementSource(
            name="element-test",
            kind="element",
            url=f"ws://127.0.0.1:{port}",
            api_key=KEY,
            scope="mandate",
            keepalive="text",
            ping_interval=0.05,
            backoff_initial=0.01,
            backoff_max=0.02,
        )
        async with producing(source, MemorySink()):
            async with asyncio.timeout(WAIT_TIMEOUT):
                await reconnected.wait()  # after 3 pings without a pong (0.15 s)


@pytest.mark.parametrize(
    ("after_inclusive", "replay_batch"), [(False, 1), (True, 1), (True, 4), (False, 3)]
)
async def test_replay_with_a_drop_every_5_frames_delivers_the_whole_history_once(
    after_inclusive: bool, replay_batch: int
) -> None:
    # No live ticks during the test (interval 60 s): the history is fixed, so what the producer
    # delivers must equal it exactly, although the server drops it every 5 frames.
    async with ElementSimulator(
        KEY,
        interval=60.0,
        seed=6,
        drop_every=5,
        after_inclusive=after_inclusive,
        replay_batch=replay_batch,
    ) as sim:
        for _ in range(15):
            sim.next_tick_events()
        expected = history(sim)
        assert len(expected) == 60
        sink = MemorySink()
        async with producing(element_source(sim, after=EPOCH), sink):
            await sink.wait_for(lambda items: len(delivered(items)) >= len(expected), 30.0)
            drops = sim.chaos_drops
            # One more tick, reachable only by replay, then a drop: the resume from the end
            # must bring exactly those readings.
            sim.next_tick_events()
            await sim.drop_connections()
            expected = history(sim)
            await sink.wait_for(lambda items: len(delivered(items)) >= len(expected))
        got = delivered(sink.items)
        assert len(expected) == 63  # tick 16: the silent device has gone quiet
        assert Counter(got) == Counter(expected)
        assert got == expected
        assert drops >= 60 // (5 * replay_batch) - 1


@pytest.mark.parametrize(
    ("after_inclusive", "replay_batch"), [(False, 1), (True, 1), (True, 4), (False, 3)]
)
async def test_live_drops_every_5_frames_lose_and_duplicate_nothing(
    after_inclusive: bool, replay_batch: int
) -> None:
    async with ElementSimulator(
        KEY,
        interval=0.02,
        seed=5,
        drop_every=5,
        after_inclusive=after_inclusive,
        replay_batch=replay_batch,
    ) as sim:
        stats = ElementStats()
        sink = MemorySink()
        async with producing(element_source(sim, after=EPOCH), sink, stats):
            await sink.wait_for(
                lambda items: sim.chaos_drops >= 8 and len(delivered(items)) >= 80, 30.0
            )
        got = delivered(sink.items)
        expected = history(sim)
        assert Counter(got) == Counter(expected[: len(got)])  # the same multiset...
        assert got == expected[: len(got)]  # ...in order: nothing lost, nothing twice
        assert sim.connections_accepted >= 9
        flagged = sum(len(e.meta.get("duplicates", [])) for e in sink.envelopes)
        if after_inclusive:
            assert stats.duplicates_total + flagged > 0
        else:
            assert stats.duplicates_total == flagged == 0
        # Normalizing skips the flagged events: one air_temperature per SHT35 reading.
        temperatures = [
            r
            for e in sink.envelopes
            for r in normalize(e)
            if isinstance(r, Measurement) and r.metric == "air_temperature"
        ]
        sht35 = {d.id for d in sim.devices if d.kind == "sht35"}
        readings = {i for i, _ in got}
        assert len(temperatures) == sum(
            1 for e in sim.history if e.id in readings and e.device_id in sht35
        )


async def test_server_drop_resumes_after_the_last_insert(simulator: ElementSimulator) -> None:
    sink = MemorySink()
    async with producing(element_source(simulator), sink):
        await sink.wait_for(lambda items: len(items) >= 8)
        assert await simulator.drop_connections() == 1
        await sink.wait_for(lambda items: any(e.meta["connection"] == 2 for _, e in items))
        await sink.wait_for(lambda items: len(items) >= 20)
    first = [e for e in sink.envelopes if e.meta["connection"] == 1]
    last_seen = orjson.loads(first[-1].payload)[-1]["body"]["inserted_at"]
    resumed = orjson.loads(simulator.frames_for(2)[0])[0]["body"]
    full = history(simulator)
    assert (
        full.index((resumed["id"], resumed["inserted_at"]))
        == full.index(next(h for h in full if h[1] == last_seen)) + 1
    )
    got = delivered(sink.items)
    assert got == full[: len(got)]


async def test_key_never_appears_in_logs(
    simulator: ElementSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-key-" + KEY[::-1]
    async with asyncio.timeout(WAIT_TIMEOUT):
        with pytest.raises(UpstreamAuthError):
            await run_element(
                element_source(simulator, api_key=wrong), MemorySink(), asyncio.Event()
            )
    sink = MemorySink()
    async with producing(element_source(simulator, keepalive="text", ping_interval=0.05), sink):
        await sink.wait_for(lambda items: len(items) >= 3)
        await simulator.drop_connections()
        await sink.wait_for(lambda items: any(e.meta["connection"] == 2 for _, e in items))

    forms = {KEY, quote(KEY, safe=""), quote_plus(KEY, safe=""), wrong, quote(wrong, safe="")}
    texts = [caplog.text, *(r.getMessage() for r in caplog.records)]
    texts += [r.exc_text or "" for r in caplog.records]
    for text in texts:
        for form in forms:
            assert form not in text
    assert f"GET /api/v1/streams/{simulator.stream_id}/readings/socket?auth=***" in caplog.text
    assert "&after=" in caplog.text  # the reconnect resumed
    assert "connection lost; reconnecting" in caplog.text
    assert "upstream refused the credentials" in caplog.text

"""The Nobil producer against the Nobil simulator over real sockets (no Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, quote_plus

import orjson
import pytest

from pipeline.normalize.nobil import normalize
from producers.envelope import RawEnvelope, encode_envelope
from producers.errors import UpstreamAuthError, UpstreamRejectedError
from producers.simulators.nobil import NobilSimulator
from producers.sources.nobil import NobilSource, run_nobil
from tests.integration.producers.helpers import WAIT_TIMEOUT, Items, MemorySink
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration

# Characters that must be percent-encoded, so a leak of the raw or encoded form is caught.
KEY = register_secret("nb-live/7f3a+9c1e=5b2d&x")


@pytest.fixture
async def simulator() -> AsyncIterator[NobilSimulator]:
    async with NobilSimulator(KEY, stations=5, interval=0.05, seed=7) as sim:
        yield sim


def nobil_source(sim: NobilSimulator, **overrides: Any) -> NobilSource:
    values: dict[str, Any] = {
        "name": "nobil-test",
        "kind": "nobil",
        "url": sim.url,
        "api_key": KEY,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "open_timeout": 5.0,
    }
    values.update(overrides)
    return NobilSource(**values)


@contextlib.asynccontextmanager
async def producing(source: NobilSource, sink: MemorySink) -> AsyncIterator[asyncio.Task[None]]:
    """Run the producer during the block; stop it and re-raise what it raised."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_nobil(source, sink, stop))
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


def on(items: Items, connection: int) -> list[RawEnvelope]:
    return [e for _, e in items if e.meta["connection"] == connection]


class Model:
    """Independent oracle of the producer's snapshot: replays the payloads it published."""

    def __init__(self) -> None:
        self.stations: dict[str, dict[str, Any]] | None = None

    def expected_meta(self, frame: dict[str, Any]) -> dict[str, Any]:
        data = frame["data"]
        if frame["type"] == "snapshot:init":
            fresh = {
                s["uuid"]: {"status": s["status"], "connectors": copy.deepcopy(s["connectors"])}
                for s in data
            }
            old, self.stations = self.stations, fresh
            if old is None:
                return {}
            return {"previous": {u: old.get(u) for u, s in fresh.items() if old.get(u) != s}}
        assert self.stations is not None
        previous = self.stations.get(data["uuid"])
        if frame["type"] == "status:update":
            self.stations[data["uuid"]] = {
                "status": data["status"],
                "connectors": copy.deepcopy(data["connectors"]),
            }
            return {"previous": previous}
        assert previous is not None
        connector = previous["connectors"][data["connector"]]
        before = dict(connector)
        connector.update({k: data[k] for k in ("status", "error", "timestamp")})
        return {"previous": before}


async def test_frames_are_published_unchanged_keyed_with_previous_state(
    simulator: NobilSimulator,
) -> None:
    sink = MemorySink()
    async with producing(nobil_source(simulator), sink):
        await sink.wait_for(lambda items: len(items) >= 30)
    sent = simulator.frames_for(1)
    assert [e.payload for e in sink.envelopes] == sent[: len(sink.items)]
    model = Model()
    for index, (key, envelope) in enumerate(sink.items):
        frame = orjson.loads(envelope.payload)
        assert (frame["type"] == "snapshot:init") == (index == 0)
        assert key == (None if index == 0 else frame["data"]["uuid"].encode())
        assert envelope.source == "nobil"
        assert envelope.stream == "nobil-test"
        assert envelope.meta == {"connection": 1, **model.expected_meta(frame)}
        wire = encode_envelope(envelope).decode()
        assert KEY not in wire
        assert quote(KEY, safe="") not in wire
    assert {orjson.loads(e.payload)["type"] for e in sink.envelopes} == {
        "snapshot:init",
        "status:update",
        "status:raw",
    }


async def test_reconnect_snapshot_resets_and_reports_what_changed_meanwhile(
    simulator: NobilSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sink = MemorySink()
    async with producing(nobil_source(simulator), sink):
        await sink.wait_for(lambda items: len(on(items, 1)) >= 10)
        assert await simulator.drop_connections() == 1
        # A change nobody announced: it happens while the producer is away.
        away = simulator.stations[1].connectors[0]
        away.error, away.timestamp = 1, simulator.now_ms()
        await sink.wait_for(lambda items: len(on(items, 2)) >= 10)
    assert simulator.connections_accepted == 2
    model = Model()
    for envelope in sink.envelopes:
        frame = orjson.loads(envelope.payload)
        assert {k: v for k, v in envelope.meta.items() if k != "connection"} == (
            model.expected_meta(frame)
        ), frame["type"]
    resync = on(sink.items, 2)[0]
    assert orjson.loads(resync.payload)["type"] == "snapshot:init"
    changed = resync.meta["previous"]
    uuid = simulator.stations[1].uuid
    assert changed[uuid]["connectors"][0]["error"] == 0
    # The normalizer turns the resync into changes only, the hidden error among them.
    events = {(e.entity, e.name): e for e in normalize(resync)}
    assert events[(f"{uuid}/0", "error")].value == "error"
    assert events[(f"{uuid}/0", "error")].previous == "ok"
    assert {e.entity.split("/")[0] for e in events.values()} <= set(changed)
    second = [e.payload for e in on(sink.items, 2)]
    assert second == simulator.frames_for(2)[: len(second)]
    lost = [r.getMessage() for r in caplog.records if "connection lost" in r.getMessage()]
    assert len(lost) == 1
    assert "reason=connection dropped without a close frame" in lost[0]


@pytest.mark.parametrize("param", ["apikey", "key"])
async def test_both_key_parameter_names(param: str) -> None:
    other = "key" if param == "apikey" else "apikey"
    async with NobilSimulator(KEY, interval=0.05, seed=1, key_params=(param,)) as sim:
        sink = MemorySink()
        async with producing(nobil_source(sim, key_param=param), sink):
            await sink.wait_for(lambda items: len(items) >= 1)
        assert orjson.loads(sink.envelopes[0].payload)["type"] == "snapshot:init"
        async with asyncio.timeout(2):
            with pytest.raises(UpstreamAuthError, match=rf"HTTP 401 url=.*\?{other}=\*\*\*$"):
                await run_nobil(nobil_source(sim, key_param=other), MemorySink(), asyncio.Event())
        assert sim.handshakes_rejected == 1


async def test_wrong_key_fails_fast_without_retrying(simulator: NobilSimulator) -> None:
    sink = MemorySink()
    async with asyncio.timeout(2):
        with pytest.raises(UpstreamAuthError) as info:
            await run_nobil(
                nobil_source(simulator, api_key=register_secret("wrong-key-1")),
                sink,
                asyncio.Event(),
            )
    assert str(info.value) == (
        "source 'nobil-test': upstream refused the credentials: HTTP 401 "
        f"url={simulator.url}?apikey=***"
    )
    assert simulator.handshakes_rejected == 1
    assert simulator.connections_accepted == 0
    assert sink.items == []


async def test_wrong_path_is_rejected_as_permanent(simulator: NobilSimulator) -> None:
    url = simulator.url.replace("/api/v1/stream", "/api/v1/stream/realtime")
    async with asyncio.timeout(2):
        with pytest.raises(UpstreamRejectedError, match="HTTP 404"):
            await run_nobil(nobil_source(simulator, url=url), MemorySink(), asyncio.Event())


async def test_keepalive_pings_reach_the_server(simulator: NobilSimulator) -> None:
    sink = MemorySink()
    async with producing(nobil_source(simulator, ping_interval=0.05), sink):
        async with asyncio.timeout(WAIT_TIMEOUT):
            while simulator.protocol_pings < 3:  # frames arrive every 50 ms meanwhile
                await sink.wait_for(more_than(len(sink.items)))
    assert simulator.connections_accepted == 1


async def test_enova_format() -> None:
    async with NobilSimulator(KEY, interval=0.02, seed=3, format="enova") as sim:
        source = nobil_source(sim, format="enova", key_param="access_token")
        sink = MemorySink()
        async with producing(source, sink):
            await sink.wait_for(lambda items: len(items) >= 25)
    assert [e.payload for e in sink.envelopes] == sim.frames_for(1)[: len(sink.items)]
    last: dict[tuple[str, str], str] = {}
    for key, envelope in sink.items:
        frame = orjson.loads(envelope.payload)
        assert list(frame) == ["nobilId", "evseUId", "status"]
        assert key == frame["nobilId"].encode()
        evse = (frame["nobilId"], frame["evseUId"])
        assert envelope.meta == {"connection": 1, "previous": last.get(evse)}
        last[evse] = frame["status"]
        for event in normalize(envelope):
            assert event.entity == f"{frame['nobilId']}/{frame['evseUId']}"
            assert event.value == frame["status"].lower()
    assert any(e.meta["previous"] is not None for e in sink.envelopes)


async def test_key_never_appears_in_logs(
    simulator: NobilSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-key-" + KEY[::-1]
    async with asyncio.timeout(WAIT_TIMEOUT):
        with pytest.raises(UpstreamAuthError):
            await run_nobil(nobil_source(simulator, api_key=wrong), MemorySink(), asyncio.Event())
    sink = MemorySink()
    async with producing(nobil_source(simulator, key_param="key"), sink):
        await sink.wait_for(lambda items: len(on(items, 1)) >= 2)
        await simulator.drop_connections()
        await sink.wait_for(lambda items: len(on(items, 2)) >= 2)

    forms = {KEY, quote(KEY, safe=""), quote_plus(KEY, safe=""), wrong, quote(wrong, safe="")}
    texts = [caplog.text, *(r.getMessage() for r in caplog.records)]
    texts += [r.exc_text or "" for r in caplog.records]
    for text in texts:
        for form in forms:
            assert form not in text
    assert "GET /api/v1/stream?apikey=***" in caplog.text
    assert "GET /api/v1/stream?key=***" in caplog.text
    assert "connection lost; reconnecting" in caplog.text
    assert "upstream refused the credentials" in caplog.text

"""The Hemis producer against the simulator over real sockets (no Kafka)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.models import Measurement
from pipeline.normalize.hemis import MESSAGE_TYPES, normalize
from producers.envelope import RawEnvelope, encode_envelope
from producers.errors import UpstreamAuthError, UpstreamRejectedError
from producers.simulators.hemis import HemisSimulator
from producers.sources.hemis import (
    build_envelope,
    credentials_provider,
    destinations,
    endpoint,
    frame_key,
    run_hemis,
    stomp_options,
)
from producers.transports.stomp import StompClient, StompMessage
from tests.integration.producers.helpers import MemorySink
from tests.integration.producers.hemis_helpers import (
    BUILDING,
    TOKEN,
    WAIT_TIMEOUT,
    assert_no_stomp_threads,
    hemis_source,
    on_connection,
    payload_text,
    poll_until,
    producing,
    self_signed,
)
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    yield
    assert_no_stomp_threads()


@pytest.fixture
async def sim() -> AsyncIterator[HemisSimulator]:
    simulator = HemisSimulator(BUILDING, TOKEN, interval=0.05, seed=7)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def count(sink: MemorySink, connection: int = 1) -> int:
    return sum(1 for e in sink.envelopes if e.meta["connection"] == connection)


async def run_until_error(source: Any, sink: MemorySink, seconds: float = WAIT_TIMEOUT) -> None:
    async with asyncio.timeout(seconds):
        await run_hemis(source, sink, asyncio.Event())


# --- happy path --------------------------------------------------------------------------------


async def test_messages_are_published_unchanged_and_keyed(sim: HemisSimulator) -> None:
    sink = MemorySink()
    async with producing(hemis_source(sim), sink):
        await sink.wait_for(lambda items: len(items) >= 25)
    sent = sim.frames_for(1)
    got = [e.payload for e in sink.envelopes]
    assert got == sent[: len(got)]  # byte for byte, in order
    assert len(got) >= 25
    for key, envelope in sink.items:
        frame = orjson.loads(envelope.payload)
        assert key == frame_key(envelope.payload) is not None
        if frame["type"] == "SENSOR_STATE":
            assert key == frame["sensorId"].encode()
        topic = "management" if frame["type"] == "ENTITY_MANAGEMENT" else "data"
        assert envelope.source == "hemis"
        assert envelope.stream == "hemis-test"
        assert envelope.meta["destination"] == f"jms.topic.{BUILDING}.{topic}"
        assert envelope.meta["subscription"] == ("sub-1" if topic == "management" else "sub-0")
        assert envelope.meta["content_type"] == "application/json"
        assert envelope.meta["message_id"].startswith("session-1-")
        assert set(envelope.meta) == {
            "connection",
            "destination",
            "subscription",
            "message_id",
            "content_type",
        }
        assert TOKEN not in encode_envelope(envelope).decode()
    # What the producer sent: CONNECT with login/passcode/heart-beat, v12.stomp offered first.
    assert sim.connect_headers == [
        {
            "accept-version": "1.2",
            "host": "127.0.0.1",
            "login": BUILDING,
            "passcode": TOKEN,
            "heart-beat": "20000,20000",
        }
    ]
    assert sim.subprotocols_selected == ["v12.stomp"]
    assert sim.connections_accepted == 1
    assert sim.auth_failures == 0


async def test_every_type_flows_end_to_end_and_normalizes() -> None:
    sim = HemisSimulator(BUILDING, TOKEN, interval=0.01, seed=3, frame_mode="mixed")
    sink = MemorySink()

    def variants(items: Any) -> set[str]:
        out = set()
        for _, envelope in items:
            frame = orjson.loads(payload_text(envelope))
            out.add(frame["type"])
            if "container" in frame:
                data = frame["container"]["data"]
                shape = "in" if "data_points" in data["header"] else "beside"
                unit = "s" if frame["timestamp"] < 10**11 else "ms"
                out.add(f"{shape}-{unit}")
        return out

    wanted = {*MESSAGE_TYPES, "in-s", "in-ms", "beside-s", "beside-ms"}
    async with sim, producing(hemis_source(sim), sink):
        await sink.wait_for(lambda items: variants(items) >= wanted, wait_timeout=30)
    records = [r for e in sink.envelopes for r in normalize(e)]
    assert {r.annotations["type"] for r in records} == set(MESSAGE_TYPES)
    assert any(e.meta.get("encoding") == "base64" for e in sink.envelopes)
    server_room = [
        r.value
        for r in records
        if isinstance(r, Measurement) and r.metric == "provider.TMP.VALUENB"
    ]
    assert server_room and all(23.0 <= v <= 25.5 for v in server_room)


# --- failures that must stop the producer -------------------------------------------------------


async def test_wrong_token_is_fatal_and_prompt(sim: HemisSimulator) -> None:
    sink = MemorySink()
    started = time.monotonic()
    with pytest.raises(UpstreamAuthError) as info:
        await run_until_error(
            hemis_source(sim, token=register_secret("wrong-token-value")), sink, seconds=5
        )
    assert time.monotonic() - started < 5
    assert str(info.value) == (
        "source 'hemis-test': upstream refused CONNECT (login or passcode): "
        f"message='Authentication failed' body='Invalid login or passcode' url={sim.url}"
    )
    assert "wrong-token-value" not in str(info.value)
    assert sim.connections_accepted == 1
    assert sim.auth_failures == 1
    assert sink.items == []


async def test_refused_subscription_is_fatal(sim: HemisSimulator) -> None:
    theirs = "jms.topic.BLD-other.data"
    source = hemis_source(sim, destinations=["jms.topic.{building_id}.data", theirs])
    with pytest.raises(UpstreamRejectedError) as info:
        await run_until_error(source, MemorySink())
    assert str(info.value) == (
        f"source 'hemis-test': upstream refused the subscription to {theirs}: "
        f"message='Access refused' body=\"not authorized to subscribe to '{theirs}'\""
    )
    assert sim.connections_accepted == 1


async def test_handshake_refusal_is_permanent() -> None:
    strict = HemisSimulator(BUILDING, TOKEN, require_subprotocol=True)
    async with strict:
        with pytest.raises(UpstreamRejectedError, match="rejected the connection: HTTP 400"):
            await run_until_error(hemis_source(strict, subprotocols=[]), MemorySink())
        wrong_path = hemis_source(strict, url=strict.url + "stomp")
        with pytest.raises(UpstreamRejectedError, match="HTTP 404"):
            await run_until_error(wrong_path, MemorySink())
    assert strict.connections_accepted == 0


# --- keepalive, drops, token refresh ------------------------------------------------------------


async def test_heartbeats_keep_the_connection_alive() -> None:
    # The server drops a client silent for 2 x 200 ms; the producer only sends heart-beats.
    sim = HemisSimulator(BUILDING, TOKEN, interval=60, heartbeat_ms=(200, 200))
    sink = MemorySink()
    async with (
        sim,
        producing(hemis_source(sim, heartbeat_send_ms=200, heartbeat_receive_ms=200), sink),
    ):
        await poll_until(lambda: sim.heartbeats_received >= 10)  # >= 2 s of heart-beating
        assert sim.heartbeats_sent >= 5  # and the server's own reached us
        assert sim.heartbeat_drops == 0
        assert sim.connections_accepted == 1
        assert sim.connections_active == 1


async def test_reconnects_after_a_drop(
    sim: HemisSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sink = MemorySink()
    async with producing(hemis_source(sim), sink):
        await sink.wait_for(lambda items: count(sink, 1) >= 5)
        assert await sim.drop_connections() == 1
        await sink.wait_for(lambda items: count(sink, 2) >= 5)
    assert sim.connections_accepted == 2
    assert on_connection(sink.envelopes, 2) == sim.frames_for(2)[: count(sink, 2)]
    lost = [r.getMessage() for r in caplog.records if "connection lost" in r.getMessage()]
    assert len(lost) == 1
    assert "connection=1" in lost[0]
    assert "reason=connection dropped without a close frame" in lost[0]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (
            {"heartbeat_send_ms": 0, "heartbeat_receive_ms": 200},
            "no heart-beat from upstream in time (heart-beat timeout)",
        ),
        (
            {"heartbeat_send_ms": 0, "heartbeat_receive_ms": 0, "idle_timeout": 0.5},
            "no frame for 0.5s (idle_timeout)",
        ),
    ],
)
async def test_a_silent_upstream_is_detected_and_replaced(
    overrides: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim = HemisSimulator(BUILDING, TOKEN, interval=0.05, heartbeat_ms=(100, 0))
    sink = MemorySink()
    async with sim, producing(hemis_source(sim, **overrides), sink):
        await sink.wait_for(lambda items: count(sink, 1) >= 3)
        assert sim.freeze_connections() == 1  # TCP stays open, nothing more arrives
        await sink.wait_for(lambda items: count(sink, 2) >= 3)
    lost = [r.getMessage() for r in caplog.records if "connection lost" in r.getMessage()]
    assert len(lost) == 1
    assert f"reason={reason}" in lost[0]
    assert on_connection(sink.envelopes, 1) == sim.frames_for(1)


async def test_oversized_messages_are_reported_not_published(
    sim: HemisSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    sink = MemorySink()
    async with producing(hemis_source(sim, max_frame_bytes=200), sink):
        await sink.wait_for(lambda items: len(items) >= 10)
        await poll_until(lambda: "message too large" in caplog.text)
    small = [f for f in sim.frames_for(1) if len(f.encode()) <= 200]
    assert [e.payload for e in sink.envelopes] == small[: len(sink.items)]
    assert "max_frame_bytes=200" in caplog.text
    # Nothing is dropped silently: every oversized message is dead-lettered with its start.
    assert sink.dead_letters
    large = [f for f in sim.frames_for(1) if len(f.encode()) > 200]
    for letter, frame in zip(sink.dead_letters, large, strict=False):
        assert (letter.source, letter.stream) == ("hemis", "hemis-test")
        assert letter.reason == f"frame of {len(frame.encode())} bytes exceeds max_frame_bytes=200"
        assert letter.excerpt == frame.encode()[:1024].decode("utf-8", "ignore")


async def test_stop_is_prompt_and_graceful(sim: HemisSimulator) -> None:
    sink = MemorySink()
    stop = asyncio.Event()
    task = asyncio.create_task(run_hemis(hemis_source(sim), sink, stop))
    await sink.wait_for(lambda items: len(items) >= 3)
    started = time.monotonic()
    stop.set()
    async with asyncio.timeout(WAIT_TIMEOUT):
        await task
    assert time.monotonic() - started < 2.0
    # DISCONNECT answered, connection closed (the server notices the close a moment later).
    async with asyncio.timeout(WAIT_TIMEOUT):
        while sim.connections_active:  # noqa: ASYNC110 - the simulator has no close event
            await asyncio.sleep(0.01)
    assert [e.payload for e in sink.envelopes] == sim.frames_for(1)  # nothing left behind


async def test_token_refresh_reconnects_with_the_fresh_token_losing_nothing(
    sim: HemisSimulator, tmp_path: Path
) -> None:
    token_file = tmp_path / "hemis_token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    sink = MemorySink()
    async with producing(hemis_source(sim, token_file=str(token_file)), sink):
        await sink.wait_for(lambda items: count(sink, 1) >= 10)
        fresh = sim.issue_token()
        staging = tmp_path / "hemis_token.new"
        staging.write_text(fresh, encoding="utf-8")
        os.replace(staging, token_file)  # atomic, as the docs ask
        sim.expire_token(TOKEN)
        await sink.wait_for(lambda items: count(sink, 2) >= 5)
    # Every message the server sent before the expiry ERROR was published, in order.
    assert on_connection(sink.envelopes, 1) == sim.frames_for(1)
    assert sim.tokens_expired == 1
    assert [h["passcode"] for h in sim.connect_headers] == [TOKEN, fresh]
    assert sim.auth_failures == 0


async def test_expired_static_token_stops_after_publishing_everything(
    sim: HemisSimulator,
) -> None:
    sink = MemorySink()
    task = asyncio.create_task(run_hemis(hemis_source(sim), sink, asyncio.Event()))
    await sink.wait_for(lambda items: count(sink, 1) >= 5)
    sim.expire_token(TOKEN)
    with pytest.raises(UpstreamAuthError, match="message='Token expired'"):
        async with asyncio.timeout(WAIT_TIMEOUT):
            await task
    assert on_connection(sink.envelopes, 1) == sim.frames_for(1)
    assert sim.connections_accepted == 2


# --- frame formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame_mode", "trailing_lf"), [("binary", True), ("mixed", False), ("text", False)]
)
async def test_binary_frames_and_frame_endings(frame_mode: Any, trailing_lf: bool) -> None:
    sim = HemisSimulator(
        BUILDING, TOKEN, interval=0.05, seed=1, frame_mode=frame_mode, trailing_lf=trailing_lf
    )
    sink = MemorySink()
    async with sim, producing(hemis_source(sim), sink):
        await sink.wait_for(lambda items: len(items) >= 12)
    sent = list(sim.sent_frames)
    for envelope, frame in zip(sink.envelopes, sent, strict=False):
        assert payload_text(envelope) == frame.body
        if frame.binary:
            assert envelope.meta["encoding"] == "base64"
            assert base64.b64decode(envelope.payload).decode() == frame.body
        else:
            assert "encoding" not in envelope.meta
            assert envelope.payload == frame.body
    assert any(f.binary for f in sent[:12]) == (frame_mode != "text")
    assert all(f.binary for f in sent) == (frame_mode == "binary")


# --- local mode TLS ----------------------------------------------------------------------------

HEMIS_HOST = "hemis-stomp.test"


async def test_local_mode_tls_checks_the_cloud_hostname(tmp_path: Path) -> None:
    cert = self_signed(tmp_path, HEMIS_HOST)
    sim = HemisSimulator(
        BUILDING,
        TOKEN,
        interval=0.05,
        ssl_context=cert.server_context(),
        host_header=HEMIS_HOST,
    )
    sink = MemorySink()
    async with sim:
        local = {
            "url": f"wss://{HEMIS_HOST}:4443",  # what buildings/mine/infos gives
            "local_ip": "127.0.0.1",
            "local_port": sim.port,
            "ca_file": str(cert.cert),
        }
        async with producing(hemis_source(sim, **local), sink):
            await sink.wait_for(lambda items: len(items) >= 5)
        assert sim.handshake_hosts == [HEMIS_HOST]
        assert sim.connect_headers[0]["host"] == HEMIS_HOST
        assert [e.payload for e in sink.envelopes] == sim.frames_for(1)[: len(sink.items)]

        wrong = hemis_source(sim, **{**local, "url": "wss://wrong-name.test:4443"})
        with pytest.raises(UpstreamRejectedError) as info:
            await run_until_error(wrong, MemorySink())
        assert "does not verify for 'wrong-name.test'" in str(info.value)
        assert "Hostname mismatch" in str(info.value)

        unknown_ca = hemis_source(sim, **{**local, "ca_file": None})
        with pytest.raises(UpstreamRejectedError, match=r"certificate verify failed|self.signed"):
            await run_until_error(unknown_ca, MemorySink())
    assert sim.connections_accepted == 1  # the failed handshakes never reached HTTP


# --- backpressure ------------------------------------------------------------------------------


class GatedSink(MemorySink):
    """A sink that does not accept anything until its gate opens (Kafka down)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def send(self, key: bytes | None, envelope: RawEnvelope) -> None:
        await self.gate.wait()
        await super().send(key, envelope)


async def test_backpressure_is_bounded_and_loses_nothing() -> None:
    sim = HemisSimulator(BUILDING, TOKEN, interval=0.01, seed=4)
    sink = GatedSink()
    async with sim:
        source = hemis_source(sim)
        options = dataclasses.replace(stomp_options(source), max_pending=4)

        async def publish(message: StompMessage, connection: int) -> None:
            await sink.send(frame_key(message.body), build_envelope("bp", message, connection))

        client = StompClient(
            endpoint(source),
            credentials_provider(source),
            destinations(source),
            publish,
            name="bp",
            options=options,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        # The server keeps writing while the sink is stuck...
        await poll_until(lambda: sim.frames_sent >= 200)
        assert client.stats.handed_over_total == 4  # ...but only 4 were taken off the socket
        assert client.stats.messages_total == 1  # the one blocked in the sink
        sink.gate.set()
        sent_so_far = sim.frames_for(1)
        await sink.wait_for(lambda items: len(items) >= len(sent_so_far))
        stop.set()
        async with asyncio.timeout(WAIT_TIMEOUT):
            await task
    assert [e.payload for e in sink.envelopes][: len(sent_so_far)] == sent_so_far


# --- secrets -----------------------------------------------------------------------------------


async def test_passcode_never_appears_in_logs(
    sim: HemisSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + TOKEN[::-1]
    with pytest.raises(UpstreamAuthError):
        await run_until_error(hemis_source(sim, token=wrong), MemorySink())
    sink = MemorySink()
    async with producing(hemis_source(sim), sink):
        await sink.wait_for(lambda items: count(sink, 1) >= 3)
        await sim.drop_connections()
        await sink.wait_for(lambda items: count(sink, 2) >= 3)

    texts = [caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    texts += [r.exc_text or "" for r in caplog.records]
    for text in texts:
        assert TOKEN not in text
        assert wrong not in text
        assert TOKEN[:12] not in text  # not even a truncated prefix
    # The run really logged the CONNECT frames (masked), the refusal and the reconnect.
    assert "sending frame:" in caplog.text
    assert "passcode:***" in caplog.text
    assert "upstream refused CONNECT" in caplog.text
    assert "connection lost; reconnecting" in caplog.text
    assert any(r.levelno == logging.DEBUG and r.name == "stomp.py" for r in caplog.records)

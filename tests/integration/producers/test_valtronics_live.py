"""The Valtronics producer against its simulator over real sockets, both variants (no Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from pipeline.normalize.valtronics import normalize
from producers.envelope import encode_envelope
from producers.errors import UpstreamAuthError, UpstreamRejectedError
from producers.simulators.valtronics import ValtronicsSimulator, make_jwt
from producers.sources.valtronics import ValtronicsSource, run_valtronics
from tests.integration.producers.helpers import WAIT_TIMEOUT, Items, MemorySink
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration

TOKEN = register_secret(make_jwt({"sub": "streamwarden-test", "exp": int(time.time()) + 86_400}))
AUTH = {"type": "auth", "token": TOKEN}
DEFAULT_SUBSCRIBES = [
    {"type": "subscribe", "channel": c} for c in ("telemetry", "alerts", "devices", "system")
]


@pytest.fixture
async def doc_sim() -> AsyncIterator[ValtronicsSimulator]:
    async with ValtronicsSimulator(TOKEN, interval=0.05, seed=7) as sim:
        yield sim


@pytest.fixture
async def server_sim() -> AsyncIterator[ValtronicsSimulator]:
    async with ValtronicsSimulator(
        variant="server", interval=0.05, seed=7, heartbeat_interval=0.2
    ) as sim:
        yield sim


def vsource(sim: ValtronicsSimulator, **overrides: Any) -> ValtronicsSource:
    """A source for the running simulator: fast keepalive and reconnects, generous timeouts."""
    values: dict[str, Any] = {
        "name": "valtronics-test",
        "kind": "valtronics",
        "url": sim.url,
        "token": TOKEN,
        "keepalive_interval": 0.2,
        "pong_timeout": 5.0,
        "reply_timeout": 5.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "open_timeout": 5.0,
    }
    values.update(overrides)
    return ValtronicsSource(**values)


@contextlib.asynccontextmanager
async def producing(
    source: ValtronicsSource, sink: MemorySink
) -> AsyncIterator[asyncio.Task[None]]:
    """Run the producer during the block; stop it and check it ended cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_valtronics(source, sink, stop))
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(WAIT_TIMEOUT):
            await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


async def fatal(source: ValtronicsSource, sink: MemorySink, within: float = 5.0) -> BaseException:
    """Run the producer until it fails; it must fail (not retry) within ``within`` seconds."""
    with pytest.raises((UpstreamAuthError, UpstreamRejectedError)) as info:
        async with asyncio.timeout(within):
            await run_valtronics(source, sink, asyncio.Event())
    return info.value


def frames(
    items: Items, frame_type: str | None, connection: int | None = None
) -> list[dict[str, Any]]:
    out = []
    for _, envelope in items:
        if connection is not None and envelope.meta["connection"] != connection:
            continue
        document = orjson.loads(envelope.payload)
        if isinstance(document, dict) and document.get("type") == frame_type:
            out.append(document)
    return out


def devices_with_telemetry(items: Items, connection: int = 1) -> set[Any]:
    return {f["device_id"] for f in frames(items, "telemetry_update", connection)}


# --- happy paths, both variants -------------------------------------------------------------------


async def test_doc_variant_end_to_end(doc_sim: ValtronicsSimulator) -> None:
    sink = MemorySink()
    async with producing(vsource(doc_sim), sink):
        await sink.wait_for(
            lambda items: (
                devices_with_telemetry(items) == {1, 2, 3, 4}
                and len(frames(items, "pong")) >= 2
                and len(frames(items, "system_status_update")) >= 1
            )
        )
    sent = doc_sim.frames_for(1)
    payloads = [e.payload for e in sink.envelopes]
    assert payloads == sent[: len(payloads)]  # byte for byte, in order, nothing dropped
    assert payloads[0] == '{"type":"auth_response","success":true}'
    assert doc_sim.messages_from(1)[:5] == [AUTH, *DEFAULT_SUBSCRIBES]
    pings = [m for m in doc_sim.messages_from(1) if m["type"] == "ping"]
    assert pings and all(m["timestamp"].endswith("Z") for m in pings)
    for key, envelope in sink.items:
        document = orjson.loads(envelope.payload)
        device = document.get("device_id")
        assert key == (None if device is None else str(device).encode())
        assert envelope.meta == {"connection": 1}
        assert envelope.source == "valtronics"
        assert TOKEN not in encode_envelope(envelope).decode()
    records = [r for e in sink.envelopes for r in normalize(e)]  # every frame normalizes
    assert {r.entity for r in records} >= {"1", "2", "3", "4", "system"}
    assert doc_sim.connections_accepted == 1
    assert doc_sim.auth_succeeded == 1


async def test_server_variant_end_to_end(server_sim: ValtronicsSimulator) -> None:
    sink = MemorySink()
    subscriptions = [
        {"channel": "telemetry", "device_id": 1},
        {"channel": "telemetry", "device_id": 3},
        {"channel": "alerts"},
    ]
    async with producing(vsource(server_sim, subscriptions=subscriptions), sink):
        await sink.wait_for(
            lambda items: (
                devices_with_telemetry(items) == {1, 3}
                and len(frames(items, "heartbeat")) >= 1
                and len(frames(items, "pong")) >= 2
                and len(frames(items, "device_update")) >= 1
            )
        )
    sent = server_sim.frames_for(1)
    payloads = [e.payload for e in sink.envelopes]
    assert payloads == sent[: len(payloads)]
    assert payloads[0] == '{"error": "Unknown message type: auth"}'
    assert server_sim.messages_from(1)[:3] == [
        AUTH,
        {"type": "subscribe_device", "device_id": "1"},
        {"type": "subscribe_device", "device_id": "3"},
    ]
    keys = {
        key for key, e in sink.items if orjson.loads(e.payload).get("type") == "telemetry_update"
    }
    assert keys == {b"1", b"3"}
    records = [r for e in sink.envelopes for r in normalize(e)]
    assert {(r.entity, r.metric) for r in records if hasattr(r, "metric")} >= {
        ("1", "temperature"),
        ("3", "power"),
    }


async def test_server_protocol_never_sends_the_token(server_sim: ValtronicsSimulator) -> None:
    sink = MemorySink()
    source = vsource(
        server_sim,
        token=None,
        protocol="server",
        subscriptions=[{"channel": "telemetry", "device_id": 2}],
    )
    async with producing(source, sink):
        await sink.wait_for(lambda items: devices_with_telemetry(items) == {2})
    assert server_sim.messages_from(1)[0] == {"type": "subscribe_device", "device_id": "2"}
    assert not [m for m in server_sim.messages_from(1) if m["type"] == "auth"]


# --- fatal refusals -------------------------------------------------------------------------------


async def test_wrong_token_is_fatal_prompt_and_clear(
    doc_sim: ValtronicsSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sink = MemorySink()
    error = await fatal(
        vsource(doc_sim, token=register_secret("not-the-token-123")), sink, within=3.0
    )
    assert isinstance(error, UpstreamAuthError)
    assert str(error) == (
        f"source 'valtronics-test': upstream refused the token: Invalid token (invalid_token) "
        f"url={doc_sim.url}"
    )
    assert (doc_sim.connections_accepted, doc_sim.auth_failed) == (1, 1)
    assert [e.payload for e in sink.envelopes] == doc_sim.frames_for(1)  # the refusal is published
    assert "upstream refused the token" in caplog.text


async def test_expired_token_refusal_says_so(doc_sim: ValtronicsSimulator) -> None:
    expired = make_jwt({"exp": 1_600_000_000})
    doc_sim.add_token(expired)
    error = await fatal(vsource(doc_sim, token=expired), MemorySink())
    assert isinstance(error, UpstreamAuthError)
    assert (
        "upstream refused the token: Token expired (invalid_token) (the token expired at "
        in str(error)
    )
    assert "2020-09-13T12:26:40Z; provide a new one)" in str(error)


async def test_doc_protocol_refuses_the_server_variant(server_sim: ValtronicsSimulator) -> None:
    error = await fatal(vsource(server_sim, protocol="doc"), MemorySink())
    assert isinstance(error, UpstreamRejectedError)
    assert (
        "upstream does not know the documented auth message ('Unknown message type: auth')"
        in str(error)
    )
    assert server_sim.connections_accepted == 1


async def test_rejected_subscription_is_fatal(
    doc_sim: ValtronicsSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    source = vsource(
        doc_sim, subscriptions=[{"channel": "alerts"}, {"channel": "telemetry", "device_id": 99}]
    )
    error = await fatal(source, MemorySink())
    assert isinstance(error, UpstreamRejectedError)
    assert str(error) == (
        "source 'valtronics-test': upstream rejected a message we sent: RESOURCE_NOT_FOUND: "
        f"Device not found url={doc_sim.url}"
    )
    assert doc_sim.connections_accepted == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("RESOURCE_NOT_FOUND: Device not found" in r.getMessage() for r in errors)


async def test_unknown_path_is_rejected_with_a_hint(doc_sim: ValtronicsSimulator) -> None:
    error = await fatal(vsource(doc_sim, url=doc_sim.url + "/weather"), MemorySink())
    assert isinstance(error, UpstreamRejectedError)
    assert "HTTP 403" in str(error)
    assert "answers 403 to a WebSocket path it does not serve: check the url" in str(error)
    assert doc_sim.handshakes_rejected == 1


async def test_size_limit_error_is_logged_and_fatal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    filters = {"metrics": [f"sensor_{i:02d}_temperature" for i in range(20)]}
    subscribe = {"type": "subscribe", "channel": "telemetry", "filters": filters}
    limit = len(orjson.dumps(AUTH)) + 10  # the auth message fits, the subscription does not
    size = len(orjson.dumps(subscribe))
    assert limit < size <= 1024  # within the documented limit, so the config accepts it
    async with ValtronicsSimulator(TOKEN, interval=0.05, seed=1, max_message_bytes=limit) as sim:
        source = vsource(sim, subscriptions=[{"channel": "telemetry", "filters": filters}])
        error = await fatal(source, MemorySink())
        assert sim.auth_succeeded == 1
    assert isinstance(error, UpstreamRejectedError)
    expected = f"VALIDATION_ERROR: Message is {size} bytes; the limit is {limit} bytes"
    assert str(error).startswith(
        f"source 'valtronics-test': upstream rejected a message we sent: {expected}"
    )
    assert any(r.levelno == logging.ERROR and expected in r.getMessage() for r in caplog.records)


async def test_rate_limit_error_is_logged_and_the_producer_slows_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sink = MemorySink()
    sim = ValtronicsSimulator(TOKEN, interval=0.05, seed=1, max_messages_per_second=3)
    async with sim, producing(vsource(sim, keepalive_interval=5.0), sink):
        # Five messages (auth + four subscribes) at 20/s break a 3/s limit: the producer
        # logs it, halves its pace towards the stated limit and subscribes again.
        await sink.wait_for(
            lambda items: any(
                len(frames(items, "system_status_update", n)) >= 1
                and sim.messages_from(n)[:5] == [AUTH, *DEFAULT_SUBSCRIBES]
                and not frames(items, "error", n)
                for n in range(2, 6)
            ),
            wait_timeout=20.0,
        )
    assert sim.errors_sent["RATE_LIMIT_EXCEEDED"] >= 1
    limited = [r for r in caplog.records if "upstream rate limit exceeded" in r.getMessage()]
    assert limited and all(r.levelno == logging.ERROR for r in limited)
    assert "RATE_LIMIT_EXCEEDED: Rate limit exceeded" in limited[0].getMessage()
    assert "send_rate=1.5" in limited[0].getMessage()


# --- keepalive and reconnects ---------------------------------------------------------------------


async def test_pings_are_answered_and_a_missing_pong_means_a_dead_connection(
    doc_sim: ValtronicsSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sink = MemorySink()
    async with producing(vsource(doc_sim, pong_timeout=0.5), sink):
        await sink.wait_for(lambda items: len(frames(items, "pong", 1)) >= 3)
        assert doc_sim.connections_accepted == 1
        doc_sim.answer_pings = False
        await sink.wait_for(lambda items: len(frames(items, "auth_response", 2)) == 1)
        doc_sim.answer_pings = True
        await sink.wait_for(lambda items: len(frames(items, "pong", 2)) >= 1)
    dead = [
        r.getMessage()
        for r in caplog.records
        if "no pong; closing the connection" in r.getMessage()
    ]
    assert dead and "connection=1" in dead[0] and "pong_timeout_s=0.5" in dead[0]
    assert doc_sim.messages_from(2)[:5] == [AUTH, *DEFAULT_SUBSCRIBES]


@pytest.mark.parametrize("variant", ["doc", "server"])
async def test_drop_reauthenticates_and_resubscribes(
    variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    subscriptions: list[dict[str, Any]] = [
        {"channel": "telemetry", "device_id": 1, "filters": {"metrics": ["temperature"]}},
        {"channel": "telemetry", "device_id": 4},
        {"channel": "alerts", "filters": {"severity": ["critical", "warning"]}},
        {"channel": "devices"},
    ]
    sink = MemorySink()
    handshake = 3 if variant == "server" else 5  # auth + subscribe_device x2 / subscribe x4
    async with ValtronicsSimulator(TOKEN, variant=variant, interval=0.05, seed=2) as sim:  # type: ignore[arg-type]
        async with producing(vsource(sim, subscriptions=subscriptions), sink):
            await sink.wait_for(
                lambda items: (
                    devices_with_telemetry(items, 1) == {1, 4}
                    and len(frames(items, "pong", 1)) >= 1
                )  # pings start after the subscriptions
            )
            assert await sim.drop_connections() == 1
            # Frames are read (and published) while the producer still subscribes.
            await sink.wait_for(
                lambda items: (
                    devices_with_telemetry(items, 2) == {1, 4}
                    and len(sim.messages_from(2)) >= handshake
                )
            )
        first, second = sim.messages_from(1), sim.messages_from(2)
    assert first[0] == second[0] == AUTH
    assert second[:handshake] == first[:handshake]
    if variant == "doc":
        assert second[1:5] == [{"type": "subscribe", **s} for s in subscriptions]
        assert sim.auth_succeeded == 2
    else:
        assert second[1:3] == [
            {"type": "subscribe_device", "device_id": "1"},
            {"type": "subscribe_device", "device_id": "4"},
        ]
    assert sim.connections_accepted == 2
    second_payloads = [e.payload for e in sink.envelopes if e.meta["connection"] == 2]
    assert second_payloads == sim.frames_for(2)[: len(second_payloads)]
    lost = [
        r.getMessage() for r in caplog.records if "connection lost; reconnecting" in r.getMessage()
    ]
    assert len(lost) == 1 and "connection=1" in lost[0]


async def test_token_file_rotation_reauthenticates_on_the_live_connection(
    doc_sim: ValtronicsSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    short = make_jwt({"sub": "a", "exp": time.time() + 2.5})
    fresh = make_jwt({"sub": "b", "exp": time.time() + 3600})
    doc_sim.add_token(short)
    doc_sim.add_token(fresh)
    token_file = tmp_path / "jwt"
    token_file.write_text(short + "\n", encoding="utf-8")
    source = vsource(doc_sim, token=None, token_file=token_file, reauth_before=2.0)
    sink = MemorySink()
    async with producing(source, sink):
        await sink.wait_for(lambda items: len(frames(items, "auth_response")) == 1)
        token_file.write_text(fresh, encoding="utf-8")  # an external refresher rotates it
        await sink.wait_for(lambda items: len(frames(items, "auth_response")) == 2)
        deadline = time.time() + 1.5  # past the first token's expiry
        await sink.wait_for(lambda items: time.time() > deadline and len(frames(items, "pong")) > 3)
    auths = [m for m in doc_sim.messages_from(1) if m["type"] == "auth"]
    assert auths == [{"type": "auth", "token": short}, {"type": "auth", "token": fresh}]
    assert doc_sim.connections_accepted == 1
    assert [f["success"] for f in frames(sink.items, "auth_response")] == [True, True]
    assert "re-authenticated source=valtronics-test connection=1" in caplog.text


async def test_session_expired_before_rotation_reconnects_with_the_new_token(
    doc_sim: ValtronicsSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    short = make_jwt({"sub": "a", "exp": time.time() + 1.5})
    fresh = make_jwt({"sub": "b", "exp": time.time() + 3600})
    doc_sim.add_token(short)
    doc_sim.add_token(fresh)
    token_file = tmp_path / "jwt"
    token_file.write_text(short, encoding="utf-8")
    source = vsource(doc_sim, token=None, token_file=token_file, reauth_before=1.0)
    sink = MemorySink()
    async with producing(source, sink):
        # Nothing newer when the producer looks ahead of the expiry; the refresher is late.
        await sink.wait_for(lambda _: "no newer token is available" in caplog.text)
        token_file.write_text(fresh, encoding="utf-8")
        await sink.wait_for(lambda items: len(frames(items, "pong", 2)) >= 1)
    assert doc_sim.messages_from(2)[0] == {"type": "auth", "token": fresh}
    assert [f["success"] for f in frames(sink.items, "auth_response", 1)] == [True, False]
    assert "reconnecting with the new token source=valtronics-test connection=1" in caplog.text
    assert doc_sim.connections_accepted == 2


async def test_expiry_without_a_new_token_warns_then_fails_clearly(
    doc_sim: ValtronicsSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    short = make_jwt({"sub": "a", "exp": time.time() + 1.5})
    doc_sim.add_token(short)
    error = await fatal(vsource(doc_sim, token=short, reauth_before=1.0), MemorySink(), within=6.0)
    assert isinstance(error, UpstreamAuthError)
    assert "upstream withdrew the token's authentication: Token expired (invalid_token)" in str(
        error
    )
    assert "(the token expired at " in str(error)
    warned = [
        r for r in caplog.records if "token expires soon and no newer token" in r.getMessage()
    ]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert "hint=use token_file to rotate tokens" in warned[0].getMessage()


async def test_simulator_closes_connections_that_never_authenticate() -> None:
    async with ValtronicsSimulator(TOKEN, interval=0.05, seed=1, auth_timeout=0.3) as sim:
        async with asyncio.timeout(WAIT_TIMEOUT), connect(sim.url, ping_interval=None) as ws:
            await ws.send('{"type": "ping"}')
            assert orjson.loads(await ws.recv()) == {"type": "pong"}
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()  # nothing is sent to an unauthenticated client
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "authentication timeout")
        assert sim.frames_for(1) == ['{"type":"pong"}']


# --- secrets --------------------------------------------------------------------------------------


async def test_token_never_appears_in_logs(
    doc_sim: ValtronicsSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = make_jwt({"sub": "intruder", "exp": int(time.time()) + 60}, key="other-key")
    await fatal(vsource(doc_sim, token=wrong), MemorySink())
    sink = MemorySink()
    async with producing(vsource(doc_sim), sink):
        await sink.wait_for(lambda items: len(frames(items, "pong", 1)) >= 1)
        await doc_sim.drop_connections()
        await sink.wait_for(lambda items: len(frames(items, "pong", 2)) >= 1)

    texts = [caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    texts += [r.exc_text or "" for r in caplog.records]
    for token in (TOKEN, wrong):
        # No 10-character piece of a token anywhere: websockets' frame log elides long frames,
        # so a leak would show as a fragment, not as the whole token.
        pieces = {token[i : i + 10] for i in range(len(token) - 9)}
        for text in texts:
            assert not any(p in text for p in pieces)
    # The run really logged frames (the auth message, masked) and the failure and reconnect.
    assert '> TEXT \'{"type":"auth","token":"***' in caplog.text
    assert '< TEXT \'{"type":"auth","token":"***' in caplog.text  # the simulator's side
    assert "upstream refused the token" in caplog.text
    assert "connection lost; reconnecting" in caplog.text

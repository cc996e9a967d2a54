"""The Hemis simulator's STOMP 1.2 over WebSocket behaviour, seen by a raw client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from producers.simulators.hemis import HemisSimulator, StompFrame
from tests.integration.producers.hemis_helpers import (
    BUILDING,
    TOKEN,
    WAIT_TIMEOUT,
    RawStomp,
    raw_stomp,
)

pytestmark = pytest.mark.integration

DATA = f"jms.topic.{BUILDING}.data"
MANAGEMENT = f"jms.topic.{BUILDING}.management"


@pytest.fixture
async def sim() -> AsyncIterator[HemisSimulator]:
    simulator = HemisSimulator(BUILDING, TOKEN, interval=0.05, seed=9)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


async def closed(client: RawStomp) -> list[StompFrame]:
    """Read until the server closes the connection; return the frames read meanwhile."""
    frames: list[StompFrame] = []
    async with asyncio.timeout(WAIT_TIMEOUT):
        while True:
            try:
                frames.append(await client.frame())
            except ConnectionClosed:
                return frames


async def test_connected_frame_and_subprotocol(sim: HemisSimulator) -> None:
    async with raw_stomp(sim.url, ["v10.stomp", "v12.stomp"]) as client:
        assert client.websocket.subprotocol == "v12.stomp"
        connected = await client.connect(heart_beat="20000,20000")
    assert connected.command == "CONNECTED"
    assert connected.headers["version"] == "1.2"
    assert connected.headers["heart-beat"] == "20000,20000"
    assert connected.headers["session"].startswith("session-1-")
    assert connected.headers["server"].startswith("Hemis/")
    assert client.raw[0].endswith("\x00\n")  # NUL then LF
    assert sim.subprotocols_selected == ["v12.stomp"]
    assert sim.connect_headers[0]["login"] == BUILDING


async def test_no_subprotocol_accepted_unless_required(sim: HemisSimulator) -> None:
    async with raw_stomp(sim.url, None) as client:
        assert client.websocket.subprotocol is None
        assert (await client.connect()).command == "CONNECTED"
    strict = HemisSimulator(BUILDING, TOKEN, require_subprotocol=True)
    async with strict:
        with pytest.raises(InvalidStatus) as info:
            async with connect(strict.url, ping_interval=None):
                pass
        assert info.value.response.status_code == 400
        assert strict.handshakes_rejected == 1


@pytest.mark.parametrize(
    ("login", "passcode", "message"),
    [
        (BUILDING, "wrong-token-value", "Authentication failed"),
        ("BLD-other", TOKEN, "Authentication failed"),
    ],
)
async def test_bad_login_or_passcode_gets_error_then_close(
    sim: HemisSimulator, login: str, passcode: str, message: str
) -> None:
    async with raw_stomp(sim.url) as client:
        error = await client.connect(login=login, passcode=passcode)
        assert error.command == "ERROR"
        assert error.headers["message"] == message
        assert error.body == b"Invalid login or passcode"
        await closed(client)
    assert sim.auth_failures == 1


async def test_version_must_include_1_2(sim: HemisSimulator) -> None:
    async with raw_stomp(sim.url) as client:
        await client.send(
            "CONNECT", {"accept-version": "1.0,1.1", "login": BUILDING, "passcode": TOKEN}
        )
        error = await client.frame()
    assert error.headers["message"] == "Supported protocol versions are 1.2"


async def test_subscribe_receipt_and_message_frames(sim: HemisSimulator) -> None:
    async with raw_stomp(sim.url) as client:
        await client.connect()
        await client.send(
            "SUBSCRIBE", {"id": "sub-0", "destination": DATA, "ack": "auto", "receipt": "r-0"}
        )
        receipt = await client.frame()
        assert (receipt.command, receipt.headers) == ("RECEIPT", {"receipt-id": "r-0"})
        message = await client.frame()
    assert message.command == "MESSAGE"
    assert message.headers["subscription"] == "sub-0"
    assert message.headers["destination"] == DATA
    assert message.headers["content-type"] == "application/json"
    assert message.headers["message-id"].startswith("session-1-")
    assert int(message.headers["content-length"]) == len(message.body)
    assert orjson.loads(message.body)["type"] != "ENTITY_MANAGEMENT"
    assert message.body.decode() == sim.frames_for(1)[0]
    assert isinstance(client.raw[-1], str) and client.raw[-1].endswith("\x00\n")


async def test_management_topic_and_unsubscribe(sim: HemisSimulator) -> None:
    async with raw_stomp(sim.url) as client:
        await client.connect()
        await client.send("SUBSCRIBE", {"id": "m", "destination": MANAGEMENT})
        management = await client.frame()  # ENTITY_MANAGEMENT every 15 ticks
        assert orjson.loads(management.body)["type"] == "ENTITY_MANAGEMENT"
        await client.send("SUBSCRIBE", {"id": "d", "destination": DATA})
        await client.send("UNSUBSCRIBE", {"id": "d", "receipt": "gone"})
        while (frame := await client.frame()).command != "RECEIPT":
            assert frame.headers["subscription"] == "d"
        assert frame.headers["receipt-id"] == "gone"
        sent = sim.frames_sent
        await client.send("UNSUBSCRIBE", {"id": "nope"})
        error = await client.frame()
    assert error.headers["message"] == "Unknown subscription"
    assert sim.frames_sent - sent <= 1  # only the management topic was still subscribed


@pytest.mark.parametrize(
    ("destination", "message"),
    [("jms.topic.BLD-other.data", "Access refused"), ("/queue/anything", "Unknown destination")],
)
async def test_refused_subscriptions(sim: HemisSimulator, destination: str, message: str) -> None:
    async with raw_stomp(sim.url) as client:
        await client.connect()
        await client.send("SUBSCRIBE", {"id": "s", "destination": destination, "receipt": "r"})
        error = await client.frame()
        assert error.command == "ERROR"
        assert error.headers["message"] == message
        assert error.headers["receipt-id"] == "r"
        await closed(client)


async def test_duplicate_subscription_id_and_missing_headers(sim: HemisSimulator) -> None:
    async with raw_stomp(sim.url) as client:
        await client.connect()
        await client.send("SUBSCRIBE", {"id": "s", "destination": DATA})
        await client.send("SUBSCRIBE", {"id": "s", "destination": MANAGEMENT})
        while (frame := await client.frame()).command == "MESSAGE":
            pass
        assert frame.headers["message"] == "Duplicate subscription id"
    async with raw_stomp(sim.url) as client:
        await client.connect()
        await client.send("SUBSCRIBE", {"destination": DATA})
        assert (await client.frame()).headers["message"] == "Bad SUBSCRIBE"


async def test_disconnect_with_receipt_then_close(sim: HemisSimulator) -> None:
    async with raw_stomp(sim.url) as client:
        await client.connect()
        await client.send("DISCONNECT", {"receipt": "bye"})
        receipt = await client.frame()
        assert receipt.headers == {"receipt-id": "bye"}
        await closed(client)


@pytest.mark.parametrize(
    ("command", "message"),
    [("SEND", "Unsupported command"), ("SUBSCRIBE", "Expected CONNECT")],
)
async def test_unsupported_or_out_of_order_commands(
    sim: HemisSimulator, command: str, message: str
) -> None:
    async with raw_stomp(sim.url) as client:
        if command == "SEND":
            await client.connect()
        await client.send(command, {"destination": DATA, "id": "x"})
        error = await client.frame()
    assert error.headers["message"] == message


async def test_server_heartbeats_and_dropping_a_silent_client() -> None:
    sim = HemisSimulator(BUILDING, TOKEN, interval=60, heartbeat_ms=(100, 200))
    async with sim, raw_stomp(sim.url) as client:
        connected = await client.connect(heart_beat="100,100")
        assert connected.headers["heart-beat"] == "100,200"
        # The client declared it would send every 200 ms (max(100, 200)) and sends nothing.
        await closed(client)
        assert client.websocket.close_code == 1000
        assert client.websocket.close_reason == "heart-beat timeout"
        assert client.parser.heartbeats >= 2  # the server sent "\n" at least every 100 ms
    assert sim.heartbeat_drops == 1
    assert sim.heartbeats_sent >= 2


async def test_client_heartbeats_keep_the_session() -> None:
    sim = HemisSimulator(BUILDING, TOKEN, interval=60, heartbeat_ms=(0, 100))
    async with sim, raw_stomp(sim.url) as client:
        await client.connect(heart_beat="100,0")
        for _ in range(8):  # 8 x 100 ms > the 200 ms grace
            await client.websocket.send("\n")
            await asyncio.sleep(0.1)
        await client.send("DISCONNECT", {"receipt": "done"})
        assert (await client.frame()).headers == {"receipt-id": "done"}
    assert sim.heartbeat_drops == 0
    assert sim.heartbeats_received >= 8


async def test_token_ttl_expiry_ends_the_session_and_refuses_the_token() -> None:
    sim = HemisSimulator(BUILDING, TOKEN, interval=0.05, token_ttl=0.5)
    async with sim:
        async with raw_stomp(sim.url) as client:
            await client.connect()
            await client.send("SUBSCRIBE", {"id": "s", "destination": DATA})
            frames = await closed(client)
        assert frames[-1].command == "ERROR"
        assert frames[-1].headers["message"] == "Token expired"
        assert {f.command for f in frames[:-1]} == {"MESSAGE"}
        assert [f.body.decode() for f in frames[:-1]] == sim.frames_for(1)
        assert sim.tokens_expired == 1
        async with raw_stomp(sim.url) as client:
            error = await client.connect()
        assert error.headers["message"] == "Token expired"
        fresh = sim.issue_token()
        async with raw_stomp(sim.url) as client:
            assert (await client.connect(passcode=fresh)).command == "CONNECTED"


async def test_binary_frame_mode_and_nul_only_endings() -> None:
    sim = HemisSimulator(BUILDING, TOKEN, interval=0.05, frame_mode="binary", trailing_lf=False)
    async with sim, raw_stomp(sim.url) as client:
        await client.connect()
        await client.send("SUBSCRIBE", {"id": "s", "destination": DATA})
        message = await client.frame()
        assert isinstance(client.raw[-1], bytes)
        assert client.raw[-1].endswith(b"}\x00")
    assert message.body.decode() == sim.frames_for(1)[0]
    assert all(f.binary for f in sim.sent_frames)


async def test_wrong_path_or_host_is_refused() -> None:
    sim = HemisSimulator(BUILDING, TOKEN, host_header="hemis.example", path="/stomp")
    async with sim:
        port = sim.port
        named = f"ws://hemis.example:{port}/stomp"
        via_ip = {"host": "127.0.0.1", "port": port}  # TCP to 127.0.0.1, Host: hemis.example
        for url, kwargs in ((named.replace("/stomp", "/other"), via_ip), (sim.url, {})):
            with pytest.raises(InvalidStatus) as info:
                async with connect(url, ping_interval=None, **kwargs):
                    pass
            assert info.value.response.status_code == 404
        async with raw_stomp(named, **via_ip) as client:
            assert (await client.connect()).command == "CONNECTED"
    assert sim.handshakes_rejected == 2
    assert sim.handshake_hosts == [
        f"hemis.example:{port}",
        f"127.0.0.1:{port}",
        f"hemis.example:{port}",
    ]


async def test_drop_connections_aborts_clients(sim: HemisSimulator) -> None:
    async with raw_stomp(sim.url) as client:
        await client.connect()
        assert sim.connections_active == 1
        assert await sim.drop_connections() == 1
        await closed(client)
    assert sim.connections_active == 0

"""Interop: the Hemis producer against RabbitMQ's Web-STOMP (a real, independent STOMP server).

RabbitMQ's destination syntax differs from Hemis': a bare ``jms.topic.X.data`` would be a
durable *queue* there. The source option ``destination_style: rabbitmq`` subscribes to
``/topic/{building_id}.data`` and ``/topic/{building_id}.management`` instead (fan-out through
``amq.topic``); ``vhost: "/"`` and ``login: guest`` fit RabbitMQ's defaults.

Needs ``rabbitmq-server`` with the plugin: ``rabbitmq-plugins enable rabbitmq_web_stomp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from producers.errors import UpstreamAuthError, UpstreamRejectedError
from producers.sources.hemis import HemisSource, run_hemis
from tests.conftest import require_service
from tests.integration.producers.helpers import MemorySink
from tests.integration.producers.hemis_helpers import (
    WAIT_TIMEOUT,
    RawStomp,
    assert_no_stomp_threads,
    producing,
    raw_stomp,
)
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration

HOST, PORT = "127.0.0.1", 15674
SERVICE = "RabbitMQ Web-STOMP at ws://127.0.0.1:15674/ws"


@pytest.fixture(autouse=True)
def web_stomp() -> Iterator[None]:
    try:
        with socket.create_connection((HOST, PORT), timeout=2):
            pass
    except OSError as exc:
        require_service(
            SERVICE,
            f"cannot connect ({exc}); start rabbitmq-server and run "
            "'rabbitmq-plugins enable rabbitmq_web_stomp'",
        )
    yield
    assert_no_stomp_threads()


def rabbit_source(building: str, **overrides: Any) -> HemisSource:
    values: dict[str, Any] = {
        "name": "hemis-rabbitmq",
        "kind": "hemis",
        "url": f"ws://{HOST}:{PORT}/ws",
        "building_id": building,
        "login": "guest",
        "token": "guest",
        "vhost": "/",
        "destination_style": "rabbitmq",
        "heartbeat_send_ms": 2000,
        "heartbeat_receive_ms": 2000,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
    }
    values.update(overrides)
    return HemisSource(**values)


class Publisher:
    """Publishes with a raw STOMP client over Web-STOMP (independent of the producer's client)."""

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        self.client: RawStomp | None = None

    async def __aenter__(self) -> Publisher:
        self.client = await self._stack.enter_async_context(raw_stomp(f"ws://{HOST}:{PORT}/ws"))
        connected = await self.client.connect(login="guest", passcode="guest", host="/")
        assert connected.command == "CONNECTED", connected
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def send(self, destination: str, body: str) -> None:
        assert self.client is not None
        headers = {
            "destination": destination,
            "content-type": "application/json",
            "content-length": str(len(body.encode())),
        }
        await self.client.send("SEND", headers, body)


BODIES = [
    '{"timestamp":1721980800000,"type":"SENSOR_STATE","zoneId":"Salon",'
    '"sensorId":"F023B91000000071#1","factorId":"TMP","valueType":"0","value":"21.0"}',
    # nested objects: the body a naive rstrip('\\0') broke in a public client
    '{"timestamp":1721980800000,"type":"IT_STATE","itId":"041AA72AAA4A80",'
    '"value":{"o":"KO","pO":"OK","oC":"TIMEOUT"}}',
    '{"timestamp":1564478716,"type":"DATA_PROVIDER","container":{"dataInfo":{"sourceTypeInfo":'
    '{"sourceNature":"SEN","sourceGroup":"TMP","measurementUnit":"°C"},"sourceId":"src"},'
    '"data":{"header":{"columns_mapping":{"VALUENB":0}},"data_points":[{"d":1564478716,"v":[21]}]}}}',
    '{ "type" : "FACTOR_CURRENT_STATE", "zoneId": "Chambre_01", "value": 99.7 }\n  ',
]


async def test_producer_delivers_rabbitmq_web_stomp_messages_unchanged() -> None:
    building = f"BLD-{uuid.uuid4().hex[:12]}"
    data, management = f"/topic/{building}.data", f"/topic/{building}.management"
    sink = MemorySink()
    async with producing(rabbit_source(building), sink), Publisher() as publisher:
        # Topics do not keep messages: probe until the producer's subscription is live.
        async with asyncio.timeout(WAIT_TIMEOUT):
            while not sink.items:
                await publisher.send(data, '{"type":"PROBE"}')
                try:
                    await sink.wait_for(lambda items: bool(items), wait_timeout=0.3)
                except TimeoutError:
                    continue
        for body in BODIES:
            await publisher.send(data, body)
        entity = '{"timestamp":1,"type":"ENTITY_MANAGEMENT","entityType":"ZONE","entityId":"Z1","action":"CREATE"}'
        await publisher.send(management, entity)
        await sink.wait_for(
            lambda items: sum(1 for _, e in items if '"PROBE"' not in e.payload) >= 5
        )
    real = [(key, e) for key, e in sink.items if '"PROBE"' not in e.payload]
    on_data = [e.payload for _, e in real if e.meta["destination"] == data]
    on_management = [e.payload for _, e in real if e.meta["destination"] == management]
    assert on_data == BODIES  # unchanged, byte for byte, in order
    assert on_management == [entity]
    # Keys in order per destination: the broker orders each subscription's messages, not the
    # two subscriptions' against each other (the management message arrived first once).
    data_keys = [key for key, e in real if e.meta["destination"] == data]
    assert data_keys[:3] == [b"F023B91000000071#1", b"041AA72AAA4A80", b"src"]
    assert [key for key, e in real if e.meta["destination"] == management] == [b"Z1"]
    for _, envelope in real:
        assert envelope.meta["subscription"] in ("sub-0", "sub-1")
        assert envelope.meta["content_type"] == "application/json"
        assert "encoding" not in envelope.meta


async def test_rabbitmq_refusing_the_login_is_fatal() -> None:
    source = rabbit_source("BLD-x", token=register_secret("not-the-guest-password"))
    with pytest.raises(UpstreamAuthError, match="message='Bad CONNECT'"):
        async with asyncio.timeout(WAIT_TIMEOUT):
            await run_hemis(source, MemorySink(), asyncio.Event())


async def test_rabbitmq_refusing_a_destination_is_fatal() -> None:
    source = rabbit_source("BLD-x", destinations=["/bogus/{building_id}"])
    with pytest.raises(UpstreamRejectedError) as info:
        async with asyncio.timeout(WAIT_TIMEOUT):
            await run_hemis(source, MemorySink(), asyncio.Event())
    assert str(info.value).startswith(
        "source 'hemis-rabbitmq': upstream refused the subscription to /bogus/BLD-x: "
        "message='Unknown destination'"
    )

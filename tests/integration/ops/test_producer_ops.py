"""A producer's ops port over real sockets: the aliunid simulator (WebSocket) -> producer ->
KafkaSink on the embedded broker, with /metrics, /healthz and /readyz scraped over HTTP."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from producers.ops import ProducerOps, ProducerOpsSettings
from producers.simulators.aliunid import AliunidSimulator
from producers.sink import KafkaSink
from tests.integration.conftest import BrokerHandle
from tests.integration.producers.helpers import BUSINESS, aliunid_source

pytestmark = pytest.mark.integration


async def _scrape(base: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            extra = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "source")
            out[sample.name + (f"{{{extra}}}" if extra else "")] = sample.value
    return out


async def _get(base: str, path: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}{path}") as response:
        return response.status, json.loads(await response.read())


async def _until(check, wait_timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """Poll an HTTP endpoint (no event to await across the socket)."""
    async with asyncio.timeout(wait_timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(0.2)


async def test_metrics_move_with_frames_and_reconnects(fresh_broker: BrokerHandle) -> None:
    fresh_broker.create_topics({"raw.aliunid.v1": 1, "deadletter.v1": 1})
    settings = ProducerOpsSettings(ops_port=0, ready_max_frame_age_s=30)
    async with AliunidSimulator(BUSINESS, _api_key(), interval=0.1, seed=3) as sim:
        source = aliunid_source(sim)
        sink = KafkaSink(fresh_broker.bootstrap, buffer_max_messages=1000, client_id="ops-test")
        stop = asyncio.Event()
        ops = ProducerOps(source.name, sink, settings)
        task = asyncio.create_task(ops.run(source, stop))
        try:
            await _until(_port_of(ops))
            base = f"http://127.0.0.1:{ops.port}"

            status, body = await _get(base, "/healthz")
            assert status == 200 and body["source"] == "aliunid-test"

            async def frames_counted() -> dict | None:
                samples = await _scrape(base)
                return (
                    samples
                    if samples.get("streamwarden_producer_frames_received_total", 0) >= 5
                    else None
                )

            first = await _until(frames_counted)
            assert first["streamwarden_producer_bytes_received_total"] > 0
            assert first["streamwarden_producer_connections_total"] == 1
            assert first["streamwarden_producer_reconnects_total"] == 0
            assert 0 <= first["streamwarden_producer_last_frame_age_seconds"] < 30
            assert "streamwarden_producer_buffer_depth" in first

            status, body = await _get(base, "/readyz")
            assert status == 200, body

            assert await sim.drop_connections() >= 1

            async def reconnected() -> dict | None:
                samples = await _scrape(base)
                return samples if samples["streamwarden_producer_reconnects_total"] >= 1 else None

            after = await _until(reconnected)
            assert after["streamwarden_producer_connections_total"] >= 2
            more = await _until(frames_counted)
            assert (
                more["streamwarden_producer_frames_received_total"]
                >= first["streamwarden_producer_frames_received_total"]
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await sink.close()


def _port_of(ops: ProducerOps):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return ops.port is not None

    return check


def _api_key() -> str:
    from tests.integration.producers.helpers import API_KEY

    return API_KEY

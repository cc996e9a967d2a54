"""Fault-injection matrix: every family x every phase of its protocol x (clean close, abort).

Each case lets the simulator end the first connection at one phase (``inject_fault``), lets
the producer reconnect, and asserts over real sockets that:

* the producer survived (retried with backoff, no traceback, still running);
* every frame the server wrote on the faulted connection was recorded, in order, exactly once
  (and the second connection's frames are a prefix of what the server sent);
* the reconnect log line counts the frames the faulted connection delivered (a connection that
  delivered frames counts as good for the backoff).

A flapping server (accepts and closes at once, five times) is covered per family as well.
Short intervals and backoffs keep the whole matrix within a few seconds per case.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from producers.config import (
    AliunidSource,
    ElementSource,
    HemisSource,
    NobilSource,
    ValtronicsSource,
)
from producers.envelope import RawEnvelope
from producers.simulators import (
    AliunidSimulator,
    ElementSimulator,
    HemisSimulator,
    NobilSimulator,
    ValtronicsSimulator,
)
from producers.simulators.base import FaultAction, FaultPhase, SimulatorServer
from producers.simulators.valtronics import make_jwt
from tests.integration.producers.helpers import (
    API_KEY,
    BUSINESS,
    Items,
    MemorySink,
    producing,
)
from tests.integration.producers.hemis_helpers import (
    BUILDING,
    assert_no_stomp_threads,
    payload_text,
)
from tests.integration.producers.hemis_helpers import TOKEN as HEMIS_TOKEN
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration

NOBIL_KEY = register_secret("nb-matrix/7f3a+9c1e=5b2d&x")
ELEMENT_KEY = register_secret("el-matrix/46cb+688e=2c0b&x")
VALTRONICS_TOKEN = register_secret(
    make_jwt({"sub": "streamwarden-matrix", "exp": int(time.time()) + 86_400})
)
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "open_timeout": 5.0}
CASE_TIMEOUT = 20.0


@dataclass(frozen=True)
class Family:
    """How to run one upstream family in the matrix."""

    make: Callable[[], SimulatorServer]
    source: Callable[[Any], Any]
    phases: tuple[tuple[FaultPhase, int], ...]


FAMILIES: dict[str, Family] = {
    "aliunid": Family(
        make=lambda: AliunidSimulator(BUSINESS, API_KEY, measuring_points=2, interval=0.05),
        source=lambda sim: AliunidSource(
            name="aliunid-matrix", kind="aliunid", url=sim.url, api_key=API_KEY, **FAST
        ),
        phases=(("handshake", 0), ("stream", 1), ("stream", 7)),
    ),
    "nobil": Family(
        make=lambda: NobilSimulator(NOBIL_KEY, stations=3, interval=0.05, seed=3),
        source=lambda sim: NobilSource(
            name="nobil-matrix", kind="nobil", url=sim.url, api_key=NOBIL_KEY, **FAST
        ),
        # stream/1: right after snapshot:init
        phases=(("handshake", 0), ("stream", 1), ("stream", 7)),
    ),
    "element": Family(
        make=lambda: ElementSimulator(ELEMENT_KEY, interval=0.05, seed=3),
        source=lambda sim: ElementSource(
            name="element-matrix",
            kind="element",
            url=sim.url,
            api_key=ELEMENT_KEY,
            scope="stream",
            scope_id=sim.stream_id,
            **FAST,
        ),
        phases=(("handshake", 0), ("stream", 7)),
    ),
    "valtronics": Family(
        make=lambda: ValtronicsSimulator(VALTRONICS_TOKEN, interval=0.05, seed=3),
        source=lambda sim: ValtronicsSource(
            name="valtronics-matrix",
            kind="valtronics",
            url=sim.url,
            token=VALTRONICS_TOKEN,
            keepalive_interval=5.0,
            reply_timeout=5.0,
            **FAST,
        ),
        # subscribe/8: after the first of four subscriptions the server pushes 8 frames
        phases=(("handshake", 0), ("auth", 0), ("subscribe", 8), ("stream", 12)),
    ),
    "valtronics-server": Family(
        make=lambda: ValtronicsSimulator(
            variant="server", interval=0.05, seed=3, heartbeat_interval=0.2
        ),
        source=lambda sim: ValtronicsSource(
            name="valtronics-server-matrix",
            kind="valtronics",
            url=sim.url,
            protocol="server",
            subscriptions=[
                {"channel": "telemetry", "device_id": 1},
                {"channel": "telemetry", "device_id": 2},
                {"channel": "telemetry", "device_id": 4},
            ],
            keepalive_interval=5.0,
            reply_timeout=5.0,
            **FAST,
        ),
        # subscribe/8: after the first subscribe_device the server pushes 8 frames
        phases=(("handshake", 0), ("subscribe", 8), ("stream", 12)),
    ),
    "hemis": Family(
        make=lambda: HemisSimulator(BUILDING, HEMIS_TOKEN, interval=0.05, seed=3),
        source=lambda sim: HemisSource(
            name="hemis-matrix",
            kind="hemis",
            url=sim.url,
            building_id=BUILDING,
            token=HEMIS_TOKEN,
            connect_timeout=5.0,
            **FAST,
        ),
        phases=(("handshake", 0), ("auth", 0), ("subscribe", 4), ("stream", 6)),
    ),
}

CASES = [
    pytest.param(family, phase, frames, id=f"{family}-{phase}-{frames}")
    for family, spec in FAMILIES.items()
    for phase, frames in spec.phases
]


def recorded(items: Items, connection: int) -> list[str]:
    return [_text(e) for _, e in items if e.meta["connection"] == connection]


def _text(envelope: RawEnvelope) -> str:
    return payload_text(envelope)


def _reconnect_counts(records: list[logging.LogRecord]) -> list[int]:
    """Frames (or STOMP messages) each lost connection delivered, from the reconnect logs."""
    counts = []
    for record in records:
        message = record.getMessage()
        if "connection lost; reconnecting" in message:
            match = re.search(r" (?:frames|messages)=(\d+) ", message)
            assert match is not None, message
            counts.append(int(match.group(1)))
    return counts


@pytest.mark.parametrize("action", ["close", "abort"])
@pytest.mark.parametrize(("family", "phase", "frames"), CASES)
async def test_a_drop_at_any_phase_loses_and_duplicates_nothing(
    family: str,
    phase: FaultPhase,
    frames: int,
    action: FaultAction,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    spec = FAMILIES[family]
    sink = MemorySink()
    async with asyncio.timeout(CASE_TIMEOUT), spec.make() as sim:
        sim.inject_fault(phase, action, frames=frames)
        async with producing(spec.source(sim), sink) as task:
            await sink.wait_for(lambda items: len(recorded(items, 2)) >= 3, CASE_TIMEOUT)
            assert not task.done()
        sent_first = sim.frames_for(1)  # type: ignore[attr-defined]
        sent_second = sim.frames_for(2)  # type: ignore[attr-defined]
    assert sim.faults_applied == 1
    # Everything the server wrote before the fault was recorded, in order, exactly once.
    assert recorded(sink.items, 1) == sent_first
    if phase == "handshake":
        assert sent_first == []
    assert len(sent_first) >= frames
    second = recorded(sink.items, 2)
    assert second == sent_second[: len(second)]
    assert {e.meta["connection"] for e in sink.envelopes} == ({1, 2} if sent_first else {2})
    # The faulted connection is reported with the frames it delivered (good for backoff).
    assert _reconnect_counts(caplog.records)[0] == len(sent_first)
    if family == "element":
        ids = [event["body"]["id"] for e in sink.envelopes for event in orjson.loads(e.payload)]
        assert len(ids) == len(set(ids))
    if family == "hemis":
        assert_no_stomp_threads()


@pytest.mark.parametrize("action", ["close", "abort"])
@pytest.mark.parametrize("family", list(FAMILIES))
async def test_a_flapping_server_is_retried_until_it_streams(
    family: str, action: FaultAction, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    spec = FAMILIES[family]
    sink = MemorySink()
    async with asyncio.timeout(CASE_TIMEOUT), spec.make() as sim:
        sim.inject_fault("handshake", action, connections=5)
        async with producing(spec.source(sim), sink) as task:
            await sink.wait_for(lambda items: len(recorded(items, 6)) >= 3, CASE_TIMEOUT)
            assert not task.done()
        sent_sixth = sim.frames_for(6)  # type: ignore[attr-defined]
    assert sim.faults_applied == 5
    assert sim.connections_accepted == 6  # type: ignore[attr-defined]
    assert {e.meta["connection"] for e in sink.envelopes} == {6}
    sixth = recorded(sink.items, 6)
    assert sixth == sent_sixth[: len(sixth)]
    assert _reconnect_counts(caplog.records)[:5] == [0] * 5
    assert not [r for r in caplog.records if r.exc_info]

"""Fixtures for producer tests over real sockets: the simulator and a MemorySink."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from producers.simulators.aliunid import AliunidSimulator
from tests.integration.producers.helpers import API_KEY, BUSINESS, MemorySink


@pytest.fixture
async def simulator() -> AsyncIterator[AliunidSimulator]:
    sim = AliunidSimulator(BUSINESS, API_KEY, measuring_points=3, interval=0.05, seed=7)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
def memory_sink() -> MemorySink:
    return MemorySink()

"""The scenario registry and how one scenario is run: bounded, and never raising."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from streamwarden.chaos import (
    broker_outage,
    channel_outage,
    upstream_drop,
    worker_kill,
    worker_takeover,
)
from streamwarden.chaos.harness import ChaosOptions, ScenarioResult

__all__ = ["SCENARIOS", "Scenario", "run_scenario"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    """A scenario and its overall bounds (seconds), full and quick."""

    name: str
    run: Callable[[ChaosOptions], Awaitable[list[ScenarioResult]]]
    bound_s: float
    quick_bound_s: float


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(worker_kill.NAME, worker_kill.run, 900.0, 240.0),
        Scenario(worker_takeover.NAME, worker_takeover.run, 300.0, 240.0),
        Scenario(upstream_drop.NAME, upstream_drop.run, 180.0, 120.0),
        Scenario(broker_outage.NAME, broker_outage.run, 240.0, 150.0),
        Scenario(channel_outage.NAME, channel_outage.run, 420.0, 240.0),
    )
}


async def run_scenario(scenario: Scenario, options: ChaosOptions) -> list[ScenarioResult]:
    """Run one scenario within its bound; a timeout or crash becomes a failed row."""
    bound = scenario.quick_bound_s if options.quick else scenario.bound_s
    started = time.monotonic()
    try:
        async with asyncio.timeout(bound):
            return await scenario.run(options)
    except TimeoutError:
        note = f"timed out after {bound:.0f}s (everything it started was stopped)"
    except Exception as exc:
        logger.exception("chaos scenario crashed scenario=%s", scenario.name)
        note = f"crashed: {exc!r}"
    options.progress(f"{scenario.name}: {note}")
    return [
        ScenarioResult(
            scenario=scenario.name, ok=False, note=note, seconds=time.monotonic() - started
        )
    ]

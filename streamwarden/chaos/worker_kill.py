"""``worker-kill``: the worker SIGKILLed at random points of a stream, restarted each time.

The stream makes both rules fire and resolve every few seconds on four measuring points. The
scenario waits until the (re)started worker delivers a notification (so it is up and busy),
waits a seeded random 0-3 s more, SIGKILLs it and starts a new one at once. After the last
kill the stream runs a little longer, stops, and every notification the oracle says is due
must arrive exactly once.

Pass: 0 lost, nothing unexpected, each alert's notifications in order, and no copy that is
not marked as a possible duplicate. A kill between the channel accepting a notification and
the worker recording that (a few ms per send, often hit when kills land in a burst of
deliveries) makes the next worker send it again: a generic webhook gives no way to know. Such
copies carry the same id and a ``[possible duplicate]`` title and are counted in
``duplicated``; an unmarked copy fails the scenario.
"""

from __future__ import annotations

import asyncio
import random
import time

from streamwarden.chaos.harness import AlertingRun, ChaosOptions, ScenarioResult, result_from

NAME = "worker-kill"

KILL_DELAY_S = (0.0, 3.0)
"""A kill comes this long (uniform, seeded) after the worker delivered again."""
UP_TIMEOUT_S = 90.0
"""Longest wait for a restarted worker to deliver again."""


async def run(options: ChaosOptions) -> list[ScenarioResult]:
    kills = 3 if options.quick else 10
    rng = random.Random(options.seed)
    started = time.monotonic()
    async with AlertingRun(options, NAME) as run:
        worker = run.start_worker("worker-1")
        stalled = 0
        for number in range(1, kills + 1):
            if not await run.wait_deliveries(run.hook.count() + 1, UP_TIMEOUT_S):
                stalled += 1
                run.say(f"worker-{number} delivered nothing within {UP_TIMEOUT_S:.0f}s")
            delay = rng.uniform(*KILL_DELAY_S)
            await asyncio.sleep(delay)
            await run.kill(worker)
            run.say(
                f"kill {number}/{kills}: SIGKILL worker-{number} "
                f"{time.monotonic() - worker.started_at:.1f}s after its start"
            )
            worker = run.start_worker(f"worker-{number + 1}")
        await run.wait_deliveries(run.hook.count() + 1, UP_TIMEOUT_S)
        await asyncio.sleep(3.0)  # the last worker also handles some live stream
        counted, sent = await run.finish(wait_s=UP_TIMEOUT_S)
        ok = (
            counted.lost == 0
            and counted.unmarked_duplicates == 0
            and counted.unexpected == 0
            and counted.out_of_order == 0
            and stalled == 0
        )
        note = f"{kills} SIGKILLs, {kills} restarts"
        if stalled:
            note += f"; {stalled} restarts delivered nothing within {UP_TIMEOUT_S:.0f}s"
        row = result_from(NAME, sent, counted, ok=ok, note=note, seconds=time.monotonic() - started)
        row.details.update({"kills": kills, "stalled_restarts": stalled})
        return [row]

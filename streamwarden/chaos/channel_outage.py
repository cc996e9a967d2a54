"""``channel-outage``: the notification channel is down for a minute (10 s with ``--quick``).

One worker runs the alerting stream. Once it delivers, the HTTP endpoint of the channel
answers every request with 503 for the outage, then 200 again; the stream goes on all the
time, so notifications pile up in the worker's outbox. apprise reports the 503 as a retryable
failure and the worker retries (backoff up to a minute) until the channel is back.

Pass: requests were refused during the outage, every notification due arrived after it,
0 lost, 0 duplicated, nothing unexpected, and each alert's notifications in order (firing
before its resolve).
"""

from __future__ import annotations

import asyncio
import time

from streamwarden.chaos.harness import AlertingRun, ChaosOptions, ScenarioResult, result_from

NAME = "channel-outage"
UP_TIMEOUT_S = 90.0


async def run(options: ChaosOptions) -> list[ScenarioResult]:
    outage_s = 10.0 if options.quick else 60.0
    started = time.monotonic()
    async with AlertingRun(options, NAME) as run:
        run.start_worker("worker-1")
        up = await run.wait_deliveries(1, UP_TIMEOUT_S)
        run.hook.available = False
        run.say(f"channel answers 503 for {outage_s:.0f}s")
        await asyncio.sleep(outage_s)
        run.hook.available = True
        back_at = time.monotonic()
        held = run.hook.count()
        refused = run.hook.refused
        run.say(f"channel back; {refused} requests were refused")
        resumed = await run.wait_deliveries(held + 1, UP_TIMEOUT_S)
        resumed_s = time.monotonic() - back_at
        if resumed:
            run.say(f"deliveries resumed {resumed_s:.1f}s after the channel came back")
        await asyncio.sleep(3.0)  # some live stream after the recovery too
        # Retries back off up to a minute: give the backlog that long, and more.
        counted, sent = await run.finish(wait_s=UP_TIMEOUT_S + 30.0, quiet_s=None)
        ok = (
            up
            and refused > 0
            and resumed
            and counted.lost == 0
            and counted.duplicated == 0
            and counted.unexpected == 0
            and counted.out_of_order == 0
        )
        note = (
            f"503 for {outage_s:.0f}s ({refused} requests refused); deliveries resumed "
            f"{resumed_s:.1f}s after it came back"
        )
        row = result_from(NAME, sent, counted, ok=ok, note=note, seconds=time.monotonic() - started)
        row.details.update(
            {"outage_s": outage_s, "refused": refused, "resumed_s": round(resumed_s, 1)}
        )
        return [row]

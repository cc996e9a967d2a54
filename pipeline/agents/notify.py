"""Agent ``send_notifications``: alert transitions -> channels through the notifier."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from pipeline.agents.deadletter import dead_letter
from pipeline.models import decode_alert
from pipeline.notify.sender import Notifier


def make_send_notifications(
    notifier: Notifier,
    deadletter: Any,
    *,
    batch_max: int,
    batch_within: float,
    counters: dict[str, int],
) -> Callable[[Any], Awaitable[None]]:
    """Build the agent function. Events are acked only after delivery was attempted."""

    async def send_notifications(stream: Any) -> None:
        async for events in stream.take_events(batch_max, within=batch_within):
            for event in events:
                try:
                    alert = decode_alert(event.value)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    counters["deadlettered"] += 1
                    await dead_letter(
                        deadletter, event, stage="notify", reason=f"not an alert: {exc}"
                    )
                    continue
                deliveries = await notifier.deliver(alert)
                counters["notifications"] += len(deliveries)

    return send_notifications

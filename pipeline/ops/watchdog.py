"""The Watchdog: an always-firing heartbeat notification, so that an external dead-man's
switch (healthchecks.io, Alertmanager's Watchdog pattern, a cron monitor) raises the alarm
when the heartbeats stop, which is how a dead pipeline gets noticed.

Configured in ``channels.yaml``::

    watchdog:
      channel: deadman      # a configured channel
      interval: 1m

Only the worker that owns the notification stage (the ``alerts.v1`` partition) sends it, and
only while that worker is ready (assigned, recovered, caught up): a stuck or lagging pipeline
stops the heartbeat just like a dead one. Each heartbeat has its own id
(``watchdog-<app>-<n>``) and goes through the notifier (its retries, its counters, the
notification history).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pipeline.alerting.model import Notification
from pipeline.notify.sender import Notifier
from producers.envelope import now_ms

__all__ = ["Watchdog"]

logger = logging.getLogger(__name__)


class Watchdog:
    """Sends the heartbeat every ``interval_s`` while ``should_send()`` is true.

    Args:
        notifier: sends it (retries, counters, history).
        channel: the configured channel name.
        interval_s: seconds between heartbeats.
        app_id: names the pipeline in the message and the id.
        should_send: this worker owns the notification stage and is ready.
    """

    def __init__(
        self,
        notifier: Notifier,
        channel: str,
        interval_s: float,
        app_id: str,
        should_send: Callable[[], bool],
    ) -> None:
        self._notifier = notifier
        self.channel = channel
        self.interval_s = interval_s
        self._app_id = app_id
        self._should_send = should_send
        self.sent = 0
        self.skipped = 0

    def heartbeat(self, clock_ms: int) -> Notification:
        """The heartbeat of the interval ``clock_ms`` falls in."""
        number = clock_ms // max(int(self.interval_s * 1000), 1)
        return Notification(
            id=f"watchdog-{self._app_id}-{number}",
            channel=self.channel,
            kind="firing",
            alerts=(),
            title=f"[FIRING] Watchdog: StreamWarden {self._app_id} is alive",
            body=(
                "This notification is always firing. It arrives every "
                f"{self.interval_s:g} s while the pipeline is up and caught up; "
                "alert when it stops arriving."
            ),
            format="text",
            notify_type="info",
            created_ms=clock_ms,
        )

    async def beat(self) -> bool:
        """Send one heartbeat if due (True when delivered)."""
        if not self._should_send():
            self.skipped += 1
            return False
        delivery = await self._notifier.send(self.heartbeat(now_ms()))
        if delivery is not None:
            self.sent += 1
        return delivery is not None

    async def run(self) -> None:
        """Beat every ``interval_s`` until cancelled."""
        logger.info(
            "watchdog heartbeat enabled channel=%s interval_s=%g", self.channel, self.interval_s
        )
        while True:
            await self.beat()
            await asyncio.sleep(self.interval_s)

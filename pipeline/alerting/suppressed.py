"""Say once why a notification was held back: the silence, the inhibiting alert, the mute
window or the rate limit.

The dispatcher re-checks a silenced or inhibited alert every ``group_interval`` and counts
each decision (:mod:`pipeline.alerting.stats`); people need one log line per alert and cause,
not one per re-check. :class:`SuppressionLog` remembers what it announced (bounded, per
process: a restarted worker says it once more) and tells an optional listener (the worker's
notification history, outcome ``suppressed``).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence

from pipeline.models import AlertTransition

__all__ = ["SuppressionListener", "SuppressionLog"]

logger = logging.getLogger(__name__)

SuppressionListener = Callable[[str, Sequence[AlertTransition], str], None]
"""``listener(channel, alerts, why)``: told once per announced suppression."""

KEPT = 10_000
"""Announcements remembered (oldest forgotten first)."""


class SuppressionLog:
    """Logs each (channel, alert transition, cause) once; see the module docstring."""

    def __init__(self) -> None:
        self._seen: collections.OrderedDict[tuple[str, str, int, str], None] = (
            collections.OrderedDict()
        )
        self.listener: SuppressionListener | None = None

    def announce(self, channel: str, alerts: Sequence[AlertTransition], why: str) -> None:
        """Log (and tell the listener) that ``alerts`` were held back from ``channel``
        because of ``why``, unless that was said already for the same transitions."""
        fresh = []
        for alert in alerts:
            key = (channel, alert.fingerprint, alert.ts_ms, why)
            if key in self._seen:
                continue
            self._seen[key] = None
            fresh.append(alert)
        while len(self._seen) > KEPT:
            self._seen.popitem(last=False)
        if not fresh and alerts:
            return
        first = fresh[0] if fresh else None
        logger.info(
            "notification suppressed channel=%s why=%s alerts=%d rule=%s entity=%s fingerprint=%s",
            channel,
            why,
            len(fresh),
            first.rule if first else "",
            first.entity if first else "",
            first.fingerprint if first else "",
        )
        if self.listener is not None:
            self.listener(channel, fresh, why)

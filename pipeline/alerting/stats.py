"""Per-channel notification counters, shared by the dispatcher and the notifier.

Counter names:

=============  =================================================================
``sent``       delivered (apprise reported success)
``failed``     given up on: permanent failure, or retries exhausted
``retried``    attempts retried after a retryable failure
``suppressed`` held back by the channel's rate limit (summed up later)
``silenced``   alerts left out of a notification because a silence matched
``inhibited``  alerts left out because an inhibiting alert was firing
``muted``      group flushes postponed by a mute window
=============  =================================================================

Dispatcher counts are per decision: a re-run after a crash counts again.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["COUNTER_NAMES", "ChannelStats"]

COUNTER_NAMES = ("sent", "failed", "retried", "suppressed", "silenced", "inhibited", "muted")


class ChannelStats:
    """Counters by channel and name."""

    def __init__(self) -> None:
        self._counts: dict[str, Counter[str]] = {}

    def add(self, channel: str, name: str, count: int = 1) -> None:
        """Add ``count`` to counter ``name`` of ``channel``."""
        self._counts.setdefault(channel, Counter())[name] += count

    def channel(self, channel: str) -> dict[str, int]:
        """Every counter of one channel (zeros included)."""
        counts = self._counts.get(channel, Counter())
        return {name: counts[name] for name in COUNTER_NAMES}

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Every channel's counters (zeros included), by channel name."""
        return {name: self.channel(name) for name in sorted(self._counts)}

    def totals(self) -> dict[str, int]:
        """Each counter summed over channels."""
        total: Counter[str] = Counter()
        for counts in self._counts.values():
            total.update(counts)
        return {name: total[name] for name in COUNTER_NAMES}

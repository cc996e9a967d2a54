"""Exponential backoff with full jitter.

The delay before retry ``n`` (0-based) is drawn uniformly from ``[0, min(maximum, initial *
factor**n)]`` ("full jitter"): many producers that lost the same upstream at the same moment
spread their reconnects instead of arriving together. The run loops call :meth:`Backoff.reset`
after a good connection, so one drop after hours of streaming retries quickly again.
"""

from __future__ import annotations

import asyncio
import random

__all__ = ["Backoff", "sleep_unless_stopped"]


class Backoff:
    """Delays for consecutive retries, in float seconds.

    Args:
        initial: ceiling of the first delay, seconds (> 0).
        factor: growth of the ceiling per retry (>= 1).
        maximum: cap of the ceiling, seconds (>= initial).
        rng: random source; pass ``random.Random(seed)`` for reproducible delays.

    Raises:
        ValueError: a parameter is out of range.
    """

    def __init__(
        self,
        initial: float = 0.5,
        factor: float = 2.0,
        maximum: float = 30.0,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not initial > 0:
            raise ValueError(f"initial must be > 0 seconds, got {initial!r}")
        if not factor >= 1:
            raise ValueError(f"factor must be >= 1, got {factor!r}")
        if not maximum >= initial:
            raise ValueError(f"maximum must be >= initial ({initial!r}), got {maximum!r}")
        self.initial = initial
        self.factor = factor
        self.maximum = maximum
        self._rng = rng if rng is not None else random.Random()  # jitter, not crypto
        self._ceiling = initial
        self.attempts = 0

    @property
    def ceiling(self) -> float:
        """Upper bound of the next delay, seconds."""
        return self._ceiling

    def next_delay(self) -> float:
        """Return the delay before the next retry and grow the ceiling."""
        delay = self._rng.uniform(0.0, self._ceiling)
        self.attempts += 1
        # Grow from the previous ceiling rather than computing factor**attempts: no overflow
        # however long the upstream stays down.
        self._ceiling = min(self.maximum, self._ceiling * self.factor)
        return delay

    def reset(self) -> None:
        """Start again from ``initial`` (after a good connection or delivery)."""
        self._ceiling = self.initial
        self.attempts = 0

    def __repr__(self) -> str:
        return (
            f"Backoff(initial={self.initial!r}, factor={self.factor!r}, "
            f"maximum={self.maximum!r}, attempts={self.attempts})"
        )


async def sleep_unless_stopped(stop: asyncio.Event, delay: float) -> bool:
    """Wait ``delay`` seconds unless ``stop`` is set first; return whether it was set."""
    try:
        async with asyncio.timeout(delay):
            await stop.wait()
    except TimeoutError:
        return False
    return True

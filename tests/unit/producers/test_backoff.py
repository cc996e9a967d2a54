"""Exponential backoff with full jitter."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producers.backoff import Backoff


def test_ceiling_doubles_from_initial_up_to_the_cap() -> None:
    backoff = Backoff(rng=random.Random(1))
    ceilings = []
    for _ in range(10):
        ceilings.append(backoff.ceiling)
        backoff.next_delay()
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_delays_are_jittered_within_the_ceiling() -> None:
    backoff = Backoff(initial=1.0, factor=1.0, maximum=1.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0.0 <= d <= 1.0 for d in delays)
    # Full jitter spreads over the whole range, not around a fixed value.
    assert min(delays) < 0.1
    assert max(delays) > 0.9
    assert len(set(delays)) == len(delays)


def test_reset_starts_again_from_initial() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, rng=random.Random(3))
    for _ in range(6):
        backoff.next_delay()
    assert backoff.ceiling == 30.0
    assert backoff.attempts == 6
    backoff.reset()
    assert backoff.ceiling == 0.5
    assert backoff.attempts == 0
    assert backoff.next_delay() <= 0.5


def test_a_long_outage_does_not_overflow() -> None:
    backoff = Backoff(initial=0.5, factor=10.0, maximum=30.0)
    for _ in range(10_000):
        delay = backoff.next_delay()
    assert 0.0 <= delay <= 30.0
    assert backoff.ceiling == 30.0


@given(
    initial=st.floats(min_value=0.001, max_value=10.0),
    factor=st.floats(min_value=1.0, max_value=5.0),
    extra=st.floats(min_value=0.0, max_value=100.0),
    retries=st.integers(min_value=1, max_value=40),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_delay_is_within_full_jitter_bounds(
    initial: float, factor: float, extra: float, retries: int, seed: int
) -> None:
    maximum = initial + extra
    backoff = Backoff(initial=initial, factor=factor, maximum=maximum, rng=random.Random(seed))
    for n in range(retries):
        bound = min(maximum, initial * factor**n)
        assert 0.0 <= backoff.next_delay() <= bound * (1 + 1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": 0.0}, "initial must be > 0 seconds, got 0.0"),
        ({"factor": 0.5}, "factor must be >= 1, got 0.5"),
        ({"initial": 2.0, "maximum": 1.0}, "maximum must be >= initial (2.0), got 1.0"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        Backoff(**kwargs)

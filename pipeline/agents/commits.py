"""Commit a consumer's offsets in order, each batch only once Kafka acknowledged its outputs.

Why: a stage that waits for the acknowledgement of a batch's writes before it fetches the
next batch spends most of a small batch waiting (measured on the normalize stage at a steady
3,000 frames/s: 8-20 ms per iteration, most of it the wait, ~30 frames per iteration, so it
fell behind). Here the stage goes on with the next batch while earlier ones wait; a
separate task commits their offsets in the order the batches were taken, each only after
every write of it and of every batch before it was acknowledged, and at most every
:data:`COMMIT_INTERVAL_S`. At-least-once holds as before: an offset is never committed ahead
of its batch's outputs, and a crash redoes what was not committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError

from pipeline.agents.crash import exit_now

__all__ = ["COMMIT_INTERVAL_S", "OrderedCommits", "consumer_commit", "run_or_exit"]

logger = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.5
"""Least time between two offset commits of a stage (see :class:`OrderedCommits`)."""

Offsets = dict[Any, int]
"""Next offset to read, by topic partition (what ``AIOKafkaConsumer.commit`` takes)."""


class OrderedCommits:
    """Batches whose writes are on their way, committed in order; see the module docstring.

    Args:
        commit: commits offsets (e.g. ``AIOKafkaConsumer.commit`` behind a handler for
            refused commits).
        depth: batches whose writes may await acknowledgement at once; :meth:`add` waits
            while that many do (back-pressure).
        interval: least time in seconds between two commits. Acknowledged batches wait and
            go in one commit: at a steady rate each small batch used to cost an OffsetCommit
            request of its own (~70 a second for the two stages at 1,000 frames/s, each
            encoded in pure Python); a crash redoes at most this much more.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        commit: Callable[[Offsets], Awaitable[None]],
        depth: int,
        *,
        interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._commit = commit
        self._depth = depth
        self._interval = interval
        self._clock = clock
        self._batches: deque[tuple[Offsets, asyncio.Future[None]]] = deque()
        self._changed = asyncio.Condition()
        self._draining = 0

    def __len__(self) -> int:
        """Batches not committed yet."""
        return len(self._batches)

    @property
    def unacknowledged(self) -> int:
        """Batches whose writes Kafka has not acknowledged yet."""
        return sum(1 for _offsets, written in self._batches if not written.done())

    async def add(self, offsets: Offsets, written: Awaitable[None]) -> None:
        """Queue a batch: commit ``offsets`` once ``written`` (its writes' acknowledgement) is
        done and every batch added before it is committed."""
        future = asyncio.ensure_future(written)
        while True:
            waiting = [w for _offsets, w in self._batches if not w.done()]
            if len(waiting) < self._depth:
                break
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        async with self._changed:
            self._batches.append((offsets, future))
            self._changed.notify_all()

    async def drain(self) -> None:
        """Wait until every batch added so far is committed (e.g. before partitions move);
        the commit interval does not hold it up."""
        self._draining += 1
        try:
            async with self._changed:
                self._changed.notify_all()
                await self._changed.wait_for(lambda: not self._batches)
        finally:
            self._draining -= 1

    async def run(self) -> None:
        """Commit until cancelled. Batches already acknowledged go in one commit.

        Raises:
            Exception: what a batch's ``written`` raised (its writes failed): nothing of it or
                after it is committed, and the caller must stop (the stage exits).
        """
        last = self._clock() - self._interval
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._batches))
            await self._batches[0][1]
            wait = last + self._interval - self._clock()
            if wait > 0 and not self._draining:
                async with self._changed:  # a drain cuts the wait short
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._changed.wait_for(lambda: self._draining > 0), wait
                        )
            ready = 0
            merged: Offsets = {}
            for offsets, written in self._batches:
                if not written.done():
                    break
                written.result()  # a failed batch raises here, before anything of it commits
                merged.update(offsets)
                ready += 1
            await self._commit(merged)
            last = self._clock()
            async with self._changed:
                for _ in range(ready):
                    self._batches.popleft()
                self._changed.notify_all()


def consumer_commit(consumer: AIOKafkaConsumer, stage: str) -> Callable[[Offsets], Awaitable[None]]:
    """``consumer.commit`` for :class:`OrderedCommits`: a commit refused because partitions
    moved in a rebalance is logged, not raised; their new owner redoes the batch
    (at-least-once), nothing is lost."""

    async def commit(offsets: Offsets) -> None:
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            logger.warning("%s commit refused, batch will be redone: %s", stage, exc)

    return commit


async def run_or_exit(commits: OrderedCommits, stage: str) -> None:
    """Run the committer; writes Kafka refused end the process (nothing after them commits)."""
    try:
        await commits.run()
    except Exception as exc:  # not CancelledError (a BaseException): the stage stopping
        exit_now(stage, exc)

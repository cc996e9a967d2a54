"""Commit a consumer's offsets in order, each batch only once Kafka acknowledged its outputs.

Why: a stage that waits for the acknowledgement of a batch's writes before it fetches the
next batch spends most of a small batch waiting (measured on the normalize stage at a steady
3,000 frames/s: 8-20 ms per iteration, most of it the wait, ~30 frames per iteration, so it
fell behind). Here the stage goes on with the next batch while earlier ones wait; a
separate task commits their offsets in the order the batches were taken, each only after
every write of it and of every batch before it was acknowledged. At-least-once holds as
before: an offset is never committed ahead of its batch's outputs, and a crash redoes what
was not committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError

from pipeline.agents.crash import exit_now

__all__ = ["OrderedCommits", "consumer_commit", "run_or_exit"]

logger = logging.getLogger(__name__)

Offsets = dict[Any, int]
"""Next offset to read, by topic partition (what ``AIOKafkaConsumer.commit`` takes)."""


class OrderedCommits:
    """Batches whose writes are on their way, committed in order; see the module docstring.

    Args:
        commit: commits offsets (e.g. ``AIOKafkaConsumer.commit`` behind a handler for
            refused commits).
        depth: batches that may wait for acknowledgement at once; :meth:`add` waits while
            that many do (back-pressure, and a bound on what a crash makes the stage redo).
    """

    def __init__(self, commit: Callable[[Offsets], Awaitable[None]], depth: int) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._commit = commit
        self._depth = depth
        self._batches: deque[tuple[Offsets, asyncio.Future[None]]] = deque()
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        """Batches not committed yet."""
        return len(self._batches)

    async def add(self, offsets: Offsets, written: Awaitable[None]) -> None:
        """Queue a batch: commit ``offsets`` once ``written`` (its writes' acknowledgement) is
        done and every batch added before it is committed."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._batches) < self._depth)
            self._batches.append((offsets, asyncio.ensure_future(written)))
            self._changed.notify_all()

    async def drain(self) -> None:
        """Wait until every batch added so far is committed (e.g. before partitions move)."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._batches)

    async def run(self) -> None:
        """Commit until cancelled. Batches already acknowledged go in one commit.

        Raises:
            Exception: what a batch's ``written`` raised (its writes failed): nothing of it or
                after it is committed, and the caller must stop (the stage exits).
        """
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._batches))
            await self._batches[0][1]
            ready = 0
            merged: Offsets = {}
            for offsets, written in self._batches:
                if not written.done():
                    break
                written.result()  # a failed batch raises here, before anything of it commits
                merged.update(offsets)
                ready += 1
            await self._commit(merged)
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

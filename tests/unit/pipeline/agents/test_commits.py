"""OrderedCommits: offsets committed in order, each batch only after its writes' acks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.agents.commits import Offsets, OrderedCommits
from pipeline.agents.publish import PublishError


class Recorder:
    def __init__(self) -> None:
        self.commits: list[Offsets] = []
        self.committed = asyncio.Event()

    async def commit(self, offsets: Offsets) -> None:
        self.commits.append(dict(offsets))
        self.committed.set()


def ack() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_batch_is_committed_only_after_its_and_every_earlier_batch_s_acks() -> None:
    recorder = Recorder()
    commits = OrderedCommits(recorder.commit, depth=4)
    runner = asyncio.create_task(commits.run())
    first, second, third = ack(), ack(), ack()
    await commits.add({"p0": 10}, first)
    await commits.add({"p0": 20, "p1": 5}, second)
    await commits.add({"p1": 9}, third)

    second.set_result(None)  # acknowledged out of order: must wait for the first
    await settle()
    assert recorder.commits == []

    first.set_result(None)
    await settle()
    assert recorder.commits == [{"p0": 20, "p1": 5}]  # both acknowledged: one commit
    assert len(commits) == 1

    third.set_result(None)
    await asyncio.wait_for(commits.drain(), 1)
    assert recorder.commits[-1] == {"p1": 9}
    runner.cancel()


async def test_a_failed_batch_stops_the_committer_before_it_or_anything_after() -> None:
    recorder = Recorder()
    commits = OrderedCommits(recorder.commit, depth=4)
    runner = asyncio.create_task(commits.run())
    failed, later = ack(), ack()
    await commits.add({"p0": 10}, failed)
    await commits.add({"p0": 20}, later)
    later.set_result(None)
    failed.set_exception(PublishError("1 of 1 records were not written to Kafka"))

    with pytest.raises(PublishError):
        await asyncio.wait_for(runner, 1)
    assert recorder.commits == []


async def test_add_waits_while_depth_batches_are_unacknowledged() -> None:
    recorder = Recorder()
    commits = OrderedCommits(recorder.commit, depth=1)
    runner = asyncio.create_task(commits.run())
    first = ack()
    await commits.add({"p0": 1}, first)
    blocked: Any = asyncio.create_task(commits.add({"p0": 2}, ack()))
    await settle()
    assert not blocked.done()

    first.set_result(None)
    await asyncio.wait_for(blocked, 1)
    assert recorder.commits == [{"p0": 1}]
    runner.cancel()


async def test_acknowledged_batches_wait_for_the_interval_and_go_in_one_commit() -> None:
    recorder = Recorder()
    now = {"t": 100.0}
    commits = OrderedCommits(recorder.commit, depth=1, interval=0.2, clock=lambda: now["t"])
    runner = asyncio.create_task(commits.run())
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    await commits.add({"p0": 1}, done)
    await asyncio.wait_for(recorder.committed.wait(), 1)  # the first commit goes at once
    recorder.committed.clear()
    # depth=1 bounds batches awaiting acknowledgement, not acknowledged ones waiting for
    # the interval: these adds do not block.
    for offset in (2, 3, 4):
        await asyncio.wait_for(commits.add({"p0": offset}, done), 1)
    await settle()
    assert recorder.commits == [{"p0": 1}] and len(commits) == 3 and commits.unacknowledged == 0
    await asyncio.wait_for(recorder.committed.wait(), 1)  # after the interval (real time)
    assert recorder.commits == [{"p0": 1}, {"p0": 4}]
    runner.cancel()


async def test_drain_does_not_wait_for_the_interval() -> None:
    recorder = Recorder()
    commits = OrderedCommits(recorder.commit, depth=4, interval=3600)
    runner = asyncio.create_task(commits.run())
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    await commits.add({"p0": 1}, done)
    await asyncio.wait_for(recorder.committed.wait(), 1)
    await commits.add({"p0": 2}, done)
    await settle()
    assert recorder.commits == [{"p0": 1}]  # held by the hour-long interval
    await asyncio.wait_for(commits.drain(), 1)
    assert recorder.commits == [{"p0": 1}, {"p0": 2}]
    runner.cancel()


def test_depth_must_allow_one_batch() -> None:
    async def commit(offsets: Offsets) -> None:
        pass

    with pytest.raises(ValueError, match="depth"):
        OrderedCommits(commit, depth=0)

"""Delivery from the outbox: marks acknowledged in the right order, batches, retries, restarts.

The tables are the worker's batched faust tables, their changelog batches handed to a sender
whose acknowledgements arrive a little later, like Kafka's; the notifier records what was
durable at the moment of each send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from pipeline.agents import notify
from pipeline.agents.notify import POSSIBLE_DUPLICATE, NotificationStage
from pipeline.alerting.dispatch import Dispatcher
from pipeline.alerting.model import Notification
from pipeline.errors import NotifyError
from pipeline.notify.sender import Notifier
from pipeline.runtime.app import StreamWardenApp
from pipeline.runtime.tables import BatchedTable


class SlowAckTable:
    """A :class:`BatchedTable` whose changelog batches are acknowledged 5 ms after they are
    sent, like Kafka's; every acknowledgement sets :attr:`changed`."""

    def __init__(self, name: str = "notify_log") -> None:
        app = StreamWardenApp(
            f"test-{name}", broker="kafka://localhost:1", autodiscover=False, web_enabled=False
        )
        self.table = BatchedTable(
            app=app, name=name, default=None, partitions=1, key_type=bytes, value_type=bytes
        )
        self.table.sender = self.send
        self.acked: list[tuple[str, bool]] = []  # (key, written) in order of acknowledgement
        self.changed = asyncio.Event()

    async def send(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> list[Any]:
        future = asyncio.get_running_loop().create_future()

        def ack() -> None:
            for key, value in records:
                assert key is not None
                self.acked.append((key.decode().removeprefix("p0|"), value is not None))
            future.set_result(None)
            self.changed.set()

        asyncio.get_running_loop().call_later(0.005, ack)
        return [future]

    def durable(self) -> set[str]:
        """Keys whose last acknowledged write is a value (not a deletion)."""
        state: dict[str, bool] = {}
        for key, written in self.acked:
            state[key] = written
        return {key for key, written in state.items() if written}


@dataclass
class RecordingNotifier:
    """Records each send with the marks durable at that moment; fails as told."""

    log: SlowAckTable
    failures: dict[str, list[NotifyError]] = field(default_factory=dict)
    sent: list[tuple[str, str, set[str]]] = field(default_factory=list)  # (id, title, durable)

    async def send_checked(self, notification: Notification) -> None:
        pending = self.failures.get(notification.id)
        if pending:
            raise pending.pop(0)
        self.sent.append((notification.id, notification.title, self.log.durable()))
        self.log.changed.set()

    async def send_in_order(self, notifications: Sequence[Notification]) -> list[Any]:
        """Like :meth:`Notifier.send_in_order`: in order, stopping at the first failure."""
        outcomes: list[Any] = []
        for notification in notifications:
            try:
                await self.send_checked(notification)
            except NotifyError as exc:
                outcomes.append(exc)
                break
            outcomes.append(notification)
        return outcomes


def notification(n: int, group: str = "g") -> Notification:
    return Notification(
        id=f"n{n}",
        channel="ops",
        kind="firing",
        alerts=(),
        title=f"alert {n}",
        body="",
        format="text",
        notify_type="warning",
        created_ms=n,
        group_labels={"fingerprint": group},
    )


def stage_over(log: SlowAckTable, notifier: RecordingNotifier) -> NotificationStage:
    stage = NotificationStage(
        cast(Dispatcher, None),
        cast(Notifier, notifier),
        SlowAckTable("notify_state").table,
        log.table,
    )
    stage.activate()
    return stage


async def until(log: SlowAckTable, condition: Any) -> None:
    """Wait until ``condition()`` holds, re-checking after each send and acknowledgement."""
    async with asyncio.timeout(5.0):
        while not condition():
            log.changed.clear()
            await log.changed.wait()


async def test_each_send_follows_its_acknowledged_attempt_mark_and_ends_delivered() -> None:
    log = SlowAckTable()
    notifier = RecordingNotifier(log)
    stage = stage_over(log, notifier)
    stage.accept([notification(n) for n in range(5)])
    await stage.flush_tables()
    await until(log, lambda: len(notifier.sent) == 5 and not stage.log.pending_writes)
    await stage.log.flush_confirmed()

    assert [sent_id for sent_id, _, _ in notifier.sent] == [f"n{n}" for n in range(5)]
    for sent_id, title, durable in notifier.sent:
        assert f"a:{sent_id}" in durable
        assert not title.startswith(POSSIBLE_DUPLICATE)
    # one batch: every attempt mark was durable before the first send
    assert {f"a:n{n}" for n in range(5)} <= notifier.sent[0][2]
    assert log.durable() == {f"d:n{n}" for n in range(5)}
    await stage.deactivate()


async def test_a_retryable_failure_withdraws_the_attempt_marks_behind_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notify.random, "random", lambda: 0.0)  # shortest backoff (0.5 s)
    log = SlowAckTable()
    down = NotifyError("ops", "503", retryable=True)
    notifier = RecordingNotifier(log, failures={"n1": [down]})
    stage = stage_over(log, notifier)
    stage.accept([notification(n) for n in range(4)])
    await stage.flush_tables()
    await until(log, lambda: len(notifier.sent) == 4 and not stage.log.pending_writes)
    await stage.log.flush_confirmed()

    assert [sent_id for sent_id, _, _ in notifier.sent] == ["n0", "n1", "n2", "n3"]
    retried = notifier.sent[1][2]
    # while n1 waited for its retry, n2 and n3 were no longer marked as attempted
    assert "a:n1" in retried
    assert not {"a:n2", "a:n3"} & retried
    assert ("a:n2", False) in log.acked
    # and got their marks again before their own send
    assert "a:n2" in notifier.sent[2][2]
    assert log.durable() == {f"d:n{n}" for n in range(4)}
    await stage.deactivate()


async def test_a_permanent_failure_is_dropped_without_a_delivered_mark() -> None:
    log = SlowAckTable()
    notifier = RecordingNotifier(log, failures={"n0": [NotifyError("ops", "401", retryable=False)]})
    stage = stage_over(log, notifier)
    stage.accept([notification(0), notification(1)])
    await stage.flush_tables()
    await until(log, lambda: len(notifier.sent) == 1 and not stage.log.pending_writes)
    await stage.log.flush_confirmed()

    assert [sent_id for sent_id, _, _ in notifier.sent] == ["n1"]
    assert log.durable() == {"d:n1"}
    await stage.deactivate()


async def test_restart_resends_only_unconfirmed_attempts_marked_as_possible_duplicates() -> None:
    log = SlowAckTable()
    first = RecordingNotifier(log, failures={"n2": [NotifyError("ops", "x", retryable=True)]})
    stage = stage_over(log, first)
    stage.accept([notification(n) for n in range(3)])
    await stage.flush_tables()
    # n0 and n1 delivered; n2 failed once and waits for its retry, its mark still held
    await until(log, lambda: len(first.sent) == 2 and "d:n1" in log.durable())
    await stage.deactivate()  # the process dies here: nothing more is written

    # what a kill after n2's (unknown) send would leave: its attempt mark without a delivery
    assert {"o:n2", "a:n2"} <= log.durable()
    second = RecordingNotifier(log)
    restarted = stage_over(log, second)  # same durable log, as recovered from the changelog
    await until(log, lambda: len(second.sent) == 1 and not restarted.log.pending_writes)
    await restarted.log.flush_confirmed()

    assert [(sent_id, title) for sent_id, title, _ in second.sent] == [
        ("n2", POSSIBLE_DUPLICATE + "alert 2")
    ]
    assert log.durable() == {"d:n0", "d:n1", "d:n2"}
    await restarted.deactivate()

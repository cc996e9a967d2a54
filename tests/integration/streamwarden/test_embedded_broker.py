"""The embedded broker speaks Kafka over TCP, keeps topic counts straight and leaves no orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamwarden.embedded_broker import EmbeddedBroker, EmbeddedBrokerError

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


async def test_round_trip_through_a_consumer_group() -> None:
    with EmbeddedBroker() as broker:
        broker.create_topics({"bt.round-trip": 3})
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(30):
                await producer.send_and_wait("bt.round-trip", f"m{i}".encode(), key=str(i).encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            "bt.round-trip",
            bootstrap_servers=broker.bootstrap,
            group_id="bt",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        seen: set[bytes] = set()
        try:
            deadline = time.monotonic() + 20
            while len(seen) < 30 and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen.update(r.value for r in records if r.value is not None)
            partitions = consumer.partitions_for_topic("bt.round-trip")
        finally:
            await consumer.stop()
    assert seen == {f"m{i}".encode() for i in range(30)}
    assert partitions == {0, 1, 2}


def test_create_is_idempotent_but_refuses_another_partition_count() -> None:
    with EmbeddedBroker() as broker:
        broker.create_topics({"bt.counts": 4})
        broker.create_topics({"bt.counts": 4})
        with pytest.raises(
            EmbeddedBrokerError, match=r"'bt.counts' exists with 4 partitions, not 2"
        ):
            broker.create_topics({"bt.counts": 2})


def test_stop_ends_the_child_and_commands_after_stop_fail() -> None:
    broker = EmbeddedBroker()
    broker.start()
    pid = broker.pid
    assert pid is not None and _alive(pid)
    broker.stop()
    assert _wait_gone(pid, 10)
    with pytest.raises(EmbeddedBrokerError, match="not running"):
        broker.create_topics({"x": 1})
    broker.stop()  # idempotent


def test_child_dies_when_its_parent_is_killed() -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from streamwarden.embedded_broker import EmbeddedBroker
        b = EmbeddedBroker(); b.start()
        print(b.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _wait_gone(child_pid, 10), "embedded broker outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()

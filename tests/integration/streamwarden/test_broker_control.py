"""``streamwarden broker`` started on its own: its control port creates topics for tests."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient

from streamwarden.broker_control import CONTROL_ENV, BrokerControlError, create_topics

pytestmark = pytest.mark.integration


def _exports(proc: subprocess.Popen[bytes], count: int, timeout: float) -> dict[str, str]:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while seen.count(b"\n") < count and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            seen += os.read(proc.stdout.fileno(), 65536)
    pairs = [line.removeprefix("export ").split("=", 1) for line in seen.decode().splitlines()]
    return dict(pairs)  # type: ignore[arg-type]


def test_the_control_port_creates_topics_and_reports_refusals() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamwarden", "broker", "--partitions", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        exports = _exports(proc, 5, 60)
        bootstrap = exports["STREAMWARDEN_KAFKA_BOOTSTRAP"]
        control = exports[CONTROL_ENV]
        assert control.startswith("127.0.0.1:")

        create_topics(control, {"control-test-a": 3, "control-test-b": 1})
        topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
        assert len(topics["control-test-a"].partitions) == 3
        assert len(topics["control-test-b"].partitions) == 1
        assert len(topics["measurements.v1"].partitions) == 2

        with pytest.raises(BrokerControlError, match="exists with 3 partitions, not 5"):
            create_topics(control, {"control-test-a": 5})
        with pytest.raises(BrokerControlError, match="partition counts"):
            create_topics(control, {"control-test-c": 0})
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_an_unreachable_control_port_is_named() -> None:
    with pytest.raises(BrokerControlError, match=r"broker control at 127\.0\.0\.1:1 unreachable"):
        create_topics("127.0.0.1:1", {"t": 1}, timeout=2)

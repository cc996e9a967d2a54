"""Start-up against an unreachable Kafka: one line per attempt, backoff, then exit 2, no traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from producers.backoff import Backoff
from streamwarden.cli import main
from streamwarden.preflight import KafkaUnreachableError, probe_kafka, wait_for_kafka
from tests.support.ports import closed_port


@pytest.fixture(name="closed_port")
def _closed_port() -> Iterator[int]:
    with closed_port() as port:
        yield port


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_retries_with_growing_delays_then_gives_up_with_the_last_reason() -> None:
    fake = FakeTime()
    reasons = iter(f"failure {n}" for n in range(100))
    lines: list[str] = []

    def probe(bootstrap: str, timeout: float) -> str | None:
        fake.now += 1.0  # each attempt takes a second
        return next(reasons)

    with pytest.raises(KafkaUnreachableError) as caught:
        wait_for_kafka(
            "kafka:9092",
            20.0,
            say=lines.append,
            probe=probe,
            backoff=Backoff(initial=1.0, factor=2.0, maximum=4.0, rng=_NoJitter()),
            clock=fake.clock,
            sleep=fake.sleep,
        )
    error = caught.value
    assert fake.sleeps[:4] == [1.0, 2.0, 4.0, 4.0]
    assert error.waited_s >= 20.0
    assert error.attempts == len(lines) + 1
    assert error.reason == f"failure {error.attempts - 1}"
    assert str(error).startswith(f"cannot reach Kafka at kafka:9092: failure {error.attempts - 1};")
    assert all(line.startswith("cannot reach Kafka at kafka:9092: failure ") for line in lines)


def test_returns_once_kafka_answers() -> None:
    fake = FakeTime()
    answers = iter(["Connection refused", "Connection refused", None])
    lines: list[str] = []
    wait_for_kafka(
        "kafka:9092",
        60.0,
        say=lines.append,
        probe=lambda _b, _t: next(answers),
        clock=fake.clock,
        sleep=fake.sleep,
    )
    assert len(fake.sleeps) == 2
    assert lines[-1] == "Kafka at kafka:9092 answered after 3 attempts"


class _NoJitter:
    """A random source whose uniform(0, ceiling) is the ceiling: delays become predictable."""

    def uniform(self, _low: float, high: float) -> float:
        return high


def test_probe_names_a_refused_connection(closed_port: int) -> None:
    reason = probe_kafka(f"127.0.0.1:{closed_port}", 1.0)
    assert reason == f"Connect to ipv4#127.0.0.1:{closed_port} failed: Connection refused"


def test_probe_names_an_unresolvable_host() -> None:
    reason = probe_kafka("no-such-host.invalid:9092", 1.0)
    assert reason is not None
    assert "Failed to resolve 'no-such-host.invalid:9092'" in reason


def test_probe_says_when_something_else_listens() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        reason = probe_kafka(f"127.0.0.1:{server.getsockname()[1]}", 1.0)
    assert reason is not None
    assert "does not speak Kafka" in reason or "Connect to" in reason or "failed" in reason


def test_worker_exits_2_with_one_clear_line(
    closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = Path(__file__).resolve().parents[3] / "rules"
    monkeypatch.setenv("STREAMWARDEN_KAFKA_BOOTSTRAP", f"127.0.0.1:{closed_port}")
    monkeypatch.setenv("STREAMWARDEN_RULES_PATH", str(rules))
    result = CliRunner().invoke(main, ["worker", "--connect-timeout", "0"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"cannot reach Kafka at 127.0.0.1:{closed_port}: Connect to ipv4#127.0.0.1:{closed_port} "
        "failed: Connection refused; gave up after 1s and 1 attempt "
        "(STREAMWARDEN_KAFKA_BOOTSTRAP, --connect-timeout)"
    )


def _producer_env(
    monkeypatch: pytest.MonkeyPatch, folder: Path, port: int, tokens: dict[str, str]
) -> None:
    """A sources file of valtronics sources (name -> token) and Kafka at ``port``."""
    sources = folder / "sources.yaml"
    entries = [
        {"name": name, "kind": "valtronics", "url": "ws://127.0.0.1:9/ws", "token": token}
        for name, token in tokens.items()
    ]
    sources.write_text(yaml.safe_dump({"sources": entries}), encoding="utf-8")
    monkeypatch.setenv("STREAMWARDEN_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
    monkeypatch.setenv("STREAMWARDEN_SOURCES_FILE", str(sources))


def test_producer_retries_then_exits_2(
    closed_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _producer_env(monkeypatch, tmp_path, closed_port, {"valtronics-main": "not-used"})
    monkeypatch.setenv("STREAMWARDEN_KAFKA_CONNECT_TIMEOUT", "3")
    result = CliRunner().invoke(main, ["produce", "valtronics-main"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) >= 2
    assert all(f"cannot reach Kafka at 127.0.0.1:{closed_port}: " in line for line in lines)
    assert "retrying in" in lines[0]
    assert "gave up after" in lines[-1]
    assert "Traceback" not in result.output


def test_producer_needs_only_its_own_sources_variables(
    closed_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = {"other": "${OTHER_TOKEN_NOT_SET}", "mine": "${MY_TOKEN}"}
    _producer_env(monkeypatch, tmp_path, closed_port, tokens)
    monkeypatch.delenv("OTHER_TOKEN_NOT_SET", raising=False)
    monkeypatch.setenv("MY_TOKEN", "my-token-value")
    result = CliRunner().invoke(main, ["produce", "mine", "--connect-timeout", "0"])
    # Past the sources file (which once demanded OTHER_TOKEN_NOT_SET) to the Kafka check.
    assert result.exit_code == 2, result.output
    assert "OTHER_TOKEN_NOT_SET" not in result.output
    assert f"cannot reach Kafka at 127.0.0.1:{closed_port}" in result.output

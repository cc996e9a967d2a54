"""What the scenarios share: result rows, options, worker processes, Kafka reads, and
:class:`AlertingRun`, the broker + stream + workers + sink set-up of the worker scenarios.

Nothing here fakes a component: workers are ``python -m streamwarden worker`` processes, the
broker is the embedded one (a child process, loopback only), notifications travel through
apprise's ``json://`` plugin to :class:`~streamwarden.chaos.notifications.NotificationSink`,
a real HTTP server on 127.0.0.1. What is due comes from the oracle of
:mod:`streamwarden.chaos.workload`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from streamwarden.chaos.notifications import (
    NotificationSink,
    Received,
    Tally,
    describe_tally,
    tally,
)
from streamwarden.chaos.workload import (
    HOOK_URL_ENV,
    PARTITIONS,
    AlertKey,
    PowerStream,
    expected_transitions,
    in_scope,
    write_config,
)
from streamwarden.process import DIE_WITH_PARENT_ENV

__all__ = [
    "AlertingRun",
    "ChaosOptions",
    "ScenarioResult",
    "Timeline",
    "WorkerProcess",
    "note_pid",
    "read_topic",
    "result_from",
    "stop_workers",
    "worker_env",
]

logger = logging.getLogger(__name__)

# A SIGKILLed member is only evicted from the consumer groups when its session times out.
# Chaos workers run the embedded broker's default session timeout and heartbeat (see
# pipeline.settings.EMBEDDED_SESSION_TIMEOUT_S), what `streamwarden demo` runs, so the
# takeover time measured is the one users get; only the rebalance timeout is bounded further.
FAUST_GROUP_ENV = {
    "STREAMWARDEN_REBALANCE_TIMEOUT_S": "20",
}


# --------------------------------------------------------------------------- results


@dataclass
class ScenarioResult:
    """One row of the chaos table.

    Attributes:
        scenario: name (``worker-kill``, ``upstream-drop/element``...).
        sent: events the scenario put in (upstream frames, raw envelopes).
        expected: what must come out (notifications, readings, frames).
        delivered: distinct expected items that came out.
        duplicated: items that came out more than once (extra copies).
        lost: expected items that never came out.
        ok: the scenario's own criterion held (see each scenario's docstring).
        note: what happened, in a sentence or two (kills, reconnects, outage, log folder).
        seconds: wall time of the scenario.
    """

    scenario: str
    sent: int = 0
    expected: int = 0
    delivered: int = 0
    duplicated: int = 0
    lost: int = 0
    ok: bool = False
    note: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "sent": self.sent,
            "expected": self.expected,
            "delivered": self.delivered,
            "duplicated": self.duplicated,
            "lost": self.lost,
            "ok": self.ok,
            "note": self.note,
            "seconds": round(self.seconds, 1),
            "details": self.details,
        }


@dataclass(frozen=True)
class ChaosOptions:
    """How to run the scenarios.

    Attributes:
        quick: the CI variant (fewer kills, shorter outages).
        seed: seeds every random choice (kill points, stream phases, simulators).
        workdir: logs and config files go below it, one folder per scenario.
        progress: receives one human line per step (stderr in the CLI).
    """

    quick: bool
    seed: int
    workdir: Path
    progress: Callable[[str], None] = lambda _line: None


# --------------------------------------------------------------------------- worker processes


def worker_env(
    *,
    bootstrap: str,
    app_id: str,
    folder: Path,
    hook_url: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a chaos worker: our settings only (no inherited STREAMWARDEN_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMWARDEN_")}
    env.update(FAUST_GROUP_ENV)
    env.update(
        {
            "STREAMWARDEN_KAFKA_BOOTSTRAP": bootstrap,
            "STREAMWARDEN_KAFKA_EMBEDDED": "true",
            "STREAMWARDEN_PARTITIONS": str(PARTITIONS),
            "STREAMWARDEN_APP_ID": app_id,
            "STREAMWARDEN_RULES_PATH": str(folder / "rules.yaml"),
            "STREAMWARDEN_CHANNELS_FILE": str(folder / "channels.yaml"),
            "STREAMWARDEN_ALERTS_OUT": str(folder / "delivered.jsonl"),
            "STREAMWARDEN_LOG_LEVEL": "INFO",
            HOOK_URL_ENV: hook_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


class WorkerProcess:
    """One ``python -m streamwarden worker`` process, its own session, output to a log file.

    It asks Linux to SIGTERM it if we die (:func:`streamwarden.process.die_with_parent`), so
    a killed chaos run leaves no worker behind.
    """

    def __init__(self, name: str, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._env = {**env, DIE_WITH_PARENT_ENV: str(os.getpid())}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> Self:
        data_dir = self.log_path.with_suffix(".data")
        env = {**self._env, "STREAMWARDEN_DATA_DIR": str(data_dir)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamwarden", "worker"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else -1

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (no shutdown code runs) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_count(self, needle: str) -> int:
        """How many log lines contain ``needle``."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if needle in line)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def note_pid(workdir: Path, pid: int | None) -> None:
    """Append a started child's pid to ``workdir/pids.txt`` (tests check none survives)."""
    if pid is None or pid < 0:
        return
    with (workdir / "pids.txt").open("a", encoding="utf-8") as out:
        out.write(f"{pid}\n")


async def stop_workers(workers: Iterable[WorkerProcess], stop_timeout: float = 20.0) -> None:
    """Stop every worker (in threads: ``wait`` blocks)."""
    await asyncio.gather(*(asyncio.to_thread(w.stop, stop_timeout) for w in workers))


# --------------------------------------------------------------------------- Kafka


async def read_topic(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    """Every record value of ``topic`` from the beginning (manual assignment, no commits)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=f"chaos-reader-{uuid.uuid4().hex}",
    )
    await consumer.start()
    out: list[bytes] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp, end in ends.items() if end > 0}
        while remaining:
            for _tp, records in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                out.extend(r.value or b"" for r in records)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return out


@dataclass
class Timeline:
    """Progress lines of one scenario, prefixed with its name."""

    progress: Callable[[str], None]
    scenario: str

    def say(self, text: str) -> None:
        self.progress(f"{self.scenario}: {text}")


# --------------------------------------------------------------------------- alerting runs


class AlertingRun:
    """Broker, topics, notification sink, config and a running :class:`PowerStream`.

    Scenarios start workers with :meth:`start_worker` and choreograph faults; :meth:`finish`
    stops the stream, asks the oracle what was due and waits (bounded) for it to arrive.
    Everything started here is stopped in :meth:`close`, whatever happened.

    Args:
        options: the run's options.
        scenario: the scenario name (folder and app id).
        step_s: seconds between two steps of the stream (one frame per measuring point).
    """

    def __init__(self, options: ChaosOptions, scenario: str, *, step_s: float = 0.1) -> None:
        from streamwarden.embedded_broker import EmbeddedBroker

        self.options = options
        self.scenario = scenario
        self.step_s = step_s
        self.folder = options.workdir / scenario.replace("/", "-")
        self.app_id = f"chaos-{scenario.replace('/', '-')}-{uuid.uuid4().hex[:8]}"
        self.timeline = Timeline(options.progress, scenario)
        self.broker = EmbeddedBroker()
        self.hook = NotificationSink()
        self.stream = PowerStream(options.seed)
        self.workers: list[WorkerProcess] = []
        self.kills: list[float] = []
        self._stop_stream = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._sink: Any = None
        self.rules_path = self.folder / "rules.yaml"

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        from pipeline.topics import all_topics
        from producers.sink import KafkaSink

        write_config(self.folder)
        bootstrap = await asyncio.to_thread(self.broker.start)
        await asyncio.to_thread(
            self.broker.create_topics,
            {t.name: t.partitions for t in all_topics(self.app_id, PARTITIONS)},
        )
        note_pid(self.options.workdir, self.broker.pid)
        self.hook.start()
        self._sink = KafkaSink(
            bootstrap, buffer_max_messages=10_000, client_id=f"chaos-{self.scenario}"
        )
        await self._sink.start()
        self._writer = asyncio.create_task(
            self.stream.run(self._sink, self._stop_stream, self.step_s), name="chaos-stream"
        )
        self.timeline.say(f"broker {bootstrap}, logs in {self.folder}")

    def say(self, text: str) -> None:
        self.timeline.say(text)

    def start_worker(self, name: str, extra_env: Mapping[str, str] | None = None) -> WorkerProcess:
        env = worker_env(
            bootstrap=self.broker.bootstrap,
            app_id=self.app_id,
            folder=self.folder,
            hook_url=self.hook.url(),
            extra=extra_env,
        )
        worker = WorkerProcess(name, env, self.folder / f"{name}.log").start()
        note_pid(self.options.workdir, worker.pid)
        self.workers.append(worker)
        return worker

    async def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL a worker and remember when (duplicates are attributed to kills)."""
        self.kills.append(time.monotonic())
        await asyncio.to_thread(worker.kill)
        self.kills.append(time.monotonic())

    async def wait_deliveries(self, at_least: int, wait_timeout: float) -> bool:
        """Wait until the sink holds ``at_least`` alerts in all."""
        return await self.hook.wait_until(lambda items: len(items) >= at_least, wait_timeout)

    async def stop_stream(self) -> int:
        """Stop writing, flush to Kafka; returns the last event time written."""
        self._stop_stream.set()
        if self._writer is not None:
            async with asyncio.timeout(30):
                await self._writer
        if self._sink is not None:
            async with asyncio.timeout(60):
                await self._sink.flush()
        return self.stream.envelopes[-1].received_at_ms if self.stream.envelopes else 0

    async def finish(
        self, *, wait_s: float, quiet_s: float | None = 10.0, settle_s: float = 2.0
    ) -> tuple[Tally, int]:
        """Stop the stream, compute what is due and wait for it; ``(tally, events sent)``.

        Waits at most ``wait_s`` for every expected notification, and gives up earlier when
        nothing at all arrived for ``quiet_s`` (None: never), then ``settle_s`` more so that
        late duplicates are counted too.
        """
        last_ms = await self.stop_stream()
        expected = [
            key
            for key in expected_transitions(self.stream.envelopes, self.rules_path)
            if in_scope(key[0], key[3], last_ms)
        ]
        wanted = set(expected)
        self.say(
            f"stream stopped: {len(self.stream.envelopes)} envelopes, "
            f"{len(wanted)} notifications due"
        )

        def arrived(items: list[Received]) -> bool:
            return wanted <= {item.key for item in items}

        deadline = time.monotonic() + wait_s
        while not arrived(self.hook.items):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.say(f"not everything arrived within {wait_s:.0f}s")
                break
            count = self.hook.count()
            step = remaining if quiet_s is None else min(quiet_s, remaining)

            def progressed(items: list[Received], count: int = count) -> bool:
                return arrived(items) or len(items) > count

            moved = await self.hook.wait_until(progressed, step)
            if not moved and quiet_s is not None and step == quiet_s:
                self.say(f"nothing arrived for {quiet_s:.0f}s; not everything due arrived")
                break
        await asyncio.sleep(settle_s)  # a duplicate may still be on its way
        received = [i for i in self.hook.items if in_scope(i.rule, i.ts_ms, last_ms)]
        self._write_evidence(expected, self.hook.items)
        return tally(expected, received, self.kills), len(self.stream.envelopes)

    def _write_evidence(self, expected: list[AlertKey], received: list[Received]) -> None:
        """What was due and what arrived, one JSON object per line, next to the logs."""
        with (self.folder / "expected.jsonl").open("w", encoding="utf-8") as out:
            for rule, entity, state, ts_ms in expected:
                out.write(
                    json.dumps({"rule": rule, "entity": entity, "state": state, "ts_ms": ts_ms})
                    + "\n"
                )
        with (self.folder / "received.jsonl").open("w", encoding="utf-8") as out:
            for item in received:
                out.write(json.dumps(item.__dict__) + "\n")

    async def close(self) -> None:
        self._stop_stream.set()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.close_timeout = 5.0
            with contextlib.suppress(Exception):
                await sink.close()
        await stop_workers(self.workers)
        self.hook.stop()
        await asyncio.to_thread(self.broker.stop)


def result_from(
    scenario: str, sent: int, counted: Tally, *, ok: bool, note: str, seconds: float
) -> ScenarioResult:
    """A table row from a tally; details that have no column go to the note."""
    details = describe_tally(counted)
    return ScenarioResult(
        scenario=scenario,
        sent=sent,
        expected=counted.expected,
        delivered=counted.delivered,
        duplicated=counted.duplicated,
        lost=counted.lost,
        ok=ok,
        note=f"{note}; {details}" if details else note,
        seconds=seconds,
        details=counted.details(),
    )

"""``streamwarden demo``: the whole product on one machine, with nothing to install or sign up for.

Starts the embedded broker, creates every topic, then runs each part as the separate process it
is in production: the upstream simulator, the producer, and the worker, whose ``console``
channel prints notifications right here. Stops everything in order after ``duration`` seconds
or at Ctrl-C, and exits non-zero if any part failed.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import TextIO

import yaml

from pipeline.topics import all_topics
from streamwarden.embedded_broker import EmbeddedBroker
from streamwarden.process import Child, start_child

DEMO_PARTITIONS = 4
DEMO_APP_ID = "streamwarden-demo"
DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules"


class DemoError(RuntimeError):
    """A part of the demo failed; the message says which and shows its last log lines."""


def _say(out: TextIO, text: str) -> None:
    out.write(f"streamwarden demo: {text}\n")
    out.flush()


def _read_first_line(child: Child, timeout: float) -> str:
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    line = child.stdout.readline().decode().strip() if ready else ""
    if not line:
        raise DemoError(f"{child.name} did not start within {timeout:.0f}s:\n{child.log_tail()}")
    return line


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for _ in f)


def run_demo(
    *, duration: float | None, alerts_out: Path | None, rules_path: Path, out: TextIO
) -> int:
    """Run the demo; returns the process exit code."""
    workdir = Path(tempfile.mkdtemp(prefix="streamwarden-demo-"))
    alerts_path = (alerts_out or workdir / "alerts.jsonl").resolve()
    api_key = secrets.token_urlsafe(18)
    business_id = str(uuid.uuid4())
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    children: list[Child] = []
    started = time.monotonic()
    try:
        with EmbeddedBroker() as broker:
            broker.create_topics(
                {t.name: t.partitions for t in all_topics(DEMO_APP_ID, DEMO_PARTITIONS)}
            )
            _say(out, f"embedded Kafka broker at {broker.bootstrap}; logs in {workdir}")
            common = {
                "STREAMWARDEN_KAFKA_BOOTSTRAP": broker.bootstrap,
                "STREAMWARDEN_LOG_LEVEL": "INFO",
            }

            simulator = start_child(
                "simulator",
                ["simulate", "aliunid", "--port", "0", "--business-id", business_id],
                env={"STREAMWARDEN_SIMULATOR_API_KEY": api_key},
                log_path=workdir / "simulator.log",
                capture_stdout=True,
            )
            children.append(simulator)
            url = _read_first_line(simulator, 30.0)
            _say(out, f"aliunid simulator at {url}")

            sources_file = workdir / "sources.yaml"
            sources_file.write_text(
                yaml.safe_dump(
                    {
                        "sources": [
                            {
                                "name": "aliunid-demo",
                                "kind": "aliunid",
                                "url": url,
                                "api_key": "${ALIUNID_API_KEY}",
                            }
                        ]
                    }
                ),
                encoding="utf-8",
            )
            worker_env = {
                **common,
                "STREAMWARDEN_KAFKA_EMBEDDED": "true",
                "STREAMWARDEN_PARTITIONS": str(DEMO_PARTITIONS),
                "STREAMWARDEN_APP_ID": DEMO_APP_ID,
                "STREAMWARDEN_RULES_PATH": str(rules_path.resolve()),
                "STREAMWARDEN_ALERTS_OUT": str(alerts_path),
                "STREAMWARDEN_DATA_DIR": str(workdir / "worker-data"),
            }
            children.append(
                start_child("worker", ["worker"], env=worker_env, log_path=workdir / "worker.log")
            )
            producer_env = {
                **common,
                "STREAMWARDEN_SOURCES_FILE": str(sources_file),
                "ALIUNID_API_KEY": api_key,
            }
            children.append(
                start_child(
                    "producer",
                    ["produce", "aliunid-demo"],
                    env=producer_env,
                    log_path=workdir / "producer.log",
                )
            )
            _say(
                out,
                f"producer and worker started; notifications print below and go to {alerts_path}",
            )
            _say(
                out,
                "press Ctrl-C to stop"
                if duration is None
                else f"running for {duration:g}s (Ctrl-C stops early)",
            )

            deadline = None if duration is None else started + duration
            while not stop.wait(0.5):
                for child in children:
                    if not child.running:
                        raise DemoError(
                            f"{child.name} exited with code {child.proc.returncode}; "
                            f"last log lines:\n{child.log_tail()}"
                        )
                if deadline is not None and time.monotonic() >= deadline:
                    break
            _say(out, "stopping")
            failures = _stop_children(children)
    except DemoError as exc:
        _stop_children(children)
        _say(out, f"error: {exc}")
        return 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    delivered = _count_lines(alerts_path)
    _say(
        out,
        f"done after {time.monotonic() - started:.0f}s: "
        f"{delivered} notifications delivered ({alerts_path})",
    )
    if failures:
        _say(out, "some parts did not stop cleanly: " + ", ".join(failures))
        return 1
    return 0


def _stop_children(children: list[Child]) -> list[str]:
    """Stop in reverse start order (producer first, so it flushes while the worker still runs)."""
    failures = []
    for child in reversed(children):
        code = child.stop(timeout=20.0)
        if code not in (0, -signal.SIGTERM):
            failures.append(f"{child.name} (exit {code})")
    return failures


def default_rules_path() -> Path:
    """The ``rules/`` folder of a source checkout, else ``./rules``."""
    return DEFAULT_RULES if DEFAULT_RULES.is_dir() else Path(os.getcwd()) / "rules"

"""``streamwarden demo``: the whole product on one machine, with nothing to install or sign up for.

Starts the embedded broker, creates every topic, then runs each part as the separate process it
is in production: the simulators of all five upstream families (one process), one producer per
source, and the worker, whose ``console`` channel prints notifications right here. Stops
everything in order after ``duration`` seconds or at Ctrl-C, and exits non-zero if any part
failed.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

import yaml

from pipeline.topics import all_topics
from streamwarden import examples
from streamwarden.embedded_broker import EmbeddedBroker
from streamwarden.families import FAMILIES
from streamwarden.process import Child, start_child

DEMO_PARTITIONS = 4
DEMO_APP_ID = "streamwarden-demo"


@dataclass(frozen=True)
class DemoPaths:
    """The files the demo's worker reads (rules, channels) and writes (delivered alerts)."""

    rules: Path
    channels: Path
    alerts: Path


#: ``long-poll`` runs the aliunid producer over HTTP long polling instead of the WebSocket.
ALIUNID_TRANSPORT_ENV = "STREAMWARDEN_DEMO_ALIUNID_TRANSPORT"


class DemoError(RuntimeError):
    """A part of the demo failed; the message says which and shows its last log lines."""


def _say(out: TextIO, text: str) -> None:
    out.write(f"streamwarden demo: {text}\n")
    out.flush()


def _read_lines(child: Child, count: int, timeout: float) -> list[str]:
    """The first ``count`` lines the child prints (its stdout is a pipe)."""
    assert child.stdout is not None
    fd = child.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    while buffer.count(b"\n") < count and time.monotonic() < deadline and child.running:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
    lines = buffer.decode(errors="replace").splitlines()
    if len(lines) < count:
        raise DemoError(f"{child.name} did not start within {timeout:.0f}s:\n{child.log_tail()}")
    return lines[:count]


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for _ in f)


def page_port(preferred: int = 9300) -> int:
    """The worker's ops port for the demo: ``preferred`` when free, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise DemoError("no free port for the worker's page")


def _start_parts(
    workdir: Path,
    bootstrap: str,
    api_key: str,
    paths: DemoPaths,
    out: TextIO,
    ops_port: int = 9300,
) -> list[Child]:
    """Simulators, then the worker, then one producer per family; returns them in start order."""
    common = {"STREAMWARDEN_KAFKA_BOOTSTRAP": bootstrap, "STREAMWARDEN_LOG_LEVEL": "INFO"}
    kinds = list(FAMILIES)
    children: list[Child] = []
    simulators = start_child(
        "simulators",
        ["simulate", *kinds, "--port", "0"],
        env={"STREAMWARDEN_SIMULATOR_API_KEY": api_key},
        log_path=workdir / "simulators.log",
        capture_stdout=True,
    )
    children.append(simulators)
    try:
        urls = dict(line.split(" ", 1) for line in _read_lines(simulators, len(kinds), 60.0))
        for kind in kinds:
            _say(out, f"{kind} simulator at {urls[kind]}")
        sources_file = workdir / "sources.yaml"
        entries = [FAMILIES[kind].entry(f"{kind}-demo", urls[kind]) for kind in kinds]
        if os.environ.get(ALIUNID_TRANSPORT_ENV) == "long-poll":
            _say(out, "aliunid over HTTP long polling")
            aliunid = entries[kinds.index("aliunid")]
            aliunid.update(transport="long-poll", url="http" + aliunid["url"][2:])
        sources_file.write_text(yaml.safe_dump({"sources": entries}), encoding="utf-8")
        worker_env = {
            **common,
            "STREAMWARDEN_CHANNELS_FILE": str(paths.channels.resolve()),
            "STREAMWARDEN_KAFKA_EMBEDDED": "true",
            "STREAMWARDEN_PARTITIONS": str(DEMO_PARTITIONS),
            "STREAMWARDEN_APP_ID": DEMO_APP_ID,
            "STREAMWARDEN_RULES_PATH": str(paths.rules.resolve()),
            "STREAMWARDEN_ALERTS_OUT": str(paths.alerts),
            "STREAMWARDEN_DATA_DIR": str(workdir / "worker-data"),
            "STREAMWARDEN_OPS_PORT": str(ops_port),
        }
        children.append(
            start_child("worker", ["worker"], env=worker_env, log_path=workdir / "worker.log")
        )
        producer_env = {
            **common,
            "STREAMWARDEN_SOURCES_FILE": str(sources_file),
            "STREAMWARDEN_PRODUCER_OPS_PORT": "0",  # five producers: any free port each
            **{family.secret_env: api_key for family in FAMILIES.values()},
        }
        for kind in kinds:
            children.append(
                start_child(
                    f"producer-{kind}",
                    ["produce", f"{kind}-demo"],
                    env=producer_env,
                    log_path=workdir / f"producer-{kind}.log",
                )
            )
    except DemoError:
        _stop_children(children)
        raise
    return children


def run_demo(
    *,
    duration: float | None,
    alerts_out: Path | None,
    rules_path: Path | None = None,
    channels_path: Path | None = None,
    out: TextIO,
) -> int:
    """Run the demo; returns the process exit code.

    ``rules_path`` and ``channels_path`` default to the examples shipped in the package.
    """
    workdir = Path(tempfile.mkdtemp(prefix="streamwarden-demo-"))
    alerts_path = (alerts_out or workdir / "alerts.jsonl").resolve()
    paths = DemoPaths(
        rules=rules_path or default_rules_path(),
        channels=channels_path or default_channels_path(),
        alerts=alerts_path,
    )
    api_key = secrets.token_urlsafe(18)
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
            port = page_port()
            _say(
                out, f"page at http://127.0.0.1:{port}/ (metrics at /metrics, readiness at /readyz)"
            )
            children = _start_parts(workdir, broker.bootstrap, api_key, paths, out, port)
            _say(
                out,
                f"{len(children) - 2} producers and the worker started; notifications print below "
                f"and go to {alerts_path}",
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
    """The example rules shipped in the package (in a checkout: its ``rules/`` folder).

    Never the working directory: the demo must behave the same from any folder.
    """
    return examples.RULES


def default_channels_path() -> Path:
    """The demo's channels file shipped in the package: the console channel only."""
    return examples.CHANNELS

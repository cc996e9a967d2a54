"""``streamwarden demo`` as a user runs it: notifications arrive, it stops cleanly, no orphans.

The demo always starts its own embedded broker (that is the command: nothing to install), so
these tests ignore ``STREAMWARDEN_KAFKA_BOOTSTRAP``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamwarden.families import FAMILIES

pytestmark = pytest.mark.integration


def _children_of(pid: int) -> list[int]:
    """Processes started by the demo: they carry its pid in STREAMWARDEN_DIE_WITH_PARENT."""
    marker = f"STREAMWARDEN_DIE_WITH_PARENT={pid}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().split()[2]
                if state != "Z":
                    found.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def _start_demo(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streamwarden", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def _read_until(proc: subprocess.Popen[bytes], needle: str, timeout: float) -> str:
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            seen += os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
    return seen


def test_demo_delivers_notifications_and_exits_after_duration(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.jsonl"
    proc = _start_demo(["--duration", "30", "--alerts-out", str(alerts)])
    try:
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "[FIRING] warning: aliunid-power-high on " in text
    assert "above 40 kW" in text
    delivered = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert delivered, text
    assert delivered[0]["rule"] == "aliunid-power-high"
    assert delivered[0]["state"] == "firing"
    assert delivered[0]["value"] > 40
    assert f"{len(delivered)} notifications delivered" in text
    for kind in FAMILIES:
        assert f"streamwarden demo: {kind} simulator at ws://127.0.0.1:" in text
    assert _children_of(proc.pid) == []


def test_ctrl_c_stops_every_part_cleanly(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.jsonl"
    proc = _start_demo(["--alerts-out", str(alerts)])
    try:
        seen = _read_until(proc, "[FIRING]", 60)
        assert "[FIRING]" in seen, seen
        children = _children_of(proc.pid)
        expected = 3 + len(FAMILIES)  # broker, simulators, worker, one producer per family
        assert len(children) == expected, children
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = seen + rest.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "streamwarden demo: stopping" in text
    assert "Traceback" not in text
    deadline = time.monotonic() + 10
    while _children_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _children_of(proc.pid) == []
    assert alerts.read_text().strip()

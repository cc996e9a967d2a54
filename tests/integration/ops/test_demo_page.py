"""The demo prints its page's URL among its first lines, and the page, /metrics and
``streamwarden status`` answer while it runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.ops.support import get

pytestmark = pytest.mark.integration


def _read_until(proc: subprocess.Popen[bytes], out: Path, until: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while until not in text and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        text = out.read_text(errors="replace")
    return text


def test_demo_prints_the_page_url_and_serves_it(tmp_path: Path) -> None:
    # Output to a file, not a pipe: an unread pipe would fill with console notifications and
    # block the demo's worker.
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamwarden", "demo", "--duration", "90"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        text = _read_until(proc, out, "press Ctrl-C", 90)
        lines = text.splitlines()
        page_lines = [i for i, line in enumerate(lines) if " page at http://127.0.0.1:" in line]
        assert page_lines and page_lines[0] <= 2, text  # among the first lines
        match = re.search(r"page at (http://127\.0\.0\.1:\d+/)", lines[page_lines[0]])
        assert match is not None
        url = match.group(1)
        broker = re.search(r"embedded Kafka broker at (\S+);", text)
        assert broker is not None

        deadline = time.monotonic() + 90
        events = 0.0
        while time.monotonic() < deadline:
            try:
                status, body = get(url + "metrics")
            except OSError:
                status, body = 0, b""
            if status == 200:
                events = sum(
                    s.value
                    for f in text_string_to_metric_families(body.decode())
                    for s in f.samples
                    if s.name == "streamwarden_worker_events_total"
                )
                if events > 0:
                    break
            time.sleep(1)
        assert events > 0, "the demo's worker counted no events"
        status, page = get(url)
        assert status == 200 and b"<title>StreamWarden</title>" in page

        done = subprocess.run(
            [sys.executable, "-m", "streamwarden", "status", "--json"],
            env={
                **os.environ,
                "STREAMWARDEN_KAFKA_BOOTSTRAP": broker.group(1),
                "STREAMWARDEN_KAFKA_EMBEDDED": "true",
                "STREAMWARDEN_APP_ID": "streamwarden-demo",
                "STREAMWARDEN_PARTITIONS": "4",
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        stages = {s["stage"]: s for s in json.loads(done.stdout)["stages"]}
        assert sum(p["committed"] or 0 for p in stages["normalize"]["partitions"]) > 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
